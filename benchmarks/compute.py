"""Compute-bound: training steps whose time is the arithmetic, not the dispatch.

An MLP 784-1024-1024-1024-10 at batch 256, and a small CNN with BatchNorm and
Dropout on 28x28x1 images at batch 128 (see `_cnn.py`). Target for every blox
form: at most 1.03x raw JAX, i.e. the library adds nothing to the program
(blox under `eqx.filter_jit`: at most 1.03x raw JAX under `eqx.filter_jit`).
"""

from . import _cnn, _mlp
from . import _common as c
from ._common import Result, Settings
from ._rows import timed_row

GROUP = "compute"
MLP = _mlp.MLPSpec(in_size=784, width=1024, hidden=3, out_size=10, batch=256)
CNN = _cnn.CNNSpec(batch=128)

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
    """Times the MLP row, then the CNN row."""
    return [
        *timed_row(
            GROUP,
            "MLP 784-1024x3-10, b256: Adam train step",
            MLP,
            c.pick(_mlp.STEP, NAMES, TARGETS, AGAINST),
            settings,
            unit="ms",
            long=True,
        ),
        *timed_row(
            GROUP,
            "CNN + BatchNorm + Dropout, 28x28x1 b128: Adam train step",
            CNN,
            c.pick(_cnn.STEP, NAMES, TARGETS, AGAINST),
            settings,
            unit="ms",
            long=True,
        ),
    ]
