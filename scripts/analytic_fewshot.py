"""The device learns the last task from N clips per class: accuracy on every class, per weighting,
over draws of the clips and over bundles (seeds), beside the host runs' own figures.

    python scripts/analytic_fewshot.py MANIFEST.csv --bundles WS/run_s0/phase_0,... \
        [--shots 5,20,all] [--draws 5] [--weightings balanced,boosted] [--cache DIR] \
        [--learn-check 20] [--runs WS --run-names a,b,...]

Each bundle is the phase bundle of a run that has not seen the last task's classes (its classes
are the bundle's; the new ones are MANIFEST's other labels, learnt in sorted order). Its state is
fit as `edgecl device fit BUNDLE MANIFEST --split train` fits it (every training row of its
classes, gamma chosen on a held-out fifth: firmware_export.device.learn.fit_bundle_state) with
each weighting, then each new class is learnt from N training clips drawn by the draw's seed as
`edgecl device learn` learns them (AnalyticHead.learn), and the head classifies every test row.
Embeddings come from the bundle's embedding model (ONNX Runtime), computed once per bundle
(`--cache` keeps them). `--learn-check N` also runs the real thing once on the first bundle:
fit_bundle_state and learn_bundle on a copy, N clips per new class (draw 0), the wall time of each
learn call end to end, the learnt version's model.analytic.onnx accuracy, and how far its state's
W is from the head computed here for draw 0. `--runs` prints each run's results.json figures (the accuracy
on all classes after its last phase, A_avg, A_last, BWT). Prints markdown tables.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from firmware_export.device.analytic import AnalyticHead, choose_gamma, fit_head
from firmware_export.device.analytic_state import read_state
from firmware_export.device.learn import embed_clips, fit_bundle_state, learn_bundle
from firmware_export.device.manifest import verify_bundle
from firmware_export.device.runtime import load_model, read_clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--bundles", default="", help="Comma-separated phase bundle folders.")
    parser.add_argument("--shots", default="5,20,all")
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--weightings", default="balanced,boosted")
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--learn-check", type=int, default=0)
    parser.add_argument("--ceiling", action="store_true",
                        help="Also an RBF kernel ridge on every training clip of every class.")
    parser.add_argument("--runs", type=Path, default=None)
    parser.add_argument("--run-names", default="")
    args = parser.parse_args()
    rows = list(csv.DictReader(args.manifest.open()))
    bundles = [Path(b) for b in args.bundles.split(",") if b]
    shots = [None if s == "all" else int(s) for s in args.shots.split(",")]
    weightings = args.weightings.split(",")
    results: dict[tuple[str, str], list[list[float]]] = {}
    for bundle in bundles:
        data = _embeddings(bundle, args.manifest, rows, args.cache)
        print(f"{bundle}: new classes {data['new']}", flush=True)
        if args.ceiling:
            print(f"  RBF kernel ridge on all training clips (best of 6 settings on the test "
                  f"rows, an optimistic ceiling of any head on this embedding): "
                  f"{_kernel_ceiling(data):.3f}", flush=True)
        for weighting in weightings:
            for n, scores in _device_scores(data, weighting, shots, args.draws).items():
                results.setdefault((weighting, n), []).append(scores)
    if bundles:
        _print_device_table(results, weightings, shots, len(bundles), args.draws)
    if args.learn_check and bundles:
        data = _embeddings(bundles[0], args.manifest, rows, args.cache)
        simulated = device_heads(data, weightings[-1], args.learn_check)
        _learn_check(bundles[0], args.manifest, rows, args.learn_check, weightings[-1], simulated)
    if args.runs is not None:
        _print_runs(args.runs, [name for name in args.run_names.split(",") if name])


def _embeddings(bundle: Path, manifest_csv: Path, rows: list[dict], cache: Path | None) -> dict:
    """Every manifest row's embedding by the bundle's embedding model, with labels and splits."""
    manifest = verify_bundle(bundle)
    key = manifest["files"]["model.embedding.onnx"]["sha256"][:16]
    cached = None if cache is None else cache / f"{key}.npy"
    if cached is not None and cached.is_file():
        z = np.load(cached)
    else:
        z = embed_clips(bundle, manifest, [manifest_csv.parent / row["path"] for row in rows])
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            np.save(cached, z)
    labels = np.asarray([row["label"] for row in rows])
    classes = list(manifest["classes"])
    return {"z": z, "labels": labels, "split": np.asarray([row["split"] for row in rows]),
            "classes": classes, "new": sorted(set(labels) - set(classes))}


def device_heads(data: dict, weighting: str, n: int | None, draws: int = 1):
    """The head after the device learns each new class from n clips (None: all), per draw: the
    fit exactly as fit_bundle_state does it, the learning as learn_bundle does."""
    z, labels, split, classes = data["z"], data["labels"], data["split"], data["classes"]
    rows = [i for label in classes for i in np.flatnonzero((split == "train") & (labels == label))]
    order = [str(labels[i]) for i in rows]
    base, _ = fit_head(z[rows], order, gamma=choose_gamma(z[rows], order), weighting=weighting)
    for draw in range(draws if n is not None else 1):
        rng = np.random.default_rng(draw)
        head = _copy(base)
        for label in data["new"]:
            pool = np.flatnonzero((split == "train") & (labels == label))
            picked = pool if n is None else pool[rng.choice(len(pool), n, replace=False)]
            head.learn(z[picked], str(label))
        yield head


def _device_scores(data: dict, weighting: str, shots: list[int | None],
                   draws: int) -> dict[str, list]:
    """Per shot count: the all-class and new-class accuracy of each draw, and gamma."""
    z, labels, split = data["z"], data["labels"], data["split"]
    test = split == "test"
    is_new = np.isin(labels[test], data["new"])
    out = {}
    for n in shots:
        overall, on_new, new_as_old, old_as_new = [], [], [], []
        for head in device_heads(data, weighting, n, draws):
            gamma = head.gamma
            predicted = np.asarray(head.labels)[np.argmax(head.logits(z[test]), axis=1)]
            hits = predicted == labels[test]
            predicted_new = np.isin(predicted, data["new"])
            overall.append(float(np.mean(hits)))
            on_new.append(float(np.mean(hits[is_new])))
            new_as_old.append(float(np.mean(~predicted_new[is_new])))
            old_as_new.append(float(np.mean(predicted_new[~is_new])))
        out["all" if n is None else str(n)] = [overall, on_new, gamma, new_as_old, old_as_new]
    return out


def _kernel_ceiling(data: dict) -> float:
    """Test accuracy of exp(-|x - x'|^2 / (s median)) kernel ridge, the best of s in (0.5, 1, 2)
    and lambda in (0.1, 1), on the standardised embedding of every training clip."""
    z, labels, split = np.asarray(data["z"], np.float64), data["labels"], data["split"]
    train, test = split == "train", split == "test"
    mean, std = z[train].mean(axis=0), z[train].std(axis=0) + 1e-6
    x_train, x_test = (z[train] - mean) / std, (z[test] - mean) / std
    names = np.asarray(sorted(set(labels)))
    targets = (labels[train][:, None] == names[None, :]).astype(np.float64)

    def squared(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T

    inner, cross = squared(x_train, x_train), squared(x_test, x_train)
    median = float(np.median(inner))
    best = 0.0
    for scale in (0.5, 1.0, 2.0):
        for lam in (0.1, 1.0):
            coef = np.linalg.solve(np.exp(-inner / (scale * median)) + lam * np.eye(len(inner)),
                                   targets)
            predicted = names[np.argmax(np.exp(-cross / (scale * median)) @ coef, axis=1)]
            best = max(best, float(np.mean(predicted == labels[test])))
    return best


def _copy(head: AnalyticHead) -> AnalyticHead:
    return AnalyticHead(mean=head.mean, std=head.std, gamma=head.gamma, weighting=head.weighting,
                        r=head.r.copy(), w=head.w.copy(), labels=list(head.labels),
                        clips=list(head.clips), mass=list(head.mass))


def _print_device_table(results: dict, weightings: list[str], shots: list[int | None],
                        n_bundles: int, draws: int) -> None:
    print(f"\n| weighting | clips per new class | all classes: mean ± std over {n_bundles} "
          f"bundles x {draws} draws | new classes | new clips taken for an old class | old "
          f"clips taken for a new class | mean per bundle |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for weighting in weightings:
        for n in shots:
            key = "all" if n is None else str(n)
            overall = np.concatenate([entry[0] for entry in results[(weighting, key)]])
            on_new = np.concatenate([entry[1] for entry in results[(weighting, key)]])
            per_bundle = [np.mean(entry[0]) for entry in results[(weighting, key)]]
            new_as_old = np.mean([entry[3] for entry in results[(weighting, key)]])
            old_as_new = np.mean([entry[4] for entry in results[(weighting, key)]])
            print(f"| {weighting} | {key} | {overall.mean():.3f} ± {overall.std():.3f} | "
                  f"{on_new.mean():.3f} ± {on_new.std():.3f} | {new_as_old:.3f} | "
                  f"{old_as_new:.3f} | "
                  + " ".join(f"{s:.3f}" for s in per_bundle) + " |")
    print(f"\ngamma per bundle: {[entry[2] for entry in results[(weightings[0], key)]]}")


def _learn_check(bundle: Path, manifest_csv: Path, rows: list[dict], n: int,
                 weighting: str, simulated) -> None:
    """The real device path once: fit, learn N clips per new class (draw 0), time, and how far
    its state's W is from the head simulated here."""
    classes = verify_bundle(bundle)["classes"]
    train = [row for row in rows if row["split"] == "train"]
    fit_rows = [row for row in train if row["label"] in classes]
    new = sorted({row["label"] for row in rows} - set(classes))
    test = [row for row in rows if row["split"] == "test"]
    with tempfile.TemporaryDirectory() as folder:
        current = Path(folder) / bundle.name
        shutil.copytree(bundle, current)
        began = time.perf_counter()
        fit_bundle_state(current, [manifest_csv.parent / row["path"] for row in fit_rows],
                         [row["label"] for row in fit_rows], weighting=weighting)
        fit_seconds = time.perf_counter() - began
        rng = np.random.default_rng(0)
        seconds = []
        for label in new:
            pool = [manifest_csv.parent / row["path"] for row in train if row["label"] == label]
            clips = [pool[i] for i in rng.choice(len(pool), n, replace=False)]
            began = time.perf_counter()
            current, manifest = learn_bundle(current, label, clips)
            seconds.append(time.perf_counter() - began)
        model = load_model(current)
        waves = np.stack([read_clip(manifest_csv.parent / row["path"], model.sample_rate,
                                    model.clip_samples) for row in test])
        logits = np.vstack([model.logits(waves[i:i + 32]) for i in range(0, len(waves), 32)])
        predicted = np.asarray(model.labels)[np.argmax(logits, axis=1)]
        truth = np.asarray([row["label"] for row in test])
        state = read_state(current, manifest)
        gap = np.max(np.abs(state.head.w - next(simulated).w)) / np.max(np.abs(state.head.w))
        print(f"\nlearn check ({bundle}, {weighting}): fit {len(fit_rows)} clips in "
              f"{fit_seconds:.1f} s; learn {n} clips per class end to end: "
              + ", ".join(f"{s:.2f} s" for s in seconds)
              + f"; model.analytic.onnx accuracy on all {len(truth)} test clips "
              f"{np.mean(predicted == truth):.3f}; state {manifest['analytic']['state_bytes_fp32']}"
              f" bytes fp32, gamma {state.head.gamma:g}; its W against the head simulated "
              f"from the cached embeddings: max relative difference {gap:.1e}")


def _print_runs(workspace: Path, names: list[str]) -> None:
    print("\n| run | mode | memory | shots | all classes after the last phase | A_avg | A_last | "
          "BWT |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in names:
        path = workspace / name / "results.json"
        if not path.is_file():
            print(f"| {name} | (not run) | | | | | | |")
            continue
        result = json.loads(path.read_text())
        config = result["config"]
        memory = config.get("memory_size") if config.get("mode") == "replay" else "-"
        print(f"| {name} | {config.get('mode')} | {memory} | {config.get('shots') or 'all'} | "
              f"{result['phase_accuracy'][-1]:.3f} | "
              f"{_figure(result['A_avg'])} | {_figure(result['A_last'])} | "
              f"{_figure(result['BWT'])} |")


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
