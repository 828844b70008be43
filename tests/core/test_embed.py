"""`Embed`: row lookup and the tied output layer `h @ E.T`."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import blox as bx

TOL = {"rtol": 1e-5, "atol": 1e-5}


def _make(**kwargs):
    graph = bx.Graph("net")
    rng = bx.Rng(graph / "rng")
    emb = bx.Embed(graph / "emb", 6, 3, rng=rng, **kwargs)
    return emb, rng.seed(bx.Params(), seed=0)


@pytest.mark.parametrize("shape", [(), (4,), (2, 3)], ids=["batch0", "batch1", "batch2"])
def test_lookup_returns_rows_of_the_table(shape: tuple[int, ...]) -> None:
    emb, params = _make()
    ids = jax.random.randint(jax.random.key(1), shape, 0, 6)
    h, params = emb(params, ids)
    table = np.asarray(params[("net", "emb", "embedding")].value)
    assert table.shape == (6, 3)
    assert h.shape == (*shape, 3)
    np.testing.assert_array_equal(np.asarray(h), table[np.asarray(ids)])


def test_attend_is_the_transposed_table_product() -> None:
    emb, params = _make()
    _, params = emb(params, jnp.array([0]))
    h = jax.random.normal(jax.random.key(2), (2, 4, 3))
    logits, _ = emb.attend(params, h)
    table = np.asarray(params[("net", "emb", "embedding")].value)
    assert logits.shape == (2, 4, 6)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(h) @ table.T, **TOL)


def test_attend_alone_creates_the_table() -> None:
    emb, params = _make()
    logits, params = emb.attend(params, jnp.ones((1, 3)))
    table = np.asarray(params[("net", "emb", "embedding")].value)
    np.testing.assert_allclose(np.asarray(logits), table.sum(axis=1)[None], **TOL)


def test_custom_init_and_metadata() -> None:
    emb, params = _make(
        embedding_init=lambda key, shape, dtype: jnp.arange(18.0, dtype=dtype).reshape(shape),
        embedding_metadata={"sharding": ("vocab", None)},
    )
    h, params = emb(params, jnp.array([2, 5]))
    np.testing.assert_array_equal(np.asarray(h), [[6.0, 7.0, 8.0], [15.0, 16.0, 17.0]])
    assert params[("net", "emb", "embedding")].sharding == ("vocab", None)


@pytest.mark.parametrize(
    ("ids", "got"),
    [
        (jnp.array([0.0, 1.0]), "float32"),
        (jnp.array([True, False]), "bool"),
        ([0, 1], "list"),
    ],
    ids=["float", "bool", "list"],
)
def test_non_integer_ids_are_a_type_error(ids, got: str) -> None:
    emb, params = _make()
    with pytest.raises(
        TypeError, match=rf"Embed at 'net/emb': expected integer indices, got {got}\. Fix:"
    ):
        emb(params, ids)


@pytest.mark.parametrize("shape", [(2, 4), ()], ids=["wrong_size", "scalar"])
def test_attend_with_the_wrong_feature_size_is_a_value_error(shape: tuple[int, ...]) -> None:
    emb, params = _make()
    with pytest.raises(
        ValueError,
        match=rf"Embed at 'net/emb': expected inputs \(\*batch, 3\), got shape "
        rf"{re.escape(str(shape))}\. Fix:",
    ):
        emb.attend(params, jnp.ones(shape))
