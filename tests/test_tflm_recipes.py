"""The TFLM build's recipe search on the shared width-8 fixture model: a phase whose int8 recipe
meets the rule stops there; when the recipes with an int8 input miss (forced here: on this model
every recipe agrees with fp32, so a real miss would need a weak model), the build in 16-bit
activations throughout ships with an int16 input that the manifest, the C front end, the header,
the test vectors and `infer` all describe and feed; a 16-bit recipe over --arena-limit is not
shipped. Skipped without the tflm extra."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest

for _package in ("litert_torch", "ai_edge_quantizer", "ai_edge_litert", "tflite_micro"):
    pytest.importorskip(_package, reason="the tflm extra is not installed")

from export_helpers import (  # noqa: E402
    CLASSES,
    TFLM_WINDOW_SECONDS,
    exported_tflm_bundle,
    one_thread,  # noqa: E402, F401 (module-wide fixture)
    tones,
    trained_model,
)
from test_tflm_build import c_array, run_vector_check  # noqa: E402

from firmware_export import parity  # noqa: E402
from firmware_export.device.logmel import quantize  # noqa: E402
from firmware_export.device.tflm_runtime import (  # noqa: E402
    HeadedMicroModel,
    MicroModel,
    load_tflm_bundle,
)
from firmware_export.tflm import build as build_module  # noqa: E402
from firmware_export.tflm import flatbuffer  # noqa: E402
from firmware_export.tflm.limits import DeviceLimits  # noqa: E402
from firmware_export.tflm.recipes import RECIPES, TflmRecipe  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")
FORCED = "forced miss of a recipe with an int8 input"
HOLDOUT_CLIPS = 64


def _int8_input_recipes_miss(monkeypatch) -> None:
    """Every recipe whose model takes int8 codes misses (after its real checks ran)."""
    real = build_module.screened_candidate

    def candidate(recipe, model_bytes, *args, **kwargs):
        result = real(recipe, model_bytes, *args, **kwargs)
        if flatbuffer.io_tensors(model_bytes)["inputs"][0]["type"] == "INT8":
            result.failures = [*result.failures, FORCED]
        return result
    monkeypatch.setattr(build_module, "screened_candidate", candidate)


def _build(limits: DeviceLimits | None = None,
           recipes: list[TflmRecipe] | None = None) -> build_module.TflmBuild:
    model = trained_model()
    calibration, _ = tones(48, seed=2)
    holdout, targets = tones(HOLDOUT_CLIPS, seed=3)
    return build_module.build_tflm(
        model, classes=CLASSES, sample_rate=8000, clip_samples=holdout.shape[1],
        calibration_waveforms=calibration, holdout_waveforms=holdout, holdout_targets=targets,
        fp32_runner=parity.torch_runner(model), window_seconds=TFLM_WINDOW_SECONDS,
        limits=limits, recipes=recipes)


def _wrong_top1_counted(monkeypatch, wrong: Callable[[int], bool],
                        kind: type = MicroModel) -> list[int]:
    """TFLM's clip runs of each model of `kind` in the order they first run (MicroModel: the
    logits builds', not the embedding's headed one; HeadedMicroModel: the embedding build's); the
    `wrong(order)` ones score every clip with its classes shifted by one, so each clip's top-1
    changes. Returns the runs counted per model."""
    real = build_module.clip_logits
    models: list[MicroModel | HeadedMicroModel] = []
    runs: list[int] = []

    def clip_logits(micro, *args, **kwargs):
        scores = real(micro, *args, **kwargs)
        if not isinstance(micro, kind):
            return scores
        if not any(micro is seen for seen in models):
            models.append(micro)
            runs.append(0)
        order = next(index for index, seen in enumerate(models) if seen is micro)
        runs[order] += 1
        return np.roll(scores, 1) if wrong(order) else scores
    monkeypatch.setattr(build_module, "clip_logits", clip_logits)
    return runs


def test_a_first_recipe_that_misses_stops_at_the_screen_when_another_ships(monkeypatch):
    runs = _wrong_top1_counted(monkeypatch, lambda order: order == 0)
    monkeypatch.setattr(build_module, "_add_embedding", lambda *args: None)  # not under test
    built = _build(recipes=RECIPES[:2])
    tried = built.section["recipes_tried"]
    assert built.shipped and built.section["recipe"]["name"] == RECIPES[1].name
    assert [r["status"] for r in tried] == ["misses", "meets the rule"]
    assert tried[0]["reason"].startswith("TFLM screen: top-1 changed on ")
    assert tried[0]["top1_agreement"] is None and tried[1]["top1_agreement"] == 1.0
    # The first recipe stopped well before the last held-out clip; the one that ships saw all.
    assert 0 < runs[0] < HOLDOUT_CLIPS // 4 and runs[1] == HOLDOUT_CLIPS


def test_the_embedding_model_starts_at_the_recipe_the_logits_model_shipped(monkeypatch):
    from firmware_export.device.logmel import LogMelPlan
    from firmware_export.tflm.embedding_build import embedding_files
    from firmware_export.tflm.table import embedding_cell

    runs = _wrong_top1_counted(monkeypatch, lambda order: order == 0)
    built = _build(recipes=RECIPES[:2])
    section = built.embedding.section
    assert built.section["recipe"]["name"] == RECIPES[1].name
    # int8 missed on the logits model's backbone: the embedding model is not tried in it.
    assert [r["name"] for r in section["recipes_tried"]] == [RECIPES[1].name]
    assert section["status"] == "shipped" and section["recipe"]["name"] == RECIPES[1].name
    assert section["input"]["type"] == "INT8" and section["output"]["type"] == "INT16"
    assert section["output"]["zero_point"] == 0 and section["float_ops"] == 0
    assert section["parity_vs_fp32"]["batch_1"]["clips"] == HOLDOUT_CLIPS
    assert section["window"]["tflm_vs_fp32_windowed"]["clips"] == HOLDOUT_CLIPS
    assert len(runs) == 2  # the embedding ran as a headed model, not as a logits one
    plan = LogMelPlan.from_config(trained_model().frontend.config.to_dict(),
                                  built.section["window"]["samples"])
    header = embedding_files(built.embedding, CLASSES, plan, sample_rate=8000,
                             clip_samples=tones(1, seed=3)[0].shape[1]
                             )["model_embedding_tflm.h"].decode()
    assert "Output: int16 embedding [1][" in header
    assert embedding_cell(section).endswith(" KiB, 16x8-int8-input")


def test_an_embedding_model_that_misses_stops_at_its_screen(monkeypatch):
    runs = _wrong_top1_counted(monkeypatch, lambda order: True, kind=HeadedMicroModel)
    built = _build(recipes=RECIPES[:1])
    section = built.embedding.section
    assert built.shipped and section["status"] == "withheld"
    assert section["reason"].startswith("TFLM screen: top-1 changed on ")
    assert section["parity_vs_fp32"] is None
    assert 0 < runs[0] < HOLDOUT_CLIPS // 4


def test_when_every_recipe_misses_the_withheld_first_one_has_its_full_figures(monkeypatch):
    runs = _wrong_top1_counted(monkeypatch, lambda order: True)
    built = _build(recipes=RECIPES[:2])
    section, tried = built.section, built.section["recipes_tried"]
    assert section["status"] == "withheld" and section["recipe"]["name"] == "int8"
    # Both recipes screened out, then the first checked in full, resuming after its screen:
    # its model ran every clip once.
    assert runs[0] == HOLDOUT_CLIPS and 0 < runs[1] < HOLDOUT_CLIPS and len(runs) == 2
    assert section["parity_vs_fp32"]["batch_1"]["clips"] == HOLDOUT_CLIPS
    windowed = section["window"]["tflm_vs_fp32_windowed"]
    assert windowed["top1_agreement"] == 0.0 and tried[0]["top1_agreement"] == 0.0
    assert section["reason"] == tried[0]["reason"]
    assert section["reason"].startswith("TFLM int8 vs fp32 on the same windows: top-1 agreement")
    assert tried[1]["reason"].startswith("TFLM screen: ") and tried[1]["top1_agreement"] is None


@pytest.fixture(scope="module")
def sixteen_bit(tmp_path_factory):
    """(manifest, bundle folder) of the phase exported when the int8-input recipes miss."""
    import onnx

    import firmware_export.bundle as bundle_module

    shared = exported_tflm_bundle()
    fp32 = onnx.load_from_string((shared.folder / "model.onnx").read_bytes())
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(bundle_module, "export_onnx_in_child", lambda *args, **kwargs: fp32)
    _int8_input_recipes_miss(monkeypatch)
    folder = tmp_path_factory.mktemp("sixteen-bit") / "phase_0"
    calibration, _ = tones(48, seed=2)
    try:
        manifest = bundle_module.export_phase(
            trained_model(), folder, phase=0, classes=CLASSES,
            calibration_waveforms=calibration, holdout_waveforms=shared.holdout,
            holdout_targets=shared.holdout_targets, target="tflm",
            tflm_window_seconds=TFLM_WINDOW_SECONDS)
    finally:
        monkeypatch.undo()
    return manifest, folder


def test_a_phase_whose_int8_recipe_meets_the_rule_tries_no_other():
    section = exported_tflm_bundle().manifest["tflm"]
    assert section["status"] == "shipped" and section["recipe"]["name"] == "int8"
    assert [r["name"] for r in section["recipes_tried"]] == ["int8"]
    assert section["input"]["type"] == "INT8"


@pytest.mark.slow
def test_the_16x8_recipes_come_only_after_the_int8_ones_miss(sixteen_bit):
    manifest, folder = sixteen_bit
    section = manifest["tflm"]
    tried = section["recipes_tried"]
    assert [r["name"] for r in tried] == ["int8", "16x8-int8-input", "16x8"]
    assert [r["status"] for r in tried] == ["misses", "misses", "meets the rule"]
    assert [r["input"] for r in tried] == ["INT8", "INT8", "INT16"]
    assert section["status"] == "shipped" and section["recipe"]["name"] == "16x8"
    assert section["recipe"]["sixteen_bit_activations"] == "all"
    # int16 input, zero point 0, in the manifest; every op of the network runs in 16x8.
    assert section["input"]["type"] == "INT16" and section["input"]["zero_point"] == 0
    assert section["output"]["type"] == "INT16" and section["float_ops"] == 0
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MEAN", "ADD", "MUL",
            "LOGISTIC", "CONCATENATION", "PAD", "SLICE", "MAX_POOL_2D"} <= set(section["ops"])
    model = flatbuffer.read((folder / "model.tflm.tflite").read_bytes())
    constant = [b.data is not None and len(b.data) > 0 for b in model.buffers]
    assert {t.type for t in model.subgraphs[0].tensors if not constant[t.buffer]} == {
        flatbuffer.schema.TensorType.INT16}
    # 16-bit activations need more arena than the int8 build of the same network.
    assert tried[2]["arena_bytes"] > tried[0]["arena_bytes"]
    assert section["parity_vs_fp32"]["batch_1"]["top1_agreement"] >= 0.9


@pytest.mark.slow
def test_the_int16_input_goes_through_the_c_front_end_and_the_headers(sixteen_bit, tmp_path):
    manifest, folder = sixteen_bit
    header = (folder / "model_tflm.h").read_text()
    assert "int16 log-mel" in header and "edgecl_logmel_quantize16" in header
    assert "#define EDGECL_TFLM_INPUT_ZERO_POINT (0)" in header
    assert "edgecl_logmel_quantize16" in (folder / "logmel.h").read_text()
    vectors = (folder / "tflm_test_vectors.h").read_text()
    assert "static const int16_t edgecl_tflm_test_input[" in vectors
    worst = int(run_vector_check(folder, tmp_path, VECTOR_CHECK))
    # The C log-mel matches numpy's to 1e-3 (float32 rounding); int16 codes are fine enough
    # that this moves a few of them by a step or two, never by more.
    scale = manifest["tflm"]["input"]["scale"]
    assert worst * scale <= 1e-3 + scale
    micro = MicroModel((folder / "model.tflm.tflite").read_bytes(),
                       manifest["tflm"]["arena_bytes"])
    codes = c_array(vectors, "edgecl_tflm_test_input")
    assert micro.input_dtype is np.int16
    assert micro.run_codes(codes).tolist() == c_array(vectors, "edgecl_tflm_test_logits").tolist()


VECTOR_CHECK = r"""
#include <stdio.h>
#include "logmel.h"
#include "model_tflm.h"
#include "tflm_test_vectors.h"

