"""Benchmark hooks in MLX for shared/app/bench.py and shared/app/memory.py: the device's name, waiting for queued work,
the allocator's peak-memory counter and the memory a run can use."""

import mlx.core as mx

from hrm_mlx.device import default_device


def resolve_device(device: str | None) -> str:
    """`device`, or default_device() ("gpu" on Apple silicon, else "cpu") when None."""
    return default_device() if device is None else device


def device_name(device: str) -> str:
    """mx.device_info()'s device name (the chip on Apple silicon, the CPU elsewhere)."""
    return str(mx.device_info().get("device_name", device))


def synchronize(device: str) -> None:
    """Wait until the work queued on the default stream has finished."""
    mx.synchronize()


def reset_peak_memory(device: str) -> None:
    """Restart the allocator's peak-memory counter."""
    mx.reset_peak_memory()


def memory(device: str) -> tuple[int, int, str] | None:
    """(bytes held by live arrays now, peak bytes since reset_peak_memory, how they were read)."""
    return (mx.get_active_memory(), mx.get_peak_memory(),
            "mx.get_peak_memory after mx.reset_peak_memory (live arrays)")


def usable_memory(device: str) -> tuple[int, str] | None:
    """(bytes a run can allocate on `device`, how they were read): on the GPU Metal's recommended working set
    (mx.device_info()'s max_recommended_working_set_size); None on the CPU (the caller reads the machine's RAM)."""
    if device == "cpu":
        return None
    size = mx.device_info().get("max_recommended_working_set_size")
    return None if size is None else (int(size), "Metal's recommended working set (mx.device_info)")


def is_out_of_memory(error: BaseException | None) -> bool:
    """Whether `error` is MLX failing to allocate (a RuntimeError naming the allocation)."""
    return isinstance(error, RuntimeError) and ("alloc" in str(error).lower() or "memory" in str(error).lower())
