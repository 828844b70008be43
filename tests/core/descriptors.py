"""Every core layer declared once, for the generic suites (Haiku's descriptor style).

A `Descriptor` says how to build a layer under the root graph ``'net'`` (with
an `Rng` at ``net/rng``), how to call it, what input it takes, and the exact
parameters it must create. Generic suites (``test_generic.py`` here, and the
eager tests later) run over `DESCRIPTORS`; a renamed parameter path, a changed
shape or a flipped trainable flag fails the golden test.

Use `init(desc)` to get `(module, params, x)` with the parameters created by a
first call and then locked.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

import blox as bx

Path = tuple[str, ...]
Shape = tuple[int, ...]
Call = Callable[[Any, bx.Params, jax.Array], tuple[Any, bx.Params]]

ROOT = "net"
SEED = 0


def _promoted(dtype: Any) -> Any:
    """Layers with float32 parameters: JAX promotion of inputs with the params."""
    return jnp.result_type(dtype, jnp.float32)


def _same(dtype: Any) -> Any:
    """Parameter-free layers keep the input dtype."""
    return jnp.dtype(dtype)


def _normal(key: jax.Array, shape: Shape, dtype: Any) -> jax.Array:
    return jax.random.normal(key, shape, jnp.float32).astype(dtype)


def _ids(num: int) -> Callable[[jax.Array, Shape, Any], jax.Array]:
    def make(key: jax.Array, shape: Shape, dtype: Any) -> jax.Array:
        return jax.random.randint(key, shape, 0, num).astype(dtype)

    return make


@dataclasses.dataclass(frozen=True)
class Descriptor:
    """One layer configuration for the generic suites.

    Attributes:
        name: Test id.
        build: `build(graph, rng) -> module` (the module under `graph`).
        call: `call(module, params, x) -> (out, params)`; `out` may be a pytree.
        shape: Input shape; the leading axis is the batch.
        params: Golden `{path: shape}` of every parameter the layer creates
            (the Rng's own seed/counter excluded).
        frozen: The paths among `params` that must be non-trainable.
        dtypes: Input dtypes the layer must accept.
        out_dtype: Expected output dtype for an input dtype.
        make_input: `make_input(key, shape, dtype)`.
        rows_independent: Whether batch rows do not interact, so `vmap` over
            the batch axis equals the batched call (false for BatchNorm in
            training and for Dropout, whose mask is drawn for the whole batch).
    """

    name: str
    build: Callable[[bx.Graph, bx.Rng], Any]
    call: Call
    shape: Shape
    params: dict[Path, Shape]
    frozen: frozenset[Path] = frozenset()
    dtypes: tuple[Any, ...] = (jnp.float32, jnp.bfloat16)
    out_dtype: Callable[[Any], Any] = _promoted
    make_input: Callable[[jax.Array, Shape, Any], jax.Array] = _normal
    rows_independent: bool = True

    def __repr__(self) -> str:
        return self.name


def _plain(module: Any, params: bx.Params, x: jax.Array) -> tuple[Any, bx.Params]:
    return module(params, x)


def _training(module: Any, params: bx.Params, x: jax.Array) -> tuple[Any, bx.Params]:
    return module(params, x, is_training=True)


def _eval(module: Any, params: bx.Params, x: jax.Array) -> tuple[Any, bx.Params]:
    return module(params, x, is_training=False)


def _apply(module: Any, params: bx.Params, x: jax.Array) -> tuple[Any, bx.Params]:
    (outputs, state), params = module.apply(params, x)
    return (outputs, state), params


def _apply_outputs(module: Any, params: bx.Params, x: jax.Array) -> tuple[Any, bx.Params]:
    (outputs, _), params = module.apply(params, x)
    return outputs, params


def _pool(fn: Callable[..., jax.Array], **kwargs: Any) -> Call:
    def call(module: Any, params: bx.Params, x: jax.Array) -> tuple[Any, bx.Params]:
        return fn(x, **kwargs), params

    return call


def _p(*names: str) -> Path:
    return (ROOT, *names)


def _sequential(graph: bx.Graph, rng: bx.Rng) -> bx.Sequential:
    node = graph / "mlp"
    return bx.Sequential(
        node,
        [bx.Linear(node / "l1", 8, rng=rng), jax.nn.relu, bx.Linear(node / "l2", 2, rng=rng)],
    )


def _rnn(graph: bx.Graph, rng: bx.Rng) -> bx.RNN:
    node = graph / "rnn"
    return bx.RNN(node, bx.GRUCell(node / "cell", 4, rng=rng), reverse=True)


def _bidirectional(graph: bx.Graph, rng: bx.Rng) -> bx.Bidirectional:
    node = graph / "bi"
    f, b = node / "forward_rnn", node / "backward_rnn"
    return bx.Bidirectional(
        node,
        bx.RNN(f, bx.SimpleCell(f / "cell", 2, rng=rng)),
        bx.RNN(b, bx.SimpleCell(b / "cell", 2, rng=rng)),
    )


DESCRIPTORS: tuple[Descriptor, ...] = (
    Descriptor(
        name="linear",
        build=lambda g, rng: bx.Linear(g / "lin", 4, rng=rng),
        call=_plain,
        shape=(2, 3),
        params={_p("lin", "kernel"): (3, 4), _p("lin", "bias"): (4,)},
    ),
    Descriptor(
        name="linear_no_bias_3d",
        build=lambda g, rng: bx.Linear(g / "lin", 5, rng=rng, use_bias=False),
        call=_plain,
        shape=(2, 3, 4),
        params={_p("lin", "kernel"): (4, 5)},
    ),
    Descriptor(
        name="dense_general_two_axes",
        build=lambda g, rng: bx.DenseGeneral(g / "dg", (2, 3), axis=(-2, -1), rng=rng),
        call=_plain,
        shape=(2, 3, 4),
        params={_p("dg", "kernel"): (3, 4, 2, 3), _p("dg", "bias"): (2, 3)},
    ),
    Descriptor(
        name="einsum",
        build=lambda g, rng: bx.Einsum(g / "ein", (4, 3), "...c,cd->...d", rng=rng),
        call=_plain,
        shape=(2, 4),
        params={_p("ein", "kernel"): (4, 3), _p("ein", "bias"): (3,)},
    ),
    Descriptor(
        name="bias_identity_scaler",
        build=lambda g, rng: bx.Sequential(
            g / "seq",
            [bx.Bias(g / "b", (None, 3), rng=rng), bx.Identity(g / "id"), bx.Scaler(g / "s", 3)],
        ),
        call=_plain,
        shape=(2, 4, 3),
        params={_p("b", "bias"): (1, 3), _p("s", "scale"): (3,)},
    ),
    Descriptor(
        name="embed",
        build=lambda g, rng: bx.Embed(g / "emb", 7, 3, rng=rng),
        call=_plain,
        shape=(2, 5),
        params={_p("emb", "embedding"): (7, 3)},
        dtypes=(jnp.int32, jnp.uint8),
        make_input=_ids(7),
    ),
    Descriptor(
        name="conv1d",
        build=lambda g, rng: bx.Conv(g / "conv", 3, 4, rng=rng),
        call=_plain,
        shape=(2, 8, 3),
        params={_p("conv", "kernel"): (3, 3, 4), _p("conv", "bias"): (4,)},
    ),
    Descriptor(
        name="conv2d_strided_dilated",
        build=lambda g, rng: bx.Conv(
            g / "conv", (3, 2), 4, rng=rng, strides=(2, 1), kernel_dilation=(1, 2)
        ),
        call=_plain,
        shape=(2, 7, 6, 3),
        params={_p("conv", "kernel"): (3, 2, 3, 4), _p("conv", "bias"): (4,)},
    ),
    Descriptor(
        name="conv2d_groups",
        build=lambda g, rng: bx.Conv(g / "conv", (3, 3), 6, rng=rng, feature_group_count=2),
        call=_plain,
        shape=(2, 5, 5, 4),
        params={_p("conv", "kernel"): (3, 3, 2, 6), _p("conv", "bias"): (6,)},
    ),
    Descriptor(
        name="conv2d_input_dilation_same",
        build=lambda g, rng: bx.Conv(
            g / "conv", (3, 3), 4, rng=rng, input_dilation=2, padding="SAME"
        ),
        call=_plain,
        shape=(2, 4, 5, 3),
        params={_p("conv", "kernel"): (3, 3, 3, 4), _p("conv", "bias"): (4,)},
    ),
    Descriptor(
        name="conv_transpose2d",
        build=lambda g, rng: bx.ConvTranspose(g / "up", (3, 3), 4, rng=rng, strides=2),
        call=_plain,
        shape=(2, 4, 4, 3),
        params={_p("up", "kernel"): (3, 3, 4, 3), _p("up", "bias"): (4,)},
    ),
    Descriptor(
        name="conv_transpose2d_groups",
        build=lambda g, rng: bx.ConvTranspose(
            g / "up", (3, 3), 4, rng=rng, strides=2, feature_group_count=2
        ),
        call=_plain,
        shape=(2, 4, 4, 6),
        params={_p("up", "kernel"): (3, 3, 4, 3), _p("up", "bias"): (4,)},
    ),
    Descriptor(
        name="conv_local2d",
        build=lambda g, rng: bx.ConvLocal(g / "local", (2, 2), 3, rng=rng, padding="VALID"),
        call=_plain,
        shape=(2, 4, 5, 2),
        params={_p("local", "kernel"): (3, 4, 8, 3), _p("local", "bias"): (3, 4, 3)},
    ),
    Descriptor(
        name="dropout",
        build=lambda g, rng: bx.Dropout(g / "drop", 0.3, rng=rng),
        call=_training,
        shape=(4, 6),
        params={},
        out_dtype=_same,
        rows_independent=False,
    ),
    Descriptor(
        name="layer_norm",
        build=lambda g, rng: bx.LayerNorm(g / "ln"),
        call=_plain,
        shape=(3, 5),
        params={_p("ln", "scale"): (5,), _p("ln", "bias"): (5,)},
    ),
    Descriptor(
        name="rms_norm",
        build=lambda g, rng: bx.RMSNorm(g / "rms"),
        call=_plain,
        shape=(3, 2, 5),
        params={_p("rms", "scale"): (5,)},
    ),
    Descriptor(
        name="group_norm",
        build=lambda g, rng: bx.GroupNorm(g / "gn", num_groups=2),
        call=_plain,
        shape=(2, 3, 4),
        params={_p("gn", "scale"): (4,), _p("gn", "bias"): (4,)},
    ),
    Descriptor(
        name="instance_norm_channels_first",
        build=lambda g, rng: bx.InstanceNorm(g / "in", feature_axes=1),
        call=_plain,
        shape=(2, 3, 5),
        params={_p("in", "scale"): (3,), _p("in", "bias"): (3,)},
    ),
    Descriptor(
        name="weight_norm_linear",
        build=lambda g, rng: bx.WeightNorm(g / "wn", bx.Linear(g / "dense", 3, rng=rng)),
        call=_plain,
        shape=(2, 4),
        params={
            _p("dense", "kernel"): (4, 3),
            _p("dense", "bias"): (3,),
            _p("wn", "dense/kernel/scale"): (3,),
        },
    ),
    Descriptor(
        name="spectral_norm_linear_train",
        build=lambda g, rng: bx.SpectralNorm(g / "sn", bx.Linear(g / "dense", 3, rng=rng), rng=rng),
        call=_training,
        shape=(2, 4),
        params={
            _p("dense", "kernel"): (4, 3),
            _p("dense", "bias"): (3,),
            _p("sn", "dense/kernel/u"): (1, 3),
            _p("sn", "dense/kernel/sigma"): (),
        },
        frozen=frozenset({_p("sn", "dense/kernel/u"), _p("sn", "dense/kernel/sigma")}),
    ),
    Descriptor(
        name="batch_norm_train",
        build=lambda g, rng: bx.BatchNorm(g / "bn"),
        call=_training,
        shape=(6, 2, 3),
        params={
            _p("bn", "running_mean"): (3,),
            _p("bn", "running_var"): (3,),
            _p("bn", "scale"): (3,),
            _p("bn", "bias"): (3,),
        },
        frozen=frozenset({_p("bn", "running_mean"), _p("bn", "running_var")}),
        rows_independent=False,
    ),
    Descriptor(
        name="batch_norm_unbiased_channels_first",
        build=lambda g, rng: bx.BatchNorm(g / "bn", unbiased_running_var=True, channels_first=True),
        call=_training,
        shape=(4, 3, 2),
        params={
            _p("bn", "running_mean"): (3,),
            _p("bn", "running_var"): (3,),
            _p("bn", "scale"): (3,),
            _p("bn", "bias"): (3,),
        },
        frozen=frozenset({_p("bn", "running_mean"), _p("bn", "running_var")}),
        rows_independent=False,
    ),
    Descriptor(
        name="batch_norm_eval",
        build=lambda g, rng: bx.BatchNorm(g / "bn"),
        call=_eval,
        shape=(6, 3),
        params={
            _p("bn", "running_mean"): (3,),
            _p("bn", "running_var"): (3,),
            _p("bn", "scale"): (3,),
            _p("bn", "bias"): (3,),
        },
        frozen=frozenset({_p("bn", "running_mean"), _p("bn", "running_var")}),
    ),
    Descriptor(
        name="sequential_mlp",
        build=_sequential,
        call=_plain,
        shape=(2, 3),
        params={
            _p("mlp", "l1", "kernel"): (3, 8),
            _p("mlp", "l1", "bias"): (8,),
            _p("mlp", "l2", "kernel"): (8, 2),
            _p("mlp", "l2", "bias"): (2,),
        },
    ),
    Descriptor(
        name="lstm_apply",
        build=lambda g, rng: bx.LSTM(g / "lstm", 5, rng=rng),
        call=_apply,
        shape=(2, 4, 3),
        params={_p("lstm", "gates", "kernel"): (8, 20), _p("lstm", "gates", "bias"): (20,)},
    ),
    Descriptor(
        name="gru_apply",
        build=lambda g, rng: bx.GRU(g / "gru", 5, rng=rng),
        call=_apply,
        shape=(2, 4, 3),
        params={
            _p("gru", "gates", "kernel"): (8, 10),
            _p("gru", "gates", "bias"): (10,),
            _p("gru", "candidate", "kernel"): (8, 5),
            _p("gru", "candidate", "bias"): (5,),
        },
    ),
    Descriptor(
        name="multi_head_attention",
        build=lambda g, rng: bx.MultiHeadAttention(g / "mha", 2, rng=rng),
        call=_plain,
        shape=(2, 3, 4),
        params={
            **{_p("mha", n, "kernel"): (4, 2, 2) for n in ("query", "key", "value")},
            **{_p("mha", n, "bias"): (2, 2) for n in ("query", "key", "value")},
            _p("mha", "out", "kernel"): (2, 2, 4),
            _p("mha", "out", "bias"): (4,),
        },
    ),
    Descriptor(
        name="self_attention_normalize_qk",
        build=lambda g, rng: bx.SelfAttention(
            g / "att", 2, qkv_features=6, out_features=3, normalize_qk=True, rng=rng
        ),
        call=_plain,
        shape=(2, 3, 4),
        params={
            **{_p("att", n, "kernel"): (4, 2, 3) for n in ("query", "key", "value")},
            **{_p("att", n, "bias"): (2, 3) for n in ("query", "key", "value")},
            _p("att", "query_ln", "scale"): (3,),
            _p("att", "key_ln", "scale"): (3,),
            _p("att", "out", "kernel"): (2, 3, 3),
            _p("att", "out", "bias"): (3,),
        },
    ),
    Descriptor(
        name="simple_cell_apply",
        build=lambda g, rng: bx.SimpleCell(g / "cell", 4, rng=rng),
        call=_apply,
        shape=(2, 3, 3),
        params={
            _p("cell", "i", "kernel"): (3, 4),
            _p("cell", "i", "bias"): (4,),
            _p("cell", "h", "kernel"): (4, 4),
        },
    ),
    Descriptor(
        name="lstm_cell_apply",
        build=lambda g, rng: bx.LSTMCell(g / "cell", 4, rng=rng),
        call=_apply,
        shape=(2, 3, 3),
        params={
            **{_p("cell", "i" + k, "kernel"): (3, 4) for k in "ifgo"},
            **{_p("cell", "h" + k, "kernel"): (4, 4) for k in "ifgo"},
            **{_p("cell", "h" + k, "bias"): (4,) for k in "ifgo"},
        },
    ),
    Descriptor(
        name="optimized_lstm_cell_apply",
        build=lambda g, rng: bx.OptimizedLSTMCell(g / "cell", 4, rng=rng),
        call=_apply,
        shape=(2, 3, 3),
        params={
            **{_p("cell", "i" + k, "kernel"): (3, 4) for k in "ifgo"},
            **{_p("cell", "h" + k, "kernel"): (4, 4) for k in "ifgo"},
            **{_p("cell", "h" + k, "bias"): (4,) for k in "ifgo"},
        },
    ),
    Descriptor(
        name="gru_cell_apply",
        build=lambda g, rng: bx.GRUCell(g / "cell", 4, rng=rng),
        call=_apply,
        shape=(2, 3, 3),
        params={
            **{_p("cell", "i" + k, "kernel"): (3, 4) for k in "rzn"},
            **{_p("cell", "i" + k, "bias"): (4,) for k in "rzn"},
            **{_p("cell", "h" + k, "kernel"): (4, 4) for k in "rzn"},
            _p("cell", "hn", "bias"): (4,),
        },
    ),
    Descriptor(
        name="mgu_cell_apply",
        build=lambda g, rng: bx.MGUCell(g / "cell", 4, rng=rng),
        call=_apply,
        shape=(2, 3, 3),
        params={
            **{_p("cell", "i" + k, "kernel"): (3, 4) for k in "fn"},
            **{_p("cell", "i" + k, "bias"): (4,) for k in "fn"},
            **{_p("cell", "h" + k, "kernel"): (4, 4) for k in "fn"},
            _p("cell", "hn", "bias"): (4,),
        },
    ),
    Descriptor(
        name="conv_lstm_cell_apply",
        build=lambda g, rng: bx.ConvLSTMCell(g / "cell", 2, (3,), rng=rng),
        call=_apply,
        shape=(2, 2, 4, 3),
        params={
            _p("cell", "ih", "kernel"): (3, 3, 8),
            _p("cell", "ih", "bias"): (8,),
            _p("cell", "hh", "kernel"): (3, 2, 8),
            _p("cell", "hh", "bias"): (8,),
        },
    ),
    Descriptor(
        name="rnn_gru_cell_reverse",
        build=_rnn,
        call=_plain,
        shape=(2, 3, 3),
        params={
            **{_p("rnn", "cell", "i" + k, "kernel"): (3, 4) for k in "rzn"},
            **{_p("rnn", "cell", "i" + k, "bias"): (4,) for k in "rzn"},
            **{_p("rnn", "cell", "h" + k, "kernel"): (4, 4) for k in "rzn"},
            _p("rnn", "cell", "hn", "bias"): (4,),
        },
    ),
    Descriptor(
        name="bidirectional_simple_cells",
        build=_bidirectional,
        call=_plain,
        shape=(2, 3, 3),
        params={
            **{_p("bi", d, "cell", "i", "kernel"): (3, 2) for d in ("forward_rnn", "backward_rnn")},
            **{_p("bi", d, "cell", "i", "bias"): (2,) for d in ("forward_rnn", "backward_rnn")},
            **{_p("bi", d, "cell", "h", "kernel"): (2, 2) for d in ("forward_rnn", "backward_rnn")},
        },
    ),
    Descriptor(
        name="stacked_rnn_bidirectional_lstm",
        build=lambda g, rng: bx.StackedRNN(
            g / "stack", bx.LSTM, 2, rng=rng, num_layers=2, bidirectional=True
        ),
        call=_apply_outputs,  # the state's batch axis is 1, behind the layers'
        shape=(2, 3, 3),
        params={
            _p("stack", "l0", "gates", "kernel"): (5, 8),
            _p("stack", "l0", "gates", "bias"): (8,),
            _p("stack", "l0_reverse", "gates", "kernel"): (5, 8),
            _p("stack", "l0_reverse", "gates", "bias"): (8,),
            _p("stack", "l1", "gates", "kernel"): (6, 8),
            _p("stack", "l1", "gates", "bias"): (8,),
            _p("stack", "l1_reverse", "gates", "kernel"): (6, 8),
            _p("stack", "l1_reverse", "gates", "bias"): (8,),
        },
    ),
    Descriptor(
        name="max_pool",
        build=lambda g, rng: None,
        call=_pool(bx.max_pool, window_shape=(2, 2)),
        shape=(2, 4, 6, 3),
        params={},
        out_dtype=_same,
    ),
    Descriptor(
        name="min_pool_strided",
        build=lambda g, rng: None,
        call=_pool(bx.min_pool, window_shape=3, strides=2, padding="SAME"),
        shape=(2, 7, 3),
        params={},
        out_dtype=_same,
    ),
    Descriptor(
        name="avg_pool_same",
        build=lambda g, rng: None,
        call=_pool(bx.avg_pool, window_shape=(2, 3), strides=1, padding="SAME"),
        shape=(2, 4, 5, 3),
        params={},
        out_dtype=_same,
    ),
    Descriptor(
        name="sum_pool_dilated",
        build=lambda g, rng: None,
        call=_pool(bx.sum_pool, window_shape=2, strides=1, window_dilation=2),
        shape=(2, 7, 3),
        params={},
        out_dtype=_same,
    ),
)


def make_input(desc: Descriptor, dtype: Any = None, seed: int = 1) -> jax.Array:
    """The descriptor's input, in `dtype` (default: its first dtype)."""
    dtype = desc.dtypes[0] if dtype is None else dtype
    return desc.make_input(jax.random.key(seed), desc.shape, dtype)


def build(desc: Descriptor) -> tuple[Any, bx.Params]:
    """A fresh graph with the layer and an Rng; returns `(module, seeded params)`."""
    graph = bx.Graph(ROOT)
    rng = bx.Rng(graph / "rng")
    module = desc.build(graph, rng)
    return module, rng.seed(bx.Params(), seed=SEED)


def _cache_key(desc: Descriptor, dtype: Any) -> tuple[str, str]:
    return desc.name, jnp.dtype(desc.dtypes[0] if dtype is None else dtype).name


_FIRST_CALLS: dict[tuple[str, str], tuple[Any, bx.Params, jax.Array, Any]] = {}
_LOCKED: dict[tuple[str, str], bx.Params] = {}


def first_call(desc: Descriptor, dtype: Any = None) -> tuple[Any, bx.Params, jax.Array, Any]:
    """The eager call that creates the layer's parameters, made once per process.

    Returns:
        `(module, fresh, x, result)`: the module, the seeded params before the
        call (no layer parameters yet), the input, and the call's
        `(out, params)`. Modules are stateless and params immutable, so tests
        share these instead of compiling the initialisers again each time.
    """
    cache_key = _cache_key(desc, dtype)
    if cache_key not in _FIRST_CALLS:
        dtype = desc.dtypes[0] if dtype is None else dtype
        module, fresh = build(desc)
        x = make_input(desc, dtype)
        _FIRST_CALLS[cache_key] = (module, fresh, x, desc.call(module, fresh, x))
    return _FIRST_CALLS[cache_key]


def init(desc: Descriptor, dtype: Any = None) -> tuple[Any, bx.Params, jax.Array]:
    """Builds the layer, creates its parameters with one eager call, locks them.

    The call is `first_call(desc, dtype)`'s, cached per descriptor and dtype.

    Returns:
        `(module, params, x)`: the module, locked params (including the Rng
        state at ``net/rng``) and the input used.
    """
    module, _, x, (_, params) = first_call(desc, dtype)
    cache_key = _cache_key(desc, dtype)
    if cache_key not in _LOCKED:
        _LOCKED[cache_key] = params.locked()
    return module, _LOCKED[cache_key], x
