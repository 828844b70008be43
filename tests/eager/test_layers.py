"""Every eager layer against its core twin, bit for bit.

An eager layer built with ``seed=s`` seeds a core `Rng` with
``jax.random.key(s)`` and creates its parameters by running the core layer
once. The twin here is built by hand the same way: a `bx.Graph`, a `bx.Rng`
seeded with the same int, and the core layer. Its parameters are created by a
first call in inference mode (the eager constructor creates parameters without
updating any state), then locked. Both then run the same calls, and the
parameters, the outputs and the state after the calls (BatchNorm statistics,
Dropout RNG seed and counter) must be identical.

Each `Case` of the table names the eager state (dotted names and shapes, in
creation order); ``rng.*`` names live at the twin's ``ROOT/rng``, the others
under ``ROOT/layer``.
"""

import dataclasses
import functools
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import blox as bx
from blox import eager as nn

ROOT = "twin"
SEED = 3
Shape = tuple[int, ...]


# Inputs come from numpy: drawing them with jax.random would compile a sampler
# for every shape, which costs more than all the layers' own work.
def _normal(shape: Shape, i: int) -> jax.Array:
    return jnp.asarray(np.random.default_rng(100 + i).standard_normal(shape, np.float32))


def _ids(vocab: int) -> Callable[[Shape, int], jax.Array]:
    def make(shape: Shape, i: int) -> jax.Array:
        return jnp.asarray(np.random.default_rng(200 + i).integers(0, vocab, shape, np.int32))

    return make


def _plain(core: Any, params: bx.Params, x: jax.Array, training: bool) -> Any:
    return core(params, x)


def _moded(core: Any, params: bx.Params, x: jax.Array, training: bool) -> Any:
    return core(params, x, is_training=training)


def _attend(core: Any, params: bx.Params, x: jax.Array, training: bool) -> Any:
    return core.attend(params, x)


def _sequence(core: Any, params: bx.Params, x: jax.Array, training: bool) -> Any:
    return core.apply(params, x, None, None, training)


@dataclasses.dataclass(frozen=True, eq=False)
class Case:
    """One eager layer configuration and its hand-built core twin.

    Attributes:
        name: Test id.
        eager: `eager(seed) -> layer`.
        core: `core(graph, rng) -> core layer` at `graph`.
        shape: Input shape without the batch axes.
        state: Golden `{dotted name: shape}` of `layer.state_dict()`, in order.
        call_core: `call_core(core, params, x, training) -> (out, params)`.
        call_eager: `call_eager(layer, x) -> out`.
        make: `make(shape, i)`, the input of the i-th call.
        training: The mode both run in.
        any_batch: Whether to test several leading batch shapes.
        calls: How many calls to compare (each eager scan compiles anew, so
            the recurrent cases, which keep no state between calls, make one).
    """

    name: str
    eager: Callable[[int], Any]
    core: Callable[[bx.Graph, bx.Rng], Any]
    shape: Shape
    state: dict[str, Shape]
    call_core: Callable[..., Any] = _plain
    call_eager: Callable[[Any, jax.Array], Any] = lambda layer, x: layer(x)
    make: Callable[[Shape, int], jax.Array] = _normal
    training: bool = True
    any_batch: bool = True
    calls: int = 2

    def __repr__(self) -> str:
        return self.name


