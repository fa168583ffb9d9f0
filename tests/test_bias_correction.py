"""BiC-style bias correction of the new classes' logits (edgecl.training.bias_correction)."""

from __future__ import annotations

import torch

from edgecl.config import RunConfig
from edgecl.report.aggregate import method_label
from edgecl.trainer import train
from edgecl.training.bias_correction import corrected, fit_bias_correction, fold_into_head
from models.head import ClassifierHead
from run_helpers import small_run_options
from test_resume import comparable


def test_fold_into_head_computes_the_corrected_logits_and_keeps_old_rows():
    torch.manual_seed(0)
    head = ClassifierHead(5, 4)
    embedding = torch.randn(8, 5)
    before = head(embedding)
    old_weight, old_bias = head.fc.weight[:2].clone(), head.fc.bias[:2].clone()
    fold_into_head(head, 2, 0.5, -1.5)
    after = head(embedding)
    assert torch.allclose(after, corrected(before, 2, 0.5, -1.5), atol=1e-6)
    assert torch.equal(head.fc.weight[:2], old_weight) and torch.equal(head.fc.bias[:2], old_bias)


def test_fit_removes_a_bias_toward_the_new_classes():
    generator = torch.Generator().manual_seed(1)
    targets = torch.arange(6).repeat(40)  # 6 classes, 2 new (4, 5), balanced
    clean = torch.randn(240, 6, generator=generator)
    clean[torch.arange(240), targets] += 2.0
    biased = corrected(clean, 4, 1.0, 2.5)  # new classes' logits pushed up by 2.5
    alpha, beta = fit_bias_correction(biased, targets, 4)
    assert beta < -1.0 and alpha > 0
    accuracy = lambda z: float((z.argmax(dim=1) == targets).double().mean())  # noqa: E731
    assert accuracy(corrected(biased, 4, alpha, beta)) > accuracy(biased) + 0.15
    # On unbiased logits the fit may rescale confidence but barely moves decisions.
    alpha0, beta0 = fit_bias_correction(clean, targets, 4)
    assert accuracy(corrected(clean, 4, alpha0, beta0)) >= accuracy(clean) - 0.03


def test_run_records_and_reproduces_the_correction(six_class_manifest, tmp_path):
    options = small_run_options(six_class_manifest, mem_manage="reservoir", bias_correction=True)
    first = train(RunConfig(**options, workspace=str(tmp_path / "one")))
    second = train(RunConfig(**options, workspace=str(tmp_path / "two")))
    assert comparable(first) == comparable(second)
    assert "bias_correction" not in first["phases"][0]  # no old classes in phase 0
    for phase in first["phases"][1:]:
        entry = phase["bias_correction"]
        assert entry["alpha"] > 0 and entry["val_clips"] == phase["n_val"]
        assert entry["val_accuracy_after"] >= entry["val_accuracy_before"] - 0.2
    assert "bias_correction" not in RunConfig(**{**options, "bias_correction": False}).identity()
    assert method_label(first["config"]) == "reservoir-m7-bic"


