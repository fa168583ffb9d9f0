"""The analytic head's random expansion (firmware_export.device.analytic): a seeded ReLU projection
of the standardised embedding before the ridge head. The recursive update still equals the batch
ridge solution on the expanded features, forgetting still restores the state, the projection comes
back from the stored seed, and what cannot run it (the C update, folding) says so."""

from __future__ import annotations

import numpy as np
import pytest
from test_analytic import batch_reference, clustered

from edgecl.errors import EdgeclError
from firmware_export.device.analytic import AnalyticHead, fit_head, state_bytes
from firmware_export.device.analytic_state import BundleState
from firmware_export.tflm.c_rls import render_rls

WIDTH = 24


def expanded(z: np.ndarray, labels: list[str], **options) -> tuple[AnalyticHead, np.ndarray]:
    return fit_head(z, labels, gamma=options.pop("gamma", 0.1), expansion=WIDTH,
                    expansion_seed=options.pop("seed", 11), **options)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recursive_weights_equal_the_batch_solution_on_the_expanded_features(seed):
    z, labels = clustered([9, 7, 5], seed)
    rng = np.random.default_rng(seed + 1)
    weights = rng.uniform(0.2, 3.0, len(z))
    head = AnalyticHead.standardised_on(z[:5], gamma=0.5, expansion=WIDTH, expansion_seed=seed)
    for row in rng.permutation(len(z)):  # one clip at a time, classes interleaved
        head.learn(z[row], labels[row], weights[row])
    assert head.r.shape == (WIDTH + 1, WIDTH + 1) and head.w.shape == (WIDTH + 1, 3)
    features = head.features(z)
    assert features.shape == (len(z), WIDTH + 1) and np.all(features >= 0)
    np.testing.assert_allclose(head.w, batch_reference(head, z, labels, weights), atol=1e-8,
                               rtol=0)


def test_learn_then_forget_restores_the_expanded_state():
    z, labels = clustered([10, 10, 4], seed=4)
    head, _ = expanded(z[:20], labels[:20])
    before = (head.r.copy(), head.w.copy(), list(head.labels), list(head.clips))
    weights = head.learn(z[20:], "c2")
    assert head.labels == ["c0", "c1", "c2"]
    head.forget(z[20:], "c2", weights)
    np.testing.assert_allclose(head.r, before[0], atol=1e-9)
    np.testing.assert_allclose(head.w, before[1], atol=1e-9)
    assert (head.labels, head.clips) == (before[2], before[3])


def test_the_projection_is_regenerated_from_the_stored_seed_and_counted_in_the_bytes():
    z, labels = clustered([8, 8], seed=6)
    head, weights = expanded(z, labels, seed=123)
    state = BundleState(head=head, backbone_sha256="0" * 64, class_limit=4)
    for label in head.labels:
        rows = [i for i, name in enumerate(labels) if name == label]
        state.add([f"{i:064x}" for i in rows], label, weights[rows], z[rows])
    again = BundleState.from_bytes(state.to_bytes(), "analytic.json")
    assert (again.head.expansion, again.head.expansion_seed) == (WIDTH, 123)
    np.testing.assert_array_equal(again.head.projection(), head.projection())
    np.testing.assert_allclose(again.head.logits(z), head.logits(z), atol=1e-12)
    other, _ = expanded(z, labels, seed=124)
    assert not np.allclose(other.projection(), head.projection())
    d = WIDTH + 1
    assert head.state_bytes() == 4 * (d * (d + 1) // 2 + d * 2 + 2 * z.shape[1]
                                      + z.shape[1] * WIDTH) == state_bytes(z.shape[1], 2, WIDTH)
    assert again.summary()["expansion"] == WIDTH


def test_the_c_update_and_folding_refuse_an_expanded_head():
    z, labels = clustered([6, 6], seed=8)
    head, _ = expanded(z, labels)
    with pytest.raises(EdgeclError, match="rls.c: the C update does not support"):
        render_rls(head, 4)
    with pytest.raises(EdgeclError, match="cannot be folded"):
        head.folded()
    with pytest.raises(EdgeclError, match="expansion width must be an integer"):
        AnalyticHead.standardised_on(z, gamma=0.1, expansion=-1)