# Kernel shapes repeat across cases on purpose: each new shape compiles the
# initialiser once more, the largest cost of this file.
CASES = (
    Case(
        "linear",
        lambda s: nn.Linear(3, 4, seed=s),
        lambda g, rng: bx.Linear(g, 4, rng=rng),
        (3,),
        {"kernel": (3, 4), "bias": (4,)},
    ),
    Case(
        "linear_no_bias",
        lambda s: nn.Linear(3, 4, use_bias=False, seed=s),
        lambda g, rng: bx.Linear(g, 4, rng=rng, use_bias=False),
        (3,),
        {"kernel": (3, 4)},
    ),
    Case(
        "conv1d",
        lambda s: nn.Conv(3, 4, 3, seed=s),
        lambda g, rng: bx.Conv(g, 3, 4, rng=rng),
        (7, 3),
        {"kernel": (3, 3, 4), "bias": (4,)},
    ),
    Case(
        "conv1d_input_dilation_same_strided",
        lambda s: nn.Conv(3, 4, 3, strides=2, input_dilation=2, seed=s),
        lambda g, rng: bx.Conv(g, 3, 4, rng=rng, strides=2, input_dilation=2),
        (5, 3),
        {"kernel": (3, 3, 4), "bias": (4,)},
    ),
    Case(
        "conv1d_negative_padding",
        lambda s: nn.Conv(3, 4, 3, padding=((-1, -2),), seed=s),
        lambda g, rng: bx.Conv(g, 3, 4, rng=rng, padding=((-1, -2),)),
        (9, 3),
        {"kernel": (3, 3, 4), "bias": (4,)},
    ),
    Case(
        "conv2d",
        lambda s: nn.Conv(1, 8, kernel_size=(3, 3), seed=s),
        lambda g, rng: bx.Conv(g, (3, 3), 8, rng=rng),
        (8, 8, 1),
        {"kernel": (3, 3, 1, 8), "bias": (8,)},
    ),
    Case(
        "conv2d_groups_dilated_valid",
        lambda s: nn.Conv(
            2,
            8,
            (3, 3),
            strides=(2, 1),
            padding="VALID",
            kernel_dilation=(1, 2),
            feature_group_count=2,
            seed=s,
        ),
        lambda g, rng: bx.Conv(
            g,
            (3, 3),
            8,
            rng=rng,
            strides=(2, 1),
            padding="VALID",
            kernel_dilation=(1, 2),
            feature_group_count=2,
        ),
        (9, 7, 2),
        {"kernel": (3, 3, 1, 8), "bias": (8,)},
    ),
    Case(
        "conv2d_input_dilation_explicit_pads_no_bias",
        lambda s: nn.Conv(
            1,
            8,
            (3, 3),
            strides=(1, 2),
            padding=((1, 0), (2, 1)),
            input_dilation=2,
            use_bias=False,
            seed=s,
        ),
        lambda g, rng: bx.Conv(
            g,
            (3, 3),
            8,
            rng=rng,
            strides=(1, 2),
            padding=((1, 0), (2, 1)),
            input_dilation=2,
            use_bias=False,
        ),
        (4, 5, 1),
        {"kernel": (3, 3, 1, 8)},
    ),
    Case(
        "conv_transpose1d",
        lambda s: nn.ConvTranspose(4, 3, 3, strides=2, seed=s),
        lambda g, rng: bx.ConvTranspose(g, 3, 3, rng=rng, strides=2),
        (4, 4),
        {"kernel": (3, 3, 4), "bias": (3,)},
    ),
    Case(
        "conv_transpose2d_groups",
        lambda s: nn.ConvTranspose(6, 4, (3, 3), strides=2, feature_group_count=2, seed=s),
        lambda g, rng: bx.ConvTranspose(g, (3, 3), 4, rng=rng, strides=2, feature_group_count=2),
        (4, 4, 6),
        {"kernel": (3, 3, 4, 3), "bias": (4,)},
    ),
    Case(
        "conv_transpose2d_valid_dilated_groups",
        lambda s: nn.ConvTranspose(
            6,
            4,
            (3, 3),
            strides=(2, 1),
            padding="VALID",
            kernel_dilation=(1, 2),
            feature_group_count=2,
            seed=s,
        ),
        lambda g, rng: bx.ConvTranspose(
            g,
            (3, 3),
            4,
            rng=rng,
            strides=(2, 1),
            padding="VALID",
            kernel_dilation=(1, 2),
            feature_group_count=2,
        ),
        (3, 4, 6),
        {"kernel": (3, 3, 4, 3), "bias": (4,)},
    ),
    Case(
        "conv_transpose2d_negative_padding_groups",
        lambda s: nn.ConvTranspose(
            6, 4, (3, 3), strides=2, padding=((-1, -2), (0, -1)), feature_group_count=2, seed=s
        ),
        lambda g, rng: bx.ConvTranspose(
            g, (3, 3), 4, rng=rng, strides=2, padding=((-1, -2), (0, -1)), feature_group_count=2
        ),
        (4, 4, 6),
        {"kernel": (3, 3, 4, 3), "bias": (4,)},
    ),
    Case(
        "embed",
        lambda s: nn.Embed(10, 4, seed=s),
        lambda g, rng: bx.Embed(g, 10, 4, rng=rng),
        (5,),
        {"embedding": (10, 4)},
        make=_ids(10),
    ),
    Case(
        "embed_attend",
        lambda s: nn.Embed(10, 4, seed=s),
        lambda g, rng: bx.Embed(g, 10, 4, rng=rng),
        (4,),
        {"embedding": (10, 4)},
        call_core=_attend,
        call_eager=lambda layer, h: layer.attend(h),
    ),
    Case(
        "dropout_train",
        lambda s: nn.Dropout(0.5, seed=s),
        lambda g, rng: bx.Dropout(g, 0.5, rng=rng),
        (3, 6),
        {"rng.seed": (2,), "rng.counter": ()},
        call_core=_moded,
        any_batch=False,  # a new mask shape compiles a sampler; eval covers the shapes
    ),
    Case(
        "dropout_eval",
        lambda s: nn.Dropout(0.5, seed=s).eval(),
        lambda g, rng: bx.Dropout(g, 0.5, rng=rng),
        (3, 6),
        {"rng.seed": (2,), "rng.counter": ()},
        call_core=_moded,
        training=False,
    ),
    Case(
        "layer_norm",
        lambda s: nn.LayerNorm(6, seed=s),
        lambda g, rng: bx.LayerNorm(g, rng=rng),
        (3, 6),
        {"scale": (6,), "bias": (6,)},
    ),
    Case(
        "layer_norm_options",
        lambda s: nn.LayerNorm(6, epsilon=1e-2, use_bias=False, seed=s),
        lambda g, rng: bx.LayerNorm(g, epsilon=1e-2, use_bias=False, rng=rng),
        (3, 6),
        {"scale": (6,)},
    ),
    Case(
        "rms_norm",
        lambda s: nn.RMSNorm(6, seed=s),
        lambda g, rng: bx.RMSNorm(g, rng=rng),
        (3, 6),
        {"scale": (6,)},
    ),
    Case(
        "batch_norm_train",
        lambda s: nn.BatchNorm(6, momentum=0.8, seed=s),
        lambda g, rng: bx.BatchNorm(g, momentum=0.8, use_fast_variance=True, rng=rng),
        (3, 6),
        {"running_mean": (6,), "running_var": (6,), "scale": (6,), "bias": (6,)},
        call_core=_moded,
        any_batch=False,
    ),
    Case(
        "batch_norm_eval",
        lambda s: nn.BatchNorm(6, epsilon=1e-3, seed=s).eval(),
        lambda g, rng: bx.BatchNorm(g, epsilon=1e-3, use_fast_variance=True, rng=rng),
        (3, 6),
        {"running_mean": (6,), "running_var": (6,), "scale": (6,), "bias": (6,)},
        call_core=_moded,
        training=False,
        any_batch=False,
    ),
    Case(
        "group_norm",
        lambda s: nn.GroupNorm(6, num_groups=3, seed=s),
        lambda g, rng: bx.GroupNorm(g, num_groups=3, rng=rng),
        (3, 6),
        {"scale": (6,), "bias": (6,)},
    ),
    Case(
        "instance_norm",
        lambda s: nn.InstanceNorm(6, seed=s),
        lambda g, rng: bx.InstanceNorm(g, rng=rng),
        (3, 6),
        {"scale": (6,), "bias": (6,)},
        any_batch=False,
    ),
    Case(
        "batch_norm_torch_cumulative",
        lambda s: nn.BatchNorm(6, momentum=None, unbiased_running_var=True, seed=s),
        lambda g, rng: bx.BatchNorm(
            g, momentum=None, unbiased_running_var=True, use_fast_variance=True, rng=rng
        ),
        (3, 6),
        {
            "running_mean": (6,),
            "running_var": (6,),
            "num_batches_tracked": (),
            "scale": (6,),
            "bias": (6,),
        },
        call_core=_moded,
        any_batch=False,
    ),
    Case(
        "dense_general",
        lambda s: nn.DenseGeneral((3, 6), (2, 2), axis=(-2, -1), seed=s),
        lambda g, rng: bx.DenseGeneral(g, (2, 2), axis=(-2, -1), rng=rng),
        (3, 6),
        {"kernel": (3, 6, 2, 2), "bias": (2, 2)},
    ),
    Case(
        "einsum_bias_scaler",
        lambda s: nn.Sequential(
            nn.Einsum((6, 4), "...c,cd->...d", seed=s), nn.Bias(4, seed=s), nn.Scaler(4, seed=s)
        ),
        lambda g, rng: bx.Sequential(
            g,
            [
                bx.Einsum(g / "0", (6, 4), "...c,cd->...d", rng=rng),
                bx.Bias(g / "1", 4, rng=rng),
                bx.Scaler(g / "2", 4, rng=rng),
            ],
        ),
        (3, 6),
        {"0.kernel": (6, 4), "0.bias": (4,), "1.bias": (4,), "2.scale": (4,)},
    ),
    Case(
        "lstm",
        lambda s: nn.LSTM(3, 5, seed=s),
        lambda g, rng: bx.LSTM(g, 5, rng=rng),
        (4, 3),
        {"gates.kernel": (8, 20), "gates.bias": (20,)},
        call_core=_sequence,
        any_batch=False,
        calls=1,
    ),
    Case(
        "lstm_static",
        lambda s: nn.LSTM(3, 5, is_static=True, seed=s),
        lambda g, rng: bx.LSTM(g, 5, rng=rng, is_static=True),
        (4, 3),
        {"gates.kernel": (8, 20), "gates.bias": (20,)},
        call_core=_sequence,
        any_batch=False,
        calls=1,
    ),
    Case(
        "gru",
        lambda s: nn.GRU(3, 4, seed=s),
        lambda g, rng: bx.GRU(g, 4, rng=rng),
        (4, 3),
        {
            "gates.kernel": (7, 8),
            "gates.bias": (8,),
            "candidate.kernel": (7, 4),
            "candidate.bias": (4,),
        },
        call_core=_sequence,
        any_batch=False,
        calls=1,
    ),
)
ALL = pytest.mark.parametrize("case", CASES, ids=repr)
ANY_BATCH = [c for c in CASES if c.any_batch]


