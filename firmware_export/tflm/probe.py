"""`python -m firmware_export.tflm.probe --sample-rate R --clip-seconds S [--width W]
[--classes C] [--n-mels N] [--recipe R] [--plain-norm]`: what the TFLM build of a BC-ResNet
costs at an input size (in a recipe of firmware_export.tflm.recipes: `int8` by default; the 16x8
ones hold 16-bit activations, so their arena is larger), without a dataset or training:
flatbuffer bytes, the arena TFLM allocates and how it divides (the planner's activations, the
persistent per-operator data), the activation floor of the graph's operator order (no memory plan
needs less for the activations), the float-op count and the largest activation tensors. These
depend on the architecture and input shape, not on trained values, so an untrained network
calibrated on noise gives them; its norms get random statistics and affine terms first (fresh
ones fold to all-zero biases, which the converter stores once and which would make the file
smaller than a trained one's). Accuracy needs a trained run (firmware_export.tflm.table).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from firmware_export.tflm.recipes import RECIPES, recipe_named


def probe(sample_rate: int, clip_seconds: float, width: int, n_classes: int = 10,
          calibration_clips: int = 4, n_mels: int = 64, fold_norms: bool = True,
          model_name: str = "bc-resnet", recipe: str = "int8") -> dict:
    import torch

    import models
    from firmware_export.device.logmel import LogMelPlan
    from firmware_export.device.tflm_runtime import arena_split, find_arena
    from firmware_export.tflm import flatbuffer
    from firmware_export.tflm.build import convert_tflite

    torch.manual_seed(0)
    config = models.FrontEndConfig.for_sample_rate(sample_rate, n_mels=n_mels)
    model = models.build_model(model_name, n_classes, config, width=width).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for norm in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            size = norm.num_features
            norm.running_mean.copy_(0.1 * torch.randn(size, generator=generator))
            norm.running_var.copy_(1 + torch.rand(size, generator=generator))
            norm.weight.copy_(1 + 0.1 * torch.randn(size, generator=generator))
            norm.bias.copy_(0.1 * torch.randn(size, generator=generator))
    clip_samples = round(sample_rate * clip_seconds)
    noise = np.random.default_rng(0).standard_normal((calibration_clips, clip_samples))
    plan = LogMelPlan.from_config(config.to_dict(), clip_samples)
    model_bytes = convert_tflite(model, plan, (0.1 * noise).astype(np.float32), fold_norms,
                                 recipe=recipe_named(recipe))
    sizes = sorted(flatbuffer.activation_bytes(flatbuffer.read(model_bytes)).values(),
                   reverse=True)
    from models.profile import count_parameters, macs_breakdown

    macs = macs_breakdown(model, clip_samples)
    arena = find_arena(model_bytes)
    return {"sample_rate": sample_rate, "clip_samples": clip_samples, "width": width,
            "recipe": recipe,
            "parameters": count_parameters(model),
            "backbone_head_macs_per_second": round((macs["backbone"] + macs["head"])
                                                   / clip_seconds),
            "input": [1, 1, plan.n_mels, plan.n_frames], "flatbuffer_bytes": len(model_bytes),
            "arena_bytes": arena, **{f"arena_{part}_bytes": size for part, size
                                     in arena_split(model_bytes, arena).items()},
            "activation_floor_bytes": flatbuffer.activation_floor(model_bytes)["bytes"],
            "float_ops": len(flatbuffer.float_operators(model_bytes)),
            "largest_activations_bytes": sizes[:3]}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m firmware_export.tflm.probe")
    parser.add_argument("--sample-rate", type=int, required=True)
    parser.add_argument("--clip-seconds", type=float, required=True)
    parser.add_argument("--width", type=int, default=40)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--n-mels", type=int, default=64, help="log-mel bins (a multiple of 32)")
    parser.add_argument("--recipe", default="int8", choices=[r.name for r in RECIPES],
                        help="quantization recipe (firmware_export.tflm.recipes)")
    parser.add_argument("--plain-norm", action="store_true",
                        help="keep SubSpectralNorm as reshape + multiply-add (the shipped build "
                             "folds it into per-band depthwise convs)")
    arguments = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    figures = probe(arguments.sample_rate, arguments.clip_seconds, arguments.width,
                    n_classes=arguments.classes, n_mels=arguments.n_mels,
                    fold_norms=not arguments.plain_norm, recipe=arguments.recipe)
    print(" ".join(f"{key}={value}" for key, value in figures.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
