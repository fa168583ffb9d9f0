"""Class-balanced fine-tuning after a phase (EEIL, Castro et al. 2018).

A phase trains on every new clip plus a small memory (at memory 50 on FSDD: 536 new clips against
50 replayed ones), so the classifier and the BatchNorm statistics end up tuned to the newest
classes. After the phase's training, this fine-tunes the whole network for a few epochs at a small
learning rate on a class-balanced set: the memory's exemplars of the old classes plus, per new
class, the same number of its new clips drawn at random (`quota = memory capacity // seen classes`
per class, the share each class will hold in the memory). BatchNorm is recalibrated on that set
too (edgecl.training.loop.fit does it before every validation), so its statistics weigh every
class alike. The epoch kept is chosen on the validation split of the seen classes, as in a phase.

It runs only when there are old classes in a memory (replay mode, phase >= 1). Its steps are a
real training cost on a device: the trainer counts them in the phase's `train_steps` and
`train_macs` and records them under `balanced_finetune` in results.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class BalancedSettings:
    """The options of a run (RunConfig's balanced_* fields): epochs 0 = off."""

    epochs: int = 0
    lr: float = 1e-4

    @classmethod
    def of(cls, config) -> BalancedSettings:
        return cls(config.balanced_epochs, config.balanced_lr)

    @property
    def on(self) -> bool:
        return self.epochs > 0

    def as_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "lr": self.lr}


def balanced_subset(memory_targets: list[int], new_targets: list[int], quota: int,
                    rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """(memory slots, new-clip indices) of a class-balanced set: per old class (a target held by
    the memory and absent from the new clips) up to `quota` of its exemplars in slot order, per
    new class `quota` of its clips at random (all of them when it has fewer). The memory's
    exemplars of new classes (none before the memory update) are not used."""
    new_classes = sorted(set(new_targets))
    slots: list[int] = []
    taken: dict[int, int] = {}
    for slot, target in enumerate(memory_targets):
        if target in new_classes or taken.get(target, 0) >= quota:
            continue
        taken[target] = taken.get(target, 0) + 1
        slots.append(slot)
    clips: list[int] = []
    for target in new_classes:
        members = [i for i, t in enumerate(new_targets) if t == target]
        picks = rng.permutation(len(members))[:quota]
        clips += sorted(members[i] for i in picks)
    return slots, clips


def subset_rng(seed: int, phase: int) -> np.random.Generator:
    """The generator of one phase's draw of new clips: from the seed and phase only, so the run's
    own generator (which the samplers use) draws the same with the option on or off."""
    return np.random.default_rng([int(seed), int(phase), 0xEE1])
