"""How a result was made: code version, command line, library versions, CPU, GPU and time.

Recorded in every results.json and every bundle manifest, so a figure pasted into a paper can be
traced back to what produced it. The CPU's instruction-set flags are part of it because ONNX
Runtime's int8 kernels and torch's float maths take different paths on different CPUs; a run on a
GPU records the GPU's model, its driver and the CUDA and cuDNN versions torch uses, which choose
its kernels there.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LIBRARIES = ("torch", "torchaudio", "onnx", "onnxruntime", "numpy")
# Flags that change which numeric kernels run (int8 GEMM/conv paths, fused multiply-add).
NUMERIC_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8",
                 "asimd", "asimddp", "i8mm")


def utc_now() -> str:
    """The current UTC time as ISO 8601 with seconds, e.g. 2026-12-01T16:58:03Z."""
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def provenance(*, started: str | None = None, ended: str | None = None,
               threads: int | None = None, device=None) -> dict[str, Any]:
    """The provenance record (start and end times as given; None while unknown); with a CUDA
    `device`, also its `gpu`."""
    from edgecl import __version__

    gpu = {"gpu": gpu_description(device)} if getattr(device, "type", None) == "cuda" else {}
    return {
        "edgecl": __version__,
        "git": git_state(),
        "command": list(sys.argv),
        "started_utc": started,
        "ended_utc": ended,
        "python": platform.python_version(),
        "libraries": library_versions(),
        "cpu": cpu_description(),
        "threads": threads,
        **gpu,
    }


def gpu_description(device) -> dict[str, Any]:
    """The GPU's model and memory, the NVIDIA driver's version and the CUDA and cuDNN versions
    torch was built with (None where unknown, e.g. without a usable GPU)."""
    import torch

    name = memory = None
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(device)
        name, memory = properties.name, int(properties.total_memory)
    try:
        cudnn = torch.backends.cudnn.version()
    except Exception:  # cuDNN missing or unusable here: only the record loses it
        cudnn = None
    return {"model": name, "memory_bytes": memory, "driver": nvidia_driver_version(),
            "cuda": torch.version.cuda, "cudnn": cudnn}


@lru_cache(maxsize=1)
def nvidia_driver_version() -> str | None:
    """The NVIDIA driver's version, from nvidia-smi (None without it)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.strip().splitlines()
    return lines[0].strip() if lines else None


@lru_cache(maxsize=1)
def git_state() -> dict[str, Any] | None:
    """{"commit", "dirty"} of the checkout edgecl runs from, or None outside a git checkout."""
    if not (PROJECT_ROOT / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=10, check=True)
        status = subprocess.run(["git", "-C", str(PROJECT_ROOT), "status", "--porcelain",
                                 "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


@lru_cache(maxsize=1)
def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries that shape the numbers (None when not installed)."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@lru_cache(maxsize=1)
def cpu_description() -> dict[str, Any]:
    """CPU model, architecture, core count and the numeric instruction-set flags it has."""
    model, flags = platform.processor() or None, set()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model in (None, "", platform.machine()):
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return {"model": model, "machine": platform.machine(), "cores": os.cpu_count(),
            "numeric_flags": sorted(flag for flag in NUMERIC_FLAGS if flag in flags)}