def _core_path(name: str) -> tuple[str, ...]:
    parts = tuple(name.split("."))
    return (ROOT, *parts) if parts[0] == "rng" else (ROOT, "layer", *parts)


def _raw(value: jax.Array) -> np.ndarray:
    """Arrays as numpy; typed PRNG keys as their raw key data (as eager stores them)."""
    if jnp.issubdtype(value.dtype, jax.dtypes.prng_key):
        value = jax.random.key_data(value)
    return np.asarray(value)


@functools.cache
def _twin(case: Case) -> tuple[Any, bx.Params]:
    """The core layer and its created, locked params (both immutable, so cached)."""
    graph = bx.Graph(ROOT)
    rng = bx.Rng(graph / "rng")
    core = case.core(graph / "layer", rng)
    params = rng.seed(bx.Params(), seed=jax.random.key(SEED))
    _, params = case.call_core(core, params, case.make((2, *case.shape), 0), False)
    return core, params.locked()


def _assert_same_state(layer: Any, params: bx.Params, case: Case) -> None:
    state = layer.state_dict()
    assert list(state) == list(case.state)
    for name, value in state.items():
        np.testing.assert_array_equal(np.asarray(value), _raw(params[_core_path(name)].value))


def _assert_trees_equal(actual: Any, expected: Any) -> None:
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        assert a.dtype == e.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


