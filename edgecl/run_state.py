"""What a run needs to continue after its last completed phase: phase_<i>/state.pt.

Written atomically at the very end of phase i (after its checkpoint and export), it is the
phase's commit point: a phase whose state.pt exists is complete; a later phase folder without one
is a leftover of an interrupted phase. The previous phase's state.pt is removed once the new one
is written, so a run folder holds one (the memory can be large).

Contents (loads with torch.load(weights_only=True): tensors, lists, dicts, strings, numbers):
- `phase`, `records`: the PhaseRecords so far (JSON text, as in results.json's phases);
- `memory`: capacity, format and each exemplar's key, target and encoded payload (the stored
  bytes, as a tensor of the format's dtype, with its shape, scale and offset), or None;
- `sampler`: the sampler's `get_state()` (numpy arrays as tensors);
- `rng`: JSON text of python's `random` state, numpy's global state and the run's Generator
  state; `torch_rng`: torch's CPU generator state (`cuda_rng`: the CUDA ones, when present).
The model is the phase's checkpoint.pt (weights and head size), which is also the next phase's
distillation teacher (edgecl.training.distill); the optimizer is created anew each phase and the per-phase torch Generator is seeded from the seed and phase, so neither is saved.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np

from edgecl.errors import EdgeclError
from edgecl.fileio import atomic_torch_save
from edgecl.progress import truncate_metrics
from edgecl.run_folder import PHASE_PREFIX, RESULTS_NAME, phase_dir
from edgecl.schema import NUMBER, DictOf, Fields, ListOf, Nullable, problem

STATE_NAME = "state.pt"


def state_path(run_dir: str | Path, phase: int) -> Path:
    return phase_dir(run_dir, phase) / STATE_NAME


def last_state_phase(run_dir: str | Path) -> int | None:
    """The last phase with a state.pt (None when no phase completed)."""
    phases = [int(p.parent.name[len(PHASE_PREFIX):])
              for p in Path(run_dir).glob(f"{PHASE_PREFIX}*/{STATE_NAME}")
              if p.parent.name[len(PHASE_PREFIX):].isdigit()]
    return max(phases) if phases else None


# --- state of each part -------------------------------------------------------------------

def rng_state(run_rng: np.random.Generator) -> str:
    """Python's, numpy's global and the run Generator's states as JSON text."""

    version, internal, gauss = random.getstate()
    legacy = np.random.get_state(legacy=False)
    legacy["state"] = {"key": [int(v) for v in legacy["state"]["key"]],
                       "pos": int(legacy["state"]["pos"])}
    return json.dumps({"python": [version, list(internal), gauss], "numpy": legacy,
                       "run": run_rng.bit_generator.state})


def set_rng_state(text: str, run_rng: np.random.Generator) -> None:
    states = json.loads(text)
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    legacy = states["numpy"]
    legacy["state"]["key"] = np.asarray(legacy["state"]["key"], dtype=np.uint32)
    np.random.set_state(legacy)
    run_rng.bit_generator.state = states["run"]


def memory_state(memory) -> dict[str, Any] | None:
    import torch

    if memory is None:
        return None
    return {"capacity": memory.capacity, "format": memory.format.name, "exemplars": [
        {"key": e.key, "target": e.target, "payload": torch.from_numpy(e.encoded.payload.copy()),
         "shape": list(e.encoded.shape), "scale": e.encoded.scale, "offset": e.encoded.offset}
        for e in memory]}


def set_memory_state(memory, state: dict[str, Any]) -> None:
    from edgecl.memory.buffer import Exemplar
    from edgecl.memory.formats import Encoded

    if state["format"] != memory.format.name:
        raise EdgeclError(f"saved memory holds {state['format']} exemplars, the run stores "
                          f"{memory.format.name}")
    memory.capacity = int(state["capacity"])
    memory._exemplars = [
        Exemplar(e["key"], int(e["target"]),
                 Encoded(memory.format.name, e["payload"].numpy(), tuple(e["shape"]),
                         e["scale"], e["offset"]))
        for e in state["exemplars"]]


