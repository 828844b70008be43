"""State threading through `nn.filter_jit`, `nn.filter_grad` and plain JAX/Equinox.

Expected values come from references: the core `Rng`/`Dropout` formulas, plain
`jnp` BatchNorm statistics, and `jax.grad` of the model's functional form.
"""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from blox import eager as nn

from ._state_helpers import (
    Net,
    batchnorm_stats_reference,
    close,
    concrete_leaves,
    dropout_reference,
    randn,
    small_model,
    templates_dataset,
)

# -- the spec's example ------------------------------------------------------------------


def test_spec_example_trains_and_threads_state():
    nn.manual_seed(0)
    model = Net()
    x, y = templates_dataset()
    opt = optax.adam(1e-2)
    opt_state = opt.init(nn.trainable(model))

    @nn.filter_jit
    def step(model, opt_state, x, y):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

        loss, grads = nn.filter_value_and_grad(loss_fn)(model)
        updates, opt_state = opt.update(grads, opt_state, nn.trainable(model))
        return eqx.apply_updates(model, updates), opt_state, loss

    mean0, var0 = model.bn.running_mean, model.bn.running_var
    losses = []
    for i in range(40):
        assert int(model.drop.rng.counter) == i
        model, opt_state, loss = step(model, opt_state, x, y)
        losses.append(float(loss))
    assert int(model.drop.rng.counter) == 40
    assert losses[-1] < 0.5 * losses[0], losses
    assert not np.allclose(model.bn.running_mean, mean0)
    assert not np.allclose(model.bn.running_var, var0)

    # A jitted step that does not return the model still advances its state.
    @nn.filter_jit
    def forward(model, x):
        return model(x)

    counter = int(model.drop.rng.counter)
    a, b = forward(model, x), forward(model, x)
    assert int(model.drop.rng.counter) == counter + 2
    assert not np.array_equal(a, b)

    model.eval()
    assert not model.training and not model.drop.training
    state = {k: np.asarray(v) for k, v in model.state_dict().items()}
    logits1, logits2 = model(x), forward(model, x)
    np.testing.assert_array_equal(logits1, model(x))
    close(logits1, logits2)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, state[name], err_msg=name)
    accuracy = float((logits1.argmax(-1) == y).mean())
    assert accuracy > 0.9, accuracy


def test_filter_jit_dropout_masks_follow_the_core_formula():
    drop = nn.Dropout(0.5, seed=3)
    x = jnp.ones((64,))
    apply = nn.filter_jit(lambda d, x: d(x))
    masks = []
    for counter in range(3):
        out = apply(drop, x)
        close(out, dropout_reference(drop, x, counter), tol=0)
        assert int(drop.rng.counter) == counter + 1
        masks.append(np.asarray(out))
    assert not np.array_equal(masks[0], masks[1])
    assert not np.array_equal(masks[1], masks[2])


# -- nn.filter_jit -----------------------------------------------------------------------------


@pytest.mark.parametrize("returns_model", [False, True])
def test_filter_jit_writes_state_back_to_caller(returns_model):
    model = small_model()
    x = randn(0, 8, 3)
    fn, params = model.functional()
    expected_out, expected = jax.jit(fn)(params, x)

    @nn.filter_jit
    def forward(model, x):
        out = model(x)
        return (out, model) if returns_model else out

    result = forward(model, x)
    out = result[0] if returns_model else result
    close(out, expected_out)
    for name, value in model.state_dict().items():
        close(value, expected[tuple(name.split("."))].value, tol=1e-6)
    assert int(model[3].rng.counter) == 1
    h = model[0](x)  # the BatchNorm's input, recomputed eagerly (Linear has no state)
    mean, var = batchnorm_stats_reference(h, jnp.zeros(6), jnp.ones(6))
    close(model[1].running_mean, mean)
    close(model[1].running_var, var)
    if returns_model:
        returned = result[1]
        assert returned is not model
        for (name, a), b in zip(model.state_dict().items(), returned.state_dict().values()):
            np.testing.assert_array_equal(a, b, err_msg=name)
    assert concrete_leaves(model)


