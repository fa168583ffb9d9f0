"""uncertainty: keep clips spread from certain to uncertain, per class (Xiao et al. 2022).

Each candidate gets k predictions under perturbation; its uncertainty is 1 - (votes for the most
voted class) / k. Per seen class the candidates are sorted by uncertainty and `capacity // classes`
evenly spaced ones are kept (from the most certain to the most uncertain); leftover slots are
filled at random. `uncert_trim` F > 0 first drops the most uncertain fraction F of each class's
candidates (keeping at least its quota), so the spread runs from the most certain to the (1 - F)
quantile: at a few exemplars per class the full spread spends one of them on the single most
uncertain clip, often an outlier; F = 0, the default, is the full spread.
`uncert_ties`: with k votes the uncertainty takes k/2 + 1 values at most, and a well-trained model
gives most (on FSDD at noise 0.2: all) training clips zero, so the order is decided by the random
tie-break and the spread is a random choice. `soft` breaks ties by the perturbed softmax instead:
1 - the mean probability of the most voted class over the k draws (the same draws, no extra
cost); `random` (the default) is the published rule. `herding` takes as many exemplars from each
vote level as the centres of `quota` equal strata of the order fall on (a proportional spread:
unlike the published ends, the single most uncertain clip, often an outlier, is not forced in)
and chooses them within the level by iCaRL herding on the embeddings (towards the class's mean
embedding, continuing from the more certain levels' picks) instead of at random. When every clip
ties, as at a few exemplars per class, that is prototype's choice; when the votes
differ, uncertain clips keep their share. It applies in the first phase too (where no uncertainty
is scored: every clip ties) and needs one embedding per candidate, which noisytune computes
anyway. Perturbations (`uncert_metric`):

- shift: k/2 pitch shifts and k/2 time shifts of the waveform;
- noise: k coloured-noise draws added to the waveform;
- noisytune: the embedding is computed once; k times, uniform noise (U[-0.5, 0.5) times
  noise_lambda * std of that clip's embedding) is added and only the classifier head runs.

As in the published code, the first phase (model trained on one task only) fills the memory with a
class-balanced random choice instead (herding ties: with herding).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgecl.errors import EdgeclError
from edgecl.samplers.base import (
    Candidate,
    Sampler,
    SamplerOption,
    SamplerOptions,
    SelectionContext,
    balanced_random,
    class_quota,
    evenly_spaced,
    fill_at_random,
    indices_by_class,
    l2_normalise,
    stratum_centres,
)
from edgecl.samplers.prototype import herding_order
from edgecl.samplers.registry import register_sampler

UNCERT_METRICS = ("shift", "noise", "noisytune")
METRIC_KS = (2, 4, 6)
TIES = ("random", "soft", "herding")
_TIES_LABELS = {"soft": "soft", "herding": "herd"}  # in run names and report labels


def vote_uncertainty(predictions: np.ndarray) -> np.ndarray:
    """[N, k] predicted classes -> [N] uncertainty 1 - (top vote count) / k."""
    predictions = np.asarray(predictions)
    k = predictions.shape[1]
    top = np.array([np.bincount(row).max() for row in predictions], dtype=np.float64)
    return 1.0 - top / k


def soft_uncertainty(logits: np.ndarray) -> np.ndarray:
    """[N, k, C] perturbed logits -> [N] 1 - the mean softmax probability, over the k draws, of
    the most voted class (ties between classes: the lower index), in [0, 1)."""
    logits = np.asarray(logits, dtype=np.float64)
    if len(logits) == 0:
        return np.zeros(0)
    shifted = logits - logits.max(axis=2, keepdims=True)
    probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=2, keepdims=True)
    votes = logits.argmax(axis=2)
    top = np.array([np.bincount(row, minlength=logits.shape[2]).argmax() for row in votes])
    return 1.0 - probabilities[np.arange(len(logits)), :, top].mean(axis=1)


def herded_by_level(features: np.ndarray, mean: np.ndarray, pool: np.ndarray,
                    uncertainty: np.ndarray, picks: np.ndarray) -> list[int]:
    """As many candidates of `pool` from each uncertainty level as `picks` holds, the most
    certain level first, each level's chosen by herding towards `mean` (continuing from the
    previous levels' choices). `features`: [N, D] normalised; indices are candidate indices."""
    chosen: list[int] = []
    total = np.zeros(features.shape[1], dtype=np.float64)
    for level in np.unique(uncertainty[picks]):
        level_pool = pool[uncertainty[pool] == level]
        count = int(np.sum(uncertainty[picks] == level))
        order = [int(level_pool[i]) for i in herding_order(features[level_pool], mean, count,
                                                           total, len(chosen))]
        chosen += order
        total += features[order].sum(axis=0)
    return chosen


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
                      minimum=0, maximum=0.9, left_out_at_default=True),
        SamplerOption("uncert_ties", "random", "How clips with equal vote uncertainty are "
                      "chosen: at random (published), by the perturbed softmax (soft), or by "
                      "herding on the embeddings (herding).", choices=TIES,
                      left_out_at_default=True),
    )

    def __init__(self, metric: str = "noisytune", k: int = 6, noise_lambda: float = 0.2,
                 trim: float = 0.0, ties: str = "random") -> None:
        if metric not in UNCERT_METRICS:
            raise EdgeclError(f"--uncert-metric: expected one of {', '.join(UNCERT_METRICS)}, "
                              f"got {metric!r}")
        if k < 1 or (metric == "shift" and k % 2):
            raise EdgeclError(f"--metric-k: expected a positive number of perturbations (even "
                              f"for shift), got {k}")
        if not 0.0 <= trim <= 0.9:
            raise EdgeclError(f"--uncert-trim: expected a fraction in [0, 0.9], got {trim}")
        if ties not in TIES:
            raise EdgeclError(f"--uncert-ties: expected one of {', '.join(TIES)}, got {ties!r}")
        self.metric, self.k, self.noise_lambda, self.trim = metric, k, noise_lambda, trim
        self.ties = ties
        self.needs_waveform = metric != "noisytune"

    @classmethod
    def from_options(cls, values: SamplerOptions) -> UncertaintySampler:
        defaults = {o.name: o.default for o in cls.options}
        values = {**defaults, **values}
        return cls(values["uncert_metric"], values["metric_k"], values["noise_lambda"],
                   values["uncert_trim"], values["uncert_ties"])

    @classmethod
    def run_name_parts(cls, values: SamplerOptions) -> list[str]:
        trim = values.get("uncert_trim") or 0
        return [values["uncert_metric"], f"k{values['metric_k']}"] + (
            [f"trim{trim:g}"] if trim else []) + (
            [_TIES_LABELS[values.get("uncert_ties", "random")]]
            if values.get("uncert_ties", "random") != "random" else [])

    @classmethod
    def variants(cls) -> list[tuple[str, dict]]:
        return [(f"{cls.name}-{metric}", {"uncert_metric": metric}) for metric in UNCERT_METRICS]

    def update_macs(self, n_candidates, macs, *, clip_samples=0, sample_rate=16000,
                    features_cached=True):
        """noisytune: one embedding per candidate, then the head k times. shift, noise: k full
        forwards per candidate, front end included (the perturbed audio has new features), plus
        `perturbation_macs` per draw, and with herding ties one clean embedding each."""
        frontend = 0 if features_cached else macs.frontend
        if self.metric == "noisytune":
            return n_candidates * (frontend + macs.backbone + self.k * macs.head)
        per_draw = macs.total + self.perturbation_macs(clip_samples, sample_rate)
        clean = frontend + macs.backbone if self.ties == "herding" else 0
        return n_candidates * (self.k * per_draw + clean)

    def perturbation_macs(self, clip_samples, sample_rate):
        from edgecl.samplers import perturbations

        return perturbations.perturbation_macs(self.metric, clip_samples, sample_rate)

    def select(self, candidates, capacity, context):
        if self.ties != "herding":
            if context.phase == 0:
                return balanced_random(candidates, capacity, context)
            uncertainty = self.uncertainty(candidates, context)
            return self.spread_by_uncertainty(candidates, uncertainty, capacity, context.rng,
                                              trim=self.trim)
        embeddings = context.embeddings(candidates)
        uncertainty = (np.zeros(len(candidates)) if context.phase == 0
                       else self.uncertainty(candidates, context, embeddings))
        return self.spread_by_uncertainty(candidates, uncertainty, capacity, context.rng,
                                          trim=self.trim, embeddings=embeddings)

    @staticmethod
    def spread_by_uncertainty(candidates: Sequence[Candidate], uncertainty: np.ndarray,
                              capacity: int, rng: np.random.Generator, trim: float = 0.0,
                              embeddings=None) -> list[int]:
        """Per class, evenly spaced picks along the uncertainty order (over its most certain
        1 - `trim` share, at least the quota); random leftovers. Ties are broken at random (a
        shuffle before a stable sort). Given `embeddings` ([N, D]), herding ties instead: as many
        clips from each uncertainty level as the strata centres fall on, herded."""
        groups = indices_by_class(candidates)
        quota = class_quota(capacity, len(groups))
        features = None if embeddings is None else l2_normalise(
            np.asarray(embeddings, dtype=np.float64))
        chosen: list[int] = []
        for target in sorted(groups):
            members = np.asarray(groups[target])[rng.permutation(len(groups[target]))]
            ordered = members[np.argsort(uncertainty[members], kind="stable")]
            span = max(min(quota, len(ordered)), int(np.ceil(len(ordered) * (1.0 - trim))))
            if features is None:
                chosen += [int(ordered[p]) for p in evenly_spaced(span, quota)]
                continue
            # Herding: the levels the span reaches, whole (ties have no order to cut them by).
            pool = ordered[np.isin(uncertainty[ordered], uncertainty[ordered[:span]])]
            picks = ordered[stratum_centres(span, quota)]
            mean = l2_normalise(features[groups[target]].mean(axis=0))
            chosen += herded_by_level(features, mean, pool, uncertainty, picks)
        return fill_at_random(chosen, len(candidates), capacity, rng)

    def predictions(self, candidates: Sequence[Candidate], context: SelectionContext) -> np.ndarray:
        """[N, k] classes predicted under the k perturbations."""
        return self.perturbed_logits(candidates, context).argmax(axis=2)

    def perturbed_logits(self, candidates: Sequence[Candidate], context: SelectionContext,
                         embeddings=None) -> np.ndarray:
        """[N, k, classes] logits under the k perturbations (noisytune: around `embeddings`
        when given, else the candidates' own)."""
        import torch

        with torch.no_grad():
            return self._logits(candidates, context, embeddings)

    def _logits(self, candidates, context, embeddings=None):
        import torch

        from edgecl.device import device_of

        model = context.model
        model.eval()
        device = device_of(model)
        generator = context.torch_generator()  # on the CPU: the same draws on every device
        if self.metric == "noisytune":
            if embeddings is None:
                embeddings = context.embeddings(candidates)
            return self._noisytune_logits(model, embeddings.to(device), context, generator)
        parts = []
        for batch in context.batches(candidates):
            waveforms = context.waveforms(batch).to(device)  # perturbed where the model runs
            draws = [model(self._perturb(waveforms, draw, context.sample_rate, generator))[0]
                     for draw in range(self.k)]
            parts.append(torch.stack([logits.cpu() for logits in draws], dim=1))
        return self._stacked(parts, model)

    def _stacked(self, parts, model) -> np.ndarray:
        import torch

        if parts:
            return torch.cat(parts).float().numpy()
        return np.zeros((0, self.k, getattr(model.head, "n_classes", 0)), dtype=np.float32)

    def _noisytune_logits(self, model, embeddings, context, generator):
        """The head's logits on k noisy copies of each embedding. The draws are made per
        batch of `context.batch_size` rows, k at a time, whatever batches the embeddings were
        computed in (so a faster embedding pass leaves the draws, and the choice, unchanged)."""
        import torch

        parts = []
        for embedding in context.batches(embeddings):
            amplitude = self.noise_lambda * embedding.std(dim=1, keepdim=True)
            draws = [model.head(embedding + (torch.rand(embedding.shape, generator=generator)
                                             .to(embedding.device) - 0.5) * amplitude)
                     for _ in range(self.k)]
            parts.append(torch.stack([logits.cpu() for logits in draws], dim=1))
        return self._stacked(parts, model)

    def uncertainty(self, candidates: Sequence[Candidate], context: SelectionContext,
                    embeddings=None) -> np.ndarray:
        """[N] vote uncertainty of every candidate (with `ties` soft: plus the soft score / k,
        which orders equal votes and never crosses to the next vote level)."""
        logits = self.perturbed_logits(candidates, context, embeddings)
        votes = vote_uncertainty(logits.argmax(axis=2))
        if self.ties != "soft":
            return votes
        return votes + soft_uncertainty(logits) / self.k

    def _perturb(self, waveforms, draw, sample_rate, generator):
        from edgecl.samplers import perturbations

        if self.metric == "noise":
            return perturbations.coloured_noise(waveforms, generator)
        # shift: alternate pitch and time shifts, k/2 of each (the published order)
        if draw % 2 == 0:
            return perturbations.pitch_shift(waveforms, sample_rate, generator)
        return perturbations.time_shift(waveforms, generator)
