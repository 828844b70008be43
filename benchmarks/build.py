"""Building a model: the time from nothing to initialised parameters, from cold.

The compute group's MLP (784-1024-1024-1024-10). Each timed call constructs
the model afresh in every library's own way (raw JAX: `jax.random.normal` per
kernel; blox core: the creating call; blox eager, Equinox, Flax NNX, PyTorch:
their constructors) and waits for its arrays. `jax.clear_caches()` runs
(untimed) before each, so every JAX contender compiles its random samplers
again, as in a fresh process. No target: it is shown because a PyTorch user
notices it, and JAX's persistent compilation cache removes most of it on
later runs (see docs/state-threading.md).
"""

from dataclasses import replace

import jax

from . import _common as c
from ._common import Result, Settings
from ._mlp import BUILD
from ._rows import timed_row
from .compute import MLP

GROUP = "build"
NAMES = [c.RAW, c.BLOX_EAGER, c.BLOX_CORE, c.EQX, c.NNX, c.TORCH]
# The contender names say how each library runs its steps; here they build.
NOTES = {
    c.RAW: "jax.random.normal per kernel, op by op",
    c.BLOX_EAGER: "nn.Linear constructors: one compiled initialiser per configuration",
    c.BLOX_CORE: "the creating call, op by op",
    c.EQX: "eqx.nn.MLP constructor",
    c.NNX: "nnx.Linear constructors",
    c.TORCH: "torch.nn.Linear constructors",
}


def run(settings: Settings) -> list[Result]:
    """Times one cold build of the MLP per contender and round."""
    row = "MLP 784-1024x3-10: build the model (cold caches)"
    return timed_row(
        GROUP,
        row,
        MLP,
        [replace(x, note=NOTES[x.name]) for x in c.pick(BUILD, NAMES)],
        settings,
        unit="ms",
        cold=True,
        before_each=jax.clear_caches,
    )
