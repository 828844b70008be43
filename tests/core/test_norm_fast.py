"""BatchNorm's two formulations: the ancestor's (default) and flax's (`use_fast_variance=True`).

Both are checked against a plain-jnp formula written in the same order of
operations, and the fast one against flax.linen's BatchNorm with random
`scale` and `bias` copied in: outputs, running statistics and gradients, to the bit.
"""

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import blox as bx

from ._flax_ref import close, normal, probe

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
    # The backward pass sums its cotangents in the order the forward traced
    # them; blox traces flax's order, so the gradients agree to the bit too.
    np.testing.assert_array_equal(gx_b, gx_f)
    for name in ("scale", "bias"):
        np.testing.assert_array_equal(gp_b[P + (name,)].value, gp_f[name])


def test_batch_norm_formulations_differ_only_by_rounding() -> None:
    slow, params = _blox(False)
    fast, _ = _blox(True)
    run = lambda bn: jax.jit(lambda p, x: bn(p, x, is_training=True))(params, _x())  # noqa: E731
    (y_slow, p_slow), (y_fast, p_fast) = run(slow), run(fast)
    # One-pass variance on inputs of mean 0.5 and std 2: a few ulps apart.
    close(y_fast, y_slow, rtol=1e-5, atol=1e-5)
    close(p_fast[P + ("running_var",)].value, p_slow[P + ("running_var",)].value, 1e-5, 1e-6)
    assert not np.array_equal(y_fast, y_slow)  # the option does change the computation


def _conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    dims = ("NHWC", "HWIO", "NHWC")
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=dims)


def _pool(x: jax.Array) -> jax.Array:
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def test_batch_norm_fast_variance_compiles_no_costlier_than_flax_linen() -> None:
    # The CNN benchmark's first block (conv + bias, BatchNorm, relu, pool, conv),
    # differentiated for its kernels and bias. XLA's cost analysis is static, so
    # the comparison does not depend on the machine's load. blox used to trace
    # the two means before the square, which summed the backward's cotangents
    # in another order; XLA:CPU then fused BatchNorm's input gradient into the
    # next kernel gradient's transpose as a second full-size pass: 1.6 MB more
    # than flax's step here, 19 MB in the benchmark (docs/cnn-performance.md).
    x = normal(1, (16, 28, 28, 1))
    kernels = (normal(2, (3, 3, 1, 32)) * 0.3, normal(3, (3, 3, 32, 16)) * 0.1, jnp.zeros(32))
    bn = bx.BatchNorm(bx.Graph("net") / "bn", momentum=0.9, use_fast_variance=True)
    _, params = bn(bx.Params(), jnp.ones((1, 1, 1, 32)), is_training=False)
    params = params.locked()
    flax_bn = fnn.BatchNorm(use_running_average=False, momentum=0.9, use_fast_variance=True)
    variables = flax_bn.init(jax.random.key(0), jnp.ones((1, 1, 1, 32)))

    def step(norm):
        def loss(ks):
            h = norm(_conv(x, ks[0]) + ks[2].reshape(1, 1, 1, 32))
            return jnp.sum(_conv(_pool(jax.nn.relu(h)), ks[1]) ** 2)

        return jax.jit(jax.grad(loss)).lower(kernels).compile().cost_analysis()

    blox_cost = step(lambda h: bn(params, h, is_training=True)[0])
    flax_cost = step(lambda h: flax_bn.apply(variables, h, mutable=["batch_stats"])[0])
    assert blox_cost["bytes accessed"] <= flax_cost["bytes accessed"]
    assert blox_cost["flops"] <= flax_cost["flops"]
