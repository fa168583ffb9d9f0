"""One BC-ResNet-40 optimizer step on a batch of 32 cached 44.1 kHz 5 s log-mels [32, 1, 64, 690],
float32 against bfloat16 (edgecl.precision: the forward under autocast, the loss in float32), in
rounds that alternate between the two in one process; best CPU and wall ms per clip after a
warm-up round, and their ratio. The process keeps freed memory as the trainer's does
(edgecl.allocator): without it every step maps and zeroes its activations afresh, which costs
float32's twice-as-large activations twice the kernel time and inflated the ratio from about
1.6x to 2.4-3.1x. For docs/results/precision.md.

    python scripts/speed_precision_step.py THREADS ROUNDS   (from the repository root)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgecl.allocator import keep_freed_memory
from edgecl.precision import TrainingPrecision
from models import build_model
from models.frontend import FrontEndConfig


def main(threads: int, rounds: int) -> None:
    keep_freed_memory()  # as edgecl.trainer.set_determinism does
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model("bc-resnet", 10, FrontEndConfig.for_sample_rate(44100), width=40).train()
    batch, targets = torch.randn(32, 1, 64, 690), torch.randint(0, 10, (32,))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    best: dict[str, tuple[float, float]] = {}
    for round_ in range(rounds + 1):  # round 0 warms up
        for name in ("fp32", "bf16"):
            precision = TrainingPrecision(name, "cpu")
            step = precision.optimizer_step(optimizer)
            cpu, wall = time.process_time(), time.perf_counter()
            with precision.autocast():
                logits, _ = model.forward_features(batch)
            loss = F.cross_entropy(logits.float(), targets)
            optimizer.zero_grad(set_to_none=True)
            step(loss)
            timing = (time.process_time() - cpu, time.perf_counter() - wall)
            if round_:
                best[name] = min(best.get(name, timing), timing)
    for name, (cpu, wall) in best.items():
        print(f"{name}: CPU {1000 * cpu / 32:.1f} ms per clip, wall {1000 * wall / 32:.1f}")
    print(f"fp32 / bf16: CPU {best['fp32'][0] / best['bf16'][0]:.2f}x, "
          f"wall {best['fp32'][1] / best['bf16'][1]:.2f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
