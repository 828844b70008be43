"""Every misuse of the eager API gets the PyTorch behaviour or an error with the fix.

One test per case of issue 10, item 4 (and the compile-state and hook
machinery of item 3): each asserts the behaviour, or matches the error's
message, so a case that starts failing silently fails here.
"""

import threading
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from blox import eager as nn


def data(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


# -- arrays hidden in containers ------------------------------------------------------------


def test_arrays_inside_a_list_tuple_or_dict_attribute_are_refused_with_the_fix():
    class Holder(nn.Module):
        def __init__(self, value):
            super().__init__()
            self.ws = value

    for value in ([jnp.ones(2)], (jnp.ones(2), 3), {"a": np.ones(2)}):
        with pytest.raises(TypeError, match=r"Holder.ws: expected arrays as attributes.*own"):
            Holder(value)
    assert Holder([1, 2]).ws == [1, 2]  # plain configuration is still fine


# -- one module in two places ---------------------------------------------------------------


def test_one_module_assigned_twice_is_refused_at_assignment():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(2, 2, seed=0)
            self.b = self.a

    with pytest.raises(TypeError, match=r"Tied.b: expected a module held in one place.*'a'"):
        Tied()

    class Listed(nn.Module):
        def __init__(self):
            super().__init__()
            lin = nn.Linear(2, 2, seed=0)
            self.layers = [lin, lin]

    with pytest.raises(TypeError, match="held in one place only"):
        Listed()


def test_a_module_aliased_into_a_sub_module_is_refused_before_compiling():
    class Inner(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2, seed=0)

        def __call__(self, x):
            return self.fc(x)

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.shared = nn.Linear(2, 2, seed=1)
            self.inner = Inner()
            self.inner.fc2 = self.shared  # the sub-module cannot see its parent

        def __call__(self, x):
            return self.inner(self.shared(x))

    model = Outer()
    with pytest.raises(TypeError, match=r"already registered as 'shared'"):
        model(jnp.ones((1, 2)))


def test_reassigning_the_same_module_under_its_own_name_is_fine():
    seq = nn.Sequential(nn.Linear(2, 2, seed=0))
    lin = nn.Linear(2, 2, seed=0)

    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin
            self.lin = lin
            self.seq = seq

    assert [n for n, _ in Holder().named_children()] == ["lin", "seq"]


# -- threads -------------------------------------------------------------------------------


def test_two_threads_driving_one_model_lose_no_rng_update():
    model = nn.Sequential(nn.Linear(4, 4, seed=0), nn.Dropout(0.5, seed=0))
    x = jnp.ones((2, 4))
    model(x)  # compile first, so the threads race on the calls themselves
    step = nn.filter_jit(lambda m, x: m(x))
    step(model, x)
    calls = 40

    def work():
        for _ in range(calls):
            model(x)
            step(model, x)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert int(model[1].rng.counter) == 2 + 2 * 2 * calls


# -- attributes assigned inside a call -------------------------------------------------------


def test_a_new_array_attribute_assigned_inside_a_call_raises_with_the_fix():
    class Caching(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2, seed=0)

        def __call__(self, x):
            self.mask = jnp.tril(jnp.ones((2, 2)))  # as PyTorch's TransformerModel
            return self.fc(x) @ self.mask

    model = Caching()
    with pytest.raises(
        RuntimeError,
        match=r"Caching.__call__: expected a call that creates no new array.*register_buffer",
    ):
        model(jnp.ones((1, 2)))
    assert "mask" not in dict(model.named_parameters())
    with pytest.raises(RuntimeError, match="stay the same during the call"):
        nn.filter_jit(lambda m, x: m(x))(model, jnp.ones((1, 2)))


def test_a_buffer_assigned_inside_a_call_is_carried_back():
    class Caching(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mask", jnp.zeros((2, 2)))

        def __call__(self, x):
            self.mask = jnp.tril(jnp.ones((2, 2)))
            return x @ self.mask

    model = Caching()
    model(jnp.ones((1, 2)))
    np.testing.assert_array_equal(model.mask, np.tril(np.ones((2, 2))))
    model.mask = jnp.zeros((2, 2))
    nn.filter_jit(lambda m, x: m(x))(model, jnp.ones((1, 2)))
    np.testing.assert_array_equal(model.mask, np.tril(np.ones((2, 2))))
    nn.filter_grad(lambda m: m(jnp.ones((1, 2))).sum())(model.__class__())  # no error


# -- the stale-RNG guard ---------------------------------------------------------------------


def test_stale_rng_guard_warns_per_draw_site_and_under_vmap():
    def stacked(seed):
        return nn.Dropout(0.5, seed=seed)

    models = [stacked(0), stacked(1)]
    stack = jax.tree.map(lambda *xs: jnp.stack(xs), *models)
    forward = jax.jit(jax.vmap(lambda m, x: m(x)))
    x = jnp.ones((2, 3))
    with pytest.warns(RuntimeWarning, match="drawn twice from the same state"):
        for _ in range(2):
            jax.block_until_ready(forward(stack, x))
        jax.effects_barrier()
    other = jax.jit(lambda m, x: m(x))  # a second broken function warns again
    with pytest.warns(RuntimeWarning, match="drawn twice"):
        for _ in range(2):
            jax.block_until_ready(other(models[0], x))
        jax.effects_barrier()


# -- BatchNorm, dtypes, load_state_dict ------------------------------------------------------


def test_batchnorm_training_on_an_empty_batch_raises_naming_the_eager_layer():
    bn = nn.BatchNorm(3, seed=0)
    with pytest.raises(ValueError, match=r"^nn.BatchNorm: expected a non-empty batch"):
        bn(jnp.ones((0, 3)))
    np.testing.assert_array_equal(bn.running_mean, np.zeros(3))
    assert bn.eval()(jnp.ones((0, 3))).shape == (0, 3)


def test_an_integer_array_assigned_as_a_float_parameter_raises():
    lin = nn.Linear(2, 2, seed=0)
    with pytest.raises(TypeError, match=r"Linear.kernel: expected a floating-point.*astype"):
        lin.kernel = jnp.zeros((2, 2), jnp.int32)
    lin.kernel = jnp.zeros((2, 2), jnp.bfloat16)  # another float dtype is the user's choice


def test_load_state_dict_checks_dtype_kind_and_range():
    drop = nn.Dropout(0.5, seed=0)
    state = dict(drop.state_dict())
    bad = dict(state, **{"rng.seed": np.full((2,), -1.5)})
    with pytest.raises(ValueError, match=r"rng.seed: expected uint32 values, got float64"):
        drop.load_state_dict(bad)
    bad = dict(state, **{"rng.seed": np.array([-1, 0], np.int64)})
    with pytest.raises(ValueError, match=r"rng.seed: expected values in \[0, 4294967295\]"):
        drop.load_state_dict(bad)
    drop.load_state_dict(dict(state, **{"rng.seed": np.array([7, 8], np.int64)}))
    assert drop.rng.seed.tolist() == [7, 8]


# -- compile state: per signature, bounded, inspectable --------------------------------------


def test_a_failed_compile_falls_back_for_that_signature_only():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2, seed=0)

        def __call__(self, x):
            if x.shape[0] == 3 and x.sum() > 0:  # value-dependent for batch 3 only
                return self.fc(x)
            return -self.fc(x)

    model = Branchy()
    with pytest.warns(UserWarning, match="could not be compiled"):
        model(jnp.ones((3, 2)))
    model(jnp.ones((2, 2)))  # another signature still compiles
    stats = nn.compile_stats(model)
    assert (stats.op_by_op, stats.cached) == (1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(jnp.ones((3, 2)))  # remembered: no retrace, no second warning
    assert nn.compile_stats(model).traces == stats.traces


def test_compiled_calls_are_bounded_least_recently_used_first(monkeypatch):
    from blox.eager import _dispatch

    assert _dispatch.CACHE_LIMIT >= 16
    # The eviction logic does not depend on the bound; a small one keeps this
    # test to a handful of compiles instead of CACHE_LIMIT + 1 of them.
    limit = 4
    monkeypatch.setattr(_dispatch, "CACHE_LIMIT", limit)
    step = nn.filter_jit(lambda x: x + 1)
    step(jnp.ones(1))
    for n in range(2, limit + 2):
        step(jnp.ones(n))
        step(jnp.ones(1))  # keeps the first signature recently used
    stats = nn.compile_stats(step)
    assert stats.cached == limit
    step(jnp.ones(1))
    assert nn.compile_stats(step).traces == stats.traces  # survived eviction


def test_the_direct_route_is_bounded_and_answers_across_the_eviction(monkeypatch):
    class Scale(nn.Module):  # a class of its own: a dispatcher of its own
        def __init__(self):
            super().__init__()
            self.w = jnp.full((1, 3), 2.0)

        def __call__(self, x):
            return x * self.w

    model = Scale()
    dispatcher = type(model).__call__._blox_dispatcher
    monkeypatch.setattr(dispatcher, "limit", 2)
    for n in range(1, 6):  # five signatures: the third trace empties the route's table
        x = jnp.full((n, 3), float(n))
        np.testing.assert_array_equal(model(x), 2.0 * x)
    assert dispatcher.direct_cached == 2 and len(dispatcher.direct) == 1
    np.testing.assert_array_equal(model(jnp.ones((5, 3))), jnp.full((5, 3), 2.0))


def test_compile_stats_and_clear_caches():
    step = nn.filter_jit(lambda x: x * 2)
    step(jnp.ones(2))
    step(jnp.ones(2))
    assert nn.compile_stats(step) == nn.CompileStats(1, 1, 1, 0)
    nn.clear_caches()
    assert nn.compile_stats(step).cached == 0
    step(jnp.ones(2))
    assert nn.compile_stats(step).traces == 2
    with pytest.raises(TypeError, match=r"nn.compile_stats: expected an nn.filter_jit function"):
        nn.compile_stats(len)


# -- forward hooks ---------------------------------------------------------------------------


def test_forward_hooks_fire_per_call_replace_outputs_and_remove():
    model = nn.Sequential(nn.Linear(2, 3, seed=0), nn.Linear(3, 1, seed=1))
    seen = []
    handle = model[0].register_forward_hook(lambda m, args, out: seen.append((m, out.shape)))
    model(jnp.ones((4, 2)))
    model(jnp.ones((5, 2)))
    assert [(m is model[0], shape) for m, shape in seen] == [(True, (4, 3)), (True, (5, 3))]
    handle.remove()
    model(jnp.ones((4, 2)))
    assert len(seen) == 2
    with model[1].register_forward_hook(lambda m, args, out: out * 0):
        assert float(abs(model(jnp.ones((1, 2)))).sum()) == 0.0
    assert float(abs(model(jnp.ones((1, 2)))).sum()) > 0.0
    with pytest.raises(TypeError, match="expected a callable hook"):
        model.register_forward_hook(3)


def test_summary_leaves_classes_unpatched():
    call = nn.Linear.__call__
    nn.summary(nn.Sequential(nn.Linear(2, 2, seed=0)), jnp.ones((1, 2)))
    assert nn.Linear.__call__ is call


# -- constructor validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: nn.Linear(0, 2), ValueError, r"nn.Linear\(0, 2\): expected in_features"),
        (
            lambda: nn.Linear(2, True),
            TypeError,
            r"expected out_features to be a positive int, got bool",
        ),
        (
            lambda: nn.Linear(2.0, 2),
            TypeError,
            r"expected in_features to be a positive int, got float",
        ),
        (
            lambda: nn.Conv(2, 4, 3, strides=0),
            ValueError,
            r"nn.Conv\(2, 4, kernel_size=\(3,\)\): expected strides",
        ),
        (lambda: nn.Conv(2, 4, 3, kernel_dilation=(0,)), ValueError, "expected kernel_dilation"),
        (lambda: nn.Conv(4, 6, 3, feature_group_count=4), ValueError, "divide out_channels 6"),
        (lambda: nn.Conv(2, 4, 0), ValueError, "expected kernel_size"),
        (lambda: nn.Conv(2, 4, 3, padding="same "), ValueError, "expected padding 'SAME', 'VALID'"),
        # Negative pads crop (flax and lax allow them); a triple is no padding form.
        (lambda: nn.Conv(2, 4, 3, padding=((1, 2, 3),)), ValueError, "expected padding"),
        (
            lambda: nn.Dropout(1.0),
            ValueError,
            r"nn.Dropout\(1.0\): expected a dropout rate in \[0, 1\)",
        ),
        (
            lambda: nn.LayerNorm(4, epsilon=0.0),
            ValueError,
            r"nn.LayerNorm\(4\): expected epsilon > 0",
        ),
        (lambda: nn.BatchNorm(0), ValueError, "expected features"),
        (lambda: nn.Embed(0, 3), ValueError, r"nn.Embed\(0, 3\): expected num_embeddings"),
        (lambda: nn.LSTM(3, -1), ValueError, r"nn.LSTM\(3, -1\): expected hidden_size"),
    ],
)
def test_constructors_validate_their_arguments(build, error, match):
    with pytest.raises(error, match=match) as info:
        build()
    assert "blox/layer" not in str(info.value)


def test_seeds_of_any_size_are_accepted():
    a = nn.Linear(2, 2, seed=2**70)
    b = nn.Linear(2, 2, seed=-(2**40))
    assert a.kernel.shape == b.kernel.shape == (2, 2)


# -- pickle and deepcopy ---------------------------------------------------------------------


def test_models_pickle_and_deepcopy_is_independent():
    import copy
    import pickle

    model = nn.Sequential(nn.Linear(2, 3, seed=0), nn.Dropout(0.5, seed=0), nn.Embed(4, 3, seed=0))
    x = jnp.ones((2, 2))
    back = pickle.loads(pickle.dumps(model))
    for (name, a), b in zip(model.state_dict().items(), back.state_dict().values(), strict=True):
        np.testing.assert_array_equal(a, b, err_msg=name)
    np.testing.assert_array_equal(back[0](x), model[0](x))
    twin = copy.deepcopy(model)
    np.testing.assert_array_equal(twin[1](x), model[1](x))  # documented: the stream is copied
    twin[0].kernel = twin[0].kernel + 1
    assert not np.array_equal(twin[0].kernel, model[0].kernel)
    assert int(twin[1].rng.counter) == int(model[1].rng.counter) == 1
