"""Training precision (edgecl.precision): auto follows the hardware, bf16 runs the training forward
under autocast while weights, checkpoints and exports stay float32, the precision is part of a
run's identity, and a bf16 run is reproducible."""

from __future__ import annotations

import json

import pytest
import torch
from run_helpers import Interrupted, dies_before_committing, small_run_options
from test_resume import comparable

import edgecl.precision as precision_module
import edgecl.training.loop as loop_module
from edgecl.config import RunConfig
from edgecl.errors import EdgeclError
from edgecl.precision import TrainingPrecision, resolve_precision
from edgecl.report.aggregate import method_label
from edgecl.trainer import ContinualRun, train
from edgecl.training.distill import Distiller, DistillSettings
from edgecl.training.loop import PhaseData, evaluate_with_loss, recalibrate_batchnorm


@pytest.mark.parametrize("native, expected", [(False, "fp32"), (True, "bf16")])
def test_auto_follows_the_cpus_native_bf16(monkeypatch, native, expected):
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: native)
    assert resolve_precision("auto", "cpu") == expected
    assert resolve_precision("fp32", "cpu") == "fp32"  # explicit choices are kept
    assert resolve_precision("bf16", "cpu") == "bf16"


def test_auto_is_resolved_when_a_run_starts(six_class_manifest, tmp_path, monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: False)
    options = small_run_options(six_class_manifest, precision="auto", workspace=str(tmp_path))
    run = ContinualRun(RunConfig(**options))
    assert run.config.precision == "fp32" and "precision" not in run.config.identity()
    assert run.precision.describe().startswith("training precision fp32 (auto: this cpu has no")


def test_unknown_precision_is_a_one_line_error():
    with pytest.raises(EdgeclError, match=r"^--precision: expected one of fp32, bf16, auto, "
                                          r"got 'fp16'$"):
        RunConfig(precision="fp16")


def test_precision_is_in_the_identity_and_fp32_keeps_old_names():
    fp32, bf16 = RunConfig(), RunConfig(precision="bf16")
    assert "precision" not in fp32.identity()  # runs from before the option keep their name
    assert bf16.identity()["precision"] == "bf16"
    assert fp32.default_exp_name() != bf16.default_exp_name()
    assert method_label(bf16.to_dict()).endswith("-bf16")
    assert not method_label(fp32.to_dict()).endswith("-fp32")


def test_bf16_autocasts_the_forward_and_computes_the_losses_in_float32():
    from models import build_model
    from models.frontend import FrontEndConfig

    torch.manual_seed(0)
    model = build_model("bc-resnet", 3, FrontEndConfig.for_sample_rate(8000, n_mels=32), width=8)
    logmel = torch.randn(4, 1, 32, 20)
    bf16 = TrainingPrecision("bf16", "cpu")
    with bf16.autocast():
        logits, embedding = model.forward_features(logmel)
    assert logits.dtype == embedding.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.parameters())
    teacher = Distiller(model, DistillSettings(output=1.0, feature=1.0), n_seen=5, precision=bf16)
    student_logits = torch.randn(4, 5, requires_grad=True)
    loss = teacher.loss(logmel, student_logits, torch.randn(4, embedding.shape[1]))
    assert loss.dtype == torch.float32


def _small_bc_resnet(width: int = 8):
    from models import build_model
    from models.frontend import FrontEndConfig

    torch.manual_seed(0)
    return build_model("bc-resnet", 3, FrontEndConfig.for_sample_rate(8000, n_mels=32),
                       width=width)


def _random_clips(n: int = 48) -> PhaseData:
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(n, 1, 32, 20, generator=generator)
    return PhaseData(lambda idx: features[list(idx)],
                     torch.randint(0, 3, (n,), generator=generator))


def _norm_buffers(model) -> dict[str, torch.Tensor]:
    return {name: t for name, t in model.named_buffers() if name.endswith(("_mean", "_var"))}


