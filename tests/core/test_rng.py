"""Rng: seeding, the fold_in(seed, counter) rule, and identical keys under transforms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import blox as bx

SEED = ("net", "rng", "seed")
COUNTER = ("net", "rng", "counter")


def make_rng():
    return bx.Rng(bx.Graph("net") / "rng")


def data(key):
    return np.asarray(jax.random.key_data(key))


def expected_keys(seed, n, start=0):
    base = jax.random.key(seed)
    return np.stack([data(jax.random.fold_in(base, c)) for c in range(start, start + n)])


def draw(rng, params, n):
    keys = []
    for _ in range(n):
        key, params = rng(params)
        keys.append(jax.random.key_data(key))
    return jnp.stack(keys), params


# -- seeding -----------------------------------------------------------------------------


def test_seed_int_stores_typed_key_and_zero_counter():
    rng = make_rng()
    params = rng.seed(bx.Params(), seed=42)
    assert list(params.keys()) == [SEED, COUNTER]
    seed = rng.get_seed(params)
    assert jax.dtypes.issubdtype(seed.dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(data(seed), data(jax.random.key(42)))
    counter = rng.get_counter(params)
    assert counter.dtype == jnp.uint32
    assert counter.shape == ()
    assert int(counter) == 0


def test_seed_params_are_non_trainable_and_tagged():
    rng = make_rng()
    params = rng.seed(bx.Params(), seed=0)
    assert params[SEED].trainable is False
    assert params[COUNTER].trainable is False
    assert params[SEED].metadata == {"tag": "rng_seed"}
    assert params[COUNTER].metadata == {"tag": "rng_counter"}
    trainable, rest = params.split()
    assert len(trainable) == 0
    assert list(rest.keys()) == [SEED, COUNTER]
    # The tags survive a draw and a trip through jit.
    _, params = jax.jit(rng)(params)
    assert params[SEED].metadata == {"tag": "rng_seed"}
    assert params[COUNTER].metadata == {"tag": "rng_counter"}
    assert params[COUNTER].trainable is False
    assert params[COUNTER].value.dtype == jnp.uint32


@pytest.mark.parametrize(
    "seed",
    [
        pytest.param(lambda: jax.random.key(42), id="typed-key"),
        pytest.param(lambda: jax.random.PRNGKey(42), id="raw-uint32[2]"),
        pytest.param(lambda: np.asarray(jax.random.PRNGKey(42)), id="numpy-raw"),
        pytest.param(lambda: np.int64(42), id="numpy-int"),
        pytest.param(lambda: jnp.array(42, jnp.int32), id="int-array"),
    ],
)
def test_seed_by_key_or_raw_key_data_equals_seed_by_int(seed):
    rng = make_rng()
    by_int, _ = draw(rng, rng.seed(bx.Params(), seed=42), 3)
    by_other, params = draw(rng, rng.seed(bx.Params(), seed=seed()), 3)
    np.testing.assert_array_equal(by_other, by_int)
    assert jax.dtypes.issubdtype(rng.get_seed(params).dtype, jax.dtypes.prng_key)


@pytest.mark.parametrize("bad", [1.5, True, "42", jnp.ones(2), jnp.zeros(3, jnp.uint32)])
def test_seed_of_another_type_raises_type_error(bad):
    rng = make_rng()
    with pytest.raises(
        TypeError,
        match=r"Rng at 'net/rng': expected seed to be an int, a typed JAX key or raw "
        r"uint32\[2\] key data, got .*\. Fix: pass an int or jax\.random\.key",
    ):
        rng.seed(bx.Params(), seed=bad)


def test_seed_with_counter_and_later_updates():
    rng = make_rng()
    params = rng.seed(bx.Params(), seed=1, counter=5)
    assert int(rng.get_counter(params)) == 5
    keys, params = draw(rng, params, 2)
    np.testing.assert_array_equal(keys, expected_keys(1, 2, start=5))
    # Updating the counter keeps the seed.
    params = rng.seed(params, counter=0)
    np.testing.assert_array_equal(data(rng.get_seed(params)), data(jax.random.key(1)))
    assert int(rng.get_counter(params)) == 0
    # Updating the seed keeps the counter.
    _, params = rng(params)
    params = rng.seed(params, seed=9)
    assert int(rng.get_counter(params)) == 1
    keys, params = draw(rng, params, 1)
    np.testing.assert_array_equal(keys, expected_keys(9, 1, start=1))
    # A counter given as an array is stored as uint32.
    params = rng.seed(params, counter=jnp.array(3, jnp.int32))
    assert rng.get_counter(params).dtype == jnp.uint32
    assert int(rng.get_counter(params)) == 3


def test_seed_returns_a_new_container():
    rng = make_rng()
    empty = bx.Params()
    params = rng.seed(empty, seed=0)
    assert len(empty) == 0
    updated = rng.seed(params, counter=4)
    assert int(rng.get_counter(params)) == 0
    assert int(rng.get_counter(updated)) == 4


@pytest.mark.parametrize("kwargs", [{}, {"counter": 3}])
def test_first_seed_without_seed_raises_value_error(kwargs):
    rng = make_rng()
    with pytest.raises(
        ValueError,
        match=r"Rng at 'net/rng': expected seed= on the first rng\.seed call, got none\. "
        r"Fix: rng\.seed\(params, seed=0\)",
    ):
        rng.seed(bx.Params(), **kwargs)


def test_seed_with_neither_seed_nor_counter_raises_value_error():
    rng = make_rng()
    params = rng.seed(bx.Params(), seed=0)
    with pytest.raises(
        ValueError,
        match=r"Rng at 'net/rng': expected seed= and/or counter=, got neither\. Fix",
    ):
        rng.seed(params)


def test_first_seed_on_locked_params_raises_key_error_but_updates_work():
    rng = make_rng()
    with pytest.raises(
        KeyError,
        match=r"Rng at 'net/rng': expected to create the Rng state, got params that are "
        r"locked\. Fix",
    ):
        rng.seed(bx.Params().locked(), seed=0)
    params = rng.seed(bx.Params(), seed=0).locked()
    params = rng.seed(params, counter=2)
    assert params.is_locked
    key, params = rng(params)
    assert params.is_locked
    np.testing.assert_array_equal(data(key), expected_keys(0, 1, start=2)[0])


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda rng, p: rng.get_seed(p), id="get_seed"),
        pytest.param(lambda rng, p: rng.get_counter(p), id="get_counter"),
        pytest.param(lambda rng, p: rng(p), id="call"),
    ],
)
def test_unseeded_rng_raises_key_error_saying_to_call_seed(call):
    rng = make_rng()
    with pytest.raises(
        KeyError,
        match=r"Rng at 'net/rng': expected a seeded Rng, got params without its seed\. "
        r"Fix: use rng\.seed\(params, seed=\.\.\.\) first for new params; .*another "
        r"graph.*params\.locked\(\)",
    ):
        call(rng, bx.Params())


# -- drawing -------------------------------------------------------------------------------


def test_key_is_fold_in_of_seed_and_counter_and_counter_steps_by_one():
    rng = make_rng()
    params = rng.seed(bx.Params(), seed=123)
    for c in range(4):
        assert int(rng.get_counter(params)) == c
        before = params
        key, params = rng(params)
        assert jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
        expected = jax.random.fold_in(jax.random.key(123), c)
        np.testing.assert_array_equal(data(key), data(expected))
        assert int(rng.get_counter(before)) == c
    assert int(rng.get_counter(params)) == 4
    assert rng.get_counter(params).dtype == jnp.uint32


def test_successive_keys_differ_and_streams_are_independent():
    g = bx.Graph("net")
    a = bx.Rng(g / "a")
    b = bx.Rng(g / "b")
    params = b.seed(a.seed(bx.Params(), seed=0), seed=1)
    ka, params = draw(a, params, 3)
    kb, params = draw(b, params, 2)
    assert len({tuple(k) for k in np.asarray(ka)}) == 3
    np.testing.assert_array_equal(ka, expected_keys(0, 3))
    np.testing.assert_array_equal(kb, expected_keys(1, 2))
    assert int(a.get_counter(params)) == 3
    assert int(b.get_counter(params)) == 2


def test_same_seed_same_order_gives_identical_keys_eagerly():
    rng = make_rng()
    k1, _ = draw(rng, rng.seed(bx.Params(), seed=5), 4)
    k2, _ = draw(rng, rng.seed(bx.Params(), seed=5), 4)
    np.testing.assert_array_equal(k1, k2)
    np.testing.assert_array_equal(k1, expected_keys(5, 4))


def test_identical_keys_under_jit():
    rng = make_rng()
    params = rng.seed(bx.Params(), seed=5)
    eager, p_eager = draw(rng, params, 4)
    jitted, p_jit = jax.jit(lambda p: draw(rng, p, 4))(params)
    np.testing.assert_array_equal(jitted, eager)
    assert int(rng.get_counter(p_jit)) == int(rng.get_counter(p_eager)) == 4
    # Calling the jitted draw twice continues the stream exactly like eager calls.
    step = jax.jit(rng)
    p = params
    keys = []
    for _ in range(4):
        key, p = step(p)
        keys.append(data(key))
    np.testing.assert_array_equal(np.stack(keys), eager)


def test_identical_keys_under_scan_with_params_in_the_carry():
    rng = make_rng()
    params = rng.seed(bx.Params(), seed=8)
    eager, p_eager = draw(rng, params, 6)

    def body(p, _):
        key, p = rng(p)
        return p, jax.random.key_data(key)

    final, scanned = jax.lax.scan(body, params, None, length=6)
    np.testing.assert_array_equal(scanned, eager)
    assert int(rng.get_counter(final)) == 6
    assert final[COUNTER].metadata == {"tag": "rng_counter"}
    jit_final, jit_scanned = jax.jit(lambda p: jax.lax.scan(body, p, None, length=6))(params)
    np.testing.assert_array_equal(jit_scanned, eager)
    assert int(rng.get_counter(jit_final)) == int(rng.get_counter(p_eager))


def test_identical_keys_under_checkpoint():
    rng = make_rng()
    params = rng.seed(bx.Params(), seed=13)
    eager, _ = draw(rng, params, 3)
    ckpt, p = jax.checkpoint(lambda q: draw(rng, q, 3))(params)
    np.testing.assert_array_equal(ckpt, eager)
    assert int(rng.get_counter(p)) == 3


def test_identical_keys_and_correct_gradient_under_grad():
    rng = make_rng()
    params = rng.seed(bx.Params(), seed=21)
    x = jnp.array([1.0, -2.0, 0.5])
    eager, _ = draw(rng, params, 2)

    def loss(x, p):
        k1, p = rng(p)
        k2, p = rng(p)
        noise = jax.random.normal(k1, x.shape) + jax.random.uniform(k2, x.shape)
        keys = jnp.stack([jax.random.key_data(k1), jax.random.key_data(k2)])
        return jnp.sum(x * noise), (keys, p)

    grad, (keys, p) = jax.grad(loss, has_aux=True)(x, params)
    np.testing.assert_array_equal(keys, eager)
    assert int(rng.get_counter(p)) == 2
    base = jax.random.key(21)
    expected = jax.random.normal(jax.random.fold_in(base, 0), (3,)) + jax.random.uniform(
        jax.random.fold_in(base, 1), (3,)
    )
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-6)
    # The same under jit(grad).
    grad_j, (keys_j, _) = jax.jit(jax.grad(loss, has_aux=True))(x, params)
    np.testing.assert_array_equal(keys_j, eager)
    np.testing.assert_allclose(grad_j, expected, rtol=1e-6, atol=1e-6)


def test_grad_wrt_trainable_params_with_dropout_draw_inside():
    g = bx.Graph("net")
    rng = bx.Rng(g / "rng")
    lin = bx.Linear(g / "lin", 3, rng=rng)
    drop = bx.Dropout(g / "drop", 0.5, rng=rng)
    params = rng.seed(bx.Params(), seed=2)
    x = jnp.ones((2, 4))
    h, params = lin(params, x)
    _, params = drop(params, h)
    params = rng.seed(params.locked(), counter=0)
    trainable, rest = params.split()

    def loss(t):
        p = t.merge(rest)
        h, p = lin(p, x)
        y, p = drop(p, h, is_training=True)
        return jnp.sum(y), p

    grads, p_after = jax.grad(loss, has_aux=True)(trainable)
    # The dropout key is fold_in(seed, 0): recompute the mask by hand.
    keep = jax.random.bernoulli(jax.random.fold_in(jax.random.key(2), 0), 0.5, (2, 3))
    expected_kernel = np.asarray(x).T @ (np.asarray(keep, np.float32) / 0.5)
    np.testing.assert_allclose(
        grads[("net", "lin", "kernel")].value, expected_kernel, rtol=1e-6, atol=1e-6
    )
    assert int(rng.get_counter(p_after)) == 1
