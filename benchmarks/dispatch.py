"""Dispatch-bound: a tiny MLP (32-64-64-10, batch 32), where per-call overhead dominates.

Four rows: the forward and one Adam train step, each timed twice. The blocked
rows synchronise on every call (`jax.block_until_ready`), so a call pays its
whole latency; the pipelined rows dispatch a loop of calls back to back and
block once at the end, as a training loop runs (the step chains its
parameters and optimiser state, so each step really depends on the one
before). Pipelined, JAX overlaps the next call's Python-side work with the
current call's compute, so what a library adds per call is what limits it.

The forward rows' baseline is raw JAX under `jax.jit`; they also time the same
dict-of-arrays forward run op by op, blox's eager `model(x)` with no jit at
all, and every jitted form. Targets: blox's eager forward at most 1.10x raw
`jax.jit` blocked and 1.05x pipelined; `nn.filter_jit`'s Adam step at most
1.05x raw `jax.jit` in both modes.

Every row also times a second copy of the baseline (`RAW_AGAIN`: the same
code, built and compiled again): its ratio to the baseline, 1.00x in a
perfect harness, shows how far two identical programs drift apart in this
run, the scale on which to read blox's few percent.
"""

from dataclasses import replace

from . import _common as c
from ._common import Result, Settings
from ._mlp import FORWARD, STEP, MLPSpec
from ._rows import timed_row

GROUP = "dispatch"
SPEC = MLPSpec(in_size=32, width=64, hidden=2, out_size=10, batch=32)
FORWARD_ROW = "MLP 32-64-64-10, b32: forward"
STEP_ROW = "MLP 32-64-64-10, b32: Adam train step"
PIPELINED = ", pipelined"  # the suffix of a row timed without blocking per call

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
_AGAIN = "the baseline's code, built and timed as a second contender: the harness's spread"
# The largest ratio to raw jax.jit blox aims for, per row: (blocked, pipelined).
FORWARD_TARGETS = (1.10, 1.05)
STEP_TARGETS = (1.05, 1.05)


def run(settings: Settings) -> list[Result]:
    """Times the forward and train-step rows, blocked, then pipelined.

    Both modes of a row time the same programs (`c.reused`), built once.
    """
    results: list[Result] = []
    forwards: dict[str, c.Program] = {}
    steps: dict[str, c.Program] = {}
    for pipelined, suffix in ((False, ""), (True, PIPELINED)):
        forward = c.pick(FORWARD, _FORWARD_NAMES, {c.BLOX_EAGER: FORWARD_TARGETS[pipelined]})
        step = c.pick(STEP, _STEP_NAMES, {c.BLOX_FILTER_JIT: STEP_TARGETS[pipelined]})
        forward.insert(1, replace(FORWARD[c.RAW], name=c.RAW_AGAIN, note=_AGAIN))
        step.insert(1, replace(STEP[c.RAW], name=c.RAW_AGAIN, note=_AGAIN))
        rows = ((FORWARD_ROW, c.reused(forward, forwards)), (STEP_ROW, c.reused(step, steps)))
        for row, contenders in rows:
            results += timed_row(
                GROUP, row + suffix, SPEC, contenders, settings, pipelined=pipelined
            )
    return results
