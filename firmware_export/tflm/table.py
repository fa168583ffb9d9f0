"""`python -m firmware_export.tflm.table RUN_DIR...`: the TFLM figures of every phase bundle of
runs exported with --target tflm, as a Markdown table (read from the manifests; no torch).

Columns: flatbuffer and arena bytes, float-op count, TFLM top-1 agreement and accuracy against the
fp32 ONNX model on the held-out clips, the verdict, and the network against the DCASE 2024 Task 1
complexity limits (128 K parameters, counted as int8 bytes, and 30 MMAC per second of audio for
the backbone and head, front end excluded), then the window: its length and count per clip, and
for a windowed build the top-1 agreement of the fp32 network on the windows (pooled) with the
fp32 ONNX model on the whole clip (the window's own cost) and of TFLM with that (int8's own),
and the embedding model's flatbuffer and arena (what a learnt head runs on).

`--recipes`: one row per phase and quantization recipe the build tried (firmware_export.tflm.
recipes), in order: its input type, flatbuffer and arena bytes, TFLM top-1 agreement with the
fp32 network (on the same windows for a windowed build; "-" when a screen stopped it early) and
its verdict.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DCASE_MAX_PARAMETERS = 128 * 1024
DCASE_MAX_MACS_PER_SECOND = 30e6
HEADER = ("| run | phase | classes | held-out clips | flatbuffer | arena | float ops | TFLM top-1 "
          "agreement | TFLM / fp32 accuracy | TFLM | parameters (DCASE <= 128 K) | backbone + "
          "head MMAC/s (DCASE <= 30) | window | fp32 windowed / whole agreement | TFLM / fp32 "
          "windowed agreement | embedding model (flatbuffer / arena) |\n" + "| --- " * 16 + "|")


def row(run: str, manifest: dict) -> str:
    section = manifest["tflm"]
    figures = section["parity_vs_fp32"]["batch_1"]
    macs = manifest["model"]["macs_breakdown"]
    per_second = (macs["backbone"] + macs["head"]) / manifest["clip_seconds"]
    parameters = manifest["model"]["parameters"]
    verdict = section["status"] + (f" ({section['reason']})" if section["reason"] else "")
    return (f"| {run} | {manifest['phase']} | {manifest['n_classes']} | {figures['clips']} | "
            f"{section['bytes'] / 1024:.0f} KiB | {section['arena_bytes'] / 1024:.0f} KiB | "
            f"{section['float_ops']} | {100 * figures['top1_agreement']:.1f}% | "
            f"{figures['accuracy']:.1f}% / {figures['accuracy_reference']:.1f}% | {verdict} | "
            f"{parameters:,} ({100 * parameters / DCASE_MAX_PARAMETERS:.0f}%) | "
            f"{per_second / 1e6:.1f} ({100 * per_second / DCASE_MAX_MACS_PER_SECOND:.0f}%) | "
            f"{window_cells(section.get('window'))} | {embedding_cell(section.get('embedding'))} |")


def embedding_cell(embedding: dict | None) -> str:
    """The embedding model's sizes ("61 KiB / 53 KiB", then its recipe when it is not int8), its
    verdict when withheld, "-" when the bundle has none (built before it existed, or its logits
    model was withheld)."""
    if not embedding:
        return "-"
    sizes = f"{embedding['bytes'] / 1024:.0f} KiB / {embedding['arena_bytes'] / 1024:.0f} KiB"
    recipe = embedding.get("recipe", {}).get("name", "int8")  # before its recipes: int8
    if recipe != "int8":
        sizes += f", {recipe}"
    return sizes if embedding["status"] == "shipped" else f"withheld ({embedding['reason']})"


def window_cells(window: dict | None) -> str:
    """The window columns: "1 s x 5 | 97.0% | 98.2%", or "whole clip | - | -"."""
    if not window or window["per_clip"] == 1:
        return "whole clip | - | -"
    return (f"{window['seconds']:g} s x {window['per_clip']} | "
            f"{100 * window['fp32_windowed_vs_whole']['top1_agreement']:.1f}% | "
            f"{100 * window['tflm_vs_fp32_windowed']['top1_agreement']:.1f}%")


RECIPES_HEADER = ("| run | phase | classes | recipe | input | flatbuffer | arena | TFLM top-1 "
                  "agreement | verdict |\n" + "| --- " * 9 + "|")


def recipe_rows(run: str, manifest: dict) -> list[str]:
    """The --recipes rows of one phase (a bundle from before the recipe search: none)."""
    rows = []
    for tried in manifest["tflm"].get("recipes_tried", []):
        agreement = tried["top1_agreement"]
        verdict = "meets the rule" if tried["reason"] is None else f"misses ({tried['reason']})"
        rows.append(f"| {run} | {manifest['phase']} | {manifest['n_classes']} | {tried['name']} "
                    f"| {tried['input']} | {tried['bytes']:,} B | {tried['arena_bytes']:,} B | "
                    f"{'-' if agreement is None else f'{100 * agreement:.1f}%'} | {verdict} |")
    return rows


def manifests(run_dir: Path) -> list[dict]:
    """The phase bundles' manifests of a run with a TFLM section, by phase."""
    found = []
    for path in sorted((p for p in run_dir.glob("phase_*/manifest.json")
                        if p.parent.name.split("_", 1)[1].isdigit()),  # not phase_<i>.v<N>
                       key=lambda p: int(p.parent.name.split("_")[1])):
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if "tflm" in manifest:
            found.append(manifest)
    return found


def table(run_dirs: list[Path], recipes: bool = False) -> str:
    lines = [RECIPES_HEADER if recipes else HEADER]
    for run_dir in run_dirs:
        for manifest in manifests(run_dir):
            if recipes:
                lines += recipe_rows(run_dir.name, manifest)
            else:
                lines.append(row(run_dir.name, manifest))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    recipes = "--recipes" in argv
    argv = [name for name in argv if name != "--recipes"]
    if not argv:
        print("usage: python -m firmware_export.tflm.table [--recipes] RUN_DIR...",
              file=sys.stderr)
        return 2
    missing = [name for name in argv if not Path(name).is_dir()]
    if missing:
        print(f"{missing[0]}: run folder not found", file=sys.stderr)
        return 2
    print(table([Path(name) for name in argv], recipes))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