@ALL
def test_state_names_shapes_and_order_are_golden(case: Case) -> None:
    layer = case.eager(SEED)
    assert {k: tuple(v.shape) for k, v in layer.state_dict().items()} == case.state
    assert list(layer.state_dict()) == list(case.state)
    _, params = _twin(case)
    # The twin's order is not compared: a scan rebuilds its Params in key order.
    created = {p for p in params.keys() if p[1] != "rng"}
    assert created == {_core_path(n) for n in case.state if not n.startswith("rng.")}


@ALL
def test_parameters_exist_after_construction_and_equal_core(case: Case) -> None:
    layer = case.eager(SEED)
    _, params = _twin(case)
    _assert_same_state(layer, params, case)
    for name, value in layer.state_dict().items():
        owner = layer
        for part in name.split("."):
            owner = getattr(owner, part)
        assert owner is value  # readable as attributes by the core names


# One per init path: a kernel and bias, a conv kernel, orthogonal recurrent
# weights, BatchNorm buffers, an embedding table.
_INIT_SAMPLE = [
    c for c in CASES if c.name in {"linear", "conv2d", "lstm", "batch_norm_train", "embed"}
]


@pytest.mark.parametrize("case", _INIT_SAMPLE, ids=repr)
def test_construction_under_disable_jit_runs_op_by_op_and_agrees(case: Case) -> None:
    layer = case.eager(SEED)
    with jax.disable_jit():  # the constructor then runs every primitive on its own
        reference = case.eager(SEED)
    assert list(layer.state_dict()) == list(reference.state_dict())
    # Not bit for bit: jax.random's samplers are jitted functions, and split into
    # single primitives XLA rounds them differently (by an ulp or two). The
    # compiled constructor equals the core's own creating call bit for bit
    # (test_parameters_exist_after_construction_and_equal_core).
    for (name, a), b in zip(layer.state_dict().items(), reference.state_dict().values()):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7, err_msg=name)


