"""recalibrate_batchnorm sets BatchNorm running statistics to the exact data statistics."""

from __future__ import annotations

import torch
from torch import nn

from edgecl.training.loop import PhaseData, recalibrate_batchnorm


class _FeatureModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.BatchNorm2d(1)

    def forward_features(self, x):
        out = self.norm(x)
        return out.flatten(1), out.flatten(1)


def _data(features: torch.Tensor) -> PhaseData:
    return PhaseData(features=lambda idx: features[idx], targets=torch.zeros(len(features),
                                                                             dtype=torch.long))


def test_running_stats_become_the_data_statistics():
    torch.manual_seed(0)
    features = torch.randn(100, 1, 4, 5) * 3.0 + 7.0
    model = _FeatureModel()
    model.eval()
    recalibrate_batchnorm(model, _data(features), batch_size=20)  # equal batches
    assert torch.allclose(model.norm.running_mean, features.mean().reshape(1), atol=1e-4)
    # cumulative average of per-batch unbiased variances: close to the data variance
    assert abs(model.norm.running_var.item() - features.var().item()) < 0.05 * features.var().item()
    assert model.norm.momentum == 0.1, "momentum must be restored"
    assert not model.training, "mode must be restored"


def test_subset_covers_the_whole_range():
    # first half 0, second half 10: a prefix-only subset would report mean 0
    features = torch.cat([torch.zeros(50, 1, 2, 2), torch.full((50, 1, 2, 2), 10.0)])
    model = _FeatureModel()
    recalibrate_batchnorm(model, _data(features), batch_size=10, max_clips=20)
    assert abs(model.norm.running_mean.item() - 5.0) < 0.6


def _fit(features: torch.Tensor, bn_recal_clips: int) -> _FeatureModel:
    from edgecl.training.loop import fit

    model = _FeatureModel()
    empty = PhaseData(features=lambda idx: features[idx], targets=torch.zeros(0, dtype=torch.long))
    fit(model, _data(features), empty, epochs=1, batch_size=25, lr=1e-3, patience=0,
        generator=torch.Generator().manual_seed(0), bn_recal_clips=bn_recal_clips)
    return model


def test_fit_recalibrates_on_the_clips_it_is_given():
    torch.manual_seed(0)
    features = torch.randn(100, 1, 4, 5) * 3.0 + 7.0
    # 4 steps at momentum 0.1 from 0 leave the running mean far below the data mean of 7
    left_by_training = _fit(features, bn_recal_clips=0).norm.running_mean.item()
    assert left_by_training < 3.0
    assert abs(_fit(features, bn_recal_clips=100).norm.running_mean.item() - 7.0) < 0.05


def test_fit_recalibrates_on_an_evenly_spaced_subset():
    features = torch.cat([torch.zeros(50, 1, 2, 2), torch.full((50, 1, 2, 2), 10.0)])
    features[::11] += 1.0  # the 10 evenly spaced clips all carry +1, so the subset shows it
    # linspace(0, 99, 10) picks 0, 11, 22, ..., 99
    mean = _fit(features, bn_recal_clips=10).norm.running_mean.item()
    assert abs(mean - 6.0) < 0.05, mean


def test_the_report_names_a_non_default_recalibration():
    from edgecl.report.aggregate import method_label

    config = {"mode": "replay", "mem_manage": "random", "memory_size": 50}
    assert method_label(config) == method_label({**config, "bn_recal_clips": 1024}) == "random-m50"
    assert method_label({**config, "bn_recal_clips": 256}) == "random-m50-bn256"
