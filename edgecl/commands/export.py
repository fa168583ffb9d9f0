"""`edgecl export RUN_DIR [--phase N]`: rebuild the device bundles of a run from its checkpoints."""

from __future__ import annotations

import click

from edgecl.commands.options import click_option, run_option
from edgecl.limits import INT_RANGES, option_range
from edgecl.targets import TARGETS, part_help, part_limits


@click.command("export")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--phase", type=click.IntRange(min=0), default=None,
              help="Export only this phase [every phase with a checkpoint].")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True,
              callback=option_range(*INT_RANGES["threads"]),
              help="PyTorch CPU threads.")
@click.option("--target", type=click.Choice(TARGETS), default=None,
              help="onnx: fp32 and int8 ONNX; tflm: those plus the int8 TFLM build (needs "
                   "pip install 'edgecl[tflm]') [the run's own --target].")
@click.option("--tflm-window-seconds", type=float, default=None, metavar="SECONDS",
              help="Window of the TFLM build: the device runs the model on windows of this "
                   "length and averages their logits over the clip; 0 = the whole clip. [the "
                   "run's own; else auto: 1 s windows for clips longer than 1 s]")
@click.option("--data-root", type=click.Path(), default=None,
              help="Where the run's dataset is now, when it moved since training; accepted when "
                   "its clips match the ones the run recorded, and recorded [the run's own].")
@click.option("--arena-limit", default=None, metavar="SIZE",
              help="Most TFLM arena bytes the part gives the model (256KB, 256KiB); a build over "
                   "it is withheld (--target tflm) [the run's own].")
@click.option("--flash-limit", default=None, metavar="SIZE",
              help="Most TFLM flatbuffer bytes the part gives the model (1MB); a build over it "
                   "is withheld (--target tflm) [the run's own].")
@click_option(run_option("part"), help=part_help() + " [the run's own limits]")
@click.option("--quiet", is_flag=True, help="No progress bars or progress lines on stderr.")
def export_command(run_dir: str, phase: int | None, threads: int, target: str | None,
                   tflm_window_seconds: float | None, data_root: str | None,
                   arena_limit: str | None, flash_limit: str | None, part: str | None,
                   quiet: bool) -> None:
    """Re-export WORKSPACE/EXP_NAME/phase_<i>/ bundles from the saved checkpoints.

    Each bundle gets model.onnx (fp32, waveform in, logits out), model.int8.onnx (static int8 QDQ,
    float front end), labels.json, model.h and manifest.json (sha256 of every file, parity
    figures). Checkpoints load weights-only; the dataset of the run must be where it was, unchanged
    (or moved whole, given with --data-root): calibration uses training clips of the seen
    classes, parity their test clips.
    A phase that misses a parity bound fails with the figures. With --target tflm each bundle
    also gets model.tflm.tflite (int8, log-mel in, verified in TFLM's interpreter), model_tflm.h,
    the C front end (logmel.h, logmel.c) and tflm_test_vectors.h, unless the TFLM build misses
    its parity rule (then withheld, the reason in the manifest's "tflm" section). A clip longer
    than the window is scored as the mean of its windows' logits, in the device and in parity.
    A withheld build is kept for diagnosis in the phase's withheld/<artifact>/ folder with its
    report; each phase's wall time and peak memory are logged.
    """
    from edgecl.budget.units import parse_bytes
    from firmware_export.tflm.limits import DeviceLimits

    limits = DeviceLimits(*part_limits(
        part, None if arena_limit is None else parse_bytes(arena_limit, "--arena-limit"),
        None if flash_limit is None else parse_bytes(flash_limit, "--flash-limit")))
    if tflm_window_seconds is not None:  # the option's value first, then what it needs
        from edgecl.limits import MAX_CLIP_SECONDS, check_float

        check_float("--tflm-window-seconds", tflm_window_seconds, 0.0, MAX_CLIP_SECONDS,
                    low_inclusive=True, what="a window length in seconds (0 = whole clip)")
    if target == "tflm":
        from firmware_export.tflm import require_toolchain

        require_toolchain()
    import torch

    from firmware_export.run_export import reexport_run

    torch.set_num_threads(threads)
    manifests = reexport_run(run_dir, phase, log=click.echo, target=target,
                             tflm_window_seconds=tflm_window_seconds, data_root=data_root,
                             limits=limits, quiet=quiet)
    click.echo(f"exported {len(manifests)} phase(s) under {run_dir}")
