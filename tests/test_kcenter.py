"""The k-center greedy sampler: its rule on hand-made embeddings, and that every entry point sees
it from its one file (the trainer, `edgecl train`, `edgecl bench memory-update`)."""

from __future__ import annotations

import json

import numpy as np
import torch
from click.testing import CliRunner

from edgecl.budget.macs import ModelMacs
from edgecl.cli import main
from edgecl.samplers import Candidate, SelectionContext, build_sampler, sampler_names
from edgecl.samplers.kcenter import farthest_first


class FlatEmbed(torch.nn.Module):
    """embed = the candidate's array itself."""

    embedding_dim = 2

    def embed(self, features):
        return features.flatten(1)


def _context(seed=0):
    def features(batch):
        return torch.from_numpy(np.stack([np.asarray(c.load(), np.float32) for c in batch]))

    return SelectionContext(phase=1, rng=np.random.default_rng(seed), model=FlatEmbed(),
                            features=features, batch_size=4)


def _candidates(points, targets):
    return [Candidate.from_array(f"c{i}", t, np.asarray(p, np.float32))
            for i, (p, t) in enumerate(zip(points, targets, strict=True))]


def test_farthest_first_covers_the_clusters():
    # three tight clusters on the unit circle; three picks take one from each
    angles = [0.0, 0.05, 0.1, 2.0, 2.05, 4.0, 4.1, 4.05]
    points = np.array([[np.cos(a), np.sin(a)] for a in angles])
    chosen = farthest_first(points, 3, [0])
    assert chosen[0] == 0 and {angles[i] // 2 for i in chosen} == {0.0, 1.0, 2.0}
    everything = farthest_first(points, 20, [1])
    assert everything[0] == 1 and sorted(everything) == list(range(8))
    assert farthest_first(points, 0, [1]) == []


def test_each_class_keeps_its_quota_spread_over_its_embeddings():
    rng = np.random.default_rng(1)
    # class 0: two far clusters; class 1: one cluster
    points = np.concatenate([rng.normal([1, 0], 0.01, (6, 2)), rng.normal([-1, 0], 0.01, (6, 2)),
                             rng.normal([0, 1], 0.01, (6, 2))])
    targets = [0] * 12 + [1] * 6
    chosen = build_sampler("kcenter").select(_candidates(points, targets), 4, _context())
    assert len(chosen) == 4 == len(set(chosen))
    class0 = [i for i in chosen if targets[i] == 0]
    assert len(class0) == 2 and {i < 6 for i in class0} == {True, False}  # one per cluster


def test_leftover_slots_and_fewer_slots_than_classes():
    points = np.random.default_rng(2).normal(size=(9, 2))
    targets = [0, 1, 2] * 3
    candidates = _candidates(points, targets)
    chosen = build_sampler("kcenter").select(candidates, 7, _context())
    assert len(chosen) == 7 == len(set(chosen))
    assert all(sum(targets[i] == t for i in chosen) >= 2 for t in range(3))
    assert len(build_sampler("kcenter").select(candidates, 2, _context())) == 2
    assert build_sampler("kcenter").select(candidates, 0, _context()) == []


def test_deterministic_given_the_rng():
    points = np.random.default_rng(3).normal(size=(30, 2))
    candidates = _candidates(points, [i % 3 for i in range(30)])
    first = build_sampler("kcenter").select(candidates, 9, _context(seed=5))
    assert first == build_sampler("kcenter").select(candidates, 9, _context(seed=5))


def test_cost_is_one_embedding_per_candidate():
    macs = ModelMacs(frontend=1000, backbone=200, head=10)
    sampler = build_sampler("kcenter")
    assert sampler.update_macs(50, macs) == 50 * 200
    assert sampler.update_macs(50, macs, features_cached=False) == 50 * 1200


def _tiny(manifest, workspace):
    return ["--dataset", "manifest", "--data-root", str(manifest), "--workspace", str(workspace),
            "--width", "8", "--epochs", "1", "--threads", "1", "--quiet"]


def test_train_and_bench_see_the_sampler(tiny_manifest, tmp_path):
    manifest = tiny_manifest
    assert "kcenter" in sampler_names()
    runner = CliRunner()
    assert "kcenter" in runner.invoke(main, ["train", "--help"]).output
    result = runner.invoke(main, ["train", *_tiny(manifest, tmp_path), "--batch-size", "8",
                                  "--no-export", "--mem-manage", "kcenter", "--memory-size", "6",
                                  "--n-tasks", "2", "--exp-name", "k"])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "k" / "results.json").read_text())
    assert results["config"]["mem_manage"] == "kcenter"
    assert [sum(b.values()) for b in results["memory_balance"]] == [6, 6]
    assert results["phases"][1]["memory_update_macs"] > 0

    bench = runner.invoke(main, ["bench", "memory-update", *_tiny(manifest, tmp_path / "b"),
                                 "--memory-size", "6", "--n-tasks", "2", "--metric-k", "2",
                                 "--json"])
    assert bench.exit_code == 0, bench.output
    assert "kcenter" in [row["sampler"] for row in json.loads(bench.output)]
