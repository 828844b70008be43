"""Property tests: eager call == `nn.filter_jit` call == `model.functional()` under `jax.jit`.

Inputs have 0-2 leading batch dims of size 1-5 and random values; stochastic
layers run in training mode with the RNG state rewound between the three
paths, so all three must draw the same mask. Every new shape costs XLA
compilations on each path, so the shapes come from a small fixed set and
the values vary freely.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from blox import eager as nn

# (batch dims, features): every batch rank and both feature counts, in three
# input shapes rather than all six pairs (each shape compiles three paths).
MLP_SHAPES = [((), 3), ((5,), 4), ((2, 3), 3)]
CONV_BATCHES = [(), (2,), (1, 3)]
forward = nn.filter_jit(lambda model, x: model(x))


@functools.cache
def mlp(features):
    model = nn.Sequential(
        nn.Linear(features, 6, seed=0),
        jax.nn.relu,
        nn.Dropout(0.5, seed=1),
        nn.Linear(6, 2, seed=2),
    )
    return model, jax.jit(model.functional()[0])


@functools.cache
def conv():
    model = nn.Sequential(nn.Conv(2, 3, kernel_size=(2, 2), seed=0), nn.Dropout(0.25, seed=1))
    return model, jax.jit(model.functional()[0])


def three_ways_agree(model, jitted_fn, x):
    _, params = model.functional()
    eager = model(x)
    after_eager = model.state_dict()
    model.load_params(params)  # rewind the RNG so each path draws the same mask
    jitted = forward(model, x)
    functional, new = jitted_fn(params, x)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, after_eager[name], err_msg=name)
        np.testing.assert_array_equal(new[tuple(name.split("."))].value, value, err_msg=name)
    assert eager.shape == jitted.shape == functional.shape
    np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(functional, eager, rtol=1e-5, atol=1e-6)
    return eager


def data(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


@settings(deadline=None, max_examples=15)
@given(shape=st.sampled_from(MLP_SHAPES), seed=st.integers(0, 2**16))
def test_mlp_eager_jit_functional_agree(shape, seed):
    batch, features = shape
    model, jitted_fn = mlp(features)
    out = three_ways_agree(model, jitted_fn, data(seed, (*batch, features)))
    assert out.shape == (*batch, 2)


@settings(deadline=None, max_examples=15)
@given(batch=st.sampled_from(CONV_BATCHES), seed=st.integers(0, 2**16))
def test_conv_eager_jit_functional_agree(batch, seed):
    model, jitted_fn = conv()
    out = three_ways_agree(model, jitted_fn, data(seed, (*batch, 4, 4, 2)))
    assert out.shape == (*batch, 4, 4, 3)
