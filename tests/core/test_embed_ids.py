"""`Embed` ids out of range: concrete ids raise; traced ids follow `jnp.take(mode="fill")`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import blox as bx
from blox import eager as nn
from blox.eager import torch_nn

RANGE = r"expected ids in \[0, 5\), got ids from {} to {} \(first bad id {} at index {}\)\. Fix:"


def _core():
    graph = bx.Graph("net")
    rng = bx.Rng(graph / "rng")
    emb = bx.Embed(graph / "emb", 5, 2, rng=rng)
    _, params = emb(rng.seed(bx.Params(), seed=0), jnp.array([0]))
    return emb, params.locked()


@pytest.mark.parametrize(
    ("ids", "low", "high", "bad", "index"),
    [
        (jnp.array([[0, 4], [5, 1]]), 0, 5, 5, r"\(1, 0\)"),
        (jnp.array([2, -1]), -1, 2, -1, r"\(1,\)"),
        (np.array([7], np.int64), 7, 7, 7, r"\(0,\)"),
    ],
    ids=["too_large", "negative", "numpy"],
)
def test_core_concrete_ids_out_of_range_raise(ids, low, high, bad, index):
    emb, params = _core()
    with pytest.raises(
        ValueError, match=r"^Embed at 'net/emb': " + RANGE.format(low, high, bad, index)
    ):
        emb(params, ids)


def test_core_traced_ids_follow_take_fill():
    emb, params = _core()
    table = np.asarray(params[("net", "emb", "embedding")].value)
    ids = jnp.array([4, -1, -5, 5, -6, 100])
    h = np.asarray(jax.jit(lambda p, i: emb(p, i)[0])(params, ids))
    # In [-5, 5): a row (negatives from the end); outside: NaN.
    np.testing.assert_array_equal(h[:3], table[[4, 4, 0]])
    assert np.isnan(h[3:]).all()
    # Out-of-range ids get no gradient.
    grad = jax.jit(jax.grad(lambda t, i: jnp.take(t, i, axis=0, mode="fill").sum()))
    expected = np.asarray(grad(jnp.asarray(table), ids))
    loss = jax.grad(lambda p, i: jnp.nansum(emb(p, i)[0]), allow_int=True)
    got = jax.jit(loss)(params, ids)[("net", "emb", "embedding")].value
    np.testing.assert_array_equal(np.asarray(got), expected)
    np.testing.assert_array_equal(expected.sum(axis=1), [2.0, 0.0, 0.0, 0.0, 4.0])


def test_eager_embed_checks_concrete_ids_before_its_compiled_call():
    emb = nn.Embed(5, 2, seed=0)
    emb(jnp.array([1, 2]))
    before = nn.compile_stats(emb)
    with pytest.raises(
        ValueError, match=r"^nn\.Embed\(5, 2\): " + RANGE.format(3, 9, 9, r"\(1,\)")
    ):
        emb(jnp.array([3, 9]))
    assert nn.compile_stats(emb) == before  # refused before dispatch: nothing traced


def test_torch_embedding_checks_concrete_ids():
    emb = torch_nn.Embedding(5, 2, seed=0)
    with pytest.raises(
        ValueError, match=r"^nn\.Embedding\(5, 2\): " + RANGE.format(-2, 0, -2, r"\(0,\)")
    ):
        emb(jnp.array([-2, 0]))


def test_filter_jit_steps_take_traced_ids_unchecked():
    emb, torch_emb = nn.Embed(5, 2, seed=0), torch_nn.Embedding(5, 2, seed=0)
    step = nn.filter_jit(lambda m, ids: m(ids))
    ids = jnp.array([4, -1, 5])
    for model, table in ((emb, emb.embedding), (torch_emb, torch_emb.weight)):
        h = np.asarray(step(model, ids))
        np.testing.assert_array_equal(h[:2], np.asarray(table)[[4, 4]])
        assert np.isnan(h[2]).all()
