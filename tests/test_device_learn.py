"""A bundle that learns after deployment: `edgecl device fit / learn / forget` on the test bundle
(tests/export_helpers.py: four tones), the learnt version run by `edgecl infer`, its C head, and
every refusal."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import rls_c_harness as harness
import soundfile as sf
from click.testing import CliRunner
from export_helpers import CLASSES, CLIP_SAMPLES, SAMPLE_RATE, exported_bundle, tones

from edgecl.cli import main
from edgecl.errors import EdgeclError
from firmware_export.device.analytic_state import BundleState
from firmware_export.device.head_graph import trained_head
from firmware_export.device.layout import ANALYTIC_STATE, MANIFEST, MODEL_EMBEDDING
from firmware_export.device.learn import fit_bundle_state, forget_bundle, learn_bundle
from firmware_export.device.manifest import file_entries, verify_bundle
from firmware_export.device.runtime import cpu_session, load_model

pytestmark = pytest.mark.filterwarnings("ignore")
NEW_PITCH = 1800.0  # the tones of the test bundle are 300, 600, 900 and 1200 Hz
# Test clips come from their class's centre (1% pitch spread): at 3% some fall near the learnt
# head's edges (a 1728 Hz clip of the new class tied within 0.004 logits, a 660 Hz "mid" clip
# within 0.03 after learning), where the side a clip falls on follows the CPU's float maths; at
# 1% every test clip's margin is 0.6 logits or more.
TEST_SPREAD = 0.01
SIXTH_PITCH = 2700.0


def write_clips(folder: Path, waves: np.ndarray, prefix: str, rate: int = SAMPLE_RATE) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, wave in enumerate(waves):
        path = folder / f"{prefix}_{k}.wav"
        sf.write(path, wave, rate, subtype="FLOAT")
        paths.append(path)
    return paths


def new_tones(n: int, seed: int, rate: int = SAMPLE_RATE, spread: float = 0.03,
              centre: float = NEW_PITCH) -> np.ndarray:
    """n clips of a new class: tones at `centre` Hz with a relative spread, levels -30 to -4 dB."""
    rng = np.random.default_rng(seed)
    time = np.arange(rate * CLIP_SAMPLES // SAMPLE_RATE) / rate
    pitch = centre * (1 + spread * rng.standard_normal((n, 1)))
    level = 10 ** rng.uniform(-1.5, -0.2, (n, 1))
    return (level * np.sin(2 * np.pi * pitch * time)
            + 0.01 * rng.standard_normal((n, len(time)))).astype(np.float32)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """The exported bundle, copied, with its analytic state fit to 48 tone clips; plus clips."""
    root = tmp_path_factory.mktemp("learn")
    bundle = root / "phase_0"
    shutil.copytree(exported_bundle().folder, bundle)
    waves, targets = tones(48, seed=1)
    fit_clips = write_clips(root / "fit", waves, "fit")
    holdout_waves, holdout_targets = tones(16, seed=3, spread=TEST_SPREAD)
    holdout = write_clips(root / "holdout", holdout_waves, "holdout")
    fit_bundle_state(bundle, fit_clips, [CLASSES[t] for t in targets], gamma=0.1,
                     class_limit=6, holdout=(holdout, [CLASSES[t] for t in holdout_targets]))
    return {"root": root, "bundle": bundle, "fit": fit_clips,
            "new": write_clips(root / "new", new_tones(5, seed=4), "new"),
            "new_test": write_clips(root / "new_test", new_tones(8, seed=5, spread=TEST_SPREAD),
                                    "test"),
            "holdout": holdout, "holdout_labels": [CLASSES[t] for t in holdout_targets]}


def copy_of(fitted, tmp_path) -> Path:
    target = tmp_path / "phase_0"
    shutil.copytree(fitted["bundle"], target)
    return target


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def predicted(folder: Path, clips) -> list[str]:
    result = cli("infer", folder, *clips, "--top-k", "1", "--json")
    assert result.exit_code == 0, result.output
    return [r["predictions"][0]["label"] for r in json.loads(result.output)["results"]]


def test_the_embedding_model_is_the_fp32_model_without_its_head():
    bundle = exported_bundle()
    section = bundle.manifest["embedding"]
    assert section["file"] == MODEL_EMBEDDING and section["max_abs_logit_diff"] <= 1e-4
    embedding = cpu_session(str(bundle.folder / MODEL_EMBEDDING)).run(
        None, {"waveform": bundle.holdout})[0]
    assert embedding.shape == (len(bundle.holdout), section["dim"])
    weight, bias = trained_head(onnx.load(str(bundle.folder / "model.onnx")))
    logits = load_model(bundle.folder / "model.onnx").logits(bundle.holdout)
    np.testing.assert_allclose(embedding @ weight + bias, logits, atol=1e-4)


def test_the_export_refuses_an_embedding_model_that_does_not_give_the_logits():
    from firmware_export.bundle import _embedding_model
    from firmware_export.parity import ort_runner

    bundle = exported_bundle()
    fp32 = onnx.load(str(bundle.folder / "model.onnx"))
    runner = ort_runner(cpu_session(str(bundle.folder / "model.onnx")))
    data, section, held = _embedding_model(fp32, runner, bundle.holdout[:8], phase=0)
    assert data == (bundle.folder / MODEL_EMBEDDING).read_bytes()
    assert held.shape == (8, section["dim"])  # the held-out embeddings, for the analytic state
    with pytest.raises(EdgeclError, match="differs from the fp32 model by 0.01"):
        _embedding_model(fp32, lambda batch: runner(batch) + 0.01, bundle.holdout[:8], phase=0)


def test_the_fit_keeps_the_trained_device_model_and_reports_both_heads(fitted):
    manifest = verify_bundle(fitted["bundle"])
    assert manifest["device_model"] in ("model.onnx", "model.int8.onnx")
    section = manifest["analytic"]
    assert section["classes"] == CLASSES and section["clips_per_class"] == [12] * 4
    assert section["holdout_accuracy"]["analytic_head"] == 1.0
    assert section["holdout_accuracy"]["trained_head"] == 1.0
    assert section["lineage"][0]["action"] == "fit" and len(section["lineage"][0]["clips"]) == 48


def test_learn_writes_a_new_version_that_infer_runs(fitted, tmp_path):
    bundle = copy_of(fitted, tmp_path)
    before = {p.name: p.read_bytes() for p in bundle.iterdir()}
    result = cli("device", "learn", bundle, *fitted["new"], "--label", "higher")
    assert result.exit_code == 0, result.output
    version = tmp_path / "phase_0.v1"
    assert "wrote version 1" in result.output and version.is_dir()
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before  # untouched
    manifest = verify_bundle(version)
    assert manifest["classes"] == CLASSES + ["higher"]
    assert manifest["device_model"] == "model.analytic.onnx"
    step = manifest["analytic"]["lineage"][-1]
    assert (step["action"], step["label"], len(step["clips"])) == ("learn", "higher", 5)
    assert step["from"]["folder"] == "phase_0"
    assert predicted(version, fitted["new_test"]) == ["higher"] * 8
    # The old classes keep their clips, but for the one beside the new class (top, 1200 Hz;
    # the new class 1800 Hz, beyond every trained pitch): whether the fixture's embedding tells
    # those two apart follows its weights, which follow the CPU's float maths (on an AMD EPYC
    # without AVX-512 a top clip went to the new class).
    labels, expected = predicted(version, fitted["holdout"]), fitted["holdout_labels"]
    assert [got for got, want in zip(labels, expected, strict=True) if want != "top"] == [
        want for want in expected if want != "top"]
    assert {got for got, want in zip(labels, expected, strict=True) if want == "top"} <= {
        "top", "higher"}
    # More clips of a known class: version 2, from version 1.
    result = cli("device", "learn", version, *fitted["new_test"][:2], "--label", "higher")
    assert result.exit_code == 0, result.output
    assert verify_bundle(tmp_path / "phase_0.v2")["analytic"]["clips_per_class"][-1] == 7


def test_the_onnx_head_the_numpy_head_and_the_c_head_agree(fitted, tmp_path):
    bundle = copy_of(fitted, tmp_path)
    version, _ = learn_bundle(bundle, "higher", fitted["new"])
    state = BundleState.from_bytes((version / ANALYTIC_STATE).read_bytes(), "state")
    waves = np.stack([sf.read(p, dtype="float32")[0] for p in fitted["new_test"]])
    embeddings = cpu_session(str(version / MODEL_EMBEDDING)).run(None, {"waveform": waves})[0]
    onnx_logits = load_model(version).logits(waves)
    np.testing.assert_allclose(onnx_logits, state.head.logits(embeddings), atol=1e-4)
    binary = harness.build(tmp_path, (version / "rls.h").read_bytes(),
                           (version / "rls.c").read_bytes())
    out, classes, _, _ = harness.run(binary, [harness.record(harness.PREDICT, 0, 1.0, z)
                                              for z in embeddings],
                                     state.head.dim, state.class_limit)
    assert classes == 5
    c_logits = np.frombuffer(out, np.float32).reshape(-1, 5)
    np.testing.assert_allclose(c_logits, onnx_logits, atol=1e-4)


def test_forget_a_class_or_clips_returns_the_state_before(fitted, tmp_path):
    bundle = copy_of(fitted, tmp_path)
    original = BundleState.from_bytes((bundle / ANALYTIC_STATE).read_bytes(), "fit")
    learnt, _ = learn_bundle(bundle, "higher", fitted["new"])
    result = cli("device", "forget", learnt, "--label", "higher")
    assert result.exit_code == 0, result.output
    forgot = BundleState.from_bytes((tmp_path / "phase_0.v2" / ANALYTIC_STATE).read_bytes(), "v2")
    assert forgot.head.labels == CLASSES and forgot.clip_sha256 == original.clip_sha256
    np.testing.assert_allclose(forgot.head.w, original.head.w, atol=1e-9)
    np.testing.assert_allclose(forgot.head.r, original.head.r, atol=1e-9)
    assert verify_bundle(tmp_path / "phase_0.v2")["analytic"]["lineage"][-1]["action"] == "forget"
    # Two clips only, by their files (the CLI); then one of the host-fit classes.
    out = tmp_path / "some"
    result = cli("device", "forget", learnt, "--out", out, "--clips", *fitted["new"][:2])
    assert result.exit_code == 0, result.output
    assert verify_bundle(out)["analytic"]["clips_per_class"] == [12, 12, 12, 12, 3]
    forget_bundle(out, label="low", out=tmp_path / "no_low")
    assert predicted(tmp_path / "no_low", fitted["new_test"][:1]) == ["higher"]
    assert verify_bundle(tmp_path / "no_low")["classes"] == ["mid", "high", "top", "higher"]


def test_forget_needs_a_label_or_clips(fitted, tmp_path):
    bundle = copy_of(fitted, tmp_path)
    for args in ((), (fitted["new"][0],), ("--clips",)):
        result = cli("device", "forget", bundle, *args)
        assert result.exit_code == 2 and len(result.output.splitlines()) == 1, result.output
    assert [p.name for p in tmp_path.iterdir()] == ["phase_0"]


def test_learn_refuses_a_bundle_without_state(tmp_path):
    bundle = tmp_path / "phase_0"
    shutil.copytree(exported_bundle().folder, bundle)
    clip = write_clips(tmp_path, new_tones(1, seed=1), "x")[0]
    result = cli("device", "learn", bundle, clip, "--label", "x")
    assert result.exit_code == 2
    assert "carries no analytic state" in result.output and len(result.output.splitlines()) == 1
    assert not (tmp_path / "phase_0.v1").exists()


def _rehash(folder: Path) -> None:
    """What a forger does: recompute the manifest's sha256 of every file."""
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["files"] = file_entries(folder, manifest["files"])
    (folder / MANIFEST).write_text(json.dumps(manifest))


