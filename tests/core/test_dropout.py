"""`Dropout`: `x * bernoulli(key, 1 - rate) / (1 - rate)` with the Rng's next key."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import blox as bx


def _make(rate: float, seed: int = 0, rng: bool = True):
    graph = bx.Graph("net")
    stream = bx.Rng(graph / "rng")
    drop = bx.Dropout(graph / "drop", rate, rng=stream if rng else None)
    return drop, stream, stream.seed(bx.Params(), seed=seed)


def _input(shape=(4, 50)):
    return jax.random.normal(jax.random.key(5), shape) + 3.0  # no exact zeros


def test_training_equals_formula_with_the_next_rng_key() -> None:
    drop, rng, params = _make(0.3, seed=11)
    x = _input()
    params = rng.seed(params, counter=4)
    y, params = drop(params, x)
    key = jax.random.fold_in(jax.random.key(11), 4)
    mask = np.asarray(jax.random.bernoulli(key, 0.7, x.shape))
    np.testing.assert_allclose(np.asarray(y), np.asarray(x) * mask / 0.7, rtol=1e-6, atol=0)
    assert int(rng.get_counter(params)) == 5  # exactly one key drawn


def test_mask_statistics_and_scale() -> None:
    rate = 0.3
    drop, _, params = _make(rate)
    x = _input((200, 100))
    y, _ = drop(params, x)
    y, x = np.asarray(y), np.asarray(x)
    dropped = y == 0.0
    # 20000 Bernoulli draws: the standard error of the rate is about 0.0032.
    assert abs(dropped.mean() - rate) < 0.02
    np.testing.assert_allclose(y[~dropped], x[~dropped] / (1 - rate), rtol=1e-6, atol=0)
    # Kept values are scaled so that the mean is preserved in expectation.
    assert abs(y.mean() / x.mean() - 1.0) < 0.05


@pytest.mark.parametrize("rate", [0.0, 0.5])
def test_eval_mode_is_identity_and_draws_no_key(rate: float) -> None:
    drop, rng, params = _make(rate)
    x = _input()
    y, after = drop(params, x, is_training=False)
    assert y is x
    assert after == params
    assert int(rng.get_counter(after)) == 0


def test_rate_zero_is_identity_and_draws_no_key_even_when_training() -> None:
    drop, rng, params = _make(0.0)
    x = _input()
    y, after = drop(params, x, is_training=True)
    assert y is x
    assert int(rng.get_counter(after)) == 0
    no_rng, _, _ = _make(0.0, rng=False)
    assert no_rng(bx.Params(), x)[0] is x  # no Rng needed at all


def test_same_seed_same_mask_and_successive_calls_differ() -> None:
    x = _input()
    first, _, p1 = _make(0.5, seed=3)
    second, _, p2 = _make(0.5, seed=3)
    other, _, p3 = _make(0.5, seed=4)
    y1, p1 = first(p1, x)
    y2, _ = second(p2, x)
    y3, _ = other(p3, x)
    np.testing.assert_array_equal(np.asarray(y1), np.asarray(y2))
    assert (np.asarray(y1) != np.asarray(y3)).any()
    y_next, _ = first(p1, x)
    assert (np.asarray(y_next) != np.asarray(y1)).any()


def test_jit_draws_the_same_mask_as_eager() -> None:
    drop, _, params = _make(0.4)
    x = _input()
    eager, p_eager = drop(params, x)
    jitted, p_jit = jax.jit(drop)(params, x)
    np.testing.assert_array_equal(np.asarray(jitted), np.asarray(eager))
    assert p_jit[("net", "rng", "counter")].value == p_eager[("net", "rng", "counter")].value


def test_bfloat16_keeps_dtype() -> None:
    drop, _, params = _make(0.5)
    y, _ = drop(params, _input().astype(jnp.bfloat16))
    assert y.dtype == jnp.bfloat16


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, "0.5"])
def test_rate_out_of_range_is_a_value_error(rate) -> None:
    with pytest.raises(
        ValueError,
        match=rf"Dropout at 'net/drop': expected a dropout rate in \[0, 1\), got {rate!r}\. Fix:",
    ):
        _make(rate)


def test_training_without_rng_is_a_value_error() -> None:
    drop, _, params = _make(0.5, rng=False)
    with pytest.raises(
        ValueError,
        match=r"Dropout at 'net/drop': expected an Rng to draw dropout masks, got rng=None\. "
        r"Fix:",
    ):
        drop(params, _input())
    y, _ = drop(params, _input(), is_training=False)  # evaluation needs no Rng
    np.testing.assert_array_equal(np.asarray(y), np.asarray(_input()))


# -- broadcast_dims and agreement with flax.linen -------------------------------------------


@pytest.mark.parametrize("broadcast_dims", [(), (0,), (-1, 1)], ids=["none", "batch", "two"])
def test_matches_flax_dropout_with_the_same_key(broadcast_dims) -> None:
    import flax.linen as fnn

    drop, rng, params = _make(0.4, seed=7)
    drop = bx.Dropout(bx.Graph("other") / "drop", 0.4, rng=rng, broadcast_dims=broadcast_dims)
    x = _input((3, 4, 5))
    y, after = drop(params, x)
    key = jax.random.fold_in(jax.random.key(7), 0)  # the Rng's first key
    expected = fnn.Dropout(0.4, broadcast_dims=broadcast_dims).apply(
        {}, x, deterministic=False, rng=key
    )
    np.testing.assert_array_equal(np.asarray(y), np.asarray(expected))
    assert int(rng.get_counter(after)) == 1
    mask = np.asarray(y) != 0
    for axis in broadcast_dims:
        assert (mask == np.take(mask, [0], axis=axis)).all()  # shared along the axis


def test_dropped_cells_are_zero_even_for_non_finite_inputs() -> None:
    drop, _, params = _make(0.5)
    x = jnp.full((4, 50), jnp.inf)
    y, _ = drop(params, x)
    y = np.asarray(y)
    assert set(np.unique(y).tolist()) == {0.0, np.inf}


@pytest.mark.parametrize("axis", [3, -4])
def test_broadcast_dim_outside_the_rank_is_a_value_error(axis: int) -> None:
    graph = bx.Graph("net")
    rng = bx.Rng(graph / "rng")
    drop = bx.Dropout(graph / "drop", 0.5, rng=rng, broadcast_dims=(axis,))
    with pytest.raises(
        ValueError,
        match=rf"Dropout at 'net/drop': expected broadcast_dims within the input's rank 3, "
        rf"got axis {axis} for shape \(2, 3, 4\)\. Fix:",
    ):
        drop(rng.seed(bx.Params(), seed=0), jnp.ones((2, 3, 4)))


@pytest.mark.parametrize("dims", [0, (0.5,), (True,)], ids=["int", "float", "bool"])
def test_broadcast_dims_not_a_sequence_of_ints_is_a_type_error(dims) -> None:
    with pytest.raises(
        TypeError,
        match=r"Dropout at 'net/drop': expected broadcast_dims as a sequence of ints, got .*\. Fix:",
    ):
        bx.Dropout(bx.Graph("net") / "drop", 0.5, broadcast_dims=dims)
