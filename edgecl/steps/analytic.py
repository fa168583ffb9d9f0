"""`--mode analytic` (ACIL, analytic class-incremental learning) as a step.

Phase 0 trains by backpropagation as finetune does; after it, a ridge-regression head is fit on
the embeddings of phase 0's training clips (edgecl.training.analytic). From phase 1 on nothing
trains by gradient: the backbone is frozen and each phase's new clips are added to the head by
the recursive least-squares update, exemplar-free. After every phase the run's Linear head is set
to the analytic head's folded weights, so testing, checkpoints and export run unchanged. The
head's state (R, W, the standardisation) is kept in state.pt for a resumed run; each phase
records its update's MACs and the state's bytes (fp32, as a device keeps it) as `analytic`.
"""

from __future__ import annotations

from typing import Any

from edgecl.errors import EdgeclError
from edgecl.steps.base import Phase, Step
from edgecl.steps.registry import register_step


@register_step
class AnalyticLearning(Step):
    name = "analytic"
    order = 45  # before every step that would change the head the run goes on with
    fields = ("analytic_gamma", "analytic_weighting")

    def __init__(self, gamma: float | None, weighting: str) -> None:
        self.gamma, self.weighting = gamma, weighting
        self.head: Any = None  # firmware_export.device.analytic.AnalyticHead once phase 0 is fit

    @classmethod
    def from_config(cls, config) -> AnalyticLearning | None:
        if config.mode != "analytic":
            return None
        return cls(config.analytic_gamma, config.analytic_weighting)

    def trains(self, run, phase: Phase) -> bool:
        return phase.index == 0

    def after_fit(self, run, phase: Phase) -> None:
        import time

        from edgecl.training import analytic

        started = time.perf_counter()
        data = run.items.clip_data(phase.new_clips)
        embeddings = analytic.clip_embeddings(run.model, data, run.config.batch_size)
        targets = data.targets.cpu().numpy()
        if phase.index == 0:
            self.head = analytic.first_head(embeddings, targets, gamma=self.gamma,
                                            weighting=self.weighting, seed=run.config.seed)
        else:
            analytic.learn_classes(self.head, embeddings, targets)
        missing = sorted(set(range(len(phase.seen))) - {int(label) for label in self.head.labels})
        if missing:
            raise EdgeclError(f"--mode analytic: classes {[phase.seen[i] for i in missing]} have "
                              f"no training clip to learn from")
        analytic.fold_into(run.model.head.fc, self.head)
        phase.record.details["analytic"] = {
            "gamma": self.head.gamma, "weighting": self.head.weighting, "clips": len(embeddings),
            "update_macs": analytic.update_macs(self.head, len(embeddings)),
            "state_bytes": self.head.state_bytes(), "seconds": time.perf_counter() - started}
        run.log(f"  analytic head: {len(embeddings)} clips learnt (gamma {self.head.gamma:g}, "
                f"weighting {self.head.weighting}); state {self.head.state_bytes()} bytes fp32")

    def state(self) -> dict[str, Any]:
        from edgecl.training.analytic import head_state

        return {"analytic": None if self.head is None else head_state(self.head)}

    def restore(self, run, payload: dict[str, Any]) -> None:
        from edgecl.training.analytic import head_from_state

        saved = payload.get("analytic")
        if saved is None:
            raise EdgeclError("state.pt: no analytic head saved for this --mode analytic run")
        self.head = head_from_state(saved)
