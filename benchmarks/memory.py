"""Memory: temporary bytes of each compiled training step, from XLA's memory analysis.

`.lower(...).compile().memory_analysis().temp_size_in_bytes` of the same steps
the other groups time: XLA's scratch space for intermediates (activations kept
for the backward pass, gradients before the update), not counting arguments
and outputs. Target for blox: at most 1.05x raw JAX. A contender whose API
offers no `.lower` is listed without a value; PyTorch has no compiled program
and is left out.
"""

from dataclasses import replace

from . import _cnn, _lstm, _mlp, compute, dispatch, recurrent
from . import _common as c
from ._common import Result, Settings
from ._rows import memory_row

GROUP = "memory"

# Seen with jaxlib 0.10 on CPU: for the MLP steps, XLA's buffer assignment
# lays the intermediates into the buffers of the outputs (new parameters and
# Adam moments), so every contender's temp is a few bytes and the ratio says
# nothing.
_IN_OUTPUTS = (
    "XLA keeps this step's intermediates in its output buffers (new params, Adam "
    "moments), so temp is a few bytes for every contender: uninformative"
)

NAMES = [c.RAW, c.BLOX_FILTER_JIT, c.BLOX_EQX_JIT, c.BLOX_CORE, c.EQX, c.NNX]
TARGETS = {c.BLOX_FILTER_JIT: 1.05, c.BLOX_EQX_JIT: 1.05, c.BLOX_CORE: 1.05}


def run(settings: Settings) -> list[Result]:
    """Compiles each step once and reads its temporary bytes."""
    del settings  # deterministic: nothing to repeat
    rows = [
        ("MLP 32-64-64-10, b32: train step temp", _mlp.STEP, dispatch.SPEC, _IN_OUTPUTS),
        ("MLP 784-1024x3-10, b256: train step temp", _mlp.STEP, compute.MLP, _IN_OUTPUTS),
        ("CNN + BatchNorm + Dropout, b128: train step temp", _cnn.STEP, compute.CNN, ""),
        ("LSTM 32->128, T=100, b32: train step temp", _lstm.STEP, recurrent.SPEC, ""),
    ]
    results = []
    for row, table, spec, note in rows:
        contenders = c.pick(table, NAMES, TARGETS)
        if note:
            contenders[0] = replace(contenders[0], note=note)
        results += memory_row(GROUP, row, spec, contenders)
    return results
