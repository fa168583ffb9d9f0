"""A bundle that learns after deployment: fit its analytic state, learn a class, forget one.

`fit_bundle_state` (host side, `edgecl device fit`: every exported bundle already carries a state
fit by the exporter, firmware_export.analytic_fit, which shares fit_state, state_files and
holdout_accuracy with it) refits a bundle's state to given clips: their embeddings by the
bundle's embedding model, the analytic head (firmware_export.device.analytic) fit to them; the
bundle is rewritten in place with its state, and its device model stays the trained one.
`learn_bundle` and `forget_bundle` (on the device host: numpy, soundfile, onnxruntime) update
that state and write a NEW bundle version, a sibling folder `<bundle>.v<N>`, leaving the one
they read untouched: a failed or killed call
leaves nothing but a hidden staging folder, and the previous version stays usable. A learnt
version's device model is `model.analytic.onnx` (the embedding model with the analytic head as a
Gemm: firmware_export.device.head_graph; with a random expansion spelt out,
device.expanded_graph), so `edgecl infer` runs it like any bundle; it also holds the head's update
in C (rls.h, rls.c) with its current state when the head has no expansion, and on a bundle with a
TFLM embedding model that model, the C front end and the state as the blob the C code loads
(firmware_export.device.tflm_head).

Every version's manifest has the lineage: per step, the action, the label, the sha256 of every
clip that went in or out, when, and the version and manifest sha256 it came from.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgecl.errors import EdgeclError
from firmware_export.bundle_folder import write_bundle
from firmware_export.c_header import render_c_header
from firmware_export.device.analytic import AnalyticHead, choose_gamma, fit_head
from firmware_export.device.analytic_state import BundleState, read_state
from firmware_export.device.head_graph import analytic_model, trained_head
from firmware_export.device.layout import (
    ANALYTIC_STATE,
    C_HEADER,
    INPUT_NAME,
    LABELS,
    MANIFEST,
    MODEL_ANALYTIC,
    MODEL_EMBEDDING,
    MODEL_FP32,
    RLS_STATE,
)
from firmware_export.device.manifest import sha256_file, verify_bundle
from firmware_export.device.runtime import cpu_session, read_clip
from firmware_export.device.tflm_head import c_head_files, learnt_tflm

DEFAULT_CLASS_LIMIT = 32
# Clips per embedding batch: the session holds one batch's activations (32 clips of 44.1 kHz 5 s
# held 0.5 GB more than 8 in an export's analytic fit), and each clip's embedding is computed on
# its own, so the batch does not change it.
EMBED_BATCH = 8
_VERSION = re.compile(r"^(?P<base>.+)\.v(?P<n>\d+)$")


def embed_clips(folder: Path, manifest: dict[str, Any], clips: Sequence[str | os.PathLike[str]],
                threads: int = 1) -> np.ndarray:
    """Embeddings [n, D] float32 of WAV clips by the bundle's embedding model (clips read as
    `edgecl infer` reads them: resampled to the bundle's rate, cropped or padded)."""
    rate, length = int(manifest["sample_rate"]), int(manifest["clip_samples"])
    session = cpu_session(str(folder / MODEL_EMBEDDING), threads)
    return embed_batches(session, clips, lambda clip: _read(clip, rate, length))


def embed_batches(session: Any, clips: Sequence[Any],
                  read: Callable[[Any], np.ndarray]) -> np.ndarray:
    """Embeddings [n, D] float32 of `clips` (each read to a waveform by `read`) by an embedding
    model's onnxruntime `session`, EMBED_BATCH clips at a time: a batch of clips in memory at a
    time, and fixed batches, so the same clips give the same bytes."""
    embeddings = []
    for start in range(0, len(clips), EMBED_BATCH):
        batch = np.stack([read(clip) for clip in clips[start:start + EMBED_BATCH]])
        embeddings.append(session.run(None, {INPUT_NAME: batch})[0].astype(np.float32))
    return np.vstack(embeddings) if embeddings else np.zeros((0, 0), np.float32)


def _read(clip: str | os.PathLike[str], rate: int, length: int) -> np.ndarray:
    try:
        return read_clip(clip, rate, length)
    except (ValueError, MemoryError) as error:
        raise EdgeclError(f"{clip}: cannot resample to the bundle's {rate} Hz "
                          f"({' '.join(str(error).split())[:120]})") from None


