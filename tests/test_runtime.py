"""The torch-free runtime and `edgecl infer`: resampling like torchaudio, bundle verification,
top-k predictions on WAV files, bad input, and a run with the torch import blocked."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF
from click.testing import CliRunner
from export_helpers import (
    CLASSES,
    CLIP_SAMPLES,
    SAMPLE_RATE,
    exported_bundle,
    one_thread,  # noqa: F401 (module-wide fixture)
)

from edgecl.cli import main
from edgecl.errors import EdgeclError
from firmware_export.device.resample import resample
from firmware_export.device.runtime import classify, load_model, read_clip

pytestmark = pytest.mark.filterwarnings("ignore")
PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bundle():
    return exported_bundle()


@pytest.fixture(scope="module")
def clips(bundle, tmp_path_factory) -> list[tuple[Path, str]]:
    """One held-out clip per class as 16-bit WAV at the model's rate, with its class name."""
    folder = tmp_path_factory.mktemp("clips")
    out = []
    for index in range(len(CLASSES)):
        path = folder / f"{CLASSES[index]}.wav"
        sf.write(path, bundle.holdout[index], SAMPLE_RATE, subtype="PCM_16")
        assert bundle.holdout_targets[index] == index
        out.append((path, CLASSES[index]))
    return out


@pytest.mark.parametrize("orig, new, length", [
    (44100, 8000, 44100), (16000, 8000, 16001), (8000, 16000, 7999), (48000, 44100, 4800),
    (22050, 8000, 3000)])
def test_numpy_resampler_matches_torchaudio(orig, new, length):
    waveform = np.random.default_rng(length).standard_normal((2, length)).astype(np.float32) * 0.3
    expected = AF.resample(torch.from_numpy(waveform), orig, new).numpy()
    got = resample(waveform, orig, new)
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=5e-5, rtol=0)


def test_resampling_keeps_a_tone_and_removes_what_lies_above_the_new_nyquist():
    rate, time = 16000, np.arange(16000) / 16000
    signal = (np.sin(2 * np.pi * 440 * time) + np.sin(2 * np.pi * 6000 * time)).astype(np.float32)
    spectrum = np.abs(np.fft.rfft(resample(signal, rate, 8000)))  # 1 Hz bins
    aliased = np.abs(np.fft.rfft(signal[::2]))  # plain decimation: 6 kHz folds onto 2 kHz
    assert aliased[2000] == pytest.approx(4000, rel=0.02)
    assert spectrum[2000] < aliased[2000] / 300  # > 50 dB below
    assert spectrum[440] == pytest.approx(4000, rel=0.02)


def test_bundle_model_predicts_every_held_out_clip(bundle, clips):
    for name in ("model.onnx", "model.int8.onnx"):
        model = load_model(bundle.folder / name)
        assert model.labels == CLASSES and model.manifest is not None
        predictions = classify(model, [path for path, _ in clips], top_k=2)
        assert [p.labels[0] for p in predictions] == [label for _, label in clips]
        assert all(len(p.labels) == 2 and p.scores[0] >= p.scores[1] for p in predictions)


def test_clip_at_another_rate_and_in_stereo_is_resampled_and_classified(bundle, tmp_path):
    original = bundle.holdout[2]
    upsampled = AF.resample(torch.from_numpy(original), SAMPLE_RATE, 16000).numpy()
    path = tmp_path / "high_16k_stereo.wav"
    sf.write(path, np.stack([upsampled, upsampled], axis=1), 16000, subtype="FLOAT")
    waveform = read_clip(path, SAMPLE_RATE, CLIP_SAMPLES)
    assert waveform.shape == (CLIP_SAMPLES,)
    # Band-limited round trip: close to the original away from the clip edges.
    assert np.max(np.abs(waveform[200:-200] - original[200:-200])) < 0.02
    [prediction] = classify(load_model(bundle.folder / "model.int8.onnx"), [path], top_k=1)
    assert prediction.labels == ["high"]


