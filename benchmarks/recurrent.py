"""Recurrent: LSTM and GRU training steps, 100 steps of batch 32, hidden 128.

The baseline is a hand-written `jax.lax.scan` LSTM (GRU for the second row;
see `_lstm.py`). Target for every blox form: at most 0.75x (blox under `eqx.filter_jit`: of the same
hand-written step under `eqx.filter_jit`); blox's `LSTM` and `GRU` run whole-sequence kernels with a
hand-written backward pass, the baseline plain autodiff through `lax.scan`.
"""

from . import _common as c
from ._common import Result, Settings
from ._lstm import BLOX_CORE_FLAX_GRU, GRU_STEP, STEP, LSTMSpec
from ._rows import timed_row

GROUP = "recurrent"
SPEC = LSTMSpec(batch=32, time=100, features=32, hidden=128)

NAMES = [
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
TARGETS = {c.BLOX_FILTER_JIT: 0.75, c.BLOX_EQX_JIT: 0.75, c.BLOX_CORE: 0.75}
AGAINST = {c.BLOX_EQX_JIT: c.RAW_EQX}  # what blox adds to Equinox's dispatcher


GRU_NAMES = [c.RAW, c.BLOX_FILTER_JIT, c.BLOX_CORE, BLOX_CORE_FLAX_GRU, c.NNX, c.TORCH]
GRU_TARGETS = {c.BLOX_FILTER_JIT: 0.75, c.BLOX_CORE: 0.75}


def run(settings: Settings) -> list[Result]:
    """Times the LSTM and GRU rows."""
    row = "LSTM 32->128, T=100, b32: Adam train step"
    results = timed_row(
        GROUP, row, SPEC, c.pick(STEP, NAMES, TARGETS, AGAINST), settings, unit="ms", long=True
    )
    gru = "GRU 32->128, T=100, b32: Adam train step"
    return results + timed_row(
        GROUP, gru, SPEC, c.pick(GRU_STEP, GRU_NAMES, GRU_TARGETS), settings, unit="ms", long=True
    )
