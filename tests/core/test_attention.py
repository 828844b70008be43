"""Attention functions, RoPE and `MultiHeadAttention` against flax.linen and formulas.

flax.linen's `MultiHeadDotProductAttention` is the reference: its params are
copied into a blox container by path and the outputs compared. The cache is
checked against the full causal forward.
"""

import functools

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import blox as bx

from ._flax_ref import normal

# float32 attention: two matmuls and a softmax over <= 8 positions; the fused
# jax.nn path scales logits where flax scales queries, so rounding differs.
TOL = {"rtol": 1e-5, "atol": 1e-6}
NORMAL = jax.nn.initializers.normal(1.0)


def _normal(shape, seed):
    return normal(seed, shape)  # jax.random.normal's values, no compile per shape


def _graph():
    graph = bx.Graph("net")
    rng = bx.Rng(graph / "rng")
    return graph, rng, rng.seed(bx.Params(), seed=0)


def _from_flax(variables, prefix=("net", "mha")):
    """flax's nested param dict as blox params, by path."""
    flat = {}

    def visit(tree, path):
        for name, value in tree.items():
            if isinstance(value, dict):
                visit(value, (*path, name))
            else:
                flat[(*prefix, *path, name)] = value

    visit(jax.tree.map(lambda x: x, dict(variables["params"])), ())
    return flat


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _padding_mask(batch, q_len, kv_len):
    q_real = jnp.arange(q_len)[None, :] < jnp.array([[q_len], [q_len - 1]])[:batch]
    kv_real = jnp.arange(kv_len)[None, :] < jnp.array([[kv_len], [kv_len - 2]])[:batch]
    return bx.make_attention_mask(q_real, kv_real)


# -- masks -----------------------------------------------------------------------------


def test_masks_equal_flax() -> None:
    real = jnp.array([[1, 1, 0, 1], [1, 0, 0, 0]])
    np.testing.assert_array_equal(
        bx.make_attention_mask(real, real[:, :3], extra_batch_dims=1),
        fnn.make_attention_mask(real, real[:, :3], extra_batch_dims=1),
    )
    x = jnp.zeros((2, 5))
    np.testing.assert_array_equal(bx.make_causal_mask(x), fnn.make_causal_mask(x))
    pad = bx.make_attention_mask(real, real, dtype=jnp.bool_)
    causal = bx.make_causal_mask(real)
    np.testing.assert_array_equal(
        bx.combine_masks(pad, None, causal), fnn.combine_masks(pad, None, causal)
    )
    assert bx.combine_masks(None, None) is None


# -- the functions -----------------------------------------------------------------------


@jax.jit
def _mask_and_bias_case(q, k, v, bias, mask):
    got_w = bx.dot_product_attention_weights(q, k, bias, mask)
    want_w = fnn.dot_product_attention_weights(q, k, bias, mask, deterministic=True)
    got = bx.dot_product_attention(q, k, v, bias, mask)  # the fused jax.nn path
    want = fnn.dot_product_attention(q, k, v, bias, mask, deterministic=True)
    # The fused path equals the textbook weights @ values.
    textbook = jnp.einsum("...hqk,...khd->...qhd", got_w, v)
    return got_w, want_w, got, want, textbook


def test_functions_with_mask_and_bias_equal_flax() -> None:
    q, k, v = _normal((2, 5, 2, 4), 1), _normal((2, 7, 2, 4), 2), _normal((2, 7, 2, 3), 3)
    mask = bx.combine_masks(_padding_mask(2, 5, 7), jnp.ones((1, 2, 5, 7)))
    bias = _normal((2, 1, 5, 7), 4)
    # One compiled program for both sides (op by op, every primitive compiles).
    got_w, want_w, got, want, textbook = _mask_and_bias_case(q, k, v, bias, mask)
    np.testing.assert_allclose(got_w, want_w, **TOL)
    np.testing.assert_allclose(got, want, **TOL)
    np.testing.assert_allclose(got, textbook, **TOL)


def test_functions_without_batch_axes_and_with_two() -> None:
    @jax.jit
    def both(q, k, v, mask):
        return (
            bx.dot_product_attention(q, k, v, mask=mask),
            fnn.dot_product_attention(q, k, v, mask=mask, deterministic=True),
        )

    @jax.jit
    def both_two_batch_axes(q2, k2, v2, mask4):
        return (
            bx.dot_product_attention(q2, k2, v2, mask=mask4),
            fnn.dot_product_attention(q2, k2, v2, mask=mask4[None, None, None], deterministic=True),
        )

    q, k, v = _normal((3, 2, 4), 1), _normal((6, 2, 4), 2), _normal((6, 2, 4), 3)
    mask = jnp.tril(jnp.ones((3, 6), bool))
    np.testing.assert_allclose(*both(q, k, v, mask), **TOL)
    q2, k2 = _normal((2, 3, 4, 2, 4), 5), _normal((2, 3, 6, 2, 4), 6)
    v2 = _normal((2, 3, 6, 2, 5), 7)
    mask4 = jnp.tril(jnp.ones((4, 6), bool))
    np.testing.assert_allclose(*both_two_batch_axes(q2, k2, v2, mask4), **TOL)


