"""Export the phases of a continual-learning run: right after training, or later from checkpoints.

Both paths pick the same clips, so `edgecl export RUN_DIR` rebuilds the bundles the trainer wrote
byte for byte: calibration uses up to MAX_CALIBRATION_CLIPS training clips of the classes seen so
far (evenly spaced over the tasks in arrival order), parity every held-out clip of those classes
(their validation and test clips: never a calibration clip). Both sets are available again from
the dataset; the replay memory of the run is not saved, so it is not used for calibration.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgecl.allocator import trim_heap
from edgecl.budget.ram import StagePeaks, rss_stage
from edgecl.budget.units import format_bytes
from edgecl.errors import EdgeclError
from edgecl.leftovers import remove_leftovers, scratch_temp_dir
from edgecl.progress import ExportProgress, format_duration
from edgecl.run_folder import CHECKPOINT_NAME, PHASE_PREFIX, load_checkpoint, phase_dirs, run_plan
from edgecl.run_owner import RunLock
from edgecl.samplers.base import evenly_spaced
from firmware_export.analytic_fit import AnalyticFit, phase_fit, read_replayed
from firmware_export.bundle import MAX_CALIBRATION_CLIPS, export_phase
from firmware_export.device.analytic_state import BundleState
from firmware_export.device.layout import ANALYTIC_STATE
from firmware_export.held_clips import HeldClips
from firmware_export.tflm.limits import DeviceLimits

Log = Callable[[str], None]


def export_seen_tasks(model, phase_dir: str | os.PathLike, *, phase: int, classes: Sequence[str],
                      seen_tasks: Sequence, waveform: Callable[[Any], np.ndarray],
                      log: Log | None = None, target: str = "onnx",
                      tflm_window_seconds: float | None = None,
                      limits: DeviceLimits | None = None,
                      progress: ExportProgress | None = None,
                      analytic: AnalyticFit | None = None) -> dict[str, Any]:
    """Export `model` after `phase` given the tasks seen so far (edgecl.tasks.Task).

    `waveform(clip)` returns a clip at the model's rate and length (the trainer's audio cache);
    `target` "tflm" adds the TFLM build (export_phase), windowed by `tflm_window_seconds` and
    held to `limits`. `progress` shows the phase's steps as they start. `analytic` gives the
    bundle its head's analytic state (firmware_export.analytic_fit). The phase's wall time and
    peak resident memory (and the analytic fit's seconds) are logged and returned in the
    manifest's copy under "cost" (not written: the bundle's bytes do not depend on the machine's
    load).
    """
    if progress is not None:
        progress.start(phase)
    try:
        with StagePeaks() as peak:
            started, cpu_started = time.monotonic(), process_tree_cpu_seconds()
            manifest = _export_seen(model, phase_dir, phase=phase, classes=classes,
                                    seen_tasks=seen_tasks, waveform=waveform, log=log,
                                    target=target, tflm_window_seconds=tflm_window_seconds,
                                    limits=limits, progress=progress, analytic=analytic)
    finally:
        if progress is not None:
            progress.finish()
    # CPU seconds beside the wall time: on a loaded machine the wall time says little
    cost = {"seconds": round(time.monotonic() - started, 1),
            "cpu_seconds": round(process_tree_cpu_seconds() - cpu_started, 1),
            "peak_rss_bytes": peak.bytes,
            "peak_rss_scope": "phase" if peak.scoped else "process",
            "peak_rss_stage": peak.highest()["stage"], "stages": peak.stages,
            **manifest.get("cost", {})}
    if log is not None:
        log(f"  export phase {phase}: {format_duration(cost['seconds'])} "
            f"({format_duration(cost['cpu_seconds'])} CPU), peak RSS "
            f"{format_bytes(peak.bytes)}{'' if peak.scoped else ' (process so far)'} in "
            f"'{cost['peak_rss_stage']}'" + analytic_note(manifest, cost))
    return dict(manifest, cost=cost)


def process_tree_cpu_seconds() -> float:
    """CPU seconds (user and system) of this process and of its child processes that ended and
    were waited for: a phase's fp32 export, TFLM converter and arena children do a good part of
    its work, and /usr/bin/time counts them too."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def analytic_note(manifest: dict[str, Any], cost: dict[str, Any]) -> str:
    """The export line's words on the bundle's analytic state: its fit's time, size, and the
    held-out accuracy of the analytic head beside the trained head's."""
    section = manifest.get("analytic")
    if not section or "analytic_fit_seconds" not in cost:
        return ""
    accuracy = section["holdout_accuracy"]
    status = "" if section["status"] == "shipped" else f" WITHHELD ({section['reason']})"
    return (f"; analytic state{status} {format_bytes(section['state_bytes_fp32'])} fit in "
            f"{cost['analytic_fit_seconds']:.1f} s, held-out accuracy {accuracy['analytic_head']:.3f}"
            f" (trained head {accuracy['trained_head']:.3f})")


