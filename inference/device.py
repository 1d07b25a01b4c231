"""Where the models run: ``inference.device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``) made into
a PyTorch device name, checked against the GPUs PyTorch sees on this host, so a worker asked for
a GPU it lacks stops at start with the reason instead of failing every job."""

from __future__ import annotations


class DeviceUnavailable(ValueError):
    """The requested device does not exist on this host; the message says what PyTorch sees."""


def choose_device(requested: str) -> str:
    """The PyTorch device for ``requested``: ``auto`` is the first GPU when PyTorch sees one,
    else the CPU; ``cuda`` is the first GPU."""
    if requested == "cpu":
        return "cpu"
    import torch

    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if requested == "auto":
        return "cuda:0" if available else "cpu"
    index = int(requested.partition(":")[2] or 0)
    if index >= available:
        seen = f"{available} GPU(s)" if available else "no GPU"
        build = torch.version.cuda and f"CUDA {torch.version.cuda}" or "a build without CUDA"
        raise DeviceUnavailable(
            f"{requested} is not available: PyTorch {torch.__version__} ({build}) sees {seen} "
            "on this host"
        )
    return f"cuda:{index}"


def device_label(device: str) -> str:
    """The device as job notes and metrics name it, with the GPU's model: ``cuda:0 (NVIDIA
    H200)``, ``cpu``."""
    if not device.startswith("cuda"):
        return device
    import torch

    return f"{device} ({torch.cuda.get_device_name(device)})"
