"""export_phase bundles: parity within the bounds on a tiny trained model, manifest contents and
hashes, atomic replacement, loud parity failures, and bad arguments."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from export_helpers import (
    CLASSES,
    CLIP_SAMPLES,
    SAMPLE_RATE,
    exported_bundle,
    one_thread,  # noqa: F401 (module-wide fixture)
    tones,
    trained_model,
)

import firmware_export.bundle as bundle_module
from edgecl.errors import EdgeclError
from firmware_export import parity
from firmware_export.bundle import export_phase
from firmware_export.device.manifest import verify_bundle
from models.profile import count_macs, count_parameters

pytestmark = pytest.mark.filterwarnings("ignore")
BUNDLE_FILES = {"model.onnx", "model.int8.onnx", "model.embedding.onnx", "labels.json",
                "model.h"}


@pytest.fixture(scope="module")
def bundle():
    return exported_bundle()


@pytest.fixture
def reuse_fp32_export(bundle, monkeypatch):
    """Skip the slow dynamo export in tests about what happens around it: reuse the bundle's."""
    fp32 = onnx.load_from_string((bundle.folder / "model.onnx").read_bytes())
    monkeypatch.setattr(bundle_module, "export_onnx_in_child", lambda *args, **kwargs: fp32)


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
    artifacts = bundle.manifest["artifacts"]
    fp32, int8 = artifacts["fp32"]["parity_vs_torch"], artifacts["int8"]["parity_vs_fp32"]
    assert set(fp32) == set(int8) == {"batch_1", "batch_32"}
    for f in fp32.values():
        assert f["max_abs_logit_diff"] <= 1e-3 and f["top1_agreement"] == 1.0
    # The fixture model has a clear margin: int8 keeps every top-1 on any CPU.
    for f in int8.values():
        assert f["top1_agreement"] == 1.0 and f["accuracy_drop_points"] == 0.0
        assert f["clips"] == len(bundle.holdout)
    assert bundle.manifest["parity"]["holdout_clips"] == len(bundle.holdout)
    assert artifacts["fp32"]["status"] == artifacts["int8"]["status"] == "shipped"
    assert artifacts["int8"]["reason"] is None
    assert bundle.manifest["device_model"] == "model.int8.onnx"


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
    recorded = bundle.manifest["artifacts"]["int8"]["parity_vs_fp32"]
    assert np.max(np.abs(fp32_logits - reference)) <= 1e-3
    int8_accuracy = 100 * np.mean(int8_logits.argmax(1) == bundle.holdout_targets)
    batch_32 = recorded["batch_32"]
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
    assert manifest["frontend"] == frontend and frontend["stft_impl"] == "factored"  # 8 kHz default
    assert manifest["onnx"]["opset"] >= 18
    assert manifest["model"]["parameters"] == count_parameters(trained_model())
    assert manifest["model"]["macs_per_clip"] == count_macs(trained_model(), CLIP_SAMPLES)
    search = manifest["artifacts"]["int8"]["quantization"]["search"]
    assert search["candidates_tried"] == len(search["tried"]) == 1  # the first recipe met the rule
    assert search["tried"][0]["meets_bound"] is True
    assert search["recipe"] == {k: v for k, v in search["tried"][0].items()
                                if k in ("weights", "calibration", "activations", "float_nodes")}
    # The unfolded SubSpectralNorm convs stay float: a small, recorded share of the backbone.
    assert 0 < search["float_share_of_backbone_macs"] <= search["max_float_share"]
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