def _step(progress: ExportProgress | None) -> Log:
    """The exporter's step callback: hands the last step's freed memory back to the system
    (a freed candidate's session, a batch's tensors), starts the step's memory stage, then
    shows it."""
    def step(text: str) -> None:
        trim_heap()
        rss_stage(text)
        if progress is not None:
            progress.step(text)
    return step


def seen_clips(seen_tasks: Sequence, waveform: Callable[[Any], np.ndarray],
               phase: int) -> dict[str, Any]:
    """The clips a phase's export uses: calibration (up to MAX_CALIBRATION_CLIPS training clips
    of the seen classes, evenly spaced over the tasks in arrival order) and held-out (their
    validation and test clips), as export_phase's keyword arguments."""
    train = [lc for task in seen_tasks for lc in task.train]
    validation = [lc for task in seen_tasks for lc in task.val]
    test = [lc for task in seen_tasks for lc in task.test]
    holdout = validation + test
    if not train or not test:
        raise EdgeclError(f"export phase {phase}: the seen classes need training clips for "
                          f"calibration and test clips for the parity check")
    calibration = [train[i] for i in evenly_spaced(len(train), MAX_CALIBRATION_CLIPS)]
    # the held-out clips are read a batch at a time by every pass: held as their 16-bit codes;
    # the calibration clips too until the fp32 check is done (export_phase)
    return {"calibration_waveforms": HeldClips.decoded([lc.clip for lc in calibration], waveform),
            "holdout_waveforms": HeldClips.decoded([lc.clip for lc in holdout], waveform),
            "holdout_targets": [lc.target for lc in holdout],
            "holdout_counts": {"validation": len(validation), "test": len(test)}}


def _export_seen(model, phase_dir, *, phase, classes, seen_tasks, waveform, log, target,
                 tflm_window_seconds, limits, progress, analytic) -> dict[str, Any]:
    rss_stage("loading the clips")
    clips = seen_clips(seen_tasks, waveform, phase)
    with scratch_temp_dir(Path(phase_dir).parent):  # the quantizers' temporary folders
        return export_phase(
            model, phase_dir, phase=phase, classes=classes, **clips, log=log,
            target=target, tflm_window_seconds=tflm_window_seconds, limits=limits,
            progress=_step(progress), analytic=analytic)


def export_with_status(model, phase_dir: str | os.PathLike, **arguments) -> dict[str, Any]:
    """export_seen_tasks for the trainer: the phase's export status for results.json.

    The fp32 model ships whenever its parity holds; the int8 model ships when the int8 search
    meets its rule and is otherwise withheld with the reason. A phase whose fp32 model misses
    parity (a bug, not noise) ships nothing: the miss is logged loudly with its figures and
    returned, and the run goes on, because the learning results stay valid.
    """
    from firmware_export.parity import ParityError

    log = arguments.get("log")
    try:
        manifest = export_seen_tasks(model, phase_dir, **arguments)
    except ParityError as error:
        if log is not None:
            log(f"  EXPORT NOT SHIPPED: {error}")
        return {"shipped": False, "error": str(error), "parity": error.figures}
    int8 = manifest["artifacts"]["int8"]
    status = {"shipped": True, "device_model": manifest["device_model"],
              "int8": int8["status"], "int8_reason": int8["reason"]}
    if "cost" in manifest:
        status["cost"] = manifest["cost"]
    if "tflm" in manifest:
        status.update(tflm=manifest["tflm"]["status"], tflm_reason=manifest["tflm"]["reason"])
    if "analytic" in manifest:
        status["analytic"] = analytic_status(manifest["analytic"])
    return status


def analytic_status(section: dict[str, Any]) -> dict[str, Any]:
    """results.json's figures of a bundle's analytic state: shipped or withheld, its bytes and
    update MACs per clip (the device budgets), what it was fit on, and the held-out accuracy of
    the analytic head before any learning beside the trained head's."""
    return {key: section[key] for key in ("status", "reason", "state_bytes_fp32",
                                          "update_macs_per_clip", "expansion", "fit",
                                          "holdout_accuracy")}


def run_limits(config, given: DeviceLimits | None = None) -> DeviceLimits:
    """The TFLM limits of a run: `given` ones first, then the run's own (RunConfig fields)."""
    given = given or DeviceLimits()
    return DeviceLimits(
        arena=given.arena if given.arena is not None else getattr(config, "arena_limit", None),
        flash=given.flash if given.flash is not None else getattr(config, "flash_limit", None))


