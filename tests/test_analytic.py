"""The analytic head (firmware_export.device.analytic): the recursive update equals the batch ridge
solution whatever the order, forgetting is the exact downdate, the class weighting."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecl.errors import EdgeclError
from firmware_export.device.analytic import (
    BOOST,
    AnalyticHead,
    choose_gamma,
    fit_head,
    packed_upper,
    ridge_solution,
    unpack_upper,
)

DIM = 6


def clustered(n_per_class: list[int], seed: int) -> tuple[np.ndarray, list[str]]:
    """Embeddings around one centre per class, labels "c0", "c1", ..."""
    rng = np.random.default_rng(seed)
    centres = 3 * rng.standard_normal((len(n_per_class), DIM))
    z = np.vstack([centre + rng.standard_normal((n, DIM))
                   for centre, n in zip(centres, n_per_class, strict=True)])
    labels = [f"c{k}" for k, n in enumerate(n_per_class) for _ in range(n)]
    return z, labels


def batch_reference(head: AnalyticHead, z: np.ndarray, labels: list[str],
                    weights: np.ndarray) -> np.ndarray:
    targets = [head.labels.index(label) for label in labels]
    return ridge_solution(head.features(z), targets, weights, head.gamma, len(head.labels))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), chunks=st.lists(st.integers(1, 7), min_size=1, max_size=8),
       gamma=st.sampled_from([1e-2, 0.1, 1.0, 10.0]))
def test_recursive_weights_equal_the_batch_solution_in_any_order(seed, chunks, gamma):
    z, labels = clustered([9, 7, 5], seed)
    rng = np.random.default_rng(seed + 1)
    order = rng.permutation(len(z))
    weights = rng.uniform(0.2, 3.0, len(z))
    head = AnalyticHead.standardised_on(z[:4], gamma=gamma)
    start = 0
    while start < len(order):  # chunks of one class at a time, sizes drawn by hypothesis
        size = chunks[start % len(chunks)]
        label = labels[order[start]]
        rows = [order[start]]
        for row in order[start + 1:start + size]:  # the chunk's first run of one class
            if labels[row] != label:
                break
            rows.append(row)
        head.learn(z[rows], label, weights[rows])
        start += len(rows)
    np.testing.assert_allclose(head.w, batch_reference(head, z, labels, weights), atol=1e-8,
                               rtol=0)
    assert head.clips == [labels.count(name) for name in head.labels]


def test_one_clip_at_a_time_equals_one_batch():
    z, labels = clustered([8, 8], seed=3)
    by_batch, _ = fit_head(z, labels, gamma=0.1, weighting="off")
    by_clip = AnalyticHead.empty(by_batch.mean, by_batch.std, gamma=0.1, weighting="off")
    for row in np.random.default_rng(0).permutation(len(z)):
        by_clip.learn(z[row], labels[row], 1.0)
    order = [by_clip.labels.index(name) for name in by_batch.labels]
    np.testing.assert_allclose(by_clip.w[:, order], by_batch.w, atol=1e-10)
    np.testing.assert_allclose(by_clip.r, by_batch.r, atol=1e-10)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), n_new=st.integers(1, 6))
def test_learn_then_forget_returns_the_original_state(seed, n_new):
    z, labels = clustered([10, 10, n_new], seed)
    old = [i for i, label in enumerate(labels) if label != "c2"]
    head, _ = fit_head(z[old], [labels[i] for i in old], gamma=0.1)
    before = (head.r.copy(), head.w.copy(), list(head.labels), list(head.clips))
    new = z[-n_new:]
    weights = head.learn(new[:1], "c0")  # more of a known class ...
    head.forget(new[:1], "c0", weights)
    weights = head.learn(new, "c2")  # ... and a new class
    assert head.labels == ["c0", "c1", "c2"]
    head.forget(new, "c2", weights)
    np.testing.assert_allclose(head.r, before[0], atol=1e-9)
    np.testing.assert_allclose(head.w, before[1], atol=1e-9)
    assert (head.labels, head.clips) == (before[2], before[3])


def test_forgetting_a_whole_class_equals_never_learning_it():
    z, labels = clustered([12, 9, 6], seed=5)
    head, weights = fit_head(z, labels, gamma=0.1, weighting="off")
    rows = [i for i, label in enumerate(labels) if label == "c1"]
    head.forget(z[rows], "c1", weights[rows])
    assert head.labels == ["c0", "c2"]
    kept = [i for i, label in enumerate(labels) if label != "c1"]
    np.testing.assert_allclose(head.w, batch_reference(head, z[kept], [labels[i] for i in kept],
                                                       weights[kept]), atol=1e-8)
    with pytest.raises(EdgeclError, match="no class 'c1'"):
        head.forget(z[rows[:1]], "c1", 1.0)


def test_balanced_weighting_gives_a_few_shot_class_the_mass_of_an_old_one():
    z, labels = clustered([40, 40, 5], seed=7)
    old = slice(0, 80)
    new = z[80:]
    for weighting, expected in (("off", 1.0), ("boosted", 8 ** BOOST), ("balanced", 40 / 5)):
        head, _ = fit_head(z[old], labels[old], gamma=0.1, weighting=weighting)
        weights = head.learn(new, "c2")
        np.testing.assert_allclose(weights, expected)
        assert head.mass == pytest.approx([40.0, 40.0, 5 * expected])
    # More clips of a known class: weighted as if the class had all of them.
    assert head.balanced_weight("c2", 5) == pytest.approx(40 / 10)


def test_boosted_weighting_gives_a_few_shot_class_more_than_the_mean_mass():
    """Boosted: a class below the mean count weighs more than balanced gives it, one at the mean
    count the same, one above it less; the fit's classes are weighted by the same rule, and the
    head is still the batch ridge solution, and forgetting still exact."""
    z, labels = clustered([40, 10, 5], seed=8)
    head, weights = fit_head(z[:50], labels[:50], gamma=0.1, weighting="boosted")
    np.testing.assert_allclose(weights, [(25 / 40) ** BOOST] * 40 + [(25 / 10) ** BOOST] * 10)
    assert head.balanced_weight("c2", 5) == pytest.approx((25 / 5) ** BOOST)
    assert head.balanced_weight("c2", 5) > 25 / 5
    before = (head.r.copy(), head.w.copy())
    added = head.learn(z[50:], "c2")
    np.testing.assert_allclose(head.w, batch_reference(head, z, labels,
                                                       np.concatenate([weights, added])),
                               atol=1e-8)
    head.forget(z[50:], "c2", added)
    np.testing.assert_allclose(head.r, before[0], atol=1e-10)
    np.testing.assert_allclose(head.w, before[1], atol=1e-10)


def test_the_few_shot_class_is_predicted_only_when_weighted():
    """Old classes heavy and close to the new one: unweighted, the new class loses everywhere."""
    rng = np.random.default_rng(11)
    old = np.vstack([rng.standard_normal((300, DIM)) + offset
                     for offset in (0.0, 1.5)])
    old_labels = ["a"] * 300 + ["b"] * 300
    new_centre = np.full(DIM, 0.75)
    new_centre[0] = 3.0
    new = new_centre + 0.5 * rng.standard_normal((3, DIM))
    test = new_centre + 0.5 * rng.standard_normal((50, DIM))
    hits = {}
    for weighting in ("off", "balanced"):
        head, _ = fit_head(old, old_labels, gamma=1.0, weighting=weighting)
        head.learn(new, "new")
        hits[weighting] = np.mean(np.argmax(head.logits(test), axis=1) == 2)
    assert hits["balanced"] > 0.9 > 0.5 > hits["off"]


def test_folded_head_equals_the_standardised_one():
    z, labels = clustered([5, 5], seed=2)
    head, _ = fit_head(z, labels, gamma=0.5)
    a, b = head.folded()
    np.testing.assert_allclose(z @ a + b, head.logits(z), atol=1e-10)


def test_packed_upper_round_trip_and_state_bytes():
    m = np.random.default_rng(0).standard_normal((5, 5))
    sym = m + m.T
    assert packed_upper(sym).size == 15
    np.testing.assert_array_equal(unpack_upper(packed_upper(sym), 5), sym)
    with pytest.raises(EdgeclError, match="expected 15"):
        unpack_upper(np.zeros(14), 5)
    head = AnalyticHead.empty(np.zeros(100), np.ones(100), gamma=0.1)
    head.learn(np.zeros((1, 100)), "x")
    assert head.state_bytes() == 4 * (101 * 102 // 2 + 101 + 200)


def test_bad_options_are_refused():
    with pytest.raises(EdgeclError, match="gamma"):
        AnalyticHead.empty(np.zeros(3), np.ones(3), gamma=0.0)
    with pytest.raises(EdgeclError, match="weighting"):
        AnalyticHead.empty(np.zeros(3), np.ones(3), gamma=1.0, weighting="inverse")
    head = AnalyticHead.empty(np.zeros(3), np.ones(3), gamma=1.0)
    head.learn(np.ones((2, 3)), "x")
    with pytest.raises(EdgeclError, match="holds 2 clips, cannot forget 3"):
        head.forget(np.ones((3, 3)), "x", 1.0)


def test_choose_gamma_breaks_ties_by_the_held_out_error():
    """Separable classes: every gamma classifies the held-out clips perfectly, but a huge one
    shrinks the scores towards the bias, which the squared error sees."""
    z, labels = clustered([30, 30, 30], seed=4)
    z += 50 * np.eye(3)[[int(label[1]) for label in labels]].repeat(2, axis=1)
    assert choose_gamma(z, labels, candidates=(1e6, 1.0, 1e-3)) != 1e6