def test_a_swap_killed_between_its_renames_is_rolled_back_on_next_open(tmp_path,
                                                                       reuse_fp32_export):
    from firmware_export.bundle_folder import recover_interrupted_swap
    from firmware_export.run_export import recover_run_folder

    phase_dir = tmp_path / "phase_0"
    _export(phase_dir)
    (phase_dir / "checkpoint.pt").write_bytes(b"trainer checkpoint")
    before = {p.name: p.read_bytes() for p in phase_dir.iterdir()}

    # What a kill between the swap's two renames leaves: the old folder moved aside and the
    # complete new bundle still staged under a hidden name.
    os.replace(phase_dir, tmp_path / ".phase_0.k1ll.old")
    shutil.copytree(tmp_path / ".phase_0.k1ll.old", tmp_path / ".phase_0.n3w.tmp")
    assert not phase_dir.exists()
    # Opening the run for export puts the old folder back, checkpoint included.
    recover_run_folder(tmp_path)
    assert {p.name: p.read_bytes() for p in phase_dir.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["phase_0"]
    (tmp_path / ".phase_0.abc.tmp").mkdir()
    assert recover_interrupted_swap(phase_dir).startswith("removed 1 leftover")
    assert [p.name for p in tmp_path.iterdir()] == ["phase_0"]


def test_an_fp32_parity_miss_raises_with_the_figures_and_writes_nothing(tmp_path, monkeypatch,
                                                                         reuse_fp32_export):
    phase_dir = tmp_path / "phase_3"
    phase_dir.mkdir()
    (phase_dir / "model.onnx").write_bytes(b"previous bundle")
    monkeypatch.setattr(parity, "FP32_MAX_ABS_DIFF", -1.0)  # unmeetable
    with pytest.raises(parity.ParityError, match=r"phase 3.*fp32 vs torch batch_1: max abs logit "
                                                 r"diff .* > -1") as raised:
        _export(phase_dir, phase=3)
    assert raised.value.figures["fp32_vs_torch"]["batch_1"]["top1_agreement"] == 1.0
    assert [p.name for p in phase_dir.iterdir()] == ["model.onnx"]
    assert (phase_dir / "model.onnx").read_bytes() == b"previous bundle"
    assert [p.name for p in tmp_path.iterdir()] == ["phase_3"]


def _count_preparations(monkeypatch) -> list[int]:
    """Count the fp32 graph's pre-processing for the quantizer (one per phase is the contract)."""
    import firmware_export.quantize as quantize

    calls = []
    original = quantize.pre_processed
    monkeypatch.setattr(quantize, "pre_processed",
                        lambda *args: calls.append(1) or original(*args))
    return calls


def test_an_int8_miss_withholds_only_the_int8_model(tmp_path, monkeypatch, reuse_fp32_export):
    """The search tries every recipe, then mixed precision up to the float-share cap, and gives
    up; the bundle still ships the fp32 model, which becomes the device model. The withheld
    build is kept beside the bundle's files with its per-layer report, and infer refuses it."""
    monkeypatch.setattr(parity, "int8_failures", lambda figures: ["forced miss"])
    monkeypatch.setattr("firmware_export.int8_search.MAX_MIXED_STEPS", 2)
    preparations = _count_preparations(monkeypatch)
    phase_dir = tmp_path / "phase_0"
    manifest = _export(phase_dir)
    assert {p.name for p in phase_dir.iterdir()} == {"model.onnx", "model.embedding.onnx",
                                                     "labels.json", "model.h", "manifest.json",
                                                     "withheld"}
    int8 = manifest["artifacts"]["int8"]
    assert int8["status"] == "withheld" and int8["reason"] == "forced miss"
    assert manifest["artifacts"]["fp32"]["status"] == "shipped"
    assert manifest["device_model"] == "model.onnx"
    assert "withheld/int8/model.int8.onnx" not in manifest["files"]
    tried = int8["quantization"]["search"]["tried"]
    from firmware_export.int8_search import BASE_RECIPES
    assert len(tried) == len(BASE_RECIPES) + 2
    assert preparations == [1]  # one preparation shared by all seven candidates
    assert [len(t["float_nodes"]) for t in tried[len(BASE_RECIPES):]] == [1, 2]
    assert tried[-1]["float_share"] > tried[len(BASE_RECIPES) - 1]["float_share"]
    assert not any(t["meets_bound"] for t in tried)
    header = (phase_dir / "model.h").read_text()
    assert '#define EDGECL_MODEL_PRECISION "fp32"' in header
    assert verify_bundle(phase_dir) == manifest

    kept = phase_dir / "withheld" / "int8"
    assert {p.name for p in kept.iterdir()} == {"model.int8.onnx", "withheld.json"}
    report = json.loads((kept / "withheld.json").read_text())
    assert report["reason"] == "forced miss" and report["phase"] == 0
    closest = onnx.load_from_string((kept / "model.int8.onnx").read_bytes())
    assert any(node.op_type == "QuantizeLinear" for node in closest.graph.node)
    recorded = int8["quantization"]["search"]["recipe"]["float_nodes"]
    diagnosis = report["diagnosis"]
    layers = diagnosis["layers_noisiest_first"]
    noise = [layer["noise_to_signal"] for layer in layers]
    assert noise == sorted(noise, reverse=True) and layers
    assert not set(recorded) & {layer["node"] for layer in layers}  # float nodes: no error
    assert {layer["part"] for layer in layers} == {"head", "backbone"}
    assert [layer["node"] for layer in layers if layer["part"] == "head"] == \
        diagnosis["head_nodes"]
    assert 0 < diagnosis["head_share_of_noise"] < 1
    logits = diagnosis["logits"]
    assert logits["min"] < logits["max"] and logits["int8_step"] > 0
    assert logits["range_in_steps"] == pytest.approx(
        (logits["max"] - logits["min"]) / logits["int8_step"], abs=0.1)

    from firmware_export.device.runtime import load_model
    for path, bare in ((kept, False), (kept / "model.int8.onnx", True)):
        with pytest.raises(EdgeclError, match=r"a withheld build kept for diagnosis.*not a "
                                              r"bundle") as refused:
            load_model(path, bare=bare)
        assert "\n" not in str(refused.value)
    load_model(phase_dir)  # the bundle itself still runs

    # Exported again with int8 shipping, the stale withheld build goes with the old bundle.
    monkeypatch.setattr(parity, "int8_failures", lambda figures: [])
    again = _export(phase_dir)
    assert again["artifacts"]["int8"]["status"] == "shipped" and "withheld_dir" not in again
    assert not (phase_dir / "withheld").exists()


def test_the_search_ships_the_first_candidate_that_meets_the_rule(tmp_path, monkeypatch,
                                                                  reuse_fp32_export):
    """Mixed precision: nodes go float one at a time, noisiest first, until the rule holds."""
    from firmware_export import int8_search

    def misses_until_two_nodes_float(figures):
        return [] if len(state["recipe"].float_nodes) >= 2 else ["forced miss"]

    state = {}
    original = int8_search.quantize_candidate

    def remember(fp32, calibration, *, recipe, cache_dir):
        state["recipe"] = recipe
        return original(fp32, calibration, recipe=recipe, cache_dir=cache_dir)

    monkeypatch.setattr(int8_search, "quantize_candidate", remember)
    monkeypatch.setattr(parity, "int8_failures", misses_until_two_nodes_float)
    preparations = _count_preparations(monkeypatch)
    manifest = _export(tmp_path / "phase_0")
    assert preparations == [1]
    search = manifest["artifacts"]["int8"]["quantization"]["search"]
    assert manifest["artifacts"]["int8"]["status"] == "shipped"
    assert len(search["recipe"]["float_nodes"]) == 2
    assert search["candidates_tried"] == len(int8_search.BASE_RECIPES) + 2
    # Deterministic: the same inputs choose the same nodes and the same bytes.
    again = _export(tmp_path / "again")
    assert again["artifacts"]["int8"]["quantization"]["search"]["recipe"] == search["recipe"]
    assert (tmp_path / "again" / "model.int8.onnx").read_bytes() == \
        (tmp_path / "phase_0" / "model.int8.onnx").read_bytes()


def _figures(n, differ=0, lost=0, gained=0):
    """int8-vs-fp32 figures for `n` clips through parity.compare on made-up logits."""
    reference = np.tile(np.array([[4.0, 0.0]]), (n, 1))
    targets = np.zeros(n, np.int64)
    targets[:gained] = 1  # fp32 wrong on these; int8 gets them right
    candidate = reference.copy()
    flipped = list(range(gained)) + list(range(gained, gained + lost))
    flipped += list(range(gained + lost, gained + lost + differ - len(flipped)))
    candidate[flipped] = [0.0, 4.0]
    return parity.compare(reference, candidate, targets)


def test_one_changed_clip_in_80_is_no_int8_miss():
    """The old bound failed here (accuracy 91.25% vs 92.50%): a 1-clip change is noise."""
    figures = _figures(80, differ=1, lost=1)
    assert figures["top1_disagreements"] == 1 and figures["accuracy_drop_points"] == 1.25
    assert figures["mcnemar_p_value"] == 0.5
    assert parity.int8_failures({"batch_1": figures}) == []


def test_an_int8_model_worse_beyond_noise_misses_both_bounds():
    figures = _figures(200, differ=12, lost=12)
    assert figures["top1_agreement"] == 0.94
    failures = parity.int8_failures({"batch_1": figures})
    assert len(failures) == 2
    assert "94.00% < 98% (12 of 200 clips differ, p=" in failures[0]
    assert "drop 6.00 points > 1 (12 clips lost, 0 gained, McNemar p=0.000244)" in failures[1]


def test_changes_that_cancel_out_miss_agreement_but_not_accuracy():
    figures = _figures(100, differ=10, lost=5, gained=5)
    assert figures["accuracy_drop_points"] == 0.0
    failures = parity.int8_failures({"batch_1": figures})
    assert len(failures) == 1 and "top-1 agreement 90.00%" in failures[0]


def test_a_small_drop_on_many_clips_is_within_the_accuracy_bound():
    """1 point or less never misses, however significant."""
    figures = _figures(1000, differ=10, lost=10)
    assert figures["accuracy_drop_points"] == 1.0 and figures["mcnemar_p_value"] < 0.01
    assert parity.int8_failures({"batch_1": figures}) == []


def test_binomial_tail_is_exact_and_safe_for_thousands_of_clips():
    assert parity.binomial_tail(1, 40, 0.02) == pytest.approx(1 - 0.98 ** 40)
    assert parity.binomial_tail(10, 10, 0.5) == pytest.approx(0.5 ** 10)
    assert parity.binomial_tail(0, 5, 0.3) == 1.0 and parity.binomial_tail(6, 5, 0.3) == 0.0
    assert 0 < parity.binomial_tail(1700, 3000, 0.5) < 1e-10


def test_fp32_failure_messages_name_each_bound():
    fp32 = {"batch_1": {"max_abs_logit_diff": 2e-3, "top1_agreement": 0.99,
                        "top1_disagreements": 1, "decisive_disagreements": 1}}
    messages = parity.fp32_failures(fp32)
    assert len(messages) == 2 and "0.002 > 0.001" in messages[0]
    assert "99.00% < 100%" in messages[1]
    # A swap between two logits closer than the diff bound allows is no miss.
    tie = {"batch_1": {"max_abs_logit_diff": 1e-4, "top1_agreement": 0.99,
                       "top1_disagreements": 1, "decisive_disagreements": 0}}
    assert parity.fp32_failures(tie) == []


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


def test_the_accuracy_half_of_the_rule_ignores_agreement():
    cancelling = _figures(100, differ=10, lost=5, gained=5)
    assert len(parity.int8_failures({"batch_1": cancelling})) == 1  # agreement 90% misses
    assert parity.accuracy_failures({"batch_1": cancelling}) == []
    worse = _figures(200, differ=12, lost=12)
    [failure] = parity.accuracy_failures({"batch_1": worse})
    assert "drop 6.00 points > 1" in failure


def test_a_windowed_build_answers_for_int8_on_its_windows_and_for_accuracy_on_the_clip():
    flips_ties = _figures(100, differ=10, lost=5, gained=5)  # vs the whole clip: no accuracy lost
    faithful = _figures(100, differ=0)  # vs fp32 on the same windows
    assert parity.windowed_failures(flips_ties, faithful) == []
    [int8_miss] = parity.windowed_failures(faithful, flips_ties)
    assert int8_miss.startswith("int8 vs fp32 on the same windows: top-1 agreement 90.00%")
    [window_miss] = parity.windowed_failures(_figures(200, differ=12, lost=12), faithful)
    assert window_miss.startswith("int8 on windows vs fp32 on the whole clip: accuracy")


def test_sixteen_bit_activations_are_the_last_recipe_and_ship_when_8_bit_ones_miss(
        tmp_path, monkeypatch, reuse_fp32_export):
    """A rule only 16-bit activations meet (a miss forced on every 8-bit candidate): the search
    reaches the int8-weight, int16-activation recipe before mixed precision and ships it, and
    its file runs in ONNX Runtime."""
    from firmware_export import int8_search

    assert int8_search.BASE_RECIPES[-1].activations == "int16"
    current: list[str] = []
    build = int8_search.quantize_candidate

    def recording(*args, **kwargs):
        current.append(kwargs["recipe"].activations)
        return build(*args, **kwargs)
    original = parity.int8_failures
    monkeypatch.setattr(int8_search, "quantize_candidate", recording)
    monkeypatch.setattr(parity, "int8_failures", lambda figures: original(figures) + (
        [] if current[-1] == "int16" else ["forced 8-bit miss"]))
    manifest = _export(tmp_path / "phase_0")
    int8 = manifest["artifacts"]["int8"]
    tried = int8["quantization"]["search"]["tried"]
    assert int8["status"] == "shipped"
    assert len(tried) == len(int8_search.BASE_RECIPES)
    assert tried[-1]["activations"] == "int16" and tried[-1]["meets_bound"]
    assert int8["quantization"]["activations"] == "int16 asymmetric"
    session = ort.InferenceSession(str(tmp_path / "phase_0" / "model.int8.onnx"),
                                   providers=["CPUExecutionProvider"])
    holdout, _ = tones(8, seed=3)
    assert session.run(None, {"waveform": holdout})[0].shape == (8, len(CLASSES))
