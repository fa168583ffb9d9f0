"""Weight aligning equalises the old and new classes' weight norms and keeps the old rows."""

from __future__ import annotations

import pytest
import torch

from edgecl.config import RunConfig
from edgecl.trainer import train
from edgecl.training.weight_align import align_weights
from models.head import ClassifierHead


def test_new_rows_take_the_old_rows_mean_norm_and_old_rows_stay():
    torch.manual_seed(0)
    head = ClassifierHead(8, 5)
    with torch.no_grad():
        head.fc.weight[3:] *= 4.0  # new classes with inflated weights
    old_rows, bias = head.fc.weight[:3].clone(), head.fc.bias.clone()
    gamma = align_weights(head, n_old=3)
    norms = head.fc.weight.norm(dim=1)
    assert gamma == pytest.approx(float(old_rows.norm(dim=1).mean()
                                        / (norms[3:].mean() / gamma)), rel=1e-5)
    assert float(norms[3:].mean()) == pytest.approx(float(norms[:3].mean()), rel=1e-5)
    assert torch.equal(head.fc.weight[:3], old_rows) and torch.equal(head.fc.bias, bias)
    assert align_weights(head, 0) is None and align_weights(head, 5) is None


def test_a_run_with_weight_aligning_records_it_and_reproduces(tiny_manifest, tmp_path):
    def run(name):
        config = RunConfig(dataset="manifest", data_root=str(tiny_manifest),
                           workspace=str(tmp_path), exp_name=name, width=8, epochs=2,
                           batch_size=8, patience=0, n_tasks=2, n_init_cls=2, n_cls_a_task=2,
                           memory_size=4, export=False, quiet=True, threads=1, seed=1,
                           weight_align=True)
        return train(config)

    first, second = run("one"), run("two")
    gammas = [phase.get("weight_align_gamma") for phase in first["phases"]]
    assert gammas[0] is None and gammas[1] > 0
    assert first["accuracy_matrix"] == second["accuracy_matrix"]
    assert (tmp_path / "one" / "config.toml").read_text().count("weight-align = true") == 1
