"""An LSTM over 100 steps and its Adam step, once per library.

Batch 32, 32 input features, hidden size 128, batch-first sequences; the loss
is the mean squared error between every step's hidden output and a fixed
random target. The baseline is a hand-written `jax.lax.scan` over the same
cell blox uses: one matmul of `[x, h]` against a `(in + hidden, 4 * hidden)`
kernel, gates `i, g, f, o`. Flax runs `nnx.RNN(nnx.OptimizedLSTMCell)`, its
fused cell; Equinox scans `eqx.nn.LSTMCell` per example under `jax.vmap`;
PyTorch runs `torch.nn.LSTM`.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import blox as bx
from blox import eager as nn

from . import _common as c
from ._common import Contender, Program
from ._mlp import blox_step_body, core_train_step, nnx_program, torch_program


@dataclass(frozen=True)
class LSTMSpec:
    """`batch` sequences of `time` steps of `features`; `hidden` units."""

    batch: int = 32
    time: int = 100
    features: int = 32
    hidden: int = 128

    def data(self) -> tuple[np.ndarray, np.ndarray]:
        """Inputs `(batch, time, features)` and targets `(batch, time, hidden)`."""
        rng = np.random.default_rng(0)
        x = rng.standard_normal((self.batch, self.time, self.features), dtype=np.float32)
        t = rng.standard_normal((self.batch, self.time, self.hidden), dtype=np.float32)
        return x, 0.5 * t

    def jax_data(self) -> tuple[jax.Array, jax.Array]:
        x, t = self.data()
        return jnp.asarray(x), jnp.asarray(t)


def _mse(ys: jax.Array, target: jax.Array) -> jax.Array:
    return jnp.mean(jnp.square(ys - target))


# -- raw JAX ---------------------------------------------------------------------------------


def _raw_lstm(params: dict[str, jax.Array], xs: jax.Array) -> jax.Array:
    def cell(carry, x):
        h, c = carry
        z = jnp.concatenate([x, h], axis=-1) @ params["w"] + params["b"]
        i, g, f, o = jnp.split(z, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    hidden = params["b"].shape[0] // 4
    zeros = jnp.zeros((xs.shape[0], hidden))
    _, hs = jax.lax.scan(cell, (zeros, zeros), jnp.swapaxes(xs, 0, 1))
    return jnp.swapaxes(hs, 0, 1)


def raw_step(spec: LSTMSpec, jit: Callable[..., Any] = jax.jit) -> Callable[[], Program]:
    """The hand-written step under `jit` (`jax.jit`, or `eqx.filter_jit` for `RAW_EQX`)."""
    fan_in = spec.features + spec.hidden
    w = jax.random.normal(jax.random.key(0), (fan_in, 4 * spec.hidden)) / np.sqrt(fan_in)
    params = {"w": w, "b": jnp.zeros((4 * spec.hidden,))}
    x, t = spec.jax_data()
    opt = optax.adam(c.LEARNING_RATE)
    opt_state = opt.init(params)

    def make() -> Program:
        def step(params, opt_state, x, t):
            loss, grads = jax.value_and_grad(lambda p: _mse(_raw_lstm(p, x), t))(params)
            updates, opt_state = opt.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        return c.chained(jit(step), (params, opt_state), x, t)

    return make


# -- blox eager and core ----------------------------------------------------------------------


def _blox_loss(model: Any, x: jax.Array, t: jax.Array) -> jax.Array:
    ys, _ = model(x)
    return _mse(ys, t)


def _blox_step(spec: LSTMSpec, jit: Callable[..., Any]) -> Callable[[], Program]:
    model, (x, t) = nn.LSTM(spec.features, spec.hidden, seed=0), spec.jax_data()
    opt = optax.adam(c.LEARNING_RATE)
    opt_state = opt.init(nn.trainable(model))
    return lambda: c.chained(jit(blox_step_body(opt, _blox_loss)), (model, opt_state), x, t)


def core_step(spec: LSTMSpec, **options: Any) -> Callable[[], Program]:
    graph = bx.Graph("net")
    rng = bx.Rng(graph / "rng")
    lstm = bx.LSTM(graph / "lstm", spec.hidden, rng=rng, **options)
    x, t = spec.jax_data()
    _, params = lstm.apply(rng.seed(bx.Params(), seed=0), x[:1, :1])
    params = params.locked()
    opt = optax.adam(c.LEARNING_RATE)
    opt_state = opt.init(params.split()[0])

    def apply(params, xs):
        (ys, _), params = lstm.apply(params, xs)
        return ys, params

    def make() -> Program:
        return c.chained(jax.jit(core_train_step(apply, opt, _mse)), (params, opt_state), x, t)

    return make


# -- Equinox ---------------------------------------------------------------------------------


def _eqx_run(cell: eqx.nn.LSTMCell, xs: jax.Array) -> jax.Array:
    """One sequence `(time, features)` -> hidden outputs `(time, hidden)`."""

    def body(carry, x):
        carry = cell(x, carry)
        return carry, carry[0]

    zeros = jnp.zeros((cell.hidden_size,))
    _, hs = jax.lax.scan(body, (zeros, zeros), xs)
    return hs


def eqx_step(spec: LSTMSpec) -> Callable[[], Program]:
    cell = eqx.nn.LSTMCell(spec.features, spec.hidden, key=jax.random.key(0))
    x, t = spec.jax_data()
    opt = optax.adam(c.LEARNING_RATE)
    opt_state = opt.init(eqx.filter(cell, eqx.is_inexact_array))

    def make() -> Program:
        def step(cell, opt_state, x, t):
            def loss_fn(cell):
                return _mse(jax.vmap(_eqx_run, in_axes=(None, 0))(cell, x), t)

            loss, grads = eqx.filter_value_and_grad(loss_fn)(cell)
            params = eqx.filter(cell, eqx.is_inexact_array)
            updates, opt_state = opt.update(grads, opt_state, params)
            return eqx.apply_updates(cell, updates), opt_state, loss

        return c.chained(eqx.filter_jit(step), (cell, opt_state), x, t)

    return make


# -- Flax NNX ---------------------------------------------------------------------------------


def nnx_step(spec: LSTMSpec, *, cached: bool = False) -> Callable[[], Program]:
    from flax import nnx

    rngs = nnx.Rngs(0)
    model = nnx.RNN(nnx.OptimizedLSTMCell(spec.features, spec.hidden, rngs=rngs))
    x, t = spec.jax_data()
    optimizer = nnx.Optimizer(model, optax.adam(c.LEARNING_RATE), wrt=nnx.Param)

    def loss(model, x, t):
        return _mse(model(x), t)

    return lambda: nnx_program(model, optimizer, loss, x, t, cached=cached)


# -- PyTorch ----------------------------------------------------------------------------------


def torch_step(spec: LSTMSpec) -> Callable[[], Program]:
    import torch

    torch.manual_seed(0)
    model = torch.nn.LSTM(spec.features, spec.hidden, batch_first=True)
    x, t = (torch.from_numpy(a) for a in spec.data())

    def loss(model):
        ys, _ = model(x)
        return torch.mean(torch.square(ys - t))

    return lambda: torch_program(model, loss)


STEP = {
    c.RAW: Contender(c.RAW, raw_step, note="hand-written lax.scan"),
    c.RAW_EQX: Contender(
        c.RAW_EQX, lambda spec: raw_step(spec, jit=eqx.filter_jit), note="hand-written lax.scan"
    ),
    c.BLOX_FILTER_JIT: Contender(c.BLOX_FILTER_JIT, lambda spec: _blox_step(spec, nn.filter_jit)),
    c.BLOX_EQX_JIT: Contender(c.BLOX_EQX_JIT, lambda spec: _blox_step(spec, eqx.filter_jit)),
    c.BLOX_CORE: Contender(c.BLOX_CORE, core_step),
    c.EQX: Contender(c.EQX, eqx_step, note="eqx.nn.LSTMCell, lax.scan, vmap"),
    c.NNX: Contender(c.NNX, nnx_step, requires=("flax",), note="nnx.RNN(OptimizedLSTMCell)"),
    c.NNX_CACHED: Contender(
        c.NNX_CACHED, lambda spec: nnx_step(spec, cached=True), requires=("flax",)
    ),
    c.TORCH: Contender(c.TORCH, torch_step, requires=("torch",), note="torch.nn.LSTM"),
}


# -- GRU: the same step with blox's GRU cell ---------------------------------------------------


def _raw_gru(params: dict[str, jax.Array], xs: jax.Array) -> jax.Array:
    def cell(h, x):
        zr = jax.nn.sigmoid(jnp.concatenate([x, h], axis=-1) @ params["wg"] + params["bg"])
        z, r = jnp.split(zr, 2, axis=-1)
        n = jnp.tanh(jnp.concatenate([x, r * h], axis=-1) @ params["wc"] + params["bc"])
        h = (1 - z) * h + z * n
        return h, h

    zeros = jnp.zeros((xs.shape[0], params["bc"].shape[0]))
    _, hs = jax.lax.scan(cell, zeros, jnp.swapaxes(xs, 0, 1))
    return jnp.swapaxes(hs, 0, 1)


def raw_gru_step(spec: LSTMSpec) -> Callable[[], Program]:
    """The hand-written GRU step under `jax.jit`."""
    fan_in = spec.features + spec.hidden
    kg, kc = jax.random.split(jax.random.key(0))
    params = {
        "wg": jax.random.normal(kg, (fan_in, 2 * spec.hidden)) / np.sqrt(fan_in),
        "bg": jnp.zeros((2 * spec.hidden,)),
        "wc": jax.random.normal(kc, (fan_in, spec.hidden)) / np.sqrt(fan_in),
        "bc": jnp.zeros((spec.hidden,)),
    }
    x, t = spec.jax_data()
    opt = optax.adam(c.LEARNING_RATE)
    opt_state = opt.init(params)

    def make() -> Program:
        def step(params, opt_state, x, t):
            loss, grads = jax.value_and_grad(lambda p: _mse(_raw_gru(p, x), t))(params)
            updates, opt_state = opt.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        return c.chained(jax.jit(step), (params, opt_state), x, t)

    return make


def _blox_gru_step(spec: LSTMSpec) -> Callable[[], Program]:
    model, (x, t) = nn.GRU(spec.features, spec.hidden, seed=0), spec.jax_data()
    opt = optax.adam(c.LEARNING_RATE)
    opt_state = opt.init(nn.trainable(model))
    step = blox_step_body(opt, _blox_loss)
    return lambda: c.chained(nn.filter_jit(step), (model, opt_state), x, t)


def core_gru_step(spec: LSTMSpec, cell: Callable[..., Any] = bx.GRU) -> Callable[[], Program]:
    graph = bx.Graph("net")
    rng = bx.Rng(graph / "rng")
    node = graph / "rnn"
    rnn = bx.RNN(node, cell(node / "cell", spec.hidden, rng=rng))
    x, t = spec.jax_data()
    _, params = rnn(rng.seed(bx.Params(), seed=0), x[:1, :1])
    params = params.locked()
    opt = optax.adam(c.LEARNING_RATE)
    opt_state = opt.init(params.split()[0])

    def apply(params, xs):
        return rnn(params, xs)

    def make() -> Program:
        return c.chained(jax.jit(core_train_step(apply, opt, _mse)), (params, opt_state), x, t)

    return make


def nnx_gru_step(spec: LSTMSpec) -> Callable[[], Program]:
    from flax import nnx

    model = nnx.RNN(nnx.GRUCell(spec.features, spec.hidden, rngs=nnx.Rngs(0)))
    x, t = spec.jax_data()
    optimizer = nnx.Optimizer(model, optax.adam(c.LEARNING_RATE), wrt=nnx.Param)

    def loss(model, x, t):
        return _mse(model(x), t)

    return lambda: nnx_program(model, optimizer, loss, x, t, cached=False)


def torch_gru_step(spec: LSTMSpec) -> Callable[[], Program]:
    import torch

    torch.manual_seed(0)
    model = torch.nn.GRU(spec.features, spec.hidden, batch_first=True)
    x, t = (torch.from_numpy(a) for a in spec.data())

    def loss(model):
        ys, _ = model(x)
        return torch.mean(torch.square(ys - t))

    return lambda: torch_program(model, loss)


BLOX_CORE_FLAX_GRU = "blox core RNN(GRUCell)"

GRU_STEP = {
    c.RAW: Contender(c.RAW, raw_gru_step, note="hand-written lax.scan"),
    c.BLOX_FILTER_JIT: Contender(c.BLOX_FILTER_JIT, _blox_gru_step),
    c.BLOX_CORE: Contender(c.BLOX_CORE, core_gru_step, note="RNN(GRU)"),
    BLOX_CORE_FLAX_GRU: Contender(
        BLOX_CORE_FLAX_GRU,
        lambda spec: core_gru_step(spec, bx.GRUCell),
        note="hoisted input projection, hand-written backward",
    ),
    c.NNX: Contender(c.NNX, nnx_gru_step, requires=("flax",), note="nnx.RNN(GRUCell)"),
    c.TORCH: Contender(c.TORCH, torch_gru_step, requires=("torch",), note="torch.nn.GRU"),
}
