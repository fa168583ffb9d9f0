"""Device budgets: byte sizes, memory capacity, MAC arithmetic, the phase stop rule, RAM figures."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from edgecl.budget.macs import ForwardMacCounter, ModelMacs, train_step_macs
from edgecl.budget.ram import device_train_ram, device_train_ram_bytes, peak_rss_bytes
from edgecl.budget.units import format_bytes, parse_bytes, parse_count
from edgecl.errors import EdgeclError
from edgecl.memory import capacity_for_budget
from edgecl.memory.formats import FORMAT_NAMES, get_format
from edgecl.samplers import build_sampler
from edgecl.samplers.perturbations import perturbation_macs, stft_size
from edgecl.training.stop import ComputeBudget, PhaseMeter


def memory_update_macs(sampler, n_candidates, macs, *, uncert_metric="noisytune", k=6, **kwargs):
    """A sampler's own estimate of one update's MACs (Sampler.update_macs)."""
    chooser = build_sampler(sampler, {"uncert_metric": uncert_metric, "metric_k": k})
    return chooser.update_macs(n_candidates, macs, **kwargs)


# --- parse_bytes -------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("1000", 1000), ("7B", 7), (" 7 b ", 7), (42, 42),
    ("512KB", 512_000), ("512kb", 512_000), ("4MB", 4_000_000), ("2 GB", 2_000_000_000),
    ("1KiB", 1024), ("4MiB", 4 * 1024 ** 2), ("1gib", 1024 ** 3),
    ("1.5MB", 1_500_000), ("1.1KiB", 1126), (".5KB", 500),
])
def test_parse_bytes_accepts_si_and_iec_units(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "KB", "abc", "-5", "5XB", "4 M B", "1e3", "0", "0.4", "0KB",
                                  True])
def test_parse_bytes_rejects_with_the_option_name(text):
    with pytest.raises(EdgeclError, match=r"^--memory-bytes: expected"):
        parse_bytes(text)


@pytest.mark.parametrize("text, expected", [("2000", 2000), ("2e9", 2 * 10 ** 9), ("500M", 5 * 10 ** 8),
                                            ("3g", 3 * 10 ** 9), ("1.5k", 1500), (7, 7)])
def test_parse_count(text, expected):
    assert parse_count(text, "--max-train-macs") == expected


@pytest.mark.parametrize("text", ["", "-3", "0", "5X", "0.2", "1e"])
def test_parse_count_rejects_with_the_option_name(text):
    with pytest.raises(EdgeclError, match=r"^--max-train-macs: expected a positive count"):
        parse_count(text, "--max-train-macs")


def test_format_bytes_uses_the_same_si_convention():
    assert format_bytes(512) == "512 B"
    assert format_bytes(parse_bytes("1.5MB")) == "1.5 MB"
    assert format_bytes(None) == "-"


# --- capacity ----------------------------------------------------------------------------------

def test_capacity_is_budget_over_record_size():
    per_clip = get_format("mulaw8").nbytes((8000,))  # 8008
    assert capacity_for_budget(10 * per_clip + per_clip - 1, "mulaw8", (8000,), 10) == 10
    assert capacity_for_budget(10 * per_clip, get_format("mulaw8"), (8000,), 10) == 10
    # Same bytes, four times the exemplars of float32 (up to the header).
    budget = 100 * get_format("float32").nbytes((8000,))
    assert capacity_for_budget(budget, "mulaw8", (8000,), 10) == budget // 8008 == 399


def test_impossible_budget_is_a_clear_error():
    per_clip = get_format("float32").nbytes((8000,))
    with pytest.raises(EdgeclError, match=r"impossible budget.*fewer than one per class for 10 "
                                          rf"classes; expected at least {10 * per_clip} bytes"):
        capacity_for_budget(10 * per_clip - 1, "float32", (8000,), 10)


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(FORMAT_NAMES), budget=st.integers(1, 5_000_000),
       clip_samples=st.integers(100, 48_000), n_classes=st.integers(1, 50))
def test_byte_budget_is_never_exceeded(name, budget, clip_samples, n_classes):
    fmt = get_format(name)
    shape = (clip_samples,) if fmt.domain == "waveform" else (1, 64, clip_samples // 160 + 1)
    per_exemplar = fmt.nbytes(shape)
    try:
        capacity = capacity_for_budget(budget, fmt, shape, n_classes)
    except EdgeclError as error:
        assert "impossible budget" in str(error)
        assert budget < n_classes * per_exemplar
        return
    assert capacity >= n_classes
    assert capacity * per_exemplar <= budget < (capacity + 1) * per_exemplar
    # The records a full memory would hold really are that size.
    example = fmt.encode(np.random.default_rng(clip_samples).uniform(-1, 1, shape).astype(np.float32))
    assert len(example.to_bytes(n_classes - 1)) * capacity <= budget


# --- MACs --------------------------------------------------------------------------------------

def test_head_macs_of_a_real_model_match_its_linear_layer():
    # A Linear layer of D inputs and C outputs costs D x C MACs per clip.
    from models import FrontEndConfig, build_model

    model = build_model("baseline", 7, FrontEndConfig.for_sample_rate(8000))
    macs = ModelMacs.of_model(model, 8000)
    assert macs.head == model.embedding_dim * 7
    assert macs.frontend > 0 and macs.backbone > 0
    assert macs.total == macs.frontend + macs.backbone + macs.head


def test_conv_layer_macs():
    from models.profile import layer_macs

    conv = nn.Conv2d(4, 8, kernel_size=3, padding=1)
    out = conv(torch.zeros(2, 4, 10, 12))
    assert layer_macs(conv, out) == 8 * 10 * 12 * 4 * 3 * 3


def test_train_step_is_three_forwards_of_the_trainable_part():
    macs = ModelMacs(frontend=1000, backbone=200, head=10)
    assert train_step_macs(macs, 32) == 32 * 3 * 210
    # Without cached features the fixed front end runs forward only, once per clip.
    assert train_step_macs(macs, 32, features_cached=False) == 32 * (3 * 210 + 1000)


def test_memory_update_macs_follow_what_each_sampler_runs():
    macs = ModelMacs(frontend=1000, backbone=200, head=10)
    n, k, samples = 50, 6, 8000
    assert memory_update_macs("random", n, macs) == 0
    assert memory_update_macs("reservoir", n, macs) == 0
    assert memory_update_macs("prototype", n, macs) == n * 200
    assert memory_update_macs("prototype", n, macs, features_cached=False) == n * 1200
    assert memory_update_macs("uncertainty", n, macs, uncert_metric="noisytune", k=k) == n * (200 + 6 * 10)
    assert (memory_update_macs("uncertainty", n, macs, uncert_metric="noise", k=k, clip_samples=samples)
            == n * k * (1210 + perturbation_macs("noise", samples)))
    shift = memory_update_macs("uncertainty", n, macs, uncert_metric="shift", k=k, clip_samples=samples)
    assert shift == n * k * (1210 + perturbation_macs("shift", samples))
    assert perturbation_macs("shift", samples) > perturbation_macs("noise", samples)
    with pytest.raises(EdgeclError, match="--mem-manage"):
        memory_update_macs("fifo", n, macs)
    with pytest.raises(EdgeclError, match="--metric-k"):
        memory_update_macs("uncertainty", n, macs, uncert_metric="noisytune", k=0)
    with pytest.raises(EdgeclError, match="--uncert-metric"):
        memory_update_macs("uncertainty", n, macs, uncert_metric="blur", k=2)
    with pytest.raises(EdgeclError, match="--uncert-metric"):
        perturbation_macs("blur", samples)


@pytest.mark.parametrize("sample_rate, clip_samples", [(16000, 16000), (16000, 600), (1000, 4000),
                                                       (44100, 220500), (8000, 100)])
def test_shift_cost_uses_the_pitch_shifts_own_fft_size(sample_rate, clip_samples):
    """The cost estimate and the perturbation agree on the STFT size, short clips included."""
    n_fft = stft_size(sample_rate, clip_samples)
    assert n_fft <= clip_samples // 2 or n_fft == 8
    frames = clip_samples // (n_fft // 4) + 1
    expected = (2 * frames * int(2 * n_fft * np.log2(n_fft)) + 4 * frames * (n_fft // 2 + 1)
                + 13 * clip_samples) // 2
    assert perturbation_macs("shift", clip_samples, sample_rate) == expected


def test_counter_measures_what_a_noisytune_update_runs():
    from models import FrontEndConfig, build_model

    model = build_model("baseline", 4, FrontEndConfig.for_sample_rate(8000)).eval()
    macs = ModelMacs.of_model(model, 4000)
    waveforms = torch.zeros(5, 4000)
    features = model.frontend(waveforms)  # cached before the update, as the trainer does
    with torch.no_grad(), ForwardMacCounter(model, macs) as counter:
        embedding = model.embed(features)
        for _ in range(6):
            model.head(embedding + 0.01)
    assert counter.clips == {"frontend": 0, "backbone": 5, "head": 30}
    assert counter.full_forwards == 0
    assert counter.macs == memory_update_macs("uncertainty", 5, macs, uncert_metric="noisytune", k=6)
    with torch.no_grad(), ForwardMacCounter(model, macs) as counter:
        model(waveforms)  # a perturbed copy goes through the whole model
    assert counter.full_forwards == 5 and counter.macs == 5 * macs.total
    model(waveforms)  # hooks are gone after the block
    assert counter.full_forwards == 5


# --- stop rule ---------------------------------------------------------------------------------

def _train(meter: PhaseMeter, step_macs, max_batches: int = 1000) -> None:
    """The loop shape of the training loop: ask before each step, record after it. With
    step_macs_per_clip = 1 a "batch" of n clips costs n MACs."""
    meter.start()
    for macs in itertools.islice(step_macs, max_batches):
        if meter.should_stop(macs):
            break
        meter.step_done(macs)
    meter.finish()


def test_step_budget_stops_at_exactly_that_many_steps():
    meter = PhaseMeter(ComputeBudget(max_steps=7), step_macs_per_clip=1)
    _train(meter, itertools.repeat(100))
    assert meter.steps == 7 and meter.macs == 700
    assert meter.results()["stopped_for_budget"] is True
    assert meter.results()["stop_reason"] == "max_steps"


def test_mac_budget_is_never_exceeded():
    meter = PhaseMeter(ComputeBudget(max_train_macs=1000), step_macs_per_clip=1)
    _train(meter, itertools.cycle([300, 120]))  # a short last batch of an epoch costs less
    # 300 + 120 + 300 + 120 = 840; the next 300 would make 1140, so it is not taken.
    assert meter.steps == 4 and meter.macs == 840
    assert meter.reason == "max_train_macs"


def test_meter_speaks_the_training_loops_stop_protocol():
    meter = PhaseMeter(ComputeBudget(max_train_macs=1000), step_macs_per_clip=30)
    meter.start()
    batches = [8, 8, 8, 8, 3]
    taken = []
    for batch in batches:
        if meter.should_stop(batch):
            break
        meter.step_done(batch)
        taken.append(batch)
    assert taken == [8, 8, 8, 8] and meter.macs == 32 * 30 == 960  # 35 x 30 would overshoot
    assert meter.reason == "max_train_macs"


def test_time_budget_with_a_fake_clock():
    ticks = itertools.count(0.0, 0.5)  # every clock read advances half a second
    meter = PhaseMeter(ComputeBudget(max_train_seconds=3.0), step_macs_per_clip=1,
                       clock=lambda: next(ticks))
    _train(meter, itertools.repeat(1))
    assert meter.reason == "max_train_seconds"
    assert 0 < meter.steps < 10
    assert meter.seconds >= 3.0


def test_no_budget_runs_to_the_end_of_the_data():
    meter = PhaseMeter(step_macs_per_clip=1)
    _train(meter, itertools.repeat(5), max_batches=40)
    assert meter.steps == 40 and meter.reason is None
    assert meter.results() == {"train_steps": 40, "train_macs": 200,
                               "train_seconds": meter.seconds, "stopped_for_budget": False,
                               "stop_reason": None}


@pytest.mark.parametrize("field, option", [("max_steps", "--max-steps"),
                                           ("max_train_seconds", "--max-train-seconds"),
                                           ("max_train_macs", "--max-train-macs")])
@pytest.mark.parametrize("value", [0, -1])
def test_non_positive_limits_are_clear_errors(field, option, value):
    with pytest.raises(EdgeclError, match=rf"^{option}: expected a positive number"):
        ComputeBudget(**{field: value})


# --- RAM ---------------------------------------------------------------------------------------

def test_peak_rss_matches_the_kernel_high_water_mark():
    status = Path("/proc/self/status")
    if not status.exists():
        pytest.skip("needs Linux /proc")

    def vm_hwm() -> int:
        line = next(l for l in status.read_text().splitlines() if l.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024

    before = vm_hwm()
    block = np.ones(48 * 1024 * 1024 // 8)  # 48 MiB touched, so resident
    peak = peak_rss_bytes()
    assert before <= peak <= vm_hwm()
    assert peak >= block.nbytes


class _Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(10, 20), nn.Linear(20, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(torch.relu(self.first(x)))


def test_ram_of_a_known_model():
    ram = device_train_ram(_Mlp(), batch_size=8, input_shape=(10,))
    params = 10 * 20 + 20 + 20 * 5 + 5
    # Weights, gradients and Adam's two moments: 4 fp32 copies of the parameters.
    assert ram.weights + ram.gradients + ram.optimizer_state == 4 * params * 4
    # Autograd keeps the ReLU output (also the second layer's input, counted once): 8 x 20 floats.
    assert ram.activations == 8 * 20 * 4
    assert ram.input_batch == 8 * 10 * 4
    assert device_train_ram_bytes(_Mlp(), 8, (10,)) == ram.total == sum(
        v for k, v in ram.as_dict().items() if k != "total")


def test_ram_measurement_frees_everything_it_allocated():
    import gc

    def live_tensors() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))

    model = _Mlp()
    device_train_ram(model, 8, (10,))
    before = live_tensors()
    for _ in range(3):
        device_train_ram(model, 8, (10,))
    assert live_tensors() == before


def test_ram_grows_with_batch_and_leaves_model_and_rng_alone():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(0)
    small = device_train_ram(model, 2, (1, 16, 16))
    large = device_train_ram(model, 16, (1, 16, 16))
    after_draw = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(after_draw, torch.rand(1))  # the global RNG was not advanced
    assert large.activations > small.activations and large.total > small.total
    assert large.weights == small.weights
    # BatchNorm's running statistics are weights on the device but not trained.
    params = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for b in model.buffers())
    assert small.weights == 4 * (params + buffers) and small.optimizer_state == 8 * params
    assert not model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
