"""The analytic state a bundle carries (analytic.json): the head (R packed upper triangle, W, the
standardisation, gamma, the weighting, clips and mass per class), every clip it holds (sha256 of
the file, label, the weight it was added with, its embedding: what forgetting needs, so a class
can be taken back out without its recordings), the class limit, the sha256 of the embedding model
it was computed with, the version and the lineage; with a random expansion, its width and seed
(the projection is regenerated from them, firmware_export.device.analytic).

Arrays are stored as little-endian bytes in base64, so the file round-trips exactly and the same
state gives the same bytes (the manifest's sha256 then names the state). numpy only.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecl.errors import EdgeclError
from firmware_export.device.analytic import (
    AnalyticHead,
    check_expansion,
    packed_upper,
    unpack_upper,
)
from firmware_export.device.layout import ANALYTIC_STATE, MANIFEST, MODEL_EMBEDDING, RLS_SOURCE

STATE_FORMAT = 1


def encode_array(array: np.ndarray, dtype: str = "<f8") -> dict[str, Any]:
    data = np.ascontiguousarray(array, dtype=np.dtype(dtype))
    return {"dtype": dtype, "shape": list(data.shape),
            "base64": base64.b64encode(data.tobytes()).decode("ascii")}


def decode_array(entry: dict[str, Any]) -> np.ndarray:
    data = np.frombuffer(base64.b64decode(entry["base64"], validate=True),
                         dtype=np.dtype(entry["dtype"]))
    return data.reshape(entry["shape"]).astype(np.float64 if entry["dtype"] == "<f8"
                                               else data.dtype)


@dataclass
class BundleState:
    """The head plus the clips it holds, in the order they were added."""

    head: AnalyticHead
    backbone_sha256: str
    class_limit: int
    version: int = 0
    clip_sha256: list[str] = field(default_factory=list)
    clip_labels: list[str] = field(default_factory=list)
    clip_weights: list[float] = field(default_factory=list)
    embeddings: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    lineage: list[dict[str, Any]] = field(default_factory=list)

    def add(self, sha256: list[str], label: str, weights: np.ndarray,
            embeddings: np.ndarray) -> None:
        self.clip_sha256 += sha256
        self.clip_labels += [label] * len(sha256)
        self.clip_weights += [float(w) for w in weights]
        self.embeddings = np.vstack([self.embeddings.reshape(-1, self.head.dim),
                                     np.asarray(embeddings, np.float32)])

    def remove(self, rows: list[int]) -> None:
        dropped = set(rows)
        keep = [i for i in range(len(self.clip_sha256)) if i not in dropped]
        self.clip_sha256 = [self.clip_sha256[i] for i in keep]
        self.clip_labels = [self.clip_labels[i] for i in keep]
        self.clip_weights = [self.clip_weights[i] for i in keep]
        self.embeddings = self.embeddings[keep]

    def summary(self) -> dict[str, Any]:
        """The manifest's "analytic" section (the state file is the truth; this describes it)."""
        head = self.head
        return {"state": ANALYTIC_STATE, "version": self.version, "gamma": head.gamma,
                "weighting": head.weighting, "dim": head.dim, "expansion": head.expansion,
                "class_limit": self.class_limit,
                "classes": list(head.labels), "clips_per_class": list(head.clips),
                "mass_per_class": [round(m, 6) for m in head.mass],
                "state_bytes_fp32": head.state_bytes(4),
                "stored_embeddings_bytes": int(self.embeddings.nbytes),
                "c_update": None if head.expansion else RLS_SOURCE,  # c_rls has no expansion
                "backbone": {"file": MODEL_EMBEDDING, "sha256": self.backbone_sha256},
                "lineage": self.lineage}

    def to_bytes(self) -> bytes:
        head = self.head
        document = {
            "format": STATE_FORMAT, "backbone_sha256": self.backbone_sha256,
            "class_limit": self.class_limit, "version": self.version, "gamma": head.gamma,
            "weighting": head.weighting, "labels": head.labels, "clips": head.clips,
            "mass": head.mass, **_expansion_fields(head),
            "mean": encode_array(head.mean), "std": encode_array(head.std),
            "r_packed_upper": encode_array(packed_upper(head.r)), "w": encode_array(head.w),
            "clip_sha256": self.clip_sha256, "clip_labels": self.clip_labels,
            "clip_weights": encode_array(np.asarray(self.clip_weights)),
            "embeddings": encode_array(self.embeddings.reshape(-1, head.dim), "<f4"),
            "lineage": self.lineage}
        return (json.dumps(document, indent=1, ensure_ascii=False) + "\n").encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> BundleState:
        try:
            doc = json.loads(data.decode("utf-8"))
            if doc.get("format") != STATE_FORMAT:
                raise ValueError(f"format {doc.get('format')!r}, expected {STATE_FORMAT}")
            mean, std = decode_array(doc["mean"]), decode_array(doc["std"])
            expansion = check_expansion(doc.get("expansion", 0), "expansion")
            d = (expansion or mean.size) + 1
            head = AnalyticHead(mean=mean, std=std, gamma=float(doc["gamma"]),
                                weighting=str(doc["weighting"]),
                                r=unpack_upper(decode_array(doc["r_packed_upper"]), d),
                                w=decode_array(doc["w"]).reshape(d, -1),
                                labels=list(doc["labels"]), clips=[int(n) for n in doc["clips"]],
                                mass=[float(m) for m in doc["mass"]], expansion=expansion,
                                expansion_seed=int(doc.get("expansion_seed", 0)))
            state = cls(head=head, backbone_sha256=str(doc["backbone_sha256"]),
                        class_limit=int(doc["class_limit"]), version=int(doc["version"]),
                        clip_sha256=list(doc["clip_sha256"]),
                        clip_labels=list(doc["clip_labels"]),
                        clip_weights=decode_array(doc["clip_weights"]).tolist(),
                        embeddings=decode_array(doc["embeddings"]).reshape(-1, mean.size),
                        lineage=list(doc["lineage"]))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, EdgeclError) as error:
            message = " ".join(str(error).split())[:200]
            raise EdgeclError(f"{where}: unreadable analytic state ({message})") from None
        if len(head.labels) != head.w.shape[1] or not (
                len(state.clip_sha256) == len(state.clip_labels) == len(state.clip_weights)
                == len(state.embeddings) == sum(head.clips)):
            raise EdgeclError(f"{where}: inconsistent analytic state (classes, columns and clips "
                              f"disagree)")
        return state