def test_function_dropout_equals_flax_with_the_same_key() -> None:
    q, k, v = _normal((2, 4, 2, 4), 1), _normal((2, 6, 2, 4), 2), _normal((2, 6, 2, 4), 3)

    @jax.jit
    def case(q, k, v, key):
        pairs = []
        for broadcast in (True, False):
            options = dict(dropout_rate=0.5, dropout_rng=key, deterministic=False)
            got = bx.dot_product_attention(q, k, v, broadcast_dropout=broadcast, **options)
            want = fnn.dot_product_attention(q, k, v, broadcast_dropout=broadcast, **options)
            pairs.append((got, want))
        return pairs, bx.dot_product_attention(q, k, v)

    pairs, no_dropout = case(q, k, v, jax.random.key(3))
    for got, want in pairs:
        np.testing.assert_allclose(got, want, **TOL)
    assert not np.allclose(got, no_dropout, atol=1e-3)


def test_function_errors() -> None:
    q, k = jnp.ones((2, 3, 2, 4)), jnp.ones((2, 5, 2, 4))
    with pytest.raises(ValueError, match=r"dot_product_attention: expected query and key"):
        bx.dot_product_attention(q, jnp.ones((2, 5, 2, 3)), k)
    with pytest.raises(ValueError, match=r"expected value with key's batch axes"):
        bx.dot_product_attention(q, k, jnp.ones((2, 4, 2, 4)))
    with pytest.raises(ValueError, match=r"expected query of rank >= 3"):
        bx.dot_product_attention_weights(jnp.ones((3, 4)), k)
    with pytest.raises(ValueError, match=r"expected a mask broadcastable to .*\(2, 2, 3, 5\)"):
        bx.dot_product_attention(q, k, k, mask=jnp.ones((2, 3, 3)))
    with pytest.raises(ValueError, match=r"expected a bias broadcastable"):
        bx.dot_product_attention_weights(q, k, jnp.ones((1, 2, 2, 3, 5)))
    with pytest.raises(ValueError, match=r"expected a dropout_rng"):
        bx.dot_product_attention(q, k, k, dropout_rate=0.1, deterministic=False)
    with pytest.raises(ValueError, match=r"expected dropout_rate in \[0, 1\)"):
        bx.dot_product_attention_weights(q, k, dropout_rate=1.0)
    with pytest.raises(ValueError, match=r"combine_masks: expected masks of one rank"):
        bx.combine_masks(jnp.ones((1, 2, 2)), jnp.ones((1, 1, 2, 2)))


# -- RoPE ------------------------------------------------------------------------------------


def test_rotary_embedding_formula_and_relative_positions() -> None:
    x = _normal((2, 5, 3, 8), 1)
    positions = jnp.array([[0, 1, 2, 3, 4], [3, 4, 5, 9, 12]])
    got = jax.jit(lambda x, p: bx.apply_rotary_embedding(x, p, max_wavelength=100))(x, positions)
    # Textbook: pair (x1_i, x2_i) as a complex number times exp(i * pos * theta_i).
    xn = np.asarray(x, np.float64)
    theta = 100.0 ** (-np.arange(4) * 2 / 8)
    z = (xn[..., :4] + 1j * xn[..., 4:]) * np.exp(
        1j * np.asarray(positions)[..., None, None] * theta
    )
    np.testing.assert_allclose(got, np.concatenate([z.real, z.imag], -1), rtol=1e-5, atol=1e-5)
    # q.k after rotation depends on the offset only: shift both positions by 7.
    q, k = _normal((1, 2, 1, 8), 2), _normal((1, 2, 1, 8), 3)
    pos = jnp.array([2, 5])

    @jax.jit
    def score(shift):
        rq = bx.apply_rotary_embedding(q, pos + shift)
        rk = bx.apply_rotary_embedding(k, pos + shift)
        return jnp.einsum("bqhd,bkhd->bhqk", rq, rk)

    # float32 angles up to ~12 rad: sin/cos rounding ~1e-6 per element.
    np.testing.assert_allclose(score(0), score(7), rtol=1e-5, atol=1e-5)
    half = jax.eval_shape(bx.apply_rotary_embedding, x.astype(jnp.bfloat16), jnp.arange(5))
    assert half.dtype == jnp.bfloat16


