"""Eager WeightNorm/SpectralNorm equal their core twins bit for bit (both compiled)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from blox import eager as nn

U = "inner/kernel/u"


def _x(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, np.float32))


def test_spectral_norm_advances_u_by_itself_under_filter_jit_like_core() -> None:
    sn = nn.SpectralNorm(nn.Linear(4, 3, seed=0), seed=1)
    core, params = sn.core_layer, sn.core_params()
    step = jax.jit(lambda p, x: core(p, x, is_training=True))
    forward = nn.filter_jit(lambda model, x: model(x))
    for i in range(2):
        x = _x((2, 4), i)
        y_core, params = step(params, x)
        y = forward(sn, x)
        np.testing.assert_array_equal(y, y_core)
        np.testing.assert_array_equal(sn.__dict__[U], params[("blox", "layer", U)].value)
    sn.eval()
    frozen = sn.__dict__[U]
    y = forward(sn, _x((2, 4), 5))
    y_core, _ = jax.jit(lambda p, x: core(p, x, is_training=False))(params, _x((2, 4), 5))
    np.testing.assert_array_equal(y, y_core)
    np.testing.assert_array_equal(sn.__dict__[U], frozen)


def test_weight_norm_equals_core_and_keeps_the_layer_params() -> None:
    lin = nn.Linear(4, 3, seed=0)
    wn = nn.WeightNorm(lin)
    np.testing.assert_array_equal(wn.inner.kernel, lin.kernel)
    x = _x((2, 4))
    y_core, _ = jax.jit(wn.core_layer)(wn.core_params(), x)
    np.testing.assert_array_equal(nn.filter_jit(lambda m, x: m(x))(wn, x), y_core)
    with pytest.raises(
        TypeError,
        match=r"nn\.WeightNorm\(function\): expected an eager layer "
        r"built on a core twin",
    ):
        nn.WeightNorm(lambda x: x)
