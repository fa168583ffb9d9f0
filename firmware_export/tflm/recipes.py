"""The TFLM build's quantization recipes, in the order the build tries them until one meets the
parity rule.

1. `int8`: every activation int8 (the build's only recipe before; a phase it ships stops here,
   with the same bytes).
2. `16x8-int8-input`: int8 weights with 16-bit activations (16x8) in every op but those that
   read the graph input, which stay int8 (the quantizer inserts one QUANTIZE from int8 to int16
   after them), so the device front end still gives int8 codes. On an under-trained 50-class
   run the int8 misses came from the backbone's 8-bit activations, not from the head, and the
   ONNX build's 16-bit recipe shipped the phases its 8-bit ones missed.
3. `16x8`: every op in 16x8, the input int16 (zero point 0): the C front end quantizes to int16
   (logmel.h's edgecl_logmel_quantize16) and the runtime feeds int16 codes.

A mixed build with only the noisiest layers in 16 bits (ranked by their activations' 8-bit
SQNR; int8 and int16 tensors alternating, a QUANTIZE at each change) is not among them: its one
trial crashed TFLM's interpreter in the arena search, before that search ran each allocation in a
child process (firmware_export.device.tflm_runtime), and it has not been tried since.

16-bit activations take twice the bytes: the arena grows with the share of 16-bit tensors, and a
recipe over --arena-limit or --flash-limit is not shipped (the build goes on to the next one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from firmware_export.tflm import flatbuffer

# An op's output tensors are renamed TENSOR_PREFIX<index> so that a recipe can name the ops it
# puts in 16 bits by a scope regex (the quantizer matches an op by its output tensors' names).
TENSOR_PREFIX = "edgecl_t"


@dataclass(frozen=True)
class TflmRecipe:
    """Which activations are 16-bit: "none", "all-but-input" or "all"."""

    name: str
    sixteen_bit: str

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "sixteen_bit_activations": self.sixteen_bit,
                "weights": "int8 (per-channel)"}


RECIPES = (
    TflmRecipe("int8", "none"),
    TflmRecipe("16x8-int8-input", "all-but-input"),
    TflmRecipe("16x8", "all"),
)


def recipe_named(name: str) -> TflmRecipe:
    """The recipe called `name`; ValueError naming the recipes for another name."""
    for recipe in RECIPES:
        if recipe.name == name:
            return recipe
    raise ValueError(f"unknown TFLM recipe {name!r}: expected one of "
                     f"{', '.join(r.name for r in RECIPES)}")


def named_outputs(float_model: bytes) -> bytes:
    """`float_model` with every operator output tensor named TENSOR_PREFIX<index> (constants
    inline); the function is unchanged."""
    model = flatbuffer.read(float_model)
    flatbuffer.inline_constants(model, float_model)
    graph = model.subgraphs[0]
    for op in graph.operators:
        for index in op.outputs:
            graph.tensors[index].name = f"{TENSOR_PREFIX}{index}".encode()
    return flatbuffer.write(model)


def input_readers(graph) -> set[int]:
    """Output tensor indices of the ops of `graph` (a flatbuffer subgraph) that read a graph
    input (they keep it int8)."""
    inputs = {int(i) for i in graph.inputs}
    return {int(out) for op in graph.operators if inputs & {int(i) for i in op.inputs}
            for out in op.outputs}


def sixteen_bit_scopes(recipe: TflmRecipe, named_model: bytes) -> tuple[str, ...]:
    """The scope regexes (quantize.int8_tflite's `sixteen_bit_scopes`) of `recipe`'s 16-bit ops:
    none, every op but the input's readers, or all."""
    if recipe.sixteen_bit == "none":
        return ()
    if recipe.sixteen_bit == "all":
        return (".*",)
    if recipe.sixteen_bit == "all-but-input":
        graph = flatbuffer.read(named_model).subgraphs[0]
        keep = input_readers(graph)
        chosen = [int(i) for op in graph.operators for i in op.outputs if int(i) not in keep]
    else:
        raise ValueError(f"unknown 16-bit selection {recipe.sixteen_bit!r}")
    names = "|".join(f"{TENSOR_PREFIX}{index}" for index in sorted(chosen))
    return (f"(?:^|;)(?:{names});",)
