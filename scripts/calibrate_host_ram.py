"""Host training memory: the estimate (edgecl.budget.host_ram) against measured peak RSS.

Each configuration runs in a fresh process: build BC-ResNet at the width, estimate, then three
Adam steps on random log-mels [batch, 1, 64, frames] with the run's allocator settings and one
torch thread, and report the peak RSS (ru_maxrss), the estimate, their ratio, and the peak over
the baseline as a multiple of the kept bytes (the figure BACKWARD_FACTOR is calibrated on), plus
the step's CPU time (and the kernel's part of it), with activation checkpointing off, on and lean
(on, freed memory returned to the system), and each mode's CPU time over the first mode's. Like
the CLI, the child asks torch for transparent huge pages before torch allocates
(edgecl.allocator.allow_huge_pages); THP_MEM_ALLOC_ENABLE=0 in the environment measures without.
With `caching`, the children run under the caching allocator (jemalloc, purging off) the way the
CLI's training commands restart under it (edgecl.allocator.caching_allocator_environment); with
`system caching`, every configuration runs under glibc's malloc, then under it, so the last
column compares both within one run.

    python scripts/calibrate_host_ram.py            (from the repository root)
    python scripts/calibrate_host_ram.py FRAMES BATCH WIDTH [FRAMES BATCH WIDTH ...] [MODE ...]
                                          [system] [caching]

Frames: 101 = 16 kHz 1 s, 690 = 44.1 kHz 5 s, 1501 = 48 kHz 10 s (the TAU-ASC clip).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = [(101, 32, 40), (690, 16, 40), (690, 32, 40), (1501, 8, 40), (1501, 8, 20)]

CHILD = r"""
import json, resource, sys
from edgecl.allocator import (allow_huge_pages, caching_allocator_loaded, keep_freed_memory,
                              return_freed_memory)
allow_huge_pages()
import torch
from edgecl.budget.host_ram import PLANS, estimate_host_train_ram, activation_profile, kept_bytes
from edgecl.budget.ram import current_rss_bytes, peak_rss_bytes
from models import build_model
from models.frontend import FrontEndConfig

frames, batch, width = (int(a) for a in sys.argv[1:4])
checkpointing, returns_memory = PLANS[sys.argv[4]]
torch.set_num_threads(1)
keep_freed_memory()
if returns_memory:
    return_freed_memory()
model = build_model("bc-resnet", 10, FrontEndConfig.for_sample_rate(16000), width=width).train()
shape = (1, 64, frames)
profile = activation_profile(model, shape)
model.backbone.checkpoint_blocks = checkpointing
baseline = current_rss_bytes()
estimate = estimate_host_train_ram(model, batch, shape, checkpointing=checkpointing,
                                   baseline=baseline, n_clips=0, profile=profile,
                                   returns_memory=returns_memory,
                                   caching=caching_allocator_loaded())
optimizer = torch.optim.Adam(model.parameters())
x = torch.randn(batch, *shape)
targets = torch.randint(0, 10, (batch,))
seconds = []
for _ in range(3):
    start = resource.getrusage(resource.RUSAGE_SELF)
    optimizer.zero_grad()
    logits, _ = model.forward_features(x)
    torch.nn.functional.cross_entropy(logits, targets).backward()
    optimizer.step()
    end = resource.getrusage(resource.RUSAGE_SELF)
    kernel = end.ru_stime - start.ru_stime
    seconds.append((end.ru_utime - start.ru_utime + kernel, kernel))
peak = peak_rss_bytes()
print(json.dumps({"estimate": estimate.total, "peak": peak, "baseline": baseline,
                  "kept": batch * kept_bytes(profile, checkpointing),
                  "step_seconds": min(seconds)[0], "kernel_seconds": min(seconds)[1]}))
"""


def measure(frames: int, batch: int, width: int, mode: str, caching: bool = False) -> dict:
    from edgecl.allocator import caching_allocator_environment

    env = caching_allocator_environment() if caching else None
    if caching and env is None:
        raise SystemExit("caching: no caching allocator (jemalloc) is installed to run under")
    out = subprocess.run([sys.executable, "-c", CHILD, str(frames), str(batch), str(width), mode],
                         cwd=ROOT, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    modes = [a for a in argv if a in ("off", "on", "lean")] or ["off", "on", "lean"]
    allocators = [a for a in argv if a in ("system", "caching")] or ["system"]
    numbers = [int(a) for a in argv if a not in modes and a not in allocators]
    configs = list(zip(numbers[::3], numbers[1::3], numbers[2::3], strict=True)) or DEFAULT
    print("| frames | batch | width | malloc | checkpointing | peak RSS MB | estimate MB | "
          "estimate / peak | (peak - baseline) / kept | step CPU s | of it kernel s | "
          f"CPU / {allocators[0]} {modes[0]} |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for frames, batch, width in configs:
        first = None
        for allocator, mode in ((a, m) for a in allocators for m in modes):
            m = measure(frames, batch, width, mode, allocator == "caching")
            first = first or m["step_seconds"]
            factor = (m["peak"] - m["baseline"]) / m["kept"]
            print(f"| {frames} | {batch} | {width} | {allocator} | {mode} | "
                  f"{m['peak'] / 2**20:.0f} | {m['estimate'] / 2**20:.0f} | "
                  f"{m['estimate'] / m['peak']:.2f} | {factor:.2f} | {m['step_seconds']:.2f} | "
                  f"{m['kernel_seconds']:.2f} | {m['step_seconds'] / first:.2f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