def test_bf16_recalibration_keeps_float32_statistics_close_to_fp32s():
    fp32, bf16 = _small_bc_resnet(), _small_bc_resnet()
    data = _random_clips()
    recalibrate_batchnorm(fp32, data)
    recalibrate_batchnorm(bf16, data, precision=TrainingPrecision("bf16", "cpu"))
    exact, rounded = _norm_buffers(fp32), _norm_buffers(bf16)
    assert exact and all(t.dtype == torch.float32 for t in rounded.values())
    for name, mean in exact.items():
        if name.endswith("running_mean"):
            var = exact[name.replace("_mean", "_var")]
            # bf16 activations move each mean by a few hundredths of a standard deviation
            assert ((rounded[name] - mean).abs() / var.sqrt()).max() < 0.5, name
            assert not torch.equal(rounded[name], mean), name  # the forward did run in bf16
        else:  # a layer's variances move by a few percent (low-variance channels by more)
            assert (rounded[name] - mean).norm() / mean.norm() < 0.25, name


def test_bf16_validation_forward_is_autocast_and_its_loss_float32():
    model, data = _small_bc_resnet(), _random_clips()
    bf16 = TrainingPrecision("bf16", "cpu")
    head_types = []
    model.head.register_forward_hook(lambda m, i, output: head_types.append(output.dtype))
    accuracy, loss = evaluate_with_loss(model, data, batch_size=16, precision=bf16)
    assert head_types == [torch.bfloat16] * 3
    with torch.no_grad(), bf16.autocast():
        logits = model.forward_features(data.features(range(len(data))))[0]
    assert loss == pytest.approx(float(torch.nn.functional.cross_entropy(
        logits.float(), data.targets)), rel=1e-6)  # not a bf16-rounded loss
    assert accuracy == pytest.approx(float((logits.argmax(dim=1) == data.targets).double().mean()))


def _checkpoint_tensors(run_dir):
    files = sorted(run_dir.glob("phase_*/checkpoint.pt"))
    assert files
    return [torch.load(f, weights_only=True)["state_dict"] for f in files]


def _within(name: str, function, current: list):
    """`function`, setting current[0] to `name` while it runs."""
    def spy(*args, **kwargs):
        current[0] = name
        try:
            return function(*args, **kwargs)
        finally:
            current[0] = None
    return spy


def test_bf16_run_trains_under_autocast_and_checkpoints_float32(six_class_manifest, tmp_path,
                                                                monkeypatch):
    options = small_run_options(six_class_manifest, mode="joint", precision="bf16",
                                workspace=str(tmp_path))
    run = ContinualRun(RunConfig(**options))
    head_types = []  # the head's output type in each forward with gradients
    passes: dict[str | None, set] = {}  # the head's output types in each pass without gradients
    current: list[str | None] = [None]
    run.model.head.register_forward_hook(
        lambda module, inputs, output: head_types.append(output.dtype)
        if module.training and torch.is_grad_enabled()
        else passes.setdefault(current[0], set()).add(output.dtype))
    for name in ("recalibrate_batchnorm", "evaluate_with_loss"):
        monkeypatch.setattr(loop_module, name, _within(name, getattr(loop_module, name), current))
    results = run.run()

    # every optimizer step's forward ran in bf16 (the device training-RAM estimate's in fp32)
    assert head_types.count(torch.bfloat16) == results["phases"][0]["steps"] > 0
    # so did each epoch's recalibration and validation; testing stayed float32
    assert passes == {"recalibrate_batchnorm": {torch.bfloat16},
                      "evaluate_with_loss": {torch.bfloat16}, None: {torch.float32}}
    for state in _checkpoint_tensors(tmp_path / "run"):
        floats = {name: t.dtype for name, t in state.items() if t.is_floating_point()}
        assert floats and set(floats.values()) == {torch.float32}
    assert results["provenance"]["training_precision"] == {
        "requested": "bf16", "resolved": "bf16", "autocast_dtype": "bfloat16"}
    assert "training precision bf16" in (tmp_path / "run" / "train.log").read_text()


