"""Where and how the networks run: devices, precision, CPU features, allocator tuning, and the
checks every application makes of an input signal.

Nothing here runs on import: :func:`tune_cpu_allocator` changes the process (glibc malloc) and is
called by the entry points that want it (the CLI's commands, the trainer).
"""

from __future__ import annotations

import ctypes
import math
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from .errors import CusepError

Precision = Literal["auto", "fp32", "bf16", "fp16"]
MIN_RATE, MAX_RATE = 1000, 768000  # the input sample rates cusep takes


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> first CUDA device if any, else CPU; validates 'cuda[:i]'."""
    if isinstance(device, torch.device):
        return device
    name = device.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise CusepError(f"unknown device '{device}'; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise CusepError(
                f"device '{device}' asked for but CUDA is not available; use --device cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise CusepError(
                f"device '{device}' does not exist; "
                f"{torch.cuda.device_count()} CUDA device(s) found"
            )
    elif dev.type != "cpu":
        raise CusepError(f"unsupported device '{device}'; use auto, cpu, cuda or cuda:N")
    return dev


@lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """True on CPUs with native bfloat16 matrix instructions (AVX512-BF16 or AMX)."""
    cpu = getattr(torch._C, "_cpu", None)
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    if any(bool(getattr(cpu, name, lambda: False)()) for name in checks):
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def tune_cpu_allocator() -> None:
    """Keep glibc malloc from returning large buffers to the OS after every pass (ENV.md)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-4, 0)  # M_MMAP_MAX
        libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def autocast_dtype(device: torch.device, precision: Precision) -> torch.dtype | None:
    """The autocast dtype for the network, or None for plain float32."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else None


def precision_name(dtype: torch.dtype | None) -> str:
    """The :data:`Precision` name of an autocast dtype (None: ``fp32``)."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


# ------------------------------------------------------------------------------ input checks


def check_rate(sample_rate: int) -> None:
    """CusepError for a sample rate outside the ones cusep takes."""
    if not MIN_RATE <= sample_rate <= MAX_RATE:
        raise CusepError(f"sample rate {sample_rate} Hz is outside {MIN_RATE}..{MAX_RATE} Hz; "
                         "resample the recording (or fix its header)")


def check_length(length: int, sample_rate: int, n_fft: int, model_rate: int) -> None:
    """CusepError for a signal of ``length`` samples shorter than one STFT frame."""
    if length == 0:
        raise CusepError("the audio is empty (zero samples); give a recording with sound")
    min_len = int(math.ceil(n_fft * sample_rate / model_rate))
    if length < min_len:
        raise CusepError(
            f"the audio is too short ({length} samples at {sample_rate} Hz); "
            f"cusep needs at least {min_len} samples "
            f"(one STFT frame, {n_fft / model_rate * 1000:.0f} ms)"
        )


def check_signal(audio: np.ndarray, sample_rate: int, n_fft: int, model_rate: int) -> np.ndarray:
    """Validate and normalise the input to float32 (channels, samples)."""
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2:
        raise CusepError(f"audio must be (channels, samples) or (samples,), got shape {a.shape}")
    check_rate(sample_rate)
    if 0 < a.shape[1] < a.shape[0] and a.shape[1] <= 8:
        raise CusepError(f"audio of shape {a.shape} looks like (samples, channels); cusep takes "
                         "(channels, samples): pass audio.T")
    check_length(a.shape[-1], sample_rate, n_fft, model_rate)
    if not np.isfinite(a).all():
        raise CusepError("the audio contains NaN or infinite samples; repair or re-export it")
    return a


__all__ = [
    "MAX_RATE",
    "MIN_RATE",
    "Precision",
    "autocast_dtype",
    "check_length",
    "check_rate",
    "check_signal",
    "cpu_supports_bf16",
    "precision_name",
    "resolve_device",
    "tune_cpu_allocator",
]
