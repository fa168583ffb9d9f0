"""What every sampler sees: candidates, the selection context, and the Sampler interface.

A sampler is a small object that lives for a whole run (so it can keep state such as reservoir's
seen-count or prototype's class means) and, after each phase, picks which candidates the replay
memory keeps: `select(candidates, capacity, context) -> list of candidate indices`, in the slot
order the memory should hold them (first = highest priority where the sampler has an order).

Candidates are the current memory in slot order followed by the new phase's clips in stream order.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass(frozen=True)
class Candidate:
    """A clip the memory may keep. `load()` returns its array in the memory's domain
    (waveform [T] or log-mel [1, F, T']), decoded when it comes from the memory."""

    key: str
    target: int
    in_memory: bool
    load: Callable[[], np.ndarray] = field(repr=False, compare=False)

    @classmethod
    def from_array(cls, key: str, target: int, array: np.ndarray, in_memory: bool = False):
        """A candidate around an array already in RAM (tests, benchmarks)."""
        return cls(key, int(target), in_memory, lambda: array)


@dataclass
class SelectionContext:
    """Everything a sampler may use besides the candidates.

    - `model`: the trained SoundClassifier (eval mode is set by the helpers below).
    - `features(candidates) -> Tensor [N, 1, F, T']`: log-mel features, from the feature cache.
    - `domain`: the memory's domain; waveform perturbations need "waveform".
    - `rng`: numpy Generator for every random choice, seeded by the trainer.
    """

    phase: int
    seen_classes: list[int]
    new_classes: list[int]
    rng: np.random.Generator
    model: torch.nn.Module | None = None
    features: Callable[[Sequence[Candidate]], torch.Tensor] | None = None
    domain: str = "waveform"
    sample_rate: int = 16000
    batch_size: int = 64
    log: Callable[[str], None] = lambda message: None

    def torch_generator(self) -> torch.Generator:
        """A torch Generator seeded from `rng`, so perturbations are reproducible."""
        return torch.Generator().manual_seed(int(self.rng.integers(0, 2**62)))

    def batches(self, candidates: Sequence[Candidate]):
        """Consecutive slices of at most batch_size candidates."""
        for start in range(0, len(candidates), self.batch_size):
            yield candidates[start:start + self.batch_size]

    @torch.no_grad()
    def embeddings(self, candidates: Sequence[Candidate]) -> torch.Tensor:
        """Model embeddings [N, D] of the candidates' (cached) log-mel features, in eval mode."""
        self.model.eval()
        parts = [self.model.embed(self.features(batch)) for batch in self.batches(candidates)]
        return torch.cat(parts) if parts else torch.zeros(0, self.model.embedding_dim)

    def waveforms(self, candidates: Sequence[Candidate]) -> torch.Tensor:
        """Stacked waveforms [N, T] (only for a waveform-domain memory)."""
        if self.domain != "waveform":
            raise ValueError("waveform perturbations need a waveform-domain memory format")
        return torch.from_numpy(np.stack([np.asarray(c.load(), dtype=np.float32).reshape(-1)
                                          for c in candidates]))


class Sampler(ABC):
    """A memory-selection rule. Subclasses set `name` and register with @register_sampler."""

    name: str = ""
    #: True when the rule perturbs waveforms (it cannot run on a log-mel memory).
    needs_waveform: bool = False
    #: True when the rule needs the trained model (embeddings or predictions).
    needs_model: bool = False

    @classmethod
    def from_options(cls, options: "SamplerOptions") -> "Sampler":
        """Build from the run's sampler options; most samplers take none."""
        return cls()

    @abstractmethod
    def select(self, candidates: Sequence[Candidate], capacity: int,
               context: SelectionContext) -> list[int]:
        """Indices of the candidates to keep (at most `capacity`), in slot order."""


@dataclass(frozen=True)
class SamplerOptions:
    """Options a sampler may read (the uncertainty sampler's perturbation settings)."""

    uncert_metric: str = "noisytune"
    metric_k: int = 6
    noise_lambda: float = 0.2


def indices_by_class(candidates: Sequence[Candidate]) -> dict[int, list[int]]:
    """Candidate indices grouped by target, in candidate order."""
    groups: dict[int, list[int]] = defaultdict(list)
    for index, candidate in enumerate(candidates):
        groups[candidate.target].append(index)
    return groups


def class_quota(capacity: int, n_classes: int) -> int:
    """Exemplars per class in a class-balanced memory: capacity // seen classes."""
    return capacity // max(1, n_classes)


def fill_at_random(chosen: list[int], n_candidates: int, capacity: int,
                   rng: np.random.Generator) -> list[int]:
    """Append random unchosen candidates until `capacity` (or the candidates) run out."""
    room = capacity - len(chosen)
    if room <= 0:
        return chosen
    taken = set(chosen)
    rest = [i for i in range(n_candidates) if i not in taken]
    extra = rng.permutation(len(rest))[:room]
    return chosen + [rest[i] for i in extra]


def balanced_random(candidates: Sequence[Candidate], capacity: int,
                    context: SelectionContext) -> list[int]:
    """Per seen class, `capacity // classes` candidates at random, then random leftovers
    (the published code's "equal class sampling")."""
    groups = indices_by_class(candidates)
    quota = class_quota(capacity, len(groups))
    chosen: list[int] = []
    for target in sorted(groups):
        members = groups[target]
        picks = context.rng.permutation(len(members))[:quota]
        chosen += [members[i] for i in picks]
    return fill_at_random(chosen, len(candidates), capacity, context.rng)
