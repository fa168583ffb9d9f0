"""--target tflm end to end on the shared width-8 fixture model: the bundle's int8 TFLM model runs
in TFLM's own interpreter (every operator int8, the recorded arena is the one TFLM needs, parity
recorded and reproducible, byte-identical conversions), its C files compile and agree with the
model, a miss withholds it, a graph with over 256 KiB of constants round-trips, and `edgecl
infer --target tflm` checks the sha256 first and needs no torch. Skipped without the tflm extra."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import numpy as np
import pytest
import torch
from click.testing import CliRunner

for _package in ("litert_torch", "ai_edge_quantizer", "ai_edge_litert", "tflite_micro"):
    pytest.importorskip(_package, reason="the tflm extra is not installed")

from c_frontend_harness import compiler  # noqa: E402
from export_helpers import (  # noqa: E402
    CLASSES,
    TFLM_WINDOW_SECONDS,
    exported_tflm_bundle,
    one_thread,  # noqa: E402, F401 (module-wide fixture)
    tones,
    trained_model,
)

from edgecl.cli import main  # noqa: E402
from firmware_export.device.layout import MODEL_TFLM_EMBEDDING, TFLM_FILES  # noqa: E402
from firmware_export.device.logmel import LogMelPlan  # noqa: E402
from firmware_export.device.runtime import cpu_session  # noqa: E402
from firmware_export.device.tflm_runtime import ARENA_STEP, MicroModel, load_tflm_bundle, quiet_fds  # noqa: E402
from firmware_export.tflm import flatbuffer  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")
INT8_OPS = {"ADD", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED",
            "LOGISTIC", "MAX_POOL_2D", "MEAN", "MUL", "PAD", "RESHAPE", "SLICE", "TRANSPOSE"}


@pytest.fixture(scope="module")
def bundle():
    return exported_tflm_bundle()


def _tflite(bundle) -> bytes:
    return (bundle.folder / "model.tflm.tflite").read_bytes()


def test_the_bundle_ships_the_tflm_files_beside_the_onnx_ones(bundle):
    names = {p.name for p in bundle.folder.iterdir()}
    assert set(TFLM_FILES) <= names and {"model.onnx", "manifest.json"} <= names
    section = bundle.manifest["tflm"]
    assert section["status"] == "shipped" and section["reason"] is None
    model = _tflite(bundle)
    assert section["bytes"] == len(model) == bundle.manifest["files"]["model.tflm.tflite"]["bytes"]
    assert section["sha256"] == hashlib.sha256(model).hexdigest()
    assert set(section["toolchain"]) == {"litert-torch", "ai-edge-quantizer", "ai-edge-litert",
                                         "tflite-micro"}


def test_every_operator_is_int8_with_int8_input_and_output(bundle):
    model = _tflite(bundle)
    assert flatbuffer.float_operators(model) == []
    assert bundle.manifest["tflm"]["float_ops"] == 0
    ops = set(flatbuffer.operators(model))
    assert ops <= INT8_OPS and bundle.manifest["tflm"]["ops"] == sorted(ops)
    io = flatbuffer.io_tensors(model)
    assert [t["type"] for t in io["inputs"] + io["outputs"]] == ["INT8", "INT8"]
    # One 0.25 s window (2000 samples at 8 kHz, hop 80: 26 frames), not the 0.5 s clip's 51.
    assert io["inputs"][0]["shape"] == [1, 1, 64, 26] and io["outputs"][0]["shape"] == [1, 4]


def test_constants_are_inline_and_tensors_unnamed(bundle):
    parsed = flatbuffer.read(_tflite(bundle))
    assert not any(buffer.offset for buffer in parsed.buffers)
    assert not any(tensor.name for graph in parsed.subgraphs for tensor in graph.tensors)


def test_the_recorded_arena_is_the_smallest_tflm_allocates(bundle):
    model, arena = _tflite(bundle), bundle.manifest["tflm"]["arena_bytes"]
    assert arena % ARENA_STEP == 0
    micro = MicroModel(model, arena)
    assert micro.run_codes(np.zeros(micro.input_shape, np.int8)).shape == (len(CLASSES),)
    from firmware_export.device.tflm_runtime import _allocates

    with quiet_fds():
        assert not _allocates(model, arena - ARENA_STEP)


def _counting_allocations(monkeypatch) -> list[int]:
    """The arenas _allocates is asked about from now on, in order."""
    from firmware_export.device import tflm_runtime

    asked: list[int] = []
    real = tflm_runtime._allocates

    def allocates(model: bytes, arena: int) -> bool:
        asked.append(arena)
        return real(model, arena)
    monkeypatch.setattr(tflm_runtime, "_allocates", allocates)
    return asked


@pytest.mark.parametrize("name", ["model.tflm.tflite", MODEL_TFLM_EMBEDDING])
def test_the_arena_search_from_the_record_finds_the_bisections_arena_in_fewer_allocations(
        bundle, monkeypatch, name):
    from firmware_export.device.tflm_runtime import _bisect_arena, find_arena

    model = (bundle.folder / name).read_bytes()
    asked = _counting_allocations(monkeypatch)
    with quiet_fds():
        bisected = _bisect_arena(model)
    by_bisection = len(asked)
    asked.clear()
    assert find_arena(model) == bisected
    assert len(asked) < by_bisection


@pytest.mark.parametrize("offset", [None, -1, -40, -1000, 1, 7])
def test_a_misleading_allocation_record_still_gives_the_smallest_arena(bundle, monkeypatch,
                                                                      offset):
    """The record's floor (in ARENA_STEPs from the smallest arena) too low: the search gallops up
    from it; too high (the step below allocates) or missing: it bisects."""
    from firmware_export.device import tflm_runtime

    model, arena = _tflite(bundle), bundle.manifest["tflm"]["arena_bytes"]
    monkeypatch.setattr(tflm_runtime, "_record_floor",
                        lambda _: None if offset is None else arena + offset * ARENA_STEP)
    assert tflm_runtime.find_arena(model) == arena


def test_recorded_parity_is_reproduced_by_the_bundle_in_tflm(bundle):
    figures = bundle.manifest["tflm"]["parity_vs_fp32"]["batch_1"]
    assert figures["clips"] == len(bundle.holdout)
    # The fixture model has clear margins: TFLM int8 keeps every top-1, so its accuracy too.
    assert figures["top1_agreement"] == 1.0
    assert figures["accuracy"] == figures["accuracy_reference"] and figures["clips_lost"] == 0
    loaded = load_tflm_bundle(bundle.folder)
    fp32 = cpu_session(str(bundle.folder / "model.onnx"))
    tflm_logits = loaded.logits(bundle.holdout)
    fp32_logits = fp32.run(None, {"waveform": bundle.holdout})[0]
    error = np.abs(tflm_logits - fp32_logits)
    assert error.max() == pytest.approx(figures["max_abs_logit_diff"], rel=1e-4)
    assert np.array_equal(tflm_logits.argmax(1), fp32_logits.argmax(1))


def test_the_manifest_records_the_window_and_its_own_cost(bundle):
    window = bundle.manifest["tflm"]["window"]
    assert window["samples"] == 2000 and window["seconds"] == TFLM_WINDOW_SECONDS
    assert window["per_clip"] == 2 and window["starts"] == [0, 2000]
    assert window["rule"] == f"--tflm-window-seconds {TFLM_WINDOW_SECONDS:g}"
    assert "mean" in window["pooling"]
    for name in ("fp32_windowed_vs_whole", "tflm_vs_fp32_windowed"):
        assert window[name]["clips"] == len(bundle.holdout)
    # Tones are stationary: the windows alone keep every top-1 of the whole clip.
    assert window["fp32_windowed_vs_whole"]["top1_agreement"] == 1.0


def test_infer_pools_the_windows_as_the_exporters_parity_did(bundle):
    from firmware_export.device.logmel import logmel

    loaded = load_tflm_bundle(bundle.folder)
    clip = bundle.holdout[5]
    by_hand = [loaded.model.run_logmel(logmel(loaded.plan, clip[start:start + 2000]))
               for start in (0, 2000)]
    assert np.array_equal(loaded.logits(clip[None])[0], np.mean(by_hand, axis=0))
    assert not np.array_equal(by_hand[0], by_hand[1])  # two windows, two different scores
    # The recorded device-vs-fp32 figures come back from the bundle's pooled scores.
    fp32 = cpu_session(str(bundle.folder / "model.onnx")).run(None, {"waveform":
                                                                    bundle.holdout})[0]
    recorded = bundle.manifest["tflm"]["parity_vs_fp32"]["batch_1"]["mean_abs_logit_diff"]
    assert np.abs(loaded.logits(bundle.holdout) - fp32).mean() == pytest.approx(recorded,
                                                                                  rel=1e-4)


def test_a_second_conversion_is_byte_identical(bundle):
    from firmware_export.tflm.build import all_windows, convert_tflite

    calibration, _ = tones(48, seed=2)
    plan = LogMelPlan.from_config(bundle.manifest["frontend"], 2000)
    calibration_windows = all_windows(calibration, 2000)
    assert convert_tflite(trained_model(), plan, calibration_windows) == _tflite(bundle)


def test_the_c_header_describes_the_model(bundle):
    header = (bundle.folder / "model_tflm.h").read_text()
    section = bundle.manifest["tflm"]
    assert f"edgecl_tflm_model[{section['bytes']}] EDGECL_TFLM_ALIGNED" in header
    assert "__attribute__((aligned(16)))" in header
    assert f"#define EDGECL_TFLM_ARENA_SIZE {section['arena_bytes']}" in header
    assert f"#define EDGECL_TFLM_INPUT_ZERO_POINT ({section['input']['zero_point']})" in header
    assert "X(AddConv2D)" in header and "X(AddDepthwiseConv2D)" in header
    assert f"#define EDGECL_TFLM_OP_COUNT {len(section['ops'])}" in header
    assert "#define EDGECL_TFLM_CLIP_SAMPLES 4000" in header
    assert "#define EDGECL_TFLM_WINDOW_SAMPLES 2000" in header
    assert "#define EDGECL_TFLM_WINDOWS 2" in header
    assert "#define EDGECL_TFLM_WINDOW_STARTS {0, 2000}" in header
    assert all(f'"{label}",' in header for label in CLASSES)


VECTOR_CHECK = r"""
#include <math.h>
#include <stdio.h>
#include "logmel.h"
#include "model_tflm.h"
#include "tflm_test_vectors.h"