def test_short_clips_are_zero_padded_and_long_ones_cropped(tmp_path):
    path = tmp_path / "short.wav"
    sf.write(path, np.full(100, 0.5, np.float32), SAMPLE_RATE, subtype="FLOAT")
    short = read_clip(path, SAMPLE_RATE, 300)
    assert np.all(short[:100] == 0.5) and np.all(short[100:] == 0)
    ramp = np.linspace(-1, 1, 1000, dtype=np.float32)
    sf.write(path, ramp, SAMPLE_RATE, subtype="FLOAT")
    assert read_clip(path, SAMPLE_RATE, 300).tolist() == ramp[:300].tolist()


def test_a_model_file_without_its_manifest_runs_only_when_asked_to(bundle, clips, tmp_path):
    lone = tmp_path / "device.onnx"
    shutil.copy(bundle.folder / "model.int8.onnx", lone)
    with pytest.raises(EdgeclError, match=r"device\.onnx: exported by edgecl as part of a bundle, "
                                          r"but no manifest\.json .* pass --bare"):
        load_model(lone)
    model = load_model(lone, bare=True)
    assert model.manifest is None
    assert (model.labels, model.sample_rate, model.clip_samples) == (CLASSES, SAMPLE_RATE,
                                                                     CLIP_SAMPLES)
    assert classify(model, [clips[3][0]], top_k=1)[0].labels == [clips[3][1]]
    refused = CliRunner().invoke(main, ["infer", str(lone), str(clips[3][0])])
    assert refused.exit_code == 2 and refused.output.count("\n") == 1
    bare = CliRunner().invoke(main, ["infer", str(lone), str(clips[3][0]), "--bare"])
    assert bare.exit_code == 0 and f": {clips[3][1]} " in bare.output


def test_a_manifest_whose_runtime_fields_disagree_with_the_model_is_refused(bundle, tmp_path):
    """manifest.json is the hash list itself: an edit there must still not change how clips are
    prepared. Its fields are checked against the model's own metadata."""
    copy = tmp_path / "phase_0"
    shutil.copytree(bundle.folder, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["sample_rate"] = 44100
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EdgeclError, match=r"manifest\.json: sample_rate 44100 does not match "
                                          r"model\.int8\.onnx's own 8000; the bundle was edited"):
        load_model(copy)
    manifest["sample_rate"], manifest["clip_samples"] = SAMPLE_RATE, 100
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EdgeclError, match="clip_samples 100 does not match"):
        load_model(copy / "model.onnx")


@pytest.mark.parametrize("key, value, message", [
    ("edgecl.sample_rate", "0", r"sample_rate 0 is not a sample rate"),
    ("edgecl.clip_samples", str(10 ** 11), r"clip_samples 100000000000 is not a clip length"),
    ("edgecl.clip_samples", "100", r"takes 4000 samples but its metadata says 100"),
    ("edgecl.labels", "[]", r"labels must be a non-empty list"),
    ("edgecl.labels", "not json", r"no edgecl metadata"),
])
def test_absurd_model_metadata_is_a_clear_error(bundle, tmp_path, key, value, message):
    import onnx

    model = onnx.load(str(bundle.folder / "model.onnx"))
    for prop in model.metadata_props:
        if prop.key == key:
            prop.value = value
    path = tmp_path / "edited.onnx"
    onnx.save(model, str(path))
    with pytest.raises(EdgeclError, match=message):
        load_model(path, bare=True)


def test_a_file_that_is_not_onnx_is_a_clear_error(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"RIFF....WAVEfmt not a model at all")
    with pytest.raises(EdgeclError, match=r"model\.onnx: not a loadable ONNX model"):
        load_model(path)
    with pytest.raises(EdgeclError, match="model file not found"):
        load_model(tmp_path / "missing.onnx")


def test_a_tampered_bundle_is_refused(bundle, tmp_path):
    copy = tmp_path / "phase_0"
    shutil.copytree(bundle.folder, copy)
    labels = copy / "labels.json"
    labels.write_text(json.dumps(list(reversed(CLASSES))))
    with pytest.raises(EdgeclError, match=r"labels\.json: (sha256|size).*does not match"):
        load_model(copy / "model.int8.onnx")


