"""export_phase bundles: parity within the bounds on a tiny trained model, manifest contents and
hashes, atomic replacement, loud parity failures, and bad arguments."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import firmware_export.bundle as bundle_module
from edgecl.errors import EdgeclError
from export_helpers import one_thread  # noqa: F401 (module-wide fixture)
from export_helpers import (CLASSES, CLIP_SAMPLES, SAMPLE_RATE, exported_bundle,
                            tones, trained_model)
from firmware_export import parity
from firmware_export.bundle import export_phase
from firmware_export.manifest import verify_bundle
from models.profile import count_macs, count_parameters

pytestmark = pytest.mark.filterwarnings("ignore")
BUNDLE_FILES = {"model.onnx", "model.int8.onnx", "labels.json", "model.h"}


@pytest.fixture(scope="module")
def bundle():
    return exported_bundle()


@pytest.fixture
def reuse_fp32_export(bundle, monkeypatch):
    """Skip the slow dynamo export in tests about what happens around it: reuse the bundle's."""
    fp32 = onnx.load_from_string((bundle.folder / "model.onnx").read_bytes())
    monkeypatch.setattr(bundle_module, "export_onnx", lambda *args, **kwargs: fp32)


def _export(out_dir, **overrides):
    calibration, _ = tones(48, seed=2)
    holdout, targets = tones(64, seed=3)
    arguments = dict(phase=0, classes=CLASSES, calibration_waveforms=calibration,
                     holdout_waveforms=holdout, holdout_targets=targets)
    arguments.update(overrides)
    return export_phase(trained_model(), out_dir, **arguments)


def test_bundle_holds_exactly_the_device_files(bundle):
    assert {p.name for p in bundle.folder.iterdir()} == BUNDLE_FILES | {"manifest.json"}
    assert json.loads((bundle.folder / "labels.json").read_text()) == CLASSES


def test_parity_is_within_bounds_at_batch_1_and_a_larger_batch(bundle):
    figures = bundle.manifest["parity"]
    assert set(figures["fp32_vs_torch"]) == {"batch_1", "batch_32"}
    for f in figures["fp32_vs_torch"].values():
        assert f["max_abs_logit_diff"] <= 1e-3 and f["top1_agreement"] == 1.0
    for f in figures["int8_vs_fp32"].values():
        assert f["top1_agreement"] >= 0.98 and f["accuracy_drop_points"] <= 1.0
    assert figures["holdout_clips"] == len(bundle.holdout)


def test_recorded_parity_figures_match_a_fresh_measurement(bundle):
    """The manifest reports what the shipped files do, not what some other model did."""
    model = trained_model()
    with torch.no_grad():
        reference = model(torch.from_numpy(bundle.holdout))[0].numpy()
    fp32 = ort.InferenceSession(str(bundle.folder / "model.onnx"))
    int8 = ort.InferenceSession(str(bundle.folder / "model.int8.onnx"))
    fp32_logits = np.concatenate([fp32.run(None, {"waveform": bundle.holdout[i:i + 32]})[0]
                                  for i in range(0, len(bundle.holdout), 32)])
    int8_logits = np.concatenate([int8.run(None, {"waveform": bundle.holdout[i:i + 32]})[0]
                                  for i in range(0, len(bundle.holdout), 32)])
    recorded = bundle.manifest["parity"]
    assert np.max(np.abs(fp32_logits - reference)) <= 1e-3
    int8_accuracy = 100 * np.mean(int8_logits.argmax(1) == bundle.holdout_targets)
    batch_32 = recorded["int8_vs_fp32"]["batch_32"]
    assert batch_32["accuracy"] == pytest.approx(int8_accuracy, abs=1e-3)
    agreement = np.mean(int8_logits.argmax(1) == fp32_logits.argmax(1))
    assert batch_32["top1_agreement"] == pytest.approx(agreement)
    assert batch_32["max_abs_logit_diff"] == pytest.approx(
        float(np.max(np.abs(int8_logits - fp32_logits))), rel=1e-4)


