"""Stamped flattenings: a compiled call reuses a module tree's leaves until anything changes.

Every way of changing a model between two calls must reach the next call,
the table must never keep a dead model's or a replaced array's memory, and a
training loop fed its own outputs must give the same numbers as one that
walks every tree.
"""

import gc
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from blox import eager as nn
from blox.eager import _pytree
from blox.eager._context import CONTEXT
from blox.eager._dispatch import _make_probe
from blox.eager._pytree import STAMP, stamp_of


def data(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def mlp(seed=0):
    return nn.Sequential(nn.Linear(4, 8, seed=seed), jax.nn.relu, nn.Linear(8, 3, seed=seed + 1))


def op_by_op(model, x):
    with jax.disable_jit():
        return model(x)


def test_a_called_model_is_stamped_and_its_repeat_call_agrees():
    model, x = mlp(), data((5, 4))
    first = model(x)
    assert stamp_of(model) is not None
    np.testing.assert_array_equal(model(x), first)
    np.testing.assert_allclose(first, op_by_op(model, x), rtol=1e-6, atol=1e-6)


def _set_kernel(model):
    model[0].kernel = model[0].kernel * 2.0


def _load_state_dict(model):
    state = model.state_dict()
    model.load_state_dict({k: v * 0.5 for k, v in state.items()})


def _load_params(model):
    _fn, params = model.functional()
    model.load_params(jax.tree.map(lambda v: v + 1.0, params))


def _to_half(model):
    model.to(jnp.float16)


def _freeze(model):
    model[0].freeze()


def _replace_layer(model):
    model.__setattr__("2", nn.Linear(8, 3, seed=9))


@pytest.mark.parametrize(
    "change", [_set_kernel, _load_state_dict, _load_params, _to_half, _freeze, _replace_layer]
)
def test_every_change_between_calls_reaches_the_next_call(change):
    model, x = mlp(), data((5, 4))
    model(x)
    change(model)
    assert stamp_of(model) is None, "a change must forget every stamp"
    assert STAMP not in model.__dict__, "and drop the stale one with its leaves"
    out = model(x)
    np.testing.assert_allclose(out, op_by_op(model, x), rtol=2e-3, atol=2e-3)  # float16 case


def test_a_mode_switch_between_calls_reaches_the_next_call():
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.9))
    x = data((64, 4))
    model.eval()
    quiet = model(x)
    np.testing.assert_array_equal(model(x), quiet)
    model.train()
    assert (model(x) == 0).mean() > 0.5  # dropout now drops


