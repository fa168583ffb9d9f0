"""edgecl grid: spec expansion, run-folder names, the runner's skip/retry/cancel logic, and a
tiny grid of real `edgecl train` subprocesses on a local Ray instance."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgecl.cli import main
from edgecl.commands.train import train_command
from edgecl.errors import EdgeclError
from edgecl.grid.executors import LocalExecutor
from edgecl.grid.runner import GridRunner, Outcome, run_is_complete
from edgecl.grid.spec import (
    builtin_names,
    load_spec,
    parse_spec,
    parse_train_args,
    select_methods,
    trial_name,
)

TINY_SPEC = """
name = "tiny"
seeds = [1, 2]
memory_sizes = [20]

[common]
dataset = "synthetic"
model = "baseline"
clips_per_class = 6
clip_seconds = 0.5
sample_rate = 8000
epochs = 1
n_tasks = 2
export = false

[[methods]]
name = "finetune"
mode = "finetune"

[[methods]]
name = "random"
mode = "replay"
mem_manage = "random"
"""


def _tiny(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_SPEC + extra)
    return path


# --- specs -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, count", [("esc-50", 375), ("tau-asc", 75), ("fsdd", 24)])
def test_builtin_specs_expand_to_the_published_grids(name, count):
    trials = load_spec(name).trials({"data_root": "/data"})
    assert len(trials) == count
    assert len({t.name for t in trials}) == count
    methods = {t.method for t in trials}
    for trial in trials:
        opts = trial.options
        assert opts["seed"] in (1, 2, 3)
        if opts["mode"] == "replay":
            assert opts["memory_size"] in ((500, 300) if name != "fsdd" else (500,))
        else:
            assert "memory_size" not in opts and "mem_manage" not in opts
    if name == "esc-50":
        assert {t.fold for t in trials} == {1, 2, 3, 4, 5}
        assert all((t.options["n_init_cls"], t.options["n_cls_a_task"]) == (10, 10) for t in trials)
        assert len(methods) == 25
    if name == "tau-asc":
        assert {t.fold for t in trials} == {None}
        assert all((t.options["n_init_cls"], t.options["n_cls_a_task"]) == (2, 2) for t in trials)
        assert len(methods) == 25 and "uncertainty-noisytune-k4-m300" in methods
    if name == "fsdd":
        assert methods == {"finetune", "joint", "random-m500", "reservoir-m500", "prototype-m500",
                           "uncertainty-shift-k6-m500", "uncertainty-noise-k6-m500",
                           "uncertainty-noisytune-k6-m500"}


def test_fsdd_m50_spec_runs_every_sampler_plain_balanced_and_distilled(tmp_path):
    trials = load_spec("fsdd-m50").trials({"data_root": "/data"})
    assert len(trials) == 21 * 5 and len({t.name for t in trials}) == 105
    replay = [t.options for t in trials if t.options["mode"] == "replay"]
    assert {o["memory_size"] for o in replay} == {50}
    samplers = ("uncertainty", "balanced-random", "reservoir", "prototype", "kcenter", "random")
    variants = {(o["mem_manage"], o.get("uncert_ties", "random"),
                 o.get("batch_sampling", "uniform"), o.get("distill_output", 0.0),
                 o.get("balanced_epochs", 0)) for o in replay}
    assert variants == {(s, "random", *v) for s in samplers for v in (("uniform", 0.0, 0),
                                                                      ("progressive", 1.0, 0),
                                                                      ("uniform", 0.0, 20))} \
        | {("uncertainty", "herding", "progressive", 1.0, 0)}
    distilled = [o for o in replay if o.get("batch_sampling") == "progressive"]
    assert all(o["distill_feature"] == 1.0 and o["distill_adaptive"] for o in distilled)
    assert all(o["bias_correction"] == "deployed" for o in distilled)
    assert all(t.options["epochs"] == 10 and t.options["export"] is False for t in trials)


def test_every_trial_command_parses_as_edgecl_train(tmp_path):
    for name in ("esc-50", "fsdd", "fsdd-m50"):
        for trial in load_spec(name).trials({"data_root": "/data"})[:60]:
            ctx = train_command.make_context("train", trial.train_args(tmp_path))
            assert ctx.params["exp_name"] == trial.name and ctx.params["threads"] == 1
            assert ctx.params["quiet"] is True and ctx.params["seed"] == trial.seed


def test_names_are_deterministic_and_differ_for_any_differing_option():
    base = {"dataset": "synthetic", "mode": "replay", "seed": 1, "epochs": 30, "width": 40}
    assert trial_name("random", base) == trial_name("random", dict(reversed(base.items())))
    names = {trial_name("random", base)}
    for change in ({"epochs": 29}, {"width": 20}, {"code_new_clips": False},
                   {"max_steps": 100}, {"memory_bytes": 4000}):
        names.add(trial_name("random", {**base, **change}))
    assert len(names) == 6
    # grid-owned options do not change a run's folder
    assert trial_name("random", base) == trial_name("random", {**base, "threads": 2})


def test_values_are_canonical_so_equal_options_give_equal_names(tmp_path):
    spec = parse_spec({"common": {"epochs": 5, "lr": 0.001}, "methods": [{"name": "f", "mode": "finetune"}]},
                      "a", "a")
    other = parse_spec({"common": {"epochs": "5", "lr": "1e-3"}, "methods": [{"name": "f", "mode": "finetune"}]},
                       "b", "b")
    assert [t.name for t in spec.trials()] == [t.name for t in other.trials()]


def test_spec_sweeps_and_overrides(tmp_path):
    spec = load_spec(_tiny(tmp_path, '\n[[methods]]\nname = "unc"\nmode = "replay"\n'
                                     'mem_manage = "uncertainty"\nuncert_metric = ["shift", "noise"]\n'
                                     'metric_k = [2, 6]\n'))
    trials = spec.trials(parse_train_args(["--epochs", "2", "--width=8", "--no-feature-cache"]))
    assert len(trials) == 2 * (1 + 1 + 4)
    assert {t.method for t in trials} >= {"unc-shift-k2-m20", "unc-noise-k6-m20", "random-m20"}
    assert all(t.options["epochs"] == 2 and t.options["width"] == 8 for t in trials)
    assert all(t.options["feature_cache"] is False for t in trials)
    assert "--no-feature-cache" in trials[0].train_args(tmp_path)


@pytest.mark.parametrize("body, message", [
    ('[[methods]]\nname = "x"\nmode = "finetune"\nbogus = 1\n', "not an edgecl train option"),
    ('[[methods]]\nname = "x"\nmode = "sideways"\n', "mode"),
    ('[[methods]]\nname = "x"\nmode = "finetune"\nworkspace = "w"\n', "set by the grid"),
    ('seeds = "one"\n[[methods]]\nname = "x"\nmode = "finetune"\n', "seeds"),
    ('colour = 1\n[[methods]]\nname = "x"\nmode = "finetune"\n', "unknown key"),
    ('[common]\nepochs = 1\n', "[[methods]]"),
    ('[[methods]]\nname = "a"\nmode = "finetune"\n[[methods]]\nname = "b"\nmode = "finetune"\n',
     "identical options"),
])
def test_bad_specs_are_one_line_errors(tmp_path, body, message):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(EdgeclError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_spec(path)


def test_unknown_builtin_names_the_choices():
    with pytest.raises(EdgeclError, match="esc-50, fsdd, fsdd-m50, tau-asc"):
        load_spec("no-such-grid")


def test_dry_run_lists_trials_and_runs_nothing(tmp_path):
    result = CliRunner().invoke(main, ["grid", str(_tiny(tmp_path)), "--workspace",
                                       str(tmp_path / "ws"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "4 trials in grid tiny: 4 to run, 0 complete" in result.output
    assert result.output.count("edgecl train ") == 4
    assert not (tmp_path / "ws").exists()


def test_methods_option_runs_only_the_matching_methods(tmp_path):
    args = ["grid", str(_tiny(tmp_path)), "--workspace", str(tmp_path / "ws"), "--dry-run"]
    result = CliRunner().invoke(main, args + ["--methods", "fine*"])
    assert result.exit_code == 0, result.output
    assert "2 trials in grid tiny" in result.output and "random-m" not in result.output
    both = CliRunner().invoke(main, args + ["--methods", "finetune, random-*"])
    assert "4 trials in grid tiny" in both.output
    trials = load_spec("fsdd-m50").trials({"data_root": "/data"})
    picked = select_methods(trials, ["pgb-kd-bicd-*"])
    assert len(picked) == 7 * 5 and {t.options["batch_sampling"] for t in picked} == {"progressive"}


def test_methods_option_names_the_methods_when_a_pattern_matches_none(tmp_path):
    result = CliRunner().invoke(main, ["grid", str(_tiny(tmp_path)), "--dry-run",
                                       "--methods", "finetune,noisy*"])
    assert result.exit_code == 2
    assert "'noisy*' matches no method" in result.output and "finetune" in result.output


def test_grid_help_names_every_builtin_spec():
    result = CliRunner().invoke(main, ["grid", "--help"])
    for name in builtin_names():
        assert name in result.output


def test_grid_needs_a_data_root_for_real_datasets(tmp_path):
    result = CliRunner().invoke(main, ["grid", "esc-50", "--dry-run"])
    assert result.exit_code == 2 and "--data-root" in result.output
    result = CliRunner().invoke(main, ["grid", "esc-50", "--data-root", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "does not exist" in result.output


# --- the runner with an in-process executor -----------------------------------------------------

def _fake_train(fail_names: set[str], calls: list[str], delay: float = 0.0):
    """A stand-in for the train subprocess: writes a complete results.json unless told to fail."""
    def run(args: list[str], run_dir: str, env=None) -> Outcome:
        name = Path(run_dir).name
        calls.append(name)
        time.sleep(delay)
        if any(name.startswith(f) for f in fail_names):
            return Outcome(2, 0.01, "Traceback ...\nedgecl: error: --n-tasks: too many")
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        (Path(run_dir) / "results.json").write_text(json.dumps({"complete": True}))
        return Outcome(0, 0.01, "", complete=True)
    return run


def test_runner_runs_skips_retries_and_records_failures(tmp_path):
    spec = load_spec(_tiny(tmp_path, '\n[[methods]]\nname = "broken"\nmode = "finetune"\n'
                                     'n_tasks = 40\n'))
    trials = spec.trials()
    ws = tmp_path / "ws"
    calls: list[str] = []
    seen: list[dict] = []
    runner = GridRunner(trials, ws, LocalExecutor(2, _fake_train({"broken"}, calls)),
                        spec_name="tiny", progress=lambda c, eta: seen.append(dict(c)))
    state = runner.run()
    assert state["counts"]["done"] == 4 and state["counts"]["failed"] == 2
    for name, entry in state["trials"].items():
        if name.startswith("broken"):
            assert entry["status"] == "failed" and entry["attempts"] == 2  # one retry
            assert entry["error"].endswith("edgecl: error: --n-tasks: too many")
            assert calls.count(name) == 2
        else:
            assert entry["status"] == "done" and entry["attempts"] == 1
    on_disk = json.loads((ws / "grid.json").read_text())
    assert on_disk["counts"] == state["counts"] and on_disk["spec"] == "tiny"
    assert any(c["running"] == 2 for c in seen)  # two at once
    # rerun: complete runs are skipped, only the failed ones run again
    calls.clear()
    state = GridRunner(trials, ws, LocalExecutor(2, _fake_train({"broken"}, calls))).run()
    assert state["counts"]["skipped"] == 4 and state["counts"]["failed"] == 2
    assert sorted(set(calls)) == sorted(t.name for t in trials if t.method == "broken")


def test_a_killed_trial_is_retried_and_its_signal_named(tmp_path):
    trials = load_spec(_tiny(tmp_path)).trials()[:1]
    attempts = []

    def killed_once(args, run_dir, env=None):
        attempts.append(run_dir)
        if len(attempts) == 1:
            return Outcome(-15, 0.01, "")
        return _fake_train(set(), [])(args, run_dir)

    runner = GridRunner(trials, tmp_path / "ws", LocalExecutor(1, killed_once))
    state = runner.run()
    entry = state["trials"][trials[0].name]
    assert entry["status"] == "done" and entry["attempts"] == 2 and len(attempts) == 2
    state = GridRunner(trials, tmp_path / "ws2", LocalExecutor(1, lambda a, d, e: Outcome(-15, 0.0)),
                       retries=0).run()
    assert state["trials"][trials[0].name]["error"] == "killed by signal SIGTERM"


def test_runner_counts_an_incomplete_exit_zero_as_a_failure(tmp_path):
    trials = load_spec(_tiny(tmp_path)).trials()[:1]

    def exits_zero_without_results(args, run_dir, env=None):
        return Outcome(0, 0.01, "", complete=run_is_complete(run_dir))

    state = GridRunner(trials, tmp_path / "ws", LocalExecutor(1, exits_zero_without_results),
                       retries=0).run()
    entry = state["trials"][trials[0].name]
    assert entry["status"] == "failed" and "not complete" in entry["error"]


class _InterruptingExecutor(LocalExecutor):
    """Raises KeyboardInterrupt (Ctrl-C) on the first wait."""

    def __init__(self, run):
        super().__init__(2, run)
        self.cancelled = None

    def wait(self, handles, timeout):
        raise KeyboardInterrupt

    def cancel(self, handles):
        self.cancelled = list(handles)
        super().cancel(handles)


def test_ctrl_c_cancels_running_trials_and_records_them(tmp_path):
    trials = load_spec(_tiny(tmp_path)).trials()
    executor = _InterruptingExecutor(_fake_train(set(), [], delay=0.2))
    runner = GridRunner(trials, tmp_path / "ws", executor)
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    assert len(executor.cancelled) == 2
    state = json.loads((tmp_path / "ws" / "grid.json").read_text())
    assert state["counts"]["cancelled"] == 4 and state["counts"]["running"] == 0


# --- real trials on Ray --------------------------------------------------------------------------

def test_tiny_grid_on_local_ray_completes_skips_and_records_a_failure(tmp_path):
    """4 real `edgecl train` trials (tiny synthetic set) plus one that fails on every attempt."""
    spec = _tiny(tmp_path, '\n[[methods]]\nname = "broken"\nmode = "finetune"\nn_tasks = 40\n')
    ws = tmp_path / "ws"
    args = ["grid", str(spec), "--workspace", str(ws), "--workers", "2", "--seeds", "1,2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output  # a trial failed
    state = json.loads((ws / "grid.json").read_text())
    assert state["counts"]["done"] == 4 and state["counts"]["failed"] == 2
    for name, entry in state["trials"].items():
        if entry["method"] == "broken":
            assert entry["attempts"] == 2 and "--n-tasks" in entry["error"]
        else:
            assert run_is_complete(ws / name)
            results = json.loads((ws / name / "results.json").read_text())
            assert results["config"]["exp_name"] == name and results["config"]["threads"] == 1
    # rerun without the broken method: every trial is complete, nothing runs (no Ray started)
    spec.write_text(TINY_SPEC)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "0 done, 4 skipped, 0 failed of 4" in result.output


def test_progress_prints_one_line_per_change_and_a_bar_on_a_tty():
    import io

    from edgecl.grid.progress import Progress

    counts = {"done": 1, "running": 2, "pending": 3, "failed": 1, "skipped": 2, "cancelled": 0,
              "total": 9}
    stream = io.StringIO()
    progress = Progress(stream, tty=False)
    progress(counts, 95.0)
    progress(counts, 90.0)  # no change in counts: no new line
    progress({**counts, "done": 2, "running": 1}, 60.0)
    lines = stream.getvalue().splitlines()
    assert lines == [
        "grid: 4/9 finished (1 done, 2 skipped, 1 failed), 2 running, 3 pending, ETA 0:01:35",
        "grid: 5/9 finished (2 done, 2 skipped, 1 failed), 1 running, 3 pending, ETA 0:01:00"]
    bar_stream = io.StringIO()
    bar = Progress(bar_stream, tty=True)
    bar(counts, None)
    bar.close()
    assert "4/9" in bar_stream.getvalue() and "fail 1" in bar_stream.getvalue()
