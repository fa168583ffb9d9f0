"""Every exported bundle carries its head's analytic state (firmware_export.device.learn), so a
deployed bundle can learn (`edgecl device learn`) without a host fit first.

The exporter (inside `train` and in `edgecl export`) fits the state on the clips the phase trained
on: its new clips and the replay memory it trained with (AnalyticFit.clips), through the bundle's
own embedding model (model.embedding.onnx, one pass over those clips in fixed batches), so the
state belongs to the bundle's backbone and a rebuild from the checkpoint gives the same bytes. A
`--mode analytic` run ships the state it already has (AnalyticFit.state): nothing is refit.

The manifest's `analytic` section says what the state was fit on (`fit`), and the accuracy of the
analytic head before any learning beside the trained head's on the phase's held-out clips (the
embeddings the export computed already to check its embedding model). A state larger than the
run's memory budget is withheld like a build over its limit: no state file ships, the section
says why. The fit's wall time goes to the export's cost, never into the bundle.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecl.budget.units import format_bytes
from edgecl.errors import EdgeclError
from edgecl.fileio import atomic_write_json
from firmware_export.device.analytic_state import BundleState
from firmware_export.device.learn import (
    DEFAULT_CLASS_LIMIT,
    class_rows,
    embed_batches,
    fit_state,
    holdout_accuracy,
    state_files,
)
from firmware_export.device.manifest import sha256_file
from firmware_export.device.runtime import cpu_session


@dataclass
class AnalyticFit:
    """What the exporter gives a phase bundle's analytic state.

    `clips` are (clip, class name) of the clips the phase trained on, memory included (a clip
    has a `path`); `waveform(clip)` reads one at the model's rate and length. `state` is a ready
    state (--mode analytic: the run's own), used instead of a fit. `fit` describes the clips for
    the manifest; `budget_bytes` is the memory budget the state must fit in (None: none)."""

    clips: list[tuple[Any, str]] = field(default_factory=list)
    waveform: Callable[[Any], np.ndarray] | None = None
    fit: dict[str, Any] = field(default_factory=dict)
    state: BundleState | None = None
    gamma: float | None = None
    weighting: str = "balanced"
    expansion: int = 0
    seed: int = 0
    class_limit: int = DEFAULT_CLASS_LIMIT
    budget_bytes: int | None = None
    budget_option: str = "--memory-bytes"


@dataclass
class FitOutcome:
    """The bundle files the state adds, the manifest's `analytic` section, and the fit's cost."""

    files: dict[str, bytes]
    section: dict[str, Any]
    seconds: float


def fit_phase_state(fit: AnalyticFit, embedding_bytes: bytes, classes: Sequence[str], *,
                    holdout_embeddings: np.ndarray, holdout_labels: Sequence[str],
                    trained: tuple[np.ndarray, np.ndarray], backbone_sha256: str,
                    bundle_files: Sequence[str] = ()) -> FitOutcome:
    """The phase bundle's state: `fit.state` as given, or fit to `fit.clips`; its files and
    manifest section (with the held-out accuracy of both heads), or withheld over the budget.
    `bundle_files` names the bundle's other files (a TFLM embedding model adds the C head's
    state blob)."""
    started = time.perf_counter()
    state = fit.state
    if state is None:
        state = _fit_clips(fit, embedding_bytes, classes, backbone_sha256)
    else:
        state.backbone_sha256 = backbone_sha256
    if not state.lineage:
        state.lineage.append(export_step(state.clip_sha256))
    section = {**state.summary(), "status": "shipped", "reason": None, "fit": dict(fit.fit),
               "holdout_accuracy": holdout_accuracy(state.head, holdout_embeddings, trained,
                                                    classes, holdout_labels),
               "update_macs_per_clip": state.head.update_macs(1)}
    files = state_files(state, {"files": dict.fromkeys(bundle_files)})
    over = _over_budget(state, fit)
    if over is not None:
        files = {}
        section.update(status="withheld", reason=over)
    return FitOutcome(files, section, time.perf_counter() - started)


def _fit_clips(fit: AnalyticFit, embedding_bytes: bytes, classes: Sequence[str],
               backbone_sha256: str) -> BundleState:
    labels = [label for _, label in fit.clips]
    rows = class_rows(labels, classes)
    clips = [fit.clips[i][0] for i in rows]
    assert fit.waveform is not None, "AnalyticFit: clips to fit need a waveform reader"
    embeddings = embed_waveforms(embedding_bytes, clips, fit.waveform)
    return fit_state(embeddings, [labels[i] for i in rows],
                     [sha256_file(clip.path) for clip in clips], backbone_sha256=backbone_sha256,
                     gamma=fit.gamma, weighting=fit.weighting, class_limit=fit.class_limit,
                     expansion=fit.expansion, seed=fit.seed)


def embed_waveforms(embedding_bytes: bytes, clips: Sequence[Any],
                    waveform: Callable[[Any], np.ndarray]) -> np.ndarray:
    """Embeddings [n, D] float32 of `clips` by the embedding model (device.learn.embed_batches:
    fixed batches, so the same clips give the same bytes)."""
    return embed_batches(cpu_session(embedding_bytes), clips, waveform)


def export_step(hashes: Sequence[str]) -> dict[str, Any]:
    """The lineage's first step of a state the exporter made: no time, so a rebuild of the bundle
    from its checkpoint gives the same bytes (the manifest's provenance says when)."""
    return {"version": 0, "action": "fit", "label": None, "clips": list(hashes), "at": None,
            "by": "export", "from": None}


def _over_budget(state: BundleState, fit: AnalyticFit) -> str | None:
    size = state.head.state_bytes(4)
    if fit.budget_bytes is None or size <= fit.budget_bytes:
        return None
    return (f"analytic state {format_bytes(size)} ({size} bytes fp32) over {fit.budget_option} "
            f"{format_bytes(fit.budget_bytes)}")


# The replay memory a phase trained with, by position in the run's task plan ([task, index in
# its training clips]), kept beside the phase's checkpoint so `edgecl export` fits the same state.
REPLAYED_NAME = "replayed.json"


def replayed_positions(tasks: Sequence[Any], keys: Sequence[str]) -> list[list[int]]:
    """[task index, position in task.train] of each memory key (a clip's path as text) among the
    training clips of `tasks`, in the memory's order."""
    where = {str(lc.clip.path): [task.index, k] for task in tasks
             for k, lc in enumerate(task.train)}
    return [where[key] for key in keys if key in where]


def write_replayed(phase_dir: Path, positions: list[list[int]]) -> None:
    atomic_write_json(Path(phase_dir) / REPLAYED_NAME, {"memory": positions})


def read_replayed(phase_dir: Path, tasks: Sequence[Any]) -> list[Any] | None:
    """The LabelledClips of the memory the phase trained with (None when not recorded)."""
    path = Path(phase_dir) / REPLAYED_NAME
    if not path.is_file():
        return None
    try:
        positions = json.loads(path.read_text(encoding="utf-8"))["memory"]
        by_index = {task.index: task for task in tasks}
        return [by_index[int(task)].train[int(k)] for task, k in positions]
    except (OSError, ValueError, KeyError, TypeError, IndexError) as error:
        raise EdgeclError(f"{path}: unreadable record of the replayed memory ({error})") from None


def phase_fit(config, classes: Sequence[str], new_clips: Sequence[Any],
              memory_clips: Sequence[Any] | None, waveform: Callable[[Any], np.ndarray],
              state: BundleState | None = None) -> AnalyticFit:
    """The AnalyticFit of a phase of a run with `config` (edgecl.config.RunConfig): its new
    LabelledClips and the memory's (None: not recorded, fit without), or the run's own `state`
    (--mode analytic)."""
    memory = list(memory_clips or [])
    labelled = [*new_clips, *memory]
    fit = {"source": "the run's analytic head" if state is not None else
           "the phase's training clips and replay memory",
           "new_clips": len(new_clips), "memory_clips": len(memory) if state is None else 0}
    if state is None and memory_clips is None and config.mode == "replay":
        fit["memory_clips"] = None  # an export of a run from before the record was kept
    return AnalyticFit(clips=[(lc.clip, classes[lc.target]) for lc in labelled],
                       waveform=waveform, fit=fit, state=state, gamma=config.analytic_gamma,
                       weighting=config.analytic_weighting,
                       expansion=getattr(config, "analytic_expansion", 0), seed=config.seed,
                       class_limit=max(DEFAULT_CLASS_LIMIT, len(classes)),
                       budget_bytes=config.memory_bytes)