def test_construction_compiles_once_per_configuration() -> None:
    nn.Linear(7, 5, seed=0)
    size = nn.cache_sizes()["init_programs"]
    again = nn.Linear(7, 5, seed=1)  # same configuration, other key: cached program
    assert nn.cache_sizes()["init_programs"] == size
    assert not np.array_equal(again.kernel, nn.Linear(7, 5, seed=0).kernel)
    nn.Linear(7, 6, seed=0)  # new configuration
    assert nn.cache_sizes()["init_programs"] == size + 1


def test_initialiser_needing_concrete_values_builds_op_by_op_with_one_warning() -> None:
    def numpy_init(key: Any, shape: Shape, dtype: Any) -> jax.Array:
        seed = int(jax.random.key_data(key)[-1])  # needs a concrete key
        return jnp.asarray(np.random.default_rng(seed).normal(size=shape), dtype)

    with pytest.warns(
        UserWarning, match=r"nn.Linear\(3, 9\): its initialisers could not be compiled"
    ):
        first = nn.Linear(3, 9, kernel_init=numpy_init, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = nn.Linear(3, 9, kernel_init=numpy_init, seed=0)
    graph = bx.Graph(ROOT)
    rng = bx.Rng(graph / "rng")
    twin = bx.Linear(graph / "layer", 9, rng=rng, kernel_init=numpy_init)
    _, params = twin(rng.seed(bx.Params(), seed=jax.random.key(0)), jnp.zeros((1, 3)))
    expected = params[(ROOT, "layer", "kernel")].value
    np.testing.assert_array_equal(first.kernel, expected)
    np.testing.assert_array_equal(again.kernel, expected)


@functools.cache
def _jitted_core(case: Case, core: Any) -> Callable[[Any, Any], Any]:
    """One jitted core call per case, so a shape seen again reuses its program."""
    return jax.jit(lambda p, x: case.call_core(core, p, x, case.training))


def _jit_core(case: Case, core: Any, params: Any, x: Any) -> Any:
    """The core call compiled, as the eager call is: same program, same bits.

    Op by op, XLA rounds some fused reductions differently (by one ulp), so a
    bit-for-bit comparison must compile both sides.
    """
    return _jitted_core(case, core)(params, x)


@ALL
def test_outputs_and_state_after_calls_equal_core(case: Case) -> None:
    layer = case.eager(SEED)
    core, params = _twin(case)
    for i in range(case.calls):
        x = case.make((2, *case.shape), i + 1)
        expected, params = _jit_core(case, core, params, x)
        _assert_trees_equal(case.call_eager(layer, x), expected)
    _assert_same_state(layer, params, case)


@pytest.mark.parametrize("batch", [(), (2, 1, 3)], ids=str)
@pytest.mark.parametrize("case", ANY_BATCH, ids=repr)
def test_any_number_of_leading_batch_dims(case: Case, batch: Shape) -> None:
    layer = case.eager(SEED)
    core, params = _twin(case)
    x = case.make(batch + case.shape, 1)
    expected, _ = _jit_core(case, core, params, x)
    out = case.call_eager(layer, x)
    assert out.shape[: len(batch)] == batch
    _assert_trees_equal(out, expected)


def test_named_core_attributes() -> None:
    lin = nn.Linear(3, 4)
    emb = nn.Embed(10, 4)
    bn = nn.BatchNorm(6)
    lstm = nn.LSTM(3, 5)
    assert lin.kernel.shape == (3, 4) and lin.bias.shape == (4,)
    assert emb.embedding.shape == (10, 4)
    assert bn.scale.shape == (6,)
    np.testing.assert_array_equal(bn.running_mean, jnp.zeros(6))
    np.testing.assert_array_equal(bn.running_var, jnp.ones(6))
    assert lstm.gates.kernel.shape == (8, 20)
    for array in (lin.kernel, lin.bias, emb.embedding, bn.scale, lstm.gates.bias):
        assert isinstance(array, jax.Array)


# -- seeding -------------------------------------------------------------------------------


def test_manual_seed_reproduces_the_global_stream() -> None:
    nn.manual_seed(11)
    a1, b1 = nn.Linear(3, 4), nn.Linear(3, 4)
    nn.manual_seed(11)
    a2, b2 = nn.Linear(3, 4), nn.Linear(3, 4)
    np.testing.assert_array_equal(a1.kernel, a2.kernel)
    np.testing.assert_array_equal(b1.kernel, b2.kernel)
    assert not np.array_equal(a1.kernel, b1.kernel)  # consecutive draws differ
    nn.manual_seed(12)
    assert not np.array_equal(nn.Linear(3, 4).kernel, a1.kernel)


def test_seed_is_independent_of_the_global_stream() -> None:
    nn.manual_seed(0)
    plain_first = nn.Linear(3, 4).kernel
    nn.manual_seed(0)
    seeded = nn.Linear(3, 4, seed=5)
    plain_after = nn.Linear(3, 4).kernel
    np.testing.assert_array_equal(plain_after, plain_first)  # seed= drew nothing
    nn.manual_seed(99)
    np.testing.assert_array_equal(nn.Linear(3, 4, seed=5).kernel, seeded.kernel)


@pytest.mark.parametrize(
    "seed",
    [jax.random.key(5), np.int64(5), jax.random.PRNGKey(5)],
    ids=["typed_key", "numpy_int", "raw_key_data"],
)
def test_seed_forms_agree_with_the_int(seed: Any) -> None:
    np.testing.assert_array_equal(nn.Linear(3, 4, seed=seed).kernel, nn.Linear(3, 4, seed=5).kernel)


@pytest.mark.parametrize("seed", ["0", 1.5, True, jnp.zeros((3,), jnp.uint32)], ids=repr)
def test_bad_seed_raises_type_error(seed: Any) -> None:
    with pytest.raises(TypeError, match=r"nn\.Linear\(3, 4\): expected seed to be an int.*Fix:"):
        nn.Linear(3, 4, seed=seed)


def test_manual_seed_rejects_non_ints() -> None:
    with pytest.raises(TypeError, match=r"nn\.manual_seed: expected an int seed, got float"):
        nn.manual_seed(1.0)


# -- options and argument errors -------------------------------------------------------------


def test_unknown_option_raises_type_error() -> None:
    with pytest.raises(
        TypeError,
        match=r"nn\.Linear\(3, 4\): expected options among .*"
        r"'kernel_init'.*got unknown \['bogus'\]\. Fix:",
    ):
        nn.Linear(3, 4, bogus=1)
    with pytest.raises(TypeError, match=r"nn\.Conv\(2, 3, kernel_size=\(3,\)\): .*unknown "):
        nn.Conv(2, 3, 3, dilation=2)  # fails before any parameter is made


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: nn.Linear(3, 4, output_size=5), "output_size"),
        (lambda: nn.Conv(2, 3, 3, output_channels=5), "output_channels"),
        (lambda: nn.Linear(3, 4, rng=None), "rng"),
    ],
    ids=["linear", "conv", "rng"],
)
def test_core_size_names_are_not_options(make: Callable[[], Any], name: str) -> None:
    with pytest.raises(TypeError, match=rf"got unknown \['{name}'\]\. Fix: .*positional"):
        make()


