"""Every training technique's results pinned: small three-phase runs on the synthetic dataset
whose accuracy matrices and per-phase validation losses were computed by the trainer before its
techniques became steps (edgecl.steps), at one thread. A change to the phase loop or a step that
changes what a run computes shows here.

Accuracies are exact: they count right answers on 40 test clips; the validation losses (best
epoch, per phase) are compared within a relative 1e-4. Both hold only on the kind of CPU they
were computed on (AMD x86 with AVX-512, no AMX): another kind's float kernels sum in another
order, and three epochs of training these near-chance models carry that far (on an Intel Xeon with
AMX the first phase's validation loss of `uncertainty` is 1.385 against 1.460, and accuracies move
by up to three clips). Elsewhere the pins are skipped, not loosened: a tolerance wide enough for
another CPU would also pass a change of method.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgecl.config import RunConfig
from edgecl.trainer import train

BASE = dict(dataset="synthetic", clips_per_class=20, width=8, epochs=3, batch_size=8, patience=0,
            n_tasks=3, memory_size=20, export=False, quiet=True, threads=1, seed=5)
CONFIGS = {
    "uncertainty": dict(mem_manage="uncertainty", metric_k=2),
    "distill-deployed-bic": dict(mem_manage="reservoir", distill_output=1.0, distill_feature=0.5,
                                 distill_adaptive=True, bias_correction="deployed", seed=3),
    "distill-in-loop-bic-specaugment": dict(mem_manage="prototype", distill_output=1.0,
                                            bias_correction="in-loop", augment="specaugment"),
    "progressive-balanced-finetune": dict(mem_manage="reservoir", batch_sampling="progressive",
                                          balanced_epochs=2),
    "weight-align-class-balanced": dict(mem_manage="random", weight_align=True,
                                        batch_sampling="class-balanced", lr_incremental=5e-4),
    "finetune-weight-align-distill": dict(mode="finetune", weight_align=True,
                                          distill_feature=1.0),
    "budget-distill-balanced": dict(mem_manage="reservoir", max_steps=12, balanced_epochs=2,
                                    distill_output=1.0, memory_format="logmel8"),
    "joint": dict(mode="joint"),
}

# Test clips of each task (four per class; the first task has four classes, the others three).
TEST_CLIPS = (16, 12, 12)
# Computed by the pre-steps trainer (ContinualRun with the techniques inline) at threads=1:
# right answers per task after each phase (the accuracy matrix times TEST_CLIPS), of the deployed
# model and, with a deployed-only bias correction, of the run's own; best validation losses.
EXPECTED = {
    "budget-distill-balanced": {
        "correct": [[5], [1, 4], [0, 2, 2]],
        "uncorrected_correct": None,
        "best_val_loss": [1.3699674606323242, 1.9348445619855608,
                          2.218477249145508]},
    "distill-deployed-bic": {
        "correct": [[6], [2, 5], [1, 5, 0]],
        "uncorrected_correct": [[6], [1, 7], [0, 0, 5]],
        "best_val_loss": [1.3719950914382935, 1.8480589730398995,
                          2.290566825866699]},
    "distill-in-loop-bic-specaugment": {
        "correct": [[5], [1, 1], [2, 3, 1]],
        "uncorrected_correct": None,
        "best_val_loss": [1.4027016162872314, 1.8737434659685408,
                          2.274053955078125]},
    "finetune-weight-align-distill": {
        "correct": [[6], [0, 4], [1, 4, 2]],
        "uncorrected_correct": None,
        "best_val_loss": [1.4602872133255005, 2.0594760349818637,
                          2.3713329315185545]},
    "joint": {
        "correct": [[2, 5, 1]],
        "uncorrected_correct": None,
        "best_val_loss": [2.150401306152344]},
    "progressive-balanced-finetune": {
        "correct": [[1], [2, 4], [2, 4, 0]],
        "uncorrected_correct": None,
        "best_val_loss": [1.5109835863113403, 1.8873586654663086,
                          2.2640869140625]},
    "uncertainty": {
        "correct": [[6], [1, 4], [0, 1, 4]],
        "uncorrected_correct": None,
        "best_val_loss": [1.4602872133255005, 1.9557935169764928,
                          2.372323226928711]},
    "weight-align-class-balanced": {
        "correct": [[1], [2, 4], [2, 1, 1]],
        "uncorrected_correct": None,
        "best_val_loss": [1.5109835863113403, 1.9262594495500838,
                          2.315090370178223]},
}


def pinned(results: dict) -> dict:
    """What the test pins of a results document."""
    return {"accuracy_matrix": results["accuracy_matrix"],
            "uncorrected": (results.get("uncorrected") or {}).get("accuracy_matrix"),
            "best_val_loss": [phase["best_val_loss"] for phase in results["phases"]]}


def _accuracies(correct: list[list[int]] | None) -> list[list[float]] | None:
    """The accuracy matrix of right-answer counts (results.json divides the same way)."""
    if correct is None:
        return None
    return [[count / TEST_CLIPS[task] for task, count in enumerate(row)] for row in correct]


def recorded_cpu_kind() -> bool:
    """Whether this CPU is of the kind the pins were computed on (read from /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    vendor = re.search(r"^vendor_id\s*:\s*(\S+)", text, re.MULTILINE)
    flags = re.search(r"^flags\s*:(.*)$", text, re.MULTILINE)
    found = set(flags.group(1).split()) if flags else set()
    return (vendor is not None and vendor.group(1) == "AuthenticAMD" and "avx512f" in found
            and "amx_tile" not in found)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """One workspace for the module: the synthetic clips are generated once."""
    return tmp_path_factory.mktemp("pinned")


# The default suite runs four that between them use every technique; the rest are slow.
SLOW = ("finetune-weight-align-distill", "joint", "progressive-balanced-finetune", "uncertainty")


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if name in SLOW
                                  else name for name in sorted(CONFIGS)])
@pytest.mark.skipif(not recorded_cpu_kind(), reason="pinned on AMD x86 with AVX-512 and no AMX; "
                    "this CPU's float kernels give other results")
def test_results_match_the_pre_steps_trainer(workspace, name):
    results = train(RunConfig(**{**BASE, **CONFIGS[name]}, workspace=str(workspace), exp_name=name))
    got, expected = pinned(results), EXPECTED[name]
    assert got["accuracy_matrix"] == _accuracies(expected["correct"])
    assert got["uncorrected"] == _accuracies(expected["uncorrected_correct"])
    assert got["best_val_loss"] == pytest.approx(expected["best_val_loss"], rel=1e-4)
