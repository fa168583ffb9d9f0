"""The continual learner: phase after phase, train on the new clips plus the replay memory, refill
the memory with the chosen sampler, test on every class seen so far, save a checkpoint, export.

Modes: `finetune` (no memory), `replay` (memory refilled by a sampler after each phase) and `joint`
(one phase on every class: the non-incremental upper bound). Everything a run produces goes to its
run folder WORKSPACE/EXP_NAME (edgecl.run_folder).
"""

from __future__ import annotations

import copy
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgecl.allocator import keep_freed_memory
from edgecl.audio import ClipAudio
from edgecl.budget.macs import ModelMacs, train_step_macs
from edgecl.budget.ram import TrainRam, device_inference_ram, device_train_ram, peak_rss_bytes
from edgecl.config import RunConfig
from edgecl.config_file import write_config_file
from edgecl.data.validate import check_input_lengths, validate_dataset
from edgecl.device import (cpu_state, deterministic_kernels, device_change_note,
                           peak_gpu_memory_bytes, resolve_device)
from edgecl.errors import EdgeclError
from edgecl.feature_store import STORE_FOLDER, FeatureStore
from edgecl.features import FeatureCache
from edgecl.items import ClipItems
from edgecl.memory_update import build_memory, update_memory
from edgecl.progress import MetricsLog, ProgressLines, RunEstimate
from edgecl.provenance import provenance, utc_now
from edgecl.results import (PhaseRecord, RunLog, build_results, count_range, phase_table,
                            write_results)
from edgecl.run_folder import LOG_NAME, checkpoint_path, load_plan, phase_dir, save_checkpoint
from edgecl.run_data import run_fingerprint
from edgecl.run_owner import check_exp_name, open_run_folder
from edgecl.run_state import (drop_uncommitted, load_phase_weights, load_state, restore_state,
                              save_state)
from edgecl.training import (ComputeBudget, PhaseData, PhaseMeter, StopCondition, fit,
                             task_accuracy)
from edgecl.training.balanced_finetune import BalancedSettings, balanced_subset, subset_rng
from edgecl.training.distill import Distiller, DistillSettings, teacher_macs_per_clip
from edgecl.training.bias_correction import correct_bias
from edgecl.training.weight_align import align_weights


def set_determinism(seed: int, threads: int) -> None:
    """Seed every generator a run uses, fix the CPU thread count and keep freed memory in the
    process (edgecl.allocator: large tensors stop page-faulting)."""
    keep_freed_memory()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.set_num_threads(max(1, threads))


@dataclass
class TrainedPhase:
    """A phase after training: its record so far, its new clips, the tasks seen so far and the
    model's MACs per clip with this phase's head."""

    record: PhaseRecord
    new_clips: list
    seen_tasks: list
    macs: ModelMacs