static float features[EDGECL_LOGMEL_SIZE];
static int8_t codes[EDGECL_LOGMEL_SIZE];

int main(void) {
  int i, off = 0;
  float worst = 0.0f;
  edgecl_logmel(edgecl_tflm_test_waveform, features);
  edgecl_logmel_quantize(features, codes, EDGECL_LOGMEL_SIZE, EDGECL_TFLM_INPUT_SCALE,
                         EDGECL_TFLM_INPUT_ZERO_POINT);
  for (i = 0; i < EDGECL_LOGMEL_SIZE; ++i) {
    float d = fabsf(features[i] - edgecl_tflm_test_logmel[i]);
    if (d > worst) worst = d;
    if (codes[i] != edgecl_tflm_test_input[i]) ++off;
  }
  printf("%g %d %u\n", worst, off, edgecl_tflm_model_len);
  return 0;
}
"""


def run_vector_check(folder, tmp_path, check_source: str) -> str:
    """Compile `check_source` with the bundle's C files (front end, model header, test vectors)
    and return what it prints."""
    for name in ("logmel.h", "logmel.c", "model_tflm.h", "tflm_test_vectors.h"):
        shutil.copy(folder / name, tmp_path / name)
    (tmp_path / "check.c").write_text(check_source)
    binary = tmp_path / "check"
    built = subprocess.run([compiler(), "-std=c99", "-Wall", "-Werror", "-Wno-unused-variable",
                            "-Wno-unused-const-variable", "-O2", "-o", str(binary),
                            str(tmp_path / "check.c"), str(tmp_path / "logmel.c"), "-lm"],
                           capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    return subprocess.run([str(binary)], capture_output=True, text=True, check=True,
                          timeout=60).stdout


def test_the_c_files_compile_together_and_reproduce_the_test_vectors(bundle, tmp_path):
    worst, off, length = run_vector_check(bundle.folder, tmp_path, VECTOR_CHECK).split()
    assert float(worst) < 1e-3  # float32 rounding between C and numpy
    assert int(off) <= 3  # a code may flip where a value sits on a rounding edge
    assert int(length) == bundle.manifest["tflm"]["bytes"]
    # The vectors' logits are TFLM's for the vectors' input.
    micro = MicroModel(_tflite(bundle), bundle.manifest["tflm"]["arena_bytes"])
    text = (bundle.folder / "tflm_test_vectors.h").read_text()
    codes = c_array(text, "edgecl_tflm_test_input")
    assert micro.run_codes(codes).tolist() == c_array(text, "edgecl_tflm_test_logits").tolist()


def c_array(text: str, name: str) -> np.ndarray:
    """The integers of the C array `name` in `text` (int8 or int16 codes)."""
    body = text.split(name + "[", 1)[1].split("{", 1)[1].split("}", 1)[0]
    return np.array([int(v) for v in body.replace("\n", " ").split(",") if v.strip()])


def _tflm_export(bundle, out_dir, monkeypatch, converter_float_model=None, **options):
    """export_phase with --target tflm, reusing the fixture's fp32 graph and TFLM model."""
    import onnx

    import firmware_export.bundle as bundle_module
    import firmware_export.tflm.build as build_module
    from firmware_export.tflm.converter_process import ConverterProcess

    fp32 = onnx.load_from_string((bundle.folder / "model.onnx").read_bytes())
    monkeypatch.setattr(bundle_module, "export_onnx_in_child", lambda *args, **kwargs: fp32)
    model_bytes = _tflite(bundle)
    embedding_bytes = (bundle.folder / MODEL_TFLM_EMBEDDING).read_bytes()
    # The conversions (in the converter's child process) give the fixture's bytes for the int8
    # recipe, the only one tried here: the float model names which (head: the logits model).
    monkeypatch.setattr(ConverterProcess, "float_model", converter_float_model or (
        lambda self, model, example, fold_norms=True, head=True: b"head" if head else b""))
    monkeypatch.setattr(ConverterProcess, "quantized", lambda self, recipe, float_model, _: (
        model_bytes if float_model == b"head" else embedding_bytes))
    monkeypatch.setattr(build_module, "RECIPES", build_module.RECIPES[:1])
    calibration, _ = tones(48, seed=2)
    return bundle_module.export_phase(
        trained_model(), out_dir, phase=0, classes=CLASSES,
        calibration_waveforms=calibration, holdout_waveforms=bundle.holdout,
        holdout_targets=bundle.holdout_targets, target="tflm",
        tflm_window_seconds=TFLM_WINDOW_SECONDS, **options)