static float features[EDGECL_LOGMEL_SIZE];
static int16_t codes[EDGECL_LOGMEL_SIZE];

int main(void) {
  int i, worst = 0;
  edgecl_logmel(edgecl_tflm_test_waveform, features);
  edgecl_logmel_quantize16(features, codes, EDGECL_LOGMEL_SIZE, EDGECL_TFLM_INPUT_SCALE);
  for (i = 0; i < EDGECL_LOGMEL_SIZE; ++i) {
    int d = codes[i] - edgecl_tflm_test_input[i];
    if (d < 0) d = -d;
    if (d > worst) worst = d;
  }
  printf("%d\n", worst);
  return 0;
}
"""


@pytest.mark.slow
def test_infer_feeds_the_int16_input(sixteen_bit, tmp_path):
    """`infer --target tflm` runs the int16-input bundle: its runtime feeds int16 codes, and its
    pooled scores are the ones the exporter's parity measured."""
    from click.testing import CliRunner
    from fixtures_audio import write_wav

    from edgecl.cli import main

    manifest, folder = sixteen_bit
    shared = exported_tflm_bundle()
    loaded = load_tflm_bundle(folder)
    assert loaded.model.input_dtype is np.int16
    fp32 = parity.batched(parity.torch_runner(trained_model()), shared.holdout, 1)
    recorded = manifest["tflm"]["parity_vs_fp32"]["batch_1"]["mean_abs_logit_diff"]
    assert np.abs(loaded.logits(shared.holdout) - fp32).mean() == pytest.approx(recorded,
                                                                                rel=1e-3)
    clip = tmp_path / "clip.wav"
    write_wav(clip, shared.holdout[1], 8000, subtype="FLOAT")
    result = CliRunner().invoke(main, ["infer", "--target", "tflm", str(folder), str(clip),
                                       "--json"])
    assert result.exit_code == 0, result.output
    top = json.loads(result.output)["results"][0]["predictions"][0]["label"]
    assert top == CLASSES[int(np.argmax(loaded.logits(shared.holdout[1:2])[0]))]


