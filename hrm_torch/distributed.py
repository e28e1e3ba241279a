"""Multi-process training in PyTorch (shared/DESIGN.md section 5): torch.distributed under `torchrun`, NCCL on GPUs and
gloo on the CPU. The backend-neutral side (who writes, the timeout, gathering rows) is shared/core/distributed.py.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from hrm_shared.core.distributed import (
    RESUME_HINT,
    SOLO,
    TIMEOUT_ENV,
    Solo,
    Watchdog,
    launched_by_mlx,
    timeout_seconds,
    torchrun_world,
)
from hrm_shared.core.errors import HRMError
from hrm_torch.device import default_device

# torch >= 2.13 renames all_gather_into_tensor; both gather equal-sized tensors along dim 0 in rank order.
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


class Collective:
    """This process's place among the training processes and the collectives a train step needs.

    Tensors live on `device` (NCCL needs CUDA tensors). A collective that fails (a process died, or waited past the
    timeout) is an HRMError naming this rank.
    """

    def __init__(self, rank: int, size: int, device: torch.device, timeout: float) -> None:
        self.rank, self.size, self.device, self.timeout = rank, size, device, timeout
        self.watchdog = Watchdog(rank, timeout)

    @contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """Turn a failed collective inside the block into an HRMError naming this rank and `what` failed."""
        try:
            yield
        except RuntimeError as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise HRMError(f"rank {self.rank}: {what} across {self.size} processes failed ({first[:300]}): another "
                           f"process died, lost its connection or waited past {self.timeout:g} s ({TIMEOUT_ENV}); "
                           f"{RESUME_HINT}") from None

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over the processes, in place; returns it."""
        with self.guard("a sum"):
            dist.all_reduce(tensor)
        return tensor

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every process's `tensor` [B, ...] concatenated in rank order -> [size * B, ...]."""
        out = torch.empty((self.size * tensor.shape[0], *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
        with self.guard("a gather"):
            _all_gather_single(out, tensor.contiguous())
        return out

    def all_sum_numpy(self, array: np.ndarray) -> np.ndarray:
        """all_sum of a numpy array -> numpy."""
        return self.all_sum(torch.from_numpy(np.array(array)).to(self.device)).cpu().numpy()

    def all_gather_numpy(self, array: np.ndarray) -> np.ndarray:
        """all_gather of a numpy array [B, ...] -> numpy [size * B, ...]."""
        return self.all_gather(torch.from_numpy(np.ascontiguousarray(array)).to(self.device)).cpu().numpy()

    def beat(self) -> None:
        """This process made progress (shared.distributed.Watchdog)."""
        self.watchdog.beat()

    def close(self) -> None:
        """Wait for every process, then leave the process group."""
        with self.guard("the final barrier"):
            dist.barrier()
        self.watchdog.close()
        dist.destroy_process_group()


def connect(device: str | None) -> tuple[Collective | Solo, str]:
    """Join the processes `torchrun` started (RANK, WORLD_SIZE, LOCAL_RANK in the environment) -> (collective,
    device this process trains on: cuda:LOCAL_RANK on GPUs); (SOLO, device) for a process started alone."""
    world = torchrun_world()
    device = default_device() if device is None else device
    if world is None:
        if launched_by_mlx():
            raise HRMError("mlx.launch started this process but the backend is torch; launch torch runs with "
                           "`torchrun --nproc-per-node N $(which hrm) train ...`, or train with --backend mlx")
        return SOLO, device
    rank, size, local_rank = world
    timeout = timeout_seconds()
    if device.startswith("cuda"):
        if device != "cuda":
            raise HRMError(f"--device {device} names one GPU, but each of the {size} processes takes cuda:LOCAL_RANK; "
                           f"pass --device cuda (CUDA_VISIBLE_DEVICES chooses the GPUs)")
        if not torch.cuda.is_available():
            raise HRMError("--device cuda: this PyTorch sees no CUDA GPU; train on the CPU with --device cpu (gloo)")
        if local_rank >= torch.cuda.device_count():
            raise HRMError(f"LOCAL_RANK {local_rank} has no GPU: {torch.cuda.device_count()} visible; start at most "
                           f"that many processes per node (--nproc-per-node)")
        if not dist.is_nccl_available():
            raise HRMError("this PyTorch has no NCCL, which training on several GPUs needs; install a CUDA build of "
                           "torch, or train on the CPU with --device cpu (gloo)")
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    elif device != "cpu":
        raise HRMError(f"--device {device}: several processes train on cuda (NCCL) or cpu (gloo) only")
    backend = "nccl" if device.startswith("cuda") else "gloo"
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout),
                                device_id=torch.device(device) if backend == "nccl" else None)
    except (RuntimeError, ValueError) as e:
        raise HRMError(f"rank {rank}: could not join the other {size - 1} processes with {backend} "
                       f"({str(e).strip()[:300]}); check MASTER_ADDR / MASTER_PORT and that every node started"
                       ) from None
    return Collective(rank, size, torch.device(device), timeout), device
