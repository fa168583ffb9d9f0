"""BC-ResNet-Mod, baseline CNN, classifier head growth, SoundClassifier interface and ONNX export."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

import models
from edgecl.errors import EdgeclError
from models.bcresnet import SubSpectralNorm
from models.frontend import FrontEndConfig
from models.head import ClassifierHead
from models.profile import count_parameters

# One thread: on a shared 2-core machine OpenMP spin-waiting makes 2 threads 10x slower.


def _build(name: str, n_classes: int = 10, rate: int = 8000, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    return models.build_model(name, n_classes, FrontEndConfig.for_sample_rate(rate), **kwargs)


@pytest.mark.parametrize("name,embedding_dim", [("bc-resnet", 100), ("baseline", 32)])
@pytest.mark.parametrize("rate,seconds", [(8000, 1.0), (16000, 0.5), (44100, 1.0)])
def test_output_shapes(name, embedding_dim, rate, seconds):
    model = _build(name, n_classes=7, rate=rate).eval()
    logits, embedding = model(torch.randn(2, int(rate * seconds)))
    assert logits.shape == (2, 7)
    assert embedding.shape == (2, embedding_dim)
    assert model.embedding_dim == embedding_dim


def test_width_multiplier_scales_channels():
    narrow, wide = _build("bc-resnet", width=20), _build("bc-resnet", width=80)
    assert narrow.embedding_dim == 50 and wide.embedding_dim == 200
    assert count_parameters(narrow) < count_parameters(_build("bc-resnet")) < count_parameters(wide)


def test_bc_resnet_parameter_count_near_published():
    # Published: about 86k parameters with 10 classes and 90k with 50 at base width 40.
    for n_classes, published in ((10, 86_000), (50, 90_000)):
        count = count_parameters(_build("bc-resnet", n_classes=n_classes))
        assert abs(count - published) / published < 0.01, count


def test_baseline_parameter_count_follows_its_layers():
    widths = (1, 16, 32, 64, 128)
    convs = sum(9 * a * b + 2 * b for a, b in itertools.pairwise(widths))  # 3x3 conv + BN affine
    expected = convs + (128 * 32 + 32) + (32 * 10 + 10)
    assert count_parameters(_build("baseline")) == expected


@pytest.mark.parametrize("name", ["bc-resnet", "baseline"])
def test_forward_features_and_embed_agree_with_forward(name):
    model = _build(name).eval()
    wave = torch.randn(3, 8000)
    logits, embedding = model(wave)
    logmel = model.frontend(wave)
    logits_f, embedding_f = model.forward_features(logmel)
    torch.testing.assert_close(logits, logits_f)
    torch.testing.assert_close(embedding, model.embed(logmel))
    torch.testing.assert_close(logits, model.head(embedding))


@pytest.mark.parametrize("name", ["bc-resnet", "baseline"])
def test_init_is_deterministic_under_manual_seed(name):
    first, second, other = _build(name, seed=3), _build(name, seed=3), _build(name, seed=4)
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key
    assert not torch.equal(first.head.fc.weight, other.head.fc.weight)


def test_head_growth_keeps_old_rows_and_old_logits():
    torch.manual_seed(0)
    head = ClassifierHead(16, 3)
    old_weight, old_bias = head.fc.weight.detach().clone(), head.fc.bias.detach().clone()
    embedding = torch.randn(5, 16)
    old_logits = head(embedding).detach()
    head.grow(5)
    assert head.n_classes == 5 and head(embedding).shape == (5, 5)
    assert torch.equal(head.fc.weight[:3], old_weight) and torch.equal(head.fc.bias[:3], old_bias)
    # Same weights and inputs; only the GEMM blocking of a wider matrix may change the rounding.
    torch.testing.assert_close(head(embedding)[:, :3], old_logits, rtol=1e-6, atol=1e-6)
    bound = 1 / 16 ** 0.5  # nn.Linear's init range for fan_in 16
    new_rows = head.fc.weight[3:].detach()
    assert new_rows.abs().max() <= bound and new_rows.abs().sum() > 0
    assert head.fc.bias[3:].abs().max() <= bound
    head.grow(5)  # growing to the same size is a no-op
    assert head.n_classes == 5
    with pytest.raises(EdgeclError, match="shrink"):
        head.grow(2)


def test_optimizer_created_after_growth_trains_new_rows():
    torch.manual_seed(0)
    head = ClassifierHead(8, 2)
    head.grow(4)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.1)
    before = head.fc.weight.detach().clone()
    loss = nn.functional.cross_entropy(head(torch.randn(6, 8)), torch.tensor([3, 2, 3, 2, 0, 1]))
    loss.backward()
    optimizer.step()
    assert not torch.equal(head.fc.weight[2:], before[2:])


def test_grown_model_config_rebuilds_the_same_architecture():
    model = _build("bc-resnet", n_classes=4, width=20).eval()
    model.head.grow(6)
    config = model.model_config()
    assert config["name"] == "bc-resnet" and config["width"] == 20 and config["n_classes"] == 6
    clone = models.rebuild(config).eval()
    clone.load_state_dict(model.state_dict())
    wave = torch.randn(2, 8000)
    torch.testing.assert_close(clone(wave)[0], model(wave)[0])
    baseline_config = _build("baseline").model_config()
    assert models.rebuild(baseline_config).model_config() == baseline_config


def test_bad_model_options_raise_edgecl_errors():
    with pytest.raises(EdgeclError, match="--model"):
        _build("resnet50")
    config = FrontEndConfig.for_sample_rate(8000)
    with pytest.raises(EdgeclError, match="--n-mels"):
        models.build_model("bc-resnet", 10, FrontEndConfig(**{**config.to_dict(), "n_mels": 40}))
    with pytest.raises(EdgeclError, match="model config"):
        models.rebuild({"name": "baseline"})


def test_sub_spectral_norm_normalises_each_band_separately():
    torch.manual_seed(0)
    norm = SubSpectralNorm(channels=2, sub_bands=4).train()
    offsets = torch.tensor([0.0, 10.0, -5.0, 3.0]).repeat_interleave(4)  # 16 bins, 4 bands
    x = torch.randn(8, 2, 16, 12) + offsets[None, None, :, None]
    bands = norm(x).reshape(8, 2, 4, 4, 12)
    band_means = bands.mean(dim=(0, 3, 4))
    assert torch.allclose(band_means, torch.zeros(2, 4), atol=1e-5)
    # A plain BatchNorm over the whole spectrum would leave the offsets in place.
    plain = nn.BatchNorm2d(2).train()(x).reshape(8, 2, 4, 4, 12).mean(dim=(0, 3, 4))
    assert plain.abs().max() > 1


def _randomise_batchnorm_statistics(model: nn.Module) -> None:
    """Non-trivial running statistics, so an export that drops BatchNorm cannot pass."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator))
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)


@pytest.mark.slow  # end to end: the whole model through the ONNX exporter (~20 s)
def test_full_model_exports_to_onnx_and_matches(tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    model = _build("bc-resnet")
    _randomise_batchnorm_statistics(model)
    exported = models.LogitsOnly(model).eval()
    path = tmp_path / "model.onnx"
    torch.onnx.export(exported, (torch.randn(2, 8000),), str(path), dynamo=True, opset_version=18,
                      input_names=["waveform"], output_names=["logits"], verbose=False,
                      dynamic_shapes={"waveform": {0: torch.export.Dim("batch")}})
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        wave = 0.3 * torch.randn(batch, 8000)
        (logits,) = session.run(None, {"waveform": wave.numpy()})
        with torch.no_grad():
            expected = exported(wave).numpy()
        assert logits.shape == (batch, 10)
        assert np.max(np.abs(logits - expected)) < 1e-3 * max(1.0, np.abs(expected).max())
