"""Parameter and MAC counting, checked against hand-computed layer costs."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

import models
from models.frontend import FrontEndConfig
from models.profile import count_macs, count_parameters, layer_macs, macs_breakdown, module_macs

# One thread: on a shared 2-core machine OpenMP spin-waiting makes 2 threads 10x slower.


def test_layer_macs_by_hand():
    conv = nn.Conv2d(4, 8, 3, padding=1)
    assert layer_macs(conv, conv(torch.zeros(2, 4, 10, 12))) == 8 * 10 * 12 * (4 * 3 * 3)
    depthwise = nn.Conv2d(6, 6, (3, 1), padding=(1, 0), groups=6)
    assert layer_macs(depthwise, depthwise(torch.zeros(1, 6, 16, 5))) == 6 * 16 * 5 * 3
    linear = nn.Linear(32, 10)
    assert layer_macs(linear, linear(torch.zeros(3, 32))) == 32 * 10
    assert layer_macs(nn.ReLU(), torch.zeros(1, 100)) == 0


def test_count_parameters_skips_frozen_weights_and_buffers():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    assert count_parameters(model) == (4 * 3 + 3) + 2 * 3 + (3 * 2 + 2)
    model[0].weight.requires_grad_(False)
    assert count_parameters(model) == 3 + 2 * 3 + (3 * 2 + 2)
    front_end = models.LogMelFrontEnd(FrontEndConfig.for_sample_rate(8000))
    assert count_parameters(front_end) == 0


def test_factored_front_end_macs_match_a_hand_count():
    config = FrontEndConfig.for_sample_rate(8000)  # factored: N1 = N2 = 16, used bins 1 to 127
    front_end = models.LogMelFrontEnd(config)
    n1, n2, k2 = 16, 16, 8  # k2: ceil(128 / 16)
    per_frame = n2 * 2 * n1 * n1 + n1 * 2 * k2 * 2 * n2 + config.n_mels * n1 * k2
    assert module_macs(front_end, 8000) == config.n_frames(8000) * per_frame


def test_baseline_macs_match_a_hand_count():
    config = replace(FrontEndConfig.for_sample_rate(8000), stft_impl="conv")
    model = models.build_model("baseline", 10, config)
    model.train()
    parts = macs_breakdown(model, 8000)
    assert model.training  # profiling restores the mode

    frames = config.n_frames(8000)
    bins = model.frontend.n_bins
    assert parts["frontend"] == frames * (2 * bins * config.n_fft + config.n_mels * bins)

    height, width, backbone = config.n_mels, frames, 0
    for c_in, c_out in zip((1, 16, 32, 64), (16, 32, 64, 128), strict=True):
        backbone += c_out * height * width * c_in * 9
        height, width = height // 2, width // 2
    backbone += 128 * 32
    assert parts["backbone"] == backbone
    assert parts["head"] == 32 * 10
    assert parts["total"] == parts["frontend"] + parts["backbone"] + parts["head"]
    assert count_macs(model, 8000) == parts["total"]


def test_bc_resnet_macs_grow_with_clip_length_and_width():
    config = FrontEndConfig.for_sample_rate(8000)
    base = models.build_model("bc-resnet", 10, config)
    short, long = macs_breakdown(base, 8000), macs_breakdown(base, 16000)
    assert 1.8 < long["backbone"] / short["backbone"] < 2.2
    assert short["head"] == 100 * 10
    narrow = models.build_model("bc-resnet", 10, config, width=20)
    # Pointwise convolutions dominate and scale with width squared.
    assert macs_breakdown(narrow, 8000)["backbone"] < short["backbone"] / 2.5
