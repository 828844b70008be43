"""Every Equinox/JAX compatibility claim of the spec, one test each.

References are plain `jnp` formulas on the model's own arrays, or the same
computation on the functional form.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from blox import eager as nn

from ._state_helpers import Net, close, randn, small_model


def mlp(seed=0):
    return nn.Sequential(nn.Linear(3, 6, seed=seed), jax.nn.relu, nn.Linear(6, 2, seed=seed + 1))


def mlp_reference(model, x):
    h = jax.nn.relu(x @ model[0].kernel + model[0].bias[None])
    return h @ model[2].kernel + model[2].bias[None]


def test_leaves_are_exactly_the_arrays():
    model = small_model()
    leaves = jax.tree.leaves(model)
    arrays = list(model.state_dict().values())
    assert len(leaves) == len(arrays) == 10
    assert all(a is b for a, b in zip(leaves, arrays))
    assert all(type(leaf) is type(jnp.zeros(1)) for leaf in leaves)
    # Configuration (rates, sizes, mode, the core modules) lives in the treedef.
    seed = model[3].rng.seed
    assert seed.dtype == jnp.uint32 and seed.shape == (2,)
    assert model[3].rate == 0.5 and not isinstance(model[3].rate, jax.Array)


def test_eqx_filter_jit_and_filter_grad():
    model = mlp()
    x = randn(0, 8, 3)
    close(eqx.filter_jit(lambda m, x: m(x))(model, x), mlp_reference(model, x))

    grads = eqx.filter_grad(lambda m: jnp.sum(m(x) ** 2))(model)
    expected = jax.grad(
        lambda w: jnp.sum(
            (jax.nn.relu(x @ w[0] + w[1][None]) @ w[2] + w[3][None]) ** 2,
        )
    )([model[0].kernel, model[0].bias, model[2].kernel, model[2].bias])
    got = [grads[0].kernel, grads[0].bias, grads[2].kernel, grads[2].bias]
    for g, e in zip(got, expected):
        close(g, e)


def test_partition_combine_round_trip():
    model = small_model().eval()
    x = randn(1, 8, 3)
    arrays, static = eqx.partition(model, eqx.is_array)
    assert jax.tree.leaves(static) == []
    rebuilt = eqx.combine(arrays, static)
    assert jax.tree.structure(rebuilt) == jax.tree.structure(model)
    assert not rebuilt.training
    np.testing.assert_array_equal(rebuilt(x), model(x))
    floats, rest = eqx.partition(model, eqx.is_inexact_array)
    assert [leaf.dtype for leaf in jax.tree.leaves(rest)] == [jnp.uint32, jnp.uint32]
    np.testing.assert_array_equal(eqx.combine(floats, rest)(x), model(x))


def test_apply_updates_with_optax_on_trainable():
    model = small_model().freeze("0.bias")
    x = randn(2, 8, 3)
    opt = optax.sgd(0.5)
    params = nn.trainable(model)
    opt_state = opt.init(params)
    grads = nn.filter_grad(lambda m: jnp.mean(m(x) ** 2))(model)
    updates, _ = opt.update(grads, opt_state, params)
    new = eqx.apply_updates(model, updates)
    before, after = model.state_dict(), new.state_dict()
    flat_grads = dict(zip(before, jax.tree.leaves(grads, is_leaf=lambda v: v is None)))
    for name, value in before.items():
        g = flat_grads[name]
        if g is None:  # buffers, RNG state and the frozen bias stay as they are
            assert after[name] is value, name
        else:
            close(after[name], value - 0.5 * g, tol=1e-6)
    assert "0.bias" not in {n for n, g in flat_grads.items() if g is not None}


def test_tree_at_replaces_a_kernel():
    model = mlp()
    x = randn(3, 8, 3)
    kernel = jnp.arange(18.0).reshape(3, 6) / 10
    new = eqx.tree_at(lambda m: m[0].kernel, model, kernel)
    assert new[0].kernel is kernel
    assert model[0].kernel is not kernel
    close(new(x), mlp_reference(new, x))
    close(model(x), mlp_reference(model, x))
    assert not np.allclose(new(x), model(x))


def test_serialise_round_trip_with_dropout(tmp_path):
    model = small_model(seed=0)
    x = randn(4, 8, 3)
    for _ in range(3):
        model(x)  # advance the running statistics and the RNG counter
    path = tmp_path / "model.eqx"
    eqx.tree_serialise_leaves(path, model)
    other = eqx.tree_deserialise_leaves(path, small_model(seed=10))
    assert int(other[3].rng.counter) == 3
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[name], value, err_msg=name)
    np.testing.assert_array_equal(other(x), model(x))  # training: the same next mask
    np.testing.assert_array_equal(other(x), model(x))
    assert int(other[3].rng.counter) == int(model[3].rng.counter) == 5
    model.eval(), other.eval()
    np.testing.assert_array_equal(other(x), model(x))


def test_tree_map_scales_the_model():
    model = mlp()
    x = randn(5, 8, 3)
    doubled = jax.tree.map(lambda a: 2 * a, model)
    assert type(doubled) is type(model) and doubled is not model
    # relu is positively homogeneous: doubling every weight and bias gives
    # 2 * relu(2 * (x W1 + b1)) W2 + 2 b2.
    h = jax.nn.relu(x @ model[0].kernel + model[0].bias[None])
    close(doubled(x), 4 * h @ model[2].kernel + 2 * model[2].bias[None])


def test_optax_adam_end_to_end_matches_functional_training():
    x = randn(6, 32, 3)
    y = (x @ jnp.array([[1.0], [-2.0], [0.5]]))[:, 0]
    opt = optax.adam(1e-1)

    def loss_of(out):
        return jnp.mean((out[:, 0] - y) ** 2)

    model = mlp(seed=3)
    fn, params = model.functional()
    opt_state = opt.init(nn.trainable(model))

    @eqx.filter_jit
    def step(model, opt_state):
        loss, grads = eqx.filter_value_and_grad(lambda m: loss_of(m(x)))(model)
        updates, opt_state = opt.update(grads, opt_state, nn.trainable(model))
        return eqx.apply_updates(model, updates), opt_state, loss

    trainable, rest = params.split()
    ref_state = opt.init(trainable)

    @jax.jit
    def ref_step(trainable, ref_state):
        loss, grads = jax.value_and_grad(lambda t: loss_of(fn(t.merge(rest), x)[0]))(trainable)
        updates, ref_state = opt.update(grads, ref_state, trainable)
        return optax.apply_updates(trainable, updates), ref_state, loss

    losses = []
    for _ in range(30):
        model, opt_state, loss = step(model, opt_state)
        trainable, ref_state, ref_loss = ref_step(trainable, ref_state)
        close(loss, ref_loss, tol=1e-4)
        losses.append(float(loss))
    assert losses[-1] < 0.3 * losses[0], losses
    for name, value in model.state_dict().items():
        close(value, trainable[tuple(name.split("."))].value, tol=1e-4)


def test_same_architecture_shares_treedef_and_compiles_once():
    nn.manual_seed(0)
    a = Net()
    nn.manual_seed(1)
    b = Net()
    assert not np.array_equal(a.conv.kernel, b.conv.kernel)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    assert jax.tree.structure(small_model(0)) == jax.tree.structure(small_model(7))
    traces = []

    def forward(model, x):
        traces.append(None)
        return model(x)

    x = randn(7, 4, 8, 8, 1)
    for jit in (nn.filter_jit, eqx.filter_jit):
        traces.clear()
        f = jit(forward)
        outs = [f(a, x), f(b, x)]
        assert len(traces) == 1, jit
        assert not np.allclose(outs[0], outs[1])
    # Mode is configuration: eval is another trace, then cached for both models.
    traces.clear()
    f = nn.filter_jit(forward)
    f(a.eval(), x)
    f(b.eval(), x)
    assert len(traces) == 1
    close(f(a, x), a(x))
