"""Combinators: Sequential splatting (as flax), Parallel, BatchApply (flax), Lambda, EMA (PAX)."""

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import blox as bx

from ._flax_ref import close, inputs


def _graph():
    graph = bx.Graph("net")
    rng = bx.Rng(graph / "rng")
    return graph, rng, rng.seed(bx.Params(), seed=0)


def test_sequential_splats_tuples_and_dicts_like_flax() -> None:
    graph, _, params = _graph()
    split = lambda x: (x[:, :2], x[:, 2:])  # noqa: E731
    join = lambda a, b: {"a": a, "b": b}  # noqa: E731
    last = lambda a, b: a * 2.0 - b.sum(-1, keepdims=True)  # noqa: E731
    seq = bx.Sequential(graph / "seq", [split, join, last], splat=True)
    x = inputs((3, 5))
    y, _ = seq(params, x)
    expected = fnn.Sequential([split, join, last]).apply({}, x)
    np.testing.assert_array_equal(y, expected)
    # The default passes a tuple whole, as the ancestor did.
    whole = bx.Sequential(graph / "whole", [split, lambda pair: pair[0]])
    np.testing.assert_array_equal(whole(params, x)[0], x[:, :2])


def test_parallel_applies_layer_i_to_item_i() -> None:
    graph, rng, params = _graph()
    lin = bx.Linear(graph / "lin", 2, rng=rng)
    par = bx.Parallel(graph / "par", [lin, bx.Identity(graph / "id"), jnp.tanh])
    a, b, c = inputs((4, 3)), inputs((4, 2), seed=2), inputs((1,), seed=3)
    (ya, yb, yc), params = par(params, (a, b, c))
    np.testing.assert_array_equal(ya, lin(params, a)[0])
    assert yb is b
    np.testing.assert_array_equal(yc, jnp.tanh(c))
    with pytest.raises(
        ValueError,
        match=r"Parallel at 'net/par': expected a sequence of 3 "
        r"inputs, one per layer, got 2\. Fix:",
    ):
        par(params, (a, b))


def test_batch_apply_matches_flax() -> None:
    graph, rng, params = _graph()
    a, b = inputs((2, 3, 4)), inputs((4,), seed=2)
    f = lambda a, b: jnp.dot(a, b)  # noqa: E731
    ba = bx.BatchApply(graph / "ba", f)
    np.testing.assert_array_equal(ba(params, a, b)[0], fnn.BatchApply(f)(a, b))
    # A blox layer inside: the same as the layer on the merged batch.
    lin = bx.Linear(graph / "lin", 5, rng=rng)
    y, params = bx.BatchApply(graph / "ba2", lin)(params, a)
    close(y, lin(params, a.reshape(6, 4))[0].reshape(2, 3, 5))
    with pytest.raises(
        ValueError,
        match=r"BatchApply at 'net/ba': expected at least one "
        r"input array of rank >= 2, got ranks \[1\]\. Fix:",
    ):
        ba(params, b)


def test_lambda_is_mlax_f_and_frng_and_pax_lambda() -> None:
    graph, rng, params = _graph()
    f = bx.Lambda(graph / "f", jax.nn.relu, eval_fn=jnp.abs)
    x = inputs((5,))
    np.testing.assert_array_equal(f(params, x)[0], jax.nn.relu(x))
    np.testing.assert_array_equal(f(params, x, is_training=False)[0], jnp.abs(x))
    noisy = bx.Lambda(graph / "frng", lambda x, key: x + jax.random.normal(key, x.shape), rng=rng)
    y, after = noisy(params, x)
    key, _ = rng(params)
    np.testing.assert_array_equal(y, x + jax.random.normal(key, x.shape))
    assert int(rng.get_counter(after)) == int(rng.get_counter(params)) + 1
    with pytest.raises(
        TypeError,
        match=r"Lambda at 'net/bad': expected fn to be callable, "
        r"got int\. Fix:",
    ):
        bx.Lambda(graph / "bad", 3)


def test_ema_follows_pax_formula_with_and_without_debias() -> None:
    graph, _, params = _graph()
    xs = [{"w": inputs((3,), seed=s), "n": jnp.int32(s)} for s in range(3)]
    for debias in (False, True):
        ema = bx.EMA(graph / f"ema{debias}", 0.8, debias=debias, allow_int=True)
        expected = np.zeros(3) if not debias else None
        for x in xs:
            avg, params = ema(params, x)
            w = np.asarray(x["w"], np.float64)
            expected = w if expected is None else 0.8 * expected + 0.2 * w
            np.testing.assert_allclose(avg["w"], expected, rtol=1e-6, atol=1e-6)
            assert avg["n"] == x["n"]
        frozen, _ = ema(params, xs[0], is_training=False)
        np.testing.assert_array_equal(frozen["w"], avg["w"])
    assert params[("net", "emaTrue", "debias")].value
    assert not params[("net", "emaTrue", "average['w']")].trainable
    start = bx.EMA(graph / "start", 0.5, initial_value=jnp.ones(2))
    avg, params = start(params, jnp.zeros(2))
    np.testing.assert_array_equal(avg, [0.5, 0.5])
    with pytest.raises(
        TypeError,
        match=r"EMA at 'net/int': expected floating leaves, got "
        r"int32 at \['n'\]\. Fix:",
    ):
        bx.EMA(graph / "int", 0.9)(params, xs[0])
    with pytest.raises(ValueError, match=r"EMA at 'net/rate': expected decay_rate in \[0, 1\]"):
        bx.EMA(graph / "rate", 1.5)