def _assert_kept_for_diagnosis(folder, section) -> None:
    """The withheld TFLM build sits in withheld/tflm/ with its report, and infer refuses it."""
    kept = folder / "withheld" / "tflm"
    assert hashlib.sha256((kept / "model.tflm.tflite").read_bytes()).hexdigest() == \
        section["sha256"]
    report = json.loads((kept / "withheld.json").read_text())
    assert report["reason"] == section["reason"] and report["artifact"] == "tflm"
    refused = CliRunner().invoke(main, ["infer", "--target", "tflm", str(kept), "x.wav"])
    assert refused.exit_code != 0
    assert "a withheld build kept for diagnosis" in refused.output
    assert len(refused.output.strip().splitlines()) == 1


def test_a_tflm_miss_withholds_the_tflm_files_and_ships_onnx(bundle, tmp_path, monkeypatch):
    import firmware_export.tflm.build as build_module

    monkeypatch.setattr(build_module.parity, "int8_failures",
                        lambda figures: ["int8 vs fp32 batch_1: top-1 agreement 50% < 98%"])
    manifest = _tflm_export(bundle, tmp_path / "phase_0", monkeypatch)
    section = manifest["tflm"]
    assert section["status"] == "withheld"
    # a windowed build: int8 answers against the fp32 network on the same windows
    assert section["reason"] == "TFLM int8 vs fp32 on the same windows: top-1 agreement 50% < 98%"
    assert not set(TFLM_FILES) & set(manifest["files"])
    assert not any((tmp_path / "phase_0" / name).exists() for name in TFLM_FILES)
    assert "model.onnx" in manifest["files"]
    result = CliRunner().invoke(main, ["infer", "--target", "tflm", str(tmp_path / "phase_0"),
                                       "x.wav"])
    assert result.exit_code != 0 and "withheld" in result.output
    _assert_kept_for_diagnosis(tmp_path / "phase_0", section)


