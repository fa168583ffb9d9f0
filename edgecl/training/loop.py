"""Train one phase: Adam, mini-batches of cached log-mel features, early stopping on the held-out
validation split with the best weights restored.

Model selection: the best epoch is the one with the highest validation accuracy; among epochs with
equal accuracy (a small split saturates at 100% within a few epochs) the lowest validation loss
wins, not the earliest. `FitReport.selected_by` says which of the two decided.

When training stops is decided in two places only: `fit`'s epoch/patience rule (the published
schedule) and a StopCondition asked before every optimizer step (edgecl.training.stop).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from edgecl.allocator import purge_caching_allocator
from edgecl.device import device_of, synchronize
from edgecl.errors import EdgeclError
from edgecl.precision import FP32, TrainingPrecision
from edgecl.training.augment import augment as augment_batch
from edgecl.training.batch_sampling import epoch_order
from edgecl.training.stop import StopCondition


class DivergedError(EdgeclError):
    """Training produced a non-finite loss: the run stops, its later results would be invalid."""


@dataclass
class PhaseData:
    """Clips of one split as cached features: `features(indices) -> Tensor [B, 1, F, T']`."""

    features: Callable[[Sequence[int]], torch.Tensor]
    targets: torch.Tensor  # [N] int64

    def __len__(self) -> int:
        return len(self.targets)


@dataclass
class FitReport:
    """What happened while training one phase."""

    epochs_run: int = 0
    best_epoch: int | None = None
    best_val_accuracy: float | None = None
    steps: int = 0
    epoch_seconds: list[float] = field(default_factory=list)
    stopped_by: str | None = None  # "patience", a StopCondition reason, or None (all epochs)
    best_val_loss: float | None = None
    val_accuracy: list[float | None] = field(default_factory=list)  # per epoch
    val_loss: list[float | None] = field(default_factory=list)

    @property
    def selected_by(self) -> str:
        """What chose the best epoch: "val_accuracy", "val_loss" (a tie on accuracy broken by
        loss) or "last_epoch" (no validation clips)."""
        if self.best_val_accuracy is None:
            return "last_epoch"
        ties = sum(1 for accuracy in self.val_accuracy if accuracy == self.best_val_accuracy)
        return "val_loss" if ties > 1 else "val_accuracy"

    def selection(self) -> str:
        """One line on the chosen epoch and why, for the run log."""
        if self.best_val_accuracy is None:
            return f"kept the last epoch ({self.best_epoch}): no validation clips"
        basis = {"val_accuracy": "highest accuracy",
                 "val_loss": "tie on accuracy broken by loss"}[self.selected_by]
        return (f"best epoch {self.best_epoch}: val acc {100 * self.best_val_accuracy:.1f}%, "
                f"val loss {self.best_val_loss:.3g} ({basis})")


def _batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """`order` in batches of `batch_size`; a trailing batch under an eighth of a batch (at least
    one clip) is folded into the one before. Why: such a tail is a full-size Adam step taken on
    BatchNorm statistics of 1-3 clips, the last step of every epoch before validation. At memory
    50 the synthetic default trains on 194 clips a phase (6 x 32 + 2) and that step cost 5-8
    points of A_last (docs/results/forgetting.md, "Herding ties, and a two-clip batch")."""
    chunks = list(torch.split(order, batch_size))
    if len(chunks) > 1 and len(chunks[-1]) < max(2, batch_size // 8):
        last = chunks.pop()  # popped first: with two chunks, chunks[-2] is gone after the pop
        chunks[-1] = torch.cat([chunks[-1], last])
    return chunks


@torch.no_grad()
def recalibrate_batchnorm(model, data: PhaseData, batch_size: int = 64,
                          max_clips: int = 1024, indices: torch.Tensor | None = None,
                          precision: TrainingPrecision = FP32) -> None:
    """Replace every BatchNorm's running statistics by exact averages over (up to `max_clips` of)
    `data`, computed with the current weights ("precise BN", Wu & Johnson 2021); over the clips
    `indices` instead when given (a class-balanced draw, edgecl.training.batch_sampling).
    The forward runs under `precision`'s autocast, as training does; the statistics stay float32
    buffers (BatchNorm accumulates them in float32 from bf16 activations, edgecl.precision).

    Why: with the few steps of a small phase (5 steps an epoch on 144 clips), the momentum-0.1
    running averages lag the weights Adam is changing, and eval-mode predictions sit at chance
    while train-mode ones are right. Measured on the synthetic phase 0 (BC-ResNet, 8 epochs):
    eval accuracy 50% before, 92.5% after recalibration.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms or len(data) < 2:
        return
    # Batches of 64, twice the training's: the caching allocator's kept pages of the training
    # steps' sizes would add to them (edgecl.allocator); a no-op under other mallocs.
    purge_caching_allocator()
    momenta = [norm.momentum for norm in norms]
    was_training = model.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches below
    model.train()
    if indices is None:
        # Evenly spaced, so a capped subset still covers both new clips and replayed ones.
        indices = torch.linspace(0, len(data) - 1,
                                 min(len(data), max_clips)).round().long().unique()
    for chunk in _batches(indices, batch_size):
        features = data.features(chunk.tolist())  # the front end (cached) stays float32
        with precision.autocast():
            model.forward_features(features)
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.train(was_training)


