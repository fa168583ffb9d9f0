"""The continual learner: phase after phase, train on the new clips plus the replay memory, refill
the memory with the chosen sampler, test on every class seen so far, save a checkpoint, export.

Modes: `finetune` (no memory), `replay` (memory refilled by a sampler after each phase) and `joint`
(one phase on every class: the non-incremental upper bound). Everything a run produces goes to
WORKSPACE/EXP_NAME: results.json, train.log and phase_<i>/checkpoint.pt.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgecl.budget import (ForwardMacCounter, ModelMacs, PhaseMeter, capacity_for_budget,
                           device_train_ram, peak_rss_bytes, perturbation_macs, train_step_macs)
from edgecl.config import RunConfig
from edgecl.errors import EdgeclError
from edgecl.features import FeatureCache
from edgecl.fileio import atomic_write_with
from edgecl.memory import ReplayMemory
from edgecl.results import RunLog, build_results, phase_table, write_results
from edgecl.samplers import Candidate, SamplerOptions, SelectionContext, build_sampler
from edgecl.training import PhaseData, StopCondition, evaluate, fit, predict

WAVEFORM_RAM_BYTES = 512 * 1024 * 1024  # keep decoded clips in RAM up to this much
CHECKPOINT_NAME = "checkpoint.pt"


def set_determinism(seed: int, threads: int) -> None:
    """Seed every generator a run uses and fix the CPU thread count."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.set_num_threads(max(1, threads))


class ClipAudio:
    """Waveforms of dataset clips at the model's rate and length, cached in RAM up to a limit."""

    def __init__(self, sample_rate: int, clip_samples: int, ram_bytes: int = WAVEFORM_RAM_BYTES):
        self.sample_rate, self.clip_samples = sample_rate, clip_samples
        self._room = ram_bytes // max(1, 4 * clip_samples)
        self._cache: dict[str, np.ndarray] = {}

    def waveform(self, clip) -> np.ndarray:
        key = str(clip.path)
        if key in self._cache:
            return self._cache[key]
        from edgecl.audio import load_audio
        wave = load_audio(clip.path, self.sample_rate, self.clip_samples)
        if len(self._cache) < self._room:
            self._cache[key] = wave
        return wave

    def loader(self, clip) -> Callable[[], np.ndarray]:
        return lambda: self.waveform(clip)


def clip_key(clip) -> str:
    return str(clip.path)


@dataclass
class PhaseRecord:
    """Everything measured in one phase (becomes one entry of results.json)."""

    seen_classes: list[str]
    accuracy: float = 0.0
    task_accuracy: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
    memory_update_seconds: float | None = None
    memory_balance: dict[str, int] | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"seen_classes": self.seen_classes, "accuracy": self.accuracy,
                "task_accuracy": self.task_accuracy, "train_seconds": self.train_seconds,
                "memory_update_seconds": self.memory_update_seconds,
                "memory_balance": self.memory_balance, **self.details}