def test_a_failed_conversion_names_the_phase_and_writes_nothing(bundle, tmp_path, monkeypatch):
    from edgecl.errors import EdgeclError
    from firmware_export.tflm.converter_process import ConversionFailed

    out_dir = tmp_path / "phase_0"

    def dies(*args, **kwargs):
        raise ConversionFailed("TFLM conversion: its child process ended without an answer")

    with pytest.raises(EdgeclError) as failed:
        _tflm_export(bundle, out_dir, monkeypatch, converter_float_model=dies)
    assert str(failed.value) == ("export phase 0: TFLM conversion: its child process ended "
                                 "without an answer")
    assert not out_dir.exists()


def test_a_build_over_a_deployment_limit_is_withheld_with_the_reason(bundle, tmp_path,
                                                                     monkeypatch):
    from firmware_export.tflm.limits import DeviceLimits

    arena, size = bundle.manifest["tflm"]["arena_bytes"], bundle.manifest["tflm"]["bytes"]
    fits = _tflm_export(bundle, tmp_path / "fits", monkeypatch,
                        limits=DeviceLimits(arena=arena, flash=size))
    assert fits["tflm"]["status"] == "shipped"
    assert fits["tflm"]["limits"] == {"arena_bytes": arena, "flatbuffer_bytes": size}
    over = _tflm_export(bundle, tmp_path / "over", monkeypatch,
                        limits=DeviceLimits(arena=arena - 16, flash=size - 1))
    section = over["tflm"]
    assert section["status"] == "withheld"
    assert "over --arena-limit" in section["reason"] and "over --flash-limit" in section["reason"]
    assert over["artifacts"]["int8"]["status"] == "shipped"  # the ONNX artifacts are unaffected
    _assert_kept_for_diagnosis(tmp_path / "over", section)


