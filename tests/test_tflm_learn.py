"""A learnt head on the microcontroller build: the TFLM bundle's int8 embedding model (its
checks, its agreement with the float embedding), `device learn` writing the head's state for the
C side (rls_state.bin, hashed, in the new version, atomically), the C head loading it and
predicting what the ONNX model predicts, and `edgecl infer --target tflm` on a learnt version.
Skipped without the tflm extra."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import rls_c_harness as harness
import soundfile as sf

for _package in ("litert_torch", "ai_edge_quantizer", "ai_edge_litert", "tflite_micro"):
    pytest.importorskip(_package, reason="the tflm extra is not installed")

import torch  # noqa: E402
from export_helpers import (  # noqa: E402
    CLASSES,
    exported_tflm_bundle,
    one_thread,  # noqa: F401 (module-wide fixture)
    tones,
    trained_model,
)
from test_device_learn import TEST_SPREAD, cli, new_tones, write_clips  # noqa: E402

from firmware_export.device.analytic_state import BundleState, read_state  # noqa: E402
from firmware_export.device.layout import (  # noqa: E402
    ANALYTIC_STATE,
    MODEL_EMBEDDING,
    MODEL_TFLM_EMBEDDING,
    RLS_STATE,
)
from firmware_export.device.learn import fit_bundle_state, learn_bundle  # noqa: E402
from firmware_export.device.logmel import logmel  # noqa: E402
from firmware_export.device.manifest import verify_bundle  # noqa: E402
from firmware_export.device.runtime import cpu_session, load_model  # noqa: E402
from firmware_export.device.tflm_runtime import (  # noqa: E402
    ARENA_STEP,
    MicroModel,
    _allocates,
    load_tflm_bundle,
    quiet_fds,
)
from firmware_export.device.windows import pool, split_windows  # noqa: E402
from firmware_export.tflm import flatbuffer  # noqa: E402
from firmware_export.tflm.c_rls import render_state  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")
# The int8 embedding against the float one on the same log-mel, relative L2 error per window:
# measured 0.04 median, 0.19 at most on the fixture's quietest windows.
MEDIAN_RELATIVE_ERROR, MAX_RELATIVE_ERROR = 0.1, 0.35


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """The TFLM bundle, copied, with its analytic state fit to 48 tone clips; plus clips."""
    root = tmp_path_factory.mktemp("tflm_learn")
    bundle = root / "phase_0"
    shutil.copytree(exported_tflm_bundle().folder, bundle)
    waves, targets = tones(48, seed=1)
    fit_bundle_state(bundle, write_clips(root / "fit", waves, "fit"),
                     [CLASSES[t] for t in targets], gamma=0.1, class_limit=6)
    holdout_waves, holdout_targets = tones(8, seed=3)
    return {"root": root, "bundle": bundle,
            "new": write_clips(root / "new", new_tones(5, seed=4), "new"),
            "new_test": write_clips(root / "new_test", new_tones(8, seed=5, spread=TEST_SPREAD),
                                    "test"),
            "holdout": write_clips(root / "holdout", holdout_waves, "holdout"),
            "holdout_labels": [CLASSES[t] for t in holdout_targets]}


def test_the_embedding_model_is_all_int8_and_counted_in_the_bundle():
    bundle = exported_tflm_bundle()
    section = bundle.manifest["tflm"]["embedding"]
    model = (bundle.folder / MODEL_TFLM_EMBEDDING).read_bytes()
    assert section["status"] == "shipped" and section["reason"] is None
    assert section["bytes"] == len(model) == bundle.manifest["files"][MODEL_TFLM_EMBEDDING]["bytes"]
    assert flatbuffer.float_operators(model) == [] and "FULLY_CONNECTED" not in section["ops"]
    io = flatbuffer.io_tensors(model)
    assert io["outputs"][0]["shape"] == [1, bundle.manifest["embedding"]["dim"]]
    assert [t["type"] for t in io["inputs"] + io["outputs"]] == ["INT8", "INT8"]
    with quiet_fds():
        assert _allocates(model, section["arena_bytes"])
        assert not _allocates(model, section["arena_bytes"] - ARENA_STEP)
    # The trained head in float on it keeps every top-1 of the fp32 model (clear margins).
    assert section["parity_vs_fp32"]["batch_1"]["top1_agreement"] == 1.0


def test_the_int8_embedding_agrees_with_the_float_embedding():
    bundle = exported_tflm_bundle()
    loaded = load_tflm_bundle(bundle.folder)
    section = bundle.manifest["tflm"]["embedding"]
    micro = MicroModel((bundle.folder / MODEL_TFLM_EMBEDDING).read_bytes(),
                       section["arena_bytes"])
    window = loaded.plan.clip_samples
    features = [logmel(loaded.plan, clip[start:start + window])
                for clip in bundle.holdout[:16] for start in (0, window)]
    int8 = np.stack([micro.run_logmel(f) for f in features])
    with torch.no_grad():
        exact = trained_model().embed(torch.from_numpy(np.stack(features)[:, None])).numpy()
    relative = np.linalg.norm(int8 - exact, axis=1) / np.linalg.norm(exact, axis=1)
    assert np.median(relative) <= MEDIAN_RELATIVE_ERROR and relative.max() <= MAX_RELATIVE_ERROR
    recorded = section["embedding_vs_float"]
    assert recorded["relative_l2_median"] <= MEDIAN_RELATIVE_ERROR
    assert recorded["relative_l2_max"] <= MAX_RELATIVE_ERROR


def test_learn_writes_the_head_for_the_c_side_in_the_new_version(fitted, tmp_path):
    bundle = tmp_path / "phase_0"
    shutil.copytree(fitted["bundle"], bundle)
    fit_manifest = verify_bundle(bundle)
    assert RLS_STATE in fit_manifest["files"]  # the fit state as a blob too
    result = cli("device", "learn", bundle, *fitted["new"], "--label", "higher")
    assert result.exit_code == 0, result.output
    assert "TFLM: the embedding model and the head in C, state in rls_state.bin" in result.output
    version = tmp_path / "phase_0.v1"
    manifest = verify_bundle(version)  # every file hashed, the blob too
    state = BundleState.from_bytes((version / ANALYTIC_STATE).read_bytes(), "v1")
    assert (version / RLS_STATE).read_bytes() == render_state(state.head, 6, version=1)
    assert {MODEL_TFLM_EMBEDDING, "model_embedding_tflm.h", "logmel.c", "logmel.h"} <= set(
        manifest["files"])
    section = manifest["tflm"]
    assert section["file"] == MODEL_TFLM_EMBEDDING and "rls.c" in section["learnt_head"]["runs"]
    assert section["learnt_head"]["flash_bytes"] == (
        manifest["files"][MODEL_TFLM_EMBEDDING]["bytes"] + manifest["files"][RLS_STATE]["bytes"])
    assert "model.tflm.tflite" not in manifest["files"]  # the trained head's logits
    result = cli("infer", "--target", "tflm", version, *fitted["new_test"], *fitted["holdout"],
                 "--top-k", "1", "--json")
    assert result.exit_code == 0, result.output
    labels = [r["predictions"][0]["label"] for r in json.loads(result.output)["results"]]
    # The new class's clips keep clear margins (0.13 or more). The old classes' clips are judged
    # by what the device computes, the learnt head on the int8 embedding: the head is fit on the
    # float embedding, and how far the int8 one moves a clip follows the fixture's weights,
    # which follow the CPU's float maths (on one machine 3 of 8 flipped to the new class).
    assert labels[:8] == ["higher"] * 8
    assert labels[8:] == _head_on_tflm_embedding(version, fitted["holdout"])
    # Forgetting the class writes the fit state's blob again (its version number aside).
    result = cli("device", "forget", version, "--label", "higher")
    assert result.exit_code == 0, result.output
    fit_blob = (bundle / RLS_STATE).read_bytes()
    forgot = (tmp_path / "phase_0.v2" / RLS_STATE).read_bytes()
    assert forgot[:20] == fit_blob[:20] and len(forgot) == len(fit_blob)
    np.testing.assert_allclose(np.frombuffer(forgot[24:], "<f4"), np.frombuffer(fit_blob[24:], "<f4"),
                               rtol=1e-5, atol=1e-6)


def test_the_c_head_loading_the_new_state_predicts_what_onnx_predicts(fitted, tmp_path):
    bundle = tmp_path / "phase_0"
    shutil.copytree(fitted["bundle"], bundle)
    version, _ = learn_bundle(bundle, "higher", fitted["new"])
    waves = np.stack([sf.read(p, dtype="float32")[0] for p in fitted["new_test"]])
    embeddings = cpu_session(str(version / MODEL_EMBEDDING)).run(None, {"waveform": waves})[0]
    onnx_logits = load_model(version).logits(waves)
    assert list(onnx_logits.argmax(1)) == [4] * 8
    # The firmware built before learning (the fit version's rls.c) loads the new blob.
    binary = harness.build(tmp_path, (bundle / "rls.h").read_bytes(),
                           (bundle / "rls.c").read_bytes())
    records = [harness.record(harness.PREDICT, 0, 1.0, z) for z in embeddings]
    out, classes, _, _ = harness.run(binary, records, embeddings.shape[1], 6,
                                     load=version / RLS_STATE)
    assert classes == 5
    np.testing.assert_allclose(np.frombuffer(out, np.float32).reshape(-1, 5), onnx_logits,
                               atol=1e-4)
    # Fed with the TFLM embedding (dequantized, pooled over the windows) it predicts the same.
    loaded = load_tflm_bundle(version)
    window = loaded.plan.clip_samples
    tflm = np.stack([np.mean([loaded.model.model.run_logmel(logmel(loaded.plan,
                                                                   w[s:s + window]))
                              for s in (0, window)], axis=0) for w in waves])
    out, _, _, _ = harness.run(binary, [harness.record(harness.PREDICT, 0, 1.0, z)
                                        for z in tflm], tflm.shape[1], 6,
                               load=version / RLS_STATE)
    assert list(np.frombuffer(out, np.float32).reshape(-1, 5).argmax(1)) == [4] * 8


def test_a_failed_learn_on_a_tflm_bundle_leaves_the_previous_version(fitted, tmp_path,
                                                                     monkeypatch):
    bundle = tmp_path / "phase_0"
    shutil.copytree(fitted["bundle"], bundle)
    before = {p.name: p.read_bytes() for p in bundle.iterdir()}
    import firmware_export.bundle_folder as folder_module

    def killed(staging, out_dir):
        raise KeyboardInterrupt  # as if the process died before the new version was renamed in

    monkeypatch.setattr(folder_module, "_swap_in", killed)
    with pytest.raises(KeyboardInterrupt):
        learn_bundle(bundle, "higher", fitted["new"])
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["phase_0"]
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before
    verify_bundle(bundle)
    result = cli("infer", "--target", "tflm", bundle, *fitted["holdout"][:4], "--top-k", "1",
                 "--json")
    assert result.exit_code == 0, result.output
    assert [r["predictions"][0]["label"] for r in json.loads(result.output)["results"]] == (
        fitted["holdout_labels"][:4])


def test_an_embedding_model_that_misses_is_withheld_and_learnt_versions_skip_tflm(tmp_path,
                                                                                  monkeypatch):
    from test_tflm_build import _tflm_export

    import firmware_export.tflm.build as build_module

    bundle = exported_tflm_bundle()  # built before the limits are forced
    checked = build_module.screened_candidate

    def embedding_over_limits(*args, build="TFLM build", **kwargs):
        """The embedding model's checks with its limits forced over (the logits model's not)."""
        if build != "TFLM embedding build":
            return checked(*args, build=build, **kwargs)
        with pytest.MonkeyPatch.context() as forced:
            forced.setattr(build_module, "limit_failures", lambda *_: ["arena forced over"])
            return checked(*args, build=build, **kwargs)

    monkeypatch.setattr(build_module, "screened_candidate", embedding_over_limits)
    manifest = _tflm_export(bundle, tmp_path / "phase_0", monkeypatch)
    monkeypatch.undo()
    section = manifest["tflm"]["embedding"]
    assert manifest["tflm"]["status"] == "shipped" and "model.tflm.tflite" in manifest["files"]
    assert (section["status"], section["reason"]) == ("withheld", "arena forced over")
    assert MODEL_TFLM_EMBEDDING not in manifest["files"]
    kept = tmp_path / "phase_0" / "withheld" / "tflm_embedding"
    assert json.loads((kept / "withheld.json").read_text())["artifact"] == "tflm_embedding"
    assert (kept / MODEL_TFLM_EMBEDDING).is_file()
    waves, targets = tones(24, seed=1)
    fit_bundle_state(tmp_path / "phase_0", write_clips(tmp_path / "fit", waves, "fit"),
                     [CLASSES[t] for t in targets], gamma=0.1, class_limit=6)
    version, learnt = learn_bundle(tmp_path / "phase_0", "higher",
                                   write_clips(tmp_path / "new", new_tones(3, seed=4), "new"))
    assert "tflm" not in learnt and RLS_STATE not in learnt["files"]
    assert "rls.c" in learnt["files"]


def _head_on_tflm_embedding(version, clips) -> list[str]:
    """Each clip's top-1 by the version's learnt head on the TFLM embedding model's dequantized
    output, window by window, pooled: computed here, apart from `infer`."""
    manifest = verify_bundle(version)
    section = manifest["tflm"]
    micro = MicroModel((version / section["file"]).read_bytes(), section["arena_bytes"])
    plan = load_tflm_bundle(version).plan
    head = read_state(version, manifest).head
    labels = []
    for clip in clips:
        waveform, _ = sf.read(clip, dtype="float32")
        embeddings = np.stack([micro.run_logmel(logmel(plan, window))
                               for window in split_windows(waveform, plan.clip_samples)])
        labels.append(head.labels[int(np.argmax(pool(head.logits(embeddings))))])
    return labels
