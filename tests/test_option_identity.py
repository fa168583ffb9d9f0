"""Run names, grid trial names and report labels of existing configurations never change.

The expected strings were computed by the code before option metadata was declared once (each
option then had a RunConfig field, a click option and three hand-kept lists); a run folder, a grid
trial and a report row keep their names as long as these pass (a trial is the grid's for a
spec method setting the configuration's options). The option table of `edgecl
train` (names, flags, defaults, types) is recorded the same way: a new option adds its row, an
existing row never changes.
"""

from __future__ import annotations

import pytest

from edgecl.config import NOT_IDENTITY, RunConfig, identity_defaults_left_out
from edgecl.grid.spec import NOT_HASHED, parse_spec
from edgecl.report.aggregate import NOT_METHOD, method_label

# (label, RunConfig options): defaults, every sampler and its options, the learning techniques,
# the device targets, budgets and dataset aliases.
CONFIGS = [
    ("defaults", {}),
    ("random", {"mem_manage": "random"}),
    ("reservoir", {"mem_manage": "reservoir", "memory_size": 200}),
    ("prototype", {"mem_manage": "prototype"}),
    ("kcenter", {"mem_manage": "kcenter"}),
    ("balanced-random", {"mem_manage": "balanced-random", "memory_format": "logmel8"}),
    ("uncert-shift", {"uncert_metric": "shift", "metric_k": 4}),
    ("uncert-noise-trim", {"uncert_metric": "noise", "metric_k": 2, "uncert_trim": 0.1,
                           "noise_lambda": 0.4}),
    ("uncert-ties", {"uncert_ties": "herding"}),
    ("distill", {"distill_output": 1.0, "distill_feature": 0.5, "distill_temperature": 3.0,
                 "distill_adaptive": True}),
    ("bic-in-loop", {"bias_correction": "in-loop", "weight_align": True}),
    ("bic-deployed", {"bias_correction": "deployed", "mem_manage": "prototype"}),
    ("balanced-ft", {"balanced_epochs": 5, "balanced_lr": 1e-3, "lr_incremental": 1e-4}),
    ("batch-sampling", {"batch_sampling": "class-balanced", "augment": "specaugment"}),
    ("progressive", {"batch_sampling": "progressive", "bn_recal_clips": 256}),
    ("tflm", {"target": "tflm", "tflm_window_seconds": 0.5, "n_mels": 32}),
    ("budgets", {"memory_bytes": "4MB", "memory_format": "mulaw8", "max_steps": 100,
                 "max_train_macs": "2G", "max_train_seconds": 60.0}),
    ("finetune", {"mode": "finetune", "epochs": 5, "batch_size": 16, "lr": 3e-4}),
    ("joint", {"mode": "joint", "model": "baseline", "export": False}),
    ("esc50-alias", {"dataset": "esc50", "data_root": "/data/ESC-50", "test_fold": 3,
                     "sample_rate": 16000, "clip_seconds": 2.0}),
    ("tau-alias", {"dataset": "tau", "data_root": "/data/tau", "n_tasks": 3, "n_init_cls": 4,
                   "n_cls_a_task": 3, "val_fraction": 0.2, "patience": 0}),
    ("manifest", {"dataset": "manifest", "data_root": "/data/m.csv", "seed": 7, "width": 8,
                  "code_new_clips": False, "feature_cache": False}),
    ("not-identity", {"workspace": "elsewhere", "exp_name": None, "threads": 1, "quiet": True,
                      "feature_store": False, "device": "cpu", "clips_per_class": 20}),
]


def _grid_trial_name(label: str, options: dict) -> str:
    """The grid's trial name (method label, seed, options hash) of a spec method that sets
    `options` (those the grid sets itself left to it)."""
    values = {k: v for k, v in options.items() if k not in GRID_SET and v is not None}
    seed = values.pop("seed", 3)
    spec = parse_spec({"methods": [{"name": label, **values}], "seeds": [seed]}, "t", "test")
    (trial,) = spec.trials()
    return trial.name


def observe(options: dict) -> dict[str, str]:
    config = RunConfig(**options)
    return {"run": config.default_exp_name(),
            "trial": _grid_trial_name("m", options),
            "method": method_label(config.to_dict())}  # results.json's `config`