@torch.no_grad()
def logits(model, data: PhaseData, batch_size: int = 128) -> torch.Tensor:
    """Logits of every clip [N, classes], in eval mode."""
    model.eval()
    parts = [model.forward_features(data.features(idx.tolist()))[0]
             for idx in torch.split(torch.arange(len(data)), batch_size)]
    return torch.cat(parts) if parts else torch.zeros(0, model.head.n_classes)


def predict(model, data: PhaseData, batch_size: int = 128) -> torch.Tensor:
    """Predicted class of every clip [N]."""
    return logits(model, data, batch_size).argmax(dim=1)


def task_accuracy(model, clip_data: Callable[[list], PhaseData],
                  tasks: Sequence) -> tuple[list[float], float]:
    """Accuracy on each task's test clips and on all of them together; `clip_data(labelled)` is
    the PhaseData of a list of LabelledClips."""
    labelled = [lc for task in tasks for lc in task.test]
    data = clip_data(labelled)
    correct = (predict(model, data) == data.targets).cpu().numpy()
    per_task, start = [], 0
    for task in tasks:
        part = correct[start:start + len(task.test)]
        per_task.append(float(part.mean()) if len(part) else 0.0)
        start += len(task.test)
    return per_task, float(correct.mean()) if len(correct) else 0.0


def evaluate(model, data: PhaseData, batch_size: int = 128) -> float | None:
    """Accuracy on `data` (None when it is empty)."""
    return evaluate_with_loss(model, data, batch_size)[0]


@torch.no_grad()
def evaluate_with_loss(model, data: PhaseData, batch_size: int = 128,
                       precision: TrainingPrecision = FP32) -> tuple[float | None, float | None]:
    """(accuracy, mean cross-entropy) on `data`, in eval mode; (None, None) when it is empty.
    The forward runs under `precision`'s autocast (validation during training); the loss is
    computed in float32."""
    if len(data) == 0:
        return None, None
    model.eval()
    correct, loss = 0, 0.0
    for idx in torch.split(torch.arange(len(data)), batch_size):
        features = data.features(idx.tolist())  # the front end (cached) stays float32
        with precision.autocast():
            logits = model.forward_features(features)[0]
        logits = logits.float()  # a no-op in fp32
        targets = data.targets[idx]
        correct += int((logits.argmax(dim=1) == targets).sum())
        loss += float(F.cross_entropy(logits, targets, reduction="sum"))
    return correct / len(data), loss / len(data)


def _better(accuracy: float, loss: float, best_accuracy: float, best_loss: float) -> bool:
    """Higher validation accuracy wins; on equal accuracy, lower validation loss."""
    return accuracy > best_accuracy or (accuracy == best_accuracy and loss < best_loss)


