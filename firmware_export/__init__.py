"""Device artifacts: ONNX and int8 builds, parity checks, bundle manifests, torch-free runtime.

`export_phase` (torch) is imported on first use, so `import firmware_export.runtime` works on a
machine without torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["export_phase"]


def __getattr__(name: str) -> Any:
    if name == "export_phase":
        from firmware_export.bundle import export_phase

        return export_phase
    raise AttributeError(f"module 'firmware_export' has no attribute {name!r}")