def _label_list(labels: Sequence[str], what: str) -> list[str]:
    for label in labels:
        if not str(label).strip() or len(str(label)) > 200:
            raise EdgeclError(f"{what}: expected a label of 1 to 200 characters, got {label!r}")
    return [str(label) for label in labels]


def fit_bundle_state(bundle: str | os.PathLike[str], clips: Sequence[str | os.PathLike[str]],
                     labels: Sequence[str], *, gamma: float | None = None,
                     weighting: str = "boosted", class_limit: int = DEFAULT_CLASS_LIMIT,
                     holdout: tuple[Sequence[str | os.PathLike[str]], Sequence[str]] | None = None,
                     threads: int = 1, log: Callable[[str], None] | None = None,
                     expansion: int = 0, seed: int = 0) -> dict[str, Any]:
    """Fit the bundle's analytic state to `clips` (WAV paths) of `labels` (the bundle's classes:
    what its phase trained on, its replay memory included) and rewrite the bundle in place with
    it; returns the manifest. gamma None: chosen on a fifth of the clips held out
    (analytic.choose_gamma). `holdout` (clips, labels) adds the accuracy of the analytic head
    before any learning beside the trained head's to the manifest. `expansion` > 0: a random
    ReLU expansion of that width, drawn from `seed` (which also seeds gamma's hold-out)."""
    folder = Path(bundle)
    manifest = verify_bundle(folder)
    if MODEL_EMBEDDING not in manifest["files"]:
        raise EdgeclError(f"{folder}: the bundle has no {MODEL_EMBEDDING}; re-export it with "
                          f"this version of edgecl")
    labels = _label_list(labels, "fit")
    classes = list(manifest["classes"])
    check_fit_classes(labels, classes, class_limit, str(folder))
    rows = class_rows(labels, classes)
    embeddings = embed_clips(folder, manifest, [clips[i] for i in rows], threads)
    state = fit_state(embeddings, [labels[i] for i in rows], [sha256_file(clips[i]) for i in rows],
                      backbone_sha256=manifest["files"][MODEL_EMBEDDING]["sha256"],
                      gamma=gamma, weighting=weighting, class_limit=class_limit,
                      expansion=expansion, seed=seed)
    state.lineage.append(_step("fit", None, list(state.clip_sha256), None, manifest))
    section = state.summary()
    if holdout is not None:
        import onnx

        holdout_embeddings = embed_clips(folder, manifest, holdout[0], threads)
        section["holdout_accuracy"] = holdout_accuracy(
            state.head, holdout_embeddings, trained_head(onnx.load(str(folder / MODEL_FP32))),
            classes, holdout[1])
    files = {name: (folder / name).read_bytes() for name in manifest["files"]}
    files.update(state_files(state, manifest))
    written = write_bundle(folder, files, dict(manifest, analytic=section))
    if log is not None:
        log(f"fit the analytic state of {folder}: {len(rows)} clips, {len(classes)} classes, "
            f"gamma {state.head.gamma:g}, weighting {weighting}, {section['state_bytes_fp32']} "
            f"bytes fp32")
    return written


def check_fit_classes(labels: Sequence[str], classes: Sequence[str], class_limit: int,
                      where: str) -> None:
    """The fit clips must cover exactly the bundle's classes, within the class limit."""
    if sorted(set(labels)) != sorted(classes):
        raise EdgeclError(f"{where}: the fit clips' labels {sorted(set(labels))} must be the "
                          f"bundle's classes {sorted(classes)}")
    if not len(classes) <= class_limit:
        raise EdgeclError(f"--class-limit: {class_limit} is below the bundle's {len(classes)} "
                          f"classes")


def class_rows(labels: Sequence[str], classes: Sequence[str]) -> list[int]:
    """Indices of `labels` grouped class by class in the order of `classes` (the order a state
    learns them in), each class's clips in their given order."""
    return [i for label in classes for i, name in enumerate(labels) if name == label]


