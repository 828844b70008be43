"""`LayerNorm`, `RMSNorm` and `BatchNorm` against their formulas in numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import blox as bx

TOL = {"rtol": 1e-5, "atol": 1e-5}
NORMAL = jax.nn.initializers.normal(1.0)


def _graph():
    graph = bx.Graph("net")
    rng = bx.Rng(graph / "rng")
    return graph, rng, rng.seed(bx.Params(), seed=0)


def _input(shape, seed=1, shift=0.0):
    return jax.random.normal(jax.random.key(seed), shape) * 2.0 + shift


def _layer_norm(x, eps, scale=1.0, bias=0.0):
    x = np.asarray(x, np.float64)
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)  # biased
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def _rms_norm(x, eps, scale=1.0):
    x = np.asarray(x, np.float64)
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * scale


# -- LayerNorm / RMSNorm ---------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5,), (3, 5), (2, 3, 5)], ids=["batch0", "batch1", "batch2"])
@pytest.mark.parametrize("eps", [1e-5, 0.5])
def test_layer_norm_formula(shape: tuple[int, ...], eps: float) -> None:
    graph, rng, params = _graph()
    ln = bx.LayerNorm(graph / "ln", epsilon=eps, scale_init=NORMAL, bias_init=NORMAL, rng=rng)
    x = _input(shape, shift=3.0)
    y, params = ln(params, x)
    scale = np.asarray(params[("net", "ln", "scale")].value)
    bias = np.asarray(params[("net", "ln", "bias")].value)
    assert scale.shape == bias.shape == (5,)
    np.testing.assert_allclose(np.asarray(y), _layer_norm(x, eps, scale, bias), **TOL)


def test_layer_norm_default_init_and_no_affine() -> None:
    graph, _, params = _graph()
    ln = bx.LayerNorm(graph / "ln")
    bare = bx.LayerNorm(graph / "bare", use_scale=False, use_bias=False)
    x = _input((3, 4))
    y, params = ln(params, x)
    np.testing.assert_array_equal(params[("net", "ln", "scale")].value, np.ones(4))
    np.testing.assert_array_equal(params[("net", "ln", "bias")].value, np.zeros(4))
    y_bare, params = bare(params, x)
    assert not [p for p in params.keys() if p[:2] == ("net", "bare")]
    np.testing.assert_allclose(np.asarray(y), _layer_norm(x, 1e-5), **TOL)
    np.testing.assert_allclose(np.asarray(y_bare), _layer_norm(x, 1e-5), **TOL)


@pytest.mark.parametrize("shape", [(5,), (3, 5), (2, 3, 5)], ids=["batch0", "batch1", "batch2"])
@pytest.mark.parametrize("eps", [1e-5, 0.5])
def test_rms_norm_formula(shape: tuple[int, ...], eps: float) -> None:
    graph, rng, params = _graph()
    rms = bx.RMSNorm(graph / "rms", epsilon=eps, scale_init=NORMAL, rng=rng)
    x = _input(shape, shift=1.0)
    y, params = rms(params, x)
    scale = np.asarray(params[("net", "rms", "scale")].value)
    assert [p[-1] for p in params.keys() if p[:2] == ("net", "rms")] == ["scale"]
    np.testing.assert_allclose(np.asarray(y), _rms_norm(x, eps, scale), **TOL)


def test_rms_norm_without_scale_has_no_params() -> None:
    graph, _, params = _graph()
    rms = bx.RMSNorm(graph / "rms", use_scale=False)
    x = _input((3, 4))
    y, new = rms(params, x)
    assert set(new.keys()) == set(params.keys())
    np.testing.assert_allclose(np.asarray(y), _rms_norm(x, 1e-5), **TOL)


def test_feature_axis_sharded_over_a_named_axis_normalises_like_the_whole() -> None:
    # Features split in two shards along a vmapped named axis: with axis_name
    # the statistics are those of the full feature vector.
    graph, _, params = _graph()
    ln = bx.LayerNorm(graph / "ln", axis_name="shard", use_scale=False, use_bias=False)
    rms = bx.RMSNorm(graph / "rms", axis_name="shard", use_scale=False)
    x = _input((3, 8), shift=1.0)
    # Shards with very different offsets, so a mean of per-shard variances
    # would be far from the variance of the whole.
    x = x + jnp.concatenate([jnp.zeros((1, 4)), jnp.full((1, 4), 5.0)], axis=1)
    shards = jnp.stack([x[:, :4], x[:, 4:]])  # (shard, batch, 4)

    def both(shard):
        y_ln, _ = ln(params, shard)
        y_rms, _ = rms(params, shard)
        return y_ln, y_rms

    y_ln, y_rms = jax.vmap(both, axis_name="shard")(shards)
    whole = lambda y: np.concatenate([y[0], y[1]], axis=-1)  # noqa: E731
    np.testing.assert_allclose(whole(np.asarray(y_ln)), _layer_norm(x, 1e-5), **TOL)
    np.testing.assert_allclose(whole(np.asarray(y_rms)), _rms_norm(x, 1e-5), **TOL)


def test_norms_need_a_feature_axis() -> None:
    graph, _, params = _graph()
    ln = bx.LayerNorm(graph / "ln")
    with pytest.raises(
        ValueError,
        match=r"LayerNorm at 'net/ln': expected inputs of rank >= 1 with features last, "
        r"got shape \(\)\. Fix:",
    ):
        ln(params, jnp.float32(1.0))


# -- BatchNorm ---------------------------------------------------------------------------


def _batch_stats(x):
    x = np.asarray(x, np.float64)
    axes = tuple(range(x.ndim - 1))
    mean = x.mean(axes)
    return mean, ((x - mean) ** 2).mean(axes)  # biased


@pytest.mark.parametrize("shape", [(6, 3), (4, 2, 3)], ids=["2d", "3d"])
def test_batch_norm_training_running_stats_over_two_steps(shape: tuple[int, ...]) -> None:
    graph, rng, params = _graph()
    m, eps = 0.8, 1e-3
    bn = bx.BatchNorm(
        graph / "bn", momentum=m, epsilon=eps, scale_init=NORMAL, bias_init=NORMAL, rng=rng
    )
    running_mean, running_var = np.zeros(3), np.ones(3)
    for step in range(2):
        x = _input(shape, seed=step, shift=2.0 + step)
        y, params = bn(params, x, is_training=True)
        mean, var = _batch_stats(x)
        running_mean = m * running_mean + (1 - m) * mean
        running_var = m * running_var + (1 - m) * var
        scale = np.asarray(params[("net", "bn", "scale")].value)
        bias = np.asarray(params[("net", "bn", "bias")].value)
        expected = (np.asarray(x) - mean) / np.sqrt(var + eps) * scale + bias
        np.testing.assert_allclose(np.asarray(y), expected, **TOL)
        np.testing.assert_allclose(params[("net", "bn", "running_mean")].value, running_mean, **TOL)
        np.testing.assert_allclose(params[("net", "bn", "running_var")].value, running_var, **TOL)
        params = params.locked()


def test_batch_norm_eval_uses_running_stats_and_leaves_them() -> None:
    graph, rng, params = _graph()
    bn = bx.BatchNorm(graph / "bn", momentum=0.5, scale_init=NORMAL, bias_init=NORMAL, rng=rng)
    _, params = bn(params, _input((6, 3), shift=4.0), is_training=True)
    x = _input((5, 3), seed=9)
    y, after = bn(params, x, is_training=False)
    value = lambda name: np.asarray(params[("net", "bn", name)].value)  # noqa: E731
    expected = (np.asarray(x) - value("running_mean")) / np.sqrt(value("running_var") + 1e-5)
    expected = expected * value("scale") + value("bias")
    np.testing.assert_allclose(np.asarray(y), expected, **TOL)
    assert after == params


def test_batch_norm_creation_order_and_flags() -> None:
    # Each created parameter draws the next rng key, in the documented order
    # running_mean, running_var, scale, bias: the keys pin the order.
    graph, rng, params = _graph()
    bn = bx.BatchNorm(graph / "bn", scale_init=NORMAL, bias_init=NORMAL, rng=rng)
    _, params = bn(params, _input((4, 3)), is_training=False)
    assert int(rng.get_counter(params)) == 4
    seed = jax.random.key(0)
    for index, name in ((2, "scale"), (3, "bias")):
        expected = NORMAL(jax.random.fold_in(seed, index), (3,), jnp.float32)
        np.testing.assert_array_equal(params[("net", "bn", name)].value, expected)
        assert params[("net", "bn", name)].trainable
    np.testing.assert_array_equal(params[("net", "bn", "running_mean")].value, np.zeros(3))
    np.testing.assert_array_equal(params[("net", "bn", "running_var")].value, np.ones(3))
    assert not params[("net", "bn", "running_mean")].trainable
    assert not params[("net", "bn", "running_var")].trainable


def test_batch_norm_gradients_do_not_flow_into_running_stats() -> None:
    graph, _, params = _graph()
    bn = bx.BatchNorm(graph / "bn")
    x = _input((6, 3), shift=1.0)
    _, params = bn(params, x)
    params = params.locked()

    def updated_stats(x):
        _, new = bn(params, x, is_training=True)
        stats = new[("net", "bn", "running_mean")].value + new[("net", "bn", "running_var")].value
        return jnp.sum(stats)

    def output(x):
        y, _ = bn(params, x, is_training=True)
        return jnp.sum(y * jnp.arange(1.0, 19.0).reshape(6, 3))

    np.testing.assert_array_equal(jax.grad(updated_stats)(x), np.zeros((6, 3)))
    # ...while the output itself is differentiable through the batch statistics.
    assert np.abs(np.asarray(jax.grad(output)(x))).max() > 1e-3


@pytest.mark.parametrize("fast", [False, True], ids=["two_pass", "fast_variance"])
def test_batch_sharded_over_a_named_axis_normalises_like_the_whole_batch(fast: bool) -> None:
    graph, _, params = _graph()
    bn = bx.BatchNorm(graph / "bn", axis_name="data", momentum=0.5, use_fast_variance=fast)
    local = bx.BatchNorm(graph / "local", momentum=0.5, use_fast_variance=fast)
    x = _input((8, 3))
    x = x + jnp.repeat(jnp.array([0.0, 6.0]), 4)[:, None]  # the halves differ in mean
    shards = x.reshape(2, 4, 3)
    y_sharded, p_sharded = jax.vmap(lambda s: bn(params, s), axis_name="data")(shards)
    y_whole, p_whole = local(params, x)
    np.testing.assert_allclose(np.asarray(y_sharded).reshape(8, 3), np.asarray(y_whole), **TOL)
    for name in ("running_mean", "running_var"):
        sharded = np.asarray(p_sharded[("net", "bn", name)].value)
        whole = np.asarray(p_whole[("net", "local", name)].value)
        np.testing.assert_allclose(sharded, np.stack([whole, whole]), **TOL)


def test_batch_norm_momentum_out_of_range_is_a_value_error() -> None:
    graph, _, _ = _graph()
    with pytest.raises(
        ValueError, match=r"BatchNorm at 'net/bn': expected momentum in \[0, 1\], got 1\.5\. Fix:"
    ):
        bx.BatchNorm(graph / "bn", momentum=1.5)


def test_batch_norm_needs_a_batch_axis() -> None:
    graph, _, params = _graph()
    bn = bx.BatchNorm(graph / "bn")
    with pytest.raises(
        ValueError,
        match=r"BatchNorm at 'net/bn': expected inputs of rank >= 2 with features last, "
        r"got shape \(3,\)\. Fix:",
    ):
        bn(params, jnp.ones(3))