def _expansion_fields(head: AnalyticHead) -> dict[str, int]:
    """The expansion's width and seed, written only when there is one (a state without keeps
    the bytes it had before expansions existed)."""
    if not head.expansion:
        return {}
    return {"expansion": head.expansion, "expansion_seed": head.expansion_seed}


def read_state(folder: Path, manifest: dict[str, Any]) -> BundleState:
    """The state of a verified bundle (its manifest has checked every file's sha256), refused
    when it was computed with another embedding model than the bundle's."""
    if ANALYTIC_STATE not in manifest["files"] or MODEL_EMBEDDING not in manifest["files"]:
        raise EdgeclError(f"{folder}: the bundle carries no analytic state ({ANALYTIC_STATE}); "
                          f"re-export it with this version of edgecl, or fit one on the host "
                          f"(edgecl device fit)")
    state = BundleState.from_bytes((folder / ANALYTIC_STATE).read_bytes(),
                                   str(folder / ANALYTIC_STATE))
    backbone = manifest["files"][MODEL_EMBEDDING]["sha256"]
    if state.backbone_sha256 != backbone:
        raise EdgeclError(f"{folder / ANALYTIC_STATE}: computed with the embedding model "
                          f"{state.backbone_sha256[:16]}..., not this bundle's {MODEL_EMBEDDING} "
                          f"({backbone[:16]}...); it belongs to another bundle")
    if (folder / MANIFEST).is_file() and state.head.labels != manifest.get("analytic", {}).get(
            "classes", state.head.labels):
        raise EdgeclError(f"{folder / MANIFEST}: its analytic classes differ from "
                          f"{ANALYTIC_STATE}'s; the bundle was edited")
    return state
