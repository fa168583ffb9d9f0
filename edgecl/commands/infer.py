"""`edgecl infer MODEL.onnx CLIP.wav ...`: top-k labels per clip with ONNX Runtime, no torch."""

from __future__ import annotations

import json

import click

from edgecl.limits import INT_RANGES, option_range


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
@click.option("--json", "as_json", is_flag=True, help="Print the predictions as JSON.")
def infer_command(model: str, clips: tuple[str, ...], top_k: int, threads: int, bare: bool,
                  as_json: bool) -> None:
    """Classify WAV clips with an exported model: a bundle folder (WORKSPACE/RUN/phase_<i>, which
    runs the model the bundle ships for devices: int8 when it met its parity rule, else fp32) or
    a model file (model.onnx or model.int8.onnx).

    In a bundle the manifest's sha256 of every file is checked first and the labels come from
    labels.json. Clips at another sample rate are resampled; longer clips are cropped and
    shorter ones zero-padded to the model's clip length. Runs on numpy, soundfile and ONNX
    Runtime only.
    """
    from firmware_export.device.runtime import classify, load_model

    loaded = load_model(model, threads=threads, bare=bare)
    predictions = classify(loaded, clips, top_k=top_k)
    if as_json:
        click.echo(json.dumps({"model": str(loaded.path), "labels": loaded.labels,
                               "sample_rate": loaded.sample_rate,
                               "results": [p.to_dict() for p in predictions]}, indent=2))
        return
    for prediction in predictions:
        ranked = ", ".join(f"{label} {score:.3f}"
                           for label, score in zip(prediction.labels, prediction.scores))
        click.echo(f"{prediction.clip}: {ranked}")
