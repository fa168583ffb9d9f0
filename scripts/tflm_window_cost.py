"""CPU time per window of a TFLM build's parity check, split into the numpy front end (log-mel)
and TFLM's run of the window, on a phase bundle's TFLM model (shipped or kept as withheld).

    python scripts/tflm_window_cost.py PHASE_DIR CLIP.wav [CLIP.wav ...]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    from edgecl.audio import load_audio
    from firmware_export.device.logmel import LogMelPlan, logmel
    from firmware_export.device.tflm_runtime import MicroModel
    from firmware_export.device.windows import split_windows

    folder = Path(argv[0])
    manifest = json.loads((folder / "manifest.json").read_text())
    section = manifest["tflm"]
    model = folder / section["file"]
    if not model.is_file():
        model = folder / "withheld" / "tflm" / section["file"]
    window = int(section["window"]["samples"])
    plan = LogMelPlan.from_config(manifest["frontend"], window)
    micro = MicroModel(model.read_bytes(), int(section["arena_bytes"]))
    rate, samples = int(manifest["sample_rate"]), int(manifest["clip_samples"])
    windows = [part for clip in argv[1:] for part in
               split_windows(load_audio(clip, rate, samples), window)]
    started = time.process_time()
    features = [logmel(plan, part) for part in windows]
    front_end = (time.process_time() - started) / len(windows)
    started = time.process_time()
    for feature in features:
        micro.run_logmel(feature)
    tflm = (time.process_time() - started) / len(windows)
    print(f"{len(windows)} windows of {window} samples: log-mel {1000 * front_end:.1f} ms, "
          f"TFLM {1000 * tflm:.1f} ms of CPU a window")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
