"""Embedding pass timings for docs/results/speed.md: BC-ResNet-40 on 44.1 kHz 5 s log-mels,
the model's own backbone (`model.embed`) against the inference copy (models.inference), at several
batch sizes, in alternating rounds in one process; best wall and CPU ms per clip.

    python scripts/speed_embedding.py THREADS ROUNDS   (from the repository root)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import build_model
from models.frontend import FrontEndConfig
from models.inference import inference_copy


def main(threads: int, rounds: int) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model("bc-resnet", 20, FrontEndConfig.for_sample_rate(44100))
    with torch.no_grad():
        model.frontend.eval()
        logmel = model.frontend(torch.randn(64, 220500) * 0.1)
    model.eval()
    fast = inference_copy(model.backbone, logmel.shape[2])
    variants = [("model.embed", 64, model.embed), ("model.embed", 8, model.embed),
                ("inference copy", 8, fast), ("inference copy", 16, fast),
                ("inference copy", 64, fast), ("inference copy", 1, fast)]
    best: dict = {}
    for _ in range(rounds):
        for name, batch, embed in variants:
            with torch.no_grad():
                wall, cpu = time.perf_counter(), time.process_time()
                for start in range(0, len(logmel), batch):
                    embed(logmel[start:start + batch])
                wall = 1000 * (time.perf_counter() - wall) / len(logmel)
                cpu = 1000 * (time.process_time() - cpu) / len(logmel)
            old = best.get((name, batch), (float("inf"), float("inf")))
            best[(name, batch)] = (min(old[0], wall), min(old[1], cpu))
    for (name, batch), (wall, cpu) in best.items():
        print(f"{name:15s} batch {batch:3d}: wall {wall:7.2f}  cpu {cpu:7.2f} ms per clip")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
