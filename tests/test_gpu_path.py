"""The pieces of `--device cuda` that can be checked without a GPU: the same random draws on the
device as on the CPU, features and checkpoints on the CPU, deterministic kernels and TF32 off,
the RAM probe leaving the GPU's generator alone, the GPU in provenance and peak GPU memory, a
resume on another device noted, and the benches' --device."""

from __future__ import annotations

import os
import types

import pytest
import torch
from click.testing import CliRunner
from device_audit import audited_run

import edgecl.provenance as provenance_module
from edgecl.cli import main
from edgecl.config import RunConfig
from edgecl.device import (
    CUBLAS_WORKSPACE,
    deterministic_cuda_env,
    deterministic_kernels,
    device_change_note,
    forked_rng,
    resolve_device,
)
from edgecl.features import FeatureCache, FeatureItem
from edgecl.training.augment import augment
from edgecl.training.batch_sampling import BATCH_SAMPLINGS, epoch_order

CUDA = torch.device("cuda")


@pytest.mark.parametrize("sampling", BATCH_SAMPLINGS)
def test_batch_draws_on_the_device_are_the_cpu_draws(sampling):
    targets = torch.tensor([0] * 9 + [1] * 3 + [2] * 2)
    on_cpu = epoch_order(targets, sampling, torch.Generator().manual_seed(4), epoch=1, epochs=3)
    with audited_run() as audit:
        on_device = epoch_order(targets.to(resolve_device("cuda")), sampling,
                                torch.Generator().manual_seed(4), epoch=1, epochs=3)
    assert not audit.records and torch.equal(on_cpu, on_device)


def test_specaugment_masks_on_the_device_are_the_cpu_masks():
    batch = torch.randn(3, 1, 16, 20)
    on_cpu = augment(batch, "specaugment", torch.Generator().manual_seed(2))
    with audited_run() as audit:
        on_device = augment(batch.to(resolve_device("cuda")), "specaugment",
                            torch.Generator().manual_seed(2))
        assert on_device.device.type == "cuda"
        on_device = on_device.cpu()
    assert not audit.records and torch.equal(on_cpu, on_device)


def test_features_are_computed_on_the_cpu_whatever_the_model_device():
    from models.frontend import FrontEndConfig, LogMelFrontEnd

    frontend = LogMelFrontEnd(FrontEndConfig.for_sample_rate(8000))
    clip = torch.randn(2000).numpy()
    item = FeatureItem("clip", "clip", lambda: clip)
    expected = FeatureCache(frontend).get([item])
    with audited_run() as audit:
        device_frontend = frontend.to(resolve_device("cuda"))
        features = FeatureCache(device_frontend).get([item])
        assert not audit.is_marked(features)  # computed by a CPU copy, kept on the CPU
        assert audit.is_marked(next(device_frontend.buffers()))
    assert not audit.records and torch.equal(features, expected)


def test_a_gpu_run_uses_deterministic_kernels_and_no_tf32(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "use_deterministic_algorithms",
                        lambda on, warn_only=False: calls.append(on))
    for name in ("deterministic", "benchmark", "allow_tf32"):
        monkeypatch.setattr(torch.backends.cudnn, name, name != "deterministic")
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    matmul_tf32 = torch.backends.cuda.matmul.allow_tf32  # not monkeypatch-able: restored below
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        deterministic_kernels(torch.device("cpu"))
        assert calls == [] and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
        deterministic_kernels(CUDA)
        assert calls == [True] and torch.backends.cudnn.deterministic
        assert not torch.backends.cudnn.benchmark and not torch.backends.cudnn.allow_tf32
        assert not torch.backends.cuda.matmul.allow_tf32
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE
        deterministic_kernels(CUDA, allow_tf32=True)
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul_tf32


def test_the_cublas_workspace_keeps_a_users_setting():
    env = {"CUBLAS_WORKSPACE_CONFIG": ":16:8"}
    deterministic_cuda_env(env)
    assert env == {"CUBLAS_WORKSPACE_CONFIG": ":16:8"}
    env = {}
    deterministic_cuda_env(env)
    assert env == {"CUBLAS_WORKSPACE_CONFIG": CUBLAS_WORKSPACE}


def test_allow_tf32_is_in_the_identity_only_when_on(tmp_path):
    assert "allow_tf32" not in RunConfig().identity()
    assert RunConfig(allow_tf32=False).default_exp_name() == RunConfig().default_exp_name()
    assert RunConfig(allow_tf32=True).default_exp_name() != RunConfig().default_exp_name()
    assert RunConfig(allow_tf32=True).identity()["allow_tf32"] is True


def test_measurements_fork_the_gpus_generator_too(monkeypatch):
    forked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    monkeypatch.setattr(torch.random, "fork_rng", lambda devices, device_type: forked.append(
        (devices, device_type)))
    forked_rng(CUDA)
    forked_rng(torch.device("cuda", 1))
    forked_rng(torch.device("cpu"))
    assert forked == [([3], "cuda"), ([1], "cuda"), ([], "cuda")]


def test_provenance_names_the_gpu_only_on_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: types.SimpleNamespace(
        name="Stand-in GPU", total_memory=8 << 30))
    monkeypatch.setattr(provenance_module, "nvidia_driver_version", lambda: "550.54")
    gpu = provenance_module.provenance(device=CUDA)["gpu"]
    assert gpu["model"] == "Stand-in GPU" and gpu["memory_bytes"] == 8 << 30
    assert gpu["driver"] == "550.54" and gpu["cuda"] == torch.version.cuda
    assert "gpu" not in provenance_module.provenance(device=torch.device("cpu"))


def test_a_resume_on_another_device_is_noted():
    previous = {"phases": [{"device": "cuda:0"}, {"device": "cuda:0"}]}
    note = device_change_note(previous, 1, torch.device("cpu"))
    assert note.startswith("note: phases 0-1 ran on cuda:0, this session on cpu")
    assert device_change_note(previous, 1, torch.device("cuda:0")) is None
    assert device_change_note(None, 0, torch.device("cpu")) is None


def test_bench_train_takes_a_device_and_says_it(tmp_path):
    args = ["bench", "train", "--models", "baseline", "--sample-rates", "8000",
            "--clip-seconds", "0.25", "--clips-per-class", "3", "--epochs", "1", "--width", "4",
            "--threads", "1", "--workspace", str(tmp_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "on cpu, 1 thread(s)" in result.output
    with audited_run() as audit:
        result = CliRunner().invoke(main, [*args, "--device", "cuda"])
    assert result.exit_code == 0, result.output
    assert "on cuda, 1 thread(s)" in result.output and not audit.records
