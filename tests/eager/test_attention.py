"""Eager `MultiHeadAttention` against its core twin, and its cache as a buffer.

The twin is built by hand (a `bx.Graph`, a `bx.Rng` seeded with the same int,
the core layer) and called compiled, as the eager call is, so outputs agree
bit for bit. The cache must advance in place in eager calls, under
`nn.filter_jit`, in the model returned by a plain `eqx.filter_jit` function,
and survive a checkpoint taken mid-generation.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import blox as bx
from blox import eager as nn

SEED = 3


def _normal(shape, i):
    return jnp.asarray(np.random.default_rng(100 + i).standard_normal(shape, np.float32))


def _twin(num_heads, shapes, **options):
    graph = bx.Graph("twin")
    rng = bx.Rng(graph / "rng")
    core = bx.MultiHeadAttention(graph / "layer", num_heads, rng=rng, **options)
    params = rng.seed(bx.Params(), seed=jax.random.key(SEED))
    if options.get("decode"):
        params = core.init_cache(params, (1,), 1)
    q, k, v = (jnp.zeros((1, 1, n)) for n in shapes)
    _, params = core(params, q, k, v)
    return core, params


def _assert_params_equal(layer, params, root="twin"):
    state = layer.state_dict()
    for name, value in state.items():
        head = (root,) if name.startswith("rng.") else (root, "layer")
        entry = params[(*head, *name.split("."))].value
        if jnp.issubdtype(entry.dtype, jax.dtypes.prng_key):
            entry = jax.random.key_data(entry)
        np.testing.assert_array_equal(np.asarray(value), np.asarray(entry))


def test_eager_equals_core_bit_for_bit_self_and_cross() -> None:
    options = dict(qkv_features=12, out_features=5, normalize_qk=True)
    layer = nn.MultiHeadAttention(8, 3, kdim=6, vdim=4, seed=SEED, **options)
    core, params = _twin(3, (8, 6, 4), **options)
    _assert_params_equal(layer, params)
    names = [n for n in layer.state_dict() if n.startswith("query.")]
    assert names == ["query.kernel", "query.bias"]
    assert layer.query_ln.scale.shape == (4,)
    q, k, v = _normal((2, 5, 8), 1), _normal((2, 7, 6), 2), _normal((2, 7, 4), 3)
    mask = jnp.asarray(np.random.default_rng(0).random((2, 1, 5, 7)) > 0.3)
    expected, _ = jax.jit(lambda p, q, k, v, m: core(p, q, k, v, mask=m))(params, q, k, v, mask)
    np.testing.assert_array_equal(layer(q, k, v, mask=mask), expected)
    (out, weights) = layer(q, k, v, return_weights=True)
    assert out.shape == (2, 5, 5) and weights.shape == (2, 3, 5, 7)


def test_dropout_advances_the_stream_and_equals_core() -> None:
    layer = nn.MultiHeadAttention(8, 2, dropout_rate=0.5, seed=SEED)
    core, params = _twin(2, (8, 8, 8), qkv_features=8, out_features=8, dropout_rate=0.5)
    _assert_params_equal(layer, params)
    x = _normal((2, 4, 8), 1)
    train = jax.jit(lambda p, x: core(p, x, is_training=True))
    for _ in range(2):
        expected, params = train(params, x)
        np.testing.assert_array_equal(layer(x), expected)
    _assert_params_equal(layer, params)
    counter = int(layer.rng.counter)
    eval_out = layer.eval()(x)
    assert int(layer.rng.counter) == counter
    np.testing.assert_array_equal(eval_out, jax.jit(core)(params, x)[0])


def _decoder_and_full():
    dec = nn.MultiHeadAttention(8, 2, decode=True, normalize_qk=True, seed=SEED)
    full = nn.MultiHeadAttention(8, 2, normalize_qk=True, seed=SEED)
    np.testing.assert_array_equal(dec.query.kernel, full.query.kernel)
    return dec, full


def test_cache_advances_in_place_eager_and_under_filter_jit() -> None:
    dec, full = _decoder_and_full()
    x = _normal((2, 6, 8), 1)
    want = full(x, mask=bx.make_causal_mask(x[..., 0]))
    dec.init_cache(2, 6)
    assert [n for n in dec.state_dict() if n.startswith("cache")] == [
        "cached_key",
        "cached_value",
        "cache_index",
    ]
    eager = [dec(x[:, t : t + 1]) for t in range(3)]
    assert int(dec.cache_index) == 3
    step = nn.filter_jit(lambda m, xt: m(xt))
    jitted = [step(dec, x[:, t : t + 1]) for t in range(3, 6)]
    assert int(dec.cache_index) == 6
    # Token by token equals the full causal forward within 1e-5 (the bound).
    np.testing.assert_allclose(jnp.concatenate(eager + jitted, 1), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(
        ValueError,
        match=r"nn.MultiHeadAttention\(8, 2\): expected at most 6 cached positions, got 6 \+ 1",
    ):
        dec(x[:, :1])
    dec.init_cache(2, 6)  # a new sequence
    assert int(dec.cache_index) == 0
    np.testing.assert_allclose(dec(x[:, :4]), want[:, :4], rtol=1e-5, atol=1e-5)


def test_cache_reaches_the_model_returned_by_eqx_filter_jit() -> None:
    dec, full = _decoder_and_full()
    x = _normal((1, 4, 8), 2)
    want = full(x, mask=bx.make_causal_mask(x[..., 0]))
    dec.init_cache(1, 4)

    @eqx.filter_jit
    def step(model, xt):
        return model(xt), model

    outs = []
    for t in range(4):
        y, dec = step(dec, x[:, t : t + 1])
        outs.append(y)
    assert int(dec.cache_index) == 4
    np.testing.assert_allclose(jnp.concatenate(outs, 1), want, rtol=1e-5, atol=1e-5)


def test_checkpoint_mid_generation_resumes_the_same_outputs(tmp_path) -> None:
    dec, _ = _decoder_and_full()
    x = _normal((2, 6, 8), 3)
    dec.init_cache(2, 6)
    for t in range(3):
        dec(x[:, t : t + 1])
    path = tmp_path / "mid.safetensors"
    nn.save(path, dec)
    rest = [dec(x[:, t : t + 1]) for t in range(3, 6)]
    like = nn.MultiHeadAttention(8, 2, decode=True, normalize_qk=True, seed=0)
    like.init_cache(2, 6)
    resumed, _, _ = nn.load(path, like=like)
    assert int(resumed.cache_index) == 3
    again = [resumed(x[:, t : t + 1]) for t in range(3, 6)]
    for a, b in zip(again, rest):
        np.testing.assert_array_equal(a, b)


def test_errors_name_the_layer() -> None:
    with pytest.raises(ValueError, match=r"nn.MultiHeadAttention\(8, 3\): expected qkv_features"):
        nn.MultiHeadAttention(8, 3)
    dec = nn.MultiHeadAttention(8, 2, decode=True)
    with pytest.raises(ValueError, match=r"expected a key/value cache .*init_cache"):
        dec(jnp.ones((1, 1, 8)))
    plain = nn.MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match=r"expected a layer built with decode=True"):
        plain.init_cache(1, 4)
    with pytest.raises(ValueError, match=r"expected a mask broadcastable"):
        plain(jnp.ones((2, 3, 8)), mask=jnp.ones((3, 2, 3, 3), bool))
    with pytest.raises(TypeError, match=r"unknown \['heads'\]"):
        nn.MultiHeadAttention(8, 2, heads=2)
