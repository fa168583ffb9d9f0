"""The int8 search's screening (firmware_export.int8_search.HeldOut): a candidate is dropped as soon
as the clips seen make the agreement rule miss on every clip, the fp32 logits are computed once per
batch size, and a candidate that passes gets parity.measure's figures."""

from __future__ import annotations

import numpy as np
import pytest

from firmware_export import parity
from firmware_export.int8_search import HeldOut, SearchResult, _closest, spread_order

N_CLASSES = 5


def _clips(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Waveforms whose first N_CLASSES samples are the fp32 'logits', and their targets."""
    rng = np.random.default_rng(seed)
    targets = np.arange(n) % N_CLASSES
    waveforms = rng.normal(size=(n, 16)).astype(np.float32)
    waveforms[np.arange(n), targets] += 3.0
    return waveforms, targets


class CountingRunner:
    """logits = the first N_CLASSES samples; top-1 swapped with the runner-up on `flip` clips
    (identified by a marker value in sample 15); counts the clips it was given."""

    def __init__(self, flip: np.ndarray | None = None) -> None:
        self.flip, self.clips = flip, 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.clips += len(batch)
        logits = batch[:, :N_CLASSES].copy()
        if self.flip is not None:
            for row, clip_id in enumerate(batch[:, 15].astype(int)):
                if self.flip[clip_id]:
                    first, second = np.argsort(logits[row])[::-1][:2]
                    logits[row, [first, second]] = logits[row, [second, first]]
        return logits


def _tagged(n: int) -> tuple[np.ndarray, np.ndarray]:
    waveforms, targets = _clips(n)
    waveforms[:, 15] = np.arange(n)  # the clip's index, for CountingRunner's flips
    return waveforms, targets


@pytest.mark.parametrize("n_clips", [80, 500, 2000])
def test_a_certain_miss_is_exactly_a_miss_of_the_whole_set(n_clips):
    """The early stop is exact: `differ` changed clips make the agreement rule miss on n clips
    whatever the other clips do iff the whole set with just those changes misses."""
    for differ in range(0, n_clips // 10):
        reference = np.tile([[4.0, 0.0]], (n_clips, 1))
        candidate = reference.copy()
        candidate[:differ] = [0.0, 4.0]
        figures = parity.compare(reference, candidate, np.zeros(n_clips, np.int64))
        misses = figures["top1_agreement"] < parity.INT8_MIN_AGREEMENT and \
            figures["agreement_p_value"] < parity.SIGNIFICANCE
        assert parity.agreement_miss_certain(differ, n_clips) == misses, differ
    assert parity.agreement_miss_certain(n_clips // 10, n_clips)


def test_spread_order_gives_every_prefix_the_classes_in_turn():
    targets = np.repeat(np.arange(4), [5, 3, 5, 2])  # sorted by class, unbalanced
    order = spread_order(targets)
    assert sorted(order.tolist()) == list(range(len(targets)))
    assert targets[order][:8].tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert targets[order][-4:].tolist() == [0, 2, 0, 2]


def test_a_bad_candidate_is_dropped_early_and_a_good_one_measured_in_full():
    waveforms, targets = _tagged(600)
    fp32 = CountingRunner()
    held_out = HeldOut(fp32, waveforms, targets)

    bad = CountingRunner(flip=np.arange(600) % 5 == 0)  # 20% of the clips change their top-1
    figures, failures, agrees = held_out.screen(bad)
    assert list(figures) == ["batch_32"] and failures
    assert len(agrees) == figures["batch_32"]["clips"]
    assert int(np.sum(~agrees)) == figures["batch_32"]["top1_disagreements"]
    assert figures["batch_32"]["screened_of"] == 600
    assert bad.clips == figures["batch_32"]["clips"] < 600  # no batch-1 pass, stopped early
    assert "agreement" in failures[0]

    good = CountingRunner(flip=np.arange(600) == 7)  # one clip: no miss
    figures, failures, agrees = held_out.screen(good)
    assert not failures and list(figures) == ["batch_1", "batch_32"]
    assert good.clips == 2 * 600 and all("screened_of" not in f for f in figures.values())
    assert len(agrees) == 600 and int(np.sum(~agrees)) == 1
    expected = parity.measure(CountingRunner(), good, waveforms, targets)
    for batch, measured in figures.items():
        assert measured == pytest.approx(expected[batch], rel=1e-12, abs=1e-12), batch

    # The fp32 logits were computed once per batch size over the two candidates.
    assert fp32.clips == 2 * 600
    assert held_out.measure(bad)["batch_32"]["clips"] == 600 and fp32.clips == 2 * 600


def _failed(agrees: list[bool]) -> SearchResult:
    return SearchResult(model=None, figures={}, failures=["miss"], float_share=0.0,
                        agrees=np.array(agrees))


def test_the_closest_failure_is_judged_on_the_clips_every_candidate_saw():
    """A screen that ran longer must not look better for clips the others never reached: A kept
    60 of the 64 clips all saw, B only 58 but all 64 it saw later (raw agreement 95.3% > 93.8%)."""
    a = _failed([True] * 60 + [False] * 4)
    b = _failed([False] * 6 + [True] * 58 + [True] * 64)
    assert _closest([b, a]) is a
    tie = _failed([True] * 60 + [False] * 4 + [True] * 64)
    assert _closest([a, tie]) is a  # ties keep the earlier (cheaper) candidate