def test_a_tampered_or_foreign_state_is_refused(fitted, tmp_path):
    bundle = copy_of(fitted, tmp_path)
    state = (bundle / ANALYTIC_STATE).read_text()
    (bundle / ANALYTIC_STATE).write_text(state.replace('"gamma": 0.1', '"gamma": 0.2'))
    result = cli("device", "learn", bundle, *fitted["new"], "--label", "higher")
    assert result.exit_code == 2 and "sha256" in result.output and ANALYTIC_STATE in result.output
    document = json.loads(state)
    document["backbone_sha256"] = "0" * 64  # a state computed on another embedding model
    (bundle / ANALYTIC_STATE).write_text(json.dumps(document))
    _rehash(bundle)
    result = cli("device", "learn", bundle, *fitted["new"], "--label", "higher")
    assert result.exit_code == 2 and "belongs to another bundle" in result.output
    assert len(result.output.splitlines()) == 1
    assert not (tmp_path / "phase_0.v1").exists()


def test_learn_refuses_a_class_past_the_limit_a_known_clip_and_bad_audio(fitted, tmp_path):
    bundle = copy_of(fitted, tmp_path)
    version, _ = learn_bundle(bundle, "higher", fitted["new"])
    # a sound of its own (the new class's clips under another name would tie with "higher")
    sixth = write_clips(tmp_path / "sixth", new_tones(2, seed=6, centre=SIXTH_PITCH), "sixth")
    v2, _ = learn_bundle(version, "sixth", sixth)  # 6 of 6
    with pytest.raises(EdgeclError, match="class limit"):
        learn_bundle(v2, "seventh", fitted["new_test"][2:4])
    with pytest.raises(EdgeclError, match="already learnt"):
        learn_bundle(v2, "higher", fitted["new"][:1])
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really")
    with pytest.raises(EdgeclError, match="broken.wav"):
        learn_bundle(v2, "higher", [broken])
    with pytest.raises(EdgeclError, match="already exists"):
        learn_bundle(bundle, "higher", fitted["new"])
    # A clip at another rate is resampled to the bundle's.
    other_rate = write_clips(tmp_path / "16k", new_tones(2, seed=9, rate=16000), "r", 16000)
    learnt, _ = learn_bundle(v2, "higher", other_rate)
    assert predicted(learnt, fitted["new_test"][4:]) == ["higher"] * 4


