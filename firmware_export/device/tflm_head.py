"""How a learnt head runs on a microcontroller: the TFLM embedding model, then the float32
analytic head in C (rls.c) on the dequantized embedding, per clip the mean over its windows.

A bundle exported with `--target tflm` carries the embedding model (model.embedding.tflm.tflite,
firmware_export.tflm.embedding_build) beside its logits model. Once it has an analytic state, its
C head files are rls.h / rls.c (the state as initial values) and rls_state.bin (the same state as
a blob the firmware loads with edgecl_rls_load: a new version reaches the device without a new
firmware build). A learnt version keeps the embedding model, its header and the C front end, and
its manifest's `tflm` section says how its head runs there (`learnt_head`); the trained head's
TFLM logits model stays in the version the chain started from. Torch-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from firmware_export.device.analytic import AnalyticHead
from firmware_export.device.layout import (
    FRONTEND_HEADER,
    FRONTEND_SOURCE,
    MODEL_TFLM_EMBEDDING,
    RLS_HEADER,
    RLS_SOURCE,
    RLS_STATE,
    TFLM_EMBEDDING_HEADER,
)
from firmware_export.tflm.c_rls import render_rls, render_state

LEARNT_FILES = (MODEL_TFLM_EMBEDDING, TFLM_EMBEDDING_HEADER, FRONTEND_HEADER, FRONTEND_SOURCE)
# Copied from the version a learnt one comes from: they describe the embedding model and the
# front end, which learning does not change (the window without the logits model's parity).
_CARRIED = ("embedding", "front_end", "interpreter", "toolchain")
RUNS = ("TFLM embedding model (model.embedding.tflm.tflite, an int8 or int16 embedding) on the C "
        "front end's log-mel of each window, then the float32 analytic head in C (rls.c: "
        "edgecl_rls_predict, the state loaded from rls_state.bin with edgecl_rls_load) on the "
        "dequantized embedding; a clip's score is the mean of its windows' logits")


def has_tflm_embedding(manifest: dict[str, Any]) -> bool:
    """Whether the bundle ships a TFLM embedding model (a TFLM build whose embedding met its
    rule, or a learnt version of one)."""
    return MODEL_TFLM_EMBEDDING in manifest.get("files", {})


def c_head_files(manifest: dict[str, Any], head: AnalyticHead, class_limit: int,
                 version: int) -> dict[str, bytes]:
    """rls.h and rls.c with the head's state, and for a bundle with a TFLM embedding the state
    blob rls_state.bin."""
    header, source = render_rls(head, class_limit)
    files = {RLS_HEADER: header, RLS_SOURCE: source}
    if has_tflm_embedding(manifest):
        files[RLS_STATE] = render_state(head, class_limit, version)
    return files


def learnt_tflm(folder: Path, manifest: dict[str, Any], state_bytes: int
                ) -> tuple[dict[str, bytes], dict[str, Any] | None]:
    """(the TFLM files a learnt version of `folder` carries, its manifest's `tflm` section); no
    files and None when the bundle has no TFLM embedding model."""
    if not has_tflm_embedding(manifest):
        return {}, None
    source = manifest["tflm"]
    embedding = source["embedding"]
    section = {key: source[key] for key in _CARRIED if key in source}
    section["window"] = {key: value for key, value in source.get("window", {}).items()
                         if "_vs_" not in key}
    section.update(
        status="shipped", reason=None, file=MODEL_TFLM_EMBEDDING, bytes=embedding["bytes"],
        sha256=embedding["sha256"], arena_bytes=embedding["arena_bytes"],
        input=embedding["input"], output=embedding["output"], ops=embedding["ops"],
        float_ops=embedding["float_ops"],
        learnt_head={"runs": RUNS, "state": RLS_STATE, "state_bytes": state_bytes,
                     "flash_bytes": embedding["bytes"] + state_bytes,
                     "ram_bytes": embedding["arena_bytes"] + state_bytes,
                     "note": "ram_bytes: the TFLM arena plus the head's state, which rls.c "
                             "keeps in RAM to learn on the device; the trained head's TFLM "
                             "model stays in the version this chain started from"})
    return {name: (folder / name).read_bytes() for name in LEARNT_FILES}, section