@pytest.mark.slow
def test_bf16_run_exports_under_the_fp32_parity_rule(six_class_manifest, tmp_path, monkeypatch):
    from firmware_export import int8_search

    # The histogram calibrators crash in this onnxruntime on tiny runs (see test_resume).
    monkeypatch.setitem(int8_search.search_int8.__kwdefaults__, "recipes",
                        tuple(r for r in int8_search.BASE_RECIPES if r.calibration == "MinMax"))
    options = small_run_options(six_class_manifest, mode="joint", export=True, precision="bf16",
                                workspace=str(tmp_path))
    export = train(RunConfig(**options))["phases"][0]["export"]
    assert export["shipped"] is True, export
    assert (tmp_path / "run" / "phase_0" / export["device_model"]).is_file()


def test_resume_refuses_to_switch_precision(six_class_manifest, tmp_path, monkeypatch):
    options = small_run_options(six_class_manifest, mode="finetune", n_tasks=2, precision="bf16",
                                workspace=str(tmp_path))
    with dies_before_committing(monkeypatch, 1), pytest.raises(Interrupted):
        train(RunConfig(**options))
    run_json = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run_json["config"]["precision"] == "bf16"
    with pytest.raises(EdgeclError, match=r"holds a run with other options: precision 'bf16' "
                                          r"\(now 'fp32'\); choose another"):
        train(RunConfig(**{**options, "precision": "fp32"}))
    # auto on a CPU without native bf16 resolves to fp32: refused the same way
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(EdgeclError, match=r"precision 'bf16' \(now 'fp32'\)"):
        train(RunConfig(**{**options, "precision": "auto"}))
    monkeypatch.undo()
    assert train(RunConfig(**options))["complete"]  # the same precision resumes


def test_bf16_run_is_reproducible_at_the_same_thread_count(six_class_manifest, tmp_path):
    options = small_run_options(six_class_manifest, n_tasks=2, mem_manage="uncertainty",
                                precision="bf16")
    first = train(RunConfig(**options, workspace=str(tmp_path / "first")))
    second = train(RunConfig(**options, workspace=str(tmp_path / "second")))
    assert comparable(first) == comparable(second)
    for a, b in zip(_checkpoint_tensors(tmp_path / "first" / "run"),
                    _checkpoint_tensors(tmp_path / "second" / "run"), strict=True):
        assert all(torch.equal(a[name], b[name]) for name in a)


def test_bench_train_times_every_precision_with_the_speedup(tiny_manifest, tmp_path):
    from click.testing import CliRunner

    from edgecl.cli import main

    args = ["bench", "train", "--dataset", "manifest", "--data-root", str(tiny_manifest),
            "--workspace", str(tmp_path), "--models", "bc-resnet", "--sample-rates",
            "8000,16000", "--width", "8", "--epochs", "1", "--batch-size", "4", "--threads", "1"]
    result = CliRunner().invoke(main, args + ["--precision", "fp32,bf16", "--rounds", "2",
                                              "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [(r["sample_rate"], r["precision"]) for r in rows] == [
        (8000, "fp32"), (8000, "bf16"), (16000, "fp32"), (16000, "bf16")]
    for fp32, bf16 in (rows[:2], rows[2:]):
        assert fp32["speedup"] == 1.0
        assert bf16["speedup"] == pytest.approx(fp32["epoch_seconds"] / bf16["epoch_seconds"])
        assert bf16["cpu_speedup"] == pytest.approx(
            fp32["epoch_cpu_seconds"] / bf16["epoch_cpu_seconds"])
    bad = CliRunner().invoke(main, args + ["--precision", "fp32,fp16"])
    assert bad.exit_code != 0 and "--precision" in bad.output


def test_a_grid_spec_sets_the_precision_of_its_trials():
    from edgecl.grid.spec import GridSpec

    spec = GridSpec("g", common={"dataset": "synthetic", "precision": "bf16"},
                    methods=[("finetune", {"mode": "finetune"})])
    trial = spec.trials()[0]
    args = trial.train_args("ws")
    assert args[args.index("--precision") + 1] == "bf16"
    fp32 = GridSpec("g", common={"dataset": "synthetic"},
                    methods=[("finetune", {"mode": "finetune"})]).trials()[0]
    assert fp32.name != trial.name  # separate run folders
    with pytest.raises(EdgeclError, match="'precision' = 'fp16'"):
        GridSpec("g", common={"precision": "fp16"}, methods=[("f", {"mode": "finetune"})]).trials()
