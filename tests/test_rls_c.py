"""The generated C update (firmware_export.tflm.c_rls) against the numpy head, compiled with the
system C compiler (skipped without one)."""

from __future__ import annotations

import numpy as np
import rls_c_harness as harness

from firmware_export.device.analytic import fit_head, packed_upper
from firmware_export.tflm.c_rls import render_rls, render_state

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


def test_a_state_blob_replaces_the_compiled_state_and_stores_back_byte_for_byte(tmp_path):
    head, rng, _ = starting_head(3)
    binary = harness.build(tmp_path, *render_rls(head, LIMIT))  # compiled with the fit state
    z = (rng.standard_normal((6, DIM)) + 5).astype(np.float32)
    head.learn(z, "new")  # a later version's head: one class more
    blob = tmp_path / "rls_state.bin"
    blob.write_bytes(render_state(head, LIMIT, version=7))
    probes = rng.standard_normal((4, DIM)).astype(np.float32)
    out, classes, r, w = harness.run(
        binary, [harness.record(harness.PREDICT, 0, 1.0, p) for p in probes], DIM, LIMIT,
        load=blob, store=tmp_path / "stored.bin")
    assert classes == 3
    np.testing.assert_allclose(np.frombuffer(out, np.float32).reshape(4, 3), head.logits(probes),
                               atol=1e-4)
    np.testing.assert_allclose(w[:, :3], head.w, atol=1e-6)
    assert (tmp_path / "stored.bin").read_bytes() == blob.read_bytes()


def test_the_c_update_refuses_a_blob_of_another_shape(tmp_path):
    import subprocess

    head, _, _ = starting_head(4)
    binary = harness.build(tmp_path, *render_rls(head, LIMIT))
    for name, data in (("limit", render_state(head, LIMIT + 1, version=1)),
                       ("short", render_state(head, LIMIT, version=1)[:-4]),
                       ("magic", b"XXXX" + render_state(head, LIMIT, version=1)[4:])):
        (tmp_path / name).write_bytes(data)
        result = subprocess.run([str(binary), str(tmp_path / name)], input=b"",
                                capture_output=True, timeout=60)
        assert result.returncode == 6 and b"load: code -3" in result.stderr, name
