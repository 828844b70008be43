"""Recurrent: an LSTM training step, 100 steps of batch 32, hidden 128.

The baseline is a hand-written `jax.lax.scan` LSTM (see `_lstm.py`). Target
for every blox form: at most 1.03x (blox under `eqx.filter_jit`: of the same
hand-written step under `eqx.filter_jit`).
"""

from . import _common as c
from ._common import Result, Settings
from ._lstm import STEP, LSTMSpec
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
TARGETS = {c.BLOX_FILTER_JIT: 1.03, c.BLOX_EQX_JIT: 1.03, c.BLOX_CORE: 1.03}
AGAINST = {c.BLOX_EQX_JIT: c.RAW_EQX}  # what blox adds to Equinox's dispatcher


def run(settings: Settings) -> list[Result]:
    """Times the LSTM row."""
    row = "LSTM 32->128, T=100, b32: Adam train step"
    return timed_row(
        GROUP, row, SPEC, c.pick(STEP, NAMES, TARGETS, AGAINST), settings, unit="ms", long=True
    )
