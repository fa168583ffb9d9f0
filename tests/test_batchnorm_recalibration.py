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
