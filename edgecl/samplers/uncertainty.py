"""uncertainty: keep clips spread from certain to uncertain, per class (Xiao et al. 2022).

Each candidate gets k predictions under perturbation; its uncertainty is 1 - (votes for the most
voted class) / k. Per seen class the candidates are sorted by uncertainty and `capacity // classes`
evenly spaced ones are kept (from the most certain to the most uncertain); leftover slots are
filled at random. `uncert_trim` F > 0 first drops the most uncertain fraction F of each class's
candidates (keeping at least its quota), so the spread runs from the most certain to the (1 - F)
quantile: at a few exemplars per class the full spread spends one of them on the single most
uncertain clip, often an outlier (issue 14); F = 0, the default, is the full spread. Perturbations (`uncert_metric`):

- shift: k/2 pitch shifts and k/2 time shifts of the waveform;
- noise: k coloured-noise draws added to the waveform;
- noisytune: the embedding is computed once; k times, uniform noise (U[-0.5, 0.5) times
  noise_lambda * std of that clip's embedding) is added and only the classifier head runs.

As in the published code, the first phase (model trained on one task only) fills the memory with a
class-balanced random choice instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgecl.errors import EdgeclError
from edgecl.samplers.base import (Candidate, Sampler, SamplerOption, SamplerOptions,
                                  SelectionContext, balanced_random, class_quota, evenly_spaced,
                                  fill_at_random, indices_by_class)
from edgecl.samplers.registry import register_sampler

UNCERT_METRICS = ("shift", "noise", "noisytune")
METRIC_KS = (2, 4, 6)


def vote_uncertainty(predictions: np.ndarray) -> np.ndarray:
    """[N, k] predicted classes -> [N] uncertainty 1 - (top vote count) / k."""
    predictions = np.asarray(predictions)
    k = predictions.shape[1]
    top = np.array([np.bincount(row).max() for row in predictions], dtype=np.float64)
    return 1.0 - top / k


@register_sampler
class UncertaintySampler(Sampler):
    name = "uncertainty"
    options = (
        SamplerOption("uncert_metric", "noisytune", "Perturbation of the uncertainty sampler.",
                      choices=UNCERT_METRICS),
        SamplerOption("metric_k", 6, "Perturbed predictions per clip.", choices=METRIC_KS),
        SamplerOption("noise_lambda", 0.2, "noisytune noise amplitude, times the embedding's std.",
                      minimum=0),
        SamplerOption("uncert_trim", 0.0, "Drop this most uncertain fraction of each class's "
                      "candidates before the evenly spaced picks (0 = the full spread).",
                      minimum=0, maximum=0.9),
    )

    def __init__(self, metric: str = "noisytune", k: int = 6, noise_lambda: float = 0.2,
                 trim: float = 0.0) -> None:
        if metric not in UNCERT_METRICS:
            raise EdgeclError(f"--uncert-metric: expected one of {', '.join(UNCERT_METRICS)}, "
                              f"got {metric!r}")
        if k < 1 or (metric == "shift" and k % 2):
            raise EdgeclError(f"--metric-k: expected a positive number of perturbations (even "
                              f"for shift), got {k}")
        if not 0.0 <= trim <= 0.9:
            raise EdgeclError(f"--uncert-trim: expected a fraction in [0, 0.9], got {trim}")
        self.metric, self.k, self.noise_lambda, self.trim = metric, k, noise_lambda, trim
        self.needs_waveform = metric != "noisytune"

    @classmethod
    def from_options(cls, values: SamplerOptions) -> "UncertaintySampler":
        defaults = {o.name: o.default for o in cls.options}
        values = {**defaults, **values}
        return cls(values["uncert_metric"], values["metric_k"], values["noise_lambda"],
                   values["uncert_trim"])

    @classmethod
    def run_name_parts(cls, values: SamplerOptions) -> list[str]:
        trim = values.get("uncert_trim") or 0
        return [values["uncert_metric"], f"k{values['metric_k']}"] + (
            [f"trim{trim:g}"] if trim else [])

    @classmethod
    def variants(cls) -> list[tuple[str, dict]]:
        return [(f"{cls.name}-{metric}", {"uncert_metric": metric}) for metric in UNCERT_METRICS]

    def update_macs(self, n_candidates, macs, *, clip_samples=0, sample_rate=16000,
                    features_cached=True):
        """noisytune: one embedding per candidate, then the head k times. shift, noise: k full
        forwards per candidate, front end included (the perturbed audio has new features), plus
        `perturbation_macs` per draw."""
        if self.metric == "noisytune":
            frontend = 0 if features_cached else macs.frontend
            return n_candidates * (frontend + macs.backbone + self.k * macs.head)
        per_draw = macs.total + self.perturbation_macs(clip_samples, sample_rate)
        return n_candidates * self.k * per_draw

    def perturbation_macs(self, clip_samples, sample_rate):
        from edgecl.samplers import perturbations

        return perturbations.perturbation_macs(self.metric, clip_samples, sample_rate)

    def select(self, candidates, capacity, context):
        if context.phase == 0:
            return balanced_random(candidates, capacity, context)
        uncertainty = self.uncertainty(candidates, context)
        return self.spread_by_uncertainty(candidates, uncertainty, capacity, context.rng,
                                          trim=self.trim)

    @staticmethod
    def spread_by_uncertainty(candidates: Sequence[Candidate], uncertainty: np.ndarray,
                              capacity: int, rng: np.random.Generator,
                              trim: float = 0.0) -> list[int]:
        """Per class, evenly spaced picks along the uncertainty order (over its most certain
        1 - `trim` share, at least the quota); random leftovers. Ties are broken at random (a
        shuffle before a stable sort)."""
        groups = indices_by_class(candidates)
        quota = class_quota(capacity, len(groups))
        chosen: list[int] = []
        for target in sorted(groups):
            members = np.asarray(groups[target])[rng.permutation(len(groups[target]))]
            ordered = members[np.argsort(uncertainty[members], kind="stable")]
            span = max(min(quota, len(ordered)), int(np.ceil(len(ordered) * (1.0 - trim))))
            chosen += [int(ordered[p]) for p in evenly_spaced(span, quota)]
        return fill_at_random(chosen, len(candidates), capacity, rng)

    def predictions(self, candidates: Sequence[Candidate], context: SelectionContext) -> np.ndarray:
        """[N, k] classes predicted under the k perturbations."""
        import torch

        with torch.no_grad():
            return self._predictions(candidates, context)

    def _predictions(self, candidates, context):
        import torch

        from edgecl.device import device_of

        model = context.model
        model.eval()
        device = device_of(model)
        generator = context.torch_generator()  # on the CPU: the same draws on every device
        if self.metric == "noisytune":
            return self._noisytune_predictions(model, context.embeddings(candidates).to(device),
                                               context, generator)
        parts = []
        for batch in context.batches(candidates):
            waveforms = context.waveforms(batch)
            draws = [model(self._perturb(waveforms, draw, context.sample_rate, generator)
                           .to(device))[0] for draw in range(self.k)]
            parts.append(torch.stack([logits.argmax(dim=1).cpu() for logits in draws], dim=1))
        return torch.cat(parts).numpy() if parts else np.zeros((0, self.k), dtype=np.int64)

    def _noisytune_predictions(self, model, embeddings, context, generator):
        """The head's predictions on k noisy copies of each embedding. The draws are made per
        batch of `context.batch_size` rows, k at a time, whatever batches the embeddings were
        computed in (so a faster embedding pass leaves the draws, and the choice, unchanged)."""
        import torch

        parts = []
        for embedding in context.batches(embeddings):
            amplitude = self.noise_lambda * embedding.std(dim=1, keepdim=True)
            draws = [model.head(embedding + (torch.rand(embedding.shape, generator=generator)
                                             .to(embedding.device) - 0.5) * amplitude)
                     for _ in range(self.k)]
            parts.append(torch.stack([logits.argmax(dim=1).cpu() for logits in draws], dim=1))
        return torch.cat(parts).numpy() if parts else np.zeros((0, self.k), dtype=np.int64)

    def uncertainty(self, candidates: Sequence[Candidate], context: SelectionContext) -> np.ndarray:
        """[N] vote uncertainty of every candidate."""
        return vote_uncertainty(self.predictions(candidates, context))

    def _perturb(self, waveforms, draw, sample_rate, generator):
        from edgecl.samplers import perturbations

        if self.metric == "noise":
            return perturbations.coloured_noise(waveforms, generator)
        # shift: alternate pitch and time shifts, k/2 of each (the published order)
        if draw % 2 == 0:
            return perturbations.pitch_shift(waveforms, sample_rate, generator)
        return perturbations.time_shift(waveforms, generator)
