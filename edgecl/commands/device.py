"""`edgecl device`: a deployed bundle keeps learning (fit its state, learn, forget, show)."""

from __future__ import annotations

import json

import click

from edgecl.errors import EdgeclError
from edgecl.limits import INT_RANGES, MAX_ANALYTIC_EXPANSION, option_range


@click.group("device", short_help="A deployed bundle learns and forgets classes (no torch).")
def device() -> None:
    """Teach a deployed bundle new sounds, or make it forget some, without a host or torch.

    The bundle's head becomes an analytic one: ridge regression on the frozen embedding, updated
    by recursive least squares (no gradient, no stored recordings), equal to the joint solution
    on everything learnt, whatever the order. Every exported bundle carries its state (fit by
    the exporter on the clips its phase trained on); `fit` refits it on the host (other clips, an
    expansion); `learn` and `forget` then write a new bundle version beside it
    (BUNDLE.v1, BUNDLE.v2, ...) whose device model `edgecl infer` runs; the version read is left
    untouched. Runs on numpy, soundfile and ONNX Runtime.
    """


def _threads():
    return click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
                        callback=option_range(*INT_RANGES["threads"]),
                        help="ONNX Runtime intra-op threads for the embeddings.")


def _out():
    return click.option("--out", type=click.Path(file_okay=False), default=None,
                        help="Folder of the new version [BUNDLE's name with .v<N>, N the "
                             "state's new version, beside it].")


def _report(verb: str, folder, manifest: dict) -> None:
    section = manifest["analytic"]
    counts = ", ".join(f"{label} {n}" for label, n in zip(section["classes"],
                                                          section["clips_per_class"], strict=True))
    learnt_head = manifest.get("tflm", {}).get("learnt_head")
    tflm = (f"; TFLM: the embedding model and the head in C, state in {learnt_head['state']}"
            if learnt_head else "")
    click.echo(f"{verb}: wrote version {section['version']} to {folder} ({counts}; state "
               f"{section['state_bytes_fp32']} bytes fp32{tflm})")


@device.command("fit", short_help="Give a bundle its analytic state (host side).")
@click.argument("bundle", type=click.Path(file_okay=False))
@click.argument("clips_csv", type=click.Path(dir_okay=False))
@click.option("--split", default="train", show_default=True,
              help="Rows of CLIPS_CSV whose split column is this (all rows when it has none).")
@click.option("--holdout-split", default=None,
              help="Also report the analytic and the trained head's accuracy on these rows.")
@click.option("--gamma", type=float, default=None,
              help="Ridge regulariser [chosen on a held-out fifth of the clips].")
@click.option("--weighting", type=click.Choice(["balanced", "boosted", "off"]),
              default="boosted", show_default=True,
              help="balanced: the clips of a learnt class weigh as much together as an average "
                   "class's (so 5 clips are not drowned by 200 per old class); boosted: a class "
                   "with fewer clips than the average weighs more (balanced's weight to the "
                   "power 1.25), as a ridge fit on few clips under-scores clips it has not seen.")
@click.option("--class-limit", type=click.IntRange(min=2, max=4096), default=32,
              show_default=True, help="Most classes the bundle may hold (sizes the C buffers).")
@click.option("--expansion", type=click.IntRange(min=0, max=MAX_ANALYTIC_EXPANSION), default=0,
              show_default=True,
              help="Width of a fixed random ReLU expansion of the standardised embedding before "
                   "the head (0 = none; the C update does not run one).")
@click.option("--seed", type=click.IntRange(min=0, max=2**32 - 1), default=0, show_default=True,
              help="Draws the expansion's projection and gamma's held-out fifth.")
