"""The training set of a phase: its new clips (passed through a lossy memory format when the run
codes them too, edgecl.items.ClipItems.new_clip) followed by the replay memory's exemplars."""

from __future__ import annotations


def training_items(items, new_clips: list, memory, code_new_clips: bool) -> tuple[list, list]:
    """(feature items, targets) of the new clips (LabelledClips) and the memory's exemplars
    (none without a memory), in that order; `items` is the run's edgecl.items.ClipItems."""
    chosen = [items.new_clip(lc.clip, memory, code_new_clips) for lc in new_clips]
    targets = [lc.target for lc in new_clips]
    if memory is not None:
        chosen += [items.exemplar(memory, slot) for slot in range(len(memory))]
        targets += [exemplar.target for exemplar in memory]
    return chosen, targets
