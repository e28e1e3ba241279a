"""Multi-process training in MLX (shared/DESIGN.md section 5): mx.distributed under `mlx.launch` (the ring backend over
TCP between Macs, or MPI). The backend-neutral side (who writes, the timeout, gathering rows) is
shared/core/distributed.py.
"""

import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import mlx.core as mx
import numpy as np

from hrm_shared.core.distributed import (
    RESUME_HINT,
    SOLO,
    TIMEOUT_ENV,
    PeerWatch,
    Solo,
    Watchdog,
    launched_by_mlx,
    ring_hosts,
    timeout_seconds,
    torchrun_world,
)
from hrm_shared.core.errors import HRMError


class Collective:
    """This process's place among the training processes and the collectives a train step needs.

    The collectives are lazy MLX operations on the CPU stream: the train step evaluates its compiled gradients first
    and sums them here, outside any GPU command buffer (Metal ends one that runs longer than about 5 s, as one
    waiting on a slow network would). MLX's ring backend has no timeout, and on a dead peer its collectives fail,
    return garbage (all_gather) or wait forever: with the ring, the PeerWatch ends this process within seconds of a
    neighbour's end; the Watchdog ends one that waited longer than HRM_DIST_TIMEOUT_S (a peer that hangs), naming
    the collective it waited on; a collective that fails is an HRMError naming this rank, what failed and, when a
    neighbour's connection closed, that neighbour.
    """

    def __init__(self, group: mx.distributed.Group, timeout: float) -> None:
        self.group, self.rank, self.size, self.timeout = group, group.rank(), group.size(), timeout
        self._waiting: str | None = None  # the collective this process waits on now, for the Watchdog's message
        self.watchdog = Watchdog(self.rank, timeout, exit=self._timed_out)
        hosts = ring_hosts(self.size)
        self.peers = PeerWatch(self.rank, hosts, lambda port: self.all_gather_numpy(np.array([port])).tolist()
                               ) if hosts else None

    @contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """Evaluate the collective `what` (e.g. "the all-reduce of the gradients") inside the block: its failure is
        an HRMError naming this rank, `what` and why (a neighbour that is gone, or MLX's error); waiting past
        HRM_DIST_TIMEOUT_S ends the process with a message naming `what`."""
        self._waiting = what
        try:
            yield
        except RuntimeError as e:
            gone = self._gone_peer()
            if gone is not None:
                why = (f"peer rank {gone} is gone (its connection closed: another process died, was killed or lost "
                       f"its network; the first to end says why)")
            else:
                why = f"MLX reports: {(str(e).strip().splitlines() or [type(e).__name__])[0][:300]}"
            raise HRMError(f"rank {self.rank}: {what} across {self.size} processes failed: {why}; {RESUME_HINT}"
                           ) from None
        finally:
            self._waiting = None

    def _gone_peer(self) -> int | None:
        """A neighbour rank whose PeerWatch connection has closed (it ended), or None (none, or no PeerWatch)."""
        for connection, peer in ({} if self.peers is None else self.peers.peers).items():
            try:
                if connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                    return peer
            except BlockingIOError:
                continue  # open, nothing to read
            except OSError:
                return peer  # reset
        return None

    def _timed_out(self, status: int) -> None:
        """The Watchdog's end of this process: name the collective it waited on, if any, then exit with `status`."""
        if self._waiting is not None:
            print(f"Error: rank {self.rank}: {self._waiting} across {self.size} processes timed out after "
                  f"{self.timeout:g} s ({TIMEOUT_ENV}); {RESUME_HINT}", file=sys.stderr, flush=True)
        os._exit(status)

    def all_sum(self, array: mx.array) -> mx.array:
        """Sum `array` over the processes (lazy, on the CPU stream)."""
        return mx.distributed.all_sum(array, group=self.group, stream=mx.cpu)

    def all_gather(self, array: mx.array) -> mx.array:
        """Every process's `array` [B, ...] concatenated in rank order -> [size * B, ...] (lazy, on the CPU stream)."""
        return mx.distributed.all_gather(array, group=self.group, stream=mx.cpu)

    def all_sum_numpy(self, array: np.ndarray) -> np.ndarray:
        """all_sum of a numpy array -> numpy."""
        with self.guard("a sum of host numbers"):
            return np.array(self.all_sum(mx.array(array)))

    def all_gather_numpy(self, array: np.ndarray) -> np.ndarray:
        """all_gather of a numpy array [B, ...] -> numpy [size * B, ...]."""
        bools = array.dtype == np.bool_
        with self.guard("a gather of host arrays"):
            out = np.array(self.all_gather(mx.array(array.astype(np.uint8) if bools else array)))
        return out.astype(np.bool_) if bools else out

    def beat(self) -> None:
        """This process made progress (shared.distributed.Watchdog)."""
        self.watchdog.beat()

    def close(self) -> None:
        """Wait for every process (a sum of one number), then stop watching them."""
        self.all_sum_numpy(np.zeros(1, np.float32))
        if self.peers is not None:
            self.peers.close()
        self.watchdog.close()


def connect(device: str | None) -> tuple[Collective | Solo, str | None]:
    """Join the processes `mlx.launch` started -> (collective, device); (SOLO, device) for a process started alone."""
    if not launched_by_mlx():
        if torchrun_world() is not None:
            raise HRMError("torchrun started this process but the backend is mlx; launch MLX runs with "
                           "`mlx.launch -n N $(which hrm) train ...` (or --hosts), or train with --backend torch")
        return SOLO, device
    timeout = timeout_seconds()
    try:
        group = mx.distributed.init(strict=True)
    except RuntimeError as e:
        raise HRMError(f"could not join the processes mlx.launch started ({str(e).strip()[:300]}); check the hosts "
                       f"and that every one of them started") from None
    if group.size() == 1:
        return SOLO, device
    return Collective(group, timeout), device
