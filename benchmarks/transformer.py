"""Transformer: a 2-block pre-norm Transformer Adam step, d=128, 4 heads, T=128, batch 16.

The baseline is the same blocks written by hand in JAX (see `_transformer.py`).
Target for blox: at most 1.03x. A second row times one cached decode step
(batch 1, a 128-position cache per block; tokens/s is its inverse) against a
hand-written cache and Flax NNX's `decode=True`. Every jitted contender takes
its weights as an argument (the hand-written cache too: closed over, they
would become constants of the program); blox core's step is the one
docs/attention.md recommends, weights in and only the cache out, donated.
Target for blox core: at most 1.03x.
"""

from . import _common as c
from ._common import Result, Settings
from ._rows import timed_row
from ._transformer import DECODE, STEP, TransformerSpec

GROUP = "transformer"
SPEC = TransformerSpec(batch=16, length=128, dim=128, heads=4, depth=2)

NAMES = [c.RAW, c.BLOX_FILTER_JIT, c.BLOX_CORE, c.EQX, c.NNX, c.NNX_CACHED, c.TORCH]
TARGETS = {c.BLOX_FILTER_JIT: 1.03, c.BLOX_CORE: 1.03}


def run(settings: Settings) -> list[Result]:
    """Times the Transformer training row and the cached decode row."""
    row = "Transformer 2x(d128, 4 heads), T=128, b16: Adam train step"
    results = timed_row(
        GROUP, row, SPEC, c.pick(STEP, NAMES, TARGETS), settings, unit="ms", long=True
    )
    return results + run_decode(settings)


def run_decode(settings: Settings) -> list[Result]:
    """Times one cached decode step (batch 1, both blocks); tokens/s is its inverse."""
    row = "Transformer 2x(d128, 4 heads), b1: one cached decode step"
    names = [c.RAW, c.BLOX_FILTER_JIT, c.BLOX_CORE, c.NNX]
    targets = {c.BLOX_CORE: 1.03}
    return timed_row(GROUP, row, SPEC, c.pick(DECODE, names, targets), settings, unit="us")