@pytest.mark.slow
def test_a_16x8_bundle_learns_through_its_int16_embedding(sixteen_bit, tmp_path):
    import shutil

    from test_device_learn import TEST_SPREAD, cli, new_tones, write_clips
    from test_tflm_learn import _head_on_tflm_embedding

    from firmware_export.device.learn import fit_bundle_state, learn_bundle

    manifest, folder = sixteen_bit
    section = manifest["tflm"]["embedding"]
    # The logits model shipped in 16x8: its embedding model starts there, and ships.
    assert [r["name"] for r in section["recipes_tried"]] == ["16x8"]
    assert section["status"] == "shipped" and section["recipe"]["name"] == "16x8"
    assert (section["input"]["type"], section["output"]["type"]) == ("INT16", "INT16")
    assert "Output: int16 embedding" in (folder / "model_embedding_tflm.h").read_text()
    bundle = tmp_path / "phase_0"
    shutil.copytree(folder, bundle)
    waves, targets = tones(48, seed=1)
    fit_bundle_state(bundle, write_clips(tmp_path / "fit", waves, "fit"),
                     [CLASSES[t] for t in targets], gamma=0.1, class_limit=6)
    version, learnt = learn_bundle(bundle, "higher",
                                   write_clips(tmp_path / "new", new_tones(5, seed=4), "new"))
    assert learnt["tflm"]["output"]["type"] == "INT16"
    clips = write_clips(tmp_path / "test", new_tones(4, seed=5, spread=TEST_SPREAD), "test")
    result = cli("infer", "--target", "tflm", version, *clips, "--top-k", "1", "--json")
    assert result.exit_code == 0, result.output
    labels = [r["predictions"][0]["label"] for r in json.loads(result.output)["results"]]
    # infer runs the int16 embedding model and the learnt head, as computed apart here.
    assert labels == _head_on_tflm_embedding(version, clips) and "higher" in labels


