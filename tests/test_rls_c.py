"""The generated C update (firmware_export.tflm.c_rls) against the numpy head, compiled with the
system C compiler (skipped without one)."""

from __future__ import annotations

import numpy as np
import rls_c_harness as harness

from firmware_export.device.analytic import fit_head, packed_upper
from firmware_export.tflm.c_rls import render_rls

DIM, LIMIT = 8, 5


def starting_head(seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = 2 * rng.standard_normal((2, DIM))
    z = np.vstack([c + rng.standard_normal((30, DIM)) for c in centres])
    head, _ = fit_head(z, ["a"] * 30 + ["b"] * 30, gamma=0.1)
    return head, rng, centres


def test_the_c_update_follows_the_numpy_head_over_a_stream(tmp_path):
    head, rng, centres = starting_head()
    binary = harness.build(tmp_path, *render_rls(head, LIMIT))
    new_centre = 2 * rng.standard_normal(DIM)
    records, probes = [], []
    learnt = []
    for step in range(60):  # learn a new class and more of the old ones, forget some again
        if step % 7 == 6 and learnt:
            z, label, weight = learnt.pop(0)
            records.append(harness.record(harness.FORGET, head.labels.index(label), weight, z))
            head.forget(z, label, weight)
        else:
            label = "new" if step % 3 == 0 else "a" if step % 3 == 1 else "b"
            centre = new_centre if label == "new" else centres[head.labels.index(label)]
            z = (centre + rng.standard_normal(DIM)).astype(np.float32)
            index = head.labels.index(label) if label in head.labels else len(head.labels)
            weight = float(head.learn(z, label)[0])
            records.append(harness.record(harness.LEARN, index, weight, z))
            learnt.append((z, label, weight))
        probe = rng.standard_normal(DIM).astype(np.float32)
        records.append(harness.record(harness.PREDICT, 0, 1.0, probe))
        probes.append(head.logits(probe)[0])
    out, classes, r, w = harness.run(binary, records, DIM, LIMIT)
    assert classes == len(head.labels) == 3
    logits = np.frombuffer(out, np.float32)
    sizes = np.cumsum([0] + [len(p) for p in probes])
    for k, expected in enumerate(probes):
        np.testing.assert_allclose(logits[sizes[k]:sizes[k + 1]], expected, atol=2e-4)
    np.testing.assert_allclose(w[:, :classes], head.w, atol=2e-4)
    np.testing.assert_allclose(r, packed_upper(head.r), atol=1e-5)


def test_forgetting_a_class_in_c_removes_its_column(tmp_path):
    head, rng, _ = starting_head(1)
    binary = harness.build(tmp_path, *render_rls(head, LIMIT))
    clips = rng.standard_normal((3, DIM)).astype(np.float32) + 4
    records = [harness.record(harness.LEARN, 2, 5.0, z) for z in clips]
    records += [harness.record(harness.FORGET, 2, 5.0, z) for z in clips]
    records.append(harness.record(harness.REMOVE, 2, 0.0, clips[0]))
    _, classes, r, w = harness.run(binary, records, DIM, LIMIT)
    assert classes == 2
    np.testing.assert_allclose(w[:, :2], head.w, atol=1e-5)
    np.testing.assert_allclose(r, packed_upper(head.r), atol=1e-6)


def test_the_c_update_refuses_a_label_past_the_limit(tmp_path):
    head, _, _ = starting_head(2)
    binary = harness.build(tmp_path, *render_rls(head, 2))  # full already: 2 of 2 classes
    import subprocess

    result = subprocess.run([str(binary)], input=harness.record(harness.LEARN, 2, 1.0,
                                                                np.zeros(DIM)),
                            capture_output=True, timeout=60)
    assert result.returncode == 4 and b"code -1" in result.stderr