def rebuilt_fit(config, folder: Path, classes: list[str], tasks: Sequence, seen_tasks: Sequence,
                waveform: Callable[[Any], np.ndarray]) -> AnalyticFit:
    """The AnalyticFit of a phase rebuilt from its checkpoint: the new clips of the phase's tasks
    and the memory it trained with (phase folder's record); for --mode analytic the state the
    bundle already holds (the run's own), else a fit on every seen task's clips, said so."""
    new_tasks = seen_tasks if config.mode == "joint" else seen_tasks[-1:]
    new_clips = [lc for task in new_tasks for lc in task.train]
    if config.mode != "analytic":
        return phase_fit(config, classes, new_clips, read_replayed(folder, tasks), waveform)
    kept = folder / ANALYTIC_STATE
    if kept.is_file():
        state = BundleState.from_bytes(kept.read_bytes(), str(kept))
        return phase_fit(config, classes, new_clips, [], waveform, state=state)
    fit = phase_fit(config, classes, [lc for task in seen_tasks for lc in task.train], [],
                    waveform)
    fit.fit["source"] = "refit at export on every seen task's clips (the run's state was not kept)"
    return fit


def recover_run_folder(run_dir: Path) -> None:
    """Put back any phase folder that an interrupted bundle swap left aside (see bundle.py)."""
    from firmware_export.bundle_folder import recover_interrupted_swap

    for retired in run_dir.glob(f".{PHASE_PREFIX}*.old"):
        name = retired.name[1:].split(".", 1)[0]
        if name.startswith(PHASE_PREFIX):
            recover_interrupted_swap(run_dir / name)


def reexport_run(run_dir: str | os.PathLike, phase: int | None = None,
                 log: Log | None = None, target: str | None = None,
                 tflm_window_seconds: float | None = None,
                 data_root: str | None = None, limits: DeviceLimits | None = None,
                 quiet: bool = False) -> list[dict[str, Any]]:
    """Re-export every phase of `run_dir` (or one) from its checkpoint; returns the manifests.

    `target` (onnx or tflm) defaults to the run's own --target, `tflm_window_seconds` to the
    run's own --tflm-window-seconds (None there too: auto), each of `limits` to the run's own
    --arena-limit / --flash-limit. The data are the run's own (edgecl.run_data): `data_root`
    gives their new place when they moved. Progress goes to stderr unless `quiet`.

    A phase whose fp32 model misses its parity bound is logged with its figures and the others
    still export; then one EdgeclError lists every failed phase. A withheld int8 model is no
    failure: its bundle ships fp32 and says why in the manifest.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise EdgeclError(f"{run_dir}: run folder not found")
    # The run's lock: a train still writing this folder (or another export) must finish first.
    lock = RunLock(run_dir)
    try:
        return _reexport_locked(run_dir, phase, log, target, tflm_window_seconds, data_root,
                                limits, quiet)
    finally:
        lock.release()


def _reexport_locked(run_dir: Path, phase: int | None, log: Log | None,
                     target: str | None, window: float | None, data_root: str | None,
                     limits: DeviceLimits | None, quiet: bool) -> list[dict[str, Any]]:
    from edgecl.audio import load_audio
    from firmware_export.parity import ParityError

    recover_run_folder(run_dir)
    remove_leftovers(run_dir)
    folders = phase_dirs(run_dir, phase)
    config, split, plan = run_plan(run_dir, data_root)
    target = target or config.target
    window = window if window is not None else config.tflm_window_seconds
    if window is not None and target != "tflm":
        raise EdgeclError(f"--tflm-window-seconds: only used with --target tflm (the export's "
                          f"target is {target})")
    limits = run_limits(config, limits)
    if limits and target != "tflm":
        raise EdgeclError(f"--arena-limit/--flash-limit: only used with --target tflm (the "
                          f"export's target is {target})")
    progress = ExportProgress(len(folders), quiet=quiet)
    manifests, failures = [], []
    for folder in folders:
        model, classes, phase_index = load_checkpoint(folder / CHECKPOINT_NAME)
        seen_tasks = [task for task in plan.tasks if set(task.classes) <= set(classes)]
        if [c for task in seen_tasks for c in task.classes] != classes:
            raise EdgeclError(f"{folder / CHECKPOINT_NAME}: classes {classes} do not match the "
                              f"run's tasks {[t.classes for t in plan.tasks]}")
        def waveform(clip):
            return load_audio(clip.path, split.sample_rate, split.clip_samples)

        analytic = rebuilt_fit(config, folder, classes, plan.tasks, seen_tasks, waveform)
        try:
            manifests.append(export_seen_tasks(
                model, folder, phase=phase_index, classes=classes, seen_tasks=seen_tasks,
                waveform=waveform, log=log, target=target, tflm_window_seconds=window,
                limits=limits, progress=progress, analytic=analytic))
        except ParityError as error:
            failures.append(phase_index)
            if log is not None:
                log(f"  {error}")
    if failures:
        raise EdgeclError(f"{run_dir}: phase(s) {', '.join(map(str, failures))} missed the fp32 "
                          f"parity bound and were not written (figures above); the other "
                          f"{len(manifests)} exported")
    return manifests