@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5], ids=repr)
def test_dropout_rate_out_of_range_raises_value_error(rate: float) -> None:
    with pytest.raises(
        ValueError,
        match=rf"nn\.Dropout\({rate}\): expected a dropout rate in \[0, 1\), "
        rf"got {rate}\. Fix: ",
    ):
        nn.Dropout(rate)


@pytest.mark.parametrize("rate", [True, "0.5", None], ids=repr)
def test_dropout_rate_of_wrong_type_raises_type_error(rate: Any) -> None:
    with pytest.raises(TypeError, match=r"expected a dropout rate as a float in \[0, 1\), got"):
        nn.Dropout(rate)


def test_pooling_functions_are_the_cores() -> None:
    assert nn.max_pool is bx.max_pool
    assert nn.min_pool is bx.min_pool
    assert nn.avg_pool is bx.avg_pool


# -- stateful layers in detail ----------------------------------------------------------------


def test_dropout_draws_a_fresh_mask_per_call_and_none_in_eval() -> None:
    drop = nn.Dropout(0.5, seed=SEED)
    x = jnp.ones((2, 3, 6))
    a, b = drop(x), drop(x)
    assert not np.array_equal(a, b)
    assert int(drop.rng.counter) == 2
    # Reference: the core Rng formula, fold_in(key(seed), counter), and Dropout's mask.
    for counter, out in ((0, a), (1, b)):
        key = jax.random.fold_in(jax.random.key(SEED), counter)
        mask = jax.random.bernoulli(key, 0.5, x.shape)
        np.testing.assert_array_equal(out, x * mask / 0.5)
    drop.eval()
    np.testing.assert_array_equal(drop(x), x)
    assert int(drop.rng.counter) == 2
    np.testing.assert_array_equal(drop.rng.seed, jax.random.key_data(jax.random.key(SEED)))


