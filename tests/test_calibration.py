"""Percentile and Entropy calibration streamed batch by batch (firmware_export.calibration): the
ranges equal those onnxruntime's histogram collector computes from every clip's tensors at once."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import onnx
import pytest
from export_helpers import (
    exported_bundle,
    one_thread,  # noqa: F401 (module-wide fixture)
    tones,
)

from firmware_export.calibration import HISTOGRAM_METHODS, histogram_ranges
from firmware_export.quantize import (
    QuantRecipe,
    WaveformReader,
    prepare_graph,
    quantize_candidate,
    read_tensors,
)

pytestmark = pytest.mark.filterwarnings("ignore")
BATCH = 4


@pytest.fixture(scope="module")
def fp32() -> onnx.ModelProto:
    """The shared test bundle's fp32 model (a small BC-ResNet, exported once per session)."""
    return onnx.load_from_string((exported_bundle().folder / "model.onnx").read_bytes())


@pytest.fixture(scope="module")
def prepared_path(fp32, tmp_path_factory):
    path = tmp_path_factory.mktemp("calibration") / "prepared.onnx"
    onnx.save(prepare_graph(fp32).prepared, str(path))
    return path


def _collector_ranges(path, method: str, clips: np.ndarray, folder, *, at_once: bool):
    """onnxruntime's calibrator and histogram collector on the tensors of batches of BATCH
    clips: given every batch's tensors in one collect call (at_once), or one batch a call."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    calibrator = create_calibrator(path, list(set(QLinearOpsRegistry) | set(QDQRegistry)),
                                   augmented_model_path=str(folder / "augmented.onnx"),
                                   calibrate_method=getattr(CalibrationMethod, method))
    session = calibrator.infer_session
    names = [output.name for output in session.get_outputs()]
    wanted = [i for i, name in enumerate(names) if name in calibrator.tensors_to_calibrate]
    per_batch = [session.run(None, batch) for batch in iter(
        WaveformReader(clips, BATCH).get_next, None)]
    calls = ([[np.concatenate([outputs[i].ravel() for outputs in per_batch]) for i in wanted]]
             if at_once else [[outputs[i] for i in wanted] for outputs in per_batch])
    with contextlib.redirect_stdout(io.StringIO()):
        for tensors in calls:
            calibrator.collect_data(_Given(names, wanted, tensors))
        return calibrator.compute_data()


class _Given:
    """Stands in for a data reader: collect_data then runs the given tensors, not the model."""

    def __init__(self, names, wanted, tensors):
        self.names, self.wanted, self.tensors = names, wanted, tensors


def _ranges(data) -> dict[str, tuple[float, float]]:
    return {name: tuple(float(v) for v in value.range_value) for name, value in data.items()}


@pytest.fixture
def collect_given(monkeypatch):
    """HistogramCalibrater.collect_data fed the tensors of a _Given (the same values for the
    streamed calibration and the reference: onnxruntime's results vary by batch size in the
    last bits)."""
    from onnxruntime.quantization.calibrate import HistogramCalibrater, HistogramCollector

    def collect_data(self, given):
        if self.collector is None:
            self.collector = HistogramCollector(
                method=self.method, symmetric=self.symmetric, num_bins=self.num_bins,
                num_quantized_bins=self.num_quantized_bins, percentile=self.percentile,
                scenario=self.scenario)
        self.collector.collect({given.names[i]: [tensor]
                                for i, tensor in zip(given.wanted, given.tensors, strict=True)})

    monkeypatch.setattr(HistogramCalibrater, "collect_data", collect_data)


@pytest.mark.parametrize("method", HISTOGRAM_METHODS)
def test_streamed_histogram_ranges_equal_the_collectors_on_all_clips_at_once(
        method, prepared_path, tmp_path, collect_given):
    clips, _ = tones(24, seed=11)
    streamed = _ranges(histogram_ranges(prepared_path, method, WaveformReader(clips, BATCH),
                                        tmp_path))
    at_once = _ranges(_collector_ranges(prepared_path, method, clips, tmp_path, at_once=True))
    assert streamed == at_once
    # onnxruntime's own batch-by-batch merge takes its bins from the first batch: it differs
    by_batch = _ranges(_collector_ranges(prepared_path, method, clips, tmp_path, at_once=False))
    assert by_batch != at_once


@pytest.mark.parametrize("method", HISTOGRAM_METHODS)
def test_histogram_candidates_are_quantized_with_the_streamed_ranges(method, fp32, tmp_path):
    from onnxruntime.quantization.calibrate import load_tensors_data

    clips, _ = tones(16, seed=12)
    graph = prepare_graph(fp32)
    candidate = quantize_candidate(graph, clips, recipe=QuantRecipe(calibration=method),
                                   cache_dir=tmp_path)
    onnx.save(graph.prepared, str(tmp_path / "prepared.onnx"))
    expected = histogram_ranges(tmp_path / "prepared.onnx", method, WaveformReader(clips),
                                tmp_path, only=read_tensors(graph))
    cached = load_tensors_data(tmp_path / f"ranges-{method}.json")
    assert _ranges(cached) == _ranges(expected)
    assert json.loads(json.dumps(candidate.recipe.describe()))["calibration"] == method


class _CountingReader(WaveformReader):
    """Counts the passes over the clips (each pass starts with set_range)."""

    passes = 0

    def set_range(self, start_index: int, end_index: int) -> None:
        self.passes += 1
        super().set_range(start_index, end_index)


def test_the_second_histogram_method_reuses_the_first_ones_extremes(prepared_path, tmp_path):
    clips, _ = tones(12, seed=13)
    kept = tmp_path / "extremes.pickle"
    first = _CountingReader(clips, BATCH)
    histogram_ranges(prepared_path, "Percentile", first, tmp_path, extremes_file=kept)
    second = _CountingReader(clips, BATCH)
    shared = histogram_ranges(prepared_path, "Entropy", second, tmp_path, extremes_file=kept)
    alone = _CountingReader(clips, BATCH)
    expected = histogram_ranges(prepared_path, "Entropy", alone, tmp_path)
    assert (first.passes, second.passes, alone.passes) == (2, 1, 2)
    assert _ranges(shared) == _ranges(expected)


@pytest.mark.parametrize("method", HISTOGRAM_METHODS)
def test_histogram_candidates_calibrate_only_the_tensors_a_candidate_reads(
        method, fp32, tmp_path, monkeypatch):
    """Calibrating only the quantizable nodes' tensors leaves every candidate the same bytes,
    a mixed one (more nodes in float) included, while the float nodes' own tensors (the front
    end's, the unfolded norms') go uncalibrated."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    from firmware_export import quantize

    clips, _ = tones(8, seed=14)
    graph = prepare_graph(fp32)
    compute = [n.name for n in graph.prepared.graph.node
               if n.op_type == "Conv" and n.name not in graph.always_float]
    recipes = [QuantRecipe(calibration=method),
               QuantRecipe(calibration=method, float_nodes=(compute[0],))]

    def built(cache):
        cache.mkdir()
        protos = [quantize_candidate(graph, clips, recipe=recipe, cache_dir=cache).proto
                  for recipe in recipes]
        return ([proto.SerializeToString() for proto in protos],
                set(load_tensors_data(cache / f"ranges-{method}.json").keys()))

    restricted, calibrated = built(tmp_path / "restricted")
    unread = {name for node in graph.prepared.graph.node if node.name in graph.always_float
              for name in node.output} - read_tensors(graph)
    every = {name for node in graph.prepared.graph.node for name in (*node.input, *node.output)}
    monkeypatch.setattr(quantize, "read_tensors", lambda _graph: every)
    unrestricted, all_calibrated = built(tmp_path / "all")
    assert restricted == unrestricted
    assert calibrated < all_calibrated
    assert unread and not calibrated & unread