@_threads()
def fit_command(bundle: str, clips_csv: str, split: str, holdout_split: str | None,
                gamma: float | None, weighting: str, class_limit: int, expansion: int, seed: int,
                threads: int) -> None:
    """Give BUNDLE its analytic state (host side), fit to the clips of CLIPS_CSV (path,label
    [,split], paths relative to the CSV) whose label is a class of the bundle: the clips its
    phase trained on. The bundle is rewritten in place; its device model stays the trained one
    until the first `learn`."""
    from pathlib import Path

    from edgecl.data.records import listed_path, read_table
    from firmware_export.device.learn import fit_bundle_state
    from firmware_export.device.manifest import read_manifest

    if gamma is not None and not 0 < gamma < 1e12:
        raise EdgeclError(f"--gamma: expected a positive number, got {gamma:g}")
    classes = set(read_manifest(bundle)["classes"])
    csv_path = Path(clips_csv)
    rows = read_table(csv_path, ",", ("path", "label"))

    def chosen(name: str | None) -> tuple[list, list[str]]:
        picked = [row for row in rows if row["label"] in classes
                  and (name is None or row.get("split", name) == name)]
        return ([listed_path(csv_path.parent, row["path"], str(csv_path)) for row in picked],
                [row["label"] for row in picked])

    clips, labels = chosen(split)
    if not clips:
        raise EdgeclError(f"{csv_path}: no rows of split {split!r} with a class of {bundle}")
    holdout = chosen(holdout_split) if holdout_split else None
    manifest = fit_bundle_state(bundle, clips, labels, gamma=gamma, weighting=weighting,
                                class_limit=class_limit, holdout=holdout, threads=threads,
                                log=click.echo, expansion=expansion, seed=seed)
    accuracy = manifest["analytic"].get("holdout_accuracy")
    if accuracy:
        click.echo(f"held-out accuracy on {accuracy['clips']} clips: analytic head "
                   f"{accuracy['analytic_head']:.3f}, trained head {accuracy['trained_head']:.3f}")


@device.command("learn", short_help="Learn clips as a new or known class: a new version.")
@click.argument("bundle", type=click.Path(file_okay=False))
@click.argument("clips", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--label", required=True, help="The class the clips are (new or known).")
@_out()
@_threads()
def learn_command(bundle: str, clips: tuple[str, ...], label: str, out: str | None,
                  threads: int) -> None:
    """Learn CLIPS (WAV, any rate) as --label: a new class or more of a known one. Writes a new
    bundle version; refuses a bundle without an analytic state, a state of another bundle or an
    edited one, a clip already learnt, and a class past the bundle's class limit."""
    from firmware_export.device.learn import learn_bundle

    folder, manifest = learn_bundle(bundle, label, list(clips), out=out, threads=threads)
    _report("learn", folder, manifest)


@device.command("forget", short_help="Forget a class or clips exactly: a new version.")
@click.argument("bundle", type=click.Path(file_okay=False))
@click.argument("clips", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--label", default=None, help="Forget every clip of this class (and the class).")
@click.option("--clips", "by_clips", is_flag=True,
              help="Forget the CLIPS given (WAV files, identified by their sha256).")
@_out()
def forget_command(bundle: str, clips: tuple[str, ...], label: str | None, by_clips: bool,
                   out: str | None) -> None:
    """Take back out what BUNDLE learnt: a whole class (--label NAME), or some clips (--clips
    CLIP..., of --label when both are given), by the exact downdate: the result equals never
    having learnt them. Works for the classes of the host fit too. Writes a new bundle version."""
    from firmware_export.device.learn import forget_bundle

    if bool(clips) != by_clips:
        raise EdgeclError("edgecl device forget: give the clips after --clips (--clips CLIP...), "
                          "or --label NAME alone")
    folder, manifest = forget_bundle(bundle, label=label, clips=list(clips), out=out)
    _report("forget", folder, manifest)


@device.command("show", short_help="Print a bundle's analytic state and lineage.")
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest's analytic section.")
def show_command(bundle: str, as_json: bool) -> None:
    """Print BUNDLE's analytic state (verified): classes, clips, gamma, bytes and lineage."""
    from pathlib import Path

    from firmware_export.device.analytic_state import read_state
    from firmware_export.device.manifest import verify_bundle

    manifest = verify_bundle(bundle)
    state = read_state(Path(bundle), manifest)
    section = state.summary()
    if as_json:
        click.echo(json.dumps(section, indent=2))
        return
    click.echo(f"{bundle}: version {section['version']}, device model "
               f"{manifest['device_model']}, gamma {section['gamma']:g}, weighting "
               f"{section['weighting']}, D {section['dim']}, state {section['state_bytes_fp32']} "
               f"bytes fp32, class limit {section['class_limit']}")
    for label, n, mass in zip(section["classes"], section["clips_per_class"],
                              section["mass_per_class"], strict=True):
        click.echo(f"  {label}: {n} clips, mass {mass:g}")
    for step in section["lineage"]:
        source = f" from version {step['from']['version']}" if step["from"] else ""
        click.echo(f"  v{step['version']} {step['at'] or 'at export'} {step['action']} "
                   f"{step['label'] or ''} ({len(step['clips'])} clips){source}")