def train_option_table() -> dict[str, tuple]:
    """Every `edgecl train` option: (flags, off flags, default, type name)."""
    from edgecl.commands.train import train_command

    def default(param):  # click's sentinel for "no default" (a plain flag, --config)
        return "unset" if type(param.default).__name__ == "Sentinel" else param.default

    return {p.name: (tuple(p.opts), tuple(getattr(p, "secondary_opts", ())), default(p),
                     p.type.name) for p in train_command.params}


EXPECTED = {
    "defaults": {
        "run": "synthetic-bc-resnet-replay-uncertainty-noisytune-k6-m500-seed3-8c6ca28c",
        "trial": "m-seed3-1391dc1f10",
        "method": "uncertainty-noisytune-k6-m500"},
    "random": {
        "run": "synthetic-bc-resnet-replay-random-m500-seed3-f34ed52d",
        "trial": "m-seed3-c0f48171a7",
        "method": "random-m500"},
    "reservoir": {
        "run": "synthetic-bc-resnet-replay-reservoir-m200-seed3-a617f671",
        "trial": "m-seed3-100fd3e172",
        "method": "reservoir-m200"},
    "prototype": {
        "run": "synthetic-bc-resnet-replay-prototype-m500-seed3-10a06d34",
        "trial": "m-seed3-fb124a6d27",
        "method": "prototype-m500"},
    "kcenter": {
        "run": "synthetic-bc-resnet-replay-kcenter-m500-seed3-09c8cfd8",
        "trial": "m-seed3-488898ded9",
        "method": "kcenter-m500"},
    "balanced-random": {
        "run": "synthetic-bc-resnet-replay-balanced-random-m500-logmel8-seed3-13825f03",
        "trial": "m-seed3-84c03b214b",
        "method": "balanced-random-m500-logmel8"},
    "uncert-shift": {
        "run": "synthetic-bc-resnet-replay-uncertainty-shift-k4-m500-seed3-68d65c90",
        "trial": "m-seed3-1567ab9f1d",
        "method": "uncertainty-shift-k4-m500"},
    "uncert-noise-trim": {
        "run": "synthetic-bc-resnet-replay-uncertainty-noise-k2-trim0.1-m500-seed3-ebc94563",
        "trial": "m-seed3-d8eebcaf1e",
        "method": "uncertainty-noise-k2-trim0.1-m500"},
    "uncert-ties": {
        "run": "synthetic-bc-resnet-replay-uncertainty-noisytune-k6-herd-m500-seed3-e9b0f208",
        "trial": "m-seed3-64e1e7f870",
        "method": "uncertainty-noisytune-k6-herd-m500"},
    "distill": {
        "run": "synthetic-bc-resnet-replay-uncertainty-noisytune-k6-m500-seed3-f4b7c202",
        "trial": "m-seed3-719a475b6b",
        "method": "uncertainty-noisytune-k6-m500-kd1-0.5a"},
    "bic-in-loop": {
        "run": "synthetic-bc-resnet-replay-uncertainty-noisytune-k6-m500-seed3-59566bfa",
        "trial": "m-seed3-87c213489e",
        "method": "uncertainty-noisytune-k6-m500-wa-bic"},
    "bic-deployed": {
        "run": "synthetic-bc-resnet-replay-prototype-m500-seed3-c031733f",
        "trial": "m-seed3-735a50c83d",
        "method": "prototype-m500-bicd"},
    "balanced-ft": {
        "run": "synthetic-bc-resnet-replay-uncertainty-noisytune-k6-m500-seed3-e4bfd20b",
        "trial": "m-seed3-42c63eb250",
        "method": "uncertainty-noisytune-k6-m500-ilr0.0001-bft5lr0.001"},
    "batch-sampling": {
        "run": "synthetic-bc-resnet-replay-uncertainty-noisytune-k6-m500-seed3-e5769723",
        "trial": "m-seed3-a6bc014d06",
        "method": "uncertainty-noisytune-k6-m500-cbb-specaugment"},
    "progressive": {
        "run": "synthetic-bc-resnet-replay-uncertainty-noisytune-k6-m500-seed3-a362af27",
        "trial": "m-seed3-d65eca5f47",
        "method": "uncertainty-noisytune-k6-m500-pgb-bn256"},
    "tflm": {
        "run": "synthetic-bc-resnet-replay-uncertainty-noisytune-k6-m500-seed3-58b49e49",
        "trial": "m-seed3-8fac771cf5",
        "method": "uncertainty-noisytune-k6-m500"},
    "budgets": {
        "run": "synthetic-bc-resnet-replay-uncertainty-noisytune-k6-b4000000-mulaw8-seed3-7f4ac673",
        "trial": "m-seed3-46a143ecdb",
        "method": "uncertainty-noisytune-k6-b4000000-mulaw8"},
    "finetune": {
        "run": "synthetic-bc-resnet-finetune-seed3-b6d16a54",
        "trial": "m-seed3-d5dcf762d9",
        "method": "finetune"},
    "joint": {
        "run": "synthetic-baseline-joint-seed3-9d8e823c",
        "trial": "m-seed3-ba92577869",
        "method": "joint"},
    "esc50-alias": {
        "run": "ESC-50-bc-resnet-replay-uncertainty-noisytune-k6-m500-fold3-seed3-03fdfccc",
        "trial": "m-fold3-seed3-3cc538341b",
        "method": "uncertainty-noisytune-k6-m500"},
    "tau-alias": {
        "run": "TAU-ASC-bc-resnet-replay-uncertainty-noisytune-k6-m500-seed3-f1f6f811",
        "trial": "m-seed3-50d2ec728c",
        "method": "uncertainty-noisytune-k6-m500"},
    "manifest": {
        "run": "manifest-bc-resnet-replay-uncertainty-noisytune-k6-m500-seed7-f2bc4512",
        "trial": "m-seed7-bbe80b19d0",
        "method": "uncertainty-noisytune-k6-m500"},
    "not-identity": {
        "run": "synthetic-bc-resnet-replay-uncertainty-noisytune-k6-m500-seed3-34fef84a",
        "trial": "m-seed3-11cde1331a",
        "method": "uncertainty-noisytune-k6-m500"},
}