class _WideHead(torch.nn.Module):
    """log-mel [1, 1, 64, 51] -> 100 logits through one fully connected layer of 326,400
    weights: 319 KiB of int8 constants in one buffer."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(64 * 51, 100)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.reshape(1, -1))


def test_a_graph_with_over_256_kib_of_constants_round_trips_in_tflm():
    from firmware_export.tflm.convert import float_tflite
    from firmware_export.tflm.quantize import int8_tflite

    graph = _WideHead().eval()
    inputs = torch.randn(9, 1, 1, 64, 51, generator=torch.Generator().manual_seed(1))
    quantized = int8_tflite(float_tflite(graph, inputs[0]), inputs[:8, 0].numpy())
    # The quantizer stores the large weight after the flatbuffer, at an offset ...
    assert any(buffer.offset for buffer in flatbuffer.read(quantized).buffers)
    model = flatbuffer.finish(quantized)
    parsed = flatbuffer.read(model)  # ... and finish() puts it back inline
    biggest = max(len(b.data) if b.data is not None else 0 for b in parsed.buffers)
    assert biggest >= 64 * 51 * 100 > 256 * 1024
    assert not any(buffer.offset for buffer in parsed.buffers)
    micro = MicroModel(model, 64 * 1024)
    with torch.no_grad():
        expected = graph(inputs[8]).numpy().reshape(-1)
    got = micro.run_logmel(inputs[8, 0, 0].numpy())
    # int8 rounding of weights and activations: within a few output steps of the float logits
    assert np.abs(got - expected).max() < 8 * micro.output.scale
    assert np.corrcoef(got, expected)[0, 1] > 0.99


def test_infer_runs_the_bundle_in_tflm_and_refuses_an_edited_tflite(bundle, tmp_path):
    from fixtures_audio import write_wav

    clip = tmp_path / "clip.wav"
    write_wav(clip, bundle.holdout[1], 8000, subtype="FLOAT")
    result = CliRunner().invoke(main, ["infer", "--target", "tflm", str(bundle.folder),
                                       str(clip), "--json"])
    assert result.exit_code == 0, result.output
    top = json.loads(result.output)["results"][0]["predictions"][0]["label"]
    assert top == CLASSES[bundle.holdout_targets[1]]
    edited = tmp_path / "edited"
    shutil.copytree(bundle.folder, edited)
    data = bytearray((edited / "model.tflm.tflite").read_bytes())
    data[len(data) // 2] ^= 0x01
    (edited / "model.tflm.tflite").write_bytes(bytes(data))
    result = CliRunner().invoke(main, ["infer", "--target", "tflm", str(edited), str(clip)])
    assert result.exit_code != 0
    assert "model.tflm.tflite: sha256" in result.output and result.output.count("\n") == 1


def test_infer_target_tflm_needs_no_torch(bundle, tmp_path):
    from fixtures_audio import write_wav
    from test_runtime import _run_without_torch

    clip = tmp_path / "clip.wav"
    write_wav(clip, bundle.holdout[2], 8000, subtype="FLOAT")
    result = _run_without_torch(f"""
        from edgecl.cli import main
        try:
            main(["infer", "--target", "tflm", {str(bundle.folder)!r}, {str(clip)!r}, "--json"])
        finally:
            loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchaudio"))
            print("torch modules:", loaded)
    """)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout.rsplit("torch modules:", 1)[0])
    assert document["results"][0]["predictions"][0]["label"] == CLASSES[bundle.holdout_targets[2]]
    assert result.stdout.strip().endswith("torch modules: []")


def test_the_table_reads_the_figures_from_the_manifests(bundle, capsys):
    from firmware_export.tflm.table import main as table_main

    assert table_main([str(bundle.folder.parent)]) == 0
    header, separator, line = capsys.readouterr().out.strip().split("\n")
    assert header.count("|") == separator.count("|") == line.count("|")
    section = bundle.manifest["tflm"]
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    assert cells[1:4] == ["0", "4", "64"]
    assert cells[4] == f"{section['bytes'] / 1024:.0f} KiB" and cells[6] == "0"
    assert cells[9] == "shipped"
    assert cells[12:15] == [f"{TFLM_WINDOW_SECONDS:g} s x 2", "100.0%", "100.0%"]
    embedding = bundle.manifest["tflm"]["embedding"]
    assert cells[15] == (f"{embedding['bytes'] / 1024:.0f} KiB / "
                         f"{embedding['arena_bytes'] / 1024:.0f} KiB")
    assert table_main([str(bundle.folder / "missing")]) == 2
    capsys.readouterr()
    assert table_main(["--recipes", str(bundle.folder.parent)]) == 0
    header, separator, line = capsys.readouterr().out.strip().split("\n")
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    assert cells[3:7] == ["int8", "INT8", f"{section['bytes']:,} B",
                          f"{section['arena_bytes']:,} B"]
    assert cells[8] == "meets the rule"


def test_the_probe_sizes_an_untrained_network_at_an_input_shape():
    from firmware_export.tflm.probe import probe

    figures = probe(8000, 0.5, width=4, n_classes=3, calibration_clips=2)
    assert figures["input"] == [1, 1, 64, 51] and figures["float_ops"] == 0
    # The stem conv's output (2 * width channels at half the input's height and width) is the
    # largest activation.
    assert figures["largest_activations_bytes"][0] == 8 * 32 * 26
    assert figures["arena_bytes"] >= sum(figures["largest_activations_bytes"][:2])
    assert figures["flatbuffer_bytes"] > 0
    # The arena holds the planner's activations and the persistent per-operator data (on a
    # model this small, allocating also needs temporary room beyond the two); no plan holds the
    # activations in less than the graph's own floor.
    split = figures["arena_activations_bytes"] + figures["arena_persistent_bytes"]
    assert split <= figures["arena_bytes"]
    assert figures["arena_persistent_bytes"] > 0
    assert (figures["largest_activations_bytes"][0] <= figures["activation_floor_bytes"]
            <= figures["arena_activations_bytes"])
