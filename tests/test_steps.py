"""The step registry (edgecl.steps): every technique found by name, in phase order, and a step's
own options reaching RunConfig without a field, left out of the run's identity at their default."""

from __future__ import annotations

import pytest

from edgecl.config import RunConfig
from edgecl.config_file import resolved_options
from edgecl.errors import EdgeclError
from edgecl.steps import Step, StepOption, build_steps, registry, step_names


def test_every_technique_is_a_registered_step_in_phase_order():
    names = step_names()
    for name in ("batch-sampling", "augmentation", "distillation", "balanced-finetuning",
                 "weight-aligning", "bias-correction", "memory-refill"):
        assert name in names
    # Fine-tuning, then aligning, then the in-loop correction, then the memory refill.
    order = [names.index(n) for n in ("balanced-finetuning", "weight-aligning",
                                      "bias-correction", "memory-refill")]
    assert order == sorted(order)


def test_a_run_uses_the_steps_its_options_turn_on():
    plain = [type(step).name for step in build_steps(RunConfig())]
    assert plain == ["memory-refill"]
    config = RunConfig(distill_output=1.0, bias_correction="deployed", weight_align=True,
                       batch_sampling="progressive", balanced_epochs=2, augment="specaugment")
    assert [type(step).name for step in build_steps(config)] == [
        "batch-sampling", "augmentation", "distillation", "balanced-finetuning",
        "weight-aligning", "bias-correction", "memory-refill"]
    # Batch sampling draws from a memory: without one every phase is uniform.
    finetune = RunConfig(mode="finetune", batch_sampling="class-balanced")
    assert "batch-sampling" not in [type(step).name for step in build_steps(finetune)]


class _Toy(Step):
    name = "toy"
    options = (StepOption("toy_weight", 0.0, "A weight (0 = off).", minimum=0.0),)

    @classmethod
    def from_config(cls, config):
        return cls() if config.toy_weight > 0 else None


@pytest.fixture
def toy_step(monkeypatch):
    monkeypatch.setitem(registry._STEPS, _Toy.name, _Toy)
    return _Toy


def test_a_steps_own_option_is_a_config_keyword_checked_and_left_out_at_its_default(toy_step):
    before = RunConfig().name
    plain = RunConfig(toy_weight=0.0)
    assert plain.toy_weight == 0.0 and plain.name == before  # the default changes no name
    assert "toy_weight" not in plain.identity() and "toy_weight" not in resolved_options(plain)
    weighted = RunConfig(toy_weight=0.5)
    assert weighted.identity()["toy_weight"] == 0.5 and weighted.name != before
    assert resolved_options(weighted)["toy_weight"] == 0.5
    assert RunConfig.from_dict(weighted.to_dict()) == weighted
    assert "toy" in [type(step).name for step in build_steps(weighted)]
    with pytest.raises(EdgeclError, match="--toy-weight"):
        RunConfig(toy_weight=-1.0)


def test_a_damaged_step_entry_in_state_pt_is_a_one_line_error(six_class_manifest, tmp_path,
                                                              monkeypatch):
    import torch
    from run_helpers import Interrupted, dies_before_committing, small_run_options

    from edgecl.run_state import state_path
    from edgecl.trainer import ContinualRun

    config = RunConfig(**small_run_options(six_class_manifest, mem_manage="reservoir",
                                           bias_correction="deployed", seed=3, n_tasks=2),
                       workspace=str(tmp_path))
    with dies_before_committing(monkeypatch, 1), pytest.raises(Interrupted):
        ContinualRun(config).run()
    path = state_path(tmp_path / config.name, 0)
    payload = torch.load(path, weights_only=True)
    payload["learner_head"] = {"fc.weight": torch.zeros(1)}  # a dict, but not this head's
    torch.save(payload, path)
    with pytest.raises(EdgeclError, match="state.pt: unreadable run state .*--overwrite"):
        ContinualRun(config).run()
