"""Eager calls compile per signature: they retrace exactly when they must, and agree
with the op-by-op path."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from blox import eager as nn


class Net(nn.Module):
    def __init__(self, width: int = 8, seed: int = 0) -> None:
        super().__init__()
        self.fc = nn.Linear(4, width, seed=seed)
        self.bn = nn.BatchNorm(width, seed=seed)
        self.drop = nn.Dropout(0.5, seed=seed)

    def __call__(self, x):
        return self.drop(jax.nn.relu(self.bn(self.fc(x))))


def traces(cls) -> int:
    return nn.compile_stats(cls.__call__).traces


def data(shape, seed=0, dtype=jnp.float32):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), dtype)


def test_repeat_calls_do_not_retrace_and_state_advances():
    model = Net()
    before = traces(Net)
    for i in range(4):
        model(data((3, 4), i))
    assert traces(Net) == before + 1
    assert int(model.drop.rng.counter) == 4
    assert not np.array_equal(model.bn.running_mean, np.zeros(8))


def test_retraces_on_new_shape_dtype_mode_and_architecture_only():
    model = Net()
    x = data((3, 4))
    model(x)
    count = traces(Net)
    model(x)
    Net(seed=5)(x)  # same architecture, other values: same program
    assert traces(Net) == count
    model(data((5, 4)))  # new batch size
    assert traces(Net) == count + 1
    model(x.astype(jnp.bfloat16))  # new dtype
    assert traces(Net) == count + 2
    model.eval()(x)  # new mode
    assert traces(Net) == count + 3
    Net(width=16)(x)  # new architecture
    assert traces(Net) == count + 4
    model.train()(x)  # back to a signature already compiled
    assert traces(Net) == count + 4


def test_sub_layers_do_not_dispatch_separately_inside_a_compiled_call():
    model = Net()
    linear_traces = traces(nn.Linear)
    model(data((2, 4)))
    model(data((2, 4), 1))
    assert traces(nn.Linear) == linear_traces  # traced inline as part of Net


def test_compiled_call_equals_op_by_op_call_and_state():
    compiled, reference = Net(seed=3), Net(seed=3)
    for i in range(3):
        x = data((6, 4), i)
        out = compiled(x)
        with jax.disable_jit():
            expected = reference(x)
        np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    for (name, a), (_, b) in zip(compiled.state_dict().items(), reference.state_dict().items()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg=name)


def test_disable_jit_runs_python_every_call():
    calls = []

    class Loud(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 2, seed=0)

        def __call__(self, x):
            calls.append(self)
            return self.fc(x)

    model = Loud()
    model(jnp.ones((1, 2)))
    model(jnp.ones((1, 2)))
    assert len(calls) == 1  # compiled once, then cached
    with jax.disable_jit():
        model(jnp.ones((1, 2)))
        model(jnp.ones((1, 2)))
    assert len(calls) == 3
    assert calls[1] is model and calls[2] is model  # the caller's object, not a copy


def test_the_disable_jit_reader_falls_back_to_jax_config_without_the_state_object(monkeypatch):
    from jax._src import config

    from blox.eager._dispatch import _disable_jit_state

    assert _disable_jit_state() is config.disable_jit  # the JAX we pin has it
    monkeypatch.setattr(config, "disable_jit", None)  # a JAX without it
    reader = _disable_jit_state()
    monkeypatch.undo()
    assert reader is not config.disable_jit and reader.value is False
    with jax.disable_jit():
        assert reader.value is True
    assert reader.value is False


def test_value_dependent_python_falls_back_to_op_by_op_with_one_warning():
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 2, seed=0)
            self.drop = nn.Dropout(0.5, seed=0)

        def __call__(self, x):
            if x.sum() > 0:  # needs a concrete value: cannot be traced
                return self.drop(self.fc(x))
            return -x

    model = Branchy()
    with pytest.warns(UserWarning, match=r"Branchy.__call__ could not be compiled.*jnp.where"):
        out = model(jnp.ones((3, 2)))
    assert out.shape == (3, 2)
    assert int(model.drop.rng.counter) == 1  # the failed trace left no trace on state
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        np.testing.assert_array_equal(model(-jnp.ones((3, 2))), jnp.ones((3, 2)))
        model(jnp.ones((3, 2)))
    assert int(model.drop.rng.counter) == 2


def test_numpy_inputs_and_closed_over_guard_still_hold():
    model = Net()
    out = model(np.ones((2, 4), np.float32))
    assert isinstance(out, jax.Array)
    with pytest.raises(RuntimeError, match="pass the model as an argument"):
        jax.jit(lambda x: model(x))(jnp.ones((2, 4)))
    model.eval()
    np.testing.assert_allclose(
        jax.jit(lambda x: model(x))(jnp.ones((2, 4))), model(jnp.ones((2, 4))), rtol=1e-6
    )


def test_filter_jit_traces_once_per_signature():
    model = Net()

    @nn.filter_jit
    def forward(model, x, scale):
        return model(x) * scale

    for i in range(3):
        forward(model, data((3, 4), i), 2.0)
    assert nn.compile_stats(forward).traces == 1
    forward(model, data((3, 4)), 3.0)  # a new static argument
    assert nn.compile_stats(forward).traces == 2
    assert int(model.drop.rng.counter) == 4


def test_filter_jit_lower_gives_the_program_it_runs():
    model = Net()
    forward = nn.filter_jit(lambda model, x: model(x))
    lowered = forward.lower(model, data((3, 4)))
    assert lowered.compile().memory_analysis().temp_size_in_bytes >= 0
    assert int(model.drop.rng.counter) == 0  # lowering runs nothing
    forward(model, data((3, 4)))
    assert nn.compile_stats(forward).traces == 1  # the lowered entry is the one called


def test_a_call_that_changes_static_attributes_falls_back_with_one_warning():
    class Counting(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 2, seed=0)
            self.calls = 0

        def __call__(self, x):
            self.calls += 1  # a Python int: static structure, changed by the call
            return self.fc(x)

    model = Counting()
    with pytest.warns(UserWarning, match=r"changes the module's attributes.*register_buffer"):
        model(jnp.ones((1, 2)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(jnp.ones((1, 2)))
    assert model.calls == 2  # op by op, the counter counts every call


def test_filter_jit_rejects_structure_changes_with_the_fix():
    model = Net()

    @nn.filter_jit
    def bad(model, x):
        model.eval()
        return model(x)

    with pytest.raises(RuntimeError, match=r"stay the same during the call.*outside the compiled"):
        bad(model, data((2, 4)))


def test_lstm_step_and_embed_attend_compile_too():
    lstm, emb = nn.LSTM(3, 5, seed=0), nn.Embed(7, 5, seed=0)
    step, attend = type(lstm).step, nn.Embed.attend
    before = (nn.compile_stats(step).traces, nn.compile_stats(attend).traces)
    state = None
    for i in range(3):
        out, state = lstm.step(data((2, 3), i), state)
        emb.attend(out)
    assert (nn.compile_stats(step).traces, nn.compile_stats(attend).traces) == (
        before[0] + 2,
        before[1] + 1,
    )  # state=None, then a state
    with jax.disable_jit():
        expected, _ = lstm.step(data((2, 3), 3), state)
    np.testing.assert_allclose(lstm.step(data((2, 3), 3), state)[0], expected, rtol=1e-6, atol=1e-6)


def test_numpy_inputs_and_static_arguments_key_the_signature():
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3, seed=0)

        def __call__(self, x, scale=1.0):
            return self.fc(x) * scale

    model = Scaled()
    x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    out = model(x)
    count = traces(Scaled)
    np.testing.assert_allclose(out, model(jnp.asarray(x)), rtol=1e-6, atol=1e-6)
    model(x + 1.0)  # new numpy values, same shape: same program
    assert traces(Scaled) == count + 1  # a jax array is another signature than numpy
    model(np.ones((5, 4), np.float32))  # new numpy shape
    assert traces(Scaled) == count + 2
    doubled = model(x, 2.0)  # a Python float is static: its value keys the program
    assert traces(Scaled) == count + 3
    np.testing.assert_allclose(doubled, 2.0 * out, rtol=1e-6)
    model(x, 2.0)
    assert traces(Scaled) == count + 3


def test_models_of_one_architecture_share_their_static_node_data():
    # A compiled call compares the argument treedef with the cached one; shared
    # node data makes that an identity check for every model of the
    # architecture, not only the first one built.
    from blox.eager._pytree import _aux_of

    a, b = Net(seed=1), Net(seed=2)
    for x, y in zip(a.modules(), b.modules(), strict=True):
        assert _aux_of(x) is _aux_of(y)
    assert _aux_of(Net(width=16).fc) is not _aux_of(a.fc)  # another configuration


def test_equal_but_differently_typed_static_values_stay_apart():
    class Scale(nn.Module):
        def __init__(self, factor) -> None:
            super().__init__()
            self.factor = factor

        def __call__(self, x):
            return x * self.factor

    def copy(module):
        return jax.tree.unflatten(*reversed(jax.tree.flatten(module)))

    assert type(copy(Scale(2)).factor) is int
    assert type(copy(Scale(2.0)).factor) is float
    assert [type(v) for v in copy(Scale((2, 3))).factor] == [int, int]
    assert [type(v) for v in copy(Scale((2.0, 3.0))).factor] == [float, float]


def test_repeat_calls_on_the_fast_path_keep_static_outputs_and_static_leaves():
    # Every leaf a jax.Array: the repeat call takes the dispatcher's fast path;
    # a static output leaf still comes back, and a Python float argument is
    # still static (a new value retraces), numpy arguments take the full path.
    f = nn.filter_jit(lambda x, scale: (x * scale, "tag", 3))
    x = jnp.arange(3.0)
    for _ in range(3):
        y, tag, n = f(x, jnp.float32(2.0))
        np.testing.assert_array_equal(np.asarray(y), [0.0, 2.0, 4.0])
        assert (tag, n) == ("tag", 3)
    assert nn.compile_stats(f).traces == 1
    y, _, _ = f(x, 3.0)
    y2, _, _ = f(x, 4.0)
    np.testing.assert_array_equal(np.asarray(y2), [0.0, 4.0, 8.0])
    assert nn.compile_stats(f).traces == 3
    y3, _, _ = f(np.arange(3.0, dtype=np.float32), jnp.float32(2.0))
    y4, _, _ = f(np.arange(3.0, dtype=np.float32), jnp.float32(2.0))
    np.testing.assert_array_equal(np.asarray(y3), np.asarray(y4))
    assert nn.compile_stats(f).traces == 4


def test_repeat_eager_calls_on_the_fast_path_write_state_back():
    drop = nn.Dropout(0.5)
    x = jnp.ones((4, 8))
    masks = [np.asarray(drop(x))]
    # Compile counts are per class, so earlier tests' Dropouts count too: what
    # matters is that the repeat calls trace nothing new.
    traces = nn.compile_stats(drop).traces
    masks += [np.asarray(drop(x)) for _ in range(2)]
    assert int(drop.rng.counter) == 3
    assert not np.array_equal(masks[1], masks[2])
    assert nn.compile_stats(drop).traces == traces


# -- the direct route: calls that change no state run under jax.jit itself ---------------------


class Gate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4, seed=0)
        self.drop = nn.Dropout(0.5, seed=1)

    def __call__(self, x):
        return self.drop(self.fc(x))


def test_stateless_calls_take_the_direct_route_and_compile_once():
    model = Gate().eval()
    x = data((2, 4))
    before = nn.compile_stats(Gate.__call__)
    outs = [model(x) for _ in range(3)]
    after = nn.compile_stats(Gate.__call__)
    assert (after.traces - before.traces, after.compiles - before.compiles) == (1, 1)
    assert type(model).__call__._blox_dispatcher.direct_cached >= 1  # the direct route's
    np.testing.assert_array_equal(outs[0], outs[2])
    expected = x @ model.fc.kernel + model.fc.bias[None]
    np.testing.assert_allclose(outs[0], expected, rtol=1e-6, atol=1e-6)


def test_a_child_switched_to_training_behind_a_direct_call_still_threads_its_rng():
    # The parent's static half is unchanged when only a child changes mode: the
    # direct route's trace must notice the new state and hand the call over.
    model = Gate().eval()
    x = data((2, 4))
    model(x)
    model(x)  # a direct repeat call
    model.drop.train()
    first, second = model(x), model(x)
    assert int(model.drop.rng.counter) == 2
    assert not np.array_equal(first, second)  # two different dropout masks
    model.drop.eval()
    np.testing.assert_array_equal(model(x), model(x))
    assert int(model.drop.rng.counter) == 2


def test_a_stamped_model_at_a_new_shape_is_alias_checked_on_the_callers_object(monkeypatch):
    # A repeat call on a stamped model does not name its object; a new shape
    # must still be traced with the alias check run on the caller's model.
    from blox.eager import _module

    seen = []
    check = _module.check_no_aliases
    monkeypatch.setattr(_module, "check_no_aliases", lambda tree: (seen.append(tree), check(tree)))

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3, seed=0)

        def __call__(self, x):
            return self.fc(x)

    model = Tiny().eval()
    first, second, third = data((2, 4)), data((2, 4), seed=1), data((5, 4))
    model(first)  # unstamped: stamped, and traced naming the model
    model(second)  # stamped, same shape: no trace
    out = model(third)  # stamped, a new shape: traced again, naming the model
    assert len(seen) == 2 and all(tree is model for tree in seen)
    expected = third @ model.fc.kernel + model.fc.bias[None]
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


def test_a_frame_open_in_another_thread_leaves_this_threads_direct_route():
    # `OPEN` counts frames of every thread; this thread's own frames decide.
    import threading

    from blox.eager import _frames

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3, seed=0)

        def __call__(self, x):
            return self.fc(x)

    entered, release = threading.Event(), threading.Event()

    def waits():
        with _frames._carry_state():  # (as a blox transform's trace opens one)
            entered.set()
            assert release.wait(30)

    model, x = Tiny().eval(), data((3, 4))
    other = threading.Thread(target=waits)
    other.start()
    try:
        assert entered.wait(30)
        assert _frames.OPEN[0] == 1  # the other thread's frame is open
        direct = Tiny.__call__._blox_dispatcher.direct_cached
        out = model(x)
        assert Tiny.__call__._blox_dispatcher.direct_cached == direct + 1
    finally:
        release.set()
        other.join(30)
    assert _frames.OPEN[0] == 0
    expected = x @ model.fc.kernel + model.fc.bias[None]
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


def test_a_type_error_of_the_method_itself_still_reaches_the_caller():
    class Bad(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3, seed=0)

        def __call__(self, x):
            return self.fc(x) + "oops"

    with pytest.raises(TypeError):
        Bad()(data((2, 3)))
