"""Clips and exemplars as feature items: what a phase trains, validates and tests on, and what the
memory update's candidates are made of.

- a dataset clip: its waveform read from disk (source "clip");
- a new training clip, with `code_new_clips` and a lossy memory format: passed through the format's
  encode/decode like the exemplars, so the coding artefacts are not a cue that separates old
  classes (replayed from memory) from new ones (source "coded");
- a replay exemplar: the decoded array of a memory slot (source "memory").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from edgecl.audio import ClipAudio
from edgecl.device import to_device
from edgecl.features import FeatureCache, FeatureItem
from edgecl.training import PhaseData


def clip_key(clip) -> str:
    """A clip's identity (also the key of its exemplar in the replay memory)."""
    return str(clip.path)


class ClipItems:
    """Makes FeatureItems and PhaseData from clips and memory slots, with one feature cache."""

    def __init__(self, audio: ClipAudio, features: FeatureCache, device=None) -> None:
        self.audio, self.features = audio, features
        self.device = device  # where PhaseData's features and targets go (None: stay on CPU)

    def clip(self, clip) -> FeatureItem:
        return FeatureItem(clip_key(clip), "clip", self.audio.loader(clip))

    def new_clip(self, clip, memory=None, code: bool = False) -> FeatureItem:
        """A new training clip; coded in `memory`'s format when `code` and the format is lossy."""
        if memory is None or not code or memory.format.name == "float32":
            return self.clip(clip)
        fmt = memory.format
        if fmt.domain == "waveform":
            return FeatureItem(clip_key(clip), "coded",
                               lambda: fmt.decode(fmt.encode(self.audio.waveform(clip))))
        return FeatureItem(clip_key(clip), "coded",
                           lambda: fmt.decode(fmt.encode(self.logmel(clip))), "logmel")

    def exemplar(self, memory, slot: int) -> FeatureItem:
        """Memory slot `slot` (decoded from its stored format)."""
        return FeatureItem(memory.exemplars[slot].key, "memory", lambda: memory.decode(slot),
                           memory.domain)

    def stale_exemplars(self, before: Sequence[str], after: Sequence[str]) -> list[FeatureItem]:
        """Items of exemplars whose keys left the memory (their cached features can go)."""
        return [FeatureItem(key, "memory", None) for key in set(before) - set(after)]

    def logmel(self, clip) -> np.ndarray:
        """The clip's log-mel features [1, F, T'] (through the cache)."""
        return self.features.get([self.clip(clip)])[0].numpy()

    def loader_in(self, domain: str, clip) -> Callable[[], np.ndarray]:
        """Loads the clip in a memory's domain: its waveform, or its log-mel features."""
        if domain == "waveform":
            return self.audio.loader(clip)
        return lambda: self.logmel(clip)

    def data(self, items: Sequence[FeatureItem], targets: Sequence[int]) -> PhaseData:
        items = list(items)
        targets = torch.as_tensor(list(targets), dtype=torch.long)
        if self.device is None:
            return PhaseData(lambda idx: self.features.get([items[i] for i in idx]), targets)
        return PhaseData(lambda idx: to_device(self.features.get([items[i] for i in idx]),
                                               self.device), targets.to(self.device))

    def clip_data(self, labelled: Sequence) -> PhaseData:
        """PhaseData of LabelledClips read from disk."""
        return self.data([self.clip(lc.clip) for lc in labelled], [lc.target for lc in labelled])
