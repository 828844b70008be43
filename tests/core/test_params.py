"""Param and Params: immutability, locking, split/merge and the pytree contract."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import blox as bx

W = ("net", "lin", "kernel")
B = ("net", "lin", "bias")
S = ("net", "bn", "running_mean")


def make_params(locked=False):
    """Three entries with distinct flags and metadata, in a fixed order."""
    return bx.Params.from_dict(
        {
            W: bx.Param(
                jnp.arange(6.0).reshape(2, 3),
                metadata={"sharding": (None, "model"), "nested": {"b": [1, 2], "a": 0}},
            ),
            B: jnp.array([0.5, -0.5, 1.5]),
            S: bx.Param(jnp.zeros(3), trainable=False, metadata={"tag": "stat"}),
        },
        locked=locked,
    )


def assert_same_entries(a, b):
    # Transforms return entries in sorted path order (the canonical flatten
    # order), so compare as mappings.
    assert sorted(a.keys()) == sorted(b.keys())
    for (pa, qa), (pb, qb) in zip(sorted(a.items()), sorted(b.items()), strict=True):
        assert pa == pb
        assert qa.trainable is qb.trainable
        assert qa.metadata == qb.metadata
        np.testing.assert_array_equal(np.asarray(qa.value), np.asarray(qb.value))


# -- Param ---------------------------------------------------------------------------


def test_param_fields_and_defaults():
    p = bx.Param(jnp.ones(2))
    assert p.trainable is True
    assert p.metadata == {}
    q = bx.Param(jnp.ones(2), trainable=False, metadata={"tag": "x"})
    assert q.trainable is False
    assert q.metadata == {"tag": "x"}


def test_param_copies_the_metadata_dict():
    meta = {"tag": "x"}
    p = bx.Param(jnp.ones(2), metadata=meta)
    meta["tag"] = "changed"
    assert p.metadata == {"tag": "x"}


def test_param_is_a_pytree_with_value_as_only_child():
    p = bx.Param(jnp.arange(3.0), trainable=False, metadata={"tag": "t", "sharding": ("d",)})
    leaves, treedef = jax.tree.flatten(p)
    assert len(leaves) == 1
    assert leaves[0] is p.value
    q = jax.tree.unflatten(treedef, [jnp.zeros(3)])
    assert isinstance(q, bx.Param)
    assert q.trainable is False
    assert q.metadata == {"tag": "t", "sharding": ("d",)}
    np.testing.assert_array_equal(q.value, np.zeros(3))
    doubled = jax.tree.map(lambda v: 2 * v, p)
    np.testing.assert_array_equal(doubled.value, np.array([0.0, 2.0, 4.0]))
    assert doubled.metadata == p.metadata


def test_param_static_fields_are_part_of_the_treedef():
    base = jax.tree.structure(bx.Param(jnp.ones(2)))
    assert jax.tree.structure(bx.Param(jnp.zeros(2))) == base
    assert jax.tree.structure(bx.Param(jnp.ones(2), trainable=False)) != base
    assert jax.tree.structure(bx.Param(jnp.ones(2), metadata={"tag": "x"})) != base


def test_param_replace_returns_a_new_param():
    p = bx.Param(jnp.ones(2), metadata={"tag": "x"})
    q = p.replace(value=jnp.zeros(2), trainable=False)
    assert q is not p
    assert q.trainable is False
    assert q.metadata == {"tag": "x"}
    np.testing.assert_array_equal(q.value, np.zeros(2))
    assert p.trainable is True
    np.testing.assert_array_equal(p.value, np.ones(2))
    r = p.replace(metadata={"tag": "y"})
    assert r.metadata == {"tag": "y"}
    assert p.metadata == {"tag": "x"}


def test_param_replace_unknown_field_raises_type_error():
    with pytest.raises(
        TypeError,
        match=r"Param\.replace: expected fields among value, trainable, metadata, "
        r"got \['shape'\]\. Fix",
    ):
        bx.Param(jnp.ones(2)).replace(shape=(3,))


@pytest.mark.parametrize("bad", [1, "yes", None, np.bool_(True)])
def test_param_trainable_not_bool_raises_type_error(bad):
    kind = type(bad).__name__
    with pytest.raises(
        TypeError,
        match=rf"Param: expected trainable to be a bool, got {kind} .*Fix: pass True or False",
    ):
        bx.Param(jnp.ones(2), trainable=bad)


@pytest.mark.parametrize("bad", [["tag"], ("tag", "x"), "tag"])
def test_param_metadata_not_dict_raises_type_error(bad):
    kind = type(bad).__name__
    with pytest.raises(
        TypeError, match=rf"Param: expected metadata to be a dict or None, got {kind}\. Fix"
    ):
        bx.Param(jnp.ones(2), metadata=bad)
    with pytest.raises(TypeError, match=r"Param: expected trainable to be a bool"):
        bx.Param(jnp.ones(2)).replace(trainable=0)


def test_param_equality_compares_value_flag_and_metadata():
    a = bx.Param(jnp.ones(2), metadata={"tag": "x"})
    assert a == bx.Param(jnp.ones(2), metadata={"tag": "x"})
    assert a != bx.Param(jnp.zeros(2), metadata={"tag": "x"})
    assert a != bx.Param(jnp.ones(2), trainable=False, metadata={"tag": "x"})
    assert a != bx.Param(jnp.ones(2))


# -- Params: mapping and immutability --------------------------------------------------


def test_empty_params():
    p = bx.Params()
    assert len(p) == 0
    assert list(p.keys()) == []
    assert not p.is_locked
    assert jax.tree.leaves(p) == []


def test_mapping_interface_in_insertion_order():
    p = make_params()
    assert len(p) == 3
    assert list(p.keys()) == [W, B, S]
    assert list(p) == [W, B, S]
    assert [k for k, _ in p.items()] == [W, B, S]
    assert [q.trainable for q in p.values()] == [True, True, False]
    assert W in p
    assert ("net", "lin") not in p
    assert isinstance(p[W], bx.Param)
    np.testing.assert_array_equal(p[B].value, np.array([0.5, -0.5, 1.5]))


def test_missing_path_raises_key_error_with_fix():
    with pytest.raises(
        KeyError,
        match=r"Params: expected a stored path, got \('net', 'nope'\) which is not among the "
        r"3 stored\. Fix: .*params\.keys\(\)",
    ):
        make_params()[("net", "nope")]


def test_item_assignment_raises_type_error_with_fix():
    p = make_params()
    with pytest.raises(
        TypeError,
        match=r"Params: expected no in-place assignment \(the container is immutable\), got "
        r"params\[\('net', 'lin', 'kernel'\)\] = \.\.\.\. Fix: params = params\.merge\(",
    ):
        p[W] = jnp.zeros((2, 3))
    np.testing.assert_array_equal(p[W].value, np.arange(6.0).reshape(2, 3))


def test_every_operation_returns_a_new_container():
    p = make_params()
    before = list(p.keys())
    ops = [
        p.locked(),
        p.unlocked(),
        *p.split(),
        p.merge(bx.Params.from_dict({("x",): jnp.ones(1)})),
        jax.tree.map(lambda v: v, p),
    ]
    for q in ops:
        assert q is not p
    assert list(p.keys()) == before
    assert not p.is_locked
    assert ("x",) not in p


def test_modules_return_new_containers_and_leave_the_input_alone():
    g = bx.Graph("net")
    rng = bx.Rng(g / "rng")
    lin = bx.Linear(g / "lin", 2, rng=rng)
    empty = bx.Params()
    seeded = rng.seed(empty, seed=0)
    assert len(empty) == 0
    _, created = lin(seeded, jnp.ones((1, 3)))
    assert len(seeded) == 2
    assert int(rng.get_counter(seeded)) == 0
    assert len(created) == 4
    assert int(rng.get_counter(created)) == 2


# -- locking ---------------------------------------------------------------------------


def test_locked_unlocked_is_locked():
    p = make_params()
    assert p.is_locked is False
    locked = p.locked()
    assert locked.is_locked is True
    assert p.is_locked is False
    assert locked.unlocked().is_locked is False
    assert locked.locked().is_locked is True
    assert_same_entries(locked, p)


def test_creating_a_param_on_locked_params_raises_key_error():
    g = bx.Graph("net")
    lin = bx.Linear(g / "lin", 2)
    with pytest.raises(
        KeyError,
        match=r"Linear at 'net/lin': expected to create parameter 'kernel' at "
        r"\('net', 'lin', 'kernel'\), got params that are locked\. Fix: .*params\.unlocked\(\)",
    ):
        lin(bx.Params().locked(), jnp.ones((1, 3)))


def test_locked_params_still_read_and_update_existing_entries():
    g = bx.Graph("net")
    lin = bx.Linear(g / "lin", 2, kernel_init=jax.nn.initializers.ones)
    _, params = lin(bx.Params(), jnp.ones((1, 3)))
    locked = params.locked()
    y, after = lin(locked, jnp.ones((1, 3)))
    np.testing.assert_allclose(y, np.full((1, 2), 3.0), rtol=0, atol=0)
    assert after.is_locked
    updated = lin.set_param(locked, "bias", jnp.ones(2))
    assert updated.is_locked
    np.testing.assert_array_equal(updated[("net", "lin", "bias")].value, np.ones(2))


def test_unlocked_allows_adding_new_parameters_on_purpose():
    g = bx.Graph("net")
    ones = jax.nn.initializers.ones
    lin = bx.Linear(g / "lin", 2, use_bias=False, kernel_init=ones)
    extra = bx.Linear(g / "extra", 2, kernel_init=ones)
    _, params = lin(bx.Params(), jnp.ones((1, 3)))
    params = params.locked()
    _, grown = extra(params.unlocked(), jnp.ones((1, 3)))
    assert ("net", "extra", "kernel") in grown
    assert ("net", "extra", "kernel") not in params


# -- split / merge -----------------------------------------------------------------------


def test_split_default_by_trainable():
    p = make_params()
    trainable, rest = p.split()
    assert list(trainable.keys()) == [W, B]
    assert list(rest.keys()) == [S]
    assert_same_entries(trainable.merge(rest), p)


def test_split_keeps_lock_state():
    for locked in (False, True):
        a, b = make_params(locked).split()
        assert a.is_locked is locked
        assert b.is_locked is locked


def test_split_with_custom_predicate_gets_path_and_param():
    p = make_params()
    seen = []

    def predicate(path, param):
        seen.append((path, type(param)))
        return path[-1] == "bias" or param.metadata.get("tag") == "stat"

    match, rest = p.split(predicate)
    assert seen == [(W, bx.Param), (B, bx.Param), (S, bx.Param)]
    assert list(match.keys()) == [B, S]
    assert list(rest.keys()) == [W]


def test_merge_other_wins_and_keeps_both():
    a = bx.Params.from_dict({("w",): jnp.ones(2), ("a",): jnp.ones(1)})
    b = bx.Params.from_dict(
        {
            ("w",): bx.Param(jnp.zeros(2), trainable=False, metadata={"tag": "b"}),
            ("b",): jnp.ones(1),
        }
    )
    merged = a.merge(b)
    assert set(merged.keys()) == {("w",), ("a",), ("b",)}
    assert merged[("w",)].trainable is False
    assert merged[("w",)].metadata == {"tag": "b"}
    np.testing.assert_array_equal(merged[("w",)].value, np.zeros(2))
    np.testing.assert_array_equal(a[("w",)].value, np.ones(2))
    reverse = b.merge(a)
    np.testing.assert_array_equal(reverse[("w",)].value, np.ones(2))


def test_merge_keeps_the_common_lock_state():
    a, b = make_params(locked=True).split()
    assert a.merge(b).is_locked


def test_merge_lock_mismatch_raises_value_error():
    a = make_params(locked=True)
    b = bx.Params()
    with pytest.raises(
        ValueError,
        match=r"Params\.merge: expected both containers to have the same locked state, "
        r"got locked and unlocked\. Fix: call \.locked\(\)",
    ):
        a.merge(b)
    with pytest.raises(ValueError, match=r"got unlocked and locked"):
        b.merge(a)


def test_merge_non_params_raises_type_error():
    with pytest.raises(TypeError, match=r"Params\.merge: expected a Params, got dict\. Fix"):
        bx.Params().merge({("w",): jnp.ones(1)})


# -- from_dict ---------------------------------------------------------------------------


def test_from_dict_wraps_arrays_and_keeps_params():
    stat = bx.Param(jnp.zeros(2), trainable=False, metadata={"tag": "stat"})
    p = bx.Params.from_dict({("net", "w"): jnp.ones(2), ("net", "s"): stat})
    assert list(p.keys()) == [("net", "w"), ("net", "s")]
    assert p[("net", "w")].trainable is True
    assert p[("net", "w")].metadata == {}
    assert p[("net", "s")] == stat
    assert not p.is_locked
    assert bx.Params.from_dict({}, locked=True).is_locked


@pytest.mark.parametrize("bad", ["net/w", ("net", 1), ("net", ("a", "b"))])
def test_from_dict_bad_path_raises_type_error(bad):
    with pytest.raises(
        TypeError,
        match=r"Params\.from_dict: expected tuple-of-str paths such as \('net', 'kernel'\), "
        rf"got {re.escape(repr(bad))}\. Fix: split dotted names",
    ):
        bx.Params.from_dict({bad: jnp.ones(1)})


def test_from_dict_loads_weights_a_model_then_uses():
    g = bx.Graph("net")
    lin = bx.Linear(g / "lin", 2)
    kernel = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    bias = jnp.array([10.0, 20.0])
    params = bx.Params.from_dict(
        {("net", "lin", "kernel"): kernel, ("net", "lin", "bias"): bias}, locked=True
    )
    x = jnp.array([[1.0, -1.0]])
    y, _ = lin(params, x)
    np.testing.assert_allclose(y, np.asarray(x) @ np.asarray(kernel) + np.asarray(bias), rtol=1e-6)


# -- pytree ------------------------------------------------------------------------------


def test_flatten_leaves_are_the_values_in_sorted_path_order():
    p = make_params()
    leaves, _ = jax.tree.flatten(p)
    assert len(leaves) == 3
    for leaf, path in zip(leaves, sorted(p.keys()), strict=True):
        assert leaf is p[path].value


def test_flatten_with_path_names_every_leaf():
    p = make_params()
    keyed, _ = jax.tree_util.tree_flatten_with_path(p)
    assert [path[0].key for path, _ in keyed] == sorted([W, B, S])


def test_split_then_merge_has_the_original_treedef():
    # The order of merge (trainable first) must not change the structure, or a
    # jitted split/grad/merge step would compile twice.
    p = make_params()
    trainable, rest = p.split()
    assert jax.tree.structure(trainable.merge(rest)) == jax.tree.structure(p)
    assert jax.tree.structure(rest.merge(trainable)) == jax.tree.structure(p)


@pytest.mark.parametrize("locked", [False, True])
def test_unflatten_restores_paths_flags_metadata_and_lock(locked):
    p = make_params(locked)
    leaves, treedef = jax.tree.flatten(p)
    new_leaves = [jnp.full_like(x, 7.0) for x in leaves]
    q = jax.tree.unflatten(treedef, new_leaves)
    assert isinstance(q, bx.Params)
    assert sorted(q.keys()) == sorted([W, B, S])
    assert [q[k].trainable for k in (W, B, S)] == [True, True, False]
    assert q[W].metadata == {"sharding": (None, "model"), "nested": {"b": [1, 2], "a": 0}}
    assert q[S].metadata == {"tag": "stat"}
    assert q[B].metadata == {}
    assert q.is_locked is locked
    for v, x in zip(q.values(), leaves, strict=True):
        np.testing.assert_array_equal(v.value, np.full(x.shape, 7.0))


def test_tree_map_keeps_paths_flags_and_metadata_exactly():
    p = make_params()
    q = jax.tree.map(lambda v: v + 1, p)
    assert sorted(q.keys()) == sorted(p.keys())
    for path in p.keys():
        a, b = p[path], q[path]
        assert b.trainable is a.trainable
        assert b.metadata == a.metadata
        np.testing.assert_array_equal(b.value, np.asarray(a.value) + 1)
    # Nested containers come back as they went in, not as their hashable stand-ins.
    assert type(q[W].metadata["nested"]) is dict
    assert type(q[W].metadata["nested"]["b"]) is list
    assert type(q[W].metadata["sharding"]) is tuple
    # The metadata of a mapped container is its own: editing it reaches nothing else.
    q[W].metadata["tag"] = "edited"
    assert "tag" not in p[W].metadata
    assert "tag" not in jax.tree.map(lambda v: v, p)[W].metadata


def test_treedef_equal_for_same_structure_and_different_values():
    a = make_params()
    b = jax.tree.map(lambda v: v * 3 + 1, make_params())
    assert jax.tree.structure(a) == jax.tree.structure(b)
    assert hash(jax.tree.structure(a)) == hash(jax.tree.structure(b))
    # Metadata with the same content in another key order is the same structure.
    c = bx.Params.from_dict({("w",): bx.Param(jnp.ones(1), metadata={"a": 1, "b": 2})})
    d = bx.Params.from_dict({("w",): bx.Param(jnp.ones(1), metadata={"b": 2, "a": 1})})
    assert jax.tree.structure(c) == jax.tree.structure(d)


def test_treedef_differs_when_static_parts_differ():
    base = jax.tree.structure(make_params())
    assert jax.tree.structure(make_params(locked=True)) != base
    trainable, _ = make_params().split()
    assert jax.tree.structure(trainable) != base
    flipped = bx.Params.from_dict(
        {k: v.replace(trainable=not v.trainable) for k, v in make_params().items()}
    )
    assert jax.tree.structure(flipped) != base
    lists = bx.Params.from_dict({("w",): bx.Param(jnp.ones(1), metadata={"s": [None, "d"]})})
    tuples = bx.Params.from_dict({("w",): bx.Param(jnp.ones(1), metadata={"s": (None, "d")})})
    assert jax.tree.structure(lists) != jax.tree.structure(tuples)


def test_jit_compiles_once_for_same_structure():
    traces = []

    @jax.jit
    def f(p):
        traces.append(1)
        return jax.tree.map(lambda v: v * 2, p)

    a = make_params()
    b = jax.tree.map(lambda v: v - 5, make_params())
    out_a = f(a)
    out_b = f(b)
    assert len(traces) == 1
    assert_same_entries(out_a, jax.tree.map(lambda v: v * 2, a))
    assert_same_entries(out_b, jax.tree.map(lambda v: v * 2, b))
    f(make_params(locked=True))
    assert len(traces) == 2


def test_jit_of_a_model_call_returns_params_with_metadata():
    g = bx.Graph("net")
    rng = bx.Rng(g / "rng")
    lin = bx.Linear(g / "lin", 2, rng=rng, kernel_metadata={"sharding": (None, "model")})
    params = rng.seed(bx.Params(), seed=0)
    x = jnp.ones((4, 3))
    y_eager, p_eager = lin(params, x)
    y_jit, p_jit = jax.jit(lin)(params, x)
    np.testing.assert_allclose(y_jit, y_eager, rtol=1e-6, atol=1e-6)
    assert_same_entries(p_jit.split()[0], p_eager.split()[0])
    assert p_jit[("net", "lin", "kernel")].metadata == {"sharding": (None, "model")}
    assert p_jit[("net", "rng", "counter")].metadata == {"tag": "rng_counter"}
    assert int(rng.get_counter(p_jit)) == 2


def test_grad_returns_params_of_gradients():
    p = bx.Params.from_dict({("w",): jnp.array([1.0, 2.0]), ("b",): jnp.array(3.0)})

    def loss(q):
        return jnp.sum(q[("w",)].value ** 2) + 4.0 * q[("b",)].value

    grads = jax.grad(loss)(p)
    assert isinstance(grads, bx.Params)
    assert sorted(grads.keys()) == [("b",), ("w",)]
    np.testing.assert_allclose(grads[("w",)].value, np.array([2.0, 4.0]), rtol=1e-6)
    np.testing.assert_allclose(grads[("b",)].value, 4.0, rtol=1e-6)


def test_vmap_over_a_stack_of_params():
    g = bx.Graph("net")
    lin = bx.Linear(g / "lin", 2)
    kernels = jnp.arange(2 * 3 * 2, dtype=jnp.float32).reshape(2, 3, 2)
    biases = jnp.array([[0.0, 1.0], [2.0, 3.0]])
    stacked = bx.Params.from_dict(
        {("net", "lin", "kernel"): kernels, ("net", "lin", "bias"): biases}, locked=True
    )
    x = jnp.array([[1.0, 0.0, -1.0], [2.0, 1.0, 0.5]])
    ys, out = jax.vmap(lin, in_axes=(0, None))(stacked, x)
    expected = (
        np.einsum("bi,eio->ebo", np.asarray(x), np.asarray(kernels))
        + np.asarray(biases)[:, None, :]
    )
    np.testing.assert_allclose(ys, expected, rtol=1e-6, atol=1e-6)
    assert out.is_locked
    assert out[("net", "lin", "kernel")].value.shape == (2, 3, 2)


def test_vmap_over_inputs_with_broadcast_params():
    p = bx.Params.from_dict({("w",): jnp.array([1.0, 2.0, 3.0])})
    xs = jnp.array([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
    out = jax.vmap(lambda q, x: jnp.dot(q[("w",)].value, x), in_axes=(None, 0))(p, xs)
    np.testing.assert_allclose(out, np.array([6.0, 2.0]), rtol=1e-6)


def test_params_as_scan_carry():
    p = bx.Params.from_dict(
        {("acc",): jnp.zeros(2), ("n",): bx.Param(jnp.array(0, jnp.int32), trainable=False)},
        locked=True,
    )

    def body(carry, x):
        acc = carry[("acc",)]
        n = carry[("n",)]
        carry = bx.Params.from_dict(
            {("acc",): acc.replace(value=acc.value + x), ("n",): n.replace(value=n.value + 1)},
            locked=True,
        )
        return carry, acc.value.sum()

    xs = jnp.arange(10.0).reshape(5, 2)
    final, partial = jax.lax.scan(body, p, xs)
    assert final.is_locked
    assert final[("n",)].trainable is False
    np.testing.assert_allclose(final[("acc",)].value, np.asarray(xs).sum(0), rtol=1e-6)
    assert int(final[("n",)].value) == 5
    cums = np.concatenate([[0.0], np.cumsum(np.asarray(xs).sum(1))[:-1]])
    np.testing.assert_allclose(partial, cums, rtol=1e-6)


def test_checkpoint_passes_params_through():
    p = bx.Params.from_dict({("w",): jnp.array([1.0, -2.0])})

    def f(q):
        return jnp.sum(jnp.sin(q[("w",)].value))

    g1 = jax.grad(jax.checkpoint(f))(p)
    np.testing.assert_allclose(g1[("w",)].value, np.cos([1.0, -2.0]), rtol=1e-6)


def test_optax_adam_updates_trainable_params():
    g = bx.Graph("net")
    rng = bx.Rng(g / "rng")
    lin = bx.Linear(g / "lin", 1, rng=rng)
    params = rng.seed(bx.Params(), seed=0)
    x = jnp.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]])
    y = x @ jnp.array([[2.0], [-1.0]]) + 0.5
    _, params = lin(params, x)
    params = params.locked()
    trainable, rest = params.split()
    opt = optax.adam(1e-2)
    state = opt.init(trainable)

    def loss(t):
        pred, _ = lin(t.merge(rest), x)
        return jnp.mean((pred - y) ** 2)

    grads = jax.grad(loss)(trainable)
    updates, state = opt.update(grads, state, trainable)
    new = optax.apply_updates(trainable, updates)
    assert isinstance(new, bx.Params)
    assert new.is_locked
    assert sorted(new.keys()) == sorted(trainable.keys())
    # Adam's first step moves every entry by lr * sign(grad) (up to its epsilon).
    for path in trainable.keys():
        step = np.asarray(new[path].value) - np.asarray(trainable[path].value)
        expected = -1e-2 * np.sign(np.asarray(grads[path].value))
        np.testing.assert_allclose(step, expected, rtol=1e-4, atol=1e-7)
    assert float(loss(new)) < float(loss(trainable))
