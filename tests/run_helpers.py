"""Helpers shared by the tests that run small continual-learning runs on the six-class manifest
(the `six_class_manifest` fixture in conftest)."""

from __future__ import annotations

import contextlib

import edgecl.trainer as trainer_module


def small_run_options(manifest, **overrides) -> dict:
    """RunConfig options of a three-task, two-epoch width-8 run named `run` on `manifest`."""
    base = dict(dataset="manifest", data_root=str(manifest), width=8, epochs=2, batch_size=8,
                patience=2, n_tasks=3, n_init_cls=2, n_cls_a_task=2, memory_size=7, export=False,
                quiet=True, threads=1, seed=5, exp_name="run")
    base.update(overrides)
    return base


def one_line_error(result, *names: str) -> str:
    """The single output line of a clean CLI failure (exit 2); it must mention each of
    `names`."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1, result.output
    assert lines[0].startswith("edgecl: error: "), lines[0]
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


class Interrupted(Exception):
    """Raised in place of a phase's state commit: the run dies as if killed right there."""


@contextlib.contextmanager
def dies_before_committing(monkeypatch, phase: int):
    """Within the block, a run raises Interrupted when it would commit `phase`'s state.pt (its
    checkpoint and export are already on disk)."""
    real_save = trainer_module.save_state

    def save_then_die(run_dir, saved_phase, **kwargs):
        if saved_phase == phase:
            raise Interrupted
        return real_save(run_dir, saved_phase, **kwargs)

    monkeypatch.setattr(trainer_module, "save_state", save_then_die)
    try:
        yield
    finally:
        monkeypatch.setattr(trainer_module, "save_state", real_save)
