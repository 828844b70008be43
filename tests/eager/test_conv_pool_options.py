"""Eager conv, pool and dropout options against their core twins, bit for bit.

The options of issue 13 (padding modes, `channels_first`, `mask`,
`transpose_kernel`, `ConvLocal`, `Dropout`'s
`broadcast_dims`) pass through the eager shells unchanged: each case builds
the eager layer with ``seed=SEED`` and a core twin seeded the same way, and
compares parameters, compiled outputs and state.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import blox as bx
from blox import eager as nn

ROOT = "twin"
SEED = 5
MASK = jnp.tril(jnp.ones((3, 3, 2, 4)))
FLIPPED = {
    "strides": 2,
    "padding": ((1, 2),),
    "transpose_kernel": True,
    "feature_group_count": 2,
    "channels_first": True,
}

CASES = {
    "conv_replicate_channels_first_mask": (
        lambda: nn.Conv(
            2, 4, (3, 3), padding="REPLICATE", channels_first=True, mask=MASK, seed=SEED
        ),
        lambda g, rng: bx.Conv(
            g, (3, 3), 4, rng=rng, padding="REPLICATE", channels_first=True, mask=MASK
        ),
        (2, 2, 5, 6),
    ),
    "transpose_flipped_channels_first": (
        lambda: nn.ConvTranspose(4, 6, 3, seed=SEED, **FLIPPED),
        lambda g, rng: bx.ConvTranspose(g, 3, 6, rng=rng, **FLIPPED),
        (2, 4, 5),
    ),
    "local_circular": (
        lambda: nn.ConvLocal(2, 3, (2, 2), (4, 5), padding="CIRCULAR", seed=SEED),
        lambda g, rng: bx.ConvLocal(g, (2, 2), 3, rng=rng, padding="CIRCULAR"),
        (2, 4, 5, 2),
    ),
}


def _twin(build: Any, x: jax.Array) -> tuple[Any, bx.Params]:
    graph = bx.Graph(ROOT)
    rng = bx.Rng(graph / "rng")
    core = build(graph / "layer", rng)
    # Created and applied in one compiled program, as the eager constructor
    # creates its params in one (the bits of compiled samplers).
    seeded = rng.seed(bx.Params(), seed=jax.random.key(SEED))
    out, params = jax.jit(core.__call__)(seeded, x)
    return core, out, params


def _input(shape: tuple[int, ...], i: int = 0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(i).standard_normal(shape, np.float32))


@pytest.mark.parametrize("case", CASES)
def test_eager_equals_core_bit_for_bit(case: str) -> None:
    make_eager, make_core, shape = CASES[case]
    layer = make_eager()
    x = _input(shape, 1)
    _, expected, params = _twin(make_core, x)
    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(
            np.asarray(value), np.asarray(params[(ROOT, "layer", name)].value)
        )
    got = layer(x)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


def test_dropout_broadcast_dims_equals_core_and_advances_its_state() -> None:
    layer = nn.Dropout(0.5, broadcast_dims=(1,), seed=SEED)
    graph = bx.Graph(ROOT)
    rng = bx.Rng(graph / "rng")
    core = bx.Dropout(graph / "layer", 0.5, rng=rng, broadcast_dims=(1,))
    params = rng.seed(bx.Params(), seed=jax.random.key(SEED))
    step = jax.jit(lambda p, x: core(p, x, is_training=True))
    for i in range(2):
        x = _input((2, 3, 4), i)
        expected, params = step(params, x)
        got = layer(x)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
        assert (np.asarray(got != 0) == np.asarray(got[:, :1] != 0)).all()
    assert int(layer.rng.counter) == int(rng.get_counter(params)) == 2
    assert repr(layer) == "Dropout(rate=0.5, broadcast_dims=(1,))"


def test_pools_are_the_core_functions() -> None:
    for name in ("pool", "sum_pool", "avg_pool", "max_pool", "min_pool"):
        assert getattr(nn, name) is getattr(bx, name)


def test_channels_first_call_is_shape_checked() -> None:
    up = nn.ConvTranspose(4, 6, 3, seed=0, **FLIPPED)
    assert up(jnp.ones((4, 5))).shape == (6, 10)  # unbatched
    with pytest.raises(
        TypeError,
        match=r"ConvTranspose\(4, 6, kernel_size=\(3,\), channels_first=True, .*\): expected x "
        r"to be a float array of shape \(\*batch, 4, w\), got f32\[1,5,4\]\. Fix:",
    ):
        up(jnp.ones((1, 5, 4)))  # channels last given to a channels-first layer


def test_conv_local_repr_and_input_size_error() -> None:
    local = nn.ConvLocal(2, 3, (2, 2), (4, 5), padding="CIRCULAR", seed=0)
    assert repr(local) == (
        "ConvLocal(2, 3, kernel_size=(2, 2), input_size=(4, 5), padding='CIRCULAR', strides=1)"
    )
    assert local.kernel.shape == (4, 5, 8, 3) and local.bias.shape == (4, 5, 3)
    with pytest.raises(
        ValueError,
        match=r"nn\.ConvLocal\(2, 3, kernel_size=\(3, 3\)\): expected input_size with 2 spatial "
        r"sizes \(one per kernel dim\), got 6\. Fix:",
    ):
        nn.ConvLocal(2, 3, (3, 3), 6)