def test_manifest_describes_the_phase_and_hashes_every_file(bundle):
    manifest = json.loads((bundle.folder / "manifest.json").read_text())
    assert manifest == bundle.manifest
    assert (manifest["phase"], manifest["classes"]) == (0, CLASSES)
    assert (manifest["sample_rate"], manifest["clip_samples"]) == (SAMPLE_RATE, CLIP_SAMPLES)
    frontend = trained_model().frontend.config.to_dict()
    assert manifest["frontend"] == {**frontend, "stft_impl": "conv"}
    assert manifest["onnx"]["opset"] >= 18
    assert manifest["model"]["parameters"] == count_parameters(trained_model())
    assert manifest["model"]["macs_per_clip"] == count_macs(trained_model(), CLIP_SAMPLES)
    quantization = manifest["quantization"]
    assert quantization["weight_granularity"] in quantization["candidates_vs_fp32_on_calibration"]
    assert set(quantization["candidates_vs_fp32_on_calibration"]) == {"per-tensor", "per-channel"}
    assert set(manifest["files"]) == BUNDLE_FILES
    for name, entry in manifest["files"].items():
        data = (bundle.folder / name).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert verify_bundle(bundle.folder) == manifest


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_verify_bundle_names_the_file_that_does_not_match(bundle, tmp_path, damage):
    copy = tmp_path / "phase_0"
    shutil.copytree(bundle.folder, copy)
    target = copy / "model.int8.onnx"
    data = bytearray(target.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
        expected = "sha256"
    elif damage == "truncate":
        target.write_bytes(bytes(data[:-1]))
        expected = "size"
    else:
        target.unlink()
        expected = "missing"
    with pytest.raises(EdgeclError, match=rf"model\.int8\.onnx.*{expected}"):
        verify_bundle(copy)


def test_reexport_replaces_the_bundle_atomically_and_keeps_other_files(tmp_path, bundle,
                                                                      reuse_fp32_export):
    phase_dir = tmp_path / "phase_0"
    phase_dir.mkdir()
    (phase_dir / "checkpoint.pt").write_bytes(b"trainer checkpoint")
    (phase_dir / "model.onnx").write_bytes(b"stale model")
    manifest = _export(phase_dir)
    assert (phase_dir / "checkpoint.pt").read_bytes() == b"trainer checkpoint"
    assert verify_bundle(phase_dir) == manifest
    # The same weights and clips give the same bundle bytes as the first export.
    for name in BUNDLE_FILES:
        assert (phase_dir / name).read_bytes() == (bundle.folder / name).read_bytes(), name
    assert [p.name for p in tmp_path.iterdir()] == ["phase_0"]  # no staging folders left


def test_a_missed_parity_bound_raises_with_the_figures_and_writes_nothing(tmp_path, monkeypatch,
                                                                         reuse_fp32_export):
    phase_dir = tmp_path / "phase_3"
    phase_dir.mkdir()
    (phase_dir / "model.onnx").write_bytes(b"previous bundle")
    monkeypatch.setattr(parity, "INT8_MAX_ACCURACY_DROP_POINTS", -1.0)  # unmeetable
    with pytest.raises(parity.ParityError, match=r"phase 3.*int8 vs fp32 batch_1: accuracy .* drop "
                                                 r"0\.00 points > -1") as raised:
        _export(phase_dir, phase=3)
    assert raised.value.figures["int8_vs_fp32"]["batch_1"]["top1_agreement"] >= 0.98
    assert [p.name for p in phase_dir.iterdir()] == ["model.onnx"]
    assert (phase_dir / "model.onnx").read_bytes() == b"previous bundle"
    assert [p.name for p in tmp_path.iterdir()] == ["phase_3"]


def test_parity_failure_messages_name_each_bound():
    fp32 = {"batch_1": {"max_abs_logit_diff": 2e-3, "top1_agreement": 0.99}}
    int8 = {"batch_8": {"top1_agreement": 0.9, "accuracy": 80.0, "accuracy_reference": 90.0,
                        "accuracy_drop_points": 10.0}}
    fp32_messages, int8_messages = parity.fp32_failures(fp32), parity.int8_failures(int8)
    assert len(fp32_messages) == 2 and "0.002 > 0.001" in fp32_messages[0]
    assert "99.00% < 100%" in fp32_messages[1]
    assert len(int8_messages) == 2 and "90.00% < 98%" in int8_messages[0]
    assert "drop 10.00 points > 1" in int8_messages[1]
    within = {"batch_1": {"max_abs_logit_diff": 1e-4, "top1_agreement": 1.0, "accuracy": 90.0,
                          "accuracy_reference": 90.0, "accuracy_drop_points": 0.0}}
    assert parity.fp32_failures(within) == [] and parity.int8_failures(within) == []


@pytest.mark.parametrize("overrides, message", [
    ({"calibration_waveforms": np.zeros((4, CLIP_SAMPLES + 1), np.float32)}, "equal lengths"),
    ({"holdout_targets": np.full(64, 7)}, r"targets must lie in \[0, 4\)"),
    ({"classes": CLASSES[:3], "holdout_targets": np.arange(64) % 3}, "4 outputs but 3 class names"),
    ({"calibration_waveforms": np.zeros((0, CLIP_SAMPLES), np.float32)}, "non-empty"),
])
def test_bad_arguments_are_one_line_errors(tmp_path, overrides, message, reuse_fp32_export):
    with pytest.raises(EdgeclError, match=message):
        _export(tmp_path / "phase_0", **overrides)
    assert not (tmp_path / "phase_0").exists()
