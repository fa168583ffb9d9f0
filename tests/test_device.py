"""--device: auto picks cuda only when torch has it; cuda without a GPU is a one-line error; on the
CPU the device option changes no figure and no run identity (tests run on CPU only)."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from fixtures_audio import write_manifest_dataset

from edgecl.cli import main
from edgecl.config import RunConfig
from edgecl.device import device_of, resolve_device
from edgecl.errors import EdgeclError
from edgecl.trainer import train


def test_auto_is_cpu_without_cuda_and_cuda_needs_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") == resolve_device("cpu")
    with pytest.raises(EdgeclError, match="--device cuda: no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(EdgeclError, match="--device: expected one of auto, cpu, cuda"):
        RunConfig(device="tpu")
    assert device_of(torch.nn.Linear(2, 2)) == torch.device("cpu")


def test_the_device_is_not_part_of_a_run_identity():
    assert RunConfig(device="cpu").default_exp_name() == RunConfig(device="auto").default_exp_name()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_cuda_without_a_gpu_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(main, ["train", "--device", "cuda", "--workspace", str(tmp_path),
                                       "--clips-per-class", "2", "--clip-seconds", "0.25",
                                       "--no-export", "--quiet"])
    assert result.exit_code == 2 and "--device cuda" in result.output
    assert result.output.strip().count("\n") == 0


def test_cpu_and_auto_give_the_same_figures_on_cpu(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    manifest = write_manifest_dataset(tmp_path / "data", labels=("a", "b", "c", "d"),
                                      clips_per_class=6, test_per_class=2, seconds=0.25,
                                      sample_rate=8000)
    base = dict(dataset="manifest", data_root=str(manifest), width=8, epochs=1, batch_size=8,
                patience=0, n_tasks=2, n_init_cls=2, n_cls_a_task=2, memory_size=4,
                mem_manage="uncertainty", uncert_metric="noisytune", metric_k=2, export=False,
                quiet=True, threads=1, seed=2, exp_name="run", feature_store=False)
    runs = [train(RunConfig(**base, device=device, workspace=str(tmp_path / device)))
            for device in ("cpu", "auto")]
    assert [r["accuracy_matrix"] for r in runs] == [runs[0]["accuracy_matrix"]] * 2
    assert [r["memory_balance"] for r in runs] == [runs[0]["memory_balance"]] * 2
    assert {p["device"] for r in runs for p in r["phases"]} == {"cpu"}
