"""Would a bf16 embedding pass change the memory update's choices? For docs/results/precision.md.

Trains a replay run's phases 0 and 1 (as `edgecl bench memory-update` does), then runs each
model-based sampler's update of the same memory with the same candidates and the same random
state twice: with the float32 embedding pass (what runs) and with the pass under CPU bf16
autocast (embeddings cast back to float32 for the sampler). Prints the share of identical picks
and the median time of one embedding pass over the candidates in each precision.

    python scripts/precision_memory_picks.py SEED [MEMORY_SIZE] [EPOCHS] [THREADS]
"""

from __future__ import annotations

import copy
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgecl.config import RunConfig
from edgecl.memory_update import embedding_pass_seconds, update_memory, warm_items
from edgecl.samplers import build_sampler
from edgecl.trainer import ContinualRun
from models import inference

# The samplers whose choice goes through the embedding pass (random, reservoir and balanced-random
# use no model; uncertainty shift and noise run the whole model on perturbed waveforms).
EMBEDDING_SAMPLERS = [("kcenter", "kcenter", {}), ("prototype", "prototype", {}),
                      ("uncertainty-noisytune", "uncertainty", {"uncert_metric": "noisytune"}),
                      ("uncertainty-noisytune-herding", "uncertainty",
                       {"uncert_metric": "noisytune", "uncert_ties": "herding"})]


class Bf16Embedder(inference.InferenceEmbedder):
    """The inference copy's pass under bf16 autocast, embeddings back in float32."""

    def __call__(self, logmel):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return super().__call__(logmel).float()


def picks(run, trained, name, options, embedder) -> set:
    from edgecl import memory_update

    memory = run.memory.copy()
    real = memory_update.InferenceEmbedder
    memory_update.InferenceEmbedder = embedder
    try:
        update_memory(memory, build_sampler(name, {**run.config.sampler_options, **options}),
                      warm_items(run.items), trained.new_clips, phase=1,
                      rng=copy.deepcopy(run.rng), model=run.model, model_macs=trained.macs,
                      sample_rate=run.split.sample_rate, clip_samples=run.split.clip_samples,
                      exemplar_shape=run.exemplar_shape(memory.format))
    finally:
        memory_update.InferenceEmbedder = real
    return set(memory.keys())


def pass_seconds(run, trained, embedder, repeats: int = 5) -> float:
    from edgecl import memory_update

    real = memory_update.InferenceEmbedder
    memory_update.InferenceEmbedder = embedder
    try:
        return statistics.median(
            embedding_pass_seconds(run.memory, warm_items(run.items), trained.new_clips,
                                   model=run.model, sample_rate=run.split.sample_rate)[0]
            for _ in range(repeats))
    finally:
        memory_update.InferenceEmbedder = real


def main(seed: int, memory_size: int = 100, epochs: int = 5, threads: int = 1) -> None:
    config = RunConfig(mode="replay", mem_manage="random", memory_size=memory_size,
                       epochs=epochs, patience=0, export=False, quiet=True, seed=seed,
                       threads=threads, workspace="/tmp/precision-picks",
                       exp_name=f"picks-seed{seed}")
    run = ContinualRun(config)
    tasks = run.plan.tasks
    run.records.append(run.run_phase(0, [tasks[0]]))
    trained = run.train_phase(1, [tasks[1]])
    candidates = len(run.memory) + len(trained.new_clips)
    print(f"seed {seed}: memory {memory_size}, {candidates} candidates, model trained "
          f"{epochs} epochs a phase")
    for label, name, options in EMBEDDING_SAMPLERS:
        fp32 = picks(run, trained, name, options, inference.InferenceEmbedder)
        bf16 = picks(run, trained, name, options, Bf16Embedder)
        print(f"  {label}: {len(fp32 & bf16)}/{len(fp32)} picks identical "
              f"({100 * len(fp32 & bf16) / len(fp32):.1f}%)")
    # interleaved, so load on the machine slows both alike
    times = {"fp32": [], "bf16": []}
    for _ in range(3):
        times["fp32"].append(pass_seconds(run, trained, inference.InferenceEmbedder))
        times["bf16"].append(pass_seconds(run, trained, Bf16Embedder))
    fp32, bf16 = (1000 * min(times[p]) / candidates for p in ("fp32", "bf16"))
    print(f"  embedding pass: fp32 {fp32:.3f} ms per candidate, bf16 {bf16:.3f} "
          f"({fp32 / bf16:.2f}x)")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
