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


def test_a_bundle_with_an_expanded_state_learns_runs_and_forgets_without_the_c_update(tmp_path):
    import shutil

    import soundfile as sf
    from export_helpers import CLASSES, SAMPLE_RATE, exported_bundle, tones

    from firmware_export.device.layout import ANALYTIC_STATE, MODEL_ANALYTIC, RLS_SOURCE
    from firmware_export.device.learn import (
        embed_clips,
        fit_bundle_state,
        forget_bundle,
        learn_bundle,
    )
    from firmware_export.device.manifest import verify_bundle
    from firmware_export.device.runtime import cpu_session

    bundle = tmp_path / "phase_0"
    shutil.copytree(exported_bundle().folder, bundle)
    waves, targets = tones(24, seed=1)
    paths = []
    for k, wave in enumerate(waves):
        paths.append(tmp_path / f"clip_{k}.wav")
        sf.write(paths[-1], wave, SAMPLE_RATE, subtype="FLOAT")
    fit, new = paths[:20], paths[20:]
    manifest = fit_bundle_state(bundle, fit, [CLASSES[t] for t in targets[:20]], gamma=0.1,
                                expansion=WIDTH, seed=7)
    assert manifest["analytic"]["expansion"] == WIDTH and RLS_SOURCE not in manifest["files"]
    assert manifest["analytic"]["c_update"] is None
    learnt, learnt_manifest = learn_bundle(bundle, "extra", new)
    state = BundleState.from_bytes((learnt / ANALYTIC_STATE).read_bytes(), "learnt")
    assert state.head.labels[-1] == "extra" and state.head.expansion_seed == 7
    assert RLS_SOURCE not in learnt_manifest["files"]
    # The learnt device model computes the expanded head (float32 against float64).
    logits = cpu_session(str(learnt / MODEL_ANALYTIC)).run(None, {"waveform": waves})[0]
    embeddings = embed_clips(learnt, verify_bundle(learnt), paths)
    np.testing.assert_allclose(logits, state.head.logits(embeddings), atol=1e-3)
    forgot, _ = forget_bundle(learnt, label="extra")
    restored = BundleState.from_bytes((forgot / ANALYTIC_STATE).read_bytes(), "forgot")
    original = BundleState.from_bytes((bundle / ANALYTIC_STATE).read_bytes(), "fit")
    np.testing.assert_allclose(restored.head.w, original.head.w, atol=1e-9)
    np.testing.assert_allclose(restored.head.r, original.head.r, atol=1e-9)


def test_an_analytic_run_with_an_expansion_learns_the_ridge_solution_and_reports_its_accuracy(
        six_class_manifest, tmp_path):
    from run_helpers import small_run_options

    from edgecl.config import RunConfig
    from edgecl.trainer import ContinualRun
    from edgecl.training.analytic import clip_embeddings
    from firmware_export.device.analytic import ridge_solution

    run = ContinualRun(RunConfig(**small_run_options(
        six_class_manifest, mode="analytic", analytic_expansion=WIDTH, analytic_gamma=0.5),
        workspace=str(tmp_path)))
    results = run.run()
    (step,) = [s for s in run.steps if hasattr(s, "bundle_state")]
    head = step.head
    assert (head.expansion, head.expansion_seed) == (WIDTH, run.config.seed)
    assert results["phases"][-1]["analytic"]["expansion"] == WIDTH
    # Balanced weights as the run gave them; the recursive head is their batch solution.
    learnt = step.learnt
    columns = {int(label): j for j, label in enumerate(head.labels)}
    expected = ridge_solution(head.features(learnt.embeddings),
                              [columns[t] for t in learnt.targets], np.asarray(learnt.weights),
                              0.5, len(columns))
    np.testing.assert_allclose(head.w, expected, atol=1e-8)
    # The phase's accuracy is the expanded head's own on the test clips.
    tests = [lc for task in run.plan.tasks for lc in task.test]
    data = run.items.clip_data(tests)
    predicted = np.asarray([int(head.labels[k]) for k in
                            np.argmax(head.logits(clip_embeddings(run.model, data, 8)), axis=1)])
    assert results["phase_accuracy"][-1] == pytest.approx(
        float(np.mean(predicted == data.targets.numpy())))
    with pytest.raises(EdgeclError, match="--analytic-expansion: only used with --mode analytic"):
        RunConfig(analytic_expansion=8)
