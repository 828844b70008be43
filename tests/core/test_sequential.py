"""`Sequential`: blox modules get `(params, x)`, plain callables get `x`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import blox as bx

TOL = {"rtol": 1e-5, "atol": 1e-5}
NORMAL = jax.nn.initializers.normal(1.0)


def _linear(node, out, rng):
    return bx.Linear(node, out, rng=rng, kernel_init=NORMAL, bias_init=NORMAL)


def _affine(params, *path):
    kernel = np.asarray(params[("net", *path, "kernel")].value)
    bias = np.asarray(params[("net", *path, "bias")].value)
    return lambda h: h @ kernel + bias


def test_mlp_equals_manual_composition() -> None:
    graph = bx.Graph("net")
    rng = bx.Rng(graph / "rng")
    node = graph / "mlp"
    mlp = bx.Sequential(
        node, [_linear(node / "l1", 8, rng), jax.nn.relu, _linear(node / "l2", 2, rng)]
    )
    x = jax.random.normal(jax.random.key(0), (4, 3))
    y, params = mlp(rng.seed(bx.Params(), seed=0), x)
    l1, l2 = _affine(params, "mlp", "l1"), _affine(params, "mlp", "l2")
    np.testing.assert_allclose(np.asarray(y), l2(np.maximum(l1(np.asarray(x)), 0.0)), **TOL)
    assert {p for p in params.keys() if p[1] == "mlp"} == {
        ("net", "mlp", "l1", "kernel"),
        ("net", "mlp", "l1", "bias"),
        ("net", "mlp", "l2", "kernel"),
        ("net", "mlp", "l2", "bias"),
    }


def test_plain_callables_and_nesting() -> None:
    graph = bx.Graph("net")
    rng = bx.Rng(graph / "rng")
    inner_node = graph / "inner"
    inner = bx.Sequential(inner_node, [_linear(inner_node / "lin", 3, rng), jnp.tanh])
    outer = bx.Sequential(graph / "outer", [lambda v: 2.0 * v, inner, jnp.square])
    x = jax.random.normal(jax.random.key(1), (2, 5, 4))
    y, params = outer(rng.seed(bx.Params(), seed=0), x)
    lin = _affine(params, "inner", "lin")
    np.testing.assert_allclose(np.asarray(y), np.tanh(lin(2.0 * np.asarray(x))) ** 2, **TOL)


def test_only_callables_means_no_params() -> None:
    graph = bx.Graph("net")
    seq = bx.Sequential(graph / "seq", [jnp.abs, lambda v: v + 1.0])
    x = jnp.array([-2.0, 3.0])
    y, params = seq(bx.Params(), x)
    np.testing.assert_array_equal(np.asarray(y), [3.0, 4.0])
    assert len(params) == 0


def test_empty_is_identity() -> None:
    seq = bx.Sequential(bx.Graph("net") / "seq", [])
    x = jnp.ones(3)
    y, _ = seq(bx.Params(), x)
    assert y is x


def test_sequential_under_jit_and_grad() -> None:
    graph = bx.Graph("net")
    rng = bx.Rng(graph / "rng")
    node = graph / "mlp"
    mlp = bx.Sequential(node, [_linear(node / "l1", 4, rng), jax.nn.relu])
    x = jax.random.normal(jax.random.key(2), (3, 2))
    _, params = mlp(rng.seed(bx.Params(), seed=0), x)
    trainable, rest = params.locked().split()
    loss = lambda t: jnp.sum(mlp(t.merge(rest), x)[0])  # noqa: E731
    grads = jax.jit(jax.grad(loss))(trainable)
    # d/db of sum(relu(xW + b)) counts the active units per output column.
    active = (_affine(params, "mlp", "l1")(np.asarray(x)) > 0).sum(axis=0)
    np.testing.assert_allclose(np.asarray(grads[("net", "mlp", "l1", "bias")].value), active)


def test_a_non_callable_layer_is_a_type_error() -> None:
    with pytest.raises(
        TypeError,
        match=r"Sequential at 'net/seq': expected every layer to be a blox Module or a "
        r"callable, got int at index 1\. Fix:",
    ):
        bx.Sequential(bx.Graph("net") / "seq", [jnp.abs, 3])


def test_is_training_reaches_batchnorm_and_dropout():
    g = bx.Graph("net")
    rng = bx.Rng(g / "rng")
    bn = bx.BatchNorm(g / "bn")
    seq = bx.Sequential(g / "seq", [bn, jax.nn.relu, bx.Dropout(g / "drop", 0.5, rng=rng)])
    params = rng.seed(bx.Params(), seed=0)
    x = jnp.arange(12.0).reshape(4, 3)
    _, params = seq(params, x)  # training: stats move, one dropout key drawn
    assert int(rng.get_counter(params)) == 1
    y, after = seq(params, x, is_training=False)
    # Eval: normalise with the running stats, no dropout, no key, stats unchanged.
    mean = np.asarray(params[("net", "bn", "running_mean")].value)
    var = np.asarray(params[("net", "bn", "running_var")].value)
    expected = np.maximum((np.asarray(x) - mean) / np.sqrt(var + 1e-5), 0.0)
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-5, atol=1e-6)
    assert int(rng.get_counter(after)) == 1
    np.testing.assert_array_equal(after[("net", "bn", "running_mean")].value, mean)
