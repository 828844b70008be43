"""The `nn.Module` object API: attributes, pytree structure, modes, freezing,
traversal, state dicts and repr.

Expected names follow the documented rules: a module's own arrays come first,
then its children in assignment order (containers as ``name.i`` / ``name.key``),
and inside a layer the core's creation order (BatchNorm: ``running_mean``,
``running_var``, ``scale``, ``bias``; an Rng: ``seed``, ``counter``).
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from blox import eager as nn

SEED = 3


class Net(nn.Module):
    """Layers, a BatchNorm and a Dropout (state), a list of heads and a plain array."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4, seed=seed)
        self.bn = nn.BatchNorm(4, seed=seed)
        self.drop = nn.Dropout(0.5, seed=seed)
        self.heads = [nn.Linear(4, 8, seed=seed + 1), nn.Linear(4, 8, seed=seed + 2)]
        self.offset = jnp.zeros((8,))

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.drop(jax.nn.relu(self.bn(self.fc(x))))
        return self.heads[0](h) + self.heads[1](h) + self.offset[None]


NET_PARAMS = [
    "offset",
    "fc.kernel",
    "fc.bias",
    "bn.scale",
    "bn.bias",
    "heads.0.kernel",
    "heads.0.bias",
    "heads.1.kernel",
    "heads.1.bias",
]
NET_BUFFERS = ["bn.running_mean", "bn.running_var", "drop.rng.seed", "drop.rng.counter"]
NET_STATE = [
    "offset",
    "fc.kernel",
    "fc.bias",
    "bn.running_mean",
    "bn.running_var",
    "bn.scale",
    "bn.bias",
    "drop.rng.seed",
    "drop.rng.counter",
    "heads.0.kernel",
    "heads.0.bias",
    "heads.1.kernel",
    "heads.1.bias",
]


def _x(i: int = 0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(i).standard_normal((2, 3), np.float32))


