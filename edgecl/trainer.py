"""The continual learner: phase after phase, train on the new clips plus the replay memory, refill
the memory with the chosen sampler, test on every class seen so far, save a checkpoint, export.

Modes: `finetune` (no memory), `replay` (memory refilled by a sampler after each phase), `joint`
(one phase on every class: the non-incremental upper bound) and `analytic` (phase 0 as finetune,
then a frozen backbone and a recursive least-squares head: edgecl.steps.analytic). Every training technique beyond the
published recipe (distillation, bias correction, ...) is a step of the phase (edgecl.steps).
Everything a run produces goes to its run folder WORKSPACE/EXP_NAME (edgecl.run_folder).
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgecl.allocator import keep_freed_memory
from edgecl.audio import ClipAudio
from edgecl.budget.macs import ModelMacs, train_step_macs
from edgecl.budget.ram import device_train_ram, peak_rss_bytes
from edgecl.config import RunConfig
from edgecl.config_file import write_config_file
from edgecl.data.validate import check_input_lengths, validate_dataset
from edgecl.device import deterministic_kernels, peak_gpu_memory_bytes, resolve_device
from edgecl.feature_store import STORE_FOLDER, FeatureStore
from edgecl.features import FeatureCache
from edgecl.items import ClipItems
from edgecl.memory_update import build_memory
from edgecl.precision import TrainingPrecision
from edgecl.progress import ProgressLines, RunEstimate
from edgecl.provenance import provenance, utc_now
from edgecl.results import PhaseRecord, RunLog, build_results, phase_table, write_results
from edgecl.run_data import run_fingerprint
from edgecl.run_folder import LOG_NAME, checkpoint_path, load_plan, save_checkpoint
from edgecl.run_owner import check_exp_name, open_run_folder
from edgecl.run_state import save_state
from edgecl.steps import Phase, build_steps
from edgecl.training import ComputeBudget, PhaseData, PhaseMeter, StopCondition, fit, task_accuracy
from edgecl.training.budget_check import check_first_step
from edgecl.training.epoch_progress import EpochProgress
from edgecl.training.host_memory import describe as describe_host_memory
from edgecl.training.host_memory import plan_host_memory
from edgecl.training.phase_data import training_items
from edgecl.training.phase_export import export_trained_phase
from edgecl.training.phase_report import export_notes, percent, run_header, training_details
from edgecl.training.resume import resume_run
from edgecl.training.run_model import build_run_model


def set_determinism(seed: int, threads: int) -> None:
    """Seed every generator a run uses, fix the CPU thread count and keep freed memory in the
    process (edgecl.allocator: large tensors stop page-faulting)."""
    keep_freed_memory()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.set_num_threads(max(1, threads))


class ContinualRun:
    """One run of `edgecl train`. Build it, then call `run()`.

    `stop_factory(phase, macs, extra_macs) -> StopCondition` supplies each phase's stop
    condition; by default an edgecl.training.PhaseMeter enforcing the config's compute budget on
    steps, time and MACs (`macs`: the model's ModelMacs in that phase; `extra_macs`: what the
    steps add per training clip, e.g. a distillation teacher's forward, charged with them).

    `run()` owns the run folder while it writes (edgecl.run_owner): it continues an interrupted
    run with the same options from its last completed phase, returns a complete one as it is, and
    refuses a folder holding another run; `overwrite=True` empties the folder first.
    """

    def __init__(self, config: RunConfig, *, show_progress: bool | None = None,
                 stop_factory: Callable[[int, ModelMacs, int], StopCondition] | None = None,
                 overwrite: bool = False) -> None:
        check_exp_name(config.name)
        self.device = resolve_device(config.device)  # before any work: cuda may be missing
        self.precision = TrainingPrecision.for_device(config.precision, self.device)  # auto too
        set_determinism(config.seed, config.threads)
        deterministic_kernels(self.device, allow_tf32=config.allow_tf32)
        name = config.name  # the default name hashes the options as given, before resolving
        self.config, self.split, self.plan = load_plan(config)
        validate_dataset(self.split, self.plan.class_order, progress=not config.quiet)
        self.config = config = replace(self.config, exp_name=name, precision=self.precision.name)
        self.overwrite, self.skipped = overwrite, False  # skipped: run() found it complete
        self.run_dir = Path(config.workspace) / config.name
        self.log = RunLog(self.run_dir / LOG_NAME, echo=not config.quiet)
        self.show_progress = (not config.quiet and sys.stderr.isatty()) if show_progress is None \
            else show_progress
        # Without a terminal (pipes, nohup, CI): throttled progress lines instead of a bar.
        self.lines = None if config.quiet or self.show_progress else ProgressLines()
        tasks = self.plan.tasks  # trained in each phase: one each, or all at once for joint
        self.phases = [list(tasks)] if config.mode == "joint" else [[task] for task in tasks]
        self.estimate = RunEstimate(len(self.phases), config.epochs)
        self.stop_factory = stop_factory or (lambda phase, macs, extra: PhaseMeter(
            config.compute_budget(), step_macs_per_clip=self.step_macs(macs, extra)))
        self.rng = np.random.default_rng(config.seed)
        self.audio = ClipAudio(self.split.sample_rate, self.split.clip_samples)
        self.model = build_run_model(config, self.plan, self.split).to(self.device)
        check_input_lengths(self.model, self.split, config)
        self.open_features()
        self.memory, self.sampler = build_memory(config, self.exemplar_shape, len(
            self.plan.class_order)) if config.uses_memory else (None, None)
        self.steps = build_steps(config)
        check_first_step(config.max_train_macs, self.phases, self.model, self.split.clip_samples,
                         batch_size=config.batch_size, step_macs=self.step_macs, steps=self.steps)
        self.host_ram = plan_host_memory(self)  # may turn activation checkpointing on
        self.records: list[PhaseRecord] = []

    def open_features(self) -> None:
        """The feature cache of the model's front end (and its store) and the clip items on it."""
        store = None
        if self.config.feature_store and self.config.feature_cache:
            store = FeatureStore(Path(self.config.workspace) / STORE_FOLDER,
                                 frontend=self.model.frontend.config.to_dict(),
                                 sample_rate=self.split.sample_rate,
                                 clip_samples=self.split.clip_samples)
        self.features = FeatureCache(self.model.frontend, enabled=self.config.feature_cache,
                                     store=store)
        self.items = ClipItems(self.audio, self.features, device=self.device)

    def logmel_shape(self) -> tuple[int, ...]:
        """Shape [1, F, T'] of one clip's log-mel features."""
        with torch.no_grad():
            return tuple(self.model.frontend(torch.zeros(1, self.split.clip_samples,
                                                         device=self.device)).shape[1:])

    def exemplar_shape(self, fmt) -> tuple[int, ...]:
        return (self.split.clip_samples,) if fmt.domain == "waveform" else self.logmel_shape()

    # --- the phase loop -------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Train every phase not done yet; returns the results document (also written to
        results.json). Holds the run folder's lock throughout."""
        from firmware_export.tflm.limits import check_run_limits

        # before the folder: nothing half-written; its line goes in the log once the folder is
        self.budget_lines: list[str] = []
        check_run_limits(self.config, self.split.sample_rate, self.split.clip_samples,
                         len(self.plan.class_order), log=self.budget_lines.append)
        folder = open_run_folder(self.run_dir, self.config.identity(), overwrite=self.overwrite,
                                 data=run_fingerprint(self.config, self.split))
        try:
            if folder.state == "complete":
                self.skipped = True
                return folder.results
            return self._run(resume_run(self, folder.results) if folder.state == "started" else 0)
        finally:
            self.log.close()
            folder.release()

    def _run(self, start: int) -> dict[str, Any]:
        self.started_utc = utc_now()
        write_config_file(self.run_dir, self.config)
        for line in [*run_header(self.config, self.memory, self.plan, self.split),
                     self.precision.describe(), describe_host_memory(self.host_ram),
                     *self.budget_lines]:
            self.log(line)
        for phase, tasks in enumerate(self.phases):
            if phase < start:
                continue
            self.records.append(self.run_phase(phase, tasks))
            self.records[-1].details["threads"] = torch.get_num_threads()  # per phase: resumes
            save_state(self.run_dir, phase, records=[r.as_dict() for r in self.records],
                       memory=self.memory, sampler=self.sampler, run_rng=self.rng,
                       **{k: v for step in self.steps for k, v in step.state().items()})
            write_results(self.run_dir, self.results(complete=False))
        results = self.results(complete=True)
        write_results(self.run_dir, results)
        self.log.write_only("summary\n" + phase_table(results))  # the command prints it once
        for note in export_notes([r.details.get("export") or {} for r in self.records]):
            self.log(note)
        self.log.close()
        return results

    def run_phase(self, phase: int, tasks: list) -> PhaseRecord:
        """Train (with the steps' hooks after it), update the memory, test on every seen task,
        save and export one phase."""
        trained = self.train_phase(phase, tasks)
        record = trained.record
        for step in self.steps:  # among them the memory refill (edgecl.steps)
            step.after_fit(self, trained)
        for step in self.steps:
            step.before_test(self, trained)
        record.task_accuracy, record.accuracy = task_accuracy(
            self.model, self.items.clip_data, trained.seen_tasks)
        record.details["peak_rss_bytes"] = peak_rss_bytes()
        if (gpu_peak := peak_gpu_memory_bytes(self.device)) is not None:
            record.details["peak_gpu_memory_bytes"] = gpu_peak
        self.log(f"  test accuracy on {len(trained.seen)} classes: {percent(record.accuracy)}; "
                 "per task " + " ".join(f"{a:.3f}" for a in record.task_accuracy))
        save_checkpoint(checkpoint_path(self.run_dir, phase), self.model,
                        classes=trained.seen, phase=phase, exp_name=self.config.name)
        record.details["export"] = export_trained_phase(self, trained)
        for step in self.steps:
            step.after_export(self, trained)
        return record

    def train_phase(self, phase: int, tasks: list) -> Phase:
        """Grow the head and train on the new clips plus the memory."""
        seen_tasks = self.plan.tasks_seen(tasks[-1].index)
        seen = [name for task in seen_tasks for name in task.classes]
        trained = Phase(phase, tasks, seen_tasks, PhaseRecord(seen_classes=seen))
        for step in self.steps:
            step.before_phase(self, trained)  # before the head grows: the old model
        self.model.head.grow(len(seen))
        trained.macs = macs = ModelMacs.of_model(self.model, self.split.clip_samples)
        self.log(f"phase {phase}: new classes {[c for t in tasks for c in t.classes]}, "
                 f"{len(seen)} seen")
        trained.new_clips = [lc for task in tasks for lc in task.train]
        trained.replayed = self.memory.keys() if self.memory is not None else []
        items, targets = training_items(self.items, trained.new_clips, self.memory,
                                        self.config.code_new_clips)
        train, val = self.items.data(items, targets), self.validation_data(seen_tasks)
        self.log(f"  training on {len(trained.new_clips)} new clips + "
                 f"{len(items) - len(trained.new_clips)} from memory, validating on {len(val)}")
        extra_macs = sum(step.extra_macs_per_clip(self, trained) for step in self.steps)
        trained.step_macs_per_clip = self.step_macs(macs, extra_macs)
        started = time.perf_counter()
        stop = self.stop_factory(phase, macs, extra_macs)
        trains = all(step.trains(self, trained) for step in self.steps)
        report = self._fit(trained, train, val, stop, epochs=self.config.epochs if trains else 0)
        trained.record.train_seconds = time.perf_counter() - started
        self.features.forget_source("coded")
        if trains:
            self.log(f"  trained {report.epochs_run} epochs ({report.steps} steps) in "
                     f"{trained.record.train_seconds:.1f} s; {report.selection()}; stopped by "
                     f"{report.stopped_by or 'epochs'}")
        else:
            self.log("  no gradient training in this phase (the model is kept as it is)")
        costs = stop.results(report.steps)
        costs.pop("train_seconds", None)  # the record's own train_seconds covers the same span
        ram = device_train_ram(self.model, self.config.batch_size, self.logmel_shape(),
                               forward=lambda model, batch: model.forward_features(batch))
        for step in self.steps:
            ram = step.charge_training(self, trained, costs.get("train_macs"), ram)
        trained.record.details = {**training_details(
            report, costs, n_train=len(train), n_val=len(val), device=self.device,
            features=self.features, ram=ram), **trained.details}
        return trained

    def validation_data(self, seen_tasks: list) -> PhaseData:
        """The validation clips of every seen task: model selection's, and the steps'."""
        return self.items.clip_data([lc for task in seen_tasks for lc in task.val])

    def remaining_budget(self, record: PhaseRecord) -> ComputeBudget | None:
        """What the phase's compute budget leaves after the training `record` holds (None when a
        limit is reached; an unlimited budget stays unlimited)."""
        details = record.details
        return self.config.compute_budget().remaining(
            steps=details.get("train_steps", 0), macs=details.get("train_macs") or 0,
            seconds=record.train_seconds)

    def _fit(self, trained: Phase, train: PhaseData, val: PhaseData, stop: StopCondition, *,
             epochs: int):
        config, phase = self.config, trained.index
        progress = EpochProgress(phase, len(train), epochs=epochs, run_dir=self.run_dir,
                                 log=self.log, estimate=self.estimate, lines=self.lines,
                                 show_bar=self.show_progress)
        options = {k: v for step in self.steps for k, v in step.fit_options(self).items()}
        terms = [t for t in (step.loss_term(trained) for step in self.steps) if t is not None]
        generator = torch.Generator().manual_seed(config.seed * 1000 + phase)
        try:
            report = fit(self.model, train, val, epochs=epochs,
                         batch_size=config.batch_size, lr=config.phase_lr(phase),
                         patience=config.patience, bn_recal_clips=config.bn_recal_clips,
                         generator=generator, stop=stop, progress=progress,
                         name=f"phase {phase}", loss_terms=terms, precision=self.precision,
                         **options)
        finally:
            progress.close()
        self.estimate.phase_done(report.epochs_run)
        return report

    def step_macs(self, macs: ModelMacs, extra_macs: int) -> int:
        """MACs of a training step per clip: the student's step and the steps' extras."""
        return train_step_macs(macs, 1, features_cached=self.config.feature_cache) + extra_macs

    def results(self, complete: bool) -> dict[str, Any]:
        made_by = provenance(started=getattr(self, "started_utc", None),
                             ended=utc_now() if complete else None,
                             threads=torch.get_num_threads(), device=self.device)
        made_by["training_precision"] = self.precision.record()
        made_by["host_memory"] = self.host_ram.as_dict()  # this session's estimate, not a result
        return build_results(self.config.to_dict(), self.plan.class_order,
                             [t.classes for t in self.plan.tasks],
                             [r.as_dict() for r in self.records], complete, provenance=made_by)


def train(config: RunConfig, **kwargs) -> dict[str, Any]:
    """Run `edgecl train` for `config` (resuming or skipping it, see ContinualRun); returns the
    results document."""
    return ContinualRun(config, **kwargs).run()
