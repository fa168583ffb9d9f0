"""Why the feature cache runs the front end one clip at a time on one thread (edgecl/features.py):
for 64 random clips, whether computing them in batches of B gives the same bits as one batch of 64,
whether one clip at a time gives the same bits on 1 and 2 threads, and the front end's ms per clip
in batches of 1 and of 64, per sample rate.

    python scripts/speed_frontend_batch.py [THREADS]   (from the repository root)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import build_model
from models.frontend import FrontEndConfig

CLIPS = 64
SETTINGS = ((16000, 1), (44100, 5))  # (sample rate, seconds): FSDD / synthetic, ESC-50


def ms_per_clip(frontend, waves, batch, rounds=2):
    start = time.perf_counter()
    for _ in range(rounds):
        for i in range(0, len(waves), batch):
            frontend(waves[i:i + batch])
    return (time.perf_counter() - start) / (rounds * len(waves)) * 1e3


@torch.no_grad()
def main(threads: int) -> None:
    torch.set_num_threads(threads)
    for rate, seconds in SETTINGS:
        frontend = build_model("bc-resnet", 10, FrontEndConfig.for_sample_rate(rate)).frontend.eval()
        waves = torch.randn(CLIPS, rate * seconds, generator=torch.Generator().manual_seed(0))
        whole = frontend(waves)
        same = {batch: torch.equal(whole, torch.cat([frontend(waves[i:i + batch])
                                                      for i in range(0, CLIPS, batch)]))
                for batch in (1, 2, 4, 8, 16, 32)}
        print(f"{rate} Hz {seconds} s: same bits as one batch of {CLIPS}, per batch size: {same}")
        by_threads = []
        for count in (1, 2):
            torch.set_num_threads(count)
            by_threads.append(torch.cat([frontend(waves[i:i + 1]) for i in range(8)]))
        torch.set_num_threads(threads)
        print(f"{rate} Hz {seconds} s: one clip at a time, same bits on 1 and 2 threads: "
              f"{torch.equal(*by_threads)}")
        print(f"{rate} Hz {seconds} s: ms a clip, batch 1 {ms_per_clip(frontend, waves, 1):.2f}, "
              f"batch {CLIPS} {ms_per_clip(frontend, waves, CLIPS):.2f} ({threads} thread(s))")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