def test_rotary_embedding_errors() -> None:
    with pytest.raises(ValueError, match=r"apply_rotary_embedding: expected x .* even head_dim"):
        bx.apply_rotary_embedding(jnp.ones((1, 4, 2, 5)), jnp.arange(4))
    with pytest.raises(ValueError, match=r"expected positions broadcastable"):
        bx.apply_rotary_embedding(jnp.ones((1, 4, 2, 6)), jnp.arange(3))


# -- MultiHeadAttention against flax.linen ----------------------------------------------------


def _pair(num_heads=2, **options):
    """A flax module and a blox twin holding the flax params."""
    graph, rng, params = _graph()
    mha = bx.MultiHeadAttention(graph / "mha", num_heads, rng=rng, **options)
    flax_mha = fnn.MultiHeadDotProductAttention(num_heads, **options)
    return mha, flax_mha, params


@pytest.mark.parametrize(
    "options",
    [{}, {"normalize_qk": True, "qkv_features": 12, "out_features": 5}, {"use_bias": False}],
    ids=["default", "normalize_qk", "no_bias"],
)
def test_self_and_cross_attention_equal_flax(options) -> None:
    mha, flax_mha, params = _pair(**options)
    flax_mha = flax_mha.clone(deterministic=True)
    xq, xk, xv = _normal((2, 5, 8), 1), _normal((2, 7, 6), 2), _normal((2, 7, 3), 3)
    mask = _padding_mask(2, 5, 7)
    # Every init and apply below is one compiled program (op by op, each
    # primitive of flax's init and of both forwards compiles on its own).
    variables = jax.jit(flax_mha.init)(jax.random.key(1), xq, xk, xv)
    flat = _from_flax(variables)
    # The created paths and shapes are flax's (shapes only: nothing to compile).
    _, created = jax.eval_shape(mha, params, xq, xk, xv)
    assert {p: v.value.shape for p, v in created.items() if p[1] == "mha"} == {
        p: v.shape for p, v in flat.items()
    }
    # Random biases and LayerNorm scales, so every param matters.
    flat = {
        p: jnp.asarray(np.asarray(v) + np.float32(0.1) * np.asarray(_normal(v.shape, i)))
        for i, (p, v) in enumerate(sorted(flat.items()))
    }
    mine = params.merge(bx.Params.from_dict(flat))

    @jax.jit
    def cross(mine, flax_params, xq, xk, xv, mask):
        got, _ = mha(mine, xq, xk, xv, mask=mask)
        return got, flax_mha.apply({"params": flax_params}, xq, xk, xv, mask=mask)

    got, want = cross(mine, _to_tree(flat), xq, xk, xv, mask)
    np.testing.assert_allclose(got, want, **TOL)
    # Self-attention: a fresh pair called with the queries alone.
    mha2, flax2, params2 = _pair(**options)
    flax2 = flax2.clone(deterministic=True)
    variables = jax.jit(flax2.init)(jax.random.key(2), xq)
    mine2 = params2.merge(bx.Params.from_dict(_from_flax(variables)))

    @jax.jit
    def self_attention(mine2, variables, xq):
        got2, _ = mha2(mine2, xq, mask=bx.make_causal_mask(xq[..., 0]))
        return got2, flax2.apply(variables, xq, mask=fnn.make_causal_mask(xq[..., 0]))

    got2, want2 = self_attention(mine2, variables, xq)
    np.testing.assert_allclose(got2, want2, **TOL)


