"""The functional fallback: `model.functional()`, `load_params` and `nn.from_core`.

References are plain `jnp` formulas, eager calls on the model itself, and the
hand-built core modules that `from_core` wraps.
"""

import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import blox as bx
from blox import eager as nn

from ._state_helpers import batchnorm_stats_reference, close, randn, small_model

ROOT = pathlib.Path(__file__).resolve().parents[2]


def state_of(model):
    return {name: np.asarray(value) for name, value in model.state_dict().items()}


def assert_same_state(model, state):
    now = model.state_dict()
    assert list(now) == list(state)
    for name, value in state.items():
        np.testing.assert_array_equal(now[name], value, err_msg=name)


def test_fn_is_pure():
    model = small_model()
    x = randn(0, 8, 3)
    before = state_of(model)
    fn, params = model.functional()
    (out1, new1), (out2, new2) = fn(params, x), fn(params, x)
    np.testing.assert_array_equal(out1, out2)  # training mode: the same state, the same mask
    assert jax.tree.structure(new1) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(new1), jax.tree.leaves(new2)):
        np.testing.assert_array_equal(a, b)
    assert_same_state(model, before)
    assert int(params[("3", "rng", "counter")].value) == 0


def test_returned_params_carry_state_and_load_params_writes_it_back():
    model = small_model()
    x = randn(1, 8, 3)
    fn, params = model.functional()
    jitted = jax.jit(fn)
    out, new = jitted(params, x)
    assert int(new[("3", "rng", "counter")].value) == 1
    mean, var = batchnorm_stats_reference(model[0](x), jnp.zeros(6), jnp.ones(6))
    close(new[("1", "running_mean")].value, mean)
    close(new[("1", "running_var")].value, var)
    assert new[("1", "running_mean")].trainable is False

    model.load_params(new)
    for name, value in model.state_dict().items():
        assert value is new[tuple(name.split("."))].value, name
    # The next eager call continues from the loaded state, as the next fn call would.
    expected, after = jitted(new, x)
    close(model(x), expected)
    for name, value in model.state_dict().items():
        close(value, after[tuple(name.split("."))].value, tol=1e-6)
    assert int(model[3].rng.counter) == 2
    close(out, fn(params, x)[0])  # eager fn == jitted fn


def test_load_params_missing_path_raises():
    model = small_model()
    _, params = model.functional()
    partial, _ = params.split(lambda path, _: path[0] != "4")
    with pytest.raises(KeyError, match=r"expected an entry for \('4', 'kernel'\)"):
        model.load_params(partial)


def test_load_params_wrong_shape_raises_and_writes_nothing():
    model = small_model()
    before = state_of(model)
    _, params = model.functional()
    other = nn.Sequential(*[small_model()[i] for i in range(4)], nn.Linear(6, 3, seed=0))
    _, wrong = other.functional()
    with pytest.raises(ValueError, match=r"4.kernel: expected \(6, 2\), got \(6, 3\)"):
        model.load_params(wrong)
    assert_same_state(model, before)
    stacked = jax.tree.map(lambda v: jnp.stack([v, v]), params)
    with pytest.raises(ValueError, match="stacked batch"):
        model.load_params(stacked)


def test_load_params_inside_jit_on_a_closed_over_model_raises():
    model = small_model()
    fn, params = model.functional()
    x = randn(11, 8, 3)

    def step(params, x):
        _, new = fn(params, x)
        model.load_params(new)
        return new

    with pytest.raises(RuntimeError, match="closed over by it"):
        jax.jit(step)(params, x)
    assert all(not isinstance(v, jax.core.Tracer) for v in model.state_dict().values())
    model.load_params(jax.jit(lambda p, x: fn(p, x)[1])(params, x))
    assert int(model[3].rng.counter) == 1


