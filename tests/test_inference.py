"""The eval-only backbone copy the memory update embeds with (models.inference) computes what the
trained backbone computes, and a sampler using it keeps the same exemplars."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgecl.samplers import Candidate, SelectionContext, build_sampler
from models import build_model
from models.frontend import FrontEndConfig
from models.inference import InferenceEmbedder, inference_copy


def _trained(name: str, n_classes: int = 3, width: int = 8):
    """A model whose BatchNorms hold non-trivial statistics and affine weights."""
    torch.manual_seed(0)
    model = build_model(name, n_classes, FrontEndConfig.for_sample_rate(8000), width=width)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
        model.train()
        for _ in range(3):
            model.forward_features(torch.randn(6, 1, 64, 40) * 2 + 1)
    return model.eval()


@pytest.mark.parametrize("name", ["bc-resnet", "baseline"])
def test_the_inference_copy_gives_the_reference_embeddings(name):
    model = _trained(name)
    logmel = torch.randn(5, 1, 64, 50) * 3 - 2
    with torch.no_grad():
        reference = model.embed(logmel)
    fast = inference_copy(model.backbone, 64)
    got = fast(logmel)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert torch.allclose(got, reference, rtol=1e-4, atol=1e-5 * float(reference.abs().max()))
    # batch by batch or all at once: the same embeddings
    assert torch.allclose(torch.cat([fast(logmel[i:i + 2]) for i in range(0, 5, 2)]), got,
                          rtol=1e-4, atol=1e-6)


def test_the_copy_is_frozen_and_the_model_untouched():
    model = _trained("bc-resnet")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    counted = []
    embedder = InferenceEmbedder(model, on_batch=counted.append)
    inputs = torch.randn(3, 1, 64, 20), torch.randn(2, 1, 64, 20)
    rng_state = torch.get_rng_state()  # the training's dropout draws must not shift
    embedder(inputs[0])
    embedder(inputs[1])
    assert counted == [3, 2]
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(not p.requires_grad for p in embedder._copy.parameters())


@pytest.mark.parametrize("sampler", ["uncertainty", "prototype", "kcenter"])
def test_the_fast_embedding_path_keeps_the_same_exemplars(sampler):
    model = _trained("bc-resnet", n_classes=4)
    rng = np.random.default_rng(7)
    features = {f"c{i}": (rng.normal(size=(1, 64, 30)) * 2).astype(np.float32) for i in range(40)}
    candidates = [Candidate.from_array(key, i % 4, features[key], in_memory=i < 10)
                  for i, key in enumerate(features)]

    def stack(batch):
        return torch.from_numpy(np.stack([features[c.key] for c in batch]))

    def context(embed, embed_batch_size):
        return SelectionContext(phase=1, rng=np.random.default_rng(3), model=model,
                                features=stack, domain="logmel", embed=embed,
                                embed_batch_size=embed_batch_size, batch_size=16)

    # noise large enough that the votes differ between clips (and between draw orders)
    options = {"metric_k": 6, "noise_lambda": 2.0}
    # the reference: the model's own backbone, in the perturbation batches
    reference = build_sampler(sampler, options).select(candidates, 28, context(None, 16))
    fast = build_sampler(sampler, options).select(candidates, 28,
                                                  context(InferenceEmbedder(model), 3))
    assert fast == reference
    if sampler == "uncertainty":  # the votes themselves, clip by clip
        votes = build_sampler(sampler, options).predictions(candidates, context(None, 16))
        assert np.array_equal(build_sampler(sampler, options).predictions(
            candidates, context(InferenceEmbedder(model), 3)), votes)
