"""`--mode analytic` (ACIL, analytic class-incremental learning) as a step.

Phase 0 trains by backpropagation as finetune does; after it, a ridge-regression head is fit on
the embeddings of phase 0's training clips (edgecl.training.analytic). From phase 1 on nothing
trains by gradient: the backbone is frozen and each phase's new clips are added to the head by
the recursive least-squares update, exemplar-free. After every phase the run's Linear head is set
to the analytic head's folded weights, so testing, checkpoints and export run unchanged. The
head's state (R, W, the standardisation) is kept in state.pt for a resumed run; each phase
records its update's MACs and the state's bytes (fp32, as a device keeps it) as `analytic`, and
as its `memory_bytes` and `memory_update_macs`, where the budgets count a replay memory's.

The step also keeps, per clip learnt, its key, weight and float32 embedding (LearntClips), and the
head learns from those float32 values, so the state a phase's bundle ships (`bundle_state`) can
forget any clip exactly. With `--analytic-expansion B` the head runs on a seeded random ReLU
projection of the standardised embedding; the run's Linear head cannot hold that, so the tested,
checkpointed and exported model gets the head's best linear stand-in (edgecl.training.analytic.
set_run_head) and the bundle's analytic state is the head itself.
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
    fields = ("analytic_gamma", "analytic_weighting", "analytic_expansion")

    def __init__(self, gamma: float | None, weighting: str, expansion: int = 0) -> None:
        self.gamma, self.weighting, self.expansion = gamma, weighting, expansion
        self.head: Any = None  # firmware_export.device.analytic.AnalyticHead once phase 0 is fit
        self.learnt: Any = None  # edgecl.training.analytic.LearntClips: what the head holds

    @classmethod
    def from_config(cls, config) -> AnalyticLearning | None:
        if config.mode != "analytic":
            return None
        return cls(config.analytic_gamma, config.analytic_weighting, config.analytic_expansion)

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
            self.head, weights = analytic.first_head(
                embeddings, targets, gamma=self.gamma, weighting=self.weighting,
                seed=run.config.seed, expansion=self.expansion)
            self.learnt = analytic.LearntClips()
        else:
            weights = analytic.learn_classes(self.head, embeddings, targets)
        self.learnt.add(phase.new_clips, weights, embeddings)
        missing = sorted(set(range(len(phase.seen))) - {int(label) for label in self.head.labels})
        if missing:
            raise EdgeclError(f"--mode analytic: classes {[phase.seen[i] for i in missing]} have "
                              f"no training clip to learn from")
        analytic.set_run_head(run.model, self.head, self.learnt)
        self._record(run, phase, len(embeddings), time.perf_counter() - started)

    def _record(self, run, phase: Phase, n_clips: int, seconds: float) -> None:
        """The phase's figures (its update's MACs and the state's bytes, also where the budgets
        count a memory's); the time goes to the log only (phase records stay reproducible)."""
        head = self.head
        macs, size = head.update_macs(n_clips), head.state_bytes()
        phase.record.details["analytic"] = {
            "gamma": head.gamma, "weighting": head.weighting, "expansion": head.expansion,
            "clips": n_clips, "update_macs": macs, "state_bytes": size}
        budget = run.config.memory_bytes
        phase.record.details.update(
            memory_bytes={"used": size, "budget": budget, "per_exemplar": None,
                          "what": "analytic state"}, memory_update_macs=macs)
        if budget is not None and size > budget:  # a miss: the run goes on, the bundle withholds
            phase.record.details["analytic"]["over_budget"] = True
            run.log(f"  WARNING: the analytic state's {size} bytes are over --memory-bytes "
                    f"{budget}; the phase's bundle ships without it")
        run.log(f"  analytic head: {n_clips} clips learnt in {seconds:.2f} s (gamma "
                f"{head.gamma:g}, weighting {head.weighting}"
                + (f", expansion {head.expansion}" if head.expansion else "")
                + f"); state {size} bytes fp32")

    def after_export(self, run, phase: Phase) -> None:
        """With an expansion, the phase's accuracy is the expanded head's own: the Linear head
        the trainer tested holds only its linear stand-in."""
        if not self.head.expansion:
            return
        from edgecl.training.analytic import expanded_accuracy

        tests = [lc for task in phase.seen_tasks for lc in task.test]
        correct = expanded_accuracy(run.model, self.head, run.items.clip_data(tests))
        record, start = phase.record, 0
        record.task_accuracy = []
        for task in phase.seen_tasks:
            part = correct[start:start + len(task.test)]
            record.task_accuracy.append(float(part.mean()) if len(part) else 0.0)
            start += len(task.test)
        record.accuracy = float(correct.mean()) if len(correct) else 0.0
        run.log(f"  test accuracy of the expanded analytic head: {100 * record.accuracy:.1f}% "
                f"(the exported Linear head holds its linear stand-in)")

    def bundle_state(self, seen: list[str]):
        """The head and the clips it holds as a bundle's state (class names for labels), for
        the phase's export (firmware_export.analytic_fit)."""
        from edgecl.training.analytic import bundle_state

        return bundle_state(self.head, self.learnt, seen)

    def state(self) -> dict[str, Any]:
        from edgecl.training.analytic import head_state

        if self.head is None:
            return {"analytic": None}
        return {"analytic": head_state(self.head), "analytic_clips": self.learnt.state()}

    def restore(self, run, payload: dict[str, Any]) -> None:
        from edgecl.training.analytic import LearntClips, head_from_state

        saved = payload.get("analytic")
        if saved is None:
            raise EdgeclError("state.pt: no analytic head saved for this --mode analytic run")
        self.head = head_from_state(saved)
        self.learnt = LearntClips.from_state(payload.get("analytic_clips"))