def _to_tree(flat):
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        for name in path[2:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = value
    return tree


@pytest.mark.filterwarnings("ignore:SelfAttention will be deprecated:DeprecationWarning")
def test_self_attention_class_equals_flax() -> None:
    graph, rng, params = _graph()
    att = bx.SelfAttention(graph / "mha", 4, rng=rng)
    x = _normal((3, 4, 8), 1)
    flax_att = fnn.SelfAttention(4, deterministic=True)
    variables = jax.jit(flax_att.init)(jax.random.key(0), x)

    @jax.jit
    def both(mine, variables, x):
        return att(mine, x)[0], flax_att.apply(variables, x)

    got, want = both(params.merge(bx.Params.from_dict(_from_flax(variables))), variables, x)
    np.testing.assert_allclose(got, want, **TOL)


def test_dropout_equals_flax_and_has_the_rate() -> None:
    mha, flax_mha, params = _pair(dropout_rate=0.5, broadcast_dropout=False)
    x = _normal((2, 6, 8), 1)
    variables = jax.jit(lambda key, x: flax_mha.init(key, x, deterministic=True))(
        jax.random.key(1), x
    )
    params = params.merge(bx.Params.from_dict(_from_flax(variables)))
    rng = mha.rng

    # One program for the training forwards of both sides and the evaluation ones.
    @jax.jit
    def case(params, variables, x):
        key = jax.random.fold_in(rng.get_seed(params), rng.get_counter(params))
        trained = mha(params, x, is_training=True, return_weights=True)
        want = flax_mha.apply(variables, x, deterministic=False, dropout_rng=key)
        evaluated = mha(params, x)
        want_eval = flax_mha.apply(variables, x, deterministic=True)
        return trained, want, evaluated, want_eval

    ((got, weights), after), want, (out_eval, same), want_eval = case(params, variables, x)
    np.testing.assert_allclose(got, want, **TOL)
    assert int(rng.get_counter(after)) == int(rng.get_counter(params)) + 1
    # Dropout statistics: about half the weights dropped, the rest doubled,
    # so rows still sum to 1 on average (2*2*6 rows of 6 weights: 144 draws).
    dropped = float(jnp.mean(weights == 0))
    assert 0.35 < dropped < 0.65, dropped
    assert abs(float(weights.sum(-1).mean()) - 1.0) < 0.2
    # Evaluation draws nothing and is deterministic.
    np.testing.assert_allclose(out_eval, want_eval, **TOL)
    assert int(rng.get_counter(same)) == int(rng.get_counter(params))


def test_dtypes_follow_the_convention() -> None:
    graph, rng, params = _graph()
    half = bx.MultiHeadAttention(graph / "half", 2, dtype=jnp.bfloat16, rng=rng)
    x = _normal((2, 3, 8), 1)
    # Dtypes only: traced for shapes and dtypes, nothing compiled.
    y, params = jax.eval_shape(half, params, x)
    assert y.dtype == jnp.bfloat16
    assert params[("net", "half", "query", "kernel")].value.dtype == jnp.float32
    stored = bx.MultiHeadAttention(graph / "stored", 2, param_dtype=jnp.bfloat16, rng=rng)
    y, params = jax.eval_shape(stored, params, x.astype(jnp.bfloat16))
    assert params[("net", "stored", "out", "kernel")].value.dtype == jnp.bfloat16
    assert y.dtype == jnp.bfloat16


def test_return_weights_and_additive_bias() -> None:
    graph, rng, params = _graph()
    mha = bx.MultiHeadAttention(graph / "mha", 2, rng=rng)
    x = _normal((2, 4, 8), 1)

    @jax.jit
    def case(params, x):
        causal = bx.make_causal_mask(x[..., 0], dtype=jnp.bool_)
        (y, w), params = mha(params, x, mask=causal, return_weights=True)
        # A -inf style additive bias is PyTorch's float attn_mask: same output.
        y_bias, _ = mha(params, x, bias=jnp.where(causal, 0.0, -1e9))
        return y, w, y_bias

    y, w, y_bias = case(params, x)
    assert w.shape == (2, 2, 4, 4)
    np.testing.assert_allclose(w.sum(-1), np.ones((2, 2, 4)), **TOL)
    assert float(np.abs(np.triu(np.asarray(w), 1)).max()) == 0.0
    np.testing.assert_allclose(y_bias, y, **TOL)


# -- the cache ---------------------------------------------------------------------------------


def test_decode_equals_the_full_causal_forward() -> None:
    graph, rng, params = _graph()
    full = bx.MultiHeadAttention(graph / "mha", 2, qkv_features=8, normalize_qk=True, rng=rng)
    x = _normal((2, 6, 8), 1)
    want, params = jax.jit(lambda p, x: full(p, x, mask=bx.make_causal_mask(x[..., 0])))(params, x)
    dec_graph = bx.Graph("net")
    dec = bx.MultiHeadAttention(
        dec_graph / "mha", 2, qkv_features=8, normalize_qk=True, decode=True
    )
    step = jax.jit(lambda p, xt: dec(p, xt))
    cache = dec.init_cache(params, (2,), 8)
    assert cache[("net", "mha", "cached_key")].value.shape == (2, 8, 2, 4)
    assert not cache[("net", "mha", "cache_index")].trainable
    outs = []
    for t in range(6):
        y, cache = step(cache, x[:, t : t + 1])
        outs.append(y)
    # Within 1e-5: the bound for token-by-token decoding.
    np.testing.assert_allclose(jnp.concatenate(outs, 1), want, rtol=1e-5, atol=1e-5)
    assert int(cache[("net", "mha", "cache_index")].value) == 6
    # A prefill of 4 positions, then one at a time, gives the same.
    cache = dec.init_cache(cache, (2,), 8)
    y_pre, cache = step(cache, x[:, :4])
    y_rest, cache = step(cache, x[:, 4:5])
    np.testing.assert_allclose(y_pre, want[:, :4], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y_rest, want[:, 4:5], rtol=1e-5, atol=1e-5)


def test_decode_errors() -> None:
    graph, rng, params = _graph()
    dec = bx.MultiHeadAttention(graph / "mha", 2, qkv_features=8, decode=True, rng=rng)
    x = jnp.ones((2, 1, 8))
    with pytest.raises(ValueError, match=r"expected a key/value cache .*init_cache"):
        dec(params, x)
    cache = dec.init_cache(params, (2,), 2)
    _, cache = dec(cache, x)
    with pytest.raises(ValueError, match=r"expected new keys of shape .*\(2, 1, 2, 4\)"):
        dec(cache, jnp.ones((3, 1, 8)))
    with pytest.raises(ValueError, match=r"expected at most 2 cached positions, got 1 \+ 2"):
        dec(cache, jnp.ones((2, 2, 8)))
    # Under jit the index is traced: a write past the end gives NaN, not garbage.
    _, cache = dec(cache, x)
    y, _ = jax.jit(dec)(cache, x)
    assert bool(jnp.isnan(y).all())
    with pytest.raises(TypeError, match=r"expected keys of the cache's dtype bfloat16"):
        dec(dec.init_cache(cache, (2,), 4, dtype=jnp.bfloat16), x)
    plain = bx.MultiHeadAttention(graph / "plain", 2, rng=rng)
    with pytest.raises(ValueError, match=r"expected a layer built with decode=True"):
        plain.init_cache(params, (2,), 4)
    sized_later = bx.MultiHeadAttention(graph / "later", 2, decode=True, rng=rng)
    with pytest.raises(ValueError, match=r"expected qkv_features or existing query params"):
        sized_later.init_cache(params, (2,), 4)
    with pytest.raises(ValueError, match=r"expected max_length to be a positive int"):
        dec.init_cache(params, (2,), 0)


def test_layer_errors() -> None:
    graph, rng, params = _graph()
    mha = bx.MultiHeadAttention(graph / "mha", 3, rng=rng)
    with pytest.raises(
        ValueError,
        match=r"MultiHeadAttention at 'net/mha': expected qkv_features divisible by num_heads=3, got 8",
    ):
        mha(params, jnp.ones((2, 4, 8)))
    with pytest.raises(ValueError, match=r"expected qkv_features divisible"):
        bx.MultiHeadAttention(graph / "bad", 3, qkv_features=8)
    with pytest.raises(TypeError, match=r"expected num_heads to be a positive int"):
        bx.MultiHeadAttention(graph / "bad2", 0)
    with pytest.raises(ValueError, match=r"expected dropout_rate in \[0, 1\)"):
        bx.MultiHeadAttention(graph / "bad3", 2, dropout_rate=1.5)
    mha2 = bx.MultiHeadAttention(graph / "mha2", 2, rng=rng)
    x = jnp.ones((2, 4, 8))
    _, params = mha2(params, x, jnp.ones((2, 5, 6)))
    with pytest.raises(
        ValueError, match=r"MultiHeadAttention at 'net/mha2': expected key inputs with 6 features"
    ):
        mha2(params, x, jnp.ones((2, 5, 7)))
    k6 = jnp.ones((2, 5, 6))
    with pytest.raises(ValueError, match=r"expected a mask broadcastable to .*\(2, 2, 4, 5\)"):
        mha2(params, x, k6, mask=jnp.ones((3, 1, 4, 5)))
    with pytest.raises(ValueError, match=r"expected inputs_k when inputs_v is given"):
        mha2(params, x, None, x)
    with pytest.raises(ValueError, match=r"expected inputs with the same batch axes"):
        mha2(params, x, jnp.ones((3, 5, 6)))
    with pytest.raises(ValueError, match=r"expected inputs_q/inputs_k/inputs_v of one rank >= 2"):
        mha2(params, jnp.ones(8))
    zeros = jax.nn.initializers.zeros
    drop = bx.MultiHeadAttention(graph / "drop", 2, dropout_rate=0.1, kernel_init=zeros)
    with pytest.raises(ValueError, match=r"expected an Rng to draw attention dropout masks"):
        drop(params, x, is_training=True)