class Blocks(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = [nn.Linear(4, 4, seed=1), nn.Linear(4, 4, seed=2)]

    def __call__(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def test_a_list_of_modules_mutated_in_place_is_never_stale():
    model, x = Blocks(), data((2, 4))
    model(x)
    assert stamp_of(model) is None  # a list can change without telling any module
    model.blocks[1] = nn.Linear(4, 4, seed=7)
    np.testing.assert_allclose(model(x), op_by_op(model, x), rtol=1e-6, atol=1e-6)
    model.blocks.append(nn.Linear(4, 4, seed=8))
    np.testing.assert_allclose(model(x), op_by_op(model, x), rtol=1e-6, atol=1e-6)


def test_stamps_keep_no_dead_model_and_no_replaced_array_alive():
    model, x = mlp(), data((5, 4))
    model(x)
    dead = _weak(model[0].kernel)
    del model
    gc.collect()
    assert dead() is None, "a dead model's kernel must not be kept alive by its stamp"
    # Changing a child stales its parent's stamp too, which lists the child's
    # leaves: the parent's record must go, not just become unreadable.
    model = mlp()
    model(x)
    old = model[0].kernel
    ref = _weak(old)
    model[0].kernel = jnp.zeros_like(old)
    del old
    gc.collect()
    assert STAMP not in model.__dict__
    assert ref() is None, "the replaced kernel must not be kept alive by a stamp"


def test_copies_and_pickles_leave_the_stamp_behind():
    import copy
    import pickle

    model = nn.Sequential(nn.Linear(4, 8, seed=1), nn.Linear(8, 3, seed=2))  # (picklable)
    x = data((5, 4))
    model(x)
    assert STAMP in model.__dict__
    for twin in (copy.copy(model), copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert STAMP not in twin.__dict__
        np.testing.assert_allclose(twin(x), model(x), rtol=1e-6, atol=1e-6)


def test_the_record_of_stamped_objects_stays_bounded(monkeypatch):
    # Objects stamped since the last change are listed weakly, for that change
    # to drop their stamps; a loop that changes nothing must not grow it.
    monkeypatch.setattr(_pytree, "INTERN_LIMIT", 8)
    model, x = mlp(), data((5, 4))
    kept = []
    for index in range(40):
        twin = copy_of(model)
        twin(x)
        if index % 4 == 0:
            kept.append(twin)  # ten live ones: more than the bound
    assert len(CONTEXT.stamped) <= 8
    for twin in kept:  # a live stamped object is listed, so a change reaches it
        assert STAMP not in twin.__dict__ or id(twin) in CONTEXT.stamped
    model[0].kernel = model[0].kernel + 1.0
    assert not any(STAMP in twin.__dict__ for twin in kept)


def copy_of(model):
    leaves, treedef = jax.tree.flatten(model)
    return jax.tree.unflatten(treedef, leaves)


def _weak(array):
    import weakref

    return weakref.ref(array)


def step_fn():
    opt = optax.adam(1e-2)

    def step(model, opt_state, x, y):
        def loss(m):
            return jnp.mean((m(x) - y) ** 2)

        value, grads = nn.filter_value_and_grad(loss)(model)
        updates, opt_state = opt.update(grads, opt_state, nn.trainable(model))
        return eqx.apply_updates(model, updates), opt_state, value

    return opt, step


def _train(steps, *, forget):
    opt, body = step_fn()
    step = nn.filter_jit(body)
    model = nn.Sequential(nn.Linear(4, 8, seed=3), nn.Dropout(0.2, seed=4), nn.Linear(8, 2, seed=5))
    opt_state = opt.init(nn.trainable(model))
    x, y = data((16, 4), 1), data((16, 2), 2)
    losses = []
    for _ in range(steps):
        if forget:
            _pytree._touch()
        model, opt_state, value = step(model, opt_state, x, y)
        losses.append(float(value))
    return model, opt_state, losses, step


def test_a_training_loop_fed_its_outputs_matches_one_that_walks_every_tree():
    stamped_model, stamped_state, stamped_losses, step = _train(6, forget=False)
    walked_model, walked_state, walked_losses, _ = _train(6, forget=True)
    assert stamped_losses == walked_losses
    for a, b in zip(
        jax.tree.leaves((stamped_model, stamped_state)),
        jax.tree.leaves((walked_model, walked_state)),
    ):
        np.testing.assert_array_equal(a, b)
    dispatcher = step._blox_dispatcher
    assert len(dispatcher.by_stamp) == 1  # the loop found its program by stamps
    assert nn.compile_stats(step).traces == 1


def test_the_probe_serves_a_loop_and_any_other_call_shape_falls_back():
    # After one call found by stamps, the dispatcher checks the next call
    # against that call's shape in generated code. Every other shape (a new
    # batch size, a None, another dtype, a model of other sizes, the shape
    # checks switched off) must miss the probe and reach its own program.
    step = nn.filter_jit(lambda model, x, extra: model(x) if extra is None else model(x) + extra)
    model, x = mlp(), data((5, 4))
    # Everything built first: building a module forgets every stamp, and
    # then no probe could match anyway.
    other_model = nn.Sequential(nn.Linear(4, 6), jax.nn.relu, nn.Linear(6, 3))
    twin = mlp(seed=3)
    wide, half = data((7, 4)), x.astype(jnp.float16)
    want = op_by_op(model, x)
    calls = [
        ((model, wide, None), op_by_op(model, wide)),
        ((model, x, jnp.ones((5, 3))), want + 1.0),
        ((model, half, None), op_by_op(model, half)),
        ((other_model, x, None), op_by_op(other_model, x)),
        ((twin, x, None), op_by_op(twin, x)),
    ]
    # Compiled; found by signature (and stamped); found by signature once
    # more (and filed by stamp key); found by stamp key: the probe is armed.
    for _ in range(4):
        step(model, x, None)
    dispatcher = step._blox_dispatcher
    assert dispatcher.probe is not None
    assert dispatcher.probe[0]((), (model, x, None)) is not None
    np.testing.assert_allclose(step(model, x, None), want, rtol=1e-6, atol=1e-6)
    # Each its own program (jax.jit would silently retrace a wrong one); the
    # last, a model of the same sizes, shares the first one's.
    for (args, expected), programs in zip(calls, [2, 3, 4, 5, 5], strict=True):
        assert dispatcher.probe[0]((), args) is None or args[0] is twin
        for _ in range(4):  # the fourth call arms this shape's probe
            np.testing.assert_allclose(step(*args), expected, rtol=2e-3, atol=2e-3)
        assert len(dispatcher.cache) == programs
        assert dispatcher.probe[0]((), args) is not None
    was = nn.typechecking_enabled()
    nn.set_typechecking(not was)
    try:
        assert dispatcher.probe[0]((), calls[-1][0]) is None  # the key holds the setting
        np.testing.assert_allclose(step(*calls[-1][0]), calls[-1][1], rtol=1e-6, atol=1e-6)
    finally:
        nn.set_typechecking(was)
    np.testing.assert_allclose(step(model, x, None), want, rtol=1e-6, atol=1e-6)
    dispatcher.clear()
    assert dispatcher.probe is None and not dispatcher.probes


class Pair(NamedTuple):
    a: jax.Array
    b: jax.Array


def test_a_probe_tells_tuple_types_lengths_and_stamps_apart():
    model, x = mlp(), data((5, 4))
    model(x)  # stamped
    probe = _make_probe((), (model, (x, x)))
    assert probe((), (model, (x, x))) is not None
    assert len(probe((), (model, (x, x)))) == len(jax.tree.leaves(model)) + 2
    assert probe((), (model, Pair(x, x))) is None  # the key holds the tuple's type
    assert probe((), (model, (x, x, x))) is None
    assert probe((), (model, (x, None))) is None
    assert probe((model,), (model, (x, x))) is None
    assert probe((), (mlp(seed=5), (x, x))) is None  # built after: no stamp


def test_a_returned_model_changed_between_steps_is_seen():
    opt, body = step_fn()
    step = nn.filter_jit(body)
    model = mlp()
    opt_state = opt.init(nn.trainable(model))
    x, y = data((8, 4)), data((8, 3))
    for _ in range(3):
        model, opt_state, _ = step(model, opt_state, x, y)
    model[2].bias = jnp.full((3,), 100.0)
    _, _, value = step(model, opt_state, x, y)
    expected = jnp.mean((op_by_op(model, x) - y) ** 2)
    np.testing.assert_allclose(value, expected, rtol=1e-5)


def test_a_dict_in_the_optimiser_state_changed_in_place_is_seen():
    # optax.inject_hyperparams keeps its hyperparameters in a dict, which
    # users change in place: a state holding a dict is walked on every call.
    opt = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)

    @nn.filter_jit
    def step(model, opt_state, x):
        grads = nn.filter_grad(lambda m: jnp.sum(m(x)))(model)
        updates, opt_state = opt.update(grads, opt_state, nn.trainable(model))
        return eqx.apply_updates(model, updates), opt_state

    model, x = mlp(), data((4, 4))
    opt_state = opt.init(nn.trainable(model))
    for _ in range(3):
        model, opt_state = step(model, opt_state, x)
    opt_state.hyperparams["learning_rate"] = jnp.asarray(0.0)
    before = [np.asarray(leaf) for leaf in jax.tree.leaves(model)]
    model, opt_state = step(model, opt_state, x)
    for a, b in zip(before, jax.tree.leaves(model)):
        np.testing.assert_array_equal(a, b)


def test_an_evaluation_loop_stamps_its_model_once_and_tracks_changes():
    evaluate = nn.filter_jit(lambda m, x: m(x))
    model = mlp()
    for i in range(3):
        x = data((5, 4), i)
        np.testing.assert_allclose(evaluate(model, x), op_by_op(model, x), rtol=1e-6, atol=1e-6)
    assert len(evaluate._blox_dispatcher.by_stamp) == 1
    model[0].bias = jnp.ones(8)
    np.testing.assert_allclose(evaluate(model, x), op_by_op(model, x), rtol=1e-6, atol=1e-6)


def test_a_model_that_cannot_be_stamped_is_walked_every_call_and_not_retried():
    evaluate = nn.filter_jit(lambda m, x: m(x))
    model, x = Blocks(), data((2, 4))
    evaluate(model, x)
    evaluate(model, x)
    dispatcher = evaluate._blox_dispatcher
    assert len(dispatcher.unstamped) == 1 and not dispatcher.by_stamp
    model.blocks[0] = nn.Linear(4, 4, seed=11)
    np.testing.assert_allclose(evaluate(model, x), op_by_op(model, x), rtol=1e-6, atol=1e-6)


def test_the_output_builder_equals_jax_unflatten_and_declines_what_it_cannot_build():
    from typing import NamedTuple

    from blox.eager._pytree import builder

    class State(NamedTuple):
        count: jax.Array
        moments: tuple

    tree = (mlp(), State(jnp.zeros(()), (None, [nn.Linear(2, 2, seed=1)])), jnp.ones(3))
    leaves, treedef = jax.tree.flatten(tree)
    built = builder(treedef)(leaves)
    assert jax.tree.structure(built) == treedef
    assert all(a is b for a, b in zip(jax.tree.leaves(built), leaves))
    assert type(built[1]) is State and built[1].moments[0] is None
    assert type(built[1].moments[1]) is list and built[0] is not tree[0]
    np.testing.assert_array_equal(built[0](jnp.ones((1, 4))), tree[0](jnp.ones((1, 4))))
    assert builder(jax.tree.structure({"a": 1})) is None  # dicts keep jax's unflatten

    class Doubled(Pair):  # a named tuple whose own __new__ does work: it must run
        def __new__(cls, a, b):
            return super().__new__(cls, a * 2, b)

    leaves, treedef = jax.tree.flatten(Doubled(jnp.ones(2), jnp.ones(2)))
    want = jax.tree.unflatten(treedef, leaves)
    got = builder(treedef)(leaves)
    assert type(got) is Doubled
    np.testing.assert_array_equal(got.a, want.a)  # 4s, as jax's unflatten gives
    plain = builder(jax.tree.structure(Pair(1, 2)))([3, 4])
    assert type(plain) is Pair and plain == (3, 4)
