"""Peak memory of the int8 ONNX build's calibration and sensitivity ranking at the published
scale: BC-ResNet-40, 50 classes, 32 mels, 44.1 kHz 5 s clips (the ESC-50 layout), random
weights and 128 noise clips (the export's MAX_CALIBRATION_CLIPS). Each step runs in its own
process; the table gives its peak RSS, the RSS before it (model, session, clips), its wall time
and its CPU time (the process's, every thread).

    python scripts/bench_int8_memory.py [STEP ...]    # steps: minmax percentile entropy sensitivity

Numbers depend on the machine; compare steps and commits in one run, on one machine.
"""

from __future__ import annotations

import hashlib
import resource
import subprocess
import sys
import time

STEPS = ("minmax", "percentile", "entropy", "sensitivity")
RATE, SECONDS, CLASSES, MELS, CLIPS = 44100, 5, 50, 32, 128


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux


def measure(step: str) -> str:
    import numpy as np
    import torch

    import models
    from firmware_export.export import export_onnx
    from firmware_export.int8_search import sensitivity_ranking
    from firmware_export.quantize import QuantRecipe, prepared_source, quantize_candidate

    torch.manual_seed(0)
    torch.set_num_threads(1)
    config = models.FrontEndConfig.for_sample_rate(RATE, n_mels=MELS)
    model = models.build_model("bc-resnet", CLASSES, config).eval()
    fp32 = export_onnx(model, labels=[str(i) for i in range(CLASSES)], sample_rate=RATE,
                       clip_samples=RATE * SECONDS)
    clips = (0.1 * np.random.default_rng(0).standard_normal((CLIPS, RATE * SECONDS))
             ).astype(np.float32)
    if step == "sensitivity":
        quantized = quantize_candidate(fp32, clips[:16]).proto
    before, start, cpu = peak_gb(), time.perf_counter(), time.process_time()
    if step == "sensitivity":
        ranking = sensitivity_ranking(prepared_source(fp32), quantized, clips)
        digest = hashlib.sha256(",".join(ranking).encode()).hexdigest()[:12]
    else:
        recipe = QuantRecipe(calibration={"minmax": "MinMax", "percentile": "Percentile",
                                          "entropy": "Entropy"}[step])
        digest = hashlib.sha256(quantize_candidate(fp32, clips, recipe=recipe)
                                .proto.SerializeToString()).hexdigest()[:12]
    return (f"| {step} | {peak_gb():.2f} | {before:.2f} | {time.perf_counter() - start:.0f} "
            f"| {time.process_time() - cpu:.0f} | {digest} |")


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--one":
        print(measure(argv[1]))
        return 0
    steps = argv or list(STEPS)
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        print(f"bench_int8_memory: unknown step {unknown[0]!r}; expected {', '.join(STEPS)}",
              file=sys.stderr)
        return 2
    print("| step | peak RSS GB | RSS before the step GB | seconds | CPU seconds | output sha256 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for step in steps:
        done = subprocess.run([sys.executable, __file__, "--one", step], capture_output=True,
                              text=True)
        if done.returncode != 0:
            print(f"| {step} | failed: {done.stderr.strip().splitlines()[-1:]} |")
            continue
        print(done.stdout.strip().splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
