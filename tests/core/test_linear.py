"""`Linear` against `x @ W + b` written in numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import blox as bx

TOL = {"rtol": 1e-5, "atol": 1e-5}
NORMAL = jax.nn.initializers.normal(1.0)


def _make(out: int = 4, **kwargs):
    graph = bx.Graph("net")
    rng = bx.Rng(graph / "rng")
    kwargs.setdefault("kernel_init", NORMAL)
    kwargs.setdefault("bias_init", NORMAL)
    lin = bx.Linear(graph / "lin", out, rng=rng, **kwargs)
    return lin, rng, rng.seed(bx.Params(), seed=3)


@pytest.mark.parametrize("batch", [(), (2,), (2, 3)], ids=["batch0", "batch1", "batch2"])
def test_matches_affine_formula(batch: tuple[int, ...]) -> None:
    lin, _, params = _make()
    x = jax.random.normal(jax.random.key(0), (*batch, 5))
    y, params = lin(params, x)
    w = np.asarray(params[("net", "lin", "kernel")].value)
    b = np.asarray(params[("net", "lin", "bias")].value)
    assert w.shape == (5, 4) and b.shape == (4,)
    assert np.abs(b).max() > 0  # the bias really takes part
    np.testing.assert_allclose(np.asarray(y), np.asarray(x) @ w + b, **TOL)


def test_without_bias_creates_only_the_kernel() -> None:
    lin, _, params = _make(use_bias=False)
    x = jax.random.normal(jax.random.key(0), (2, 5))
    y, params = lin(params, x)
    assert ("net", "lin", "bias") not in params
    w = np.asarray(params[("net", "lin", "kernel")].value)
    np.testing.assert_allclose(np.asarray(y), np.asarray(x) @ w, **TOL)


def test_creation_draws_one_key_per_parameter_in_order() -> None:
    lin, rng, params = _make()
    _, params = lin(params, jnp.ones((1, 5)))
    assert int(rng.get_counter(params)) == 2
    seed = jax.random.key(3)
    expected_w = NORMAL(jax.random.fold_in(seed, 0), (5, 4), jnp.float32)
    expected_b = NORMAL(jax.random.fold_in(seed, 1), (4,), jnp.float32)
    np.testing.assert_array_equal(params[("net", "lin", "kernel")].value, expected_w)
    np.testing.assert_array_equal(params[("net", "lin", "bias")].value, expected_b)


def test_metadata_is_stored_with_the_parameters() -> None:
    lin, _, params = _make(
        kernel_metadata={"sharding": (None, "model")}, bias_metadata={"tag": "b"}
    )
    _, params = lin(params, jnp.ones((1, 5)))
    assert params[("net", "lin", "kernel")].sharding == (None, "model")
    assert params[("net", "lin", "bias")].metadata == {"tag": "b"}


def test_precision_is_passed_to_the_matmul() -> None:
    lin, _, params = _make()
    x = jnp.ones((2, 5))
    _, params = lin(params, x)
    for precision in (jax.lax.Precision.HIGHEST, jax.lax.Precision.DEFAULT):
        jaxpr = jax.make_jaxpr(lambda p, x, pr=precision: lin(p, x, precision=pr)[0])(params, x)
        dots = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "dot_general"]
        assert len(dots) == 1
        assert dots[0].params["precision"] == (precision, precision)


def test_default_precision_leaves_the_matmul_unconstrained() -> None:
    lin, _, params = _make()
    x = jnp.ones((2, 5))
    _, params = lin(params, x)
    jaxpr = jax.make_jaxpr(lambda p, x: lin(p, x)[0])(params, x)
    (dot,) = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "dot_general"]
    assert dot.params["precision"] is None


def test_input_size_is_taken_from_the_first_call() -> None:
    lin, _, params = _make(out=3)
    _, params = lin(params, jnp.ones((2, 7)))
    assert params[("net", "lin", "kernel")].value.shape == (7, 3)


def test_scalar_input_is_a_value_error() -> None:
    lin, _, params = _make()
    with pytest.raises(
        ValueError,
        match=r"Linear at 'net/lin': expected inputs of rank >= 1 .*got a scalar\. Fix:",
    ):
        lin(params, jnp.float32(1.0))


def test_input_size_differing_from_stored_kernel_is_a_value_error() -> None:
    lin, _, params = _make()
    _, params = lin(params, jnp.ones((2, 5)))
    with pytest.raises(
        ValueError,
        match=r"Linear at 'net/lin': expected parameter 'kernel' of shape \(6, 4\), "
        r"got the stored shape \(5, 4\)\. Fix:",
    ):
        lin(params.locked(), jnp.ones((2, 6)))
