"""A phase's device bundle, made from the run's model as the phase tested it, with its head's
analytic state (firmware_export.analytic_fit); and the record of the memory the phase trained
with, beside its checkpoint, so `edgecl export` fits the same state."""

from __future__ import annotations

import copy
from typing import Any

from edgecl.run_folder import phase_dir


def export_trained_phase(run, trained) -> dict[str, Any] | None:
    """Device bundle of `run`'s model after phase `trained` (an edgecl.steps.Phase); returns its
    export status (firmware_export.run_export.export_with_status: a miss never stops the run),
    None when the run does not export."""
    from firmware_export.analytic_fit import replayed_positions, write_replayed

    folder = phase_dir(run.run_dir, trained.index)
    if run.memory is not None:  # for `edgecl export`: the memory this phase trained with
        write_replayed(folder, replayed_positions(run.plan.tasks, trained.replayed))
    if not run.config.export:
        return None
    from edgecl.progress import ExportProgress
    from firmware_export.run_export import export_with_status, run_limits

    model = run.model if run.device.type == "cpu" else copy.deepcopy(run.model).cpu()
    return export_with_status(model, folder, phase=trained.index, classes=trained.seen,
                              seen_tasks=trained.seen_tasks, waveform=run.audio.waveform,
                              log=run.log, target=run.config.target,
                              tflm_window_seconds=run.config.tflm_window_seconds,
                              limits=run_limits(run.config), progress=ExportProgress(
                                  1, quiet=run.config.quiet, terminal=run.show_progress),
                              analytic=trained_fit(run, trained))


def trained_fit(run, trained):
    """The AnalyticFit of the phase: its new clips and the memory it trained with, or the run's
    own analytic state (--mode analytic)."""
    from edgecl.items import clip_key
    from firmware_export.analytic_fit import phase_fit

    state = next((step.bundle_state(trained.seen) for step in run.steps
                  if hasattr(step, "bundle_state")), None)
    by_key = {clip_key(lc.clip): lc for task in trained.seen_tasks for lc in task.train}
    memory = [by_key[key] for key in trained.replayed if key in by_key]
    return phase_fit(run.config, trained.seen, trained.new_clips, memory, run.audio.waveform,
                     state=state)
