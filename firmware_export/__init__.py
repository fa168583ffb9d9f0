"""Device artifacts. The host side (this package's modules: ONNX and int8 builds, the int8 search,
parity checks, bundle writing, C header, benchmarks) needs torch; `firmware_export.device` (bundle
layout and verification, resampling, the ONNX Runtime runner) does not.

`export_phase` (torch) is imported on first use, so `import firmware_export.device.runtime` works
on a machine without torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["export_phase"]


def __getattr__(name: str) -> Any:
    if name == "export_phase":
        from firmware_export.bundle import export_phase

        return export_phase
    raise AttributeError(f"module 'firmware_export' has no attribute {name!r}")
