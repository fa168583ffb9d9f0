"""Each sampler's selection rule, checked on small hand-made candidate sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgecl.errors import EdgeclError
from edgecl.samplers import Candidate, SelectionContext, build_sampler, perturbations, sampler_names
from edgecl.samplers.base import evenly_spaced, l2_normalise
from edgecl.samplers.prototype import herding_order
from edgecl.samplers.uncertainty import UncertaintySampler, vote_uncertainty


class IdentityEmbedModel(nn.Module):
    """The SoundClassifier interface with embed = identity on a flattened input and a fixed head
    that scores class 0 by +e0 and class 1 by -e0."""

    def __init__(self, dim: int = 2) -> None:
        super().__init__()
        self.embedding_dim = dim
        self.head = nn.Linear(dim, 2, bias=False)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.weight[0, 0], self.head.weight[1, 0] = 1.0, -1.0

    def frontend(self, waveform):
        return waveform[:, None, None, :]

    def embed(self, logmel):
        return logmel.flatten(1)

    def forward_features(self, logmel):
        embedding = self.embed(logmel)
        return self.head(embedding), embedding

    def forward(self, waveform):
        return self.forward_features(self.frontend(waveform))


def _stack_features(candidates):
    return torch.from_numpy(np.stack([np.asarray(c.load(), np.float32) for c in candidates]))[
        :, None, None, :]


def _context(phase=1, seed=0, model=None):
    return SelectionContext(phase=phase, rng=np.random.default_rng(seed),
                            model=model or IdentityEmbedModel(),
                            features=_stack_features, sample_rate=8000, batch_size=4)


def _candidates(n, n_classes=2, in_memory=0, dim=2):
    rng = np.random.default_rng(123)
    return [Candidate.from_array(f"c{i}", i % n_classes, rng.normal(size=dim).astype(np.float32),
                                 in_memory=i < in_memory) for i in range(n)]


# --- random -----------------------------------------------------------------------------------

def test_random_picks_distinct_candidates_up_to_capacity():
    chosen = build_sampler("random").select(_candidates(20), 7, _context())
    assert len(chosen) == 7 == len(set(chosen))
    assert build_sampler("random").select(_candidates(3), 7, _context()) != []


# --- reservoir --------------------------------------------------------------------------------

def test_reservoir_keeps_every_streamed_clip_with_equal_probability():
    """1,000 clips streamed over 10 phases into 50 slots, 250 runs: each phase's clips should make
    up a tenth of the final memory (chi-square over the ten phases, 9 dof, p = 0.001 -> 27.9)."""
    rng = np.random.default_rng(7)
    capacity, phases, per_phase, runs = 50, 10, 100, 250
    counts = np.zeros(phases)
    for _ in range(runs):
        sampler = build_sampler("reservoir")
        memory: list[int] = []  # stream positions held, in slot order
        for phase in range(phases):
            stream = list(range(phase * per_phase, (phase + 1) * per_phase))
            candidates = ([Candidate.from_array(str(p), 0, None, in_memory=True) for p in memory]
                          + [Candidate.from_array(str(p), 0, None) for p in stream])
            context = SelectionContext(phase, rng)
            chosen = sampler.select(candidates, capacity, context)
            assert len(chosen) <= capacity
            memory = [int(candidates[i].key) for i in chosen]
        assert sampler.seen == phases * per_phase
        np.add.at(counts, np.array(memory) // per_phase, 1)
    expected = runs * capacity / phases
    chi_square = ((counts - expected) ** 2 / expected).sum()
    assert chi_square < 27.9, counts


def test_reservoir_fills_before_replacing_and_keeps_slots():
    sampler = build_sampler("reservoir")
    first = sampler.select(_candidates(3), 5, _context())
    assert first == [0, 1, 2]
    # memory (3 slots) then 2 new clips: all fit, slots unchanged
    assert sampler.select(_candidates(5, in_memory=3), 5, _context()) == [0, 1, 2, 3, 4]


# --- prototype (herding) ----------------------------------------------------------------------

# Worked by hand (unit vectors): mean of x0..x3 = (0.64, 0.52) -> mu = (0.7761, 0.6306).
# step 0: x.mu = 0.776, 0.631, 0.970, 0.922 -> x2
# step 1: normalise(x + x2): x0 -> .976, x1 -> .844, x3 -> .997 -> x3
# step 2: normalise(x + x2 + x3): x0 -> .960, x1 -> .970 -> x1, then x0.
# (Nearest-to-mean alone would give x2, x3, x0, x1.)
HERDING_FEATURES = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.96, 0.28]])


def test_herding_order_matches_hand_computation():
    mu = l2_normalise(HERDING_FEATURES.mean(axis=0))
    assert herding_order(HERDING_FEATURES, mu, 4) == [2, 3, 1, 0]
    assert herding_order(HERDING_FEATURES, mu, 2) == [2, 3]


def test_prototype_normalises_embeddings_and_keeps_class_means():
    scales = [3.0, 0.5, 2.0, 7.0]  # unnormalised embeddings: herding must not care
    candidates = [Candidate.from_array(f"a{i}", 0, (HERDING_FEATURES[i] * s).astype(np.float32))
                  for i, s in enumerate(scales)]
    sampler = build_sampler("prototype")
    assert sampler.select(candidates, 2, _context()) == [2, 3]
    mean = sampler.class_means[0].copy()
    # Next phase: class 0 is old (in memory, herding order kept), class 1 is new.
    memory = [Candidate.from_array(c.key, 0, c.load(), in_memory=True)
              for c in (candidates[2], candidates[3])]
    new = [Candidate.from_array(f"b{i}", 1, np.array([1.0, i], np.float32)) for i in range(3)]
    chosen = sampler.select(memory + new, 2, _context())
    assert chosen[0] == 0 and len(chosen) == 2  # quota 1 per class: head of class 0's order
    assert candidates_targets(memory + new, chosen) == [0, 1]
    np.testing.assert_array_equal(sampler.class_means[0], mean)
    assert 1 in sampler.class_means


def candidates_targets(candidates, chosen):
    return [candidates[i].target for i in chosen]


def test_prototype_quota_is_capacity_over_seen_classes():
    candidates = _candidates(30, n_classes=3)
    chosen = build_sampler("prototype").select(candidates, 10, _context())
    assert [candidates_targets(candidates, chosen).count(t) for t in range(3)] == [3, 3, 3]


# --- uncertainty ------------------------------------------------------------------------------

def test_votes_give_one_minus_top_share():
    predictions = np.array([[1, 1, 1, 1], [1, 2, 1, 2], [0, 1, 2, 3], [3, 3, 0, 3]])
    np.testing.assert_allclose(vote_uncertainty(predictions), [0.0, 0.5, 0.75, 0.25])


def test_evenly_spaced_covers_both_ends():
    assert evenly_spaced(10, 4) == [0, 3, 6, 9]
    assert evenly_spaced(5, 5) == [0, 1, 2, 3, 4]
    assert evenly_spaced(3, 7) == [0, 1, 2]
    assert evenly_spaced(100, 1) == [0]


def test_spread_picks_certain_to_uncertain_per_class_then_fills():
    # class 0: 7 clips with distinct uncertainty; class 1: one clip
    candidates = [Candidate.from_array(f"c{i}", 0, None) for i in range(7)]
    candidates.append(Candidate.from_array("lone", 1, None))
    uncertainty = np.array([0.6, 0.0, 0.5, 0.1, 0.4, 0.2, 0.3, 0.9])
    chosen = UncertaintySampler.spread_by_uncertainty(candidates, uncertainty, 6,
                                                      np.random.default_rng(0))
    # quota 3: class 0 sorted = c1 c3 c5 c6 c4 c2 c0 -> positions 0, 3, 6 = c1, c6, c0
    assert chosen[:3] == [1, 6, 0]
    assert chosen[3] == 7  # class 1's only clip
    assert len(chosen) == 6 and len(set(chosen)) == 6  # two leftover slots filled at random


def test_trim_drops_the_most_uncertain_tail_before_spreading():
    candidates = [Candidate.from_array(f"c{i}", 0, None) for i in range(7)]
    candidates.append(Candidate.from_array("lone", 1, None))
    uncertainty = np.array([0.6, 0.0, 0.5, 0.1, 0.4, 0.2, 0.3, 0.9])
    # trim 0.5: class 0 keeps its 4 most certain (c1 c3 c5 c6), spread 3 over them: c1, c5, c6
    chosen = UncertaintySampler.spread_by_uncertainty(candidates, uncertainty, 6,
                                                      np.random.default_rng(0), trim=0.5)
    assert chosen[:4] == [1, 5, 6, 7]
    assert 0 not in chosen[:3]  # the most uncertain clip is not picked by the spread
    # Never fewer candidates than the quota: trim 0.9 of 7 leaves 1, widened back to 3.
    narrow = UncertaintySampler.spread_by_uncertainty(candidates, uncertainty, 6,
                                                      np.random.default_rng(0), trim=0.9)
    assert narrow[:3] == [1, 3, 5]
    # trim 0 is the full spread (the default's behaviour).
    assert UncertaintySampler.spread_by_uncertainty(
        candidates, uncertainty, 6, np.random.default_rng(0), trim=0.0)[:3] == [1, 6, 0]


def test_soft_uncertainty_orders_confident_draws_first():
    from edgecl.samplers.uncertainty import soft_uncertainty

    confident = np.array([[[9.0, 0.0], [8.0, 0.0]]])
    hesitant = np.array([[[0.3, 0.0], [0.2, 0.0]]])
    split = np.array([[[1.0, 0.0], [0.0, 1.0]]])  # one vote each: class 0 wins the tie
    scores = soft_uncertainty(np.concatenate([confident, hesitant, split]))
    assert scores[0] < scores[1] < 0.5 <= scores[2] < 1
    assert scores[2] == pytest.approx(0.5)


def test_soft_ties_order_equal_votes_without_crossing_vote_levels():
    candidates = [Candidate.from_array(f"f{i}", 0, np.array([s, 1.0], np.float32))
                  for i, s in enumerate((5.0, 0.5, 2.0))]
    # Without noise every vote is unanimous (uncertainty 0): random ties see no difference, soft
    # ties rank by margin (5.0 the most certain, 0.5 the least).
    random_ties = UncertaintySampler("noisytune", k=6, noise_lambda=0.0)
    assert np.all(random_ties.uncertainty(candidates, _context()) == 0.0)
    soft = UncertaintySampler("noisytune", k=6, noise_lambda=0.0, ties="soft")
    scores = soft.uncertainty(candidates, _context())
    assert list(np.argsort(scores)) == [0, 2, 1]
    assert np.all((scores >= 0) & (scores < 1 / 6))  # below the first vote level
    with pytest.raises(EdgeclError, match="--uncert-ties"):
        UncertaintySampler(ties="margin")


def test_trim_option_is_checked_and_named():
    from edgecl.config import RunConfig

    with pytest.raises(EdgeclError, match="--uncert-trim"):
        RunConfig(uncert_trim=0.95)
    with pytest.raises(EdgeclError, match="--uncert-trim"):
        UncertaintySampler(trim=-0.1)
    assert RunConfig(uncert_trim=0.5).default_exp_name() != RunConfig().default_exp_name()
    assert "trim0.5" in RunConfig(uncert_trim=0.5).default_exp_name()
    # The default leaves a run's identity (and its folder name) as before the option existed.
    assert "uncert_trim" not in RunConfig().identity()


def test_noisytune_uncertain_near_the_boundary_and_certain_far_from_it():
    far = [Candidate.from_array(f"f{i}", 0, np.array([5.0, 1.0], np.float32)) for i in range(4)]
    near = [Candidate.from_array(f"n{i}", 1, np.array([1e-3, 1.0], np.float32)) for i in range(4)]
    sampler = UncertaintySampler("noisytune", k=6, noise_lambda=1.0)
    uncertainty = sampler.uncertainty(far + near, _context())
    assert np.all(uncertainty[:4] == 0.0)
    assert np.all(uncertainty[4:] > 0.0)
    quiet = UncertaintySampler("noisytune", k=6, noise_lambda=0.0)
    assert np.all(quiet.uncertainty(far + near, _context()) == 0.0)


def _unit(degrees):
    radians = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(radians), np.sin(radians)], axis=1)


def test_stratum_centres_spread_in_proportion_without_forcing_the_ends():
    from edgecl.samplers.base import stratum_centres

    assert stratum_centres(10, 2) == [2, 7]
    assert stratum_centres(100, 5) == [10, 30, 50, 70, 90]
    assert stratum_centres(3, 7) == [0, 1, 2]
    assert stratum_centres(5, 0) == []


def test_herding_ties_take_levels_in_proportion_and_herd_within_them():
    # class 0: six clips at these angles (class mean at 13.5 degrees), the last one uncertain;
    # class 1: one clip. Quota 3 (capacity 6): strata centres 1, 3 and 5 of the order take two
    # clips at level 0 and one at level 0.5.
    candidates = [Candidate.from_array(f"c{i}", 0, None) for i in range(6)]
    candidates.append(Candidate.from_array("lone", 1, None))
    uncertainty = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.0])
    embeddings = _unit([20, 0, 70, -20, -30, 45, 90])

    def herded(capacity, trim=0.0):
        return UncertaintySampler.spread_by_uncertainty(
            candidates, uncertainty, capacity, np.random.default_rng(0), trim=trim,
            embeddings=embeddings)

    # level 0 by herding: 20 degrees (closest to the mean), then 0 (the pair's mean at 10 lies
    # closest to 13.5); level 0.5: its only clip
    assert herded(6)[:4] == [0, 1, 5, 6]
    # Quota 2: centres 1 and 4 both fall on level 0, where the published ends (0 and 5) would
    # spend one of two slots on the uncertain tail.
    assert herded(4)[:3] == [0, 1, 6]
    published = UncertaintySampler.spread_by_uncertainty(candidates, uncertainty, 4,
                                                         np.random.default_rng(0))
    assert uncertainty[published[1]] == 0.5
    # trim 0.5 cuts inside level 0: the level stays whole (ties have no order to cut by).
    assert herded(6, trim=0.5)[:3] == [0, 1, 3]


def test_herding_ties_on_equal_votes_are_prototype_herding():
    rng = np.random.default_rng(3)
    candidates = [Candidate.from_array(f"c{i}", 0, rng.normal(size=4).astype(np.float32))
                  for i in range(12)]
    features = l2_normalise(np.stack([c.load() for c in candidates]).astype(np.float64))
    expected = herding_order(features, l2_normalise(features.mean(axis=0)), 4)
    sampler = UncertaintySampler("noisytune", k=6, noise_lambda=0.0, ties="herding")
    for phase in (0, 1):  # phase 0 scores nothing; phase 1's noiseless votes all agree
        context = _context(phase=phase, model=IdentityEmbedModel(4))
        assert sampler.select(candidates, 4, context) == expected


def test_herding_ties_avoid_outliers_that_random_ties_let_through():
    # One class: 8 clips in a tight cluster and 2 far outliers, every vote unanimous (no noise),
    # so the published picks are a random choice; herded picks take the cluster.
    rng = np.random.default_rng(5)
    cluster = [np.array([3.0, 1.0 + 0.05 * rng.normal()], np.float32) for _ in range(8)]
    outliers = [np.array([3.0, -4.0], np.float32), np.array([3.0, 6.0], np.float32)]
    candidates = [Candidate.from_array(f"c{i}", 0, x) for i, x in enumerate(cluster + outliers)]
    herding = UncertaintySampler("noisytune", k=6, noise_lambda=0.0, ties="herding")
    published = UncertaintySampler("noisytune", k=6, noise_lambda=0.0)
    published_outliers = 0
    for seed in range(20):
        for phase in (0, 1):
            assert max(herding.select(candidates, 3, _context(phase=phase, seed=seed))) < 8
        published_outliers += max(published.select(candidates, 3, _context(seed=seed))) >= 8
    assert published_outliers > 0


def test_ties_option_is_checked_and_named():
    from edgecl.config import RunConfig

    with pytest.raises(EdgeclError, match="--uncert-ties"):
        RunConfig(uncert_ties="median")
    assert "herd" in RunConfig(uncert_ties="herding").default_exp_name()
    assert "uncert_ties" not in RunConfig().identity()


@pytest.mark.parametrize("metric", ["shift", "noise"])
def test_waveform_metrics_run_k_predictions(metric):
    candidates = _candidates(6, dim=64)
    sampler = UncertaintySampler(metric, k=4)
    predictions = sampler.predictions(candidates, _context(model=IdentityEmbedModel(64)))
    assert predictions.shape == (6, 4)


def test_uncertainty_first_phase_is_class_balanced_random():
    candidates = _candidates(40, n_classes=4)
    chosen = build_sampler("uncertainty").select(candidates, 8, _context(phase=0))
    assert [candidates_targets(candidates, chosen).count(t) for t in range(4)] == [2, 2, 2, 2]


# --- every sampler ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", sampler_names())
@pytest.mark.parametrize("n, capacity", [(5, 8), (30, 8), (30, 0), (31, 30)])
def test_capacity_is_never_exceeded(name, n, capacity):
    sampler = build_sampler(name, {"uncert_metric": "noisytune", "metric_k": 2})
    chosen = sampler.select(_candidates(n, n_classes=3), capacity, _context())
    assert len(chosen) <= capacity and len(set(chosen)) == len(chosen)
    assert all(0 <= i < n for i in chosen)


# --- perturbations ----------------------------------------------------------------------------

def test_pitch_shift_moves_a_tone_by_the_ratio():
    t = torch.arange(8000) / 8000
    tone = torch.sin(2 * torch.pi * 440 * t)[None]
    shifted = perturbations.pitch_shift_by_ratio(tone, 40, 8000)
    assert shifted.shape == tone.shape
    peak_hz = torch.fft.rfft(shifted[0]).abs().argmax().item()  # 1 Hz bins for a 1 s clip
    assert abs(peak_hz - 550) <= 2


def test_time_shift_rolls_and_noise_respects_snr():
    generator = torch.Generator().manual_seed(0)
    waves = torch.randn(8, 400)
    rolled = perturbations.time_shift(waves, generator)
    for a, b in zip(waves, rolled, strict=True):
        assert torch.equal(a.sort().values, b.sort().values)
    noisy = perturbations.coloured_noise(waves, generator)
    noise = noisy - waves
    snr = 10 * torch.log10(waves.pow(2).mean(1) / noise.pow(2).mean(1))
    assert torch.all(snr > 3 - 1e-3) and torch.all(snr < 30 + 1e-3)
