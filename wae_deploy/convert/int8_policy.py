"""The INT8 policy: what is quantized and how, for every target and CPU class.

Every INT8 decision is made here; the code that does the work asks:
    int8_plan        the parts kept in float from the start and NNCF's overflow fix, per target and
                     CPU class, and the manifest's record of why (convert.build, before each INT8 build)
    PRESET           NNCF's preset, the same on every target (convert.quantize)
    float_patterns   the node-name patterns of the parts kept in float (convert.quantize's ignored scope)
    guard_steps      what the accuracy guard keeps in float at each step (convert.build)
    pick_repair      the repair a layer whose weight would be dequantized on every call gets, of
                     WEIGHT_ONLY_REPAIRS (convert.targets.onnxruntime, which times them)
The mechanics stay where they are: NNCF's calls (quantize), Q/DQ graph edits (qdq), and a
runtime's format conversions (TensorRT's signed Q/DQ: targets/tensorrt/onnx_passes), which decide
nothing about what is quantized.
"""

from __future__ import annotations

from dataclasses import dataclass

# Symmetric INT8 with per-channel weights: one calibration serves ONNX Runtime, TensorRT (as a Q/DQ
# ONNX model) and OpenVINO (as an IR with FakeQuantize).
PRESET = "performance"

# What a WAE makes sensitive to INT8, by module name: export names every node after the module that
# made it, a module's own operations "<module>/Op" and its children's "<module>.<child>/Op" (the DWT's
# single convolution is "decomposer/Conv", the WAE's are "decomposer.body.0/Conv").
PARTS = {
    "encoder": r"^decomposer[./]",
    # The encoder's first convolution alone (the DWT's one convolution): it reads the raw image
    # through 3 input channels, where 7-bit weights (the overflow fix below) cost most.
    "encoder-first": r"^decomposer(\.body\.0)?/",
    "high": r"^(high|norm_high)[./]",
    "fusion": r"^fusion[./]",
}
DECOMPOSED = ("wae", "dwt")  # the models that have these parts
# The accuracy guard keeps these in float one more at a time while INT8 costs more than its bound: the
# encoder (its 3- and 16-channel convolutions gain little from INT8 and feed everything), the
# low-energy high-frequency branch, then the fusion head.
GUARD_ORDER = ("encoder-first", "encoder", "high", "fusion")


@dataclass(frozen=True)
class Recipe:
    """How INT8 is built for one CPU class: NNCF's options and the parts kept in float from the start."""

    overflow_fix: bool
    keep_float: tuple[str, ...]
    why: str


# Measured on the Imagenette WAE and VGG16 (benchmarks/int8-isa-avx2.json). Without VNNI, u8 x s8
# products are summed in pairs into 16 bits with saturation (vpmaddubsw): NNCF's default cost the
# WAE 2.0 (ONNX Runtime) and 2.7 (OpenVINO) top-1 on an AVX2 host. 7-bit weights everywhere (the
# overflow fix) cannot saturate and gave back 0.8 / 1.5; the first encoder convolution (3 input
# channels) in float too leaves a drop of 0.8 / 0.7 on val and on 9,169 held-out training photos
# alike (99.1-99.3% of FP32), at about the default's speed. The whole encoder in float was 0.3
# more exact and 15% slower on OpenVINO: the guard's next step when a model needs it. AVX-512
# without VNNI has the same instruction (not measured: no such host yet). With VNNI or AMX the
# products are summed in 32 bits and NNCF's default kept 99%.
_NO_VNNI = Recipe(True, ("encoder-first",), "no VNNI (16-bit saturating INT8 sums): 7-bit weights, the WAE "
                                            "encoder's first convolution in float")
_VNNI = Recipe(False, (), "VNNI/AMX sum INT8 products in 32 bits: NNCF's default recipe")
RECIPES = {"avx2": _NO_VNNI, "avx512": _NO_VNNI, "avx512-vnni": _VNNI, "avx-vnni": _VNNI, "amx": _VNNI}
UNKNOWN = Recipe(True, ("encoder-first",), "unknown CPU class: the no-VNNI recipe, which is safe on any x86")
GPU = Recipe(False, (), "GPU: NNCF's default recipe")


def int8_plan(cpu_class: str | None, decomposition: str | None, keep_float=(), cpu_target: bool = True,
              log=lambda line: None) -> tuple[tuple[str, ...], bool, dict]:
    """-> (parts kept in float, NNCF's overflow fix, the manifest's `quantization`) for one INT8 build.

    `cpu_target`: the CPU class's recipe applies to ONNX Runtime and OpenVINO; a GPU engine gets neither.
    """
    kept = list(keep_float)
    recipe = RECIPES.get(cpu_class, UNKNOWN) if cpu_target else GPU
    if decomposition == "dwt" and "encoder" not in kept:
        # Rounded to INT8, the fixed 9/7 filters no longer sum to zero: the diagonal band passes
        # 0.13 of the image's local mean, which its normalisation then magnifies (Imagenette:
        # -5.2 top-1, -0.7 to -0.9 with the wavelet in float; benchmarks/dwt-int8.json). It is
        # one small grouped convolution, so float costs next to nothing, on every target.
        kept.insert(0, "encoder")
        log("  INT8 keeps the 9/7 wavelet in float (its rounded filters leak the image mean into the high bands)")
    if decomposition in DECOMPOSED:
        kept = [*recipe.keep_float, *kept]
    if cpu_target:
        log(f"  INT8 recipe for {cpu_class or 'an unknown CPU class'}: {recipe.why}")
    return _parts(*kept), recipe.overflow_fix, {"cpu_class": cpu_class if cpu_target else None,
                                                "overflow_fix": recipe.overflow_fix,
                                                "recipe_keep_float": list(recipe.keep_float), "why": recipe.why}


def _parts(*parts: str) -> tuple[str, ...]:
    """`parts` once each, in order; "encoder-first" goes where "encoder" (which holds it) is kept."""
    return tuple(dict.fromkeys(p for p in parts if not (p == "encoder-first" and "encoder" in parts)))


def float_patterns(keep_float) -> list[str]:
    """The node-name patterns of what stays in float: a part's pattern, or the name pattern given."""
    return [PARTS.get(p, p) for p in keep_float]


def guard_steps(keep_float: tuple[str, ...], precision: str, decomposition: str | None) -> list[tuple[str, ...]]:
    """What stays in float at each step of the accuracy guard: `keep_float` (int8_plan's), then, for an
    INT8 WAE or DWT, one part more at a time in GUARD_ORDER."""
    steps = [tuple(keep_float)]
    for part in GUARD_ORDER if precision == "int8" and decomposition in DECOMPOSED else ():
        kept = _parts(*steps[-1], part)
        if kept != steps[-1]:
            steps.append(kept)
    return steps


# A weight-only layer (convert.qdq) has its INT8 weight turned back into FP32 on every call by ONNX
# Runtime. Either repair removes that: the weight folded to FP32 once (FP32's numbers and speed, 4x
# the weight's bytes), or the layer's activation quantized too (an INT8 layer). Which is faster
# depends on the layer and the CPU, so it is measured.
WEIGHT_ONLY_REPAIRS = ("fold-weight", "quantize-activation")


def pick_repair(ms_batch1: dict[str, float]) -> str:
    """The repair a weight-only layer gets: the fastest at batch 1 (`ms_batch1`: median ms) of those after
    which the runtime no longer dequantizes the weight (a repair it undoes is not timed)."""
    return min(ms_batch1, key=ms_batch1.get)
