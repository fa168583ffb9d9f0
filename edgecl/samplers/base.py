"""What every sampler sees and declares: candidates, the selection context, the Sampler interface
(its options and its cost estimate) and the helpers the selection rules share.

A sampler is a small object that lives for a whole run (so it can keep state such as reservoir's
seen-count or prototype's class means) and, after each phase, picks which candidates the replay
memory keeps: `select(candidates, capacity, context) -> list of candidate indices`, in the slot
order the memory should hold them (first = highest priority where the sampler has an order).

Candidates are the current memory in slot order followed by the new phase's clips in stream order.

Sampler modules import torch inside the methods that run a model, so reading the registry (the
CLI's --help) stays free of torch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecl.budget.macs import ModelMacs
from edgecl.errors import EdgeclError

if TYPE_CHECKING:  # annotations only: reading the registry must not import torch
    import torch


@dataclass(frozen=True)
class Candidate:
    """A clip the memory may keep. `load()` returns its array in the memory's domain
    (waveform [T] or log-mel [1, F, T']), decoded when it comes from the memory. `item` is its
    edgecl.features.FeatureItem (what `SelectionContext.features` computes log-mels from)."""

    key: str
    target: int
    in_memory: bool
    load: Callable[[], np.ndarray] = field(repr=False, compare=False)
    item: Any = field(default=None, repr=False, compare=False)

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
    - `embed(logmel) -> embedding`: the backbone for embedding passes (the memory update passes
      an eval-only copy, models.inference.InferenceEmbedder); None: `model.embed`.
    - `batch_size`: candidates per batch of perturbed passes (the random draws follow it);
      `embed_batch_size`: per embedding pass (small batches keep the activations in cache:
      about 3x faster per clip than 64 on BC-ResNet at 44.1 kHz 5 s, docs/DESIGN.md).
    """

    phase: int
    rng: np.random.Generator
    model: torch.nn.Module | None = None
    features: Callable[[Sequence[Candidate]], torch.Tensor] | None = None
    domain: str = "waveform"
    sample_rate: int = 16000
    batch_size: int = 64
    embed: Callable[[torch.Tensor], torch.Tensor] | None = None
    embed_batch_size: int = 8

    def torch_generator(self) -> torch.Generator:
        """A torch Generator seeded from `rng`, so perturbations are reproducible."""
        import torch

        return torch.Generator().manual_seed(int(self.rng.integers(0, 2**62)))

    def batches(self, candidates: Sequence, size: int | None = None):
        """Consecutive slices of at most `size` (default batch_size) candidates."""
        size = size or self.batch_size
        for start in range(0, len(candidates), size):
            yield candidates[start:start + size]

    def embeddings(self, candidates: Sequence[Candidate]) -> torch.Tensor:
        """Model embeddings [N, D] of the candidates' (cached) log-mel features, in eval mode,
        through `embed` in batches of `embed_batch_size`."""
        import torch

        from edgecl.device import device_of

        self.model.eval()
        device = device_of(self.model)
        embed = self.embed or self.model.embed
        with torch.no_grad():
            parts = [embed(self.features(batch).to(device)).cpu()
                     for batch in self.batches(candidates, self.embed_batch_size)]
        return torch.cat(parts) if parts else torch.zeros(0, self.model.embedding_dim)

    def waveforms(self, candidates: Sequence[Candidate]) -> torch.Tensor:
        """Stacked waveforms [N, T] (only for a waveform-domain memory)."""
        import torch

        if self.domain != "waveform":
            raise ValueError("waveform perturbations need a waveform-domain memory format")
        return torch.from_numpy(np.stack([np.asarray(c.load(), dtype=np.float32).reshape(-1)
                                          for c in candidates]))


@dataclass(frozen=True)
class SamplerOption:
    """An option a sampler declares: a run-config field, the CLI flag `--<name with dashes>`.
    `choices`, or `minimum` and `maximum` (both inclusive), say which values are valid;
    `left_out_at_default`: added after runs existed, left out of a run's identity at its default
    (edgecl.options.Option)."""

    name: str
    default: Any
    help: str
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    left_out_at_default: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def as_option(self, help_text: str, group: str, *, replay_only: bool = False):
        """This option as an edgecl.options.Option of `edgecl train`, with `help_text` under
        the `group` heading (`replay_only`: a memory's option)."""
        from edgecl.options import Option

        return Option(help_text, group, choices=self.choices, replay_only=replay_only,
                      left_out_at_default=self.left_out_at_default).bound(self.name, self.default)

    def check(self, value: Any) -> None:
        """Raise EdgeclError naming the flag when `value` is not valid."""
        if self.choices is not None and value not in self.choices:
            raise EdgeclError(f"{self.flag}: expected one of "
                              f"{', '.join(str(c) for c in self.choices)}, got {value!r}")
        if self.minimum is not None and not value >= self.minimum:
            raise EdgeclError(f"{self.flag}: expected a number >= {self.minimum}, got {value}")
        if self.maximum is not None and not value <= self.maximum:
            raise EdgeclError(f"{self.flag}: expected a number <= {self.maximum}, got {value}")


#: Option values by option name (a run's config holds every registered sampler's options).
SamplerOptions = Mapping[str, Any]


class Sampler(ABC):
    """A memory-selection rule. Subclasses set `name`, declare their `options` and register with
    @register_sampler (edgecl.samplers.registry); that is all the trainer, CLI and bench need."""

    name: str = ""
    #: The options this rule takes (the keyword arguments of its constructor).
    options: tuple[SamplerOption, ...] = ()
    #: True when the rule perturbs waveforms (it cannot run on a log-mel memory).
    needs_waveform: bool = False

    @classmethod
    def from_options(cls, values: SamplerOptions) -> Sampler:
        """Build from option values (missing ones take their defaults)."""
        return cls(**{o.name: values.get(o.name, o.default) for o in cls.options})

    @classmethod
    def run_name_parts(cls, values: SamplerOptions) -> list[str]:
        """Parts of a run's default name that tell its options apart (none by default)."""
        return []

    @classmethod
    def variants(cls) -> list[tuple[str, dict[str, Any]]]:
        """(label, options) of each configuration `edgecl bench memory-update` times."""
        return [(cls.name, {})]

    @abstractmethod
    def select(self, candidates: Sequence[Candidate], capacity: int,
               context: SelectionContext) -> list[int]:
        """Indices of the candidates to keep (at most `capacity`), in slot order."""

    def get_state(self) -> dict[str, Any]:
        """What this sampler carries from one phase to the next (a resumed run restores it with
        `set_state`): plain ints, floats, strings, lists, dicts and numpy arrays. None by
        default."""
        return {}

    def set_state(self, state: dict[str, Any]) -> None:  # noqa: B027 (optional: stateless default)
        """Restore what `get_state` returned."""

    def update_macs(self, n_candidates: int, macs: ModelMacs, *, clip_samples: int = 0,
                    sample_rate: int = 16000, features_cached: bool = True) -> int:
        """Estimated MACs of one update on `n_candidates` after phase 0; rules that run no model:
        0. `features_cached` says whether unperturbed candidates' log-mels are already computed.
        Phase 0 can cost less (uncertainty picks at random there, as the published method does);
        the trainer's `memory_update_macs` are counted, not taken from this formula."""
        return 0

    def perturbation_macs(self, clip_samples: int, sample_rate: int) -> int:
        """MACs spent producing each perturbed copy that goes through the whole model (the
        trainer adds this per full forward it counts); 0 for rules without perturbations."""
        return 0


# --- helpers shared by the selection rules ---------------------------------------------------

def indices_by_class(candidates: Sequence[Candidate]) -> dict[int, list[int]]:
    """Candidate indices grouped by target, in candidate order."""
    groups: dict[int, list[int]] = defaultdict(list)
    for index, candidate in enumerate(candidates):
        groups[candidate.target].append(index)
    return groups


def class_quota(capacity: int, n_classes: int) -> int:
    """Exemplars per class in a class-balanced memory: capacity // seen classes."""
    return capacity // max(1, n_classes)


def l2_normalise(rows: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    return rows / np.where(norms > 0, norms, 1.0)


def evenly_spaced(n: int, count: int) -> list[int]:
    """`count` distinct positions spread evenly over 0..n-1, both ends included."""
    if count >= n:
        return list(range(n))
    if count <= 0:
        return []
    return [int(i) for i in np.round(np.linspace(0, n - 1, count))]


def stratum_centres(n: int, count: int) -> list[int]:
    """The centre positions of `count` equal strata of 0..n-1 (every position when count >= n):
    a proportional spread that, unlike `evenly_spaced`, does not force both ends in."""
    if count >= n:
        return list(range(n))
    if count <= 0:
        return []
    return [int(i) for i in np.floor((np.arange(count) + 0.5) * n / count)]


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
