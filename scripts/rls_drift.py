"""Float32 drift of the generated C update (rls.c) against the float64 numpy head over a long
stream, and the time of one update in each. Prints figures; asserts nothing.

    python scripts/rls_drift.py [--updates 10000] [--forgets 2000] [--dim 100] [--classes 10]

The stream: a head fit to 2 classes of synthetic clustered embeddings (200 clips each), then
`updates` clips learnt one at a time over `classes` classes (balanced weights), then the last
`forgets` of them forgotten in reverse order. Drift: max |W_c - W_numpy| / max |W_numpy|, and the
top-1 agreement of the two heads on 2,000 probe embeddings, after each stage.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import rls_c_harness as harness  # noqa: E402

from firmware_export.device.analytic import fit_head, packed_upper  # noqa: E402
from firmware_export.tflm.c_rls import render_rls  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=10_000)
    parser.add_argument("--forgets", type=int, default=2_000)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--classes", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    centres = 1.5 * rng.standard_normal((args.classes, args.dim))

    def clips(label: int, n: int) -> np.ndarray:
        return (centres[label] + rng.standard_normal((n, args.dim))).astype(np.float32)

    start = np.vstack([clips(0, 200), clips(1, 200)])
    head, _ = fit_head(start, ["0"] * 200 + ["1"] * 200, gamma=0.1)
    probes = np.vstack([clips(k, 2000 // args.classes) for k in range(args.classes)])
    with tempfile.TemporaryDirectory() as folder:
        binary = harness.build(Path(folder), *render_rls(head, args.classes))
        stream, learnt, numpy_seconds = [], [], 0.0
        for step in range(args.updates):
            label = step % args.classes if step < 4 * args.classes else int(rng.integers(
                args.classes))
            z = clips(label, 1)
            index = head.labels.index(str(label)) if str(label) in head.labels else len(
                head.labels)
            began = time.perf_counter()
            weight = float(head.learn(z, str(label))[0])
            numpy_seconds += time.perf_counter() - began
            stream.append(harness.record(harness.LEARN, index, weight, z[0]))
            learnt.append((z, str(label), weight, index))
        report(binary, stream, head, probes, args, f"after {args.updates} learns", numpy_seconds,
               args.updates)
        for z, label, weight, index in reversed(learnt[-args.forgets:]):
            head.forget(z, label, weight)
            stream.append(harness.record(harness.FORGET, index, weight, z[0]))
        report(binary, stream, head, probes, args, f"then {args.forgets} forgets", None, 0)


def report(binary, stream, head, probes, args, what, numpy_seconds, n_updates) -> None:
    began = time.perf_counter()
    out, classes, r, w = harness.run(binary, stream, args.dim, args.classes)
    r_64 = packed_upper(head.r)
    r_drift = np.abs(r - r_64).max() / np.abs(r_64).max()
    c_seconds = time.perf_counter() - began
    w_c = w[:, :classes].astype(np.float64)
    drift = np.abs(w_c - head.w).max() / np.abs(head.w).max()
    x = head.features(probes)
    agreement = np.mean(np.argmax(x @ w_c, axis=1) == np.argmax(x @ head.w, axis=1))
    line = (f"{what}: max|W_c - W_64| / max|W_64| = {drift:.2e}, the same for R {r_drift:.2e}, "
            f"top-1 agreement on "
            f"{len(probes)} probes {agreement:.4f}")
    if numpy_seconds is not None:
        d = args.dim + 1
        flops = 2 * d * d + d * d + 4 * d * args.classes
        line += (f"; per update: numpy float64 {1e6 * numpy_seconds / n_updates:.0f} us, C "
                 f"float32 {1e6 * c_seconds / len(stream):.1f} us (process start subtracted), "
                 f"about {flops / 1e3:.0f} k FLOPs")
    print(line)


if __name__ == "__main__":
    main()
