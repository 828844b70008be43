"""Compile time: the first call of a 48-layer MLP's training step, from cold.

48 dense layers (32 in, 47 hidden of width 64, 10 out, batch 32). Each timed
call creates a new jitted function and calls it once: tracing, lowering, XLA
compilation and one execution. `jax.clear_caches()` runs (untimed) before
each, so no contender reuses what an earlier one traced or compiled. Model
construction and optimiser initialisation are not timed. Target for blox: at
most 1.15x raw JAX. PyTorch compiles nothing; its row is its first eager step
with a fresh optimiser, for scale (in the table, not the chart).
"""

from dataclasses import replace

import jax

from . import _common as c
from ._common import Result, Settings
from ._mlp import STEP, MLPSpec
from ._rows import timed_row

GROUP = "compile"
SPEC = MLPSpec(in_size=32, width=64, hidden=47, out_size=10, batch=32)

NAMES = [c.RAW, c.BLOX_FILTER_JIT, c.BLOX_EQX_JIT, c.BLOX_CORE, c.EQX, c.NNX, c.TORCH]
TARGETS = {c.BLOX_FILTER_JIT: 1.15, c.BLOX_EQX_JIT: 1.15, c.BLOX_CORE: 1.15}
NOTES = {c.TORCH: "no compilation: first eager step"}


def run(settings: Settings) -> list[Result]:
    """Times the cold first call of every contender's step."""
    contenders = [
        replace(contender, note=NOTES.get(contender.name, contender.note))
        for contender in c.pick(STEP, NAMES, TARGETS)
    ]
    row = "MLP, 48 layers: first train step (trace + compile + run)"
    results = timed_row(
        GROUP, row, SPEC, contenders, settings, unit="ms", cold=True, before_each=jax.clear_caches
    )
    for result in results:
        # Not a compile time: charted, it would squash the bars that are.
        result.plotted = result.contender != c.TORCH
    return results
