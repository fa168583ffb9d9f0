"""Batch augmentation (edgecl.training.augment)."""

from __future__ import annotations

import pytest
import torch
from run_helpers import small_run_options

from edgecl.config import RunConfig
from edgecl.errors import EdgeclError
from edgecl.report.aggregate import method_label
from edgecl.training.augment import MAX_MASK_SHARE, augment


def test_specaugment_masks_one_band_and_one_span_per_clip_with_the_clip_mean():
    batch = torch.randn(16, 1, 64, 101) + torch.arange(16.0).view(16, 1, 1, 1)
    out = augment(batch, "specaugment", torch.Generator().manual_seed(3))
    assert out.shape == batch.shape and not out.data_ptr() == batch.data_ptr()
    changed = out != batch
    masked_some = 0
    for clip in range(16):
        rows = changed[clip, 0].all(dim=1).nonzero().flatten()  # masked mel bins
        cols = changed[clip, 0].all(dim=0).nonzero().flatten()  # masked frames
        for span, size in ((rows, 64), (cols, 101)):
            assert len(span) <= size * MAX_MASK_SHARE + 1
            if len(span):  # one contiguous span
                assert span.tolist() == list(range(int(span[0]), int(span[-1]) + 1))
        expected = torch.zeros(64, 101, dtype=torch.bool)
        expected[rows, :] = True
        expected[:, cols] = True
        assert torch.equal(changed[clip, 0], expected)
        if expected.any():
            masked_some += 1
            fill = out[clip, 0][expected]
            assert torch.allclose(fill, batch[clip].mean().expand_as(fill))
    assert masked_some >= 12
    again = augment(batch, "specaugment", torch.Generator().manual_seed(3))
    assert torch.equal(out, again)
    assert augment(batch, "none", torch.Generator()) is batch
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment(batch, "mixup", torch.Generator())


def test_option_is_checked_and_labelled(six_class_manifest):
    options = small_run_options(six_class_manifest)
    with pytest.raises(EdgeclError, match="--augment: expected one of none, specaugment"):
        RunConfig(**options, augment="mixup")
    assert "augment" not in RunConfig(**options).identity()
    assert method_label({"mode": "replay", "mem_manage": "reservoir", "memory_size": 50,
                         "batch_sampling": "class-balanced",
                         "augment": "specaugment"}) == "reservoir-m50-cbb-specaugment"
