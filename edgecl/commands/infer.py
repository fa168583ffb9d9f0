"""`edgecl infer MODEL.onnx CLIP.wav ...`: top-k labels per clip with ONNX Runtime, no torch."""

from __future__ import annotations

import click

from edgecl.errors import EdgeclError
from edgecl.fileio import json_text
from edgecl.limits import INT_RANGES, option_range
from edgecl.targets import TARGETS


@click.command("infer")
@click.argument("model", type=click.Path())
@click.argument("clips", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--top-k", type=click.IntRange(min=1), default=3, show_default=True,
              callback=option_range(1, 100_000),
              help="Labels printed per clip.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              callback=option_range(*INT_RANGES["threads"]),
              help="ONNX Runtime intra-op threads.")
@click.option("--bare", is_flag=True,
              help="Run a model file on its own, without its bundle's manifest.json: nothing is "
                   "verified and the model's metadata names its labels, rate and clip length.")
@click.option("--target", type=click.Choice(TARGETS), default="onnx", show_default=True,
              help="tflm: run the bundle's int8 TFLM model in TFLM's own interpreter, fed by the "
                   "numpy twin of the bundle's C front end (needs pip install 'edgecl[tflm]').")
@click.option("--json", "as_json", is_flag=True, help="Print the predictions as JSON.")
def infer_command(model: str, clips: tuple[str, ...], top_k: int, threads: int, bare: bool,
                  target: str, as_json: bool) -> None:
    """Classify WAV clips with an exported model: a bundle folder (WORKSPACE/RUN/phase_<i>, which
    runs the model the bundle ships for devices: int8 when it met its parity rule, else fp32) or
    a model file (model.onnx or model.int8.onnx).

    In a bundle the manifest's sha256 of every file is checked first and the labels come from
    labels.json. Clips at another sample rate are resampled; longer clips are cropped and
    shorter ones zero-padded to the model's clip length. Runs on numpy, soundfile and ONNX
    Runtime only.

    With --target tflm, MODEL is a bundle folder exported with --target tflm: after the sha256
    check its model.tflm.tflite runs in the TFLM interpreter (tflite-micro) on the log-mel the
    bundle's C front end computes (its numpy twin), one clip at a time; no torch either.
    """
    from firmware_export.device.runtime import classify, load_model

    if target == "tflm":
        if bare:
            raise EdgeclError("--bare: not used with --target tflm (the bundle's manifest holds "
                              "the model's arena size and front end, and is always verified)")
        from firmware_export.device.tflm_runtime import load_tflm_bundle

        loaded = load_tflm_bundle(model)
    else:
        loaded = load_model(model, threads=threads, bare=bare)
    predictions = classify(loaded, clips, top_k=top_k)
    if as_json:
        click.echo(json_text({"model": str(loaded.path), "labels": loaded.labels,
                               "sample_rate": loaded.sample_rate,
                               "results": [p.to_dict() for p in predictions]}))
        return
    for prediction in predictions:
        ranked = ", ".join(f"{label} {score:.3f}"
                           for label, score in zip(prediction.labels, prediction.scores,
                                                   strict=True))
        click.echo(f"{prediction.clip}: {ranked}")