class ContinualRun:
    """One run of `edgecl train`. Build it, then call `run()`.

    `stop_factory(phase) -> StopCondition` supplies each phase's stop condition; by default an
    edgecl.budget.PhaseMeter that counts steps, MACs and time and enforces the config's budgets.
    """

    def __init__(self, config: RunConfig, *, show_progress: bool | None = None,
                 stop_factory: Callable[[int], StopCondition] | None = None) -> None:
        from edgecl.data import load_dataset
        from edgecl.tasks import make_tasks

        set_determinism(config.seed, config.threads)
        self.split = load_dataset(config.dataset, config.data_root, test_fold=config.test_fold,
                                  seed=config.seed, workspace=config.workspace,
                                  sample_rate=config.sample_rate, clip_seconds=config.clip_seconds,
                                  clips_per_class=config.clips_per_class)
        self.config = config.with_tasks_for(len(self.split.classes))
        config = self.config
        self.plan = make_tasks(self.split, config.n_tasks, config.n_init_cls,
                               config.n_cls_a_task, config.seed)
        self.run_dir = Path(config.workspace) / config.name
        self.log = RunLog(self.run_dir / "train.log", echo=not config.quiet)
        self.show_progress = (not config.quiet and sys.stderr.isatty()) if show_progress is None \
            else show_progress
        self.stop_factory = stop_factory or self._phase_meter
        self.rng = np.random.default_rng(config.seed)
        self.audio = ClipAudio(self.split.sample_rate, self.split.clip_samples)
        self.model = self._build_model()
        self.features = FeatureCache(self.model.frontend, enabled=config.feature_cache)
        self.memory, self.sampler = self._build_memory()
        self.records: list[PhaseRecord] = []

    # --- construction ---------------------------------------------------------------------

    def _build_model(self):
        from models import build_model
        from models.frontend import FrontEndConfig

        first = self.plan.tasks[0] if self.config.mode != "joint" else None
        n_classes = len(first.classes) if first else len(self.plan.class_order)
        return build_model(self.config.model, n_classes,
                           FrontEndConfig.for_sample_rate(self.split.sample_rate),
                           width=self.config.width)

    def _build_memory(self):
        if not self.config.uses_memory:
            return None, None
        from edgecl.memory.formats import get_format
        fmt = get_format(self.config.memory_format)
        capacity = self.config.memory_size
        if self.config.memory_bytes is not None:  # fails now if the run's classes cannot fit
            capacity = capacity_for_budget(self.config.memory_bytes, fmt, self._exemplar_shape(fmt),
                                           len(self.plan.class_order))
        memory = ReplayMemory(capacity, fmt)
        sampler = build_sampler(self.config.mem_manage, SamplerOptions(
            self.config.uncert_metric, self.config.metric_k, self.config.noise_lambda))
        if sampler.needs_waveform and memory.domain != "waveform":
            raise EdgeclError(f"--memory-format: {self.config.memory_format} stores log-mels, but "
                              f"--uncert-metric {self.config.uncert_metric} perturbs waveforms")
        return memory, sampler

    # --- data as cached features ----------------------------------------------------------

    def _clip_item(self, clip):
        return (clip_key(clip), self.audio.loader(clip), "waveform")

    def _new_clip_item(self, clip):
        """A new clip as a training item. With code_new_clips and a lossy memory format it goes
        through the format's encode/decode like the exemplars, so the coding artefacts are not a
        cue that separates old classes (replayed from memory) from new ones."""
        memory = self.memory
        if memory is None or not self.config.code_new_clips or memory.format.name == "float32":
            return self._clip_item(clip)
        fmt, key = memory.format, f"coded:{clip_key(clip)}"
        if fmt.domain == "waveform":
            return (key, lambda: fmt.decode(fmt.encode(self.audio.waveform(clip))), "waveform")
        features = lambda: self.features.get([self._clip_item(clip)])[0].numpy()  # noqa: E731
        return (key, lambda: fmt.decode(fmt.encode(features())), "logmel")

    def _memory_item(self, slot: int):
        exemplar = self.memory.exemplars[slot]
        return (f"memory:{exemplar.key}", lambda: self.memory.decode(slot), self.memory.domain)

    def _phase_data(self, items: Sequence[tuple], targets: Sequence[int]) -> PhaseData:
        items = list(items)
        return PhaseData(lambda idx: self.features.get([items[i] for i in idx]),
                         torch.as_tensor(list(targets), dtype=torch.long))

    def _clip_data(self, labelled: Sequence) -> PhaseData:
        return self._phase_data([self._clip_item(lc.clip) for lc in labelled],
                                [lc.target for lc in labelled])

    # --- one phase ------------------------------------------------------------------------

    def _phases(self) -> list[list]:
        """Tasks trained in each phase: one each, or all at once for joint."""
        tasks = self.plan.tasks
        return [list(tasks)] if self.config.mode == "joint" else [[t] for t in tasks]

    def run(self) -> dict[str, Any]:
        """Train every phase; returns the results document (also written to results.json)."""
        config = self.config
        self.log(f"run {config.name}: {config.mode}"
                 + (f" with {config.mem_manage} memory of {self.memory.capacity} "
                    f"{self.memory.format.name} exemplars"
                    + (f" ({config.memory_bytes} bytes)" if config.memory_bytes else "")
                    if self.memory else "")
                 + f", {len(self.plan.tasks)} tasks, classes in order {self.plan.class_order}")
        self.log(f"dataset {self.split.name}: {len(self.split.train)} train / "
                 f"{len(self.split.test)} test clips at {self.split.sample_rate} Hz, "
                 f"{self.split.clip_seconds} s")
        results: dict[str, Any] = {}
        for phase, tasks in enumerate(self._phases()):
            self.records.append(self._run_phase(phase, tasks))
            results = self._results(complete=False)
            write_results(self.run_dir, results)
        results = self._results(complete=True)
        write_results(self.run_dir, results)
        self.log("summary\n" + phase_table(results))
        exports = [r.details.get("export") or {} for r in self.records]
        unshipped = [i for i, e in enumerate(exports) if e.get("shipped") is False]
        if unshipped:
            self.log(f"WARNING: the device bundles of phases {unshipped} missed the fp32 parity "
                     f"bound and were not shipped; see 'export' in results.json")
        withheld = [i for i, e in enumerate(exports) if e.get("int8") == "withheld"]
        if withheld:
            self.log(f"note: phases {withheld} ship fp32 only: their int8 build missed its "
                     f"parity rule after the search; see 'export' in results.json")
        self.log.close()
        return results

    def _run_phase(self, phase: int, tasks: list) -> PhaseRecord:
        record, new_clips, seen_tasks = self.train_phase(phase, tasks)
        seen = record.seen_classes
        if self.memory is not None:
            new_classes = [c for t in tasks for c in t.classes]
            started = time.perf_counter()
            with ForwardMacCounter(self.model, self.model_macs) as update_macs:
                candidates, new_candidates, context = self.selection_inputs(
                    phase, new_clips, new_classes, seen, self.features)
                chosen = self.sampler.select(candidates, self.memory.capacity, context)
                before = set(self.memory.keys())
                self.memory.update(chosen, [(c.key, c.target, c.load) for c in new_candidates])
            record.memory_update_seconds = time.perf_counter() - started
            record.details.update(self._memory_costs(update_macs))
            self.features.forget([f"memory:{k}" for k in before - set(self.memory.keys())])
            record.memory_balance = self.memory.class_balance(self.plan.class_order)
            self.log(f"  memory update by {self.sampler.name}: {len(self.memory)}/"
                     f"{self.memory.capacity} exemplars in {record.memory_update_seconds:.2f} s; "
                     f"per class {record.memory_balance}")
        else:
            record.details.update(memory_bytes=None, memory_exemplars=None, memory_update_macs=None)

        record.task_accuracy, record.accuracy = self._test(seen_tasks)
        record.details["peak_rss_bytes"] = peak_rss_bytes()
        self.log(f"  test accuracy on {len(seen)} classes: {_pct(record.accuracy)}; per task "
                 + " ".join(f"{a:.3f}" for a in record.task_accuracy))
        phase_dir = self.run_dir / f"phase_{phase}"
        self._save_checkpoint(phase_dir, phase, seen)
        record.details["export"] = self._export_phase(phase_dir, phase, seen, new_clips)
        return record

    def train_phase(self, phase: int, tasks: list) -> tuple[PhaseRecord, list, list]:
        """Grow the head and train on the new clips plus the memory.
        Returns the phase record, the new clips and the tasks seen so far."""
        plan = self.plan
        seen_tasks = plan.tasks[: plan.tasks.index(tasks[-1]) + 1]
        seen = [name for task in seen_tasks for name in task.classes]
        self.model.head.grow(len(seen))
        self.model_macs = ModelMacs.of_model(self.model, self.split.clip_samples)
        record = PhaseRecord(seen_classes=seen)
        self.log(f"phase {phase}: new classes {[c for t in tasks for c in t.classes]}, "
                 f"{len(seen)} seen")

        new_clips = [lc for task in tasks for lc in task.train]
        items = [self._new_clip_item(lc.clip) for lc in new_clips]
        targets = [lc.target for lc in new_clips]
        if self.memory is not None:
            items += [self._memory_item(s) for s in range(len(self.memory))]
            targets += [e.target for e in self.memory]
        train = self._phase_data(items, targets)
        val = self._clip_data([lc for task in seen_tasks for lc in task.val])
        self.log(f"  training on {len(new_clips)} new clips + "
                 f"{len(items) - len(new_clips)} from memory, validating on {len(val)}")

        started = time.perf_counter()
        report = self._fit(phase, train, val)
        record.train_seconds = time.perf_counter() - started
        self.features.forget([key for key, _, _ in items if key.startswith("coded:")])
        self.log(f"  trained {report.epochs_run} epochs ({report.steps} steps) in "
                 f"{record.train_seconds:.1f} s; best epoch {report.best_epoch} with validation "
                 f"accuracy {_pct(report.best_val_accuracy)}; stopped by {report.stopped_by or 'epochs'}")
        record.details = {
            "epochs_run": report.epochs_run, "best_epoch": report.best_epoch,
            "best_val_accuracy": report.best_val_accuracy, "steps": report.steps,
            "stopped_by": report.stopped_by, "epoch_seconds": report.epoch_seconds,
            "n_train": len(train), "n_val": len(val),
            "feature_cache": {"enabled": self.features.enabled, "entries": len(self.features),
                              "computed": self.features.computed,
                              "seconds": self.features.seconds},
            **self._training_costs(report),
        }
        return record, new_clips, seen_tasks

    def _fit(self, phase: int, train: PhaseData, val: PhaseData):
        from tqdm import tqdm

        config = self.config
        bar = tqdm(total=config.epochs, desc=f"phase {phase}", unit="epoch", file=sys.stderr,
                   disable=not self.show_progress, leave=False)

        def progress(epoch, loss, accuracy):
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", val=_pct(accuracy))
            self.log.write_only(f"    epoch {epoch}: loss {loss:.4f}, validation {_pct(accuracy)}")

        generator = torch.Generator().manual_seed(config.seed * 1000 + phase)
        try:
            self.stop = self.stop_factory(phase)
            return fit(self.model, train, val, epochs=config.epochs, batch_size=config.batch_size,
                       lr=config.lr, patience=config.patience, generator=generator,
                       stop=self.stop, progress=progress)
        finally:
            bar.close()

    def selection_inputs(self, phase: int, new_clips: list, new_classes: list[str],
                         seen: list[str], features: FeatureCache):
        """What the sampler sees: candidates (the memory in slot order, then this phase's clips
        shuffled), the new candidates alone, and the selection context using `features`."""
        memory, order = self.memory, self.plan.class_order
        stream = [new_clips[i] for i in self.rng.permutation(len(new_clips))]
        memory_candidates = [Candidate(e.key, e.target, True, (lambda s=s: memory.decode(s)))
                             for s, e in enumerate(memory)]
        new_candidates = [Candidate(clip_key(lc.clip), lc.target, False,
                                    self._memory_domain_loader(lc.clip)) for lc in stream]
        item_of = {(True, c.key): self._memory_item(s) for s, c in enumerate(memory_candidates)}
        item_of.update({(False, clip_key(lc.clip)): self._clip_item(lc.clip) for lc in stream})
        context = SelectionContext(
            phase=phase, seen_classes=list(range(len(seen))),
            new_classes=[order.index(c) for c in new_classes], rng=self.rng, model=self.model,
            features=lambda batch: features.get([item_of[(c.in_memory, c.key)] for c in batch]),
            domain=memory.domain, sample_rate=self.split.sample_rate, log=self.log)
        return memory_candidates + new_candidates, new_candidates, context

    def _memory_domain_loader(self, clip) -> Callable[[], np.ndarray]:
        if self.memory.domain == "waveform":
            return self.audio.loader(clip)
        return lambda: self.features.get([self._clip_item(clip)])[0].numpy()

    def _test(self, seen_tasks: list) -> tuple[list[float], float]:
        """Accuracy per seen task and on all of their test clips together."""
        labelled = [lc for task in seen_tasks for lc in task.test]
        data = self._clip_data(labelled)
        correct = (predict(self.model, data) == data.targets).numpy()
        per_task, start = [], 0
        for task in seen_tasks:
            part = correct[start:start + len(task.test)]
            per_task.append(float(part.mean()) if len(part) else 0.0)
            start += len(task.test)
        return per_task, float(correct.mean()) if len(correct) else 0.0

    # --- device budgets (edgecl.budget) ----------------------------------------------------

    def _logmel_shape(self) -> tuple[int, ...]:
        """Shape [1, F, T'] of one clip's log-mel features."""
        with torch.no_grad():
            return tuple(self.model.frontend(torch.zeros(1, self.split.clip_samples)).shape[1:])

    def _exemplar_shape(self, fmt) -> tuple[int, ...]:
        return (self.split.clip_samples,) if fmt.domain == "waveform" else self._logmel_shape()

    def _phase_meter(self, phase: int) -> PhaseMeter:
        """Default stop condition: the config's compute budget, counting MACs per step."""
        per_clip = train_step_macs(self.model_macs, 1, features_cached=self.config.feature_cache)
        return PhaseMeter(self.config.compute_budget(), step_macs_per_clip=per_clip)

    def _training_costs(self, report) -> dict[str, Any]:
        """Steps, MACs and budget stop of the phase just trained, and its device RAM estimate."""
        stop = self.stop
        costs = stop.results() if isinstance(stop, PhaseMeter) else {
            "train_steps": report.steps, "train_macs": None,
            "stopped_for_budget": stop.reason is not None, "stop_reason": stop.reason}
        costs.pop("train_seconds", None)  # the record's own train_seconds covers the same span
        ram = device_train_ram(self.model, self.config.batch_size, self._logmel_shape(),
                               forward=lambda model, batch: model.forward_features(batch))
        return {**costs, "device_train_ram_bytes": ram.total, "device_train_ram": ram.as_dict()}

    def _memory_costs(self, update_macs: ForwardMacCounter) -> dict[str, Any]:
        """Bytes held by the memory and the MACs its update ran (perturbations estimated)."""
        per_perturbation = 0
        if self.sampler.needs_waveform:
            per_perturbation = perturbation_macs(self.config.uncert_metric,
                                                 self.split.clip_samples, self.split.sample_rate)
        fmt = self.memory.format
        return {
            "memory_bytes": {"used": self.memory.stored_bytes(), "budget": self.config.memory_bytes,
                             "per_exemplar": fmt.nbytes(self._exemplar_shape(fmt))},
            "memory_exemplars": len(self.memory), "memory_capacity": self.memory.capacity,
            "memory_format": fmt.name,
            "memory_update_macs": update_macs.macs_with_perturbations(per_perturbation),
        }

    # --- artifacts ------------------------------------------------------------------------

    def _save_checkpoint(self, phase_dir: Path, phase: int, seen: list[str]) -> Path:
        """Weights-only checkpoint: loads with torch.load(weights_only=True)."""
        payload = {"state_dict": self.model.state_dict(), "model_config": self.model.model_config(),
                   "classes": list(seen), "phase": phase, "exp_name": self.config.name}
        return atomic_write_with(phase_dir / CHECKPOINT_NAME, lambda tmp: torch.save(payload, tmp))

    def _export_phase(self, phase_dir: Path, phase: int, seen: list[str],
                      new_clips: list) -> dict[str, Any] | None:
        """Device bundle of this phase's model (firmware_export). Returns the export status.

        The fp32 model ships whenever its parity holds; the int8 model ships when the int8 search
        meets its rule and is otherwise withheld with the reason. A phase whose fp32 model misses
        parity (a bug, not noise) ships nothing: the miss is logged loudly with its figures and
        recorded in results.json, and the run goes on, because the learning results stay valid.
        """
        if not self.config.export:
            return None
        from firmware_export.parity import ParityError
        from firmware_export.run_export import export_seen_tasks

        seen_tasks = [task for task in self.plan.tasks if set(task.classes) <= set(seen)]
        try:
            manifest = export_seen_tasks(self.model, phase_dir, phase=phase, classes=seen,
                                         seen_tasks=seen_tasks, waveform=self.audio.waveform,
                                         log=self.log)
        except ParityError as error:
            self.log(f"  EXPORT NOT SHIPPED: {error}")
            return {"shipped": False, "error": str(error), "parity": error.figures}
        int8 = manifest["artifacts"]["int8"]
        return {"shipped": True, "device_model": manifest["device_model"],
                "int8": int8["status"], "int8_reason": int8["reason"]}

    def _results(self, complete: bool) -> dict[str, Any]:
        return build_results(self.config.to_dict(), self.plan.class_order,
                             [t.classes for t in self.plan.tasks],
                             [r.as_dict() for r in self.records], complete)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def train(config: RunConfig, **kwargs) -> dict[str, Any]:
    """Run `edgecl train` for `config`; returns the results document."""
    return ContinualRun(config, **kwargs).run()
