"""Run names, grid trial names and report labels of existing configurations never change.

The expected strings were computed by the code before option metadata was declared once (each
option then had a RunConfig field, a click option and three hand-kept lists); a run folder, a grid
trial and a report row keep their names as long as these pass. The option table of `edgecl
train` (names, flags, defaults, types) is recorded the same way: a new option adds its row, an
existing row never changes.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from edgecl.config import RunConfig
from edgecl.grid.spec import parse_spec
from edgecl.report.aggregate import method_key, method_label

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


def _grid_trial_name(label: str, config: RunConfig) -> str:
    """The grid's trial name (method label, seed, options hash) for the run's own options as a
    spec gives them (every option the run sets, grid-owned ones left to the grid)."""
    values = config.to_dict()
    seed = values.pop("seed")
    for name in ("workspace", "exp_name", "threads", "quiet"):
        values.pop(name)
    if config.mem_manage != "uncertainty" or config.mode != "replay":
        for name in ("uncert_metric", "metric_k", "noise_lambda", "uncert_trim", "uncert_ties"):
            values.pop(name)
    values = {k: v for k, v in values.items() if v is not None}
    spec = parse_spec({"methods": [{"name": label, **values}], "seeds": [seed]}, "t", "test")
    (trial,) = spec.trials()
    return trial.name


def observe(options: dict) -> dict[str, str]:
    config = RunConfig(**options)
    record = config.to_dict()  # results.json's `config`
    key = json.dumps(method_key(record), sort_keys=True, default=str).encode()
    return {"run": config.default_exp_name(),
            "trial": _grid_trial_name("m", config),
            "method": method_label(record),
            "method_key": hashlib.sha256(key).hexdigest()[:10]}


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
        "trial": "m-seed3-e68da95a25",
        "method": "uncertainty-noisytune-k6-m500",
        "method_key": "4dce4369fe"},
    "random": {
        "run": "synthetic-bc-resnet-replay-random-m500-seed3-f34ed52d",
        "trial": "m-seed3-c4b1cb1b23",
        "method": "random-m500",
        "method_key": "56d11a0490"},
    "reservoir": {
        "run": "synthetic-bc-resnet-replay-reservoir-m200-seed3-a617f671",
        "trial": "m-seed3-a51858ab8e",
        "method": "reservoir-m200",
        "method_key": "acaede6532"},
    "prototype": {
        "run": "synthetic-bc-resnet-replay-prototype-m500-seed3-10a06d34",
        "trial": "m-seed3-efda3d2cf8",
        "method": "prototype-m500",
        "method_key": "49d284074d"},
    "kcenter": {
        "run": "synthetic-bc-resnet-replay-kcenter-m500-seed3-09c8cfd8",
        "trial": "m-seed3-83f66fa3e9",
        "method": "kcenter-m500",
        "method_key": "915d678e3e"},
    "balanced-random": {
        "run": "synthetic-bc-resnet-replay-balanced-random-m500-logmel8-seed3-13825f03",
        "trial": "m-seed3-d2eb0e428a",
        "method": "balanced-random-m500-logmel8",
        "method_key": "83f7936a77"},
    "uncert-shift": {
        "run": "synthetic-bc-resnet-replay-uncertainty-shift-k4-m500-seed3-68d65c90",
        "trial": "m-seed3-e5caa7d9c6",
        "method": "uncertainty-shift-k4-m500",
        "method_key": "4ab2225658"},
    "uncert-noise-trim": {
        "run": "synthetic-bc-resnet-replay-uncertainty-noise-k2-trim0.1-m500-seed3-ebc94563",
        "trial": "m-seed3-470cc0adf6",
        "method": "uncertainty-noise-k2-trim0.1-m500",
        "method_key": "61f330e579"},
    "uncert-ties": {
        "run": "synthetic-bc-resnet-replay-uncertainty-noisytune-k6-herd-m500-seed3-e9b0f208",
        "trial": "m-seed3-3901e123da",
        "method": "uncertainty-noisytune-k6-herd-m500",
        "method_key": "1800f2e54b"},
    "distill": {
        "run": "synthetic-bc-resnet-replay-uncertainty-noisytune-k6-m500-seed3-f4b7c202",
        "trial": "m-seed3-f6d0501337",
        "method": "uncertainty-noisytune-k6-m500-kd1-0.5a",
        "method_key": "98dcb48b54"},
    "bic-in-loop": {
        "run": "synthetic-bc-resnet-replay-uncertainty-noisytune-k6-m500-seed3-59566bfa",
        "trial": "m-seed3-03a2891932",
        "method": "uncertainty-noisytune-k6-m500-wa-bic",
        "method_key": "53b6e7ad24"},
    "bic-deployed": {
        "run": "synthetic-bc-resnet-replay-prototype-m500-seed3-c031733f",
        "trial": "m-seed3-5f67222a4c",
        "method": "prototype-m500-bicd",
        "method_key": "80450837dc"},
    "balanced-ft": {
        "run": "synthetic-bc-resnet-replay-uncertainty-noisytune-k6-m500-seed3-e4bfd20b",
        "trial": "m-seed3-cf570a9745",
        "method": "uncertainty-noisytune-k6-m500-ilr0.0001-bft5lr0.001",
        "method_key": "284d6fb018"},
    "batch-sampling": {
        "run": "synthetic-bc-resnet-replay-uncertainty-noisytune-k6-m500-seed3-e5769723",
        "trial": "m-seed3-4523014aaf",
        "method": "uncertainty-noisytune-k6-m500-cbb-specaugment",
        "method_key": "08a4b7b32e"},
    "progressive": {
        "run": "synthetic-bc-resnet-replay-uncertainty-noisytune-k6-m500-seed3-a362af27",
        "trial": "m-seed3-ee0a5641a1",
        "method": "uncertainty-noisytune-k6-m500-pgb-bn256",
        "method_key": "bde1a1fae8"},
    "tflm": {
        "run": "synthetic-bc-resnet-replay-uncertainty-noisytune-k6-m500-seed3-58b49e49",
        "trial": "m-seed3-21e998fc72",
        "method": "uncertainty-noisytune-k6-m500",
        "method_key": "880b2a2b15"},
    "budgets": {
        "run": "synthetic-bc-resnet-replay-uncertainty-noisytune-k6-b4000000-mulaw8-seed3-7f4ac673",
        "trial": "m-seed3-0fee2d53f5",
        "method": "uncertainty-noisytune-k6-b4000000-mulaw8",
        "method_key": "770a7c470c"},
    "finetune": {
        "run": "synthetic-bc-resnet-finetune-seed3-b6d16a54",
        "trial": "m-seed3-232eff8c67",
        "method": "finetune",
        "method_key": "dbcaf5db49"},
    "joint": {
        "run": "synthetic-baseline-joint-seed3-9d8e823c",
        "trial": "m-seed3-e76442edaf",
        "method": "joint",
        "method_key": "08864296e5"},
    "esc50-alias": {
        "run": "ESC-50-bc-resnet-replay-uncertainty-noisytune-k6-m500-fold3-seed3-03fdfccc",
        "trial": "m-fold3-seed3-9f50df5589",
        "method": "uncertainty-noisytune-k6-m500",
        "method_key": "a7d878342e"},
    "tau-alias": {
        "run": "TAU-ASC-bc-resnet-replay-uncertainty-noisytune-k6-m500-seed3-f1f6f811",
        "trial": "m-seed3-09907b59da",
        "method": "uncertainty-noisytune-k6-m500",
        "method_key": "06215ea76e"},
    "manifest": {
        "run": "manifest-bc-resnet-replay-uncertainty-noisytune-k6-m500-seed7-f2bc4512",
        "trial": "m-seed7-dbf7277f50",
        "method": "uncertainty-noisytune-k6-m500",
        "method_key": "01bc0fffec"},
    "not-identity": {
        "run": "synthetic-bc-resnet-replay-uncertainty-noisytune-k6-m500-seed3-34fef84a",
        "trial": "m-seed3-26583074b0",
        "method": "uncertainty-noisytune-k6-m500",
        "method_key": "2baf95346e"},
}

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
    'val_fraction': (('--val-fraction',), (), 0.1, 'float'),
    'max_steps': (('--max-steps',), (), None, 'integer'),
    'max_train_seconds': (('--max-train-seconds',), (), None, 'float'),
    'max_train_macs': (('--max-train-macs',), (), None, 'text'),
    'n_tasks': (('--n-tasks',), (), None, 'integer'),
    'n_init_cls': (('--n-init-cls',), (), None, 'integer'),
    'n_cls_a_task': (('--n-cls-a-task',), (), None, 'integer'),
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
    'feature_cache': (('--feature-cache',), ('--no-feature-cache',), True, 'boolean'),
    'feature_store': (('--feature-store',), ('--no-feature-store',), True, 'boolean'),
    'device': (('--device',), (), 'auto', 'choice'),
    'allow_tf32': (('--allow-tf32',), ('--no-allow-tf32',), False, 'boolean'),
    'threads': (('--threads',), (), 2, 'integer'),
    'quiet': (('--quiet',), (), 'unset', 'boolean'),
}


@pytest.mark.parametrize(("label", "options"), CONFIGS, ids=[label for label, _ in CONFIGS])
def test_names_of_existing_configurations_are_unchanged(label, options):
    assert observe(options) == EXPECTED[label]


def test_train_options_names_and_defaults_are_unchanged():
    assert train_option_table() == TRAIN_OPTIONS
