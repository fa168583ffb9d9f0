"""The model a run starts with: its architecture, front end and a head for the first phase."""

from __future__ import annotations


def build_run_model(config, plan, split):
    """A SoundClassifier for `config` at the dataset's rate, with a head for phase 0's classes
    (every class for joint training)."""
    from models import build_model
    from models.frontend import FrontEndConfig

    n_classes = (len(plan.class_order) if config.mode == "joint"
                 else len(plan.tasks[0].classes))
    frontend = FrontEndConfig.for_sample_rate(split.sample_rate, n_mels=config.n_mels)
    return build_model(config.model, n_classes, frontend, width=config.width)