def fit(model, train: PhaseData, val: PhaseData, *, epochs: int, batch_size: int, lr: float,
        patience: int, generator: torch.Generator, bn_recal_clips: int = 1024,
        stop: StopCondition | None = None, progress: Callable | None = None,
        name: str = "training", loss_terms: Sequence[Callable] = (), sampling: str = "uniform",
        augment: str = "none", precision=None) -> FitReport:
    """Train `model` on `train`; keep the weights of the best epoch on the validation split
    (highest accuracy, ties broken by lower loss).

    Each of `loss_terms` (`term(batch, logits, embedding) -> loss`, e.g. a distillation
    teacher's, edgecl.steps) is added to every batch's cross-entropy, in order.
    Early stopping ends training after `patience` epochs without improvement (0 disables it).
    After each epoch, BatchNorm statistics are re-estimated on up to `bn_recal_clips` training
    clips (0: kept as training left them). `sampling` draws each epoch's clips
    (edgecl.training.batch_sampling: uniform, class-balanced, square-root or progressive); the
    recalibration clips are drawn the same way. `augment` (edgecl.training.augment) transforms
    each training batch. `precision` (an edgecl.precision.TrainingPrecision; None: fp32) runs
    the training forward, the recalibration forward and validation under its autocast; the
    losses and the BatchNorm statistics are float32.
    Without validation clips the last epoch's weights are kept. `progress(epoch, loss, val_acc,
    steps)` is called after each epoch. A non-finite loss raises DivergedError naming `name` (e.g.
    "phase 2"): the weights are unusable, so nothing trained after it may be reported.
    """
    stop = stop or StopCondition()
    report = FitReport()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    precision = precision or FP32
    optimizer_step = precision.optimizer_step(optimizer)
    best_state, stale = copy.deepcopy(model.state_dict()), 0
    stop.start()
    for epoch in range(epochs):
        synchronize(device_of(model))
        started = time.perf_counter()
        model.train()
        order = epoch_order(train.targets, sampling, generator, epoch=epoch, epochs=epochs)
        total_loss, seen = _train_epoch(model, (optimizer, optimizer_step), train,
                                        _batches(order, batch_size), stop=stop, report=report,
                                        loss_terms=loss_terms, augment=augment,
                                        generator=generator, where=(name, epoch, lr),
                                        precision=precision)
        if seen == 0:  # stopped before any step of this epoch
            break
        if bn_recal_clips:
            recal = None if sampling == "uniform" else epoch_order(
                train.targets, sampling, generator, count=min(len(train), bn_recal_clips),
                epoch=epoch, epochs=epochs)
            recalibrate_batchnorm(model, train, max_clips=bn_recal_clips, indices=recal,
                                  precision=precision)
        accuracy, val_loss = evaluate_with_loss(model, val, precision=precision)
        synchronize(device_of(model))  # the epoch's time covers its kernels on a GPU
        if _record_epoch(report, epoch, time.perf_counter() - started, accuracy, val_loss):
            best_state, stale = copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
        if progress is not None:
            progress(epoch, total_loss / seen, accuracy, report.steps)
        if report.stopped_by is not None:
            break
        if patience and stale >= patience:
            report.stopped_by = "patience"
            break
    stop.finish()
    model.load_state_dict(best_state)
    return report


def _train_epoch(model, optimizer: tuple, train: PhaseData,
                 batches: list[torch.Tensor], *, stop: StopCondition, report: FitReport,
                 loss_terms: Sequence[Callable], augment: str, generator: torch.Generator,
                 where: tuple[str, int, float], precision) -> tuple[float, int]:
    """One epoch's optimizer steps over `batches` (index tensors into `train`) until `stop`
    says no; returns (summed loss x clips, clips trained). `optimizer`: (the optimizer, its
    `step(loss)` in the run's precision). `where`: (the training's name, the
    epoch, the learning rate) for a DivergedError's message."""
    total_loss, seen = 0.0, 0
    optimizer, optimizer_step = optimizer
    for indices in batches:
        if stop.should_stop(len(indices)):
            report.stopped_by = stop.reason or "stop condition"
            break
        batch = augment_batch(train.features(indices.tolist()), augment, generator)
        with precision.autocast():
            logits, embedding = model.forward_features(batch)
        logits, embedding = logits.float(), embedding.float()  # the losses in float32
        loss = F.cross_entropy(logits, train.targets[indices])
        for term in loss_terms:
            loss = loss + term(batch, logits, embedding)
        value = loss.item()  # the step's one wait for the device
        if not math.isfinite(value):
            name, epoch, lr = where
            raise DivergedError(f"{name}: training diverged (loss {value} at epoch {epoch}, "
                                f"step {report.steps}); lower --lr (this run: {lr:g}) or check "
                                f"the training clips")
        optimizer.zero_grad(set_to_none=True)
        optimizer_step(loss)
        stop.step_done(len(indices))
        report.steps += 1
        total_loss += value * len(indices)
        seen += len(indices)
    return total_loss, seen


def _record_epoch(report: FitReport, epoch: int, seconds: float, accuracy: float | None,
                  val_loss: float | None) -> bool:
    """Add an epoch's validation figures to `report`; True when it is the best so far (always
    without validation clips: the last epoch is kept)."""
    report.epochs_run = epoch + 1
    report.epoch_seconds.append(seconds)
    report.val_accuracy.append(accuracy)
    report.val_loss.append(val_loss)
    best = report.best_val_accuracy
    if accuracy is None or best is None or _better(accuracy, val_loss, best,
                                                   report.best_val_loss):
        report.best_epoch, report.best_val_accuracy = epoch, accuracy
        report.best_val_loss = val_loss
        return True
    return False
