"""Multi-process training (shared/DESIGN.md section 5), backend-neutral and numpy only.

Every process runs the same loop on its slice of the same global batch: rank r holds rows
[r * B_local, (r + 1) * B_local). Gradients are summed across processes (the loss is already divided by the global
batch size), the sparse puzzle-table update sees every process's (ids, row gradients), and rank 0 alone writes
metrics and checkpoints. A backend's `distributed.connect` returns a Collective (torch.distributed under `torchrun`,
mx.distributed under `mlx.launch`) or SOLO when the process was started alone.
"""

import json
import os
import select
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from hrm_shared.core.errors import HRMError

TIMEOUT_ENV = "HRM_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 1800.0
RESUME_HINT = "when RUN/last holds a checkpoint, continue with `hrm train --resume RUN`"
PEER_GRACE_S = 2.0  # how long a process that lost a neighbour leaves its own error, if it has one, to come first
HANDSHAKE_S = 60.0  # how long the neighbours have to connect their PeerWatch
BYE = b"B"  # what a process that finished says to its neighbours before it closes


class Collective(Protocol):
    """What the loop needs from the process group: who this process is, and collectives on numpy arrays."""

    rank: int
    size: int

    def all_sum_numpy(self, array: np.ndarray) -> np.ndarray: ...

    def all_gather_numpy(self, array: np.ndarray) -> np.ndarray: ...

    def beat(self) -> None: ...

    def close(self) -> None: ...


class Solo:
    """The single process of a run started without a launcher: every collective returns its input."""

    rank, size = 0, 1

    def all_sum_numpy(self, array: np.ndarray) -> np.ndarray:
        """`array` itself (the sum over one process)."""
        return array

    def all_gather_numpy(self, array: np.ndarray) -> np.ndarray:
        """`array` itself (the concatenation over one process)."""
        return array

    def beat(self) -> None:
        """Nothing to watch."""

    def close(self) -> None:
        """Nothing to close."""


SOLO = Solo()


def timeout_seconds() -> float:
    """How long a process waits for the others before it gives up: HRM_DIST_TIMEOUT_S, default 30 minutes."""
    text = os.environ.get(TIMEOUT_ENV)
    if text is None:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise HRMError(f"{TIMEOUT_ENV}={text!r} is not a positive number of seconds; unset it for 30 minutes")
    return value


