"""Where and in what arithmetic a run computes: the device's global switches and the autocast context.

fp32 means IEEE fp32 everywhere. PyTorch lets cuDNN convolutions use TF32 tensor cores by default on Ampere and
later GPUs, which would make "fp32" GPU runs silently TF32, so `configure` sets both TF32 switches explicitly.
"""
from __future__ import annotations

import contextlib

import torch


def configure(precision: str, device: torch.device, cudnn_benchmark: bool = True) -> None:
    """Set the process-wide switches a run's precision needs on `device` (one run per process at a time)."""
    if device.type == "cuda":
        tf32 = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        # Shapes change only at growth steps (and for each pass's last, smaller batch): one timing per shape.
        torch.backends.cudnn.benchmark = cudnn_benchmark
    elif precision == "tf32":
        raise ValueError("precision 'tf32' uses CUDA tensor cores; on a CPU use fp32 or bf16")


def native_bf16() -> bool:
    """Whether this CPU has the instructions oneDNN's native bf16 kernels need (AVX512_BF16 or AMX); without them
    bf16 is emulated and usually slower than fp32 (README, `make bench`). Linux /proc/cpuinfo; False elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def precision_notice(precision: str, device: torch.device) -> str | None:
    """One line for the start of a bf16 run on a CPU that only emulates bf16 (None when there is nothing to say)."""
    if precision == "bf16" and device.type == "cpu" and not native_bf16():
        return ("bf16 on this CPU is emulated (no AVX512_BF16 or AMX): expect it slower than fp32; `make bench` "
                "measures both")
    return None


def autocast(precision: str, device: torch.device):
    """The context every forward pass of training, evaluation and growth runs in."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels (timings of asynchronous devices); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
