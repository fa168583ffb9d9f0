"""Every result says how it was made: code version, command, libraries, CPU, threads, times."""

from __future__ import annotations

import json
import subprocess

from edgecl.config import RunConfig
from edgecl.provenance import PROJECT_ROOT, cpu_description, git_state, provenance
from edgecl.trainer import train


def test_provenance_names_code_libraries_cpu_and_threads(monkeypatch):
    monkeypatch.setattr("sys.argv", ["edgecl", "train", "--seed", "4"])
    record = provenance(started="2026-12-01T10:00:00Z", threads=3)
    assert record["command"] == ["edgecl", "train", "--seed", "4"]
    assert record["started_utc"] == "2026-12-01T10:00:00Z" and record["ended_utc"] is None
    assert record["threads"] == 3
    assert set(record["libraries"]) == {"torch", "torchaudio", "onnx", "onnxruntime", "numpy"}
    import torch
    assert record["libraries"]["torch"] == torch.__version__.split("+")[0]
    cpu = cpu_description()
    assert cpu["cores"] >= 1 and cpu["machine"]
    assert set(cpu["numeric_flags"]) <= {"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni",
                                         "avx_vnni", "amx_int8", "asimd", "asimddp", "i8mm"}


def test_git_state_matches_the_checkout():
    state = git_state()
    if state is None:  # an installed copy, not a checkout
        return
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=str(PROJECT_ROOT))
    assert state["commit"] == head.stdout.strip() and isinstance(state["dirty"], bool)


def test_results_json_records_when_and_how_the_run_was_made(tiny_manifest, tmp_path):
    config = RunConfig(dataset="manifest", data_root=str(tiny_manifest),
                       workspace=str(tmp_path), width=8, epochs=1, batch_size=8, patience=0,
                       n_tasks=2, n_init_cls=2, n_cls_a_task=2, memory_size=4, export=False,
                       quiet=True, threads=1, seed=1)
    train(config)
    results = json.loads((tmp_path / config.name / "results.json").read_text())
    made = results["provenance"]
    assert made["started_utc"] <= made["ended_utc"]  # ISO 8601 UTC strings sort by time
    assert made["threads"] == 1 and made["edgecl"]
    assert made["cpu"]["model"]