def test_batch_norm_two_training_calls_then_eval_equal_core() -> None:
    bn = nn.BatchNorm(6, momentum=0.7, seed=SEED)
    graph = bx.Graph(ROOT)
    core = bx.BatchNorm(graph / "layer", momentum=0.7, use_fast_variance=True)
    _, params = core(bx.Params(), _normal((2, 3, 6), 0), is_training=False)
    params = params.locked()
    train = jax.jit(lambda p, x: core(p, x, is_training=True))
    for i in (1, 2):
        expected, params = train(params, _normal((2, 3, 6), i))
        np.testing.assert_array_equal(bn(_normal((2, 3, 6), i)), expected)
    running = params[(ROOT, "layer", "running_mean")].value
    np.testing.assert_array_equal(bn.running_mean, running)
    np.testing.assert_array_equal(bn.running_var, params[(ROOT, "layer", "running_var")].value)
    assert not np.array_equal(running, jnp.zeros(6))
    expected, _ = jax.jit(lambda p, x: core(p, x, is_training=False))(params, _normal((2, 3, 6), 3))
    np.testing.assert_array_equal(bn.eval()(_normal((2, 3, 6), 3)), expected)
    np.testing.assert_array_equal(bn.running_mean, running)  # eval does not update


@pytest.mark.parametrize(
    "make, core_cls",
    [
        (lambda: nn.LayerNorm(6, axis_name="rows", seed=SEED), bx.LayerNorm),
        (lambda: nn.RMSNorm(6, axis_name="rows", seed=SEED), bx.RMSNorm),
    ],
    ids=["layer_norm", "rms_norm"],
)
def test_norms_with_axis_name_build_and_equal_core_under_vmap(
    make: Callable[[], Any], core_cls: type
) -> None:
    layer = make()  # builds outside any named axis
    core = core_cls(bx.Graph(ROOT) / "layer", axis_name="rows")
    x = _normal((2, 3, 6), 1)
    expected, _ = jax.vmap(lambda row: core(bx.Params(), row), axis_name="rows")(x)
    np.testing.assert_array_equal(jax.vmap(layer, axis_name="rows")(x), expected)


def _lstm_twin(hidden: int, x: jax.Array) -> tuple[bx.LSTM, bx.Params]:
    graph = bx.Graph(ROOT)
    rng = bx.Rng(graph / "rng")
    core = bx.LSTM(graph / "layer", hidden, rng=rng)
    _, params = core.apply(rng.seed(bx.Params(), seed=jax.random.key(SEED)), x, None, None, False)
    return core, params.locked()


def test_lstm_initial_state_is_zeros() -> None:
    state = nn.LSTM(3, 5).initial_state(2)
    assert isinstance(state, nn.LSTMState)
    np.testing.assert_array_equal(state.hidden, jnp.zeros((2, 5), jnp.float32))
    np.testing.assert_array_equal(state.cell, jnp.zeros((2, 5), jnp.float32))
    state = nn.GRU(3, 4).initial_state(6)
    assert isinstance(state, nn.GRUState)
    np.testing.assert_array_equal(state.hidden, jnp.zeros((6, 4), jnp.float32))


def test_lstm_step_equals_core_step() -> None:
    lstm = nn.LSTM(3, 5, seed=SEED)
    core, params = _lstm_twin(5, _normal((2, 4, 3), 0))
    state = core.initial_state(params, _normal((2, 3), 0))[0]
    step = jax.jit(core.__call__)  # eager steps are compiled: compare compiled with compiled
    out, eager_state = lstm.step(_normal((2, 3), 1))  # state=None starts from zeros
    (expected, state), _ = step(params, _normal((2, 3), 1), state)
    _assert_trees_equal((out, eager_state), (expected, state))
    out, eager_state = lstm.step(_normal((2, 3), 2), eager_state)
    (expected, state), _ = step(params, _normal((2, 3), 2), state)
    _assert_trees_equal((out, eager_state), (expected, state))


