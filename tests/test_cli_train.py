"""`edgecl train`, `edgecl summarize` and `edgecl bench memory-update` from the command line."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgecl.cli import main
from edgecl.samplers import sampler_class, sampler_names


@pytest.fixture
def manifest(tiny_manifest):
    return tiny_manifest


def _tiny(manifest, workspace):
    return ["--dataset", "manifest", "--data-root", str(manifest), "--workspace", str(workspace),
            "--width", "8", "--epochs", "1", "--batch-size", "8", "--threads", "1",
            "--no-export", "--quiet"]


@pytest.mark.parametrize("extra, message", [
    (["--mode", "finetune", "--mem-manage", "random"], "--mem-manage: only used with --mode replay"),
    (["--mode", "joint", "--memory-size", "50"], "--memory-size: only used with --mode replay"),
    (["--mode", "finetune", "--metric-k", "2"], "--metric-k: only used with --mode replay"),
    (["--mem-manage", "random", "--uncert-metric", "shift"],
     "--uncert-metric: only used with --mem-manage uncertainty"),
    (["--memory-size", "3"], "--memory-size: 3 exemplars is fewer than the 4 classes"),
    (["--n-tasks", "5"], "--n-tasks: 5 tasks need at least 5 classes"),
    (["--n-tasks", "2", "--n-init-cls", "3", "--n-cls-a-task", "2"], "need 5 classes"),
    (["--metric-k", "3", "--mem-manage", "uncertainty"], "--metric-k"),
])
def test_invalid_combinations_are_one_line_errors(manifest, tmp_path, extra, message):
    result = CliRunner().invoke(main, ["train", *_tiny(manifest, tmp_path), *extra])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not list(tmp_path.rglob("results.json"))


def test_finetune_defaults_are_not_an_error(manifest, tmp_path):
    # Sampler options left at their defaults are fine with --mode finetune.
    result = CliRunner().invoke(main, ["train", *_tiny(manifest, tmp_path), "--mode", "finetune",
                                       "--n-tasks", "2"])
    assert result.exit_code == 0, result.output
    # the readable prefix, then a hash of every option that changes results
    [run_dir] = tmp_path.glob("manifest-bc-resnet-finetune-seed3-*")
    assert len(run_dir.name.rsplit("-", 1)[1]) == 8 and (run_dir / "results.json").is_file()


def test_train_then_summarize(manifest, tmp_path):
    runner = CliRunner()
    base = [*_tiny(manifest, tmp_path), "--n-tasks", "2"]
    args = [*base, "--memory-size", "6", "--mem-manage", "uncertainty", "--uncert-metric",
            "noisytune", "--metric-k", "2"]
    result = runner.invoke(main, ["train", *args])
    assert result.exit_code == 0, result.output
    [run_dir] = tmp_path.glob("manifest-bc-resnet-replay-uncertainty-noisytune-k2-m6-seed3-*")
    name = run_dir.name
    results = json.loads((tmp_path / name / "results.json").read_text())
    assert results["config"]["metric_k"] == 2 and results["config"]["n_init_cls"] == 2
    assert "A_avg" in result.output  # the per-phase summary table

    result = runner.invoke(main, ["train", *base, "--mode", "finetune", "--exp-name", "ft"])
    assert result.exit_code == 0, result.output

    table = runner.invoke(main, ["summarize", str(tmp_path)])
    assert table.exit_code == 0, table.output
    assert name[-12:] in table.output and "noisytune k2" in table.output
    assert "finetune" in table.output
    rows = json.loads(runner.invoke(main, ["summarize", str(tmp_path), "--json"]).output)
    by_run = {row["run"]: row for row in rows}
    assert by_run[name]["k"] == 2 and by_run[name]["memory"] == 6
    assert by_run["ft"]["mem_update_s"] is None
    assert by_run[name]["A_avg"] == pytest.approx(results["A_avg"])


def test_summarize_missing_workspace_is_an_error(tmp_path):
    result = CliRunner().invoke(main, ["summarize", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "expected a workspace folder" in result.output


def test_bench_memory_update_times_every_sampler(manifest, tmp_path):
    result = CliRunner().invoke(main, [
        "bench", "memory-update", "--dataset", "manifest", "--data-root", str(manifest),
        "--workspace", str(tmp_path), "--width", "8", "--epochs", "1", "--memory-size", "6",
        "--n-tasks", "2", "--n-init-cls", "2", "--n-cls-a-task", "2", "--metric-k", "2",
        "--threads", "1", "--quiet", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    labels = [r["sampler"] for r in rows]
    assert {"random", "reservoir", "prototype", "uncertainty-shift", "uncertainty-noise",
            "uncertainty-noisytune"} <= set(labels)
    assert labels == [label for name in sampler_names()
                      for label, _ in sampler_class(name).variants()]
    assert len({r["candidates"] for r in rows}) == 1
    noisytune = rows[labels.index("uncertainty-noisytune")]
    assert noisytune["ratio_to_noisytune"] == 1.0
    assert all(r["seconds"] > 0 for r in rows)


@pytest.mark.parametrize("warm", [False, True])
def test_bench_memory_update_rows_carry_the_cache_state_and_the_embedding_ratio(manifest, tmp_path,
                                                                                warm):
    args = ["bench", "memory-update", "--dataset", "manifest", "--data-root", str(manifest),
            "--workspace", str(tmp_path), "--width", "8", "--epochs", "1", "--memory-size", "6",
            "--n-tasks", "2", "--n-init-cls", "2", "--n-cls-a-task", "2", "--metric-k", "2",
            "--threads", "1", "--quiet"]
    result = CliRunner().invoke(main, args + ["--json"] + (["--warm"] if warm else []))
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert {r["cache"] for r in rows} == {"warm" if warm else "cold"}
    for row in rows:
        assert row["ms_per_candidate"] == pytest.approx(1000 * row["seconds"] / row["candidates"])
        assert row["ratio_to_embedding"] == pytest.approx(row["seconds"] / row["embedding_seconds"])
    assert len({(r["embedding_seconds"], r["reference_embedding_seconds"]) for r in rows}) == 1
    table = CliRunner().invoke(main, args + ["--repeats", "2", "--only", "uncertainty-noisytune",
                                             "--only", "random"] + (["--warm"] if warm else []))
    assert table.exit_code == 0, table.output
    assert f"{'warm' if warm else 'cold'} feature cache" in table.output
    assert "ratio_to_embedding" in table.output and "uncertainty-noisytune" in table.output
    assert "kcenter" not in table.output and "reservoir" not in table.output
    bad = CliRunner().invoke(main, args + ["--only", "noisy"])
    assert bad.exit_code == 2 and "--only" in bad.output


def test_bench_train_times_one_row_per_model_and_rate(manifest, tmp_path):
    args = ["bench", "train", "--dataset", "manifest", "--data-root", str(manifest),
            "--workspace", str(tmp_path), "--models", "bc-resnet,baseline",
            "--sample-rates", "8000,16000", "--width", "8", "--epochs", "2", "--batch-size", "4",
            "--threads", "1"]
    result = CliRunner().invoke(main, args + ["--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [(r["model"], r["sample_rate"]) for r in rows] == [
        ("bc-resnet", 8000), ("bc-resnet", 16000), ("baseline", 8000), ("baseline", 16000)]
    for row in rows:
        assert row["epochs"] == 2 and row["train_clips"] > 0 and row["epoch_seconds"] > 0
        assert row["ms_per_train_clip"] == pytest.approx(
            1000 * row["epoch_seconds"] / row["train_clips"])
        assert row["frontend_mmacs_per_second"] > 0 and row["backbone_mmacs_per_second"] > 0
    # the front end's DFT grows with the rate; the backbone's work per second grows with frames
    by_rate = {r["sample_rate"]: r for r in rows if r["model"] == "bc-resnet"}
    assert by_rate[16000]["frontend_mmacs_per_second"] > by_rate[8000]["frontend_mmacs_per_second"]
    table = CliRunner().invoke(main, args[:8] + ["--sample-rates", "8000", "--models", "baseline",
                                                 "--epochs", "1", "--threads", "1"])
    assert table.exit_code == 0, table.output
    assert "backbone_mmacs_per_second" in table.output and "baseline" in table.output


def test_bench_train_measures_memory_with_and_without_checkpointing(manifest, tmp_path):
    args = ["bench", "train", "--dataset", "manifest", "--data-root", str(manifest),
            "--workspace", str(tmp_path), "--models", "bc-resnet,baseline", "--sample-rates",
            "8000", "--width", "8", "--epochs", "1", "--batch-size", "4", "--threads", "1",
            "--checkpointing", "off,on,lean"]
    result = CliRunner().invoke(main, args + ["--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    # the baseline has no checkpointable blocks: timed without checkpointing only
    assert [(r["model"], r["checkpointing"]) for r in rows] == [
        ("bc-resnet", "off"), ("bc-resnet", "on"), ("bc-resnet", "lean"), ("baseline", "off")]
    for row in rows:
        assert row["peak_rss_bytes"] > 0 and row["estimate_bytes"] > 0
    plain, checkpointed = rows[:2]
    assert plain["checkpointing_time_ratio"] == 1.0
    assert checkpointed["checkpointing_time_ratio"] == pytest.approx(
        checkpointed["epoch_seconds"] / plain["epoch_seconds"])
    # a checkpointed block keeps only its input: the estimate's activations shrink
    assert checkpointed["estimated_activation_bytes"] < plain["estimated_activation_bytes"]
    lean = rows[2]
    assert lean["estimated_activation_bytes"] < plain["estimated_activation_bytes"]
    assert lean["checkpointing_time_ratio"] == pytest.approx(
        lean["epoch_seconds"] / plain["epoch_seconds"])
    table = CliRunner().invoke(main, args + ["--models", "bc-resnet"])
    assert table.exit_code == 0, table.output
    assert "peak_rss_bytes" in table.output and "estimate_bytes" in table.output
    assert "checkpointing_time_ratio" in table.output


def test_bench_train_rejects_an_unknown_checkpointing_setting_in_one_line(manifest, tmp_path):
    result = CliRunner().invoke(main, ["bench", "train", "--dataset", "manifest", "--data-root",
                                       str(manifest), "--workspace", str(tmp_path),
                                       "--checkpointing", "off,auto"])
    assert result.exit_code != 0
    assert result.output.strip().splitlines() == [
        "edgecl: error: --checkpointing: expected comma-separated values from off, on, lean, "
        "got 'off,auto'"]


@pytest.mark.parametrize("option, value", [("--sample-rates", "8000,fast"),
                                           ("--sample-rates", "100"), ("--models", "resnet")])
def test_bench_train_rejects_bad_lists_naming_the_option(manifest, tmp_path, option, value):
    result = CliRunner().invoke(main, ["bench", "train", "--dataset", "manifest", "--data-root",
                                       str(manifest), "--workspace", str(tmp_path), option, value])
    assert result.exit_code != 0 and option in result.output


def test_a_config_file_sets_options_flags_override_it_and_every_run_saves_its_own(tiny_manifest,
                                                                               tmp_path):
    config = tmp_path / "exp.toml"
    config.write_text(f'dataset = "manifest"\ndata-root = "{tiny_manifest}"\nwidth = 8\n'
                      f'epochs = 1\nbatch_size = 8\npatience = 0\nn-tasks = 2\nmode = "replay"\n'
                      f'mem-manage = "reservoir"\nmemory-size = 4\nexport = false\n'
                      f'threads = 1\nquiet = true\nseed = 2\n')
    runner = CliRunner()
    first = runner.invoke(main, ["train", "--config", str(config), "--workspace",
                                 str(tmp_path / "ws"), "--seed", "5", "--exp-name", "one"])
    assert first.exit_code == 0, first.output
    results = json.loads((tmp_path / "ws" / "one" / "results.json").read_text())
    assert results["config"]["seed"] == 5  # the flag won
    assert results["config"]["mem_manage"] == "reservoir" and results["config"]["width"] == 8
    saved = tmp_path / "ws" / "one" / "config.toml"
    text = saved.read_text()
    assert 'mem-manage = "reservoir"' in text and "seed = 5" in text and "uncert-metric" not in text
    # The saved file runs the same experiment again (into another folder, by flag).
    again = runner.invoke(main, ["train", "--config", str(saved), "--exp-name", "two"])
    assert again.exit_code == 0, again.output
    rerun = json.loads((tmp_path / "ws" / "two" / "results.json").read_text())
    assert rerun["accuracy_matrix"] == results["accuracy_matrix"]
    assert {k: v for k, v in rerun["config"].items() if k != "exp_name"} == \
        {k: v for k, v in results["config"].items() if k != "exp_name"}

    config.write_text('epochs = 1\nlearning-rate = 0.1\n')
    bad = runner.invoke(main, ["train", "--config", str(config)])
    assert bad.exit_code == 2 and "unknown key 'learning-rate'" in bad.output
    assert bad.output.count("\n") == 1
    config.write_text('epochs = [1, 2\n')
    broken = runner.invoke(main, ["train", "--config", str(config)])
    assert broken.exit_code == 2 and "not valid TOML" in broken.output


def test_n_mels_sets_the_front_end_and_the_run_identity(manifest, tmp_path):
    import torch

    from edgecl.config import RunConfig

    assert "n_mels" not in RunConfig().identity()  # runs from before the option keep their name
    assert RunConfig(n_mels=32).identity_hash() != RunConfig().identity_hash()
    result = CliRunner().invoke(main, ["train", *_tiny(manifest, tmp_path), "--mode", "finetune",
                                       "--n-tasks", "2", "--n-mels", "32"])
    assert result.exit_code == 0, result.output
    [checkpoint] = tmp_path.glob("*/phase_0/checkpoint.pt")
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["model_config"]["frontend"]["n_mels"] == 32
    from models import rebuild

    model = rebuild(saved["model_config"])
    assert model.frontend(torch.zeros(1, 8000)).shape[2] == 32


@pytest.mark.parametrize("value, message", [("40", "--n-mels: bc-resnet needs a multiple of 32"),
                                            ("4", "--n-mels: expected an integer in [8, 256]")])
def test_bad_n_mels_is_a_one_line_error_that_writes_nothing(manifest, tmp_path, value, message):
    result = CliRunner().invoke(main, ["train", *_tiny(manifest, tmp_path / "ws"),
                                       "--n-mels", value])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "ws").exists()


def test_bn_recal_clips_is_recorded_and_its_default_keeps_run_names(manifest, tmp_path):
    from edgecl.config import RunConfig

    assert "bn_recal_clips" not in RunConfig().identity()  # runs from before the option
    assert RunConfig(bn_recal_clips=256).identity_hash() != RunConfig().identity_hash()
    result = CliRunner().invoke(main, ["train", *_tiny(manifest, tmp_path), "--mode", "finetune",
                                       "--n-tasks", "2", "--bn-recal-clips", "0"])
    assert result.exit_code == 0, result.output
    [results] = tmp_path.glob("*/results.json")
    assert json.loads(results.read_text())["config"]["bn_recal_clips"] == 0
    bad = CliRunner().invoke(main, ["train", *_tiny(manifest, tmp_path / "ws"),
                                    "--bn-recal-clips", "-1"])
    assert bad.exit_code == 2 and "--bn-recal-clips: expected an integer in [0, " in bad.output
    assert not (tmp_path / "ws").exists()