def fit_state(embeddings: np.ndarray, labels: Sequence[str], hashes: Sequence[str], *,
              backbone_sha256: str, gamma: float | None, weighting: str, class_limit: int,
              expansion: int = 0, seed: int = 0) -> BundleState:
    """A state fit to clips grouped class by class (class_rows) with their float32 embeddings
    and file sha256, computed with the embedding model of sha256 `backbone_sha256`; gamma None:
    chosen on a held-out fifth (seeded by `seed`, which also draws an expansion's projection).
    No lineage yet."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    order = [str(label) for label in labels]
    if gamma is None:
        gamma = choose_gamma(embeddings, order, seed=seed, expansion=expansion,
                             expansion_seed=seed)
    head, weights = fit_head(embeddings, order, gamma=gamma, weighting=weighting,
                             expansion=expansion, expansion_seed=seed)
    state = BundleState(head=head, backbone_sha256=backbone_sha256, class_limit=int(class_limit))
    for label in dict.fromkeys(order):
        mine = [k for k, name in enumerate(order) if name == label]
        state.add([hashes[k] for k in mine], label, weights[mine], embeddings[mine])
    return state


def state_files(state: BundleState, manifest: dict[str, Any]) -> dict[str, bytes]:
    """The files a state adds to a bundle of `manifest` (its "files" table: which builds it
    holds): analytic.json, and the C head (tflm_head.c_head_files) when the head has no random
    expansion (the C update has none: c_rls refuses it)."""
    files = {ANALYTIC_STATE: state.to_bytes()}
    if not state.head.expansion:
        files.update(c_head_files(manifest, state.head, state.class_limit, state.version))
    return files


def holdout_accuracy(head: AnalyticHead, embeddings: np.ndarray,
                     trained: tuple[np.ndarray, np.ndarray], classes: Sequence[str],
                     labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy of the trained head (`trained`: the fp32 model's own Gemm, weight and bias) and
    of the analytic head, before any learning, on the same held-out embeddings of the bundle's
    classes (`labels` their class names)."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    truth = np.asarray([str(label) for label in labels])
    weight, bias = trained
    by_trained = np.asarray(classes)[np.argmax(embeddings @ weight + bias, axis=1)]
    by_analytic = np.asarray(head.labels)[np.argmax(head.logits(embeddings), axis=1)]
    return {"clips": len(truth), "trained_head": round(float(np.mean(by_trained == truth)), 4),
            "analytic_head": round(float(np.mean(by_analytic == truth)), 4)}


def _step(action: str, label: str | None, clips: list[str], parent: Path | None,
          manifest: dict[str, Any], version: int = 0) -> dict[str, Any]:
    return {"version": version, "action": action, "label": label, "clips": clips,
            "at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "from": None if parent is None else {
                "folder": parent.name, "version": manifest.get("analytic", {}).get("version", 0),
                "manifest_sha256": sha256_file(parent / MANIFEST)}}


def next_version_folder(folder: Path, version: int) -> Path:
    """`phase_3` -> `phase_3.v1`; `phase_3.v1` -> `phase_3.v2` (named by the state's version)."""
    match = _VERSION.match(folder.name)
    base = match.group("base") if match else folder.name
    return folder.with_name(f"{base}.v{version}")


def _load(bundle: str | os.PathLike[str]) -> tuple[Path, dict[str, Any], BundleState]:
    folder = Path(bundle)
    if not (folder / MANIFEST).is_file():
        raise EdgeclError(f"{folder}: not a bundle folder (no {MANIFEST})")
    manifest = verify_bundle(folder)
    return folder, manifest, read_state(folder, manifest)


def learn_bundle(bundle: str | os.PathLike[str], label: str, clips: Sequence[str | os.PathLike[str]], *,
                 out: str | os.PathLike[str] | None = None, threads: int = 1
                 ) -> tuple[Path, dict[str, Any]]:
    """Learn `clips` as `label` (a new class or more of a known one): a new bundle version;
    returns its folder and manifest."""
    folder, manifest, state = _load(bundle)
    (label,) = _label_list([label], "--label")
    if not clips:
        raise EdgeclError("learn: expected at least one clip")
    if label not in state.head.labels and len(state.head.labels) >= state.class_limit:
        raise EdgeclError(f"--label {label}: the bundle holds {len(state.head.labels)} classes, "
                          f"its class limit (the C update's buffers are sized for it)")
    hashes = [sha256_file(clip) for clip in clips]
    known = {sha: name for sha, name in zip(state.clip_sha256, state.clip_labels, strict=True)}
    for clip, sha in zip(clips, hashes, strict=True):
        if sha in known:
            raise EdgeclError(f"{clip}: already learnt (as {known[sha]!r}); forget it first")
    if len(set(hashes)) != len(hashes):
        raise EdgeclError("learn: the same clip is given twice")
    embeddings = embed_clips(folder, manifest, clips, threads)
    weights = state.head.learn(embeddings, label)
    state.add(hashes, label, weights, embeddings)
    return _write_version(folder, manifest, state, "learn", label, hashes, out)


def forget_bundle(bundle: str | os.PathLike[str], *, label: str | None = None,
                  clips: Sequence[str | os.PathLike[str]] = (), out: str | os.PathLike[str] | None = None
                  ) -> tuple[Path, dict[str, Any]]:
    """Remove what was learnt: every clip of `label`, or the given `clips` (of `label` when both
    are given), by the exact downdate; a new bundle version."""
    folder, manifest, state = _load(bundle)
    if label is None and not clips:
        raise EdgeclError("forget: give --label NAME, --clips CLIP..., or both")
    if label is not None and label not in state.head.labels:
        raise EdgeclError(f"--label {label}: not a class of {folder} "
                          f"({', '.join(state.head.labels)})")
    if clips:
        where = {sha: row for row, sha in enumerate(state.clip_sha256)}
        rows = []
        for clip in clips:
            row = where.get(sha256_file(clip))
            if row is None or (label is not None and state.clip_labels[row] != label):
                raise EdgeclError(f"{clip}: not a clip the bundle learnt"
                                  + (f" as {label!r}" if label is not None else ""))
            rows.append(row)
        rows = sorted(set(rows))
    else:
        rows = [row for row, name in enumerate(state.clip_labels) if name == label]
    labels = sorted({state.clip_labels[row] for row in rows})
    remaining = [name for name, n in zip(state.head.labels, state.head.clips, strict=True)
                 if n > sum(1 for row in rows if state.clip_labels[row] == name)]
    if len(remaining) < 1:
        raise EdgeclError(f"forget: that would leave {folder} with no class")
    for name in labels:
        mine = [row for row in rows if state.clip_labels[row] == name]
        state.head.forget(state.embeddings[mine], name,
                          np.asarray([state.clip_weights[row] for row in mine]))
    hashes = [state.clip_sha256[row] for row in rows]
    state.remove(rows)
    return _write_version(folder, manifest, state, "forget", label or ",".join(labels), hashes,
                          out)


def _write_version(folder: Path, manifest: dict[str, Any], state: BundleState, action: str,
                   label: str, hashes: list[str], out: str | os.PathLike[str] | None
                   ) -> tuple[Path, dict[str, Any]]:
    """The new version's files, staged and renamed into place (firmware_export.bundle_folder)."""
    state.version += 1
    target = Path(out) if out is not None else next_version_folder(folder, state.version)
    if target.exists():
        raise EdgeclError(f"{target}: already exists; give another --out folder")
    state.lineage.append(_step(action, label, hashes, folder, manifest, state.version))
    head = state.head
    embedding_bytes = (folder / MODEL_EMBEDDING).read_bytes()
    import onnx

    device = device_model(onnx.load_model_from_string(embedding_bytes), head)
    rate, length = int(manifest["sample_rate"]), int(manifest["clip_samples"])
    files = {MODEL_EMBEDDING: embedding_bytes, MODEL_ANALYTIC: device,
             **state_files(state, manifest), LABELS: (_json(head.labels)).encode("utf-8"),
             C_HEADER: render_c_header(device, head.labels, sample_rate=rate, clip_samples=length,
                                       precision="fp32").encode("utf-8")}
    keep = ("format", "phase", "sample_rate", "clip_samples", "clip_seconds", "frontend", "model",
            "versions", "run")
    learnt = {key: manifest[key] for key in keep if key in manifest}
    onnx_section = dict(manifest.get("onnx", {}), output_shape=["batch", len(head.labels)])
    learnt.update(classes=list(head.labels), n_classes=len(head.labels),
                  device_model=MODEL_ANALYTIC, onnx=onnx_section,
                  head="analytic: the embedding model plus the ridge head learnt on the device "
                       "(fp32)",
                  analytic=state.summary())
    tflm_files, tflm = learnt_tflm(folder, manifest, len(files.get(RLS_STATE, b"")))
    if tflm is not None:
        files.update(tflm_files)
        learnt["tflm"] = tflm
    return target, write_bundle(target, files, learnt)


def device_model(embedding: Any, head: AnalyticHead) -> bytes:
    """model.analytic.onnx: the embedding model (an onnx.ModelProto) with the analytic head,
    folded into one Gemm, or spelt out with its random expansion."""
    if head.expansion:
        from firmware_export.device.expanded_graph import expanded_model

        model = expanded_model(embedding, head)
    else:
        model = analytic_model(embedding, *head.folded(), head.labels)
    data: bytes = model.SerializeToString(deterministic=True)
    return data


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
