"""MAC counting (multiply-accumulates, as counted by `models.profile`).

- One training step on a batch of B clips costs `3 x forward MACs x B`: the backward pass costs about
  twice the forward (one product for the gradient w.r.t. the activations, one for the gradient
  w.r.t. the weights), as in Kaplan et al. 2020, "Scaling Laws for Neural Language Models"
  (training compute C = 6N per token: 2N forward, 4N backward) and Epoch AI's measurement
  "What's the backward-forward FLOP ratio for neural networks?" (Hobbhahn & Sevilla 2021: ~2:1).
  The fixed log-mel front end has no weights: when training runs on cached features it costs
  nothing per step, otherwise it costs one forward per clip (no backward through it).
- A memory update's cost is the forward passes its sampler runs, measured by `ForwardMacCounter`,
  plus the sampler's own estimate of what it spends outside the model (`Sampler.perturbation_macs`);
  `Sampler.update_macs` is the sampler's formula for the whole update.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelMacs:
    """Forward MACs per clip, split as models.profile.macs_breakdown reports them."""

    frontend: int
    backbone: int
    head: int

    @classmethod
    def from_breakdown(cls, breakdown: Mapping[str, int]) -> ModelMacs:
        """From `models.profile.macs_breakdown(model, clip_samples)`."""
        return cls(int(breakdown["frontend"]), int(breakdown["backbone"]), int(breakdown["head"]))

    @classmethod
    def of_model(cls, model, clip_samples: int) -> ModelMacs:
        """Measure a SoundClassifier with models.profile (imports torch)."""
        from models.profile import macs_breakdown

        return cls.from_breakdown(macs_breakdown(model, clip_samples))

    @property
    def total(self) -> int:
        return self.frontend + self.backbone + self.head


def train_step_macs(macs: ModelMacs, batch_size: int, features_cached: bool = True) -> int:
    """MACs of one optimizer step on `batch_size` clips: 3 x trainable forward x batch (+ front end).

    The front end is a fixed transform: 0 when training on cached log-mels, else one forward per clip.
    """
    trainable = macs.backbone + macs.head
    frontend = 0 if features_cached else macs.frontend
    return batch_size * (3 * trainable + frontend)


RESAMPLE_TAPS = 13  # ~2 x lowpass_filter_width (6) + 1 taps per output sample (torchaudio default)


def fft_macs(n: int) -> int:
    """A real FFT of n points: ~2 n log2 n MACs (n/2 log2 n complex butterflies, 4 real MACs each)."""
    return int(2 * n * max(1.0, math.log2(n)))


class ForwardMacCounter:
    """Measures the forward MACs a SoundClassifier really runs inside a `with` block.

    Forward hooks count the clips (batch rows) through the front end, the backbone and the head;
    MACs = clips x that part's MACs per clip. `full_forwards` counts waveform-in calls of the whole
    model: during a memory update those are the perturbed copies (`perturbation_macs` each).
    Measuring beats a formula here: e.g. the uncertainty sampler fills phase 0 at random.
    """

    def __init__(self, model, macs: ModelMacs) -> None:
        self.model, self.per_clip = model, macs
        self.clips = {"frontend": 0, "backbone": 0, "head": 0}
        self.full_forwards = 0
        self._handles: list = []

    def __enter__(self) -> ForwardMacCounter:
        def counter(part: str):
            def hook(_module, inputs) -> None:
                if part == "model":
                    self.full_forwards += int(inputs[0].shape[0])
                else:
                    self.clips[part] += int(inputs[0].shape[0])
            return hook

        for part in self.clips:
            self._handles.append(getattr(self.model, part).register_forward_pre_hook(counter(part)))
        self._handles.append(self.model.register_forward_pre_hook(counter("model")))
        return self

    def __exit__(self, *exc_info) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def count(self, part: str, clips: int) -> None:
        """Count `clips` rows through `part` that ran elsewhere (e.g. log-mels read from the
        feature store stand for front-end runs a device would make)."""
        self.clips[part] += int(clips)

    @property
    def macs(self) -> int:
        """Forward MACs counted so far."""
        return sum(self.clips[part] * getattr(self.per_clip, part) for part in self.clips)

    def macs_with_perturbations(self, per_full_forward: int) -> int:
        """Forward MACs plus `per_full_forward` (a perturbation's cost) per whole-model call."""
        return self.macs + self.full_forwards * per_full_forward

