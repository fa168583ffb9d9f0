"""What the exporter's analytic state costs: its parts' wall and CPU time for one phase of a run.

    python scripts/analytic_export_cost.py RUN_DIR --phase 1 [--rounds 2]

Rebuilds the phase's AnalyticFit as `edgecl export` does (firmware_export.run_export.rebuilt_fit:
the phase's new clips and the replay memory recorded beside its checkpoint) and times, per round,
the parts of firmware_export.analytic_fit.fit_phase_state on the bundle's own embedding model:
reading the clips, the embedding pass, the clips' sha256, the fit (gamma's hold-out included),
and the whole call. Rounds alternate within one process, so the machine's load weighs on each
part alike. Prints seconds (wall and CPU) per part and per clip.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import onnx

from edgecl.audio import load_audio
from edgecl.run_folder import CHECKPOINT_NAME, load_checkpoint, run_plan
from firmware_export.analytic_fit import embed_waveforms, fit_phase_state
from firmware_export.device.head_graph import trained_head
from firmware_export.device.layout import MODEL_EMBEDDING, MODEL_FP32
from firmware_export.device.learn import class_rows, fit_state
from firmware_export.device.manifest import sha256_file
from firmware_export.run_export import rebuilt_fit


def timed(parts: dict, name: str, work):
    wall, cpu = time.perf_counter(), time.process_time()
    out = work()
    parts.setdefault(name, []).append((time.perf_counter() - wall, time.process_time() - cpu))
    return out


def one_round(fit, folder: Path, classes: list[str], parts: dict) -> int:
    embedding = (folder / MODEL_EMBEDDING).read_bytes()
    labels = [label for _, label in fit.clips]
    clips = [fit.clips[i][0] for i in class_rows(labels, classes)]
    waves = timed(parts, "read clips", lambda: {clip: fit.waveform(clip) for clip in clips})
    embeddings = timed(parts, "embedding pass", lambda: embed_waveforms(
        embedding, clips, waves.__getitem__))
    hashes = timed(parts, "clips' sha256", lambda: [sha256_file(clip.path) for clip in clips])
    timed(parts, "fit (gamma, head, state)", lambda: fit_state(
        embeddings, sorted(labels, key=classes.index), hashes, backbone_sha256="",
        gamma=fit.gamma, weighting=fit.weighting, class_limit=fit.class_limit,
        expansion=fit.expansion, seed=fit.seed))
    held = embeddings[:8]
    timed(parts, "whole fit_phase_state", lambda: fit_phase_state(
        fit, embedding, classes, holdout_embeddings=held, holdout_labels=labels[:8],
        trained=trained_head(onnx.load(str(folder / MODEL_FP32))),
        backbone_sha256=hashlib.sha256(embedding).hexdigest()))
    return len(clips)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--phase", type=int, required=True)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    folder = args.run_dir / f"phase_{args.phase}"
    config, split, plan = run_plan(args.run_dir)
    _, classes, _ = load_checkpoint(folder / CHECKPOINT_NAME)
    seen = [task for task in plan.tasks if set(task.classes) <= set(classes)]
    fit = rebuilt_fit(config, folder, classes, plan.tasks, seen,
                      lambda clip: load_audio(clip.path, split.sample_rate, split.clip_samples))
    parts: dict = {}
    for _ in range(args.rounds):
        n = one_round(fit, folder, classes, parts)
    print(json.dumps({"clips": n, "fit": fit.fit, "rounds": args.rounds}))
    for name, times in parts.items():
        wall = sum(t[0] for t in times) / len(times)
        cpu = sum(t[1] for t in times) / len(times)
        print(f"{name:26s} wall {wall:7.2f} s  cpu {cpu:7.2f} s  ({1000 * wall / n:.2f} ms/clip)")


if __name__ == "__main__":
    main()