def test_a_clip_that_fails_to_resample_is_refused(fitted, tmp_path, monkeypatch):
    bundle = copy_of(fitted, tmp_path)
    clip = write_clips(tmp_path / "16k", new_tones(1, seed=9, rate=16000), "r", 16000)[0]

    def fails(waveform, orig_rate, new_rate):
        raise ValueError(f"no filter from {orig_rate} to {new_rate} Hz")

    monkeypatch.setattr("firmware_export.device.runtime.resample", fails)
    result = cli("device", "learn", bundle, clip, "--label", "higher")
    assert result.exit_code == 2 and len(result.output.splitlines()) == 1
    assert "r_0.wav: cannot resample to the bundle's 8000 Hz" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["16k", "phase_0"]


def test_a_failed_learn_leaves_the_previous_version_usable(fitted, tmp_path, monkeypatch):
    bundle = copy_of(fitted, tmp_path)
    import firmware_export.bundle_folder as folder_module

    def killed(staging, out_dir):
        raise KeyboardInterrupt  # as if the process died before the new version was renamed in

    monkeypatch.setattr(folder_module, "_swap_in", killed)
    with pytest.raises(KeyboardInterrupt):
        learn_bundle(bundle, "higher", fitted["new"])
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["phase_0"]  # no half-written version
    verify_bundle(bundle)
    assert predicted(bundle, fitted["holdout"][:4]) == fitted["holdout_labels"][:4]
    (tmp_path / ".phase_0.v1.abc.tmp").mkdir()  # a staging folder a SIGKILL left behind
    version, _ = learn_bundle(bundle, "higher", fitted["new"])
    assert predicted(version, fitted["new_test"][:2]) == ["higher"] * 2


def test_device_help_lists_the_commands():
    result = cli("device", "--help")
    assert result.exit_code == 0
    for name in ("fit", "learn", "forget", "show"):
        assert f"  {name} " in result.output


def test_show_prints_the_lineage(fitted, tmp_path):
    bundle = copy_of(fitted, tmp_path)
    version, _ = learn_bundle(bundle, "higher", fitted["new"])
    result = cli("device", "show", version)
    assert result.exit_code == 0, result.output
    assert "higher: 5 clips" in result.output and "learn higher (5 clips) from version 0" in (
        result.output)


def test_device_learn_runs_without_torch(fitted, tmp_path):
    from test_runtime import _run_without_torch

    bundle = copy_of(fitted, tmp_path)
    clips = [str(p) for p in fitted["new"]]
    result = _run_without_torch(f"""
        from edgecl.cli import main
        try:
            main(["device", "learn", {str(bundle)!r}, *{clips!r}, "--label", "higher"])
        finally:
            loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchaudio"))
            print("torch modules:", loaded)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("torch modules: []")
    assert verify_bundle(tmp_path / "phase_0.v1")["classes"][-1] == "higher"