@pytest.mark.parametrize("content, message", [
    (b"this is not audio", "unreadable or corrupt audio"),
    (None, "audio file not found"),
])
def test_an_unreadable_clip_is_a_clear_error(bundle, tmp_path, content, message):
    path = tmp_path / "clip.wav"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(EdgeclError, match=rf"clip\.wav: {message}"):
        classify(load_model(bundle.folder / "model.onnx"), [path])


def test_infer_command_prints_top_k_and_json(bundle, clips):
    runner = CliRunner()
    paths = [str(path) for path, _ in clips[:2]]
    result = runner.invoke(main, ["infer", str(bundle.folder / "model.int8.onnx"), *paths,
                                  "--top-k", "2"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{paths[0]}: low ")
    assert len(lines[1].split(": ", 1)[1].split(", ")) == 2
    result = runner.invoke(main, ["infer", str(bundle.folder / "model.onnx"), *paths, "--json"])
    document = json.loads(result.output)
    assert document["labels"] == CLASSES
    assert [r["predictions"][0]["label"] for r in document["results"]] == ["low", "mid"]
    assert all(len(r["predictions"]) == 3 for r in document["results"])
    assert sum(p["score"] for p in document["results"][0]["predictions"]) <= 1.0 + 1e-6


def test_a_bundle_folder_runs_the_model_it_ships_for_devices(bundle, clips, tmp_path):
    loaded = load_model(bundle.folder)
    assert loaded.path == bundle.folder / bundle.manifest["device_model"]
    assert loaded.path.name == "model.int8.onnx"  # the fixture's int8 build met its rule
    result = CliRunner().invoke(main, ["infer", str(bundle.folder), str(clips[2][0]), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["model"].endswith("model.int8.onnx")
    assert document["results"][0]["predictions"][0]["label"] == "high"
    # A bundle whose int8 model was withheld names the fp32 model as its device model.
    copy = tmp_path / "phase_0"
    shutil.copytree(bundle.folder, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "model.int8.onnx").unlink()
    del manifest["files"]["model.int8.onnx"]
    manifest["device_model"] = "model.onnx"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert load_model(copy).path == copy / "model.onnx"
    with pytest.raises(EdgeclError, match=r"model\.int8\.onnx: model file not found"):
        load_model(copy / "model.int8.onnx")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EdgeclError, match="a folder, but not a bundle"):
        load_model(empty)


def test_infer_command_reports_bad_input_in_one_line(tmp_path, clips):
    bogus = tmp_path / "bogus.onnx"
    bogus.write_text("nope")
    result = CliRunner().invoke(main, ["infer", str(bogus), str(clips[0][0])])
    assert result.exit_code == 2
    assert result.output.startswith("edgecl: error: ") and result.output.count("\n") == 1


BLOCK_TORCH = textwrap.dedent("""
    import importlib.abc, sys

    class BlockTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchaudio"):
                raise ImportError(f"{name} is blocked: the runtime must not need torch")
            return None

    sys.meta_path.insert(0, BlockTorch())
""")


def _run_without_torch(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=120)


def test_runtime_and_infer_command_run_without_torch(bundle, clips):
    model, clip = bundle.folder / "model.int8.onnx", clips[1][0]
    result = _run_without_torch(f"""
        try:
            import torch
        except ImportError:
            pass
        else:
            raise SystemExit("torch import was not blocked")
        from firmware_export.device.runtime import classify, load_model
        [prediction] = classify(load_model({str(model)!r}), [{str(clip)!r}], top_k=1)
        print(prediction.labels[0])
        from edgecl.cli import main
        try:
            main(["infer", {str(model)!r}, {str(clip)!r}, "--json"])
        finally:
            loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchaudio"))
            print("torch modules:", loaded)
    """)
    assert result.returncode == 0, result.stderr
    first, rest = result.stdout.split("\n", 1)
    assert first == "mid"
    document = json.loads(rest.rsplit("torch modules:", 1)[0])
    assert document["results"][0]["predictions"][0]["label"] == "mid"
    assert result.stdout.strip().endswith("torch modules: []")
