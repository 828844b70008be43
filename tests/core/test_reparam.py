"""WeightNorm and SpectralNorm against flax.linen, params and state copied by path."""

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import blox as bx

from ._flax_ref import close, flax_paths, inputs, probe


class _Wrapped(fnn.Module):
    wrapper: str
    options: dict

    @fnn.compact
    def __call__(self, x, **kwargs):
        wrap = getattr(fnn, self.wrapper)
        return wrap(fnn.Dense(3, name="dense"), name="w", **self.options)(x, **kwargs)


def _blox(wrapper: str, **options):
    graph = bx.Graph("net")
    rng = bx.Rng(graph / "rng")
    dense = bx.Linear(graph / "dense", 3, rng=rng)
    return getattr(bx, wrapper)(graph / "w", dense, rng=rng, **options)


def _copy(variables) -> bx.Params:
    entries = flax_paths(variables["params"], ("net",))
    stats = flax_paths(variables.get("batch_stats", {}), ("net",))
    entries.update({p: bx.Param(v, trainable=False) for p, v in stats.items()})
    return bx.Params.from_dict(entries)


@pytest.mark.parametrize(
    "options",
    [{}, {"feature_axes": None, "variable_filter": None}],
    ids=["kernel_per_feature", "all_params_one_norm"],
)
def test_weight_norm_matches_flax(options) -> None:
    x = inputs((2, 4))
    flax_model = _Wrapped("WeightNorm", options)
    variables = flax_model.init(jax.random.key(0), x)
    wn = _blox("WeightNorm", **options)
    params = _copy(variables)
    assert set(params.keys()) == set(flax_paths(variables["params"], ("net",)))
    r = probe((2, 3))

    def flax_loss(p, x):
        return jnp.sum(flax_model.apply({"params": p}, x) * r)

    def blox_loss(p, x):
        y, after = wn(p, x)
        assert set(after.keys()) == set(p.keys())
        return jnp.sum(y * r)

    close(wn(params, x)[0], flax_model.apply(variables, x))
    g_f = jax.jit(jax.grad(flax_loss, argnums=(0, 1)))(variables["params"], x)
    g_b = jax.jit(jax.grad(blox_loss, argnums=(0, 1)))(params, x)
    close(g_b[1], g_f[1])
    for path, value in flax_paths(g_f[0], ("net",)).items():
        close(g_b[0][path].value, value)
    # The stored kernel is the raw one: the layer never writes back its normalised copy.
    _, after = wn(params, x)
    np.testing.assert_array_equal(
        after[("net", "dense", "kernel")].value, params[("net", "dense", "kernel")].value
    )


def test_spectral_norm_matches_flax_and_updates_only_in_training() -> None:
    x = inputs((2, 4))
    flax_model = _Wrapped("SpectralNorm", {"n_steps": 2})
    variables = flax_model.init(jax.random.key(0), x, update_stats=True)
    sn = _blox("SpectralNorm", n_steps=2)
    params = _copy(variables)
    u_path, sigma_path = ("net", "w", "dense/kernel/u"), ("net", "w", "dense/kernel/sigma")
    assert params[u_path].value.shape == (1, 3) and params[sigma_path].value.shape == ()
    step = jax.jit(lambda p, x: sn(p, x, is_training=True))
    for _ in range(2):
        y_f, updates = flax_model.apply(variables, x, update_stats=True, mutable=["batch_stats"])
        variables = {**variables, **updates}
        y_b, params = step(params, x)
        close(y_b, y_f)
    close(params[u_path].value, variables["batch_stats"]["w"]["dense/kernel/u"])
    close(params[sigma_path].value, variables["batch_stats"]["w"]["dense/kernel/sigma"])
    y_eval, frozen = sn(params, x, is_training=False)
    close(y_eval, flax_model.apply(variables, x, update_stats=False))
    np.testing.assert_array_equal(frozen[u_path].value, params[u_path].value)
    r = probe((2, 3))
    g_f = jax.grad(
        lambda p: jnp.sum(flax_model.apply({**variables, "params": p}, x, update_stats=False) * r)
    )(variables["params"])
    g_b = jax.grad(lambda p: jnp.sum(sn(p, x, is_training=False)[0] * r))(params)
    for path, value in flax_paths(g_f, ("net",)).items():
        close(g_b[path].value, value)


def test_spectral_norm_and_weight_norm_errors() -> None:
    graph = bx.Graph("net")
    with pytest.raises(
        TypeError,
        match=r"WeightNorm at 'net/w': expected a blox Module to "
        r"wrap, got function\. Fix:",
    ):
        bx.WeightNorm(graph / "w", lambda x: x)
    rng = bx.Rng(graph / "rng")
    conv = bx.Conv(graph / "conv", 3, 2, rng=rng)
    sn = bx.SpectralNorm(graph / "sn", conv, error_on_non_matrix=True, rng=rng)
    with pytest.raises(
        ValueError,
        match=r"SpectralNorm at 'net/sn': expected 2-D weights "
        r"with error_on_non_matrix=True, got 'conv/kernel' of shape \(3, 1, 2\)",
    ):
        sn(rng.seed(bx.Params(), seed=0), jnp.ones((1, 5, 1)))
