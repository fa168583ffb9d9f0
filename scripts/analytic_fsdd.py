"""The device learns new classes from a few clips: accuracy on every class after `device learn`.

    python scripts/analytic_fsdd.py BUNDLE MANIFEST.csv --new 8,9 [--shots 5,20] [--draws 5]

BUNDLE is a phase bundle of a run on the other classes, fit already (`edgecl device fit`).
For each number of shots and each draw (the clips drawn by the draw's seed from the training rows
of the new classes), the new classes are learnt one after the other into new versions
(firmware_export.device.learn, what `edgecl device learn` runs), and the last version's device
model classifies every test row of MANIFEST (all classes). Prints accuracy on all classes and on
the new ones (mean and std over draws), the state's bytes and the wall time of one `learn` of
the largest shot count, end to end (clips read, embedded, the update, the version written).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from firmware_export.device.learn import learn_bundle
from firmware_export.device.manifest import verify_bundle
from firmware_export.device.runtime import load_model, read_clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--new", required=True, help="Comma-separated labels to learn.")
    parser.add_argument("--shots", default="5,20")
    parser.add_argument("--draws", type=int, default=5)
    args = parser.parse_args()
    rows = list(csv.DictReader(args.manifest.open()))
    base = args.manifest.parent
    new = args.new.split(",")
    test = [row for row in rows if row["split"] == "test"]
    model = load_model(args.bundle)
    waves = np.stack([read_clip(base / row["path"], model.sample_rate, model.clip_samples)
                      for row in test])
    truth = np.asarray([row["label"] for row in test])
    is_new = np.isin(truth, new)
    print(f"before learning ({args.bundle.name}, trained head): accuracy on its classes "
          f"{np.mean(_predict(model, waves[~is_new]) == truth[~is_new]):.3f}")
    for shots in [int(s) for s in args.shots.split(",")]:
        overall, on_new, seconds = [], [], []
        for draw in range(args.draws):
            rng = np.random.default_rng(draw)
            with tempfile.TemporaryDirectory() as folder:
                current = Path(folder) / args.bundle.name
                shutil.copytree(args.bundle, current)
                for label in new:
                    pool = [base / row["path"] for row in rows
                            if row["split"] == "train" and row["label"] == label]
                    clips = [pool[i] for i in rng.choice(len(pool), shots, replace=False)]
                    began = time.perf_counter()
                    current, manifest = learn_bundle(current, label, clips)
                    seconds.append(time.perf_counter() - began)
                predicted = _predict(load_model(current), waves)
            overall.append(np.mean(predicted == truth))
            on_new.append(np.mean(predicted[is_new] == truth[is_new]))
        state = manifest["analytic"]
        print(f"{shots} clips per new class: accuracy on all {len(set(truth))} classes "
              f"{np.mean(overall):.3f} +- {np.std(overall):.3f}, new classes "
              f"{np.mean(on_new):.3f} +- {np.std(on_new):.3f} ({args.draws} draws); state "
              f"{state['state_bytes_fp32']} bytes fp32 (+ {state['stored_embeddings_bytes']} "
              f"bytes of stored embeddings); one learn of {shots} clips "
              f"{np.median(seconds):.2f} s end to end (median)")
    verify_bundle(args.bundle)  # the bundle read is untouched


def _predict(model, waves: np.ndarray) -> np.ndarray:
    logits = np.vstack([model.logits(waves[i:i + 32]) for i in range(0, len(waves), 32)])
    return np.asarray(model.labels)[np.argmax(logits, axis=1)]


if __name__ == "__main__":
    main()