def torchrun_world() -> tuple[int, int, int] | None:
    """(rank, world_size, local_rank) from the variables torchrun sets, or None for a process started alone."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0"))


def launched_by_mlx() -> bool:
    """Whether `mlx.launch` started this process: MLX_RANK (the ring backend) or an MPI world of several processes
    (its MPI backend runs mpirun)."""
    mpi_size = os.environ.get("OMPI_COMM_WORLD_SIZE", os.environ.get("PMI_SIZE", "1"))
    return "MLX_RANK" in os.environ or int(mpi_size) > 1


def ring_hosts(size: int) -> list[str] | None:
    """Each rank's host address in the ring hostfile mlx.launch writes (MLX_HOSTFILE: a JSON list, in rank order, of
    lists of "ip:port"), or None without one of `size` ranks (MLX's other backends)."""
    path = os.environ.get("MLX_HOSTFILE")
    try:
        nodes = json.loads(Path(path).read_text()) if path else None
        hosts = [str(node[0]).rsplit(":", 1)[0].strip("[]") for node in nodes] if nodes else None
    except (OSError, ValueError, LookupError, TypeError):
        return None
    return hosts if hosts and len(hosts) == size else None


def launched_rank() -> int:
    """This process's rank as its launcher (torchrun, mlx.launch, mpirun) set it; 0 for a process started alone.
    Readable before any process group exists, so a run directory is created by rank 0 only."""
    for name in ("RANK", "MLX_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        if name in os.environ:
            return int(os.environ[name])
    return 0


def rank_rows(rank: int, local_batch_size: int) -> slice:
    """The rows of the global batch that process `rank` holds."""
    return slice(rank * local_batch_size, (rank + 1) * local_batch_size)


def gather_rows(collective: Collective, arrays: dict[str, np.ndarray], rows: int, local_batch_size: int
                ) -> dict[str, np.ndarray]:
    """Every process's first `rows` rows of `arrays` (each [<= local_batch_size, ...]), concatenated in rank order:
    one global batch's real rows in dataset order, on every process."""
    counts = collective.all_gather_numpy(np.array([rows], np.int64))  # [size]
    gathered = {}
    for name, array in arrays.items():
        padded = np.zeros((local_batch_size, *array.shape[1:]), array.dtype)
        padded[:rows] = array[:rows]
        every = collective.all_gather_numpy(padded).reshape(-1, local_batch_size, *array.shape[1:])
        gathered[name] = np.concatenate([block[:count] for block, count in zip(every, counts)])
    return gathered


def describe_world(collective: Collective, backend: str, global_batch_size: int) -> str:
    """One line naming the processes and the rows each holds, or '' for a single process."""
    if collective.size == 1:
        return ""
    return (f"{collective.size} processes ({backend}), {global_batch_size // collective.size} rows of the global "
            f"batch each; rank 0 writes metrics and checkpoints")


class Watchdog:
    """Ends this process with a message when `beat()` has not been called for `timeout` seconds: a collective
    waiting on a process that died or hangs would otherwise wait forever (the MLX ring backend has no timeout)."""

    def __init__(self, rank: int, timeout: float, exit: Callable[[int], None] = os._exit) -> None:
        self.rank, self.timeout, self._exit = rank, timeout, exit
        self.last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="hrm-watchdog", daemon=True)
        self._thread.start()

    def beat(self) -> None:
        """This process made progress: restart the clock."""
        self.last = time.monotonic()

    def close(self) -> None:
        """Stop watching."""
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(min(1.0, self.timeout / 10)):
            if time.monotonic() - self.last > self.timeout:
                print(f"Error: rank {self.rank}: no progress for {self.timeout:g} s: another process died or hangs "
                      f"({TIMEOUT_ENV} sets this limit); {RESUME_HINT}", file=sys.stderr, flush=True)
                self._exit(1)
                return


def _keep_alive(connection: socket.socket) -> None:
    """TCP keepalive probes after 5 s of silence, every 2 s, 3 of them: a peer machine that lost power or its network
    is found in about 11 s (its kernel answers the probes while the process computes)."""
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    idle = getattr(socket, "TCP_KEEPIDLE", getattr(socket, "TCP_KEEPALIVE", None))  # TCP_KEEPALIVE on macOS
    for option, value in ((idle, 5), (getattr(socket, "TCP_KEEPINTVL", None), 2),
                          (getattr(socket, "TCP_KEEPCNT", None), 3)):
        if option is not None:
            connection.setsockopt(socket.IPPROTO_TCP, option, value)


class PeerWatch:
    """Ends this process within seconds when a neighbour in the ring of processes ends without finishing (it crashed,
    failed or was killed), where a collective of the backend would wait for it forever or, as MLX's ring all_gather
    does, return garbage.

    Each process holds one TCP connection to the next rank and one from the previous, on the hosts of `hosts` (the
    addresses the ring itself connects), beside the backend's own. The kernel closes a process's sockets however it
    ends, so its neighbours see the end at once, and each in turn ends after `grace` seconds; keepalive probes find a
    neighbour machine that lost power or its network. A process that finishes says so first (`close`). A process that
    hangs but lives is the Watchdog's business. `share` gathers one number from every process in rank order (a
    collective); `exit` ends the process.
    """

    def __init__(self, rank: int, hosts: list[str], share: Callable[[int], list[int]],
                 exit: Callable[[int], None] = os._exit, grace: float = PEER_GRACE_S) -> None:
        self.rank, self.grace, self._exit = rank, grace, exit
        size, host = len(hosts), hosts[rank]
        right = (rank + 1) % size
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            with socket.create_server((host, 0), family=family, backlog=2) as listener:
                listener.settimeout(HANDSHAKE_S)
                ports = share(listener.getsockname()[1])  # every listener is up before anyone connects
                outbound = socket.create_connection((hosts[right], ports[right]), timeout=HANDSHAKE_S)
                outbound.sendall(rank.to_bytes(4, "big"))
                inbound, _ = listener.accept()
                inbound.settimeout(HANDSHAKE_S)
                left = int.from_bytes(inbound.recv(4, socket.MSG_WAITALL), "big")
        except OSError as e:
            raise HRMError(f"rank {rank}: could not connect to the neighbouring processes to watch them "
                           f"({e.strerror or e}); check that the hosts of the ring accept TCP connections on any "
                           f"port") from None
        self.peers = {outbound: right, inbound: left}
        for connection in self.peers:
            connection.settimeout(None)
            _keep_alive(connection)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="hrm-peer-watch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """This process finished: tell the neighbours, stop watching and close the connections."""
        for connection in self.peers:
            try:
                connection.sendall(BYE)
            except OSError:
                pass  # the neighbour finished and closed first
        self._stop.set()
        self._thread.join()
        for connection in self.peers:
            connection.close()

    def _watch(self) -> None:
        watched = dict(self.peers)
        while watched and not self._stop.is_set():
            ready, _, _ = select.select(list(watched), [], [], 0.5)
            for connection in ready:
                try:
                    said = connection.recv(1)
                except OSError:  # reset, or keepalive gave up
                    said = b""
                if said == BYE:
                    del watched[connection]
                elif not said:
                    self._lost(watched[connection])
                    return

    def _lost(self, peer: int) -> None:
        if self._stop.wait(self.grace):
            return  # this process finished meanwhile
        print(f"Error: rank {self.rank}: rank {peer} ended without finishing: another process died, was killed or "
              f"failed (the first to end says why); {RESUME_HINT}", file=sys.stderr, flush=True)
        self._exit(1)