def test_lstm_sequence_with_state_and_is_reset_equals_core() -> None:
    lstm = nn.LSTM(3, 5, seed=SEED)
    core, params = _lstm_twin(5, _normal((2, 4, 3), 0))
    xs = _normal((2, 4, 3), 1)
    is_reset = jnp.array([[False, False, True, False], [False, True, False, False]])
    ys, state = lstm(xs)
    (expected_ys, expected_state), _ = core.apply(params, xs, None, None, True)
    _assert_trees_equal((ys, state), (expected_ys, expected_state))
    ys, state = lstm(_normal((2, 4, 3), 2), state, is_reset)
    expected, _ = core.apply(params, _normal((2, 4, 3), 2), expected_state, is_reset, True)
    _assert_trees_equal((ys, state), expected)
    out, _ = lstm.step(_normal((2, 3), 3), state, jnp.array([True, False]))
    (expected_out, _), _ = jax.jit(core.__call__)(
        params, _normal((2, 3), 3), state, jnp.array([True, False])
    )
    np.testing.assert_array_equal(out, expected_out)


def test_gru_step_equals_core_step() -> None:
    gru = nn.GRU(3, 4, seed=SEED)
    graph = bx.Graph(ROOT)
    rng = bx.Rng(graph / "rng")
    core = bx.GRU(graph / "layer", 4, rng=rng)
    _, params = core.apply(rng.seed(bx.Params(), seed=jax.random.key(SEED)), _normal((2, 4, 3), 0))
    state = gru.initial_state(2)
    out, new_state = gru.step(_normal((2, 3), 1), state)
    expected, _ = jax.jit(core.__call__)(params.locked(), _normal((2, 3), 1), state)
    _assert_trees_equal((out, new_state), expected)


# -- Sequential ---------------------------------------------------------------------------------


def test_sequential_with_a_plain_function_equals_core_sequential() -> None:
    mlp = nn.Sequential(nn.Linear(3, 4, seed=1), jax.nn.relu, nn.Linear(4, 8, seed=2))
    graph = bx.Graph(ROOT)
    rng1, rng2 = bx.Rng(graph / "rng1"), bx.Rng(graph / "rng2")
    node = graph / "mlp"
    core = bx.Sequential(
        node,
        [bx.Linear(node / "l1", 4, rng=rng1), jax.nn.relu, bx.Linear(node / "l2", 8, rng=rng2)],
    )
    params = rng2.seed(rng1.seed(bx.Params(), seed=jax.random.key(1)), seed=jax.random.key(2))
    x = _normal((4, 3), 1)
    expected, params = core(params, x)
    np.testing.assert_array_equal(mlp(x), expected)
    np.testing.assert_array_equal(mlp[0].kernel, params[(ROOT, "mlp", "l1", "kernel")].value)
    np.testing.assert_array_equal(mlp[2].kernel, params[(ROOT, "mlp", "l2", "kernel")].value)
    assert len(mlp) == 3 and mlp[1] is jax.nn.relu and mlp[-1] is mlp[2]
    head = mlp[:2]
    assert isinstance(head, nn.Sequential) and len(head) == 2 and head[0] is mlp[0]
    np.testing.assert_array_equal(head(x), jax.nn.relu(mlp[0](x)))
    assert [layer for layer in mlp] == [mlp[0], jax.nn.relu, mlp[2]]
    assert list(mlp.state_dict()) == ["0.kernel", "0.bias", "2.kernel", "2.bias"]


def test_sequential_threads_state_of_its_layers() -> None:
    seq = nn.Sequential(nn.BatchNorm(6, seed=0), nn.Dropout(0.5, seed=1))
    seq(_normal((2, 3, 6), 1))
    assert int(seq[1].rng.counter) == 1
    assert not np.array_equal(seq[0].running_mean, jnp.zeros(6))


def test_sequential_errors() -> None:
    with pytest.raises(
        TypeError,
        match=r"nn\.Sequential: expected eager modules or callables, "
        r"got int at position 1\. Fix:",
    ):
        nn.Sequential(nn.Linear(3, 4), 3)
    with pytest.raises(IndexError, match=r"expected an index in \[-2, 2\), got 2\. Fix:"):
        nn.Sequential(nn.Linear(3, 4), jax.nn.relu)[2]
    with pytest.raises(TypeError, match=r"expected an int or a slice index, got str\. Fix:"):
        nn.Sequential(nn.Linear(3, 4))["0"]
