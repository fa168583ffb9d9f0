"""A phase whose fp32 model misses parity ships nothing, is reported, and the run goes on; a phase
whose int8 model is withheld ships fp32 and says so."""

from __future__ import annotations

import json

import pytest
from fixtures_audio import write_manifest_dataset

import firmware_export.run_export as run_export
from edgecl.config import RunConfig
from edgecl.trainer import train
from firmware_export.parity import ParityError


@pytest.fixture
def manifest(tmp_path):
    return write_manifest_dataset(tmp_path / "data", labels=["a", "b", "c", "d"], clips_per_class=6,
                                  test_per_class=2, seconds=0.25, sample_rate=8000)


def test_parity_miss_is_recorded_and_later_phases_still_export(manifest, tmp_path, monkeypatch):
    shipped_phases = []

    def fake_export(model, phase_dir, *, phase, **kwargs):
        if phase == 0:
            raise ParityError("export phase 0: fp32 parity check failed: max abs logit diff 0.5",
                              {"fp32_vs_torch": {"max_abs_logit_diff": 0.5}})
        shipped_phases.append(phase)
        return {"device_model": "model.onnx",
                "artifacts": {"int8": {"status": "withheld", "reason": "forced miss"}}}

    monkeypatch.setattr(run_export, "export_seen_tasks", fake_export)
    config = RunConfig(dataset="manifest", data_root=str(manifest), workspace=str(tmp_path / "ws"),
                       width=8, epochs=1, batch_size=8, patience=0, n_tasks=2, n_init_cls=2,
                       n_cls_a_task=2, memory_size=4, export=True, quiet=True, threads=1, seed=1)
    results = train(config)

    assert shipped_phases == [1]
    on_disk = json.loads((tmp_path / "ws" / config.name / "results.json").read_text())
    exports = [phase["export"] for phase in on_disk["phases"]]
    assert exports[0]["shipped"] is False
    assert "max abs logit diff 0.5" in exports[0]["error"]
    assert exports[0]["parity"]["fp32_vs_torch"]["max_abs_logit_diff"] == 0.5
    assert exports[1] == {"shipped": True, "device_model": "model.onnx", "int8": "withheld",
                          "int8_reason": "forced miss"}
    assert results["complete"] is True
    log = (tmp_path / "ws" / config.name / "train.log").read_text()
    assert "EXPORT NOT SHIPPED" in log and "phases [0] missed the fp32 parity bound" in log
    assert "phases [1] ship fp32 only" in log