@pytest.mark.slow
def test_a_sixteen_bit_recipe_over_the_arena_limit_is_not_shipped(sixteen_bit, monkeypatch):
    int8_arena = sixteen_bit[0]["tflm"]["recipes_tried"][0]["arena_bytes"]
    _int8_input_recipes_miss(monkeypatch)
    over = _build(DeviceLimits(arena=int8_arena))
    tried = over.section["recipes_tried"]
    assert [r["name"] for r in tried] == ["int8", "16x8-int8-input", "16x8"]
    assert all("over --arena-limit" in r["reason"] for r in tried[1:])
    assert over.section["status"] == "withheld" and not over.files
    assert over.section["recipe"]["name"] == "int8" and FORCED in over.section["reason"]


def test_int16_codes_clamp_to_the_int16_range():
    values = np.array([1.0, -1.0, 40000.0, -40000.0, 0.26], np.float32)
    codes = quantize(values, 1.0, 0, np.int16)
    assert codes.dtype == np.int16
    assert codes.tolist() == [1, -1, 32767, -32768, 0]
    assert quantize(values, 1.0, 0).tolist() == [1, -1, 127, -128, 0]


def test_the_export_line_names_the_recipe_that_shipped():
    from firmware_export.bundle import tflm_summary

    figures = {"top1_agreement": 0.978, "accuracy": 12.8, "accuracy_reference": 12.2}
    section = {"status": "shipped", "reason": None, "bytes": 259344, "arena_bytes": 372752,
               "float_ops": 0, "parity_vs_fp32": {"batch_1": figures},
               "recipe": {"name": "16x8-int8-input"}}
    assert tflm_summary(section).startswith("TFLM 16x8-int8-input SHIPPED: top-1 agreement 97.8%")
    section["recipe"] = {"name": "int8"}
    assert tflm_summary(section).startswith("TFLM int8 SHIPPED")
