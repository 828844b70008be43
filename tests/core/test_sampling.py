"""Initial values from the fixed-size sampling programs equal the per-shape ones, bit for bit.

`blox.core._sampling` draws every covered initialiser from programs of one
chunk size; these tests compare with the initialiser compiled for the exact
shape (what eager construction computed before, and what a jitted creating
call computes), over shapes below, at and across chunk boundaries, every
mode and distribution, and the host-side key derivation against JAX's.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import blox as bx
from blox import eager as nn
from blox.core import _sampling
from blox.core._initializers import Uniform, VarianceScaling
from blox.eager import _seed
from blox.eager._context import CONTEXT

# (shape, in_axis, out_axis): dense, conv, embedding-like, and a size just past a chunk.
SHAPES = [
    ((3, 5), -2, -1),
    ((3, 3, 4, 6), -2, -1),
    ((11, 6), -1, 0),
    ((_sampling.CHUNK + 3,), 0, 0),
    ((2, 3, 5), (0, 1), 2),
]


def _bits(x: jax.Array) -> np.ndarray:
    return np.asarray(x).view(np.uint32)


@pytest.mark.parametrize("distribution", ["truncated_normal", "normal", "uniform"])
def test_sampled_values_equal_the_compiled_initialiser_for_every_shape(distribution):
    cases = [
        (VarianceScaling(1.7, mode, distribution, in_axis=i, out_axis=o), shape)
        for (shape, i, o), mode in zip(SHAPES, ["fan_in", "fan_out", "fan_avg"] * 2)
    ]
    keys = [jax.random.key(10 * n + 1) for n in range(len(cases))]
    # One compiled program for every case: each initialiser at its exact shape.
    expected = jax.jit(lambda ks: [init(k, shape) for k, (init, shape) in zip(ks, cases)])(keys)
    for key, (init, shape), want in zip(keys, cases, expected):
        got = _sampling.sample(init, key, shape, jnp.float32)
        assert got.shape == shape and got.dtype == jnp.float32
        np.testing.assert_array_equal(_bits(got), _bits(want))


def test_bounded_uniform_equals_the_compiled_initialiser_for_every_shape():
    # PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)), at conv, dense, bias
    # and past-a-chunk shapes, and the zero bound of an empty fan-in.
    cases = [
        (Uniform(1 / np.sqrt(27)), (3, 3, 3, 8)),
        (Uniform(1 / np.sqrt(784)), (784, 16)),
        (Uniform(0.25), (16,)),
        (Uniform(0.5), (_sampling.CHUNK + 3,)),
        (Uniform(0.0), (2, 3)),
    ]
    keys = [jax.random.fold_in(jax.random.key(n), 5) for n in range(len(cases))]
    expected = jax.jit(lambda ks: [init(k, shape) for k, (init, shape) in zip(ks, cases)])(keys)
    for key, (init, shape), want in zip(keys, cases, expected):
        got = _sampling.sample(init, key, shape, jnp.float32)
        assert got.shape == shape and got.dtype == jnp.float32
        np.testing.assert_array_equal(_bits(got), _bits(want))
    assert _sampling.sample(Uniform(0.5), keys[0], (3,), jnp.float16) is None


def test_the_op_by_op_initialiser_agrees_where_jax_does_too():
    # Truncated normal and uniform are also the op-by-op values (the core's
    # creating call outside jit); for 'normal' XLA rounds a fused program's
    # scaling differently from the op-by-op one, so only the compiled one is the reference.
    key = jax.random.key(3)
    for distribution in ("truncated_normal", "uniform"):
        init = VarianceScaling(2.0, "fan_in", distribution)
        got = _sampling.sample(init, key, (7, 9), jnp.float32)
        np.testing.assert_array_equal(_bits(got), _bits(init(key, (7, 9))))


def test_uncovered_initialisers_and_dtypes_are_left_to_the_caller():
    key = jax.random.key(0)
    lecun = VarianceScaling(1.0, "fan_in", "truncated_normal")
    assert _sampling.sample(jax.nn.initializers.orthogonal(), key, (3, 3), jnp.float32) is None
    assert _sampling.sample(lecun, key, (3, 3), jnp.bfloat16) is None
    assert _sampling.sample(lecun, None, (3, 3), jnp.float32) is None
    zeros = _sampling.sample(jax.nn.initializers.zeros, None, (2, 3), jnp.int32)
    assert zeros.dtype == jnp.int32 and not zeros.any()
    assert bool((_sampling.sample(jax.nn.initializers.ones, key, (4,), jnp.float32) == 1).all())


def test_host_keys_equal_jax_keys():
    for seed in (0, 1, 2**31, 2**32 - 1, 2**40 + 3, -1, -(2**63), 2**63 - 1):
        np.testing.assert_array_equal(
            jax.random.key_data(_sampling.key_from_int(seed)),
            jax.random.key_data(jax.random.key(seed)),
        )
    key = jax.random.key(12345)
    for data in (0, 1, 77, 2**31, 2**32 - 1):
        np.testing.assert_array_equal(
            jax.random.key_data(_sampling.fold_in(key, data)),
            jax.random.key_data(jax.random.fold_in(key, np.uint32(data))),
        )
    assert _sampling.fold_in(key, 2**32) is None


def _sampled_configurations() -> int:
    return sum(
        value is _seed._SAMPLED or isinstance(value, _seed._Plan)
        for value in CONTEXT.init_programs.values()
    )


def test_eager_layers_built_by_sampling_equal_the_core_creating_call_under_jit():
    before = _sampled_configurations()
    layers = [nn.Linear(5, 7, seed=1), nn.Conv(3, 4, (3, 3), seed=2), nn.BatchNorm(4, seed=3)]
    assert _sampled_configurations() >= before + 1
    for layer, x in zip(layers, [jnp.zeros((1, 5)), jnp.zeros((1, 6, 6, 3)), jnp.zeros((1, 4))]):
        core = layer.core_layer
        root = bx.Graph("blox")
        rng = bx.Rng(root / "rng")

        def create(key, core=core, rng=rng, x=x):
            params = rng.seed(bx.Params(), seed=key)
            # Eager BatchNorm creates its statistics in eval mode (no update).
            kwargs = {"is_training": False} if isinstance(core, bx.BatchNorm) else {}
            return core(params, x, **kwargs)[1]

        seed = {nn.Linear: 1, nn.Conv: 2, nn.BatchNorm: 3}[type(layer)]
        expected = jax.jit(create)(jax.random.key(seed))
        for name, value in layer.state_dict().items():
            path = ("blox", "layer", *name.split("."))
            np.testing.assert_array_equal(np.asarray(value), np.asarray(expected[path].value))


def test_a_repeated_configuration_replays_its_draws_as_the_creating_call_would():
    # The second build of a configuration replays the first one's draws for its
    # own key (no trace of the creating call); everything must be as the core's
    # creating call under jit makes it for that key: paths and their order,
    # values bit for bit, flags, metadata, and buffers of its own.
    cases = [
        (bx.Linear, (7,), {}, jnp.zeros((1, 5))),
        (bx.Conv, ((3, 3), 4), {}, jnp.zeros((1, 6, 6, 3))),
        (bx.BatchNorm, (), {}, jnp.zeros((1, 4))),
        (bx.Linear, (3,), {"kernel_init": Uniform(0.3)}, jnp.zeros((2, 6))),
    ]
    for core_cls, args, options, x in cases:
        layer, rng = nn.build_core("test", core_cls, args, options)
        kwargs = {"is_training": False} if core_cls is bx.BatchNorm else {}
        signature = ("replay-test", layer, x.shape)
        make = lambda p, layer=layer, x=x, kwargs=kwargs: layer(p, x, **kwargs)[1]  # noqa: E731
        first = nn.init_params("test", rng, 11, make, signature=signature)
        assert isinstance(CONTEXT.init_programs[signature], _seed._Plan)
        again = nn.init_params("test", rng, 12, make, signature=signature)
        expected = jax.jit(lambda key, rng=rng, make=make: make(rng.seed(bx.Params(), seed=key)))(
            jax.random.key(12)
        )
        # The creation order a first build gives (jit returns paths sorted).
        assert list(again.keys()) == list(first.keys())
        assert sorted(again.keys()) == sorted(expected.keys())
        assert again.is_locked == first.is_locked
        for path, param in again.items():
            want = expected[path]
            assert param.trainable == want.trainable and param.metadata == want.metadata
            got_value, want_value = param.value, want.value
            if jax.dtypes.issubdtype(got_value.dtype, jax.dtypes.prng_key):
                got_value, want_value = (
                    jax.random.key_data(got_value),
                    jax.random.key_data(want_value),
                )
            assert got_value.dtype == want_value.dtype and got_value.shape == want_value.shape
            np.testing.assert_array_equal(np.asarray(got_value), np.asarray(want_value))
            assert param.value is not first[path].value


def test_an_uncovered_initialiser_is_built_by_the_compiled_program():
    orthogonal = jax.nn.initializers.orthogonal()
    layer = nn.Linear(4, 4, seed=0, kernel_init=orthogonal)
    kernel = np.asarray(layer.kernel)
    np.testing.assert_allclose(kernel.T @ kernel, np.eye(4), atol=1e-5)  # float32 QR round-off
    signature = (layer.core_layer, 4)
    assert CONTEXT.init_programs[signature] is not _seed._SAMPLED
    assert not isinstance(CONTEXT.init_programs[signature], _seed._Plan)


def test_the_global_stream_gives_the_same_keys_as_before():
    nn.manual_seed(4)
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    stream = jax.random.key(4)
    for count, layer in enumerate((a, b)):
        key = jax.random.fold_in(stream, count)
        expected = VarianceScaling(1.0, "fan_in", "truncated_normal")(
            jax.random.fold_in(key, 0), (3, 2)
        )
        np.testing.assert_array_equal(_bits(layer.kernel), _bits(expected))


def test_the_disk_cache_is_written_read_and_can_be_switched_off(tmp_path, monkeypatch):
    monkeypatch.setenv("BLOX_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_sampling, "_programs", {})
    init = VarianceScaling(1.0, "fan_in", "uniform")
    first = _sampling.sample(init, jax.random.key(0), (3, 4), jnp.float32)
    files = sorted(os.listdir(tmp_path))
    assert len(files) == 2
    assert files[0].startswith("init-bits-") and files[1].startswith("init-uniform-")
    monkeypatch.setattr(_sampling, "_programs", {})
    again = _sampling.sample(init, jax.random.key(0), (3, 4), jnp.float32)  # loaded from disk
    np.testing.assert_array_equal(_bits(first), _bits(again))
    monkeypatch.setenv("BLOX_CACHE_DIR", "off")
    assert _sampling.cache_dir() is None and _sampling._cache_file("uniform") is None


def test_a_failed_compile_on_the_background_thread_is_raised(monkeypatch):
    # The bits program compiles on a thread of its own; its error must reach
    # the caller, and nothing half-made may stay in memory.
    class Broken:
        def compile(self) -> None:
            raise RuntimeError("compiler unavailable")

    real = _sampling._compile

    def compile_(name, lowered, done):
        real(name, Broken() if name == "bits" else lowered, done)

    monkeypatch.setenv("BLOX_CACHE_DIR", "off")
    monkeypatch.setattr(_sampling, "_programs", {})
    monkeypatch.setattr(_sampling, "_compile", compile_)
    with pytest.raises(RuntimeError, match="compiler unavailable"):
        _sampling._program("uniform")
    assert _sampling._programs == {}


def test_programs_compiled_under_other_xla_flags_are_kept_apart(tmp_path, monkeypatch):
    # A process run at another optimisation level may round differently: a
    # program compiled by one must never be loaded by the other.
    monkeypatch.setenv("BLOX_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
    low = _sampling._cache_file("uniform")
    monkeypatch.setenv("XLA_FLAGS", "")
    default = _sampling._cache_file("uniform")
    assert low != default and os.path.dirname(low) == os.path.dirname(default) == str(tmp_path)


def test_programs_written_by_other_sampling_code_are_never_loaded(tmp_path, monkeypatch):
    # An upgrade that changes a transform must not load the old one from disk.
    monkeypatch.setenv("BLOX_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_sampling, "_programs", {})
    init = VarianceScaling(1.0, "fan_in", "uniform")
    _sampling.sample(init, jax.random.key(0), (3, 4), jnp.float32)
    written = _sampling._cache_file("uniform")
    assert os.path.exists(written)
    monkeypatch.setattr(_sampling, "_source_hash", lambda: "0123456789ab")
    assert _sampling._cache_file("uniform") != written
    monkeypatch.setattr(_sampling, "_programs", {})
    assert _sampling._load("uniform") is None


def test_an_unreadable_source_switches_the_disk_cache_off(tmp_path, monkeypatch):
    # A frozen install without the .py file still builds models; it only compiles.
    monkeypatch.setenv("BLOX_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_sampling, "_source_hash", lambda: None)
    monkeypatch.setattr(_sampling, "_programs", {})
    assert _sampling._cache_file("uniform") is None
    init = VarianceScaling(1.0, "fan_in", "uniform")
    got = _sampling.sample(init, jax.random.key(0), (3, 4), jnp.float32)
    want = jax.jit(lambda k: init(k, (3, 4)))(jax.random.key(0))
    np.testing.assert_array_equal(_bits(got), _bits(want))
    assert os.listdir(tmp_path) == []


def test_the_unrolled_threefry_equals_the_primitive():
    import jax.extend.random as xr

    words = np.random.default_rng(0).integers(0, 2**32, size=(4, 257), dtype=np.uint32)
    words[:, :4] = [[0, 2**32 - 1, 0, 2**32 - 1]] * 4  # the extremes of each word
    k1, k2 = np.uint32(words[0, 5]), np.uint32(words[1, 7])
    x1, x2 = words[2], words[3]
    want = jax.jit(lambda a, b, c, d: xr.threefry2x32_p.bind(a, b, c, d))(k1, k2, x1, x2)
    got = jax.jit(_sampling._threefry_unrolled)(k1, k2, x1, x2)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
