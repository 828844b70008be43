"""A small CNN with BatchNorm and Dropout, and its Adam step, once per library.

On 28x28x1 images, batch 128: conv 3x3 to 32 channels, BatchNorm, relu, 2x2
max pool; conv 3x3 to 64, BatchNorm, relu, 2x2 max pool; flatten (3136),
dropout 0.5, dense 128, relu, dense 10. BatchNorm momentum is 0.9 (weight of
the old running statistic) everywhere. Each step updates the running
statistics and draws a fresh dropout mask, and feeds both into the next step.
JAX libraries run channels last; Equinox and PyTorch channels first, their
native layout. BatchNorm runs each library's default formulation: raw JAX
and blox core the textbook two-pass variance and division, blox eager and
Flax NNX the one-pass variance with one multiplier per channel, which takes
about 0.6x the time on a CPU (docs/cnn-performance.md).
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
from ._mlp import blox_step_body, core_train_step, model_xent, nnx_program, torch_program, xent

_RATE = 0.5
_MOMENTUM = 0.9
_EPS = 1e-5
_FLAT = 7 * 7 * 64


@dataclass(frozen=True)
class CNNSpec:
    """`batch` images of 28x28x1, 10 classes."""

    batch: int = 128

    def data(self) -> tuple[np.ndarray, np.ndarray]:
        """Channels-last images and labels, as NumPy arrays."""
        return c.classification_data(self.batch, (28, 28, 1), 10)

    def jax_data(self) -> tuple[jax.Array, jax.Array]:
        x, y = self.data()
        return jnp.asarray(x), jnp.asarray(y)


# -- raw JAX ---------------------------------------------------------------------------------


def _raw_params() -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    k = jax.random.split(jax.random.key(0), 4)
    params = {
        "c1": jax.random.normal(k[0], (3, 3, 1, 32)) / 3.0,
        "c1b": jnp.zeros((32,)),
        "s1": jnp.ones((32,)),
        "b1": jnp.zeros((32,)),
        "c2": jax.random.normal(k[1], (3, 3, 32, 64)) / np.sqrt(9 * 32),
        "c2b": jnp.zeros((64,)),
        "s2": jnp.ones((64,)),
        "b2": jnp.zeros((64,)),
        "f1": jax.random.normal(k[2], (_FLAT, 128)) / np.sqrt(_FLAT),
        "f1b": jnp.zeros((128,)),
        "f2": jax.random.normal(k[3], (128, 10)) / np.sqrt(128),
        "f2b": jnp.zeros((10,)),
    }
    stats = {
        "m1": jnp.zeros((32,)),
        "v1": jnp.ones((32,)),
        "m2": jnp.zeros((64,)),
        "v2": jnp.ones((64,)),
    }
    return params, stats


def _conv(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    dims = ("NHWC", "HWIO", "NHWC")
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dims) + b


def _batch_norm(
    x: jax.Array, scale: jax.Array, bias: jax.Array, mean: jax.Array, var: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    m = x.mean(axis=(0, 1, 2))
    v = jnp.square(x - m).mean(axis=(0, 1, 2))
    y = (x - m) / jnp.sqrt(v + _EPS) * scale + bias
    m, v = jax.lax.stop_gradient(m), jax.lax.stop_gradient(v)
    return y, _MOMENTUM * mean + (1 - _MOMENTUM) * m, _MOMENTUM * var + (1 - _MOMENTUM) * v


def _pool(x: jax.Array) -> jax.Array:
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def _raw_forward(
    p: dict[str, jax.Array], s: dict[str, jax.Array], key: jax.Array, x: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    h, m1, v1 = _batch_norm(_conv(x, p["c1"], p["c1b"]), p["s1"], p["b1"], s["m1"], s["v1"])
    h = _pool(jax.nn.relu(h))
    h, m2, v2 = _batch_norm(_conv(h, p["c2"], p["c2b"]), p["s2"], p["b2"], s["m2"], s["v2"])
    h = _pool(jax.nn.relu(h)).reshape(x.shape[0], _FLAT)
    keep = jax.random.bernoulli(key, 1.0 - _RATE, h.shape)
    h = jnp.where(keep, h / (1.0 - _RATE), 0.0)
    h = jax.nn.relu(h @ p["f1"] + p["f1b"])
    return h @ p["f2"] + p["f2b"], {"m1": m1, "v1": v1, "m2": m2, "v2": v2}


def raw_step(spec: CNNSpec, jit: Callable[..., Any] = jax.jit) -> Callable[[], Program]:
    """The hand-written step under `jit` (`jax.jit`, or `eqx.filter_jit` for `RAW_EQX`)."""
    (params, stats), (x, y) = _raw_params(), spec.jax_data()
    opt = optax.adam(c.LEARNING_RATE)
    opt_state, key = opt.init(params), jax.random.key(1)

    def make() -> Program:
        def step(params, stats, opt_state, key, x, y):
            key, sub = jax.random.split(key)

            def loss_fn(params):
                logits, new_stats = _raw_forward(params, stats, sub, x)
                return xent(logits, y), new_stats

            (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            updates, opt_state = opt.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), stats, opt_state, key, loss

        return c.chained(jit(step), (params, stats, opt_state, key), x, y)

    return make


# -- blox eager and core ----------------------------------------------------------------------


class _BloxCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv(1, 32, kernel_size=(3, 3), seed=0)
        self.bn1 = nn.BatchNorm(32, momentum=_MOMENTUM)
        self.conv2 = nn.Conv(32, 64, kernel_size=(3, 3), seed=1)
        self.bn2 = nn.BatchNorm(64, momentum=_MOMENTUM)
        self.drop = nn.Dropout(_RATE, seed=2)
        self.fc1 = nn.Linear(_FLAT, 128, seed=3)
        self.fc2 = nn.Linear(128, 10, seed=4)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.max_pool(jax.nn.relu(self.bn1(self.conv1(x))), (2, 2))
        x = nn.max_pool(jax.nn.relu(self.bn2(self.conv2(x))), (2, 2))
        x = self.drop(x.reshape(x.shape[0], _FLAT))
        return self.fc2(jax.nn.relu(self.fc1(x)))


def _blox_step(spec: CNNSpec, jit: Callable[..., Any]) -> Callable[[], Program]:
    model, (x, y) = _BloxCNN(), spec.jax_data()
    opt = optax.adam(c.LEARNING_RATE)
    opt_state = opt.init(nn.trainable(model))
    return lambda: c.chained(jit(blox_step_body(opt, model_xent)), (model, opt_state), x, y)


class _CoreCNN(bx.Module):
    def __init__(self, graph: bx.Graph, rng: bx.Rng) -> None:
        super().__init__(graph)
        self.conv1 = bx.Conv(graph / "conv1", (3, 3), 32, rng=rng)
        self.bn1 = bx.BatchNorm(graph / "bn1", momentum=_MOMENTUM)
        self.conv2 = bx.Conv(graph / "conv2", (3, 3), 64, rng=rng)
        self.bn2 = bx.BatchNorm(graph / "bn2", momentum=_MOMENTUM)
        self.drop = bx.Dropout(graph / "drop", _RATE, rng=rng)
        self.fc1 = bx.Linear(graph / "fc1", 128, rng=rng)
        self.fc2 = bx.Linear(graph / "fc2", 10, rng=rng)

    def __call__(
        self, params: bx.Params, x: jax.Array, is_training: bool = True
    ) -> tuple[jax.Array, bx.Params]:
        x, params = self.conv1(params, x)
        x, params = self.bn1(params, x, is_training=is_training)
        x = bx.max_pool(jax.nn.relu(x), (2, 2))
        x, params = self.conv2(params, x)
        x, params = self.bn2(params, x, is_training=is_training)
        x = bx.max_pool(jax.nn.relu(x), (2, 2))
        x, params = self.drop(params, x.reshape(x.shape[0], _FLAT), is_training=is_training)
        x, params = self.fc1(params, x)
        return self.fc2(params, jax.nn.relu(x))


def core_step(spec: CNNSpec) -> Callable[[], Program]:
    graph = bx.Graph("cnn")
    rng = bx.Rng(graph / "rng")
    model = _CoreCNN(graph / "net", rng)
    x, y = spec.jax_data()
    _, params = model(rng.seed(bx.Params(), seed=0), x[:2])
    params = params.locked()
    opt = optax.adam(c.LEARNING_RATE)
    opt_state = opt.init(params.split()[0])

    def make() -> Program:
        return c.chained(jax.jit(core_train_step(model, opt, xent)), (params, opt_state), x, y)

    return make


# -- Equinox ---------------------------------------------------------------------------------


class _EqxCNN(eqx.Module):
    """One channels-first image; call under `jax.vmap(..., axis_name='batch')`."""

    conv1: eqx.nn.Conv2d
    bn1: eqx.nn.BatchNorm
    conv2: eqx.nn.Conv2d
    bn2: eqx.nn.BatchNorm
    pool: eqx.nn.MaxPool2d
    drop: eqx.nn.Dropout
    fc1: eqx.nn.Linear
    fc2: eqx.nn.Linear

    def __init__(self, key: jax.Array) -> None:
        k = jax.random.split(key, 4)
        bn = dict(axis_name="batch", momentum=_MOMENTUM, mode="batch")
        self.conv1 = eqx.nn.Conv2d(1, 32, 3, padding=1, key=k[0])
        self.bn1 = eqx.nn.BatchNorm(32, **bn)
        self.conv2 = eqx.nn.Conv2d(32, 64, 3, padding=1, key=k[1])
        self.bn2 = eqx.nn.BatchNorm(64, **bn)
        self.pool = eqx.nn.MaxPool2d(2, 2)
        self.drop = eqx.nn.Dropout(_RATE)
        self.fc1 = eqx.nn.Linear(_FLAT, 128, key=k[2])
        self.fc2 = eqx.nn.Linear(128, 10, key=k[3])

    def __call__(self, x: jax.Array, state: Any, key: jax.Array) -> tuple[jax.Array, Any]:
        x, state = self.bn1(self.conv1(x), state)
        x = self.pool(jax.nn.relu(x))
        x, state = self.bn2(self.conv2(x), state)
        x = self.pool(jax.nn.relu(x))
        x = self.drop(x.reshape(_FLAT), key=key)
        return self.fc2(jax.nn.relu(self.fc1(x))), state


def eqx_step(spec: CNNSpec) -> Callable[[], Program]:
    model, state = eqx.nn.make_with_state(_EqxCNN)(jax.random.key(0))
    x, y = spec.data()
    x, y = jnp.asarray(x.transpose(0, 3, 1, 2)), jnp.asarray(y)
    opt = optax.adam(c.LEARNING_RATE)
    opt_state, key = opt.init(eqx.filter(model, eqx.is_inexact_array)), jax.random.key(1)

    def make() -> Program:
        def step(model, state, opt_state, key, x, y):
            key, sub = jax.random.split(key)
            keys = jax.random.split(sub, x.shape[0])

            def loss_fn(model, state):
                batched = jax.vmap(
                    model, axis_name="batch", in_axes=(0, None, 0), out_axes=(0, None)
                )
                logits, state = batched(x, state, keys)
                return xent(logits, y), state

            grad_fn = eqx.filter_value_and_grad(loss_fn, has_aux=True)
            (loss, state), grads = grad_fn(model, state)
            params = eqx.filter(model, eqx.is_inexact_array)
            updates, opt_state = opt.update(grads, opt_state, params)
            return eqx.apply_updates(model, updates), state, opt_state, key, loss

        return c.chained(eqx.filter_jit(step), (model, state, opt_state, key), x, y)

    return make


# -- Flax NNX ---------------------------------------------------------------------------------


def nnx_step(spec: CNNSpec, *, cached: bool = False) -> Callable[[], Program]:
    from flax import nnx

    class CNN(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.conv1 = nnx.Conv(1, 32, (3, 3), rngs=rngs)
            self.bn1 = nnx.BatchNorm(32, momentum=_MOMENTUM, rngs=rngs)
            self.conv2 = nnx.Conv(32, 64, (3, 3), rngs=rngs)
            self.bn2 = nnx.BatchNorm(64, momentum=_MOMENTUM, rngs=rngs)
            self.drop = nnx.Dropout(_RATE, rngs=rngs)
            self.fc1 = nnx.Linear(_FLAT, 128, rngs=rngs)
            self.fc2 = nnx.Linear(128, 10, rngs=rngs)

        def __call__(self, x: jax.Array) -> jax.Array:
            x = nnx.max_pool(jax.nn.relu(self.bn1(self.conv1(x))), (2, 2), (2, 2))
            x = nnx.max_pool(jax.nn.relu(self.bn2(self.conv2(x))), (2, 2), (2, 2))
            x = self.drop(x.reshape(x.shape[0], _FLAT))
            return self.fc2(jax.nn.relu(self.fc1(x)))

    model, (x, y) = CNN(nnx.Rngs(0)), spec.jax_data()
    optimizer = nnx.Optimizer(model, optax.adam(c.LEARNING_RATE), wrt=nnx.Param)
    return lambda: nnx_program(model, optimizer, model_xent, x, y, cached=cached)


# -- PyTorch ----------------------------------------------------------------------------------


def torch_step(spec: CNNSpec) -> Callable[[], Program]:
    import torch

    torch.manual_seed(0)
    t = torch.nn
    model = t.Sequential(
        t.Conv2d(1, 32, 3, padding=1),
        t.BatchNorm2d(32, momentum=1 - _MOMENTUM),  # torch's momentum weighs the new value
        t.ReLU(),
        t.MaxPool2d(2),
        t.Conv2d(32, 64, 3, padding=1),
        t.BatchNorm2d(64, momentum=1 - _MOMENTUM),
        t.ReLU(),
        t.MaxPool2d(2),
        t.Flatten(),
        t.Dropout(_RATE),
        t.Linear(_FLAT, 128),
        t.ReLU(),
        t.Linear(128, 10),
    ).train()
    x, y = spec.data()
    xt, yt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(y).long()
    return lambda: torch_program(model, lambda m: t.functional.cross_entropy(m(xt), yt))


STEP = {
    c.RAW: Contender(c.RAW, raw_step),
    c.RAW_EQX: Contender(c.RAW_EQX, lambda spec: raw_step(spec, jit=eqx.filter_jit)),
    c.BLOX_FILTER_JIT: Contender(c.BLOX_FILTER_JIT, lambda spec: _blox_step(spec, nn.filter_jit)),
    c.BLOX_EQX_JIT: Contender(c.BLOX_EQX_JIT, lambda spec: _blox_step(spec, eqx.filter_jit)),
    c.BLOX_CORE: Contender(c.BLOX_CORE, core_step),
    c.EQX: Contender(c.EQX, eqx_step),
    c.NNX: Contender(c.NNX, nnx_step, requires=("flax",)),
    c.NNX_CACHED: Contender(
        c.NNX_CACHED, lambda spec: nnx_step(spec, cached=True), requires=("flax",)
    ),
    c.TORCH: Contender(c.TORCH, torch_step, requires=("torch",)),
}
