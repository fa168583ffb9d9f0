"""A/B of the allocator settings (edgecl.allocator) in one process, for docs/results/speed.md:
the inference-copy embedding pass (batch 8) and a 32-clip BC-ResNet-40 training step on 44.1 kHz
5 s log-mels, alternating glibc's defaults and the keep_freed_memory settings; best of 3 rounds.

    python scripts/speed_allocator.py THREADS   (from the repository root)
"""
import ctypes
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from torch.nn import functional as F

from models import build_model
from models.frontend import FrontEndConfig
from models.inference import inference_copy

libc = ctypes.CDLL("libc.so.6")
def settings(keep):
    if keep:
        libc.mallopt(-4, 0); libc.mallopt(-1, 1 << 30)
    else:
        libc.mallopt(-4, 65536); libc.mallopt(-1, 128 * 1024); libc.malloc_trim(0)
torch.set_num_threads(int(sys.argv[1]))
torch.manual_seed(0)
m = build_model("bc-resnet", 4, FrontEndConfig.for_sample_rate(44100))
x = torch.randn(32, 1, 64, 690); y = torch.randint(0, 4, (32,))
opt = torch.optim.Adam(m.parameters(), 1e-3)
res = {}
for _round in range(3):
    for keep in (False, True):
        settings(keep)
        m.eval(); fast = inference_copy(m.backbone, 64)
        c, w = time.process_time(), time.perf_counter()
        with torch.no_grad():
            for i in range(0, 32, 8): fast(x[i:i+8])
        e = ((time.perf_counter() - w) * 1000 / 32, (time.process_time() - c) * 1000 / 32)
        m.train()
        c, w = time.process_time(), time.perf_counter()
        logits, _ = m.forward_features(x); loss = F.cross_entropy(logits, y)
        opt.zero_grad(); loss.backward(); opt.step()
        t = ((time.perf_counter() - w) * 1000 / 32, (time.process_time() - c) * 1000 / 32)
        for k, v in (("embed8", e), ("train32", t)):
            key = (k, keep); old = res.get(key, (1e9, 1e9)); res[key] = (min(old[0], v[0]), min(old[1], v[1]))
for (k, keep), (w, c) in sorted(res.items()):
    print(k, "keep" if keep else "default", f"wall {w:.1f} cpu {c:.1f} ms/clip")
