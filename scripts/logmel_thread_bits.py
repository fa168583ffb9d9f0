"""How far the numpy log-mel front end's bits depend on numpy's BLAS thread count: every 1 s
window of every `--every`-th clip of a folder, at each rate, computed with its products on one
BLAS thread and on two; counts the float64 log-mel values that differ, the float32 ones that
differ (the front end's output), and the float32 differences expected from the float64 ones'
size (|difference| / float32 spacing, summed).

    python scripts/logmel_thread_bits.py AUDIO_DIR [--every 5] [--rates 44100 8000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def log_mel64(plan, window: np.ndarray, threads: int) -> np.ndarray:
    """The front end's log-mel before its float32 cast, products on `threads` BLAS threads."""
    from edgecl.blas import blas_threads
    from firmware_export.device.logmel import LOG_OFFSET

    frames = np.asarray(window, np.float64)[plan._frame_indices]
    cos_rows, sin_rows = plan._dft_rows
    with blas_threads(threads):
        power = (frames @ cos_rows.T) ** 2 + (frames @ sin_rows.T) ** 2
        mel = plan.filterbank @ power.T
    values: np.ndarray = np.log(mel + LOG_OFFSET)
    return values


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio_dir", type=Path)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--rates", type=int, nargs="+", default=[44100, 8000])
    parser.add_argument("--seconds", type=float, default=5.0, help="clip length read")
    args = parser.parse_args(argv)
    from edgecl.audio import load_audio
    from firmware_export.device.logmel import LogMelPlan
    from firmware_export.device.windows import split_windows
    from models.frontend import FrontEndConfig

    clips = sorted(args.audio_dir.glob("*.wav"))[::args.every]
    for rate in args.rates:
        plan = LogMelPlan.from_config(FrontEndConfig.for_sample_rate(rate).to_dict(), rate)
        values = differ64 = differ32 = 0
        expected = 0.0
        for clip in clips:
            for window in split_windows(load_audio(clip, rate, int(args.seconds * rate)), rate):
                two, one = log_mel64(plan, window, 2), log_mel64(plan, window, 1)
                two32, one32 = two.astype(np.float32), one.astype(np.float32)
                values += two.size
                differ64 += int((two != one).sum())
                differ32 += int((two32 != one32).sum())
                expected += float((np.abs(two - one) / np.spacing(np.abs(two32))).sum())
        print(f"{rate} Hz, {len(clips)} clips: {values} values, float64 differ {differ64}, "
              f"float32 differ {differ32}, float32 expected to differ {expected:.2g}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
