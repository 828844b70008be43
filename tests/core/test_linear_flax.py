"""The linear family against flax.linen (params copied by path) and mlax/PAX formulas."""

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import blox as bx

from ._flax_ref import agree, inputs

P = ("net", "n")


def _node() -> bx.Graph:
    return bx.Graph("net") / "n"


def _rng_node() -> tuple[bx.Graph, bx.Params]:
    graph = bx.Graph("net")
    rng = bx.Rng(graph / "rng")
    return graph / "n", rng, rng.seed(bx.Params(), seed=0)


@pytest.mark.parametrize(
    "options, shape",
    [
        (dict(features=(4, 2), axis=(-2, -1)), (2, 3, 5)),
        (dict(features=3, axis=1, batch_dims=(0,)), (2, 4, 5)),
    ],
    ids=["two_axes_to_two", "batch_dims_middle_axis"],
)
def test_dense_general_matches_flax(options, shape) -> None:
    agree(fnn.DenseGeneral(**options), bx.DenseGeneral(_node(), **options), inputs(shape), P)


def test_dense_general_init_sees_the_flat_matrix() -> None:
    # The initialiser gets (fan_in, fan_out) as in flax, so lecun_normal's
    # variance is 1 / (3 * 5) for a (3, 5) -> (4, 2) map, not 1 / 5.
    seen = []

    def init(key, shape, dtype):
        seen.append(shape)
        return jnp.zeros(shape, dtype)

    layer = bx.DenseGeneral(_node(), (4, 2), axis=(-2, -1), kernel_init=init, bias_init=init)
    _, params = layer(bx.Params(), jnp.ones((2, 3, 5)))
    assert seen == [(15, 8), (8,)]
    assert params[P + ("kernel",)].value.shape == (3, 5, 4, 2)


@pytest.mark.parametrize(
    "shape, equation, x_shape",
    [((5, 6, 7), "abc,cde->abde", (3, 4, 5)), ((4, 6), "...c,cd->...d", (2, 3, 4))],
    ids=["explicit", "ellipsis"],
)
def test_einsum_matches_flax(shape, equation, x_shape) -> None:
    agree(fnn.Einsum(shape, equation), bx.Einsum(_node(), shape, equation), inputs(x_shape), P)


def test_einsum_equation_at_call_and_errors() -> None:
    node, rng, params = _rng_node()
    layer = bx.Einsum(node, (3, 2), rng=rng)
    y, params = layer(params, jnp.ones((4, 3)), "ab,bc->ac")
    assert y.shape == (4, 2)
    with pytest.raises(
        ValueError,
        match=r"Einsum at 'net/n': expected einsum_str in the "
        r"constructor or the call \(exactly one\), got None and None\. Fix:",
    ):
        layer(params, jnp.ones((4, 3)))
    with pytest.raises(ValueError, match=r"expected an explicit two-operand equation"):
        layer(params, jnp.ones((4, 3)), "ab,bc")
    with pytest.raises(ValueError, match=r"expected the kernel operand to name the 2 axes"):
        layer(params, jnp.ones((4, 3)), "ab,bcd->acd")


def test_linear_and_embed_dtypes_match_flax() -> None:
    x = inputs((2, 3), dtype=jnp.bfloat16)
    options = dict(dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    params = agree(fnn.Dense(4, **options), bx.Linear(_node(), 4, **options), x, P)
    assert params[P + ("kernel",)].value.dtype == jnp.bfloat16
    flax_emb = fnn.Embed(5, 3, dtype=jnp.bfloat16)
    variables = flax_emb.init(jax.random.key(0), jnp.array([1, 2]))
    emb = bx.Embed(_node(), 5, 3, dtype=jnp.bfloat16)
    table = bx.Params.from_dict({P + ("embedding",): variables["params"]["embedding"]})
    ids = jnp.array([[0, 4], [2, 2]])
    y, _ = emb(table, ids)
    np.testing.assert_array_equal(y, flax_emb.apply(variables, ids))
    q = inputs((2, 3))
    logits, _ = emb.attend(table, q)
    expected = flax_emb.apply(variables, q, method="attend")
    assert logits.dtype == expected.dtype == jnp.bfloat16
    np.testing.assert_array_equal(logits, expected)


def test_bias_and_scaler_follow_the_mlax_formulas() -> None:
    node, rng, params = _rng_node()
    normal = jax.nn.initializers.normal(1.0)
    add = bx.Bias(node, (None, 3), bias_init=normal, rng=rng)
    mul = bx.Scaler(node.parent / "s", 3, scale_init=normal, rng=rng)
    x = inputs((2, 4, 3))
    y, params = add(params, x)
    b = params[P + ("bias",)].value
    assert b.shape == (1, 3)
    np.testing.assert_array_equal(y, x + b[None])
    y, params = mul(params, x)
    s = params[("net", "s", "scale")].value
    np.testing.assert_array_equal(y, x * s[None, None])
    with pytest.raises(
        ValueError,
        match=r"Bias at 'net/n': expected inputs ending in "
        r"\(None, 3\) \(None: any size\), got shape \(2, 4\)\. Fix:",
    ):
        add(params, jnp.ones((2, 4)))
    with pytest.raises(
        ValueError,
        match=r"Scaler at 'net/x': expected in_features to be a "
        r"positive int or a tuple of positive ints and None, got 0\. Fix:",
    ):
        bx.Scaler(node.parent / "x", 0)


def test_identity_returns_its_input() -> None:
    tree = {"a": jnp.ones(2), "b": (jnp.zeros(1),)}
    out, params = bx.Identity(_node())(bx.Params(), tree)
    assert out is tree and len(params) == 0


def test_dense_general_errors() -> None:
    with pytest.raises(
        ValueError,
        match=r"DenseGeneral at 'net/n': expected batch_dims to "
        r"be the leading axes 0\.\.k-1, got \(1,\)\. Fix:",
    ):
        bx.DenseGeneral(_node(), 3, batch_dims=(1,))
    layer = bx.DenseGeneral(bx.Graph("net") / "n", 3, axis=(0, 0))
    with pytest.raises(ValueError, match=r"expected distinct axes, none of them a batch dim"):
        layer(bx.Params(), jnp.ones((2, 3)))
    layer = bx.DenseGeneral(bx.Graph("net") / "n", 3, axis=2)
    with pytest.raises(
        ValueError,
        match=r"expected axis 2 and batch_dims \(\) within an "
        r"input of rank 2, got shape \(2, 3\)\. Fix:",
    ):
        layer(bx.Params(), jnp.ones((2, 3)))
