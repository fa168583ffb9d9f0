"""Export the phases of a continual-learning run: right after training, or later from checkpoints.

Both paths pick the same clips, so `edgecl export RUN_DIR` rebuilds the bundles the trainer wrote
byte for byte: calibration uses up to MAX_CALIBRATION_CLIPS training clips of the classes seen so
far (evenly spaced over the tasks in arrival order), parity every held-out clip of those classes
(their validation and test clips: never a calibration clip). Both sets are available again from
the dataset; the replay memory of the run is not saved, so it is not used for calibration.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgecl.errors import EdgeclError
from firmware_export.bundle import MAX_CALIBRATION_CLIPS, evenly_spaced, export_phase

CHECKPOINT_NAME = "checkpoint.pt"  # written by edgecl.trainer
RESULTS_NAME = "results.json"

Log = Callable[[str], None]


def export_seen_tasks(model, phase_dir: str | os.PathLike, *, phase: int, classes: Sequence[str],
                      seen_tasks: Sequence, waveform: Callable[[Any], np.ndarray],
                      log: Log | None = None) -> dict[str, Any]:
    """Export `model` after `phase` given the tasks seen so far (edgecl.tasks.Task).

    `waveform(clip)` returns a clip at the model's rate and length (the trainer's audio cache).
    """
    train = [lc for task in seen_tasks for lc in task.train]
    validation = [lc for task in seen_tasks for lc in task.val]
    test = [lc for task in seen_tasks for lc in task.test]
    holdout = validation + test
    if not train or not test:
        raise EdgeclError(f"export phase {phase}: the seen classes need training clips for "
                          f"calibration and test clips for the parity check")
    calibration = [train[i] for i in evenly_spaced(len(train), MAX_CALIBRATION_CLIPS)]
    return export_phase(
        model, phase_dir, phase=phase, classes=classes,
        calibration_waveforms=np.stack([waveform(lc.clip) for lc in calibration]),
        holdout_waveforms=np.stack([waveform(lc.clip) for lc in holdout]),
        holdout_targets=[lc.target for lc in holdout],
        holdout_counts={"validation": len(validation), "test": len(test)}, log=log)


def phase_dirs(run_dir: Path, phase: int | None) -> list[Path]:
    """phase_<i> folders holding a checkpoint, in phase order (only phase `phase` if given).
    A phase folder left aside by an interrupted bundle swap is put back first."""
    from firmware_export.bundle import recover_interrupted_swap

    for retired in run_dir.glob(".phase_*.old"):
        name = retired.name[1:].split(".", 1)[0]
        if name.startswith("phase_"):
            recover_interrupted_swap(run_dir / name)
    found = sorted((p for p in run_dir.glob("phase_*") if (p / CHECKPOINT_NAME).is_file()
                    and p.name.split("_", 1)[1].isdigit()), key=lambda p: int(p.name.split("_")[1]))
    if phase is not None:
        found = [p for p in found if int(p.name.split("_")[1]) == phase]
        if not found:
            raise EdgeclError(f"--phase: {run_dir} has no phase_{phase}/{CHECKPOINT_NAME}")
    if not found:
        raise EdgeclError(f"{run_dir}: no phase_<i>/{CHECKPOINT_NAME} found; expected the folder "
                          f"of a run made by `edgecl train`")
    return found


def load_checkpoint(path: Path):
    """(model in eval mode, classes, phase) from a trainer checkpoint, loaded weights-only."""
    import torch

    import models

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        model = models.rebuild(payload["model_config"])
        model.load_state_dict(payload["state_dict"])
        classes, phase = [str(c) for c in payload["classes"]], int(payload["phase"])
    except EdgeclError:
        raise
    except Exception as error:  # unpickling, missing keys, shape mismatches
        detail = " ".join(str(error).split())[:200]
        raise EdgeclError(f"{path}: not a usable edgecl checkpoint ({detail})") from None
    return model.eval(), classes, phase


def _run_plan(run_dir: Path):
    """(config, dataset split, task plan) rebuilt from run_dir/results.json as the trainer did."""
    from edgecl.config import RunConfig
    from edgecl.data import load_dataset
    from edgecl.tasks import make_tasks

    results_path = run_dir / RESULTS_NAME
    try:
        results = json.loads(results_path.read_text(encoding="utf-8"))
        config = RunConfig.from_dict(results["config"])
    except FileNotFoundError:
        raise EdgeclError(f"{results_path}: not found; expected a run folder made by `edgecl train`"
                          ) from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise EdgeclError(f"{results_path}: unreadable run results ({error})") from None
    split = load_dataset(config.dataset, config.data_root, test_fold=config.test_fold,
                         seed=config.seed, workspace=config.workspace,
                         sample_rate=config.sample_rate, clip_seconds=config.clip_seconds,
                         clips_per_class=config.clips_per_class)
    config = config.with_tasks_for(len(split.classes))
    plan = make_tasks(split, config.n_tasks, config.n_init_cls, config.n_cls_a_task, config.seed)
    if results.get("classes") and list(results["classes"]) != plan.class_order:
        raise EdgeclError(f"{results_path}: the dataset now gives class order {plan.class_order}, "
                          f"the run had {results['classes']}; the data changed since training")
    return config, split, plan


def reexport_run(run_dir: str | os.PathLike, phase: int | None = None,
                 log: Log | None = None) -> list[dict[str, Any]]:
    """Re-export every phase of `run_dir` (or one) from its checkpoint; returns the manifests.

    A phase whose fp32 model misses its parity bound is logged with its figures and the others
    still export; then one EdgeclError lists every failed phase. A withheld int8 model is no
    failure: its bundle ships fp32 and says why in the manifest.
    """
    from edgecl.audio import load_audio
    from firmware_export.parity import ParityError

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise EdgeclError(f"{run_dir}: run folder not found")
    folders = phase_dirs(run_dir, phase)
    _, split, plan = _run_plan(run_dir)
    manifests, failures = [], []
    for folder in folders:
        model, classes, phase_index = load_checkpoint(folder / CHECKPOINT_NAME)
        seen_tasks = [task for task in plan.tasks if set(task.classes) <= set(classes)]
        if [c for task in seen_tasks for c in task.classes] != classes:
            raise EdgeclError(f"{folder / CHECKPOINT_NAME}: classes {classes} do not match the "
                              f"run's tasks {[t.classes for t in plan.tasks]}")
        try:
            manifests.append(export_seen_tasks(
                model, folder, phase=phase_index, classes=classes, seen_tasks=seen_tasks,
                waveform=lambda clip: load_audio(clip.path, split.sample_rate, split.clip_samples),
                log=log))
        except ParityError as error:
            failures.append(phase_index)
            if log is not None:
                log(f"  {error}")
    if failures:
        raise EdgeclError(f"{run_dir}: phase(s) {', '.join(map(str, failures))} missed the fp32 "
                          f"parity bound and were not written (figures above); the other "
                          f"{len(manifests)} exported")
    return manifests