class Heads(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = nn.Linear(3, 6, seed=0)
        self.heads = {"b": nn.Linear(6, 2, seed=1), "a": nn.Linear(6, 1, seed=2)}
        self.norm = nn.BatchNorm(6)
        self.scale = jnp.ones(())  # a plain array: a trainable parameter

    def __call__(self, x):
        h = self.norm(self.trunk(x)) * self.scale
        return self.heads["a"](h), self.heads["b"](h)


def test_paths_are_dotted_names_and_flags_follow_trainability():
    model = Heads().freeze("heads.b.kernel")
    fn, params = model.functional()
    names = list(model.state_dict())
    assert sorted(params.keys()) == sorted(tuple(n.split(".")) for n in names)
    assert ("heads", "a", "bias") in params and ("scale",) in params
    trainable, rest = params.split()
    expected = {tuple(n.split(".")) for n, _ in model.named_parameters(trainable_only=True)}
    assert set(trainable.keys()) == expected
    assert set(rest.keys()) == {
        ("heads", "b", "kernel"),
        ("norm", "running_mean"),
        ("norm", "running_var"),
    }
    assert fn(params, randn(2, 8, 3))[0][0].shape == (8, 1)


def test_jax_grad_on_trainable_params():
    model = nn.Sequential(nn.Linear(3, 6, seed=0), jax.nn.relu, nn.Linear(6, 2, seed=1))
    model.freeze("2.bias")
    x = randn(3, 8, 3)
    fn, params = model.functional()
    trainable, rest = params.split()
    grads = jax.jit(jax.grad(lambda t: jnp.sum(fn(t.merge(rest), x)[0] ** 2)))(trainable)
    assert set(grads.keys()) == {("0", "kernel"), ("0", "bias"), ("2", "kernel")}

    def reference(w1, b1, w2):
        h = jax.nn.relu(x @ w1 + b1[None])
        return jnp.sum((h @ w2 + model[2].bias[None]) ** 2)

    expected = jax.grad(reference, argnums=(0, 1, 2))(
        model[0].kernel, model[0].bias, model[2].kernel
    )
    for path, e in zip([("0", "kernel"), ("0", "bias"), ("2", "kernel")], expected):
        close(grads[path].value, e)


def test_vmap_over_inputs_in_eval_mode():
    model = nn.Sequential(
        nn.Linear(3, 6, seed=0), nn.LayerNorm(6), jax.nn.relu, nn.Dropout(0.5), nn.Linear(6, 2)
    ).eval()
    xs = randn(4, 8, 3)
    fn, params = model.functional()
    out = jax.vmap(lambda x: fn(params, x)[0])(xs)
    close(out, model(xs))
    close(out[3], model(xs[3]))


def test_vmap_over_stacked_params_is_an_ensemble():
    def member(seed):
        return nn.Sequential(
            nn.Linear(3, 6, seed=seed), jax.nn.relu, nn.Dropout(0.5, seed=seed), nn.Linear(6, 2)
        )

    models = [member(seed) for seed in range(3)]
    fn, _ = models[0].functional()
    stacked = jax.tree.map(lambda *v: jnp.stack(v), *[m.functional()[1] for m in models])
    x = randn(5, 8, 3)
    outs, new = jax.jit(jax.vmap(fn, in_axes=(0, None)))(stacked, x)
    assert outs.shape == (3, 8, 2)
    np.testing.assert_array_equal(new[("2", "rng", "counter")].value, [1, 1, 1])
    for k, model in enumerate(models):
        close(outs[k], model(x))  # training mode: member k's own next mask
    assert not np.allclose(outs[0], outs[1])


def test_shard_map_data_parallel_forward():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "eager" / "_shard_map_functional.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["OK", "mlp_forward", "OK", "batchnorm_statistics"]


# -- from_core ---------------------------------------------------------------------------------


class CoreNet(bx.Module):
    """A hand-built core model: Linear -> BatchNorm -> relu -> Dropout."""

    def __init__(self, graph, rng):
        super().__init__(graph)
        self.lin = bx.Linear(graph / "lin", 4, rng=rng)
        self.bn = bx.BatchNorm(graph / "bn", rng=rng)
        self.drop = bx.Dropout(graph / "drop", 0.5, rng=rng)

    def __call__(self, params, x, is_training=True):
        h, params = self.lin(params, x)
        h, params = self.bn(params, h, is_training=is_training)
        return self.drop(params, jax.nn.relu(h), is_training=is_training)


def core_net():
    g = bx.Graph("root")
    rng = bx.Rng(g / "rng")
    net = CoreNet(g / "net", rng)
    _, params = net(rng.seed(bx.Params(), seed=0), jnp.zeros((2, 3)))
    return net, params


def assert_state_matches_core(model, params):
    for path, param in params.items():
        chain = path[2:] if path[1] == "net" else path[1:]
        value = param.value
        if jnp.issubdtype(value.dtype, jax.dtypes.prng_key):
            value = jax.random.key_data(value)
        np.testing.assert_array_equal(model.state_dict()[".".join(chain)], value)


def test_from_core_equals_core_calls_bit_for_bit():
    net, params = core_net()
    model = nn.from_core(net, params)
    assert sorted(model.state_dict()) == [
        "bn.bias",
        "bn.running_mean",
        "bn.running_var",
        "bn.scale",
        "lin.bias",
        "lin.kernel",
        "rng.counter",
        "rng.seed",
    ]
    x = randn(6, 8, 3)
    # The eager call is compiled, so the core reference is too (op by op, XLA
    # may round a fused reduction differently by one ulp).
    train = jax.jit(net.__call__)
    for _ in range(2):  # training: the state advances identically
        expected, params = train(params, x)
        np.testing.assert_array_equal(model(x), expected)
        assert_state_matches_core(model, params)
    assert int(model.rng.counter) == int(params[("root", "rng", "counter")].value)

    expected, params = jax.jit(net.__call__)(params, x)
    close(nn.filter_jit(lambda m, x: m(x))(model, x), expected, tol=1e-6)
    assert_state_matches_core(model, params)

    model.eval()  # passed as is_training=False
    expected, same = jax.jit(lambda p, x: net(p, x, is_training=False))(params, x)
    np.testing.assert_array_equal(model(x), expected)
    assert_state_matches_core(model, same)


def test_from_core_apply_on_a_core_lstm():
    g = bx.Graph("root")
    rng = bx.Rng(g / "rng")
    lstm = bx.LSTM(g / "lstm", 5, rng=rng)
    xs = randn(7, 2, 4, 3)
    _, params = lstm.apply(rng.seed(bx.Params(), seed=1), xs)
    model = nn.from_core(lstm, params, method="apply")
    assert sorted(model.state_dict()) == ["gates.bias", "gates.kernel", "rng.counter", "rng.seed"]
    (expected, expected_state), _ = lstm.apply(params, xs)
    ys, state = model(xs)
    np.testing.assert_array_equal(ys, expected)
    np.testing.assert_array_equal(state.cell, expected_state.cell)
    np.testing.assert_array_equal(state.hidden, expected_state.hidden)


def test_from_core_bad_arguments():
    net, params = core_net()
    with pytest.raises(TypeError, match=r"expected a blox\.core Module, got Linear"):
        nn.from_core(nn.Linear(2, 2), params)
    with pytest.raises(TypeError, match=r"expected a blox\.core Params, got dict"):
        nn.from_core(net, {})
    with pytest.raises(TypeError, match="expected method to be a str, got int"):
        nn.from_core(net, params, method=0)
    with pytest.raises(ValueError, match="expected method to name a method of CoreNet"):
        nn.from_core(net, params, method="applyy")
