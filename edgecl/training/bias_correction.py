"""Bias correction of the newest classes' logits (BiC, Wu et al., CVPR 2019).

After a phase at a small memory the classifier still favours the classes it has just learned
(`edgecl diagnose` on FSDD at memory 50 with class-balanced batches and distillation: 68% of the
old tasks' errors go to the 2 newest of 10 classes) although their weight rows are no larger
than the old ones, so weight aligning does not help. BiC instead learns two numbers, alpha and
beta, that map the new classes' logits z to alpha * z + beta, by minimising the cross-entropy on
held-out clips of every seen class; the old classes' logits are left alone.

Here the held-out clips are the phase's validation split (the seen tasks' validation clips that
model selection already uses), and the map is folded into the head (new rows: W <- alpha W,
b <- alpha b + beta), so the corrected classifier costs nothing at inference. Where it is folded
is `--bias-correction` (BIAS_CORRECTIONS):

- `in-loop`: into the model the run goes on with, so the memory update, the next phase's
  distillation teacher and its training all start from the corrected head;
- `deployed`: into the phase's tested, checkpointed and exported model only; the run goes on from
  the uncorrected head (kept in the phase's state.pt so a resumed run continues exactly). On FSDD
  at memory 50 folding in the loop gained nothing, while correcting the final model alone did
  (docs/results/forgetting.md, "Class-balanced batches plus distillation").

The fit is one forward pass over the validation clips plus an L-BFGS solve in two variables;
like validation, it is not counted in `train_macs`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported on use: the CLI reads BIAS_CORRECTIONS without it
    import torch

BIAS_CORRECTIONS = ("off", "in-loop", "deployed")


def fit_bias_correction(logits: torch.Tensor, targets: torch.Tensor,
                        n_old: int) -> tuple[float, float]:
    """(alpha, beta) minimising the cross-entropy of `logits` [N, C] whose columns n_old.. are
    mapped to alpha * z + beta; (1, 0) when the fit does not give finite values."""
    import torch
    from torch.nn import functional as F

    logits = logits.detach().double()
    alpha = torch.ones((), dtype=torch.float64, requires_grad=True)
    beta = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([alpha, beta], max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(corrected(logits, n_old, alpha, beta), targets)
        loss.backward()
        return loss

    optimizer.step(closure)
    a, b = float(alpha.detach()), float(beta.detach())
    return (a, b) if math.isfinite(a) and math.isfinite(b) and a > 0 else (1.0, 0.0)


def corrected(logits: torch.Tensor, n_old: int, alpha, beta) -> torch.Tensor:
    """`logits` with columns n_old.. mapped to alpha * z + beta."""
    import torch

    return torch.cat([logits[:, :n_old], logits[:, n_old:] * alpha + beta], dim=1)


def fold_into_head(head, n_old: int, alpha: float, beta: float) -> None:
    """Make `head` compute the corrected logits: rows n_old.. scaled by alpha, bias shifted."""
    import torch

    with torch.no_grad():
        head.fc.weight[n_old:] *= alpha
        head.fc.bias[n_old:] = head.fc.bias[n_old:] * alpha + beta


def correct_bias(model, val, n_old: int) -> dict[str, Any] | None:
    """Fit the correction on `val` (a PhaseData of every seen class) and fold it into the model's
    head; the phase's `bias_correction` record, or None without old or new classes or clips."""
    from edgecl.training.loop import logits as logits_of

    if n_old <= 0 or n_old >= model.head.n_classes or len(val) == 0:
        return None
    logits = logits_of(model, val)
    alpha, beta = fit_bias_correction(logits, val.targets, n_old)
    before = float((logits.argmax(dim=1) == val.targets).double().mean())
    after_logits = corrected(logits, n_old, alpha, beta)
    after = float((after_logits.argmax(dim=1) == val.targets).double().mean())
    fold_into_head(model.head, n_old, alpha, beta)
    return {"alpha": alpha, "beta": beta, "val_clips": len(val),
            "val_accuracy_before": before, "val_accuracy_after": after}
