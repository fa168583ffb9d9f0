"""Where a continual run's accuracy goes: `edgecl diagnose RUN`.

For one phase's checkpoint (the last by default), on the test clips of every class seen so far:

- per-task accuracy, and how the errors on old tasks spread: the share of them that predict a
  class of the newest task (a classifier biased toward the newest classes sends most errors there);
- the head: mean L2 norm of each task's weight rows and mean bias (bias toward the newest classes
  shows as larger rows for them);
- BatchNorm drift: per BatchNorm layer, where its running mean sits between the mean of its input
  over old-class clips and over newest-class clips: share_new = d_old / (d_old + d_new) with d the
  L2 distance of the running mean to each group's mean; 0.5 is balanced, 1 means the statistics are
  the newest classes'. The figure is the mean over layers;
- counterfactual accuracies (nothing is saved): old-class logits only on the old tasks (what the
  representation still separates, without the new classes competing), weight aligning applied
  after the fact, BatchNorm recalibrated on a class-balanced set of training clips
  (`memory_size // seen classes` per class), both, and BiC's correction of the newest classes'
  logits fit on the seen classes' validation clips (edgecl.training.bias_correction; `alpha`,
  `beta`). The gaps say how much of the loss is the head's bias, how much the BatchNorm
  statistics, and how much the features themselves;
- the memory (last phase only: its state.pt holds the exemplars' keys): how typical the kept
  exemplars are. Per class, every training clip's cosine distance to the class's mean embedding
  is ranked; an exemplar's percentile is its rank among its class (0 the most typical, 1 the most
  atypical). Random choice gives a mean near 0.5 and a tenth in the most atypical decile;
- the newest classes' noisytune vote uncertainty (k = 6, lambda 0.2 by default, or the run's):
  the share of their clips with uncertainty 0 (the votes are coarse: with most clips at 0, an
  evenly spaced spread is a random pick among them plus the few most uncertain ones).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgecl.errors import EdgeclError


def errors_toward_newest(predictions: np.ndarray, targets: np.ndarray,
                         old_classes: Sequence[int], newest_classes: Sequence[int]) -> float | None:
    """Of the wrong predictions on clips of `old_classes`, the share that predict one of
    `newest_classes` (None when there is no such error)."""
    old = np.isin(targets, list(old_classes))
    wrong = old & (predictions != targets)
    if not wrong.any():
        return None
    return float(np.isin(predictions[wrong], list(newest_classes)).mean())


def head_rows_by_task(head, tasks: Sequence[Sequence[int]]) -> list[dict[str, float]]:
    """Per task (a list of class indices): mean L2 norm of its weight rows and mean bias."""
    weight = head.fc.weight.detach()
    bias = head.fc.bias.detach() if head.fc.bias is not None else torch.zeros(len(weight))
    return [{"weight_norm": float(weight[list(t)].norm(dim=1).mean()),
             "bias": float(bias[list(t)].mean())} for t in tasks]


def drift_share(running: torch.Tensor, old_mean: torch.Tensor, new_mean: torch.Tensor) -> float:
    """Where `running` sits between the two group means: d_old / (d_old + d_new), 0.5 when
    equidistant, 1 on the new group's mean, 0 on the old group's."""
    d_old = float((running - old_mean).norm())
    d_new = float((running - new_mean).norm())
    return 0.5 if d_old + d_new == 0 else d_old / (d_old + d_new)


@torch.no_grad()
def batchnorm_input_means(model, features: torch.Tensor, batch_size: int = 64) -> list[torch.Tensor]:
    """Per BatchNorm layer (in module order), the per-channel mean of its input over `features`
    ([N, 1, F, T'] log-mels), in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    sums: list[torch.Tensor | None] = [None] * len(norms)
    counts = [0] * len(norms)

    def hook(index):
        def record(_module, inputs, _output):
            x = inputs[0]
            dims = [d for d in range(x.dim()) if d != 1]
            total = x.sum(dim=dims)
            sums[index] = total if sums[index] is None else sums[index] + total
            counts[index] += x.numel() // x.shape[1]
        return record

    handles = [norm.register_forward_hook(hook(i)) for i, norm in enumerate(norms)]
    try:
        model.eval()
        for start in range(0, len(features), batch_size):
            model.forward_features(features[start:start + batch_size])
    finally:
        for handle in handles:
            handle.remove()
    return [s / c for s, c in zip(sums, counts, strict=True)]


def batchnorm_drift(model, old_features: torch.Tensor, new_features: torch.Tensor) -> dict[str, Any]:
    """Mean and per-layer `drift_share` of every BatchNorm's running mean between the input means
    over old-class and newest-class clips."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    old = batchnorm_input_means(model, old_features)
    new = batchnorm_input_means(model, new_features)
    shares = [drift_share(norm.running_mean, o, n)
              for norm, o, n in zip(norms, old, new, strict=True)]
    return {"mean_share_new": float(np.mean(shares)) if shares else None, "per_layer": shares}


def _accuracy(predictions: np.ndarray, targets: np.ndarray, mask: np.ndarray) -> float | None:
    return float((predictions[mask] == targets[mask]).mean()) if mask.any() else None


@torch.no_grad()
def _logits(model, features: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    model.eval()
    return torch.cat([model.forward_features(features[i:i + batch_size])[0]
                      for i in range(0, len(features), batch_size)])


def diagnose(run_dir: str | Path, phase: int | None = None) -> dict[str, Any]:
    """The diagnosis of `run_dir` after `phase` (default: its last completed phase)."""
    from edgecl.run_folder import checkpoint_path, load_checkpoint, run_plan

    run_dir = Path(run_dir)
    config, split, plan = run_plan(run_dir)
    phase, last = _phase_to_diagnose(run_dir, phase)
    model, classes, _ = load_checkpoint(checkpoint_path(run_dir, phase))
    tasks = plan.tasks_seen(plan.tasks[phase].index) if config.mode != "joint" else plan.tasks
    task_classes = [[lc.target for lc in task.test] for task in tasks]
    task_ids = [sorted(set(t)) for t in task_classes]
    items = _clip_items(config, split, model)

    def features_of(labelled):
        data = items.clip_data(labelled)
        return data.features(list(range(len(data)))), data.targets.numpy()

    test = [lc for task in tasks for lc in task.test]
    features, targets = features_of(test)
    task_of = np.concatenate([np.full(len(task.test), i) for i, task in enumerate(tasks)])
    old_ids = [c for ids in task_ids[:-1] for c in ids]
    newest = task_ids[-1]

    def per_task(predictions):
        return [_accuracy(predictions, targets, task_of == i) for i in range(len(tasks))]

    logits = _logits(model, features)
    predictions = logits.argmax(dim=1).numpy()
    result: dict[str, Any] = {
        "run": str(run_dir), "phase": phase, "classes": classes,
        "task_accuracy": per_task(predictions),
        "accuracy": float((predictions == targets).mean()),
        "old_errors_to_newest": errors_toward_newest(predictions, targets, old_ids, newest),
        "head": head_rows_by_task(model.head, task_ids),
    }
    if len(tasks) < 2:
        return result
    old_mask = task_of < len(tasks) - 1
    restricted = logits[:, :len(old_ids)].argmax(dim=1).numpy()
    result["old_accuracy"] = _accuracy(predictions, targets, old_mask)
    result["old_accuracy_old_logits_only"] = _accuracy(restricted, targets, old_mask)
    old_test, new_test = features[torch.from_numpy(old_mask)], features[torch.from_numpy(~old_mask)]
    result["batchnorm"] = batchnorm_drift(model, old_test, new_test)
    quota = max(1, (config.memory_size if config.uses_memory else 50) // len(classes))
    balanced_data = items.clip_data(_balanced_train_clips(tasks, quota))
    result["counterfactual"] = _counterfactuals(model, features, targets, per_task, balanced_data,
                                                len(old_ids))
    if tasks[0].val:
        result["counterfactual"]["bias_corrected"] = _bias_corrected(
            model, logits, targets, per_task, features_of, tasks, len(old_ids))
    result["balanced_bn_clips_per_class"] = quota
    if config.uses_memory and phase == last:
        result["memory"] = memory_typicality(model, run_dir, phase, tasks, features_of)
    result["newest_uncertainty"] = newest_uncertainty(model, config, tasks[-1], features_of)
    return result


def _phase_to_diagnose(run_dir: Path, phase: int | None) -> tuple[int, int]:
    """(the phase to diagnose, the run's last completed phase)."""
    from edgecl.run_state import last_state_phase

    last = last_state_phase(run_dir)
    if last is None:
        raise EdgeclError(f"{run_dir}: no completed phase to diagnose")
    phase = last if phase is None else phase
    if not 0 <= phase <= last:
        raise EdgeclError(f"--phase: expected a completed phase in [0, {last}], got {phase}")
    return phase, last


def _clip_items(config, split, model):
    """The run's clips as feature items, through its workspace's feature store when it has one."""
    from edgecl.audio import ClipAudio
    from edgecl.feature_store import STORE_FOLDER, FeatureStore
    from edgecl.features import FeatureCache
    from edgecl.items import ClipItems

    store = FeatureStore(Path(config.workspace) / STORE_FOLDER,
                         frontend=model.frontend.config.to_dict(), sample_rate=split.sample_rate,
                         clip_samples=split.clip_samples) if config.feature_store else None
    return ClipItems(ClipAudio(split.sample_rate, split.clip_samples),
                     FeatureCache(model.frontend, store=store))


def _balanced_train_clips(tasks, quota: int) -> list:
    """Up to `quota` training clips per seen class, drawn at random (seed 0), in class order."""
    rng = np.random.default_rng(0)
    balanced = []
    for task in tasks:
        for target in sorted({lc.target for lc in task.train}):
            members = [lc for lc in task.train if lc.target == target]
            balanced += [members[i] for i in sorted(rng.permutation(len(members))[:quota])]
    return balanced


def _counterfactuals(model, features, targets, per_task, balanced_data,
                     n_old: int) -> dict[str, Any]:
    """Accuracies with weight aligning after the fact, BatchNorm recalibrated on a
    class-balanced training set, and both (on copies of the model)."""
    from edgecl.training.loop import recalibrate_batchnorm
    from edgecl.training.weight_align import align_weights

    variants = {}
    for name, align, recalibrate in (("weight_aligned", True, False),
                                     ("balanced_bn", False, True), ("both", True, True)):
        trial = copy.deepcopy(model)
        if align:
            align_weights(trial.head, n_old)
        if recalibrate:
            recalibrate_batchnorm(trial, balanced_data)
        guess = _logits(trial, features).argmax(dim=1).numpy()
        variants[name] = {"accuracy": float((guess == targets).mean()),
                          "task_accuracy": per_task(guess)}
    return variants


def _bias_corrected(model, logits, targets, per_task, features_of, tasks,
                    n_old: int) -> dict[str, Any]:
    """BiC's correction of the newest classes' logits, fit on the validation clips, applied to
    this model only (the run's later phases would not see it)."""
    from edgecl.training.bias_correction import corrected, fit_bias_correction

    val_features, val_targets = features_of([lc for task in tasks for lc in task.val])
    alpha, beta = fit_bias_correction(_logits(model, val_features),
                                      torch.from_numpy(val_targets), n_old)
    guess = corrected(logits, n_old, alpha, beta).argmax(dim=1).numpy()
    return {"accuracy": float((guess == targets).mean()), "task_accuracy": per_task(guess),
            "alpha": alpha, "beta": beta}


def percentile_ranks(values: np.ndarray) -> np.ndarray:
    """Each value's rank among `values` scaled to [0, 1] (0 the smallest)."""
    order = np.argsort(np.argsort(values, kind="stable"), kind="stable")
    return order / max(1, len(values) - 1)


def memory_typicality(model, run_dir, phase, tasks, features_of) -> dict[str, Any]:
    """Mean percentile of the memory's exemplars by distance to their class's mean embedding,
    the share in their class's most atypical decile, per old and newest classes."""
    from edgecl.run_state import load_state
    from edgecl.samplers.base import l2_normalise

    keys = {e["key"] for e in load_state(run_dir, phase)["memory"]["exemplars"]}
    newest = {lc.target for lc in tasks[-1].train}
    ranks: dict[str, list[float]] = {"old": [], "newest": []}
    for task in tasks:
        for target in sorted({lc.target for lc in task.train}):
            clips = [lc for lc in task.train if lc.target == target]
            features, _ = features_of(clips)
            with torch.no_grad():
                model.eval()
                embedding = torch.cat([model.embed(features[i:i + 64])
                                       for i in range(0, len(features), 64)]).numpy()
            unit = l2_normalise(embedding)
            centre = l2_normalise(unit.mean(axis=0))
            pct = percentile_ranks(1.0 - unit @ centre)
            group = "newest" if target in newest else "old"
            ranks[group] += [float(p) for lc, p in zip(clips, pct, strict=True)
                             if str(lc.clip.path) in keys]
    return {group: {"exemplars": len(r), "mean_percentile": float(np.mean(r)) if r else None,
                    "atypical_decile_share": float(np.mean(np.asarray(r) > 0.9)) if r else None}
            for group, r in ranks.items()}


def newest_uncertainty(model, config, task, features_of) -> dict[str, Any]:
    """Share of the newest task's training clips whose noisytune vote uncertainty is 0, and the
    distinct values seen (the sampler's own rule and draws, seeded 0)."""
    from edgecl.samplers.base import Candidate, SelectionContext
    from edgecl.samplers.uncertainty import UncertaintySampler

    features, targets = features_of(task.train)
    candidates = [Candidate.from_array(str(i), int(t), None) for i, t in enumerate(targets)]
    sampler = UncertaintySampler("noisytune", getattr(config, "metric_k", 6),
                                 getattr(config, "noise_lambda", 0.2))
    context = SelectionContext(phase=1, rng=np.random.default_rng(0), model=model,
                               features=lambda batch: features[[int(c.key) for c in batch]])
    uncertainty = sampler.uncertainty(candidates, context)
    return {"clips": len(uncertainty), "zero_share": float(np.mean(uncertainty == 0)),
            "values": sorted({round(float(u), 3) for u in uncertainty})}


def format_diagnosis(d: dict[str, Any]) -> str:
    """The diagnosis as a few readable lines."""
    def fmt(value):
        return "-" if value is None else f"{value:.3f}"

    lines = [f"{d['run']} after phase {d['phase']}: accuracy {fmt(d['accuracy'])}",
             "  per task: " + " ".join(fmt(a) for a in d["task_accuracy"]),
             "  head weight norm per task: " + " ".join(f"{h['weight_norm']:.3f}" for h in d["head"]),
             "  head bias per task: " + " ".join(f"{h['bias']:+.3f}" for h in d["head"]),
             f"  errors on old tasks that predict a newest class: {fmt(d['old_errors_to_newest'])}"]
    if "batchnorm" in d:
        lines += [f"  old tasks: accuracy {fmt(d['old_accuracy'])}, with old-class logits only "
                  f"{fmt(d['old_accuracy_old_logits_only'])}",
                  f"  BatchNorm running means toward the newest classes (0.5 balanced, 1 newest): "
                  f"{fmt(d['batchnorm']['mean_share_new'])}"]
        for name, v in d["counterfactual"].items():
            lines.append(f"  if {name.replace('_', ' ')}: accuracy {fmt(v['accuracy'])}; per task "
                         + " ".join(fmt(a) for a in v["task_accuracy"]))
    for group, m in (d.get("memory") or {}).items():
        lines.append(f"  memory, {group} classes: {m['exemplars']} exemplars, mean typicality "
                     f"percentile {fmt(m['mean_percentile'])} (0.5 random), in the most atypical "
                     f"decile {fmt(m['atypical_decile_share'])} (0.1 random)")
    if "newest_uncertainty" in d:
        u = d["newest_uncertainty"]
        lines.append(f"  noisytune uncertainty of the newest classes' {u['clips']} clips: "
                     f"{fmt(u['zero_share'])} at 0; values {u['values']}")
    return "\n".join(lines)
