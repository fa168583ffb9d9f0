"""A short continual run on the real FSDD corpus, end to end (slow; skips without ../shared)."""

from __future__ import annotations

import json

import pytest

from edgecl.config import RunConfig
from edgecl.trainer import train

pytestmark = pytest.mark.slow


def _config(manifest, workspace, **overrides):
    values = dict(dataset="manifest", data_root=str(manifest), workspace=str(workspace),
                  n_tasks=2, n_init_cls=2, n_cls_a_task=2, width=8, epochs=1, batch_size=32,
                  mem_manage="reservoir", memory_format="mulaw8", memory_size=40, export=False,
                  quiet=True, threads=1, seed=3, exp_name="fsdd")
    values.update(overrides)
    return RunConfig(**values)


def test_fsdd_two_phase_replay_run_is_complete_and_repeatable(fsdd_manifest, tmp_path):
    first = train(_config(fsdd_manifest, tmp_path / "one"))
    assert first["complete"] and [len(row) for row in first["accuracy_matrix"]] == [1, 2]
    assert json.loads((tmp_path / "one" / "fsdd" / "results.json").read_text())["complete"]
    assert all(p["memory_exemplars"] == 40 for p in first["phases"])
    assert first["phases"][0]["memory_bytes"]["per_exemplar"] == 8008  # 1 s at 8 kHz, mu-law
    second = train(_config(fsdd_manifest, tmp_path / "two"))
    keys = ("classes", "accuracy_matrix", "memory_balance")
    assert {k: first[k] for k in keys} == {k: second[k] for k in keys}
    assert [p["train_macs"] for p in first["phases"]] == [p["train_macs"] for p in second["phases"]]
