"""Which frozen feature should the device's analytic head learn on? The few-shot study of
scripts/analytic_fewshot.py, run on other poolings of the same trained backbone.

    python scripts/analytic_features.py MANIFEST.csv --bundles WS/run_s0/phase_0,... \
        [--shots 5,20,all] [--draws 5] [--weighting boosted] [--cache DIR]

Each bundle is a BC-ResNet phase bundle that has not seen the last task's classes (as for
analytic_fewshot.py); its checkpoint.pt is run in PyTorch once over every manifest row (clips read
as the device reads them) and every candidate feature is taken from that pass: the embedding the
bundle ships (the mean of the last block's map over frequency and time), its square root (the
Tukey transform of non-negative features), the last map's mean with its std or max, its mean per
frequency half or per time half, and the concatenated means of the last two or three blocks. Each
candidate then goes through the device's protocol unchanged (analytic_fewshot.device_heads: the
head fit to every training clip of the bundle's classes, gamma chosen on a held-out fifth of them,
each new class learnt from N clips per draw) and classifies every test row. Nothing is chosen on
the test rows. Prints a markdown table: accuracy on all classes at each N (mean ± std over
bundles x draws), the state's bytes for 10 classes and the update's multiply-adds per clip.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from analytic_fewshot import device_heads  # noqa: E402

from edgecl.errors import EdgeclError  # noqa: E402
from edgecl.run_folder import CHECKPOINT_NAME, load_checkpoint  # noqa: E402
from firmware_export.device.analytic import AnalyticHead, state_bytes  # noqa: E402
from firmware_export.device.manifest import verify_bundle  # noqa: E402
from firmware_export.device.runtime import read_clip  # noqa: E402

BATCH = 64
# Candidate name -> the feature from the pass's pooled arrays (last = the last block's map).
CANDIDATES: dict[str, Callable[[dict[str, np.ndarray]], np.ndarray]] = {
    "mean (the shipped embedding)": lambda p: p["mean"],
    "sqrt(mean)": lambda p: np.sqrt(np.maximum(p["mean"], 0.0)),
    "mean + std": lambda p: np.hstack([p["mean"], p["std"]]),
    "mean + max": lambda p: np.hstack([p["mean"], p["max"]]),
    "sqrt(mean + max)": lambda p: np.sqrt(np.maximum(np.hstack([p["mean"], p["max"]]), 0.0)),
    "mean per frequency half": lambda p: p["freq_halves"],
    "mean per time half": lambda p: p["time_halves"],
    "means of the last 2 blocks": lambda p: np.hstack([p["mean"], p["mean_2"]]),
    "means of the last 3 blocks": lambda p: np.hstack([p["mean"], p["mean_2"], p["mean_3"]]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--bundles", required=True, help="Comma-separated phase bundle folders.")
    parser.add_argument("--shots", default="5,20,all")
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--weighting", default="boosted")
    parser.add_argument("--cache", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = list(csv.DictReader(args.manifest.open()))
    shots = [None if s == "all" else int(s) for s in args.shots.split(",")]
    scores: dict[str, dict[str, list[float]]] = {name: {} for name in CANDIDATES}
    per_bundle: dict[str, list[float]] = {name: [] for name in CANDIDATES}
    dims: dict[str, int] = {}
    for bundle in [Path(b) for b in args.bundles.split(",") if b]:
        pooled = _pooled(bundle, args.manifest, rows, args.cache)
        classes = [str(c) for c in verify_bundle(bundle)["classes"]]
        labels = np.asarray([row["label"] for row in rows])
        base = {"labels": labels, "split": np.asarray([row["split"] for row in rows]),
                "classes": classes, "new": sorted(set(labels) - set(classes))}
        for name, make in CANDIDATES.items():
            data = {**base, "z": make(pooled).astype(np.float64)}
            dims[name] = data["z"].shape[1]
            for n in shots:
                accuracy = _accuracies(data, args.weighting, n, args.draws)
                scores[name].setdefault(_key(n), []).extend(accuracy)
                if n == 20:
                    per_bundle[name].append(float(np.mean(accuracy)))
            print(f"{bundle} {name}: " + ", ".join(
                f"{_key(n)} {np.mean(scores[name][_key(n)][-(args.draws if n else 1):]):.3f}"
                for n in shots), flush=True)
    _print_table(scores, per_bundle, dims, shots)


def _key(n: int | None) -> str:
    return "all" if n is None else str(n)


def _accuracies(data: dict, weighting: str, n: int | None, draws: int) -> list[float]:
    test = data["split"] == "test"
    out = []
    for head in device_heads(data, weighting, n, draws):
        predicted = np.asarray(head.labels)[np.argmax(head.logits(data["z"][test]), axis=1)]
        out.append(float(np.mean(predicted == data["labels"][test])))
    return out


def _pooled(bundle: Path, manifest_csv: Path, rows: list[dict],
            cache: Path | None) -> dict[str, np.ndarray]:
    """Every row's poolings of the last three blocks' maps by the bundle's checkpoint (cached by
    the checkpoint's sha256)."""
    checkpoint = bundle / CHECKPOINT_NAME
    key = hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:16]
    cached = None if cache is None else cache / f"pooled-{key}.npz"
    if cached is not None and cached.is_file():
        with np.load(cached) as stored:
            return {name: stored[name] for name in stored.files}
    manifest = verify_bundle(bundle)
    rate, length = int(manifest["sample_rate"]), int(manifest["clip_samples"])
    model, _, _ = load_checkpoint(checkpoint)
    if getattr(model.backbone, "arch_name", None) != "bc-resnet":
        raise EdgeclError(f"{checkpoint}: expected a bc-resnet backbone")
    parts: dict[str, list[np.ndarray]] = {}
    with torch.no_grad():
        for start in range(0, len(rows), BATCH):
            waves = np.stack([read_clip(manifest_csv.parent / row["path"], rate, length)
                              for row in rows[start:start + BATCH]])
            for name, value in _poolings(model, torch.from_numpy(waves)).items():
                parts.setdefault(name, []).append(value)
    pooled = {name: np.vstack(values).astype(np.float32) for name, values in parts.items()}
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cached, **pooled)
    return pooled


