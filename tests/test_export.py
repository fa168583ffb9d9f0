"""fp32 ONNX export and int8 quantization: single file, opset, dynamic batch, checker, stable bytes,
float front end in the int8 graph, and the C header."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

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
from onnx import TensorProto, helper

from edgecl.errors import EdgeclError
from firmware_export.c_header import c_string, render_c_header
from firmware_export.export import export_onnx, serialize
from firmware_export.quantize import quantize_candidate

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def bundle():
    return exported_bundle()


@pytest.fixture(scope="module")
def fp32_bytes(bundle) -> bytes:
    return (bundle.folder / "model.onnx").read_bytes()


@pytest.fixture(scope="module")
def int8_model(bundle) -> onnx.ModelProto:
    return onnx.load_from_string((bundle.folder / "model.int8.onnx").read_bytes())


def test_fp32_model_is_one_checked_file_with_opset_18_and_dynamic_batch(fp32_bytes):
    model = onnx.load_from_string(fp32_bytes)
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 18
    assert all(t.data_location != TensorProto.EXTERNAL for t in model.graph.initializer)
    [waveform], [logits] = model.graph.input, model.graph.output
    batch, samples = waveform.type.tensor_type.shape.dim
    assert batch.dim_param and not batch.HasField("dim_value")
    assert samples.dim_value == CLIP_SAMPLES
    assert logits.type.tensor_type.shape.dim[1].dim_value == len(CLASSES)
    # The front end is inside the graph: the input is the waveform, and a Log sits in the graph.
    assert "Log" in {node.op_type for node in model.graph.node}


def test_fp32_model_matches_pytorch_at_several_batch_sizes(fp32_bytes):
    session = ort.InferenceSession(fp32_bytes, providers=["CPUExecutionProvider"])
    model = trained_model()
    waves, _ = tones(7, seed=11)
    for size in (1, 3, 7):
        with torch.no_grad():
            expected = model(torch.from_numpy(waves[:size]))[0].numpy()
        got = session.run(None, {"waveform": waves[:size]})[0]
        assert got.shape == (size, len(CLASSES))
        np.testing.assert_allclose(got, expected, atol=1e-3, rtol=0)


def test_exporting_the_same_weights_twice_gives_the_same_bytes(fp32_bytes):
    again = serialize(export_onnx(trained_model(), labels=CLASSES, sample_rate=SAMPLE_RATE,
                                  clip_samples=CLIP_SAMPLES))
    assert again == fp32_bytes
    # Exporter annotations (stack traces with source paths) are stripped.
    model = onnx.load_from_string(again)
    assert not any(node.metadata_props or node.doc_string for node in model.graph.node)
    assert b"stack_trace" not in again and b".py" not in again


def test_fp32_model_computes_its_dft_basis_instead_of_storing_it(fp32_bytes):
    model = onnx.load_from_string(fp32_bytes)
    front_end = {node.op_type for node in _ancestors_of_first_log(model)}
    assert {"Range", "Cos", "Sin", "Conv"} <= front_end
    largest = max(int(np.prod(t.dims)) for t in model.graph.initializer)
    config = trained_model().frontend.config
    assert largest < config.n_fft * 64  # the stored basis had 2 * bins * n_fft values


def test_rebuilt_dft_basis_matches_the_front_end_kernels():
    from firmware_export.dft_basis import hann_dft_basis
    from models.frontend import dft_kernels

    expected = dft_kernels(256, 3, 120)[:, 0, :].double().numpy()
    np.testing.assert_allclose(hann_dft_basis(256, 3, 117), expected, atol=1e-6, rtol=0)


def test_dft_rewrite_leaves_other_convolutions_alone():
    from firmware_export.dft_basis import compute_dft_basis_in_graph

    weight = onnx.numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((4, 1, 8)).astype(np.float32), "weight")
    graph = helper.make_graph(
        [helper.make_node("Unsqueeze", ["waveform", "axis"], ["framed"]),
         helper.make_node("Conv", ["framed", "weight"], ["spectrum"], strides=[4]),
         helper.make_node("Log", ["spectrum"], ["logits"])], "not_a_dft",
        [helper.make_tensor_value_info("waveform", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)],
        initializer=[weight, onnx.numpy_helper.from_array(np.array([1], np.int64), "axis")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    before = model.SerializeToString()
    assert compute_dft_basis_in_graph(model) is False
    assert model.SerializeToString() == before


@pytest.mark.parametrize("rate", [16000, 44100])
def test_factored_dft_weights_are_computed_by_the_graph_and_match_pytorch(rate):
    """Both stages of the factored DFT are rebuilt by nodes: no stored weight of either stage's
    shape is left, and ONNX Runtime still gives PyTorch's log-mel (short clip, two of them)."""
    from models.frontend import FrontEndConfig, LogMelFrontEnd

    front_end = LogMelFrontEnd(FrontEndConfig.for_sample_rate(rate), stft_impl="factored").eval()
    samples = rate // 10
    proto = export_onnx(front_end, labels=[], sample_rate=rate, clip_samples=samples)
    stored = {tuple(t.dims) for t in proto.graph.initializer}
    assert tuple(front_end.dft.stage1.shape) not in stored
    assert tuple(front_end.dft.stage2.shape) not in stored
    assert sum(node.op_type == "Cos" for node in proto.graph.node) >= 3  # window + 2 stages
    waves = (np.random.default_rng(2).standard_normal((2, samples)) * 0.1).astype(np.float32)
    session = ort.InferenceSession(serialize(proto), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = front_end(torch.from_numpy(waves)).numpy()
    got = session.run(None, {"waveform": waves})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_fp32_model_carries_labels_rate_and_clip_length(fp32_bytes):
    meta = {p.key: p.value for p in onnx.load_from_string(fp32_bytes).metadata_props}
    assert meta["edgecl.sample_rate"] == str(SAMPLE_RATE)
    assert meta["edgecl.clip_samples"] == str(CLIP_SAMPLES)
    assert meta["edgecl.labels"] == '["low", "mid", "high", "top"]'


def test_export_rejects_an_opset_below_18():
    with pytest.raises(EdgeclError, match="opset"):
        export_onnx(trained_model(), labels=CLASSES, sample_rate=SAMPLE_RATE,
                    clip_samples=CLIP_SAMPLES, opset=17)


def _ancestors_of_first_log(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    producer = {out: node for node in model.graph.node for out in node.output}
    log = next(node for node in model.graph.node if node.op_type == "Log")
    seen, stack = [], [log]
    while stack:
        node = stack.pop()
        if any(node is s for s in seen):
            continue
        seen.append(node)
        stack.extend(producer[name] for name in node.input if name in producer)
    return seen


def test_int8_graph_is_quantized_but_keeps_the_front_end_in_float(int8_model):
    ops = [node.op_type for node in int8_model.graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > 0
    front_end = _ancestors_of_first_log(int8_model)
    assert {"Conv", "MatMul", "Log"} <= {node.op_type for node in front_end}
    assert not [n.name for n in front_end if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    # The front end computes in float: its only int8 constant is the stored mel filterbank, which
    # a Cast and a per-row scale turn back into float before the MatMul.
    initializers = {t.name: t for t in int8_model.graph.initializer}
    front_weights = [name for node in front_end for name in node.input if name in initializers]
    assert front_weights
    int8_weights = [name for name in front_weights
                    if initializers[name].data_type not in (TensorProto.FLOAT, TensorProto.INT64)]
    assert len(int8_weights) == 1 and initializers[int8_weights[0]].data_type == TensorProto.INT8
    [cast] = [node for node in front_end if int8_weights[0] in node.input]
    assert cast.op_type == "Cast"
    [rebuild] = [node for node in front_end if cast.output[0] in node.input]
    assert rebuild.op_type == "Mul"
    [mel] = [node for node in front_end if rebuild.output[0] in node.input]
    assert mel.op_type == "MatMul"
    # Downstream of the log, the first backbone Conv reads a dequantized activation.
    producer = {out: node for node in int8_model.graph.node for out in node.output}
    backbone_convs = [n for n in int8_model.graph.node
                      if n.op_type == "Conv" and all(n is not f for f in front_end)]
    assert producer[backbone_convs[0].input[0]].op_type == "DequantizeLinear"


def test_int8_graph_keeps_unfolded_batch_norms_and_their_convs_in_float(int8_model):
    """SubSpectralNorm's BatchNorm cannot be folded at export; it and its conv stay float."""
    producer = {out: node for node in int8_model.graph.node for out in node.output}
    initializers = {t.name: t for t in int8_model.graph.initializer}
    norms = [n for n in int8_model.graph.node if n.op_type == "BatchNormalization"]
    assert len(norms) == 9  # one per BC-ResNet block
    for norm in norms:
        assert all(name in initializers for name in norm.input[1:])  # float scale/bias, no DQ
        upstream = producer[norm.input[0]]
        while upstream.op_type == "Reshape":
            upstream = producer[upstream.input[0]]
        assert upstream.op_type == "Conv"
        assert initializers[upstream.input[1]].data_type == TensorProto.FLOAT
    quantized_convs = [n for n in int8_model.graph.node if n.op_type == "Conv"
                       and n.input[1] in producer
                       and producer[n.input[1]].op_type == "DequantizeLinear"]
    assert len(quantized_convs) > 20


def test_int8_quantization_is_deterministic(fp32_bytes):
    fp32 = onnx.load_from_string(fp32_bytes)
    calibration, _ = tones(16, seed=5)
    first = quantize_candidate(fp32, calibration, per_channel=True)
    second = quantize_candidate(fp32, calibration, per_channel=True)
    assert serialize(first.proto) == serialize(second.proto)
    per_tensor = quantize_candidate(fp32, calibration, per_channel=False)
    assert serialize(per_tensor.proto) != serialize(first.proto)
    assert first.weight_granularity == "per-channel"
    assert per_tensor.weight_granularity == "per-tensor"


@pytest.mark.parametrize("method", ["Percentile", "Entropy"])
def test_histogram_calibration_works_with_any_number_of_clips(fp32_bytes, method, capfd):
    """21 clips do not split into equal batches of 4: the histogram calibrators need them.
    Their progress chatter does not reach the run's output."""
    from firmware_export.quantize import QuantRecipe, WaveformReader

    calibration, _ = tones(21, seed=6)
    capfd.readouterr()
    candidate = quantize_candidate(onnx.load_from_string(fp32_bytes), calibration,
                                   recipe=QuantRecipe(calibration=method))
    printed = capfd.readouterr()
    assert printed.out == "" and "warning" not in printed.err.lower()
    assert candidate.recipe.calibration == method
    assert any(node.op_type == "QuantizeLinear" for node in candidate.proto.graph.node)
    batches = [batch["waveform"].shape for batch in iter(WaveformReader(calibration).get_next, None)]
    assert len(set(batches)) == 1 and sum(shape[0] for shape in batches) == 21


def test_calibration_takes_one_batch_a_pass_and_minmax_matches_a_single_pass(fp32_bytes,
                                                                             monkeypatch):
    """The calibrator is given one batch per pass (onnxruntime's CalibStridedMinMax), so the
    histogram calibrators never hold more than one batch's tensors; MinMax merges its passes'
    ranges exactly, so the int8 model equals the one calibrated in a single pass."""
    import firmware_export.quantize as quantize

    fp32 = onnx.load_from_string(fp32_bytes)
    calibration, _ = tones(32, seed=7)
    batches = 32 // quantize.CALIBRATION_BATCH
    assert batches > 1
    ranges: list[tuple[int, int]] = []
    set_range = quantize.WaveformReader.set_range

    def recording(self, start_index, end_index):
        ranges.append((start_index, end_index))
        set_range(self, start_index, end_index)

    monkeypatch.setattr(quantize.WaveformReader, "set_range", recording)
    strided = quantize_candidate(fp32, calibration, per_channel=True)
    assert ranges == [(i, i + 1) for i in range(batches)]
    monkeypatch.setattr(quantize, "CALIBRATION_STRIDE", batches)
    single = quantize_candidate(fp32, calibration, per_channel=True)
    assert ranges[batches:] == [(0, batches)]
    assert serialize(strided.proto) == serialize(single.proto)


def test_waveform_reader_range_limits_the_batches():
    from firmware_export.quantize import WaveformReader

    waveforms = np.arange(24, dtype=np.float32).reshape(12, 2)
    reader = WaveformReader(waveforms, batch_size=4)
    assert len(reader) == 3
    reader.set_range(1, 3)
    firsts = [batch["waveform"][0, 0] for batch in iter(reader.get_next, None)]
    assert firsts == [8.0, 16.0]


def test_streamed_activation_noise_equals_onnxruntimes_whole_set_figure(int8_model, tmp_path):
    """The sensitivity ranking's activation SQNR, summed batch by batch, is onnxruntime's
    `qdq_err` computed on every clip's tensors at once."""
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    from firmware_export.int8_search import qdq_activation_sqnr
    from firmware_export.quantize import WaveformReader

    onnx.save(int8_model, str(tmp_path / "int8.onnx"))
    augmented = str(tmp_path / "augmented.onnx")
    modify_model_output_intermediate_tensors(str(tmp_path / "int8.onnx"), augmented)
    clips, _ = tones(12, seed=8)
    matching = create_activation_matching(collect_activations(augmented, WaveformReader(clips)))
    for pair in matching.values():
        pair.setdefault("float", None)  # no float model: qdq_err alone is compared
    whole = compute_activation_error(matching)
    streamed = qdq_activation_sqnr(augmented, clips, batch_size=4)
    assert streamed.keys() == whole.keys() and len(streamed) > 10
    for name, figures in whole.items():
        assert streamed[name] == pytest.approx(figures["qdq_err"], abs=1e-3), name


def test_ranking_and_diagnosis_do_not_depend_on_how_many_clips_run_at_once(fp32_bytes,
                                                                            monkeypatch):
    """The sensitivity ranking and the layer-by-layer diagnosis sum over the clips, so running
    them one clip at a time (to hold fewer intermediate tensors) gives the batch-4 figures."""
    from firmware_export import int8_search
    from firmware_export.quantize import prepare_graph

    graph = prepare_graph(onnx.load_from_string(fp32_bytes))
    clips, _ = tones(10, seed=9)  # 10 clips: batches of 4 leave a short last one
    quantized = quantize_candidate(graph, clips, per_channel=False).proto
    logits = np.random.default_rng(0).normal(size=(10, len(CLASSES)))
    figures = {}
    for batch in (4, 1):
        monkeypatch.setattr(int8_search, "SENSITIVITY_BATCH", batch)
        figures[batch] = (int8_search.sensitivity_ranking(graph.source, quantized, clips),
                          int8_search.layer_report(graph.source, quantized, clips, logits))
    (ranking_4, report_4), (ranking_1, report_1) = figures[4], figures[1]
    assert ranking_1 == ranking_4 and len(ranking_1) > 3
    layers_4, layers_1 = (report.pop("layers_noisiest_first") for report in (report_4, report_1))
    share_4, share_1 = (report.pop("head_share_of_noise") for report in (report_4, report_1))
    assert report_1 == report_4 and share_1 == pytest.approx(share_4, abs=1.1e-4)
    assert [layer["node"] for layer in layers_1] == [layer["node"] for layer in layers_4]
    for one, four in zip(layers_1, layers_4, strict=True):
        assert one["weight_sqnr_db"] == four["weight_sqnr_db"]
        assert one["activation_sqnr_db"] == pytest.approx(four["activation_sqnr_db"], abs=0.011)
        assert one["noise_to_signal"] == pytest.approx(four["noise_to_signal"], rel=1e-6)


def test_quantizer_refuses_a_graph_without_a_log_front_end():
    graph = helper.make_graph(
        [helper.make_node("Relu", ["waveform"], ["logits"])], "no_front_end",
        [helper.make_tensor_value_info("waveform", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(EdgeclError, match="no Log node"):
        quantize_candidate(model, np.zeros((2, 4), np.float32), per_channel=False)


def _header_bytes(text: str) -> bytes:
    body = text.split("edgecl_model[", 1)[1].split("{", 1)[1].split("};", 1)[0]
    return bytes(int(h, 16) for h in re.findall(r"0x([0-9a-f]{2})", body))


def test_c_header_holds_the_int8_model_bytes_length_and_labels(bundle):
    text = (bundle.folder / "model.h").read_text()
    int8 = (bundle.folder / "model.int8.onnx").read_bytes()
    assert _header_bytes(text) == int8
    assert f"edgecl_model_len = {len(int8)}u;" in text
    assert "#define EDGECL_N_LABELS 4" in text and "#define EDGECL_SAMPLE_RATE 8000" in text
    assert '#define EDGECL_MODEL_PRECISION "int8"' in text
    assert text.index('"low"') < text.index('"mid"') < text.index('"high"') < text.index('"top"')


def test_c_string_escapes_quotes_backslashes_and_non_ascii():
    assert c_string('say "hi"\\') == '"say \\"hi\\"\\\\"'
    assert c_string("café") == '"caf\\303\\251"'
    assert c_string("??=") == '"\\077\\077="'


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_c_header_compiles_and_reports_its_contents(tmp_path):
    labels = ["dog", 'say "hi"', "café"]
    (tmp_path / "model.h").write_text(render_c_header(bytes(range(30)), labels, sample_rate=16000,
                                                      clip_samples=16000))
    (tmp_path / "main.c").write_text(
        '#include <stdio.h>\n#include "model.h"\nint main(void) {\n'
        '  unsigned sum = 0;\n'
        '  for (unsigned i = 0; i < edgecl_model_len; ++i) sum += edgecl_model[i];\n'
        '  printf("%u %u %d %s|%s|%s\\n", edgecl_model_len, sum, EDGECL_SAMPLE_RATE,\n'
        '         edgecl_labels[0], edgecl_labels[1], edgecl_labels[2]);\n  return 0;\n}\n')
    subprocess.run(["cc", "-std=c99", "-Wall", "-Werror", "-o", str(tmp_path / "main"),
                    str(tmp_path / "main.c")], check=True, capture_output=True)
    output = subprocess.run([str(tmp_path / "main")], check=True, capture_output=True).stdout
    assert output.decode("utf-8") == f"30 {sum(range(30))} 16000 dog|say \"hi\"|café\n"


def _write_tone_run(root, trained):
    """A run folder as `edgecl train` leaves it (results.json + phase_0/checkpoint.pt) on a tiny
    manifest dataset of tones whose classes arrive in the order the model was trained on."""
    import soundfile as sf

    from edgecl.config import RunConfig
    from edgecl.data import load_dataset
    from edgecl.tasks import make_tasks

    data = root / "data"
    data.mkdir()
    rows = ["path,label,split"]
    for name in CLASSES:
        for index in range(8):
            rows.append(f"{name}_{index}.wav,{name},{'test' if index >= 6 else 'train'}")
            sf.write(data / f"{name}_{index}.wav", np.zeros(CLIP_SAMPLES, np.float32), SAMPLE_RATE)
    (data / "manifest.csv").write_text("\n".join(rows) + "\n")
    config = RunConfig(dataset="manifest", data_root=str(data / "manifest.csv"), clip_seconds=0.5,
                       n_tasks=2, n_init_cls=2, n_cls_a_task=2, workspace=str(root),
                       exp_name="run", mem_manage="random")
    split = load_dataset("manifest", config.data_root, seed=config.seed, clip_seconds=0.5)
    plan = make_tasks(split, 2, 2, 2, config.seed)
    # Audio content does not change the plan: give class plan.class_order[i] the pitch of output i.
    waves, targets = tones(8 * len(CLASSES), seed=21)
    for name in CLASSES:
        pitch = plan.class_order.index(name)
        for index, wave in enumerate(waves[targets == pitch]):
            sf.write(data / f"{name}_{index}.wav", wave, SAMPLE_RATE, subtype="FLOAT")
    run = root / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"config": config.to_dict(),
                                                  "classes": plan.class_order}))
    (run / "phase_1").mkdir()
    torch.save({"state_dict": trained.state_dict(), "model_config": trained.model_config(),
                "classes": plan.class_order, "phase": 1, "exp_name": "run"},
               run / "phase_1" / "checkpoint.pt")
    return run, plan


def test_export_command_rebuilds_bundles_from_checkpoints(tmp_path, fp32_bytes, monkeypatch):
    from click.testing import CliRunner

    import firmware_export.bundle as bundle_module
    from edgecl.cli import main
    from firmware_export.device.manifest import verify_bundle
    from firmware_export.export import set_runtime_metadata

    run, plan = _write_tone_run(tmp_path, trained_model())

    def reuse_export(model, *, labels, sample_rate, clip_samples):
        """The dynamo export of these weights is tested above; reuse its graph to stay fast."""
        proto = onnx.load_from_string(fp32_bytes)
        set_runtime_metadata(proto, labels, sample_rate, clip_samples)
        return proto

    monkeypatch.setattr(bundle_module, "export_onnx_in_child", reuse_export)
    runner = CliRunner()
    result = runner.invoke(main, ["export", str(run), "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "export phase 1" in result.output and "exported 1 phase(s)" in result.output
    # the phase's cost: its wall time and peak resident memory
    assert re.search(r"export phase 1: \d+ s \(\d+ s CPU\), peak RSS \d[\d.]* [KMG]B in '.+'",
                     result.output)
    manifest = verify_bundle(run / "phase_1")
    assert manifest["classes"] == plan.class_order and manifest["phase"] == 1
    # Every held-out clip of the run: the test clips and the validation clips (one per class).
    assert manifest["parity"]["holdout"] == {"validation": len(CLASSES), "test": 2 * len(CLASSES)}
    assert manifest["parity"]["holdout_clips"] == 3 * len(CLASSES)
    assert manifest["artifacts"]["int8"]["parity_vs_fp32"]["batch_1"]["accuracy"] == 100.0
    assert (run / "phase_1" / "checkpoint.pt").is_file()
    first = {p.name: p.read_bytes() for p in (run / "phase_1").iterdir()}
    assert runner.invoke(main, ["export", str(run), "--phase", "1"]).exit_code == 0
    second = {p.name: p.read_bytes() for p in (run / "phase_1").iterdir()}
    assert second.keys() == first.keys()
    assert all(second[name] == first[name] for name in first if name != "manifest.json")
    # PyTorch eager logits may differ in the last bits between runs; everything else is stable.
    first_manifest, second_manifest = (json.loads(m["manifest.json"]) for m in (first, second))
    for manifest_copy in (first_manifest, second_manifest):
        manifest_copy["artifacts"]["fp32"].pop("parity_vs_torch")
        manifest_copy.pop("provenance")  # how each export was made (its command line differs)
    assert first_manifest == second_manifest

    monkeypatch.setattr("firmware_export.parity.FP32_MAX_ABS_DIFF", -1.0)  # unmeetable
    failed = runner.invoke(main, ["export", str(run)])
    assert failed.exit_code == 2
    assert "fp32 vs torch batch_1: max abs logit diff" in failed.output
    assert "phase(s) 1 missed the fp32 parity bound" in failed.output
    assert {p.name: p.read_bytes() for p in (run / "phase_1").iterdir()} == second  # untouched

    from edgecl.run_owner import RunLock

    lock = RunLock(run)  # as a train still writing the run would hold it
    busy = runner.invoke(main, ["export", str(run)])
    lock.release()
    assert busy.exit_code == 2 and "another edgecl train or export is writing" in busy.output
    assert {p.name: p.read_bytes() for p in (run / "phase_1").iterdir()} == second

    limited = runner.invoke(main, ["export", str(run), "--arena-limit", "256KB"])
    assert limited.exit_code == 2 and "--arena-limit/--flash-limit: only used with --target " \
        "tflm (the export's target is onnx)" in limited.output
    bad_size = runner.invoke(main, ["export", str(run), "--flash-limit", "big"])
    assert bad_size.exit_code == 2 and "--flash-limit: expected a byte size" in bad_size.output
    assert {p.name: p.read_bytes() for p in (run / "phase_1").iterdir()} == second

    missing = runner.invoke(main, ["export", str(run), "--phase", "0"])
    assert missing.exit_code == 2 and "no phase_0/checkpoint.pt" in missing.output
    (run / "results.json").unlink()
    no_results = runner.invoke(main, ["export", str(run)])
    assert no_results.exit_code == 2 and "results.json: not found" in no_results.output


def test_bench_export_reports_sizes_macs_and_latencies(bundle, tmp_path):
    from click.testing import CliRunner

    from edgecl.cli import main

    run = tmp_path / "run"
    shutil.copytree(bundle.folder, run / "phase_0")
    result = CliRunner().invoke(main, ["bench", "export", str(run), "--runs", "3", "--warmup", "1",
                                       "--no-stft-compare", "--json"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.output)["phases"]
    fp32 = (bundle.folder / "model.onnx").stat().st_size
    int8 = (bundle.folder / "model.int8.onnx").stat().st_size
    assert row["fp32_kib"] == round(fp32 / 1024, 1)
    assert row["int8_ratio"] == round(int8 / fp32, 3)
    assert row["mmacs"] == round(bundle.manifest["model"]["macs_per_clip"] / 1e6, 2)
    assert row["torch_ms"] is None  # no checkpoint beside this bundle
    assert row["ort_fp32_ms"] > 0 and row["ort_int8_ms"] > 0
    assert row["frontend_share_fp32"] == pytest.approx(row["frontend_ms"] / row["ort_fp32_ms"],
                                                       rel=0.02)
    empty = CliRunner().invoke(main, ["bench", "export", str(tmp_path)])
    assert empty.exit_code == 2 and "no phase_<i>/manifest.json bundle" in empty.output
