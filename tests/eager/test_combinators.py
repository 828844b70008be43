"""Eager Parallel, BatchApply, Lambda and EMA equal their core twins (both compiled)."""

import jax
import jax.numpy as jnp
import numpy as np

import blox as bx
from blox import eager as nn


def _x(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, np.float32))


def test_lambda_with_rng_draws_like_its_core_twin_and_advances() -> None:
    noisy = nn.Lambda(lambda x, key: x + jax.random.normal(key, x.shape), needs_rng=True, seed=2)
    core, params = noisy.core_layer, noisy.core_params()
    forward = nn.filter_jit(lambda m, x: m(x))
    step = jax.jit(lambda p, x: core(p, x, is_training=True))
    for i in range(2):
        x = _x((3,), i)
        y_core, params = step(params, x)
        np.testing.assert_array_equal(forward(noisy, x), y_core)
    assert int(noisy.rng.counter) == 2


def test_ema_buffers_follow_the_core_average() -> None:
    ema = nn.EMA({"w": jnp.zeros(3)}, 0.9, debias=True)
    core, params = ema.core_layer, ema.core_params()
    forward = nn.filter_jit(lambda m, x: m(x))
    step = jax.jit(lambda p, x: core(p, x))
    for i in range(2):
        x = {"w": _x((3,), i)}
        expected, params = step(params, x)
        np.testing.assert_array_equal(forward(ema, x)["w"], expected["w"])
    ema.eval()
    np.testing.assert_array_equal(ema({"w": jnp.ones(3)})["w"], expected["w"])


def test_parallel_and_batch_apply_call_their_children() -> None:
    lin = nn.Linear(3, 2, seed=0)
    par = nn.Parallel(lin, jnp.tanh)
    a, b = _x((4, 3)), _x((5,), 1)
    ya, yb = nn.filter_jit(lambda m, x: m(x))(par, (a, b))
    np.testing.assert_array_equal(ya, lin(a))
    np.testing.assert_array_equal(yb, jnp.tanh(b))
    assert [name for name, _ in par.named_parameters()] == ["0.kernel", "0.bias"]
    x = _x((2, 3, 3), 2)
    y = nn.BatchApply(lin)(x)
    core_y, _ = bx.BatchApply(bx.Graph("net") / "ba", lin.core_layer)(lin.core_params(), x)
    np.testing.assert_array_equal(y, core_y)