def test_filter_jit_nested_containers_and_kwargs():
    a, b, c = nn.Dropout(0.5, seed=0), nn.Dropout(0.5, seed=1), nn.Dropout(0.5, seed=2)
    bn = nn.BatchNorm(3)
    x = randn(1, 4, 3)

    @nn.filter_jit
    def forward(pair, table, x, *, norm):
        return pair[0](x) + pair[1](x) + table["c"](x) + norm(x)

    forward([a, b], {"c": c}, x, norm=bn)
    forward([a, b], {"c": c}, x, norm=bn)
    for drop in (a, b, c):
        assert int(drop.rng.counter) == 2
    mean, var = batchnorm_stats_reference(x, jnp.zeros(3), jnp.ones(3))
    mean, var = batchnorm_stats_reference(x, mean, var)
    close(bn.running_mean, mean)
    close(bn.running_var, var)
    assert concrete_leaves(a, b, c, bn)


class Branches(nn.Module):
    """State-carrying modules in a dict attribute, keys not in sorted order."""

    def __init__(self):
        super().__init__()
        self.branches = {"b": nn.Dropout(0.5, seed=1), "a": nn.BatchNorm(3)}

    def __call__(self, x):
        return self.branches["b"](x) + self.branches["a"](x)


@pytest.mark.parametrize("transform", ["filter_jit", "filter_grad"])
def test_state_of_dict_attributes_goes_back_by_name(transform):
    model = Branches()
    seed = np.asarray(model.branches["b"].rng.seed)
    x = randn(10, 8, 3)
    if transform == "filter_jit":
        nn.filter_jit(lambda m, x: m(x))(model, x)
    else:
        nn.filter_grad(lambda m, x: jnp.sum(m(x) ** 2))(model, x)
    drop, bn = model.branches["b"], model.branches["a"]
    np.testing.assert_array_equal(drop.rng.seed, seed)
    assert drop.rng.counter.dtype == jnp.uint32 and int(drop.rng.counter) == 1
    mean, var = batchnorm_stats_reference(x, jnp.zeros(3), jnp.ones(3))
    close(bn.running_mean, mean)
    close(bn.running_var, var)


def test_filter_jit_compiles_once_across_steps():
    model = small_model()
    traces = []

    @nn.filter_jit
    def forward(model, x):
        traces.append(None)
        return model(x)

    x = randn(9, 8, 3)
    outs = [forward(model, x) for _ in range(4)]
    assert len(traces) == 1
    assert int(model[3].rng.counter) == 4
    assert not np.array_equal(outs[0], outs[1])
    forward(model, jnp.ones((5, 3)))  # a new shape is a new trace
    assert len(traces) == 2


def test_filter_jit_donate_all():
    nn.manual_seed(1)
    model = small_model()
    nn.manual_seed(1)
    reference = small_model()  # equal values in separate buffers (donation deletes them)
    opt = optax.sgd(0.1)
    opt_state = opt.init(nn.trainable(model))
    x = randn(2, 8, 3)

    def step(model, opt_state, x):
        loss, grads = nn.filter_value_and_grad(lambda m: jnp.mean(m(x) ** 2))(model)
        updates, opt_state = opt.update(grads, opt_state, nn.trainable(model))
        return eqx.apply_updates(model, updates), opt_state, loss

    ref_state = opt.init(nn.trainable(reference))
    donated = nn.filter_jit(step, donate="all")
    plain = nn.filter_jit(step)
    for _ in range(3):
        model, opt_state, loss = donated(model, opt_state, x)
        reference, ref_state, ref_loss = plain(reference, ref_state, x)
        close(loss, ref_loss)
    assert int(model[3].rng.counter) == 3
    for name, value in model.state_dict().items():
        close(value, reference.state_dict()[name], tol=1e-6)


def test_filter_jit_donate_all_except_first_keeps_the_first_argument():
    model = small_model()
    other = small_model(seed=3)
    x = randn(2, 8, 3)
    f = nn.filter_jit(lambda keep, give, x: (keep(x) + give(x), give), donate="all-except-first")
    _, given = f(model, other, x)
    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(model))
    assert other[0].kernel.is_deleted()  # donated to the returned copy
    assert not given[0].kernel.is_deleted()
    assert int(model[3].rng.counter) == 1 and int(other[3].rng.counter) == 1


