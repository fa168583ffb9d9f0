"""The run folder WORKSPACE/EXP_NAME: what `edgecl train` writes there and how to read it back.

Layout: results.json (RESULTS_NAME), train.log (LOG_NAME), run.json (the run's options) and .lock
(edgecl.run_owner) and, per phase, phase_<i>/ with the weights-only checkpoint checkpoint.pt
(CHECKPOINT_NAME), when exported the device bundle, and in the last completed phase state.pt,
what a resumed run continues from (edgecl.run_state).
A run is rebuilt from its folder by `run_plan`: the config recorded in results.json gives the same
dataset split and task plan again (`load_plan`, which the trainer uses too).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from edgecl.errors import EdgeclError
from edgecl.fileio import atomic_torch_save
from edgecl.schema import read_checked, results_problem

RESULTS_NAME = "results.json"
RUN_RECORD_NAME = "run.json"  # the run's options and data (edgecl.run_owner, edgecl.run_data)
LOG_NAME = "train.log"
CHECKPOINT_NAME = "checkpoint.pt"
PHASE_PREFIX = "phase_"


def phase_dir(run_dir: str | Path, phase: int) -> Path:
    """run_dir/phase_<phase>."""
    return Path(run_dir) / f"{PHASE_PREFIX}{phase}"


def checkpoint_path(run_dir: str | Path, phase: int) -> Path:
    """run_dir/phase_<phase>/checkpoint.pt."""
    return phase_dir(run_dir, phase) / CHECKPOINT_NAME


def phase_dirs(run_dir: str | Path, phase: int | None = None) -> list[Path]:
    """phase_<i> folders holding a checkpoint, in phase order (only phase `phase` if given)."""
    run_dir = Path(run_dir)
    found = sorted((p for p in run_dir.glob(f"{PHASE_PREFIX}*") if (p / CHECKPOINT_NAME).is_file()
                    and p.name.split("_", 1)[1].isdigit()), key=lambda p: int(p.name.split("_")[1]))
    if phase is not None:
        found = [p for p in found if int(p.name.split("_")[1]) == phase]
        if not found:
            raise EdgeclError(f"--phase: {run_dir} has no {PHASE_PREFIX}{phase}/{CHECKPOINT_NAME}")
    if not found:
        raise EdgeclError(f"{run_dir}: no {PHASE_PREFIX}<i>/{CHECKPOINT_NAME} found; expected the "
                          f"folder of a run made by `edgecl train`")
    return found


def save_checkpoint(path: str | Path, model, *, classes: list[str], phase: int,
                    exp_name: str) -> Path:
    """Weights-only checkpoint: loads with torch.load(weights_only=True), also on a machine
    without the device the model trained on (the tensors are saved from the CPU)."""
    from edgecl.device import cpu_state

    payload = {"state_dict": cpu_state(model.state_dict()), "model_config": model.model_config(),
               "classes": list(classes), "phase": phase, "exp_name": exp_name}
    return atomic_torch_save(Path(path), payload)


def load_checkpoint(path: str | Path):
    """(model in eval mode, classes, phase) from a trainer checkpoint, loaded weights-only."""
    import torch

    import models

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        model = models.rebuild(payload["model_config"])
        model.load_state_dict(payload["state_dict"])
        classes, phase = [str(c) for c in payload["classes"]], int(payload["phase"])
    except EdgeclError:
        raise
    except Exception as error:  # unpickling, missing keys, shape mismatches
        detail = " ".join(str(error).split())[:200]
        raise EdgeclError(f"{path}: not a usable edgecl checkpoint ({detail})") from None
    return model.eval(), classes, phase


def load_plan(config):
    """(config with its task options filled in, dataset split, task plan) of a RunConfig."""
    from edgecl.data import load_dataset
    from edgecl.tasks import make_tasks

    split = load_dataset(config.dataset, config.data_root, test_fold=config.test_fold,
                         seed=config.seed, workspace=config.workspace,
                         sample_rate=config.sample_rate, clip_seconds=config.clip_seconds,
                         clips_per_class=config.clips_per_class)
    config = config.with_tasks_for(len(split.classes))
    plan = make_tasks(split, config.n_tasks, config.n_init_cls, config.n_cls_a_task, config.seed,
                      val_fraction=config.val_fraction, shots=config.shots)
    return config, split, plan


def run_plan(run_dir: str | Path, data_root: str | None = None):
    """(config, dataset split, task plan) rebuilt from run_dir/results.json as the trainer did,
    on the run's own data (edgecl.run_data: the recorded root, or `data_root` where they moved;
    data that changed are an error)."""
    from edgecl.config import RunConfig
    from edgecl.run_data import check_run_data, run_data_root

    results_path = Path(run_dir) / RESULTS_NAME
    try:
        results = read_checked(results_path, lambda doc: results_problem(doc, ("config",)))
        config = RunConfig.from_dict(results["config"])
    except FileNotFoundError:
        raise EdgeclError(f"{results_path}: not found; expected a run folder made by `edgecl train`"
                          ) from None
    except EdgeclError as error:
        raise EdgeclError(f"{error}; rerun `edgecl train` with the run's options to rewrite it"
                          ) from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise EdgeclError(f"{results_path}: unreadable run results ({error})") from None
    root = run_data_root(run_dir, results["config"].get("data_root"), data_root)
    config, split, plan = load_plan(replace(config, data_root=root))
    check_run_data(run_dir, config.data_root, split, given=data_root)
    if results.get("classes") and list(results["classes"]) != plan.class_order:
        raise EdgeclError(f"{results_path}: the dataset now gives class order {plan.class_order}, "
                          f"the run had {results['classes']}; the data changed since training")
    return config, split, plan
