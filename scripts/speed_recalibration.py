"""Epoch time by BatchNorm recalibration clips, for docs/results/speed.md: one `fit` epoch of
BC-ResNet-40 (20 classes) on N cached 44.1 kHz 5 s log-mels [1, 64, 690] (random values: the
arithmetic's cost does not depend on them), alternating `--bn-recal-clips` values in one process
so that machine load affects each alike; best epoch seconds per value and the ratio to the first.

    python scripts/speed_recalibration.py THREADS ROUNDS N VALUE [VALUE ...]   (repository root)
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgecl.allocator import keep_freed_memory
from edgecl.training.loop import PhaseData, fit
from models import build_model
from models.frontend import FrontEndConfig


def main(threads: int, rounds: int, clips: int, values: list[int]) -> None:
    keep_freed_memory()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model("bc-resnet", 20, FrontEndConfig.for_sample_rate(44100))
    features = torch.randn(clips, 1, 64, 690)
    train = PhaseData(features=lambda idx: features[idx], targets=torch.arange(clips) % 20)
    val = PhaseData(features=lambda idx: features[idx], targets=torch.zeros(0, dtype=torch.long))
    best: dict[int, float] = {}
    for _ in range(rounds):
        for value in values:
            report = fit(copy.deepcopy(model), train, val, epochs=1, batch_size=32, lr=1e-3,
                         patience=0, generator=torch.Generator().manual_seed(0),
                         bn_recal_clips=value)
            best[value] = min(best.get(value, float("inf")), report.epoch_seconds[0])
            print(f"bn_recal_clips {value}: epoch {report.epoch_seconds[0]:.1f} s", flush=True)
    for value, seconds in best.items():
        print(f"bn_recal_clips {value:5d}: best epoch {seconds:7.1f} s, "
              f"{values[0]} / this {best[values[0]] / seconds:.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), [int(v) for v in sys.argv[4:]])
