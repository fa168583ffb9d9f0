"""The GPU path without a GPU: every training option set, the memory update with every sampler,
resume and both benches run on the marked stand-in device of tests/device_audit.py, and nothing
a CUDA device would refuse may happen (mixed devices, a CPU generator drawing for device tensors,
numpy of a device tensor, device tensors in a saved file)."""

from __future__ import annotations

import pytest
import torch
from device_audit import audited_run
from run_helpers import Interrupted, dies_before_committing, small_run_options

from edgecl.config import RunConfig
from edgecl.run_folder import checkpoint_path
from edgecl.trainer import ContinualRun, train

# One row per path through the trainer: every sampler (each uncertainty perturbation), every
# batch sampling and augmentation, distillation, both bias corrections, weight aligning,
# class-balanced fine-tuning, a log-mel memory and joint training.
OPTION_SETS = {
    "finetune": dict(mode="finetune"),
    "joint": dict(mode="joint"),
    "random-class-balanced-specaugment": dict(mode="replay", mem_manage="random",
                                              batch_sampling="class-balanced",
                                              augment="specaugment"),
    "reservoir-square-root": dict(mode="replay", mem_manage="reservoir",
                                  batch_sampling="square-root"),
    "balanced-random-progressive": dict(mode="replay", mem_manage="balanced-random",
                                        batch_sampling="progressive"),
    "kcenter-distill": dict(mode="replay", mem_manage="kcenter", distill_output=1.0,
                            distill_feature=1.0, distill_adaptive=True),
    "prototype-bias-deployed-bft": dict(mode="replay", mem_manage="prototype",
                                        bias_correction="deployed", balanced_epochs=1),
    "uncertainty-noisytune-in-loop-align": dict(mode="replay", mem_manage="uncertainty",
                                                uncert_metric="noisytune", metric_k=2,
                                                uncert_ties="herding", bias_correction="in-loop",
                                                weight_align=True),
    "uncertainty-shift": dict(mode="replay", mem_manage="uncertainty", uncert_metric="shift",
                              metric_k=2, uncert_ties="soft"),
    "uncertainty-noise-pcm16": dict(mode="replay", mem_manage="uncertainty",
                                        uncert_metric="noise", metric_k=2,
                                        memory_format="pcm16"),
}


def audit_options(manifest, tmp_path, **overrides) -> dict:
    return small_run_options(manifest, epochs=1, width=4, batch_size=4, patience=0,
                             workspace=str(tmp_path), device="cpu", **overrides)


def assert_clean(audit) -> None:
    assert audit.marked_ops > 0, "nothing ran on the stand-in device: the audit saw nothing"
    assert not audit.records, "\n".join(str(r) for r in dict.fromkeys(audit.records))


# --- the audit itself catches what CUDA refuses -----------------------------------------------

def test_the_audit_records_what_cuda_refuses_and_passes_what_it_takes(tmp_path):
    from edgecl.device import resolve_device

    with audited_run() as audit:
        device = resolve_device("cpu")  # redirected to the stand-in
        layer = torch.nn.Linear(3, 2).to(device)
        assert layer.weight.device.type == "cuda" and layer.weight.is_cuda
        batch = torch.randn(4, 3)
        out = layer(batch.to(device))  # fine
        out.sum().backward()
        _ = out.detach().cpu().numpy()  # fine
        _ = out[torch.tensor([0, 1])]  # CPU indices into a device tensor: fine
        torch.save({k: v.cpu() for k, v in layer.state_dict().items()}, tmp_path / "ok.pt")
        assert not audit.records
        layer(batch)  # CPU input to device weights
        torch.multinomial(torch.ones(4, device=device), 2, generator=torch.Generator())
        out.detach().numpy()
        torch.save(layer.state_dict(), tmp_path / "bad.pt")
    problems = [r.problem.split(" (")[0] for r in audit.records]
    assert problems == ["device and CPU tensors in one operation",
                        "a CPU generator drawing for device tensors",
                        "a device tensor converted to numpy",
                        "torch.save of device tensors"]


# --- every path of a run ----------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(OPTION_SETS))
def test_a_run_does_nothing_cuda_refuses(name, six_class_manifest, tmp_path):
    options = audit_options(six_class_manifest, tmp_path, **OPTION_SETS[name])
    if options["mode"] == "joint":
        options.update(n_tasks=1, n_init_cls=6)
    with audited_run() as audit:
        results = train(RunConfig(**options))
    assert_clean(audit)
    assert {p["device"] for p in results["phases"]} == {"cuda"}
    assert {p["peak_gpu_memory_bytes"] for p in results["phases"]} == {0}  # the stand-in's


def test_a_resumed_run_does_nothing_cuda_refuses(six_class_manifest, tmp_path, monkeypatch):
    options = audit_options(six_class_manifest, tmp_path, mode="replay", mem_manage="prototype",
                            bias_correction="deployed")
    with audited_run() as audit:
        with dies_before_committing(monkeypatch, 1), pytest.raises(Interrupted):
            train(RunConfig(**options))
        train(RunConfig(**options))
    assert_clean(audit)
    # the checkpoint of a device run loads as documented, with no map_location
    checkpoint = torch.load(checkpoint_path(tmp_path / "run", 2), weights_only=True)
    assert all(t.device.type == "cpu" for t in checkpoint["state_dict"].values())
    assert "resuming at phase 1" in (tmp_path / "run" / "train.log").read_text()

def test_the_benches_do_nothing_cuda_refuses(tiny_manifest, tmp_path):
    from edgecl.commands.bench import time_memory_updates, time_training_epoch

    options = audit_options(tiny_manifest, tmp_path, n_tasks=2, mode="replay",
                            mem_manage="random", exp_name="bench", memory_size=4)
    with audited_run() as audit:
        rows = time_memory_updates(ContinualRun(RunConfig(**options)), {"metric_k": 2}, 1)
        row = time_training_epoch(RunConfig(**{**options, "mode": "finetune",
                                               "exp_name": "bench-train"}))
    assert_clean(audit)
    assert len(rows) == 8 and row["epoch_seconds"] > 0
