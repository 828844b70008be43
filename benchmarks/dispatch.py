"""Dispatch-bound: a tiny MLP (32-64-64-10, batch 32), where per-call overhead dominates.

Two rows. The forward row's baseline is raw JAX under `jax.jit`; it also times
the same dict-of-arrays forward run op by op, blox's eager `model(x)` with no
jit at all (target: at most 1.5x the jitted baseline), and every jitted form.
The train-step row is one Adam step (target for `nn.filter_jit`: at most 1.25x
raw JAX).
"""

from . import _common as c
from ._common import Result, Settings
from ._mlp import FORWARD, STEP, MLPSpec
from ._rows import timed_row

GROUP = "dispatch"
SPEC = MLPSpec(in_size=32, width=64, hidden=2, out_size=10, batch=32)

_FORWARD_NAMES = [
    c.RAW,
    c.RAW_EAGER,
    c.BLOX_EAGER,
    c.BLOX_EAGER_NOCHECK,
    c.BLOX_FILTER_JIT,
    c.BLOX_EQX_JIT,
    c.BLOX_CORE,
    c.EQX,
    c.NNX,
    c.NNX_CACHED,
    c.TORCH,
]
_STEP_NAMES = [
    c.RAW,
    c.BLOX_FILTER_JIT,
    c.RAW_EQX,
    c.BLOX_EQX_JIT,
    c.BLOX_CORE,
    c.EQX,
    c.NNX,
    c.NNX_CACHED,
    c.TORCH,
]


def run(settings: Settings) -> list[Result]:
    """Times the forward row, then the train-step row."""
    forward = c.pick(FORWARD, _FORWARD_NAMES, {c.BLOX_EAGER: 1.5})
    step = c.pick(STEP, _STEP_NAMES, {c.BLOX_FILTER_JIT: 1.25})
    return [
        *timed_row(GROUP, "MLP 32-64-64-10, b32: forward", SPEC, forward, settings),
        *timed_row(GROUP, "MLP 32-64-64-10, b32: Adam train step", SPEC, step, settings),
    ]
