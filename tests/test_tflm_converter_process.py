"""The TFLM conversions run in a child process (firmware_export.tflm.converter_process): an
export with --target tflm never loads litert-torch or JAX in the exporting process, the child's
bytes are this process's, and a failing or dying child is one clear line. Skipped without the
tflm extra."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

for _package in ("litert_torch", "ai_edge_quantizer", "ai_edge_litert", "tflite_micro"):
    pytest.importorskip(_package, reason="the tflm extra is not installed")

from export_helpers import one_thread  # noqa: E402, F401 (module-wide fixture)

from firmware_export.tflm.converter_process import ConversionFailed, ConverterProcess  # noqa: E402
from firmware_export.tflm.recipes import RECIPES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# A small TFLM export in a fresh interpreter; prints which converter modules it loaded.
_EXPORT = textwrap.dedent("""
    import sys, tempfile
    sys.path.insert(0, sys.argv[1])
    import torch
    torch.set_num_threads(1)
    from export_helpers import CLASSES, tones, trained_model
    from firmware_export import export_phase
    calibration, _ = tones(24, seed=2)
    holdout, targets = tones(32, seed=3)
    manifest = export_phase(trained_model(), tempfile.mkdtemp() + "/phase_0", phase=0,
                            classes=CLASSES, calibration_waveforms=calibration,
                            holdout_waveforms=holdout, holdout_targets=targets, target="tflm",
                            tflm_window_seconds=0.25)
    loaded = [name for name in ("litert_torch", "jax", "ai_edge_quantizer") if name in sys.modules]
    print("TFLM", manifest["tflm"]["status"], "LOADED", ",".join(loaded) or "none")
""")


@pytest.mark.slow
def test_a_tflm_export_never_loads_the_converter_stack_in_the_exporting_process():
    done = subprocess.run([sys.executable, "-c", _EXPORT, str(ROOT / "tests")],
                          capture_output=True, text=True, cwd=ROOT, timeout=1500,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    line = [text for text in done.stdout.splitlines() if text.startswith("TFLM ")][-1]
    assert line.endswith("LOADED none"), line
    assert line.split()[1] in ("shipped", "withheld")  # the build ran to its verdict


def test_a_child_that_fails_is_one_line():
    with ConverterProcess() as converter, pytest.raises(ConversionFailed) as failed:
        converter.quantized(RECIPES[0], b"not a flatbuffer",
                            np.zeros((2, 1, 4, 4), dtype=np.float32))
    assert "\n" not in str(failed.value) and str(failed.value)


def test_a_child_that_dies_is_one_line_and_a_new_child_serves_the_next_call():
    converter = ConverterProcess()
    try:
        with pytest.raises(ConversionFailed, match="child process ended without an answer"):
            converter._call(os._exit, 3)
        assert converter._call(bytes, 2) == b"\x00\x00"  # a fresh child
    finally:
        converter.close()
