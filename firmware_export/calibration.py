"""Percentile and Entropy calibration streamed batch by batch, exact to onnxruntime's method.

onnxruntime's histogram calibrators take their bins from the first batch they see and widen them
at that bin width when a later batch reaches further, so a calibration fed in batches depends on
the batching (and the Percentile one drops values below the first batch's smallest |x|). Here the
bins are fixed and stated: the ones onnxruntime's calibrator uses when it sees every clip in one
batch,

- Percentile (on |x|): 2048 bins evenly over [min |x|, max |x|] of all calibration clips;
- Entropy: 128 bins evenly over [-t, t], t = max |x| of all calibration clips.

A first pass over the batches finds each tensor's min, max and |x| extremes (kept for the other
method: the second histogram method of a search makes one pass); a second adds each batch's
counts in the fixed bins. A count is a per-element decision, so the summed histograms,
and the ranges onnxruntime's own HistogramCollector computes from them, equal those of the
one-batch calibration exactly, while only one batch's tensors are held at a time.
"""

from __future__ import annotations

import contextlib
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

HISTOGRAM_METHODS = ("Percentile", "Entropy")


def histogram_ranges(model_path: Path, method: str, batches, folder: Path,
                     extremes_file: Path | None = None, only: set[str] | None = None):
    """onnxruntime TensorsData of `method` (Percentile or Entropy) for the model at
    `model_path`, calibrated on `batches` (a WaveformReader, read twice) with the fixed bins
    of the module doc. `folder` holds the augmented model. `extremes_file` keeps the first
    pass's extremes: a second method calibrating the same model on the same clips reads them
    there and makes one pass only (the extremes do not depend on the method). With `only`,
    of the tensors onnxruntime would calibrate just those named there are (the model runs
    with only them as extra outputs)."""
    from onnxruntime.quantization.calibrate import HistogramCollector

    calibrator = _calibrator(model_path, method, folder, only)
    on_magnitude = calibrator.method == "percentile" and calibrator.symmetric
    tensors = set(calibrator.tensors_to_calibrate)
    extremes = _kept_extremes(extremes_file, tensors)
    if extremes is None:
        extremes = tensor_extremes(_tensors(calibrator.infer_session, batches, tensors))
        if extremes_file is not None:
            extremes_file.write_bytes(pickle.dumps(extremes))
    histograms: dict[str, list[Any]] = {}
    for name, values in _tensors(calibrator.infer_session, batches, tensors):
        low, high = _bins_range(extremes[name], on_magnitude)
        counts, edges = np.histogram(np.absolute(values) if on_magnitude else values,
                                     bins=calibrator.num_bins, range=(low, high))
        if name in histograms:
            histograms[name][0] += counts
        else:
            histograms[name] = [counts, edges.astype(values.dtype)]
    collector = HistogramCollector(method=calibrator.method, symmetric=calibrator.symmetric,
                                   num_bins=calibrator.num_bins,
                                   num_quantized_bins=calibrator.num_quantized_bins,
                                   percentile=calibrator.percentile,
                                   scenario=calibrator.scenario)
    for name, (counts, edges) in histograms.items():
        entry = (counts, edges, extremes[name][0], extremes[name][1])
        # Entropy's histograms also carry their threshold t, the upper end of the bins
        collector.histogram_dict[name] = (entry if on_magnitude else
                                          (*entry, _bins_range(extremes[name], False)[1]))
    calibrator.collector = collector
    with contextlib.redirect_stdout(io.StringIO()):  # its progress prints
        return calibrator.compute_data()


def _calibrator(model_path: Path, method: str, folder: Path, only: set[str] | None):
    """onnxruntime's calibrator of `method` for the model, as create_calibrator makes it (the
    op types quantize_static calibrates when none are named, the method's default bins),
    restricted to the tensors in `only` before it adds them to the model's outputs."""
    from onnxruntime.quantization.calibrate import EntropyCalibrater, PercentileCalibrater
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    kind, settings = {
        "Percentile": (PercentileCalibrater, {"symmetric": True, "num_bins": 2048,
                                              "percentile": 99.999}),
        "Entropy": (EntropyCalibrater, {"symmetric": False, "num_bins": 128,
                                        "num_quantized_bins": 128}),
    }[method]
    calibrator = kind(model_path, list(set(QLinearOpsRegistry) | set(QDQRegistry)),
                      augmented_model_path=str(folder / "augmented.onnx"), **settings)
    if only is not None:
        select = calibrator.select_tensors_to_calibrate

        def selected(model):
            tensors, value_infos = select(model)
            return tensors & only, value_infos

        calibrator.select_tensors_to_calibrate = selected  # type: ignore[method-assign]
    calibrator.augment_graph()
    calibrator.create_inference_session()
    return calibrator


def tensor_extremes(tensors) -> dict[str, np.ndarray]:
    """Per tensor of (name, values) batches: its min, max, min |x| and max |x| over them all."""
    extremes: dict[str, np.ndarray] = {}
    for name, values in tensors:
        magnitudes = np.absolute(values)
        found = np.array([np.nanmin(values), np.nanmax(values), np.nanmin(magnitudes),
                          np.nanmax(magnitudes)], dtype=values.dtype)
        lows = np.minimum(extremes.get(name, found), found)
        highs = np.maximum(extremes.get(name, found), found)
        extremes[name] = np.array([lows[0], highs[1], lows[2], highs[3]], dtype=values.dtype)
    return extremes


def _kept_extremes(path: Path | None, tensors: set[str]) -> dict[str, np.ndarray] | None:
    """The extremes an earlier calibration kept at `path`, when they cover `tensors`."""
    if path is None or not path.is_file():
        return None
    kept = pickle.loads(path.read_bytes())  # written by this module in the search's own folder
    return kept if tensors <= set(kept) else None


def _tensors(session, batches, wanted: set[str]):
    """(name, values flattened) of every wanted output of every batch, batch by batch."""
    names = [output.name for output in session.get_outputs()]
    batches.set_range(0, len(batches))
    for inputs in iter(batches.get_next, None):
        for name, values in zip(names, session.run(None, inputs), strict=True):
            if name in wanted:
                yield name, np.asarray(values).ravel()


def _bins_range(extremes: np.ndarray, on_magnitude: bool) -> tuple[Any, Any]:
    """The bins' ends from a tensor's (min, max, min |x|, max |x|) over all clips, as the
    calibrator computes them on one batch holding every clip (scalars of the tensor's type)."""
    if on_magnitude:
        return extremes[2], extremes[3]
    threshold = np.array(max(abs(extremes[0]), abs(extremes[1])), dtype=extremes.dtype)
    return -threshold, threshold
