"""What a training step's peak resident set consists of: the bytes malloc has handed out and not
taken back (live tensors and everything else, glibc's mallinfo2 `uordblks`), the heap those bytes
sit in (`arena`, what the process keeps mapped), and the resident set, sampled after every op of a
BC-ResNet training step and every 0.2 ms inside ops, with and without activation checkpointing,
under edgecl's allocator settings (`keep`: edgecl.allocator.keep_freed_memory, what training runs
with) or glibc's defaults (`glibc`: blocks above a dynamic threshold of up to 32 MB mmapped and
returned on free).

Each configuration runs in a fresh process: STEPS timed Adam steps on random log-mels
[batch, 1, 64, frames] (one torch thread; CPU seconds per step, the best step), then one traced
step. Linux with glibc only.

    python scripts/trace_step_memory.py FRAMES BATCH WIDTH [STEPS]   (from the repository root)

Frames: 101 = 16 kHz 1 s, 690 = 44.1 kHz 5 s, 1501 = 48 kHz 10 s (the TAU-ASC clip).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [("off", "keep"), ("on", "keep"), ("off", "glibc"), ("on", "glibc")]

CHILD = r"""
import ctypes, json, os, resource, sys, threading, time
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from edgecl.allocator import keep_freed_memory
from edgecl.budget.ram import current_rss_bytes
from models import build_model
from models.frontend import FrontEndConfig

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2

def heap():
    info = libc.mallinfo2()  # mmapped blocks (hblkhd) are both live and mapped
    return info.uordblks + info.hblkhd, info.arena + info.hblkhd

frames, batch, width, steps = (int(a) for a in sys.argv[1:5])
checkpointing, allocator = sys.argv[5], sys.argv[6]
torch.set_num_threads(1)
if allocator == "keep":
    keep_freed_memory()
torch.manual_seed(0)
model = build_model("bc-resnet", 10, FrontEndConfig.for_sample_rate(16000), width=width).train()
model.backbone.checkpoint_blocks = checkpointing == "on"
optimizer = torch.optim.Adam(model.parameters())
x, targets = torch.randn(batch, 1, 64, frames), torch.randint(0, 10, (batch,))

def step():
    optimizer.zero_grad()
    logits, _ = model.forward_features(x)
    loss = torch.nn.functional.cross_entropy(logits, targets)
    marks.append(("backward",) + heap() + (current_rss_bytes(),))
    loss.backward()
    optimizer.step()

marks, cpu = [], []
for _ in range(steps):
    start = time.process_time()
    step()
    cpu.append(time.process_time() - start)
baseline_live, _ = heap()
samples, done = [], []

def sample():
    while not done:
        samples.append(heap()[0])
        time.sleep(0.0002)

class AfterEveryOp(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        marks.append((str(func),) + heap() + (current_rss_bytes(),))
        return out

sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
marks.clear()
with AfterEveryOp():
    step()
done.append(True)
sampler.join()
backward = next(m for m in marks if m[0] == "backward")
print(json.dumps({
    "cpu_step": min(cpu), "baseline_live": baseline_live,
    "live": max(max(m[1] for m in marks), max(samples, default=0)),
    "heap": max(m[2] for m in marks), "rss": max(m[3] for m in marks),
    "live_at_backward": backward[1], "heap_at_backward": backward[2],
    "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def measure(frames: int, batch: int, width: int, steps: int, checkpointing: str,
            allocator: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(frames), str(batch), str(width),
                          str(steps), checkpointing, allocator], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    frames, batch, width = (int(a) for a in argv[:3])
    steps = int(argv[3]) if len(argv) > 3 else 2
    mb = 2**20
    print("| checkpointing | allocator | live peak MB | live at backward MB | heap peak MB "
          "| heap / live | traced step RSS MB | process peak RSS MB | CPU s / step |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for checkpointing, allocator in CONFIGS:
        m = measure(frames, batch, width, steps, checkpointing, allocator)
        print(f"| {checkpointing} | {allocator} | {m['live'] / mb:.0f} | "
              f"{m['live_at_backward'] / mb:.0f} | {m['heap'] / mb:.0f} | "
              f"{m['heap'] / m['live']:.2f} | {m['rss'] / mb:.0f} | {m['peak_rss'] / mb:.0f} | "
              f"{m['cpu_step']:.2f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