class WithMethod(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = small_model()

    def forward(self, x):
        return self.body(x)


@pytest.mark.parametrize("kind", ["model", "bound_method"])
def test_filter_jit_of_a_model_traces_its_current_arrays(kind):
    """The model as the function is an argument in disguise, not a constant."""
    owner = WithMethod()
    model = owner.body
    f = nn.filter_jit(owner.forward if kind == "bound_method" else model)
    x = randn(12, 8, 3)
    f(x)
    model.load_state_dict(small_model(seed=4).state_dict())  # new weights, fresh RNG
    model.eval()
    close(f(x), model(x))
    model.train()
    fn, params = model.functional()
    close(f(x), fn(params, x)[0])  # the current RNG state, and it advances
    assert int(model[3].rng.counter) == 1


# -- nn.filter_grad / nn.filter_value_and_grad -------------------------------------------------


def _loss(model, x):
    return jnp.sum(jnp.tanh(model(x)))


def test_filter_grad_none_exactly_for_buffers_rng_and_frozen():
    model = small_model().freeze("4.bias")
    x = randn(3, 8, 3)
    grads = nn.filter_grad(_loss)(model, x)
    flat = jax.tree_util.tree_flatten_with_path(grads, is_leaf=lambda v: v is None)[0]
    names = list(model.state_dict())
    assert len(flat) == len(names)
    nones = {name for name, (_, g) in zip(names, flat) if g is None}
    assert nones == {
        "1.running_mean",
        "1.running_var",
        "3.rng.seed",
        "3.rng.counter",
        "4.bias",
    }
    for name, (_, g) in zip(names, flat):
        if g is not None:
            assert g.shape == model.state_dict()[name].shape


@pytest.mark.parametrize("has_aux", [False, True])
def test_filter_value_and_grad_equals_functional_grad(has_aux):
    model = small_model(seed=5).freeze("0.bias")
    x = randn(4, 8, 3)
    fn, params = model.functional()

    def reference(params):
        trainable, rest = params.split()

        def functional_loss(t):
            out, new = fn(t.merge(rest), x)
            return jnp.sum(jnp.tanh(out)), (out, new)

        return jax.value_and_grad(functional_loss, has_aux=True)(trainable)

    (ref_value, (ref_out, ref_new)), ref_grads = reference(params)
    _, ref_grads_next = reference(ref_new)  # the second call sees the advanced state
    assert set(ref_grads.keys()) == {
        ("0", "kernel"),
        ("1", "scale"),
        ("1", "bias"),
        ("4", "kernel"),
        ("4", "bias"),
    }

    if has_aux:

        def loss(m, x):
            out = m(x)
            return jnp.sum(jnp.tanh(out)), out

        (value, aux), grads = nn.filter_value_and_grad(loss, has_aux=True)(model, x)
        close(aux, ref_out)
        grads_next, aux_next = nn.filter_grad(loss, has_aux=True)(model, x)
        close(aux_next, fn(ref_new, x)[0])
    else:
        value, grads = nn.filter_value_and_grad(_loss)(model, x)
        grads_next = nn.filter_grad(_loss)(model, x)

    close(value, ref_value)
    for path, g in ref_grads.items():
        close(getattr(grads[int(path[0])], path[1]), g.value)
        close(getattr(grads_next[int(path[0])], path[1]), ref_grads_next[path].value)
    assert grads[0].bias is None and grads_next[0].bias is None
    assert int(model[3].rng.counter) == 2
    assert int(ref_new[("3", "rng", "counter")].value) == 1


def test_filter_grad_writes_batchnorm_stats_back():
    model = small_model()
    x = randn(5, 8, 3)
    h = model[0](x)
    nn.filter_grad(_loss)(model, x)
    mean, var = batchnorm_stats_reference(h, jnp.zeros(6), jnp.ones(6))
    close(model[1].running_mean, mean)
    close(model[1].running_var, var)
    assert int(model[3].rng.counter) == 1
    assert concrete_leaves(model)


def test_filter_grad_copies_other_module_arguments():
    model = nn.Linear(3, 6, seed=0)
    head = nn.Sequential(nn.BatchNorm(6), nn.Dropout(0.5, seed=1), nn.Linear(6, 2, seed=2))
    x = randn(6, 8, 3)

    def loss(model, head, x):
        return jnp.sum(head(model(x)) ** 2)

    grads = nn.filter_grad(loss)(model, head, x)
    assert grads.kernel.shape == (3, 6)
    assert concrete_leaves(model, head)
    assert int(head[1].rng.counter) == 1
    mean, var = batchnorm_stats_reference(model(x), jnp.zeros(6), jnp.ones(6))
    close(head[0].running_mean, mean)
    close(head[0].running_var, var)
    # The same under nn.filter_jit, where every argument is traced.
    nn.filter_jit(nn.filter_grad(loss))(model, head, x)
    assert concrete_leaves(model, head)
    assert int(head[1].rng.counter) == 2


# -- plain eqx.filter_jit ----------------------------------------------------------------------


@pytest.fixture
def fresh_stale_guard():
    """The stale-state warning is per draw site, so each test's own trace warns;
    emptying the record anyway keeps one test's draws out of the next."""
    nn.clear_caches()


def test_eqx_filter_jit_step_returning_model_returns_updated_state(fresh_stale_guard):
    model = small_model()
    x = randn(7, 8, 3)

    @eqx.filter_jit
    def forward(model, x):
        return model(x), model

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        current = model
        for counter in range(3):
            _, current = forward(current, x)
            assert int(current[3].rng.counter) == counter + 1
        jax.effects_barrier()
    assert not caught, [str(w.message) for w in caught]
    # Documented: the caller's own object is not updated by plain eqx.filter_jit.
    assert int(model[3].rng.counter) == 0
    np.testing.assert_array_equal(model[1].running_mean, jnp.zeros(6))
    assert not np.array_equal(current[1].running_mean, jnp.zeros(6))


def test_eqx_filter_jit_step_not_returning_model_loses_state_and_warns(fresh_stale_guard):
    model = small_model()
    x = randn(8, 8, 3)

    @eqx.filter_jit
    def forward(model, x):
        return model(x)

    with pytest.warns(RuntimeWarning, match="drawn twice from the same state"):
        a = forward(model, x)
        b = forward(model, x)
        jax.effects_barrier()
    np.testing.assert_array_equal(a, b)  # the same mask: the state was lost
    assert int(model[3].rng.counter) == 0
    np.testing.assert_array_equal(model[1].running_mean, jnp.zeros(6))


def test_stale_guard_ignores_a_fresh_model_with_the_same_seed(fresh_stale_guard):
    @eqx.filter_jit
    def forward(model, x):
        return model(x), model

    x = jnp.ones((4, 3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):  # the same seeds again: reproducible, not stale
            model = small_model()
            for _ in range(3):
                _, model = forward(model, x)
        # A different jitted function on another same-seeded model.
        eqx.filter_jit(lambda m, x: m(x))(small_model(), x)
        jax.effects_barrier()
    assert not caught, [str(w.message) for w in caught]


# -- closed-over models ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make", [lambda: nn.Dropout(0.5, seed=0), lambda: nn.BatchNorm(3)], ids=["drop", "bn"]
)
def test_closed_over_training_model_raises(make):
    x = jnp.arange(12.0).reshape(4, 3)
    layer = make()
    before = {k: np.asarray(v) for k, v in layer.state_dict().items()}
    with pytest.raises(RuntimeError, match="pass the model as an argument"):
        jax.jit(lambda x: layer(x))(x)
    with pytest.raises(RuntimeError, match="closed over by it"):
        nn.filter_jit(lambda x: layer(x))(x)
    assert concrete_leaves(layer)
    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, before[name])
    layer.eval()
    close(jax.jit(lambda x: layer(x))(x), layer(x))
    close(nn.filter_jit(lambda x: layer(x))(x), layer(x))


def test_closed_over_model_under_filter_grad():
    head = nn.BatchNorm(6)
    lin = nn.Linear(3, 6, seed=0)
    x = randn(13, 8, 3)

    # Eagerly, the statistics are stop-gradient values: updated in place, as in PyTorch.
    nn.filter_grad(lambda lin: jnp.sum(head(lin(x))))(lin)
    mean, var = batchnorm_stats_reference(lin(x), jnp.zeros(6), jnp.ones(6))
    close(head.running_mean, mean)
    close(head.running_var, var)
    assert concrete_leaves(head, lin)
    # Under an enclosing jit the update is traced: writing it back would leak.
    with pytest.raises(RuntimeError, match="pass the model as an argument"):
        jax.jit(lambda x: nn.filter_grad(lambda h: jnp.sum(h(lin(x))))(head))(x)
    assert concrete_leaves(head, lin)
    close(head.running_mean, mean)
