"""Module: constructor capture, get_param / set_param and their errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import blox as bx

ONES = jax.nn.initializers.ones
ZEROS = jax.nn.initializers.zeros


class Scale(bx.Module):
    """A one-parameter module: `x * s`, `s` of shape `(features,)`."""

    def __init__(self, graph, init=ONES, *, rng=None, trainable=True):
        super().__init__(graph)
        self.init = init
        self.rng = rng
        self.trainable = trainable

    def __call__(self, params, x):
        s, params = self.get_param(
            params, "s", (x.shape[-1],), self.init, trainable=self.trainable, rng=self.rng
        )
        return x * s, params


def seeded(seed=0):
    g = bx.Graph("net")
    rng = bx.Rng(g / "rng")
    return g, rng, rng.seed(bx.Params(), seed=seed)


# -- constructor capture ---------------------------------------------------------------


def test_init_args_capture_defaults_and_given_values():
    g = bx.Graph("net")
    rng = bx.Rng(g / "rng")
    lin = bx.Linear(g / "lin", 4, rng=rng, use_bias=False)
    args = lin._init_args
    assert list(args) == [
        "output_size",
        "rng",
        "use_bias",
        "kernel_init",
        "bias_init",
        "kernel_metadata",
        "bias_metadata",
        "dtype",
        "param_dtype",
    ]
    assert args["output_size"] == 4
    assert args["rng"] is rng
    assert args["use_bias"] is False
    assert args["bias_init"] is jax.nn.initializers.zeros
    assert args["kernel_metadata"] is None
    assert "graph" not in args


def test_init_args_of_a_user_subclass_without_extra_code():
    scale = Scale(bx.Graph("net") / "s", ZEROS, trainable=False)
    assert scale._init_args == {"init": ZEROS, "rng": None, "trainable": False}
    assert repr(scale) == "Scale(init=zeros, rng=None, trainable=False)"


def test_repr_shows_defaults_and_given_values():
    g = bx.Graph("net")
    ln = bx.LayerNorm(g / "ln", epsilon=1e-3, use_bias=False)
    text = repr(ln)
    assert text.startswith("LayerNorm(epsilon=0.001, use_scale=True, use_bias=False, ")
    assert "scale_init=ones" in text
    assert "axis_name=None" in text
    rng = bx.Rng(g / "rng")
    assert "rng=<Rng net/rng>" in repr(bx.Dropout(g / "drop", 0.5, rng=rng))
    assert repr(rng) == "Rng()"


def test_inheritance_chain_captures_the_outermost_class_args():
    class Base(bx.Module):
        def __init__(self, graph, width, depth=2):
            super().__init__(graph)
            self.width = width
            self.depth = depth

    class Child(Base):
        def __init__(self, graph, width, activation="relu", *, extra=0):
            super().__init__(graph, width, depth=5)
            self.activation = activation

    class GrandChild(Child):
        def __init__(self, graph, name="gc"):
            super().__init__(graph, 8, activation="tanh", extra=1)
            self.label = name

    g = bx.Graph("net")
    child = Child(g / "c", 3)
    assert child._init_args == {"width": 3, "activation": "relu", "extra": 0}
    assert child.depth == 5
    grand = GrandChild(g / "gc")
    assert grand._init_args == {"name": "gc"}
    assert grand.width == 8
    assert grand.activation == "tanh"
    assert repr(grand) == "GrandChild(name='gc')"


def test_subclass_without_its_own_init_reports_its_own_type():
    class MyLinear(bx.Linear):
        pass

    lin = MyLinear(bx.Graph("net") / "lin", 2)
    assert lin._init_args["output_size"] == 2
    assert repr(lin).startswith("MyLinear(output_size=2, ")


def test_graph_given_by_keyword_is_not_captured():
    lin = bx.Linear(output_size=2, graph=bx.Graph("net") / "lin")
    assert lin._init_args["output_size"] == 2
    assert "graph" not in lin._init_args


def test_missing_super_init_raises_runtime_error():
    class Forgetful(bx.Module):
        def __init__(self, graph, size=3):
            self.size = size

    g = bx.Graph("net")
    with pytest.raises(
        RuntimeError,
        match=r"Forgetful at 'net/f': expected Module\.__init__ to have bound the module to "
        r"its graph node, got a module without one\. Fix: call super\(\)\.__init__\(graph\) "
        r"at the start of Forgetful\.__init__\.",
    ):
        Forgetful(g / "f")


def test_missing_super_init_in_a_base_names_the_base():
    class Forgetful(bx.Module):
        def __init__(self, graph):
            pass

    class Careful(Forgetful):
        def __init__(self, graph):
            super().__init__(graph)

    with pytest.raises(
        RuntimeError, match=r"Forgetful at 'net/c': .*super\(\)\.__init__\(graph\) .*Forgetful"
    ):
        Careful(bx.Graph("net") / "c")


def test_setting_graph_by_hand_is_not_enough():
    class Manual(bx.Module):
        def __init__(self, graph):
            self.graph = graph

    g = bx.Graph("net")
    with pytest.raises(RuntimeError, match=r"Manual at 'net/m': .*super\(\)\.__init__\(graph\)"):
        Manual(g / "m")


def test_bad_constructor_arguments_raise_type_error():
    with pytest.raises(TypeError):
        bx.Linear(bx.Graph("net") / "lin")


def test_param_path_prefixes_the_graph_path():
    g = bx.Graph("net")
    lin = bx.Linear(g / "enc" / "l1", 2)
    assert lin.graph.path == ("net", "enc", "l1")
    assert lin.param_path("kernel") == ("net", "enc", "l1", "kernel")


def test_base_call_raises_not_implemented():
    class Empty(bx.Module):
        pass

    with pytest.raises(
        NotImplementedError, match=r"Empty at 'net/e': expected a subclass that implements"
    ):
        Empty(bx.Graph("net") / "e")(bx.Params())


# -- get_param ---------------------------------------------------------------------------


def test_get_param_creates_then_returns():
    scale = Scale(bx.Graph("net") / "s")
    x = jnp.array([1.0, 2.0, 3.0])
    y, params = scale(bx.Params(), x)
    path = ("net", "s", "s")
    assert list(params.keys()) == [path]
    np.testing.assert_array_equal(params[path].value, np.ones(3))
    assert params[path].value.dtype == jnp.float32
    np.testing.assert_array_equal(y, np.asarray(x))
    edited = scale.set_param(params, "s", jnp.array([2.0, 3.0, 4.0]))
    y2, again = scale(edited, x)
    np.testing.assert_allclose(y2, np.array([2.0, 6.0, 12.0]), rtol=0, atol=0)
    assert again is edited


def test_get_param_stores_dtype_flag_and_metadata():
    g = bx.Graph("net")
    lin = bx.Linear(g / "lin", 2)
    value, params = lin.get_param(
        bx.Params(),
        "table",
        (2, 3),
        ZEROS,
        dtype=jnp.int32,
        trainable=False,
        metadata={"tag": "t"},
    )
    assert value.dtype == jnp.int32
    assert value.shape == (2, 3)
    param = params[("net", "lin", "table")]
    assert param.trainable is False
    assert param.metadata == {"tag": "t"}


def test_get_param_missing_without_shape_or_init_raises_key_error():
    lin = bx.Linear(bx.Graph("net") / "lin", 2)
    for kwargs in ({}, {"shape": (2,)}, {"init": ONES}):
        with pytest.raises(
            KeyError,
            match=r"Linear at 'net/lin': expected parameter 'w' at \('net', 'lin', 'w'\) to "
            r"exist, got a container without it and no shape/init to create it\. Fix",
        ):
            lin.get_param(bx.Params(), "w", **kwargs)


def test_get_param_on_locked_params_raises_key_error():
    lin = bx.Linear(bx.Graph("net") / "lin", 2)
    with pytest.raises(
        KeyError,
        match=r"Linear at 'net/lin': expected to create parameter 'w' at "
        r"\('net', 'lin', 'w'\), got params that are locked\. Fix",
    ):
        lin.get_param(bx.Params().locked(), "w", (2,), ONES)


def test_get_param_locked_does_not_draw_a_key():
    g, rng, params = seeded()
    scale = Scale(g / "s", rng=rng)
    with pytest.raises(KeyError, match="locked"):
        scale(params.locked(), jnp.ones(2))
    assert int(rng.get_counter(params)) == 0


def test_rng_draws_one_key_per_created_parameter_even_for_constant_inits():
    g, rng, params = seeded(3)
    lin = bx.Linear(g / "lin", 2, rng=rng, kernel_init=ONES, bias_init=ZEROS)
    _, params = lin(params, jnp.ones((1, 3)))
    assert int(rng.get_counter(params)) == 2
    # Reading existing parameters draws nothing.
    _, params = lin(params, jnp.ones((1, 3)))
    assert int(rng.get_counter(params)) == 2
    _, params = lin.get_param(params, "extra", (4,), ZEROS, rng=rng)
    assert int(rng.get_counter(params)) == 3


def test_rng_key_passed_to_init_is_the_drawn_key():
    g, rng, params = seeded(7)
    keys = []

    def init(key, shape, dtype):
        keys.append(key)
        return jnp.zeros(shape, dtype)

    lin = bx.Linear(g / "lin", 2, rng=rng)
    _, params = lin.get_param(params, "a", (1,), init, rng=rng)
    _, params = lin.get_param(params, "b", (1,), init, rng=rng)
    for counter, key in enumerate(keys):
        expected = jax.random.fold_in(jax.random.key(7), counter)
        np.testing.assert_array_equal(jax.random.key_data(key), jax.random.key_data(expected))


def test_changing_one_initialiser_does_not_shift_the_others():
    def kernel_of_second_layer(first_init):
        g, rng, params = seeded(11)
        l1 = bx.Linear(g / "l1", 3, rng=rng, kernel_init=first_init)
        l2 = bx.Linear(g / "l2", 2, rng=rng)
        h, params = l1(params, jnp.ones((1, 4)))
        _, params = l2(params, h)
        return params[("net", "l2", "kernel")].value

    a = kernel_of_second_layer(jax.nn.initializers.lecun_normal())
    b = kernel_of_second_layer(ZEROS)
    np.testing.assert_array_equal(a, b)


def test_without_rng_init_gets_key_none():
    seen = []

    def init(key, shape, dtype):
        seen.append(key)
        return jnp.full(shape, 2.0, dtype)

    scale = Scale(bx.Graph("net") / "s", init)
    y, _ = scale(bx.Params(), jnp.ones(2))
    assert seen == [None]
    np.testing.assert_array_equal(y, np.full(2, 2.0))
    # Constant initialisers of jax work with key=None.
    y, _ = Scale(bx.Graph("n2") / "s", jax.nn.initializers.constant(0.5))(bx.Params(), jnp.ones(2))
    np.testing.assert_array_equal(y, np.full(2, 0.5))


def test_without_rng_random_init_raises_value_error_telling_to_pass_an_rng():
    scale = Scale(bx.Graph("net") / "s", jax.nn.initializers.normal())
    with pytest.raises(
        ValueError,
        match=r"Scale at 'net/s': expected an Rng to initialise 's' \(its initialiser needs a "
        r"random key\), got rng=None .*Fix: build the module with rng=bx\.Rng\(graph / 'rng'\)",
    ):
        scale(bx.Params(), jnp.ones(2))


def test_with_unseeded_rng_creation_raises_key_error():
    g = bx.Graph("net")
    rng = bx.Rng(g / "rng")
    lin = bx.Linear(g / "lin", 2, rng=rng)
    with pytest.raises(KeyError, match=r"Rng at 'net/rng': .*rng\.seed\(params, seed=\.\.\.\)"):
        lin(bx.Params(), jnp.ones((1, 3)))


def test_existing_param_with_another_shape_raises_value_error():
    lin = bx.Linear(bx.Graph("net") / "lin", 2, kernel_init=ONES)
    _, params = lin(bx.Params(), jnp.ones((1, 3)))
    with pytest.raises(
        ValueError,
        match=r"Linear at 'net/lin': expected parameter 'kernel' of shape \(5, 2\), got the "
        r"stored shape \(3, 2\)\. Fix",
    ):
        lin(params, jnp.ones((1, 5)))
    # Without a requested shape the stored value is returned as is.
    value, _ = lin.get_param(params, "kernel")
    assert value.shape == (3, 2)


# -- set_param ---------------------------------------------------------------------------


def make_lin():
    g = bx.Graph("net")
    lin = bx.Linear(g / "lin", 2, kernel_init=ONES, kernel_metadata={"tag": "k", "a": 1})
    _, params = lin(bx.Params(), jnp.ones((1, 3)))
    return lin, params


KERNEL = ("net", "lin", "kernel")


def test_set_param_replaces_value_and_returns_new_container():
    lin, params = make_lin()
    new = lin.set_param(params, "kernel", jnp.zeros((3, 2)))
    assert new is not params
    np.testing.assert_array_equal(new[KERNEL].value, np.zeros((3, 2)))
    np.testing.assert_array_equal(params[KERNEL].value, np.ones((3, 2)))
    assert new[KERNEL].metadata == {"tag": "k", "a": 1}
    assert new[KERNEL].trainable is True
    np_value = lin.set_param(params, "kernel", np.full((3, 2), 4.0, np.float32))
    np.testing.assert_array_equal(np_value[KERNEL].value, np.full((3, 2), 4.0))


def test_set_param_value_none_keeps_value_and_merges_metadata():
    lin, params = make_lin()
    new = lin.set_param(params, "kernel", None, metadata={"a": 2, "sharding": (None, "m")})
    assert new[KERNEL].value is params[KERNEL].value
    assert new[KERNEL].metadata == {"tag": "k", "a": 2, "sharding": (None, "m")}
    assert params[KERNEL].metadata == {"tag": "k", "a": 1}


def test_set_param_changes_trainable_flag():
    lin, params = make_lin()
    frozen = lin.set_param(params, "kernel", None, trainable=False)
    assert frozen[KERNEL].trainable is False
    assert params[KERNEL].trainable is True
    trainable, rest = frozen.split()
    assert KERNEL in rest
    assert KERNEL not in trainable
    back = lin.set_param(frozen, "kernel", None, trainable=True)
    assert back[KERNEL].trainable is True


def test_set_param_all_none_raises_value_error():
    lin, params = make_lin()
    with pytest.raises(
        ValueError,
        match=r"Linear at 'net/lin': expected at least one of value, trainable or metadata "
        r"for set_param\('kernel'\), got all None\. Fix",
    ):
        lin.set_param(params, "kernel", None)


def test_set_param_unknown_raises_key_error():
    lin, params = make_lin()
    with pytest.raises(
        KeyError,
        match=r"Linear at 'net/lin': expected parameter 'nope' at \('net', 'lin', 'nope'\) to "
        r"exist for set_param, got a container without it\. Fix",
    ):
        lin.set_param(params, "nope", jnp.ones(2))


@pytest.mark.parametrize("bad", [1.0, [1.0, 2.0], "w"])
def test_set_param_non_array_raises_type_error(bad):
    lin, params = make_lin()
    kind = type(bad).__name__
    with pytest.raises(
        TypeError,
        match=rf"Linear at 'net/lin': expected an array value for set_param\('kernel'\), "
        rf"got {kind}\. Fix: wrap it, e.g\. jnp\.asarray\(value\)",
    ):
        lin.set_param(params, "kernel", bad)


def test_set_param_bad_trainable_or_metadata_raises_type_error():
    lin, params = make_lin()
    with pytest.raises(
        TypeError,
        match=r"Linear at 'net/lin': expected trainable to be a bool or None for "
        r"set_param\('kernel'\), got int 1\. Fix",
    ):
        lin.set_param(params, "kernel", None, trainable=1)
    with pytest.raises(
        TypeError,
        match=r"Linear at 'net/lin': expected metadata to be a dict or None for "
        r"set_param\('kernel'\), got list\. Fix",
    ):
        lin.set_param(params, "kernel", None, metadata=["tag"])


def test_set_param_works_under_jit():
    lin, params = make_lin()

    @jax.jit
    def bump(p):
        k, p = lin.get_param(p, "kernel")
        return lin.set_param(p, "kernel", k + 1)

    out = bump(params.locked())
    assert out.is_locked
    np.testing.assert_array_equal(out[KERNEL].value, np.full((3, 2), 2.0))
    assert out[KERNEL].metadata == {"tag": "k", "a": 1}