class ContinualRun:
    """One run of `edgecl train`. Build it, then call `run()`.

    `stop_factory(phase, macs, teacher_macs) -> StopCondition` supplies each phase's stop
    condition; by default an edgecl.training.PhaseMeter that counts steps, MACs and time and
    enforces the config's compute budget (`macs`: the model's ModelMacs in that phase;
    `teacher_macs`: a distillation teacher's forward MACs per training clip, 0 without one).

    `run()` owns the run folder while it writes (edgecl.run_owner): it continues an interrupted
    run with the same options from its last completed phase, returns a complete one as it is, and
    refuses a folder holding another run; `overwrite=True` empties the folder first.
    """

    def __init__(self, config: RunConfig, *, show_progress: bool | None = None,
                 stop_factory: Callable[[int, ModelMacs, int], StopCondition] | None = None,
                 overwrite: bool = False) -> None:
        check_exp_name(config.name)
        self.device = resolve_device(config.device)  # before any work: cuda may be missing
        set_determinism(config.seed, config.threads)
        deterministic_kernels(self.device, allow_tf32=config.allow_tf32)
        name = config.name  # the default name hashes the options as given, before resolving
        self.config, self.split, self.plan = load_plan(config)
        validate_dataset(self.split, self.plan.class_order, progress=not config.quiet)
        self.config = config = replace(self.config, exp_name=name)
        self.overwrite = overwrite
        self.skipped = False  # run() found the run complete and did nothing
        self.run_dir = Path(config.workspace) / config.name
        self.log = RunLog(self.run_dir / LOG_NAME, echo=not config.quiet)
        self.show_progress = (not config.quiet and sys.stderr.isatty()) if show_progress is None \
            else show_progress
        # Without a terminal (pipes, nohup, CI): throttled progress lines instead of a bar.
        self.lines = None if config.quiet or self.show_progress else ProgressLines()
        self.estimate = RunEstimate(len(self._phases()), config.epochs)
        self.stop_factory = stop_factory or self._phase_meter
        self.rng = np.random.default_rng(config.seed)
        self.audio = ClipAudio(self.split.sample_rate, self.split.clip_samples)
        self.model = self._build_model().to(self.device)
        check_input_lengths(self.model, self.split, config)
        self.features = FeatureCache(self.model.frontend, enabled=config.feature_cache,
                                     store=self._feature_store())
        self.items = ClipItems(self.audio, self.features, device=self.device)
        self.memory, self.sampler = self._build_memory()
        self._check_compute_budget()
        self.records: list[PhaseRecord] = []
        # The head the run goes on from when the phase's deployed model has a corrected one.
        self.learner_head: dict[str, torch.Tensor] | None = None

    def _build_model(self):
        from models import build_model
        from models.frontend import FrontEndConfig

        first = self.plan.tasks[0] if self.config.mode != "joint" else None
        n_classes = len(first.classes) if first else len(self.plan.class_order)
        return build_model(self.config.model, n_classes,
                           FrontEndConfig.for_sample_rate(self.split.sample_rate,
                                                          n_mels=self.config.n_mels),
                           width=self.config.width)

    def _feature_store(self) -> FeatureStore | None:
        if not (self.config.feature_store and self.config.feature_cache):
            return None
        return FeatureStore(Path(self.config.workspace) / STORE_FOLDER,
                            frontend=self.model.frontend.config.to_dict(),
                            sample_rate=self.split.sample_rate,
                            clip_samples=self.split.clip_samples)

    def _build_memory(self):
        if not self.config.uses_memory:
            return None, None
        return build_memory(self.config, self.exemplar_shape, len(self.plan.class_order))

    def logmel_shape(self) -> tuple[int, ...]:
        """Shape [1, F, T'] of one clip's log-mel features."""
        with torch.no_grad():
            return tuple(self.model.frontend(torch.zeros(1, self.split.clip_samples,
                                                         device=self.device)).shape[1:])

    def exemplar_shape(self, fmt) -> tuple[int, ...]:
        return (self.split.clip_samples,) if fmt.domain == "waveform" else self.logmel_shape()

    # --- the phase loop -------------------------------------------------------------------

    def _phases(self) -> list[list]:
        """Tasks trained in each phase: one each, or all at once for joint."""
        tasks = self.plan.tasks
        return [list(tasks)] if self.config.mode == "joint" else [[t] for t in tasks]

    def run(self) -> dict[str, Any]:
        """Train every phase not done yet; returns the results document (also written to
        results.json). Holds the run folder's lock throughout."""
        folder = open_run_folder(self.run_dir, self.config.identity(), overwrite=self.overwrite,
                                 data=run_fingerprint(self.config, self.split))
        try:
            if folder.state == "complete":
                self.skipped = True
                return folder.results
            return self._run(self._resume(folder.results) if folder.state == "started" else 0)
        finally:
            self.log.close()
            folder.release()

    def _resume(self, previous: dict[str, Any] | None) -> int:
        """Restore the state after the last completed phase; returns the phase to start at.
        Whatever an interrupted phase left (its folder, results of phases not committed) goes.
        `previous`: the interrupted run's results.json, if it wrote one."""
        done = drop_uncommitted(self.run_dir)
        if done is None:
            self.log("resuming at phase 0: no phase of the interrupted run had completed")
            return 0
        self._note_thread_change(previous, done)
        if (note := device_change_note(previous, done, self.device)) is not None:
            self.log(note)
        payload = load_state(self.run_dir, done)
        if load_phase_weights(self.model, self.run_dir, done):
            # the run's own front end (see load_phase_weights): features and their store follow
            self.features = FeatureCache(self.model.frontend, enabled=self.config.feature_cache,
                                         store=self._feature_store())
            self.items = ClipItems(self.audio, self.features, device=self.device)
            self.log(f"resuming with the front end the run started with (stft_impl "
                     f"{self.model.frontend.stft_impl!r})")
        if payload.get("learner_head") is not None:  # the checkpoint's head is corrected
            self.model.head.load_state_dict(payload["learner_head"])
        self.records = [PhaseRecord.from_dict(r) for r in payload["records"]]
        restore_state(payload, memory=self.memory, sampler=self.sampler, run_rng=self.rng)
        write_results(self.run_dir, self._results(complete=False))
        self.log(f"resuming at phase {done + 1}: phases 0-{done} of the interrupted run are "
                 f"complete" if done + 1 < len(self._phases()) else
                 f"resuming after phase {done}: every phase is complete, writing the results")
        return done + 1

    def _note_thread_change(self, previous: dict[str, Any] | None, done: int) -> None:
        """Say so when the phases done ran on another thread count: torch's float sums follow the
        thread count, so the rest of the run will not match an uninterrupted one bit for bit."""
        ran_on = ((previous or {}).get("provenance") or {}).get("threads")
        now = torch.get_num_threads()
        if isinstance(ran_on, int) and ran_on != now:
            self.log(f"note: phases 0-{done} ran on {ran_on} thread(s), this session on {now}; "
                     f"the results will differ in the last bits from an uninterrupted run "
                     f"(--threads {ran_on} matches it)")

    def _run(self, start: int) -> dict[str, Any]:
        config = self.config
        self.started_utc = utc_now()
        write_config_file(self.run_dir, config)
        self.log(f"run {config.name}: {config.mode}"
                 + (f" with {config.mem_manage} memory of {self.memory.capacity} "
                    f"{self.memory.format.name} exemplars"
                    + (f" ({config.memory_bytes} bytes)" if config.memory_bytes else "")
                    if self.memory else "")
                 + f", {len(self.plan.tasks)} tasks, classes in order {self.plan.class_order}")
        self.log(f"dataset {self.split.name}: {len(self.split.train)} train / "
                 f"{len(self.split.test)} test clips at {self.split.sample_rate} Hz, "
                 f"{self.split.clip_seconds} s")
        for phase, tasks in enumerate(self._phases()):
            if phase < start:
                continue
            self.records.append(self.run_phase(phase, tasks))
            self.records[-1].details["threads"] = torch.get_num_threads()  # per phase: resumes
            save_state(self.run_dir, phase, records=[r.as_dict() for r in self.records],
                       memory=self.memory, sampler=self.sampler, run_rng=self.rng,
                       learner_head=self.learner_head)
            write_results(self.run_dir, self._results(complete=False))
        results = self._results(complete=True)
        write_results(self.run_dir, results)
        self.log.write_only("summary\n" + phase_table(results))  # the command prints it once
        exports = [r.details.get("export") or {} for r in self.records]
        unshipped = [i for i, e in enumerate(exports) if e.get("shipped") is False]
        if unshipped:
            self.log(f"WARNING: the device bundles of phases {unshipped} missed the fp32 parity "
                     f"bound and were not shipped; see 'export' in results.json")
        withheld = [i for i, e in enumerate(exports) if e.get("int8") == "withheld"]
        if withheld:
            self.log(f"note: phases {withheld} ship fp32 only: their int8 build missed its "
                     f"parity rule after the search; see 'export' in results.json")
        no_tflm = [i for i, e in enumerate(exports) if e.get("tflm") == "withheld"]
        if no_tflm:
            self.log(f"note: phases {no_tflm} ship no TFLM build: it missed its parity rule; "
                     f"see 'export' in results.json")
        self.log.close()
        return results

    def run_phase(self, phase: int, tasks: list) -> PhaseRecord:
        """Train, update the memory, test on every seen task, save and export one phase."""
        trained = self.train_phase(phase, tasks)
        record, seen = trained.record, trained.record.seen_classes
        self.balanced_finetune(phase, trained)
        n_old = len(seen) - sum(len(task.classes) for task in tasks)
        if self.config.weight_align:
            record.details["weight_align_gamma"] = align_weights(self.model.head, n_old)
        if self.config.bias_correction == "in-loop":
            self.correct_bias(n_old, trained)
        if self.memory is not None:
            self.update_memory(phase, trained)
        else:
            record.details.update(memory_bytes=None, memory_exemplars=None, memory_update_macs=None)
        # With a deployed-only correction the run goes on from this head (and state.pt keeps it);
        # its test accuracy is recorded too, so one run shows what the correction adds.
        self.learner_head = None
        if self.config.bias_correction == "deployed":
            self.learner_head = cpu_state(self.model.head.state_dict())
            per_task, overall = task_accuracy(self.model, self.items.clip_data, trained.seen_tasks)
            if self.correct_bias(n_old, trained):
                record.details["bias_correction"].update(uncorrected_accuracy=overall,
                                                         uncorrected_task_accuracy=per_task)
            else:
                self.learner_head = None
        record.task_accuracy, record.accuracy = task_accuracy(
            self.model, self.items.clip_data, trained.seen_tasks)
        record.details["peak_rss_bytes"] = peak_rss_bytes()
        if (gpu_peak := peak_gpu_memory_bytes(self.device)) is not None:
            record.details["peak_gpu_memory_bytes"] = gpu_peak
        self.log(f"  test accuracy on {len(seen)} classes: {_pct(record.accuracy)}; per task "
                 + " ".join(f"{a:.3f}" for a in record.task_accuracy))
        save_checkpoint(checkpoint_path(self.run_dir, phase), self.model, classes=seen,
                        phase=phase, exp_name=self.config.name)
        record.details["export"] = self._export_phase(phase_dir(self.run_dir, phase), phase, seen,
                                                      trained.new_clips)
        if self.learner_head is not None:
            self.model.head.load_state_dict(self.learner_head)
        return record

    def _distiller(self, phase: int, n_seen: int) -> Distiller | None:
        """The frozen copy of the model as it ended the previous phase (restored from its
        checkpoint on resume), when distillation is on; none in phase 0 (joint has only that)."""
        settings = DistillSettings.of(self.config)
        if not settings.on or phase == 0:
            return None
        return Distiller(self.model, settings, n_seen)

    def train_phase(self, phase: int, tasks: list) -> TrainedPhase:
        """Grow the head and train on the new clips plus the memory."""
        seen_tasks = self.plan.tasks_seen(tasks[-1].index)
        seen = [name for task in seen_tasks for name in task.classes]
        distiller = self._distiller(phase, len(seen))  # before the head grows: the old model
        self.model.head.grow(len(seen))
        macs = ModelMacs.of_model(self.model, self.split.clip_samples)
        record = PhaseRecord(seen_classes=seen)
        self.log(f"phase {phase}: new classes {[c for t in tasks for c in t.classes]}, "
                 f"{len(seen)} seen")

        new_clips = [lc for task in tasks for lc in task.train]
        items = [self.items.new_clip(lc.clip, self.memory, self.config.code_new_clips)
                 for lc in new_clips]
        targets = [lc.target for lc in new_clips]
        if self.memory is not None:
            items += [self.items.exemplar(self.memory, s) for s in range(len(self.memory))]
            targets += [e.target for e in self.memory]
        train = self.items.data(items, targets)
        val = self._validation_data(seen_tasks)
        self.log(f"  training on {len(new_clips)} new clips + "
                 f"{len(items) - len(new_clips)} from memory, validating on {len(val)}")

        teacher_macs = 0 if distiller is None else teacher_macs_per_clip(
            ModelMacs.of_model(distiller.teacher, self.split.clip_samples))
        started = time.perf_counter()
        stop = self.stop_factory(phase, macs, teacher_macs)
        report = self._fit(phase, train, val, stop, distiller)
        record.train_seconds = time.perf_counter() - started
        self.features.forget_source("coded")
        self.log(f"  trained {report.epochs_run} epochs ({report.steps} steps) in "
                 f"{record.train_seconds:.1f} s; {report.selection()}; stopped by "
                 f"{report.stopped_by or 'epochs'}")
        costs = stop.results(report.steps)
        costs.pop("train_seconds", None)  # the record's own train_seconds covers the same span
        ram = device_train_ram(self.model, self.config.batch_size, self.logmel_shape(),
                               forward=lambda model, batch: model.forward_features(batch))
        distill, ram = self._distill_costs(phase, distiller, self._step_macs(macs, teacher_macs),
                                           teacher_macs, costs.get("train_macs"), ram)
        record.details = {
            "epochs_run": report.epochs_run, "best_epoch": report.best_epoch,
            "best_val_accuracy": report.best_val_accuracy,
            "best_val_loss": report.best_val_loss, "selected_by": report.selected_by,
            "steps": report.steps,
            "stopped_by": report.stopped_by, "epoch_seconds": report.epoch_seconds,
            "n_train": len(train), "n_val": len(val), "device": str(self.device),
            "feature_cache": {"enabled": self.features.enabled, "entries": len(self.features),
                              "computed": self.features.computed,
                              "loaded": self.features.loaded,
                              "seconds": self.features.seconds},
            # One stop-reason field: stopped_by names patience or the budget limit reached.
            **{k: v for k, v in costs.items() if k != "stop_reason"},
            "device_train_ram_bytes": ram.total, "device_train_ram": ram.as_dict(),
        }
        if distill is not None:
            record.details["distill"] = distill
        return TrainedPhase(record, new_clips, seen_tasks, macs)

    def balanced_finetune(self, phase: int, trained: TrainedPhase) -> None:
        """Class-balanced fine-tuning (edgecl.training.balanced_finetune) after a phase with old
        classes in the memory; its steps and MACs are added to the phase's, within what is left
        of the phase's compute budget."""
        settings = BalancedSettings.of(self.config)
        if not settings.on or self.memory is None or phase == 0 or len(self.memory) == 0:
            return
        record = trained.record
        quota = max(1, self.memory.capacity // len(record.seen_classes))
        new_targets = [lc.target for lc in trained.new_clips]
        slots, picks = balanced_subset([e.target for e in self.memory], new_targets, quota,
                                       subset_rng(self.config.seed, phase))
        items = ([self.items.exemplar(self.memory, s) for s in slots]
                 + [self.items.new_clip(trained.new_clips[i].clip, self.memory,
                                        self.config.code_new_clips) for i in picks])
        targets = [self.memory.exemplars[s].target for s in slots] + [new_targets[i] for i in picks]
        details = record.details
        budget = self._remaining_budget(details, record.train_seconds)
        entry: dict[str, Any] = {**settings.as_dict(), "per_class": quota, "n_old": len(slots),
                                 "n_new": len(picks), "steps": 0, "macs": 0, "seconds": 0.0}
        if budget is None:
            entry["skipped"] = "the phase's compute budget is spent"
            details["balanced_finetune"] = entry
            self.log("  class-balanced fine-tuning skipped: the phase's compute budget is spent")
            return
        meter = PhaseMeter(budget, step_macs_per_clip=self._step_macs(trained.macs, 0))
        val = self._validation_data(trained.seen_tasks)
        generator = torch.Generator().manual_seed(self.config.seed * 1000 + phase + 500)
        started = time.perf_counter()
        report = fit(self.model, self.items.data(items, targets), val, epochs=settings.epochs,
                     batch_size=self.config.batch_size, lr=settings.lr, patience=0,
                     bn_recal_clips=self.config.bn_recal_clips, generator=generator, stop=meter,
                     name=f"phase {phase} balanced fine-tuning")
        seconds = time.perf_counter() - started
        self.features.forget_source("coded")
        entry.update(steps=meter.steps, macs=meter.macs, seconds=seconds,
                     best_epoch=report.best_epoch, best_val_accuracy=report.best_val_accuracy,
                     stopped_by=report.stopped_by)
        if details.get("train_macs") is not None:
            entry["macs_share"] = meter.macs / (details["train_macs"] + meter.macs)
            details["train_macs"] += meter.macs
        details["train_steps"] = details.get("train_steps", 0) + meter.steps
        record.train_seconds += seconds
        details["balanced_finetune"] = entry
        self.log(f"  class-balanced fine-tuning on {len(slots)} exemplars + {len(picks)} new "
                 f"clips ({quota} per class), {report.epochs_run} epochs at lr "
                 f"{settings.lr:g}: {meter.steps} steps in {seconds:.1f} s; {report.selection()}")

    def _validation_data(self, seen_tasks: list) -> PhaseData:
        """The validation clips of every seen task: model selection's, and bias correction's."""
        return self.items.clip_data([lc for task in seen_tasks for lc in task.val])

    def correct_bias(self, n_old: int, trained: TrainedPhase) -> bool:
        """BiC's correction of the new classes' logits, fit on the phase's validation clips and
        folded into the head (edgecl.training.bias_correction), recorded as `bias_correction`;
        False when there was nothing to correct (no old or no new classes, no clips)."""
        val = self._validation_data(trained.seen_tasks)
        entry = correct_bias(self.model, val, n_old)
        if entry is None:
            return False
        entry["applied"] = self.config.bias_correction
        trained.record.details["bias_correction"] = entry
        where = "the deployed model's" if entry["applied"] == "deployed" else "the"
        self.log(f"  bias correction of {where} new classes' logits: alpha {entry['alpha']:.3f}, "
                 f"beta {entry['beta']:+.3f}; validation {_pct(entry['val_accuracy_before'])} -> "
                 f"{_pct(entry['val_accuracy_after'])} on {entry['val_clips']} clips")
        return True

    def _remaining_budget(self, details: dict[str, Any],
                          train_seconds: float) -> ComputeBudget | None:
        """What the phase's compute budget leaves after its training (None when a limit is
        reached; an unlimited budget stays unlimited)."""
        budget = self.config.compute_budget()
        steps = macs = seconds = None
        if budget.max_steps is not None:
            steps = budget.max_steps - details.get("train_steps", 0)
        if budget.max_train_macs is not None:
            macs = budget.max_train_macs - (details.get("train_macs") or 0)
        if budget.max_train_seconds is not None:
            seconds = budget.max_train_seconds - train_seconds
        if any(value is not None and value <= 0 for value in (steps, macs, seconds)):
            return None
        return ComputeBudget(steps, seconds, macs)

    def _distill_costs(self, phase: int, distiller: Distiller | None, per_clip: int,
                       teacher_macs: int, train_macs: int | None,
                       ram: TrainRam) -> tuple[dict[str, Any] | None, TrainRam]:
        """(the phase's `distill` record: settings and the teacher's MACs and RAM, or None when
        distillation is off; the training RAM with the teacher's weights and activations)."""
        settings = DistillSettings.of(self.config)
        if not settings.on:
            return None, ram
        if distiller is None:
            return {**settings.as_dict(), "teacher": False, "teacher_train_macs": 0,
                    "teacher_macs_share": 0.0, "teacher_ram_bytes": 0,
                    "teacher_ram_share": 0.0}, ram
        teacher_train_macs = share = None
        if train_macs is not None:
            # A step on B clips costs B x per_clip MACs, so train_macs / per_clip clips were trained.
            teacher_train_macs = train_macs // per_clip * teacher_macs
            share = teacher_train_macs / train_macs if train_macs else 0.0
        teacher_ram = device_inference_ram(distiller.teacher, self.config.batch_size,
                                           self.logmel_shape(),
                                           forward=lambda model, batch: model.forward_features(batch))
        ram = replace(ram, teacher=teacher_ram.total)
        record = {**distiller.record(), "teacher_macs_per_clip": teacher_macs,
                  "teacher_train_macs": teacher_train_macs, "teacher_macs_share": share,
                  "teacher_ram_bytes": teacher_ram.total,
                  "teacher_ram_weights_bytes": teacher_ram.weights,
                  "teacher_ram_activations_bytes": teacher_ram.activations,
                  "teacher_ram_share": teacher_ram.total / ram.total}
        self.log(f"  distillation from phase {phase - 1}'s model on {distiller.n_old} old classes "
                 f"(weights output {distiller.output_weight:g}, feature "
                 f"{distiller.feature_weight:g}): teacher {_share(share)} of the training MACs, "
                 f"{_share(record['teacher_ram_share'])} of the training RAM")
        return record, ram

    def _fit(self, phase: int, train: PhaseData, val: PhaseData, stop: StopCondition,
             distiller: Distiller | None = None):
        from tqdm import tqdm

        config = self.config
        bar = tqdm(total=config.epochs, desc=f"phase {phase}", unit="epoch", file=sys.stderr,
                   disable=not self.show_progress, leave=False)
        metrics = MetricsLog(self.run_dir)
        started = last = time.perf_counter()

        def progress(epoch, loss, accuracy, steps=None):
            nonlocal last
            now = time.perf_counter()
            self.estimate.epoch_done(now - last, len(train))
            last = now
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", val=_pct(accuracy))
            self.log.write_only(f"    epoch {epoch}: loss {loss:.4f}, validation {_pct(accuracy)}")
            metrics.add(phase, epoch, steps, loss, accuracy, now - started)
            if self.lines is not None:
                self.lines.epoch(phase, self.estimate.n_phases, epoch, loss, accuracy,
                                 self.estimate.remaining_seconds(phase, epoch, len(train)))

        generator = torch.Generator().manual_seed(config.seed * 1000 + phase)
        try:
            report = fit(self.model, train, val, epochs=config.epochs,
                         batch_size=config.batch_size, lr=config.phase_lr(phase),
                         patience=config.patience,
                         bn_recal_clips=config.bn_recal_clips, generator=generator, stop=stop,
                         progress=progress, name=f"phase {phase}",
                         loss_terms=[] if distiller is None else [distiller.loss],
                         sampling=config.batch_sampling if self.memory is not None else "uniform",
                         augment=config.augment)
        finally:
            bar.close()
            metrics.close()
        self.estimate.phase_done(report.epochs_run)
        return report

    def _check_compute_budget(self) -> None:
        """A MAC budget too small for the first optimizer step would train nothing and end at
        chance with exit 0: refuse it before training, naming the minimum."""
        limit = self.config.max_train_macs
        if limit is None:
            return
        phases = self._phases()
        macs = ModelMacs.of_model(self.model, self.split.clip_samples)
        batch = min(self.config.batch_size, sum(len(task.train) for task in phases[0]))
        needed, detail = batch * self._step_macs(macs, 0), f"a batch of {batch} clips"
        if DistillSettings.of(self.config).on and len(phases) > 1:
            # From phase 1 the teacher's forward adds to every step (a lower bound: the heads
            # grow a little each phase).
            batch = min(self.config.batch_size, sum(len(task.train) for task in phases[1]))
            with_teacher = batch * self._step_macs(macs, teacher_macs_per_clip(macs))
            if with_teacher > needed:
                needed = with_teacher
                detail = f"a batch of {batch} clips with the distillation teacher's forward"
        if limit < needed:
            raise EdgeclError(f"--max-train-macs: {limit:,} allows no optimizer step; one step on "
                              f"{detail} costs {needed:,} MACs, so give at least that")

    def _phase_meter(self, phase: int, macs: ModelMacs, teacher_macs: int = 0) -> PhaseMeter:
        """Default stop condition: the config's compute budget, counting MACs per step (the
        student's training step plus a distillation teacher's forward, per clip)."""
        return PhaseMeter(self.config.compute_budget(),
                          step_macs_per_clip=self._step_macs(macs, teacher_macs))

    def _step_macs(self, macs: ModelMacs, teacher_macs: int) -> int:
        """MACs of a training step per clip: the student's step and the teacher's forward."""
        return train_step_macs(macs, 1, features_cached=self.config.feature_cache) + teacher_macs

    def update_memory(self, phase: int, trained: TrainedPhase) -> None:
        """Refill the memory after training (edgecl.memory_update) and record what it cost."""
        record = trained.record
        update = update_memory(
            self.memory, self.sampler, self.items, trained.new_clips, phase=phase, rng=self.rng,
            model=self.model, model_macs=trained.macs, sample_rate=self.split.sample_rate,
            clip_samples=self.split.clip_samples,
            exemplar_shape=self.exemplar_shape(self.memory.format),
            budget_bytes=self.config.memory_bytes)
        record.memory_update_seconds = update.seconds
        record.details.update(update.costs)
        record.memory_balance = self.memory.class_balance(self.plan.class_order)
        self.log(f"  memory update by {self.sampler.name}: {len(self.memory)}/"
                 f"{self.memory.capacity} exemplars in {record.memory_update_seconds:.2f} s; "
                 f"per class {count_range(record.memory_balance)}")

    def _export_phase(self, phase_dir: Path, phase: int, seen: list[str],
                      new_clips: list) -> dict[str, Any] | None:
        """Device bundle of this phase's model; returns its export status (see
        firmware_export.run_export.export_with_status: a miss never stops the run)."""
        if not self.config.export:
            return None
        from firmware_export.run_export import export_with_status

        seen_tasks = self.plan.tasks_seen(self._phases()[phase][-1].index)
        model = self.model if self.device.type == "cpu" else copy.deepcopy(self.model).cpu()
        return export_with_status(model, phase_dir, phase=phase, classes=seen,
                                  seen_tasks=seen_tasks, waveform=self.audio.waveform,
                                  log=self.log, target=self.config.target,
                                  tflm_window_seconds=self.config.tflm_window_seconds)

    def _results(self, complete: bool) -> dict[str, Any]:
        made_by = provenance(started=getattr(self, "started_utc", None),
                             ended=utc_now() if complete else None,
                             threads=torch.get_num_threads(), device=self.device)
        return build_results(self.config.to_dict(), self.plan.class_order,
                             [t.classes for t in self.plan.tasks],
                             [r.as_dict() for r in self.records], complete, provenance=made_by)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _share(value: float | None) -> str:
    return "?" if value is None else f"{100 * value:.1f}%"


def train(config: RunConfig, **kwargs) -> dict[str, Any]:
    """Run `edgecl train` for `config` (resuming or skipping it, see ContinualRun); returns the
    results document."""
    return ContinualRun(config, **kwargs).run()