def _dotted(path: tuple[Any, ...]) -> str:
    parts = []
    for key in path:
        for attr in ("name", "key", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
    return ".".join(parts)


def _none_names(tree: Any) -> set[str]:
    """Dotted names of the `None` leaves of a model-shaped tree."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: x is None)
    return {_dotted(path) for path, leaf in leaves if leaf is None}


# -- attributes -----------------------------------------------------------------------------


def test_sub_modules_and_plain_arrays_become_parameters() -> None:
    model = Net()
    assert [name for name, _ in model.named_parameters()] == NET_PARAMS
    assert model.offset.shape == (8,)
    assert "offset" not in _none_names(nn.trainable(model))
    assert model(_x()).shape == (2, 8)


def test_numpy_arrays_are_stored_as_jax_arrays() -> None:
    class Holder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = np.ones((2,), np.float32)

    holder = Holder()
    assert isinstance(holder.w, jax.Array)
    assert [name for name, _ in holder.named_parameters()] == ["w"]


def test_lists_tuples_and_dicts_of_modules() -> None:
    class Containers(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = [nn.Linear(3, 4, seed=0), nn.LayerNorm(4, seed=0)]
            self.pair = (nn.RMSNorm(4, seed=0), nn.Dropout(0.5, seed=0))
            # Insertion order differs from sorted order on purpose.
            self.heads = {"z": nn.Linear(4, 8, seed=1), "a": nn.BatchNorm(4, seed=0)}

        def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
            for block in self.blocks + list(self.pair):
                x = block(x)
            return self.heads["z"](x), self.heads["a"](x)

    model = Containers()
    assert [name for name, _ in model.named_children()] == [
        "blocks.0",
        "blocks.1",
        "pair.0",
        "pair.1",
        "heads.z",
        "heads.a",
    ]
    assert list(model.state_dict()) == [
        "blocks.0.kernel",
        "blocks.0.bias",
        "blocks.1.scale",
        "blocks.1.bias",
        "pair.0.scale",
        "pair.1.rng.seed",
        "pair.1.rng.counter",
        "heads.z.kernel",
        "heads.z.bias",
        "heads.a.running_mean",
        "heads.a.running_var",
        "heads.a.scale",
        "heads.a.bias",
    ]
    # The pytree holds the same arrays, and trainable() marks the right ones.
    assert len(jax.tree.leaves(model)) == len(model.state_dict())
    assert _none_names(nn.trainable(model)) == {
        "pair.1.rng.seed",
        "pair.1.rng.counter",
        "heads.a.running_mean",
        "heads.a.running_var",
    }
    out_z, out_a = model(_x())
    assert out_z.shape == (2, 8) and out_a.shape == (2, 4)
    assert int(model.pair[1].rng.counter) == 1  # state of a module in a tuple advanced


def test_a_function_in_a_list_attribute_raises_type_error_with_the_fix() -> None:
    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = [nn.Linear(3, 4, seed=0), jax.nn.relu]

    with pytest.raises(
        TypeError,
        match=r"Mixed\.layers: expected a list, tuple or dict of modules only, got an item "
        r"of type \w+\. Fix: use nn\.Sequential\(\*layers\)",
    ):
        Mixed()


def test_assigning_before_super_init_raises_attribute_error() -> None:
    class Early(nn.Module):
        def __init__(self) -> None:
            self.fc = nn.Linear(3, 4, seed=0)
            super().__init__()

    with pytest.raises(
        AttributeError,
        match=r"Early: expected super\(\)\.__init__\(\) to run before assigning 'fc'.*"
        r"Fix: call super\(\)\.__init__\(\) first",
    ):
        Early()


def test_assigning_a_wrong_shape_to_a_parameter_raises_value_error() -> None:
    lin = nn.Linear(3, 4, seed=SEED)
    before = lin.kernel
    with pytest.raises(
        ValueError,
        match=r"Linear\.kernel: expected an array of shape \(3, 4\), got \(4, 3\)\. Fix: ",
    ):
        lin.kernel = jnp.zeros((4, 3))
    assert lin.kernel is before
    with pytest.raises(ValueError, match=r"Linear\.bias: expected an array of shape \(4,\), got"):
        lin.bias = np.zeros((5,), np.float32)


def test_assigning_a_same_shaped_array_is_used_by_the_next_call() -> None:
    lin = nn.Linear(3, 4, seed=SEED)
    lin.kernel = jnp.zeros((3, 4))
    lin.bias = jnp.arange(4.0)
    np.testing.assert_array_equal(lin(_x()), jnp.broadcast_to(jnp.arange(4.0), (2, 4)))


def test_del_then_reassign() -> None:
    model = Net()
    del model.offset
    assert not hasattr(model, "offset")
    assert "offset" not in model.state_dict()
    model.offset = jnp.ones((8,))  # a new attribute: any shape is fine again
    assert "offset" in dict(model.named_parameters())
    lin = nn.Linear(3, 4, seed=SEED)
    del lin.kernel
    lin.kernel = jnp.zeros((3, 4))
    np.testing.assert_array_equal(lin(_x()), jnp.broadcast_to(lin.bias, (2, 4)))
    with pytest.raises(AttributeError, match=r"Linear: expected an existing attribute .*'nope'"):
        del lin.nope


# -- pytree ------------------------------------------------------------------------------------


def test_leaves_are_exactly_the_arrays() -> None:
    model = Net()
    leaves = jax.tree.leaves(model)
    state = model.state_dict()
    assert len(leaves) == len(state) == len(NET_STATE)
    assert {id(leaf) for leaf in leaves} == {id(value) for value in state.values()}


def test_same_architecture_shares_treedef_and_compiles_once() -> None:
    a, b = Net(seed=0), Net(seed=5)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    traces = []

    @jax.jit
    def forward(model: Net, x: jax.Array) -> jax.Array:
        traces.append(1)
        return model(x)

    a.eval()
    b.eval()
    out_a, out_b = forward(a, _x()), forward(b, _x())
    assert len(traces) == 1
    assert not np.array_equal(out_a, out_b)  # the values did change


def test_plain_array_values_do_not_change_the_treedef() -> None:
    a, b = Net(), Net()
    b.offset = jnp.ones((8,))
    assert jax.tree.structure(a) == jax.tree.structure(b)


# -- modes -------------------------------------------------------------------------------------


def test_train_and_eval_are_recursive_and_return_self() -> None:
    model = Net()
    assert model.training
    assert all(m.training for m in model.modules())
    assert model.eval() is model
    assert not model.training
    assert not any(m.training for m in model.modules())
    assert model.train() is model
    assert all(m.training for m in model.modules())
    assert model.train(False) is model and not model.heads[1].training
    model.heads[1].train()  # a sub-tree alone
    assert model.heads[1].training and not model.training


def test_mode_changes_the_treedef_so_jit_retraces() -> None:
    model = Net()
    train_def = jax.tree.structure(model)
    eval_def = jax.tree.structure(model.eval())
    assert train_def != eval_def
    assert jax.tree.structure(model.train()) == train_def
    traces = []

    @jax.jit
    def forward(model: Net, x: jax.Array) -> jax.Array:
        traces.append(model.training)
        return model.bn.running_mean + x.sum()

    for training in (True, False, True, False):
        forward(model.train(training), _x())
    assert traces == [True, False]


def test_eval_mode_draws_no_randomness_and_updates_no_statistics() -> None:
    model = Net().eval()
    before = {k: np.asarray(v) for k, v in model.state_dict().items()}
    a, b = model(_x()), model(_x())
    np.testing.assert_array_equal(a, b)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name])


# -- freezing ----------------------------------------------------------------------------------


def _trainable_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_parameters(trainable_only=True)]


def test_freeze_and_unfreeze_everything() -> None:
    model = Net()
    assert model.freeze() is model
    assert _trainable_names(model) == []
    assert _none_names(nn.trainable(model)) == set(NET_STATE)
    assert [name for name, _ in model.named_parameters()] == NET_PARAMS  # still parameters
    assert model.unfreeze() is model
    assert _trainable_names(model) == NET_PARAMS


def test_freeze_a_sub_module_and_a_dotted_parameter() -> None:
    model = Net()
    model.freeze("fc", "heads.1.bias")
    frozen = {"fc.kernel", "fc.bias", "heads.1.bias"}
    assert _trainable_names(model) == [n for n in NET_PARAMS if n not in frozen]
    assert _none_names(nn.trainable(model)) == frozen | set(NET_BUFFERS)
    model.unfreeze("fc.kernel")
    assert "fc.kernel" in _trainable_names(model) and "fc.bias" not in _trainable_names(model)


def test_freeze_changes_the_treedef() -> None:
    a, b = Net(), Net()
    b.freeze("fc")
    assert jax.tree.structure(a) != jax.tree.structure(b)
    b.unfreeze("fc")
    assert jax.tree.structure(a) == jax.tree.structure(b)


def test_freeze_unknown_name_raises_key_error() -> None:
    with pytest.raises(
        KeyError,
        match=r"expected a parameter or sub-module name, got 'nope'\. Fix: use one of: "
        r"offset, fc\.kernel",
    ):
        Net().freeze("nope")
    with pytest.raises(KeyError, match=r"got 'f'"):  # a prefix of a name is not a name
        Net().unfreeze("f")


def test_trainable_is_none_exactly_at_buffers_frozen_and_non_float_leaves() -> None:
    class WithCounter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = Net()
            self.steps = jnp.zeros((), jnp.int32)  # an integer array: never trainable

    model = WithCounter()
    model.freeze("net.heads.0")
    params = nn.trainable(model)
    expected = {"steps", "net.heads.0.kernel", "net.heads.0.bias"} | {
        f"net.{n}" for n in NET_BUFFERS
    }
    assert _none_names(params) == expected
    assert jax.tree.structure(params, is_leaf=lambda x: x is None) == jax.tree.structure(
        jax.tree.map(lambda _: None, model), is_leaf=lambda x: x is None
    )
    assert params.net.fc.kernel is model.net.fc.kernel


# -- traversal ---------------------------------------------------------------------------------


def test_traversal_names_and_order() -> None:
    model = Net()
    assert [n for n, _ in model.named_parameters()] == NET_PARAMS
    assert [p is v for p, (_, v) in zip(model.parameters(), model.named_parameters())] == [
        True
    ] * len(NET_PARAMS)
    assert [n for n, _ in model.named_buffers()] == NET_BUFFERS
    assert len(list(model.buffers())) == len(NET_BUFFERS)
    assert [n for n, _ in model.named_children()] == ["fc", "bn", "drop", "heads.0", "heads.1"]
    assert list(model.children()) == [model.fc, model.bn, model.drop, *model.heads]
    # Dropout's RNG state lives in a namespace module, 'drop.rng'.
    assert [n for n, _ in model.named_modules()] == [
        "",
        "fc",
        "bn",
        "drop",
        "drop.rng",
        "heads.0",
        "heads.1",
    ]
    modules = list(model.modules())
    assert modules[0] is model and modules[1] is model.fc and modules[-1] is model.heads[1]
    assert dict(model.named_modules())["drop.rng"] is model.drop.rng


def test_lstm_parameters_are_named_by_the_core_path() -> None:
    assert [n for n, _ in nn.LSTM(3, 5, seed=0).named_parameters()] == [
        "gates.kernel",
        "gates.bias",
    ]


# -- state dict --------------------------------------------------------------------------------


def test_state_dict_is_ordered_with_raw_rng_key_data() -> None:
    model = Net(seed=SEED)
    state = model.state_dict()
    assert list(state) == NET_STATE
    seed = state["drop.rng.seed"]
    assert seed.dtype == jnp.uint32 and seed.shape == (2,)
    np.testing.assert_array_equal(seed, jax.random.key_data(jax.random.key(SEED)))
    assert state["drop.rng.counter"].dtype == jnp.uint32
    assert int(state["drop.rng.counter"]) == 0
    model(_x())
    assert int(model.state_dict()["drop.rng.counter"]) == 1
    assert state["fc.kernel"] is model.fc.kernel


def test_load_state_dict_round_trip_gives_identical_outputs() -> None:
    source, target = Net(seed=0), Net(seed=7)
    source(_x(1))  # advance BatchNorm statistics and the dropout counter
    result = target.load_state_dict(source.state_dict())
    assert result == nn.LoadResult(missing_keys=[], unexpected_keys=[])
    for (name, a), (_, b) in zip(source.state_dict().items(), target.state_dict().items()):
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b)
    # Training mode too: the RNG state came along, so the dropout masks agree.
    np.testing.assert_array_equal(target(_x(2)), source(_x(2)))
    np.testing.assert_array_equal(target.eval()(_x(3)), source.eval()(_x(3)))


def test_load_state_dict_accepts_numpy_arrays() -> None:
    source, target = Net(seed=0), Net(seed=7)
    target.load_state_dict({k: np.asarray(v) for k, v in source.state_dict().items()})
    assert isinstance(target.fc.kernel, jax.Array)
    np.testing.assert_array_equal(target.fc.kernel, source.fc.kernel)


def _broken_state() -> dict[str, Any]:
    state = dict(Net(seed=1).state_dict())
    del state["fc.bias"]
    state["bogus"] = jnp.zeros(2)
    state["fc.kernel"] = jnp.zeros((4, 3))
    return state


def test_strict_load_reports_all_problems_in_one_error() -> None:
    model = Net(seed=0)
    before = model.fc.kernel
    with pytest.raises(ValueError) as info:
        model.load_state_dict(_broken_state())
    message = str(info.value)
    assert "Net.load_state_dict" in message
    assert "missing keys ['fc.bias']" in message
    assert "unexpected keys ['bogus']" in message
    assert "fc.kernel: expected (3, 4), got (4, 3)" in message
    assert "Fix: " in message
    assert model.fc.kernel is before  # nothing was loaded


def test_strict_load_error_matches_with_pytest_raises() -> None:
    with pytest.raises(
        ValueError,
        match=r"missing keys \['fc\.bias'\], unexpected keys \['bogus'\], shape mismatches "
        r"\[fc\.kernel: expected \(3, 4\), got \(4, 3\)\]",
    ):
        Net().load_state_dict(_broken_state())


def test_non_strict_load_returns_missing_and_unexpected_keys() -> None:
    source, target = Net(seed=1), Net(seed=0)
    kept_bias = target.fc.bias
    state = dict(source.state_dict())
    del state["fc.bias"]
    state["bogus"] = jnp.zeros(2)
    result = target.load_state_dict(state, strict=False)
    assert isinstance(result, nn.LoadResult)
    assert result.missing_keys == ["fc.bias"]
    assert result.unexpected_keys == ["bogus"]
    np.testing.assert_array_equal(target.fc.kernel, source.fc.kernel)
    assert target.fc.bias is kept_bias  # missing entries keep their value
    with pytest.raises(ValueError, match=r"shape mismatches \[fc\.kernel: expected \(3, 4\)"):
        target.load_state_dict(_broken_state(), strict=False)


# -- repr --------------------------------------------------------------------------------------


def test_repr_is_an_indented_tree_with_configuration() -> None:
    class Small(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv(1, 8, kernel_size=(3, 3), seed=0)
            self.bn = nn.BatchNorm(8, seed=0)
            self.body = nn.Sequential(
                nn.Linear(3, 4, use_bias=False, seed=0), jax.nn.relu, nn.Dropout(0.25, seed=0)
            )
            self.heads = [nn.Embed(10, 4, seed=0), nn.LSTM(3, 5, seed=0)]
            self.scale = jnp.ones(())

    expected = "\n".join(
        [
            "Small(",
            "  (conv): Conv(1, 8, kernel_size=(3, 3), padding='SAME', strides=1)",
            "  (bn): BatchNorm(8, epsilon=1e-05, momentum=0.9)",
            "  (body): Sequential(",
            "    (0): Linear(in_features=3, out_features=4, use_bias=False)",
            "    (1): relu",
            "    (2): Dropout(rate=0.25)",
            "  )",
            "  (heads.0): Embed(10, 4)",
            "  (heads.1): LSTM(3, 5)",
            ")",
        ]
    )
    assert repr(Small()) == expected


def test_repr_of_leaf_layers() -> None:
    assert repr(nn.Linear(3, 4, seed=0)) == "Linear(in_features=3, out_features=4)"
    assert repr(nn.LayerNorm(6, use_bias=False, seed=0)) == (
        "LayerNorm(6, epsilon=1e-05, use_bias=False)"
    )
    assert repr(nn.GRU(3, 4, is_static=True, seed=0)) == "GRU(3, 4, is_static=True)"
    assert repr(nn.ConvTranspose(6, 4, (3, 3), strides=2, feature_group_count=2, seed=0)) == (
        "ConvTranspose(6, 4, kernel_size=(3, 3), feature_group_count=2, padding='SAME', strides=2)"
    )
