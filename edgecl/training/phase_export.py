"""A phase's device bundle, made from the run's model as the phase tested it."""

from __future__ import annotations

import copy
from typing import Any

from edgecl.run_folder import phase_dir


def export_trained_phase(run, trained) -> dict[str, Any] | None:
    """Device bundle of `run`'s model after phase `trained` (an edgecl.steps.Phase); returns its
    export status (firmware_export.run_export.export_with_status: a miss never stops the run),
    None when the run does not export."""
    if not run.config.export:
        return None
    from edgecl.progress import ExportProgress
    from firmware_export.run_export import export_with_status, run_limits

    model = run.model if run.device.type == "cpu" else copy.deepcopy(run.model).cpu()
    return export_with_status(model, phase_dir(run.run_dir, trained.index),
                              phase=trained.index, classes=trained.seen,
                              seen_tasks=trained.seen_tasks, waveform=run.audio.waveform,
                              log=run.log, target=run.config.target,
                              tflm_window_seconds=run.config.tflm_window_seconds,
                              limits=run_limits(run.config), progress=ExportProgress(
                                  1, quiet=run.config.quiet, terminal=run.show_progress))
