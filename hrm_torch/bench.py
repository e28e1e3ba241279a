"""Benchmark hooks in PyTorch for shared/app/bench.py and shared/app/memory.py: the device's name, waiting for queued
work, the allocator's peak-memory counter and the memory a run can use."""

import torch

from hrm_torch.device import default_device


def resolve_device(device: str | None) -> str:
    """`device`, or default_device() when None."""
    return default_device() if device is None else device


def device_name(device: str) -> str:
    """torch.cuda.get_device_name for a CUDA device, else the device string ("cpu", "mps")."""
    return torch.cuda.get_device_name(device) if device.startswith("cuda") else device


def synchronize(device: str) -> None:
    """Wait until the work queued on `device` has finished (CUDA and MPS run asynchronously)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    elif device == "mps":
        torch.mps.synchronize()


def reset_peak_memory(device: str) -> None:
    """Restart the allocator's peak-memory counter (CUDA only; other devices have none)."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)


def memory(device: str) -> tuple[int, int, str] | None:
    """(bytes allocated now, peak bytes since reset_peak_memory, how they were read) from the CUDA caching
    allocator; None on devices without such a counter."""
    if not device.startswith("cuda"):
        return None
    return (torch.cuda.memory_allocated(device), torch.cuda.max_memory_allocated(device),
            "torch.cuda.max_memory_allocated after torch.cuda.reset_peak_memory_stats (live tensors)")


def usable_memory(device: str) -> tuple[int, str] | None:
    """(bytes a run can allocate on `device`, how they were read): CUDA's free memory (torch.cuda.mem_get_info),
    MPS's recommended maximum; None on the CPU (the caller reads the machine's RAM)."""
    if device.startswith("cuda"):
        return torch.cuda.mem_get_info(device)[0], f"torch.cuda.mem_get_info: free memory of {device_name(device)}"
    if device == "mps":
        return torch.mps.recommended_max_memory(), "torch.mps.recommended_max_memory"
    return None


def is_out_of_memory(error: BaseException | None) -> bool:
    """Whether `error`, or an error it was raised from (torch.compile wraps them), is the device running out of
    memory."""
    while error is not None:
        if isinstance(error, torch.OutOfMemoryError):
            return True
        error = error.__cause__ or error.__context__
    return False
