"""Peak resident memory and wall time of each stage of a run's export (the fp32 check, each int8
candidate's quantization and screening, the TFLM build's steps), phase by phase: the figures
`edgecl export` keeps in each phase's cost (edgecl.budget.ram.StagePeaks), as a table.

    python scripts/export_memory_stages.py RUN_DIR [--phase N] [--target tflm] [--threads 1]
        [--base-recipes N]

It re-exports the run's bundles like `edgecl export` (same options). Peaks are per stage (the
kernel's high-water mark, reset as each stage starts), and the highest peak of its child processes
(the fp32 ONNX export's, the TFLM converter's); numbers depend on the machine and its load.
`--base-recipes N` gives the int8 search only its first N base recipes, so a run whose later
recipe would ship still reaches the steps after them (the sensitivity ranking, the mixed
precision candidates, the withheld build's diagnosis); the bundle it writes is then not the one
`edgecl export` writes.
"""

from __future__ import annotations

import argparse
import resource
import sys


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--phase", type=int, default=None)
    parser.add_argument("--target", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--base-recipes", type=int, default=None)
    args = parser.parse_args(argv)
    import torch

    from edgecl.budget import ram
    from firmware_export.run_export import reexport_run

    torch.set_num_threads(args.threads)
    close_stage = ram.StagePeaks._close_stage

    def printing(self) -> None:  # each stage as it ends, so a long export shows its way
        close_stage(self)
        stage = self.stages[-1]
        print(f"  stage '{stage['stage']}': peak RSS {stage['peak_rss_bytes'] / 1e9:.2f} GB, "
              f"{stage['seconds']:.1f} s", flush=True)

    ram.StagePeaks._close_stage = printing  # type: ignore[method-assign]
    if args.base_recipes is not None:
        from firmware_export import int8_search

        defaults = int8_search.search_int8.__kwdefaults__
        defaults["recipes"] = int8_search.BASE_RECIPES[:args.base_recipes]
    manifests = reexport_run(args.run_dir, args.phase, log=print, target=args.target, quiet=True)
    # the child processes (firmware_export.export_process, firmware_export.tflm.converter_process),
    # not in the stages' figures: the highest of them over the whole run
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(f"child processes (fp32 ONNX export, TFLM converter): peak RSS {children / 1e9:.2f} GB")
    for manifest in manifests:
        cost = manifest["cost"]
        print(f"\nphase {manifest['phase']}: {cost['seconds']:.0f} s ({cost['cpu_seconds']:.0f} s "
              f"CPU), peak RSS "
              f"{cost['peak_rss_bytes'] / 1e9:.2f} GB in '{cost['peak_rss_stage']}'\n")
        print("| stage | peak RSS GB | seconds |\n| --- | --- | --- |")
        for stage in cost["stages"]:
            print(f"| {stage['stage']} | {stage['peak_rss_bytes'] / 1e9:.2f} | "
                  f"{stage['seconds']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
