"""The TFLM build of a phase (`--target tflm`): an int8 TensorFlow Lite Micro model, log-mel in
and logits out, verified in TFLM's own interpreter, with a C99 log-mel front end.

Modules, one job each: `rewrite` (the torch graph TFLM gets), `convert` (torch -> float .tflite
with litert-torch), `quantize` (static int8 with global min/max calibration, ai-edge-quantizer),
`flatbuffer` (constants inline, names dropped, aligned; op queries), `build` (all of it plus the
checks and the manifest section), `embedding_build` (the same network cut before its classifier,
for a float head in C), `c_model`, `c_frontend` and `c_rls` (the C files of the bundle). The
runtime side (TFLM interpreter, arena search, numpy front end) is torch-free, in
firmware_export.device.

The converter stack is the optional extra `tflm` (pip install 'edgecl[tflm]'); nothing here is
imported unless this target is asked for.
"""

from __future__ import annotations

TOOLCHAIN = ("litert-torch", "ai-edge-quantizer", "ai-edge-litert", "tflite-micro")


def toolchain_versions() -> dict[str, str]:
    """Installed versions of the converter stack, by distribution name."""
    from importlib.metadata import version

    return {name: version(name) for name in TOOLCHAIN}


def require_toolchain() -> None:
    """EdgeclError naming the missing package when the converter stack is not installed."""
    from importlib.metadata import PackageNotFoundError

    from edgecl.errors import EdgeclError

    try:
        toolchain_versions()
    except PackageNotFoundError as error:
        raise EdgeclError(f"--target tflm: {error.name} is not installed; install the optional "
                          f"extra with pip install 'edgecl[tflm]'") from None
