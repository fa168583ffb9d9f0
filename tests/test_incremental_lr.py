"""--lr-incremental: Adam's learning rate of phases >= 1."""

from __future__ import annotations

import pytest
from run_helpers import small_run_options
from test_resume import comparable

from edgecl.config import RunConfig
from edgecl.errors import EdgeclError
from edgecl.report.aggregate import method_label
from edgecl.trainer import train


def test_phase_lr_is_lr_in_phase_0_and_the_incremental_one_after(six_class_manifest):
    options = small_run_options(six_class_manifest, lr=1e-3)
    assert [RunConfig(**options).phase_lr(p) for p in (0, 1, 4)] == [1e-3] * 3
    late = RunConfig(**options, lr_incremental=1e-4)
    assert [late.phase_lr(p) for p in (0, 1, 4)] == [1e-3, 1e-4, 1e-4]
    with pytest.raises(EdgeclError, match="--lr-incremental: expected a finite learning rate"):
        RunConfig(**options, lr_incremental=0.0)
    assert "lr_incremental" not in RunConfig(**options).identity()
    assert method_label({**late.to_dict(), "mode": "finetune"}) == "finetune-ilr0.0001"


def test_only_later_phases_train_at_the_incremental_lr(six_class_manifest, tmp_path):
    options = small_run_options(six_class_manifest, mem_manage="reservoir", patience=0)
    plain = comparable(train(RunConfig(**options, workspace=str(tmp_path / "plain"))))
    same = comparable(train(RunConfig(**options, lr_incremental=options.get("lr", 1e-3),
                                      workspace=str(tmp_path / "same"))))
    slow = comparable(train(RunConfig(**options, lr_incremental=1e-5,
                                      workspace=str(tmp_path / "slow"))))
    # At --lr the option changes nothing; at another rate phase 0 is untouched, later phases not.
    assert same["accuracy_matrix"] == plain["accuracy_matrix"]
    assert same["phases"][1]["best_val_loss"] == plain["phases"][1]["best_val_loss"]
    assert slow["accuracy_matrix"][0] == plain["accuracy_matrix"][0]
    assert slow["phases"][0]["best_val_loss"] == plain["phases"][0]["best_val_loss"]
    assert slow["phases"][1]["best_val_loss"] != plain["phases"][1]["best_val_loss"]
