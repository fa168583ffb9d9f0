"""The replay memory: at most `capacity` exemplars, each stored in an exemplar format.

The memory keeps its exemplars in slot order. A sampler sees the memory (in slot order) followed by
the new phase's clips as one candidate list and returns the indices to keep, in the order they
should occupy the slots; `update` then re-encodes nothing that was already stored.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgecl.errors import EdgeclError


@dataclass(frozen=True)
class Exemplar:
    """One stored clip: its key (the clip's identity), class target and encoded payload."""

    key: str
    target: int
    encoded: Any


def capacity_for_budget(budget_bytes: int, fmt, shape: Sequence[int], n_classes: int) -> int:
    """How many exemplars of `shape` fit in `budget_bytes` in format `fmt` (an ExemplarFormat or
    its name): `budget_bytes // fmt.nbytes(shape)`.

    Raises EdgeclError ("impossible budget") when that is fewer than one exemplar per class:
    pass the number of classes the run will ever see, so the run fails before training.
    """
    from edgecl.memory.formats import get_format

    fmt = get_format(fmt) if isinstance(fmt, str) else fmt
    shape = tuple(int(size) for size in shape)
    per_exemplar = fmt.nbytes(shape)
    capacity = int(budget_bytes) // per_exemplar
    if capacity < n_classes:
        raise EdgeclError(
            f"--memory-bytes: impossible budget: {budget_bytes} bytes hold {capacity} {fmt.name} "
            f"exemplars of {per_exemplar} bytes (shape {list(shape)}), fewer than one per class "
            f"for {n_classes} classes; expected at least {per_exemplar * n_classes} bytes")
    return capacity


class ReplayMemory:
    """A bounded list of exemplars in one storage format.

    `fmt` is an ExemplarFormat (edgecl.memory.formats): encode(array) -> Encoded,
    decode(Encoded) -> float32 array, `domain` ("waveform" or "logmel").
    """

    def __init__(self, capacity: int, fmt) -> None:
        if capacity < 0:
            raise EdgeclError(f"--memory-size: expected a capacity >= 0, got {capacity}")
        self.capacity = int(capacity)
        self.format = fmt
        self._exemplars: list[Exemplar] = []

    @classmethod
    def from_budget(cls, budget_bytes: int, fmt, shape: Sequence[int],
                    n_classes: int = 1) -> ReplayMemory:
        """A memory holding as many exemplars of `shape` as fit in `budget_bytes` (see
        `capacity_for_budget`, which fails when that is fewer than one per class)."""
        return cls(capacity_for_budget(budget_bytes, fmt, shape, n_classes), fmt)

    def __len__(self) -> int:
        return len(self._exemplars)

    def __iter__(self):
        return iter(self._exemplars)

    @property
    def exemplars(self) -> list[Exemplar]:
        return list(self._exemplars)

    @property
    def domain(self) -> str:
        return self.format.domain

    def keys(self) -> list[str]:
        return [exemplar.key for exemplar in self._exemplars]

    def decode(self, index: int) -> np.ndarray:
        """The stored array of slot `index`, decoded to float32."""
        return self.format.decode(self._exemplars[index].encoded)

    def stored_bytes(self) -> int:
        """Bytes the payloads occupy (what a device would store)."""
        return sum(int(exemplar.encoded.nbytes) for exemplar in self._exemplars)

    def update(self, chosen: Sequence[int], new_items: Sequence[tuple[str, int, Any]]) -> None:
        """Refill the memory from a sampler's choice.

        Candidate index i < len(self) is the current slot i; index len(self) + j is new_items[j],
        a (key, target, array_or_loader) triple where array_or_loader is the array in the memory's
        domain or a zero-argument callable returning it (only called for chosen clips).
        """
        if len(chosen) > self.capacity:
            raise EdgeclError(f"replay memory: sampler chose {len(chosen)} exemplars for a capacity "
                              f"of {self.capacity}")
        if len(set(chosen)) != len(chosen):
            raise EdgeclError("replay memory: sampler chose the same candidate twice")
        n_old = len(self._exemplars)
        refilled = []
        for index in chosen:
            if not 0 <= index < n_old + len(new_items):
                raise EdgeclError(f"replay memory: sampler chose candidate {index}, out of range")
            if index < n_old:
                refilled.append(self._exemplars[index])
                continue
            key, target, payload = new_items[index - n_old]
            array = payload() if callable(payload) else payload
            refilled.append(Exemplar(key, int(target), self.format.encode(np.asarray(array))))
        self._exemplars = refilled

    def copy(self) -> ReplayMemory:
        """A memory with the same capacity, format and exemplars (exemplars are immutable)."""
        twin = ReplayMemory(self.capacity, self.format)
        twin._exemplars = list(self._exemplars)
        return twin

    def resize(self, capacity: int) -> None:
        """Change the capacity; shrinking keeps the first slots (samplers order by priority)."""
        self.capacity = int(capacity)
        del self._exemplars[self.capacity:]

    def class_balance(self, class_names: Sequence[str] | None = None) -> dict[str, int]:
        """Exemplars per class, keyed by class name (or str(target)), in target order."""
        counts = Counter(exemplar.target for exemplar in self._exemplars)
        name = (lambda t: class_names[t]) if class_names is not None else str
        return {name(target): counts[target] for target in sorted(counts)}