def _tensors(value: Any) -> Any:
    """numpy arrays inside dicts and lists as tensors (weights-only loadable)."""
    import torch

    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, dict):
        return {k: _tensors(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_tensors(v) for v in value]
    return value


# --- the file -----------------------------------------------------------------------------

def save_state(run_dir: str | Path, phase: int, *, records: list[dict[str, Any]], memory,
               sampler, run_rng: np.random.Generator, **step_state: Any) -> Path:
    """Write phase_<phase>/state.pt atomically, then drop the previous phase's. `step_state`:
    entries the training steps keep for a resumed run (edgecl.steps.Step.state: tensors, plain
    values and dicts of them), e.g. `learner_head`, the head the run goes on from when it differs
    from the checkpoint's (a deployed-only bias correction)."""
    import torch

    payload = {"phase": phase, "records": json.dumps(records), "learner_head": None,
               **step_state, "memory": memory_state(memory),
               "sampler": _tensors(sampler.get_state()) if sampler is not None else {},
               "rng": rng_state(run_rng), "torch_rng": torch.get_rng_state(),
               "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    path = atomic_torch_save(state_path(run_dir, phase), payload)
    if phase > 0:
        state_path(run_dir, phase - 1).unlink(missing_ok=True)
    return path


_RECORD = Fields({"seen_classes": ListOf(str), "accuracy": NUMBER, "task_accuracy": ListOf(NUMBER),
                  "train_seconds": NUMBER, "memory_update_seconds": Nullable(NUMBER),
                  "memory_balance": Nullable(DictOf(NUMBER))},
                 ("seen_classes", "accuracy", "task_accuracy", "train_seconds",
                  "memory_update_seconds", "memory_balance"))


def _state_spec():
    import torch

    exemplar = Fields({"key": str, "target": int, "payload": torch.Tensor, "shape": ListOf(int),
                       "scale": Nullable(NUMBER), "offset": Nullable(NUMBER)},
                      ("key", "target", "payload", "shape", "scale", "offset"))
    memory = Fields({"capacity": int, "format": str, "exemplars": ListOf(exemplar)},
                    ("capacity", "format", "exemplars"))
    return Fields({"phase": int, "records": ListOf(_RECORD), "rng": str,
                   "memory": Nullable(memory), "sampler": dict, "learner_head": Nullable(dict),
                   "torch_rng": torch.Tensor, "cuda_rng": list},
                  ("phase", "records", "rng", "memory", "sampler", "torch_rng"))


def _state_problem(payload: Any, phase: int) -> str | None:
    """Why `payload` is not the state save_state wrote after phase `phase` (None when it is)."""
    found = problem(payload, _state_spec())
    if found is not None:
        return found
    if payload["phase"] != phase or len(payload["records"]) != phase + 1:
        return (f"holds phase {payload['phase']} with {len(payload['records'])} phase records, "
                f"expected phase {phase}")
    return None


def load_state(run_dir: str | Path, phase: int) -> dict[str, Any]:
    """The payload of phase_<phase>/state.pt (records parsed), checked against what save_state
    writes: a damaged file is a one-line error naming it, never a traceback mid-restore."""
    import torch

    path = state_path(run_dir, phase)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(payload, dict) and isinstance(payload.get("records"), str):
            payload["records"] = json.loads(payload["records"])
        found = _state_problem(payload, phase)
    except Exception as error:  # unpickling, truncated file, bad JSON
        found = " ".join(str(error).split())[:200]
    if found is not None:
        raise _unusable(path, found)
    payload["path"] = path  # for restore_state's errors
    return payload


def _unusable(path: Path, detail: str) -> EdgeclError:
    return EdgeclError(f"{path}: unreadable run state ({detail}); pass --overwrite to start the "
                       f"run again")


def restore_state(payload: dict[str, Any], *, memory, sampler,
                  run_rng: np.random.Generator) -> None:
    """Put the memory, the sampler and every random generator back as they were saved."""
    import torch

    try:
        if memory is not None:
            set_memory_state(memory, payload["memory"])
        if sampler is not None:
            sampler.set_state(payload["sampler"])
        set_rng_state(payload["rng"], run_rng)
        torch.set_rng_state(payload["torch_rng"])
        if payload.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(payload["cuda_rng"])
    except EdgeclError:
        raise
    except Exception as error:  # a payload of the right shape holding values that do not fit
        detail = f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"
        raise _unusable(payload.get("path", STATE_NAME), detail) from None


def drop_uncommitted(run_dir: str | Path) -> int | None:
    """Remove what an interrupted run left after its last committed phase (later phase folders,
    their rows of metrics.csv; results.json too when no phase committed); returns that phase, or
    None."""
    import shutil

    run_dir = Path(run_dir)
    done = last_state_phase(run_dir)
    for leftover in run_dir.glob(f"{PHASE_PREFIX}*"):
        suffix = leftover.name[len(PHASE_PREFIX):]
        if suffix.isdigit() and (done is None or int(suffix) > done):
            shutil.rmtree(leftover)
    if done is None:
        (run_dir / RESULTS_NAME).unlink(missing_ok=True)
    truncate_metrics(run_dir, done)
    return done


def load_phase_weights(model, run_dir: str | Path, phase: int) -> bool:
    """Grow `model`'s head to phase `phase`'s classes and load that phase's checkpoint weights.

    A run keeps the front end it started with: when the checkpoint's front end differs from
    `model`'s (a run begun before the STFT implementation was chosen by sample rate has the conv
    DFT), `model.frontend` is replaced by the checkpoint's. Returns True if it was."""
    import torch

    from edgecl.run_folder import checkpoint_path
    from models.frontend import FrontEndConfig, LogMelFrontEnd

    path = checkpoint_path(run_dir, phase)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        saved = FrontEndConfig.from_dict(checkpoint["model_config"]["frontend"])
        replaced = saved != model.frontend.config
        if replaced:
            device = next(iter(model.frontend.buffers())).device
            model.frontend = LogMelFrontEnd(saved).to(device)
        model.head.grow(int(checkpoint["model_config"]["n_classes"]))
        model.load_state_dict(checkpoint["state_dict"])
    except EdgeclError:
        raise
    except Exception as error:  # unpickling, missing keys, shape mismatches
        detail = " ".join(str(error).split())[:200]
        raise EdgeclError(f"{path}: not a usable edgecl checkpoint ({detail}); pass --overwrite "
                          f"to start the run again") from None
    return replaced
