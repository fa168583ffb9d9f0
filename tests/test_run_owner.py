"""Run folders are owned: a folder holding another run, a second writer and a name outside the
workspace are one-line errors; --overwrite leaves nothing of the old run; default names differ
when results would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from run_helpers import small_run_options

from edgecl.config import RunConfig
from edgecl.errors import EdgeclError
from edgecl.run_owner import RunLock, open_run_folder
from edgecl.trainer import ContinualRun, train


def test_folder_holding_other_options_is_refused_and_kept(six_class_manifest, tmp_path):
    train(RunConfig(**small_run_options(six_class_manifest, mode="finetune", n_tasks=2, seed=3),
                    workspace=str(tmp_path)))
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    with pytest.raises(EdgeclError, match=r"holds a run with other options: seed 3 \(now 1\)"):
        train(RunConfig(**small_run_options(six_class_manifest, mode="finetune", n_tasks=2, seed=1),
                        workspace=str(tmp_path)))
    assert {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()} == before


def test_overwrite_with_fewer_tasks_leaves_no_old_phase(six_class_manifest, tmp_path):
    train(RunConfig(**small_run_options(six_class_manifest, mode="finetune", n_tasks=3),
                    workspace=str(tmp_path)))
    assert (tmp_path / "run" / "phase_2").is_dir()
    train(RunConfig(**small_run_options(six_class_manifest, mode="finetune", n_tasks=2),
                    workspace=str(tmp_path)),
          overwrite=True)
    assert sorted(p.name for p in (tmp_path / "run").glob("phase_*")) == ["phase_0", "phase_1"]
    assert not list((tmp_path / "run").glob(".overwritten-*"))


def test_foreign_files_in_the_folder_are_refused(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text("{}")
    with pytest.raises(EdgeclError, match="not from a run"):
        open_run_folder(tmp_path / "run", {"seed": 1})


def test_second_writer_gets_a_one_line_error(tmp_path):
    owned = open_run_folder(tmp_path / "run", {"seed": 1})
    with pytest.raises(EdgeclError, match="another edgecl train or export is writing") as error:
        open_run_folder(tmp_path / "run", {"seed": 1})
    assert "\n" not in str(error.value) and str(tmp_path / "run") in str(error.value)
    owned.release()
    open_run_folder(tmp_path / "run", {"seed": 1}).release()  # free again


def test_lock_is_held_against_another_process_and_dies_with_it(tmp_path):
    code = ("import sys, time; from edgecl.run_owner import RunLock; RunLock(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(60)")
    (tmp_path / "run").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "run")],
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1])
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(EdgeclError, match="another edgecl train"):
            RunLock(tmp_path / "run")
    finally:
        holder.kill()
        holder.wait()
    RunLock(tmp_path / "run").release()  # a killed holder leaves nothing stuck


@pytest.mark.parametrize("name", ["../x", "/tmp/x", "a/b", "..", "."])
def test_exp_name_must_stay_inside_the_workspace(six_class_manifest, tmp_path, name):
    with pytest.raises(EdgeclError, match="--exp-name") as error:
        ContinualRun(RunConfig(**small_run_options(six_class_manifest, exp_name=name),
                               workspace=str(tmp_path)))
    assert "\n" not in str(error.value)
    assert not (tmp_path.parent / "x").exists()


def test_default_names_differ_when_results_would():
    base = RunConfig()
    names = {base.default_exp_name()}
    for change in ({"memory_bytes": 4_000_000}, {"width": 20}, {"epochs": 5},
                   {"code_new_clips": False}, {"max_steps": 10}, {"lr": 0.01}):
        names.add(RunConfig(**change).default_exp_name())
    assert len(names) == 7
    assert RunConfig(threads=1, quiet=True).default_exp_name() == base.default_exp_name()
    assert base.default_exp_name().startswith(
        "synthetic-bc-resnet-replay-uncertainty-noisytune-k6-m500-seed3-")


def test_cli_exp_name_outside_the_workspace_is_a_one_line_error(six_class_manifest, tmp_path):
    from click.testing import CliRunner

    from edgecl.cli import main

    result = CliRunner().invoke(main, ["train", "--dataset", "manifest", "--data-root",
                                       str(six_class_manifest), "--workspace", str(tmp_path / "ws"),
                                       "--exp-name", "../x", "--no-export", "--quiet"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().count("\n") == 0 and "--exp-name" in result.output
    assert not (tmp_path / "x").exists()
