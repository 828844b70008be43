"""Timing one cold event in a fresh Python process: a model's construction, a first call.

`measure(case, contender, env)` starts `python -m benchmarks._fresh CASE
CONTENDER` with a time limit; the child imports what the contender needs,
starts the backend and compiles one small program with a matmul, a few
fusions and a gradient (untimed, so that no contender's event pays the
process's one-time compiler start-up), runs the
case's setup and waits until every array it made is ready, then times
one event from nothing to ready arrays and prints the seconds as its last
line. A fresh process is the only honest cold start: JAX keeps compiled
programs (and the random samplers behind every initialiser) for the life of
the process, and `jax.clear_caches()` does not reach all of them.

Cases: `build/<model>` constructs a model (`mlp`, `cnn`, `deep`);
`call/mlp` and `step/mlp` build untimed, then time the first jitted forward
or training step (trace, compile, run).
"""

import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import numpy as np

from . import _common as c

LIMIT_S = 300  # one child: imports plus one event, under load

# The 10 convolutions: 3x3, channels growing 3 -> 96, each followed by a BatchNorm.
CNN_CHANNELS = (3, 16, 24, 32, 40, 48, 56, 64, 72, 80, 96)


def measure(case: str, contender: str, env: dict[str, str] | None = None) -> float:
    """Seconds of one cold `case` for `contender`, timed in a fresh process.

    Raises:
        RuntimeError: If the child fails or runs past `LIMIT_S`.
    """
    command = [sys.executable, "-m", "benchmarks._fresh", case, contender]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        done = subprocess.run(
            command,
            cwd=root,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=LIMIT_S,
        )
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(f"{case} / {contender}: ran past {LIMIT_S} s") from error
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"{case} / {contender}: child failed: {tail[0][:200]}")
    return float(done.stdout.strip().splitlines()[-1])


# -- the CNN in each library (the MLPs come from _mlp) ------------------------------------------


def _cnn_raw() -> Any:
    import jax
    import jax.numpy as jnp

    keys = jax.random.split(jax.random.key(0), len(CNN_CHANNELS) - 1)
    params = []
    for key, (a, b) in zip(keys, pairwise(CNN_CHANNELS), strict=True):
        kernel = jax.random.normal(key, (3, 3, a, b)) / math.sqrt(9 * a)
        params.append((kernel, jnp.zeros((b,)), jnp.ones((b,)), jnp.zeros((b,))))
    return params


def _cnn_blox_eager() -> Any:
    from blox import eager as nn

    layers: list[Any] = []
    for i, (a, b) in enumerate(pairwise(CNN_CHANNELS)):
        layers += [nn.Conv(a, b, (3, 3), seed=i), nn.BatchNorm(b)]
    return nn.Sequential(*layers)


def _cnn_blox_core() -> Any:
    import jax.numpy as jnp

    import blox as bx

    graph = bx.Graph("cnn")
    rng = bx.Rng(graph / "rng")
    layers: list[Any] = []
    for i, b in enumerate(CNN_CHANNELS[1:]):
        layers.append(bx.Conv(graph / f"conv{i}", (3, 3), b, rng=rng))
        layers.append(bx.BatchNorm(graph / f"bn{i}"))
    params = rng.seed(bx.Params(), seed=0)
    x = jnp.zeros((1, 8, 8, CNN_CHANNELS[0]))
    for layer in layers:
        x, params = layer(params, x)
    return params


def _cnn_eqx() -> Any:
    import equinox as eqx
    import jax

    keys = jax.random.split(jax.random.key(0), len(CNN_CHANNELS) - 1)
    layers: list[Any] = []
    for key, (a, b) in zip(keys, pairwise(CNN_CHANNELS), strict=True):
        layers += [eqx.nn.Conv2d(a, b, 3, padding=1, key=key), eqx.nn.BatchNorm(b, "batch")]
    return eqx.nn.make_with_state(eqx.nn.Sequential)(layers)


def _cnn_nnx() -> Any:
    from flax import nnx

    rngs = nnx.Rngs(0)
    layers: list[Any] = []
    for a, b in pairwise(CNN_CHANNELS):
        layers += [nnx.Conv(a, b, (3, 3), rngs=rngs), nnx.BatchNorm(b, rngs=rngs)]
    return nnx.Sequential(*layers)


def _cnn_torch() -> Any:
    import torch

    torch.manual_seed(0)
    layers: list[Any] = []
    for a, b in pairwise(CNN_CHANNELS):
        layers += [torch.nn.Conv2d(a, b, 3, padding=1), torch.nn.BatchNorm2d(b)]
    return list(torch.nn.Sequential(*layers).parameters())


CNN = {
    c.RAW: _cnn_raw,
    c.BLOX_EAGER: _cnn_blox_eager,
    c.BLOX_CORE: _cnn_blox_core,
    c.EQX: _cnn_eqx,
    c.NNX: _cnn_nnx,
    c.TORCH: _cnn_torch,
}


def _event(case: str, contender: str) -> Callable[[], Any]:
    """The untimed setup for `case`; returns the event to time."""
    from . import _mlp
    from .compute import MLP

    deep = _mlp.MLPSpec(in_size=512, width=512, hidden=23, out_size=512, batch=32)
    kind, model = case.split("/")
    if contender == c.BLOX_EAGER_COLD_DISK:
        contender = c.BLOX_EAGER  # the same constructors; only the cache folder differs
    if kind == "build" and model == "cnn":
        return CNN[contender]
    if kind == "build":
        spec = {"mlp": MLP, "deep": deep}[model]
        return _mlp.BUILD[contender].build(spec)().step
    table = {"call": _mlp.FORWARD, "step": _mlp.STEP}[kind]
    make = table[contender].build(MLP)
    return lambda: make().step()


def _ready(out: Any) -> None:
    import jax

    leaves = [x for x in jax.tree.leaves(out) if isinstance(x, jax.Array)]
    jax.block_until_ready(leaves)


def _warm_compiler() -> None:
    """Compiles and runs a small program of a training step's kinds of operation."""
    import jax
    import jax.numpy as jnp

    def layer(x: Any, w: Any, b: Any) -> Any:
        return jnp.maximum(x @ w + b, 0)

    def program(x: Any, w: Any, b: Any) -> Any:
        loss = lambda w: jnp.sum(layer(x, w, b) ** 2)  # noqa: E731
        return layer(x, w, b) @ w.T, jax.grad(loss)(w)

    x, w = np.ones((32, 64), np.float32), np.ones((64, 64), np.float32)
    jax.block_until_ready(jax.jit(program)(x, w, np.ones(64, np.float32)))


def main(case: str, contender: str) -> None:
    import jax

    jax.devices()  # the backend starts untimed: every contender's event finds it up
    # So does the compiler: a process's first compile also loads JAX's MLIR
    # dialects and starts XLA's pipeline (~20 ms, once), and its first
    # matmuls, fusions and gradients start more of it (a few ms more on the
    # first real program). Untimed here, no contender pays that in its
    # event, whether or not its setup compiled something (op-by-op
    # initialisers do; blox eager, with its sampling programs on disk,
    # compiles nothing before its first call).
    _warm_compiler()
    event = _event(case, contender)
    # Setup is untimed only if it has finished: arrays it made (a model's
    # initial values, the data) may still be computing on the device, and the
    # event would otherwise wait for them on the clock.
    jax.block_until_ready(jax.live_arrays())
    start = time.perf_counter()
    _ready(event())
    print(f"{time.perf_counter() - start:.6f}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
