"""How a phase draws its batches (edgecl.training.batch_sampling)."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from run_helpers import small_run_options
from test_resume import comparable

from edgecl.cli import main
from edgecl.config import RunConfig
from edgecl.errors import EdgeclError
from edgecl.report.aggregate import method_label
from edgecl.trainer import train
from edgecl.training.batch_sampling import epoch_order


def test_uniform_is_the_published_permutation():
    targets = torch.tensor([0] * 7 + [1] * 3)
    order = epoch_order(targets, "uniform", torch.Generator().manual_seed(5))
    assert order.tolist() == torch.randperm(10, generator=torch.Generator().manual_seed(5)).tolist()
    assert sorted(order.tolist()) == list(range(10))  # every clip once


def test_class_balanced_gives_every_class_the_same_share():
    # 90 clips of class 0, 9 of class 1, 1 of class 2: uniform draws class 2 once in 100.
    targets = torch.tensor([0] * 90 + [1] * 9 + [2])
    generator = torch.Generator().manual_seed(0)
    drawn = torch.cat([epoch_order(targets, "class-balanced", generator) for _ in range(30)])
    assert len(drawn) == 3000
    shares = torch.bincount(targets[drawn], minlength=3).double() / len(drawn)
    assert torch.allclose(shares, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.04)
    assert set(drawn.tolist()) == set(range(100))  # within a class, every clip can come up
    # The count is the caller's (BatchNorm recalibration draws fewer) and the draw is seeded.
    few = epoch_order(targets, "class-balanced", torch.Generator().manual_seed(1), count=12)
    again = epoch_order(targets, "class-balanced", torch.Generator().manual_seed(1), count=12)
    assert len(few) == 12 and few.tolist() == again.tolist()
    with pytest.raises(ValueError, match="unknown batch sampling"):
        epoch_order(targets, "sqrt", generator)


def _shares(targets, sampling, epoch=0, epochs=1, rounds=40):
    generator = torch.Generator().manual_seed(3)
    drawn = torch.cat([epoch_order(targets, sampling, generator, epoch=epoch, epochs=epochs)
                       for _ in range(rounds)])
    return torch.bincount(targets[drawn], minlength=3).double() / len(drawn)


def test_class_balanced_draw_is_the_one_earlier_runs_made():
    # The in-between modes share the function: class-balanced runs must still reproduce.
    targets = torch.tensor([0] * 90 + [1] * 9 + [2])
    expected = torch.multinomial(1.0 / torch.bincount(targets)[targets].double(), 100,
                                 replacement=True, generator=torch.Generator().manual_seed(7))
    order = epoch_order(targets, "class-balanced", torch.Generator().manual_seed(7), epoch=3,
                        epochs=10)
    assert order.tolist() == expected.tolist()


def test_square_root_shares_follow_the_square_root_of_the_clips():
    targets = torch.tensor([0] * 90 + [1] * 9 + [2])
    roots = torch.tensor([90, 9, 1], dtype=torch.float64).sqrt()
    assert torch.allclose(_shares(targets, "square-root"), roots / roots.sum(), atol=0.03)


def test_progressive_moves_from_uniform_to_class_balanced():
    targets = torch.tensor([0] * 90 + [1] * 9 + [2])
    uniform = torch.tensor([0.90, 0.09, 0.01], dtype=torch.float64)
    balanced = torch.full((3,), 1 / 3, dtype=torch.float64)
    assert torch.allclose(_shares(targets, "progressive", 0, 5), uniform, atol=0.03)
    assert torch.allclose(_shares(targets, "progressive", 2, 5), (uniform + balanced) / 2,
                          atol=0.03)
    assert torch.allclose(_shares(targets, "progressive", 4, 5), balanced, atol=0.04)
    # A one-epoch phase stays at the ramp's start.
    assert torch.allclose(_shares(targets, "progressive", 0, 1), uniform, atol=0.03)


def test_class_balanced_run_reproduces_and_costs_the_same_steps(six_class_manifest, tmp_path):
    options = small_run_options(six_class_manifest, patience=0, mem_manage="reservoir")
    plain = train(RunConfig(**options, workspace=str(tmp_path / "plain")))
    first = train(RunConfig(**options, batch_sampling="class-balanced",
                            workspace=str(tmp_path / "one")))
    second = train(RunConfig(**options, batch_sampling="class-balanced",
                             workspace=str(tmp_path / "two")))
    assert comparable(first) == comparable(second)
    for before, after in zip(plain["phases"], first["phases"], strict=True):
        assert after["train_steps"] == before["train_steps"]
        assert after["train_macs"] == before["train_macs"]
    # Other clips are drawn, so the phases train differently.
    assert first["phases"][1]["best_val_loss"] != plain["phases"][1]["best_val_loss"]
    assert first["config"]["batch_sampling"] == "class-balanced"
    text = (tmp_path / "one" / "run" / "config.toml").read_text()
    assert 'batch-sampling = "class-balanced"' in text


def test_option_is_checked_labelled_and_left_out_of_old_identities(six_class_manifest):
    options = small_run_options(six_class_manifest)
    with pytest.raises(EdgeclError, match="--batch-sampling: expected one of uniform, "
                                          "class-balanced"):
        RunConfig(**options, batch_sampling="balanced")
    assert "batch_sampling" not in RunConfig(**options).identity()
    assert RunConfig(**options, batch_sampling="class-balanced").identity()["batch_sampling"] \
        == "class-balanced"
    assert method_label({"mode": "replay", "mem_manage": "reservoir", "memory_size": 50,
                         "batch_sampling": "class-balanced", "balanced_epochs": 20,
                         "balanced_lr": 5e-4}) == "reservoir-m50-cbb-bft20lr0.0005"
    result = CliRunner().invoke(main, ["train", "--mode", "finetune", "--batch-sampling",
                                       "class-balanced", "--no-export"])
    assert result.exit_code != 0
    assert "--batch-sampling: only used with --mode replay" in result.output


def test_a_trailing_batch_under_an_eighth_of_a_batch_is_folded_in():
    from edgecl.training.loop import _batches

    def sizes(n, batch_size=32):
        return [len(b) for b in _batches(torch.arange(n), batch_size)]

    # 194 clips (the synthetic default at memory 50): no 2-clip step at the end of the epoch
    assert sizes(194) == [32] * 5 + [34]
    assert sizes(196) == [32] * 6 + [4]  # four clips (an eighth) stay a batch
    assert sizes(33) == [33]
    assert sizes(9, batch_size=4) == [4, 5]  # small batches: a single clip is still folded
    assert sizes(10, batch_size=4) == [4, 4, 2]
    assert torch.equal(torch.cat(_batches(torch.arange(194), 32)), torch.arange(194))
