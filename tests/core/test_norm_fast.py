"""BatchNorm's two formulations: the ancestor's (default) and flax's (`use_fast_variance=True`).

Both are checked against a plain-jnp formula written in the same order of
operations, and the fast one against flax.linen's BatchNorm with random
`scale` and `bias` copied in, outputs, running statistics and gradients.
"""

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import blox as bx

from ._flax_ref import close, probe

P = ("net", "bn")
SHAPE = (4, 5, 5, 3)  # a small NHWC batch: statistics over 100 entries per channel


def _x() -> jax.Array:
    return jax.random.normal(jax.random.key(1), SHAPE) * 2.0 + 0.5


def _affine() -> tuple[jax.Array, jax.Array]:
    scale = jax.random.uniform(jax.random.key(2), (3,), minval=0.5, maxval=1.5)
    return scale, jax.random.normal(jax.random.key(3), (3,))


def _blox(fast: bool) -> tuple[bx.BatchNorm, bx.Params]:
    bn = bx.BatchNorm(bx.Graph("net") / "bn", momentum=0.9, use_fast_variance=fast)
    _, params = bn(bx.Params(), _x(), is_training=False)
    scale, bias = _affine()
    new = {P + ("scale",): scale, P + ("bias",): bias}
    entries = {path: params[path].replace(value=value) for path, value in new.items()}
    return bn, params.merge(bx.Params.from_dict(entries)).locked()


def _formula(x: jax.Array, scale: jax.Array, bias: jax.Array, fast: bool) -> jax.Array:
    scale, bias = scale.reshape(1, 1, 1, 3), bias.reshape(1, 1, 1, 3)
    mean = x.mean(axis=(0, 1, 2), keepdims=True)
    if fast:
        var = jnp.maximum(0.0, jnp.square(x).mean(axis=(0, 1, 2), keepdims=True) - mean**2)
        return (x - mean) * (jax.lax.rsqrt(var + 1e-5) * scale) + bias
    var = jnp.square(x - mean).mean(axis=(0, 1, 2), keepdims=True)
    return (x - mean) / jnp.sqrt(var + 1e-5) * scale + bias


@pytest.mark.parametrize("fast", [False, True], ids=["ancestor", "fast"])
def test_batch_norm_formulations_equal_plain_jnp_formula(fast: bool) -> None:
    bn, params = _blox(fast)
    scale, bias = _affine()
    y, _ = jax.jit(lambda p, x: bn(p, x, is_training=True))(params, _x())
    expected = jax.jit(_formula, static_argnums=3)(_x(), scale, bias, fast)
    np.testing.assert_array_equal(y, expected)


def test_batch_norm_fast_variance_matches_flax_linen() -> None:
    bn, params = _blox(True)
    scale, bias = _affine()
    flax_bn = fnn.BatchNorm(use_running_average=False, momentum=0.9, use_fast_variance=True)
    variables = flax_bn.init(jax.random.key(0), _x())
    stats = variables["batch_stats"]
    r = probe(SHAPE)

    def flax_loss(p, x):
        y, new = flax_bn.apply({"params": p, "batch_stats": stats}, x, mutable=["batch_stats"])
        return jnp.sum(y * r), (y, new["batch_stats"])

    def blox_loss(p, x):
        y, new = bn(p, x, is_training=True)
        return jnp.sum(y * r), (y, new)

    grad = lambda f, p: jax.jit(jax.grad(f, argnums=(0, 1), has_aux=True))(p, _x())  # noqa: E731
    (gp_f, gx_f), (y_f, stats_f) = grad(flax_loss, {"scale": scale, "bias": bias})
    (gp_b, gx_b), (y_b, new) = grad(blox_loss, params)
    # Same operations in the same order: the forward agrees to the last bit.
    np.testing.assert_array_equal(y_b, y_f)
    for name in ("mean", "var"):
        np.testing.assert_array_equal(new[P + (f"running_{name}",)].value, stats_f[name])
    # The gradients come out of two differently traced graphs that XLA may
    # fuse and reduce in a different order: a few float32 ulps.
    close(gx_b, gx_f, rtol=1e-5, atol=1e-5)
    for name in ("scale", "bias"):
        close(gp_b[P + (name,)].value, gp_f[name], rtol=1e-5, atol=1e-5)


def test_batch_norm_formulations_differ_only_by_rounding() -> None:
    slow, params = _blox(False)
    fast, _ = _blox(True)
    run = lambda bn: jax.jit(lambda p, x: bn(p, x, is_training=True))(params, _x())  # noqa: E731
    (y_slow, p_slow), (y_fast, p_fast) = run(slow), run(fast)
    # One-pass variance on inputs of mean 0.5 and std 2: a few ulps apart.
    close(y_fast, y_slow, rtol=1e-5, atol=1e-5)
    close(p_fast[P + ("running_var",)].value, p_slow[P + ("running_var",)].value, 1e-5, 1e-6)
    assert not np.array_equal(y_fast, y_slow)  # the option does change the computation