def _poolings(model: torch.nn.Module, waves: torch.Tensor) -> dict[str, np.ndarray]:
    """The candidates' raw poolings of one batch; "mean" is the backbone's own output."""
    maps = []
    x = model.frontend(waves)
    for layer in model.backbone.layers:
        x = layer(x)
        maps.append(x)
    last = maps[-1]
    mean = last.mean(dim=(2, 3))
    if not torch.allclose(mean, model.embed(model.frontend(waves)), atol=1e-5):
        raise EdgeclError("the last block's mean is not the backbone's embedding")
    n_freq, n_time = last.shape[2] // 2, last.shape[3] // 2
    return {
        "mean": mean.numpy(), "std": last.std(dim=(2, 3), unbiased=False).numpy(),
        "max": last.amax(dim=(2, 3)).numpy(),
        "freq_halves": torch.cat([last[:, :, :n_freq].mean(dim=(2, 3)),
                                  last[:, :, n_freq:].mean(dim=(2, 3))], 1).numpy(),
        "time_halves": torch.cat([last[..., :n_time].mean(dim=(2, 3)),
                                  last[..., n_time:].mean(dim=(2, 3))], 1).numpy(),
        "mean_2": maps[-2].mean(dim=(2, 3)).numpy(), "mean_3": maps[-3].mean(dim=(2, 3)).numpy(),
    }


def _print_table(scores: dict, per_bundle: dict, dims: dict, shots: list[int | None]) -> None:
    print("\n| feature | D | state, 10 classes (B fp32) | update MACs per clip | "
          + " | ".join(f"{_key(n)} clips" for n in shots) + " | 20 clips per bundle |")
    print("| --- | --- | --- | --- | " + " | ".join("---" for _ in shots) + " | --- |")
    for name, by_shot in scores.items():
        dim = dims[name]
        head = AnalyticHead.empty(np.zeros(dim), np.ones(dim), gamma=1.0)
        head.w = np.zeros((dim + 1, 10))
        cells = [f"{np.mean(by_shot[_key(n)]):.3f} ± {np.std(by_shot[_key(n)]):.3f}"
                 for n in shots]
        print(f"| {name} | {dim} | {state_bytes(dim, 10):,} | {head.update_macs(1):,} | "
              + " | ".join(cells) + " | " + " ".join(f"{a:.3f}" for a in per_bundle[name])
              + " |")


if __name__ == "__main__":
    main()