OUTSIDE_IDENTITY = {"workspace", "exp_name", "threads", "quiet", "feature_store", "device",
                    # added later, outside by design: checkpointing recomputes the same values,
                    # and a memory limit only refuses or turns checkpointing on
                    "max_train_ram", "activation_checkpointing",
                    # a shorthand for the two limits, which are identity (set from it)
                    "part"}
LEFT_OUT_AT_DEFAULT = {"target": "onnx", "n_mels": 64, "bn_recal_clips": 1024,
                       "tflm_window_seconds": None, "balanced_epochs": 0, "balanced_lr": 1e-4,
                       "uncert_trim": 0.0, "uncert_ties": "random", "batch_sampling": "uniform",
                       "lr_incremental": None, "augment": "none", "bias_correction": "off",
                       "shots": None, "analytic_gamma": None, "analytic_weighting": "balanced",
                       "analytic_expansion": 0}

# Options the grid sets for every trial.
GRID_SET = ("workspace", "exp_name", "threads", "quiet", "device")

TRAIN_OPTIONS = {
    'config': (('--config',), (), 'unset', 'file'),
    'dataset': (('--dataset',), (), 'synthetic', 'dataset'),
    'data_root': (('--data-root',), (), None, 'path'),
    'model': (('--model',), (), 'bc-resnet', 'choice'),
    'width': (('--width',), (), 40, 'integer'),
    'n_mels': (('--n-mels',), (), 64, 'integer'),
    'mode': (('--mode',), (), 'replay', 'choice'),
    'mem_manage': (('--mem-manage',), (), 'uncertainty', 'choice'),
    'uncert_metric': (('--uncert-metric',), (), 'noisytune', 'choice'),
    'metric_k': (('--metric-k',), (), '6', 'choice'),
    'noise_lambda': (('--noise-lambda',), (), 0.2, 'float'),
    'uncert_trim': (('--uncert-trim',), (), 0.0, 'float'),
    'uncert_ties': (('--uncert-ties',), (), 'random', 'choice'),
    'memory_size': (('--memory-size',), (), 500, 'integer'),
    'memory_bytes': (('--memory-bytes',), (), None, 'text'),
    'memory_format': (('--memory-format',), (), 'float32', 'choice'),
    'code_new_clips': (('--code-new-clips',), ('--no-code-new-clips',), True, 'boolean'),
    'weight_align': (('--weight-align',), ('--no-weight-align',), False, 'boolean'),
    'bias_correction': (('--bias-correction',), (), 'off', 'choice'),
    'distill_output': (('--distill-output',), (), 0.0, 'float'),
    'distill_feature': (('--distill-feature',), (), 0.0, 'float'),
    'distill_temperature': (('--distill-temperature',), (), 2.0, 'float'),
    'distill_adaptive': (('--distill-adaptive',), ('--no-distill-adaptive',), False, 'boolean'),
    'balanced_epochs': (('--balanced-epochs',), (), 0, 'integer'),
    'balanced_lr': (('--balanced-lr',), (), 0.0001, 'float'),
    'batch_sampling': (('--batch-sampling',), (), 'uniform', 'choice'),
    'augment': (('--augment',), (), 'none', 'choice'),
    'analytic_gamma': (('--analytic-gamma',), (), None, 'float'),
    'analytic_weighting': (('--analytic-weighting',), (), 'balanced', 'choice'),
    'analytic_expansion': (('--analytic-expansion',), (), 0, 'integer'),
    'ewc_lambda': (('--ewc-lambda',), (), 0.0, 'float'),
    'val_fraction': (('--val-fraction',), (), 0.1, 'float'),
    'max_steps': (('--max-steps',), (), None, 'integer'),
    'max_train_seconds': (('--max-train-seconds',), (), None, 'float'),
    'max_train_macs': (('--max-train-macs',), (), None, 'text'),
    'max_train_ram': (('--max-train-ram',), (), None, 'text'),
    'activation_checkpointing': (('--activation-checkpointing',), (), 'auto', 'choice'),
    'n_tasks': (('--n-tasks',), (), None, 'integer'),
    'n_init_cls': (('--n-init-cls',), (), None, 'integer'),
    'n_cls_a_task': (('--n-cls-a-task',), (), None, 'integer'),
    'shots': (('--shots',), (), None, 'integer'),
    'seed': (('--seed',), (), 3, 'integer'),
    'epochs': (('--epochs',), (), 30, 'integer'),
    'batch_size': (('--batch-size',), (), 32, 'integer'),
    'lr': (('--lr',), (), 0.001, 'float'),
    'lr_incremental': (('--lr-incremental',), (), None, 'float'),
    'patience': (('--patience',), (), 7, 'integer'),
    'bn_recal_clips': (('--bn-recal-clips',), (), 1024, 'integer'),
    'test_fold': (('--test-fold',), (), 1, 'integer range'),
    'sample_rate': (('--sample-rate',), (), None, 'integer'),
    'clip_seconds': (('--clip-seconds',), (), None, 'float'),
    'clips_per_class': (('--clips-per-class',), (), 100, 'integer'),
    'workspace': (('--workspace',), (), 'workspace', 'directory'),
    'exp_name': (('--exp-name',), (), None, 'text'),
    'overwrite': (('--overwrite',), (), 'unset', 'boolean'),
    'export': (('--export',), ('--no-export',), True, 'boolean'),
    'target': (('--target',), (), 'onnx', 'choice'),
    'tflm_window_seconds': (('--tflm-window-seconds',), (), None, 'float'),
    'arena_limit': (('--arena-limit',), (), None, 'text'),
    'flash_limit': (('--flash-limit',), (), None, 'text'),
    'part': (('--part',), (), None, 'choice'),
    'feature_cache': (('--feature-cache',), ('--no-feature-cache',), True, 'boolean'),
    'feature_store': (('--feature-store',), ('--no-feature-store',), True, 'boolean'),
    'device': (('--device',), (), 'auto', 'choice'),
    'allow_tf32': (('--allow-tf32',), ('--no-allow-tf32',), False, 'boolean'),
    'precision': (('--precision',), (), 'fp32', 'choice'),
    'threads': (('--threads',), (), 2, 'integer'),
    'quiet': (('--quiet',), (), 'unset', 'boolean'),
}


@pytest.mark.parametrize(("label", "options"), CONFIGS, ids=[label for label, _ in CONFIGS])
def test_names_of_existing_configurations_are_unchanged(label, options):
    assert observe(options) == EXPECTED[label]


def test_options_outside_the_identity_and_the_method_are_unchanged():
    """What a run's identity, a trial's hash and a method's key leave out (so every option
    added since joins all three, and the ones added with a default left out keep theirs)."""
    assert set(NOT_IDENTITY) == set(NOT_HASHED) == OUTSIDE_IDENTITY
    assert set(NOT_METHOD) == OUTSIDE_IDENTITY | {"seed", "test_fold"}
    left_out = identity_defaults_left_out()
    assert {name: left_out.get(name, "absent") for name in LEFT_OUT_AT_DEFAULT} == \
        LEFT_OUT_AT_DEFAULT


def test_train_options_names_and_defaults_are_unchanged():
    assert train_option_table() == TRAIN_OPTIONS
