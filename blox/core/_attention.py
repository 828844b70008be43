"""Dot-product attention: the functions, masks, RoPE, and `MultiHeadAttention`.

Shapes follow flax.linen: queries, keys and values are
`(*batch, length, num_heads, head_dim)` and attention weights are
`(*batch, num_heads, q_length, kv_length)`. A mask is `True` (or nonzero)
where a query may attend; a bias is added to the logits. Both broadcast to the
weights' shape.

Without dropout (and without an explicit `precision`), attention runs through
`jax.nn.dot_product_attention`, so an accelerator can use its fused kernel;
with dropout, or when the weights are asked for, it runs the textbook
`softmax(q k^T / sqrt(d) + bias, masked) v` itself, as flax does.

`MultiHeadAttention` keeps flax.linen's parameter tree (`query`, `key`,
`value`, `out`, and `query_ln`/`key_ln`), so a flax tree copies over by path.
With `decode=True` its key/value cache (`cached_key`, `cached_value`,
`cache_index`) is ordinary non-trainable params, made by `init_cache` and
advanced by each call: the generation loop threads it like any other state.
"""

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._dtypes import promote_dtype
from ._graph import Graph
from ._module import Initializer, Module, _lead, _where
from ._norm import LayerNorm
from ._params import Params

_DEFAULT_KERNEL_INIT = jax.nn.initializers.lecun_normal()
_DEFAULT_BIAS_INIT = jax.nn.initializers.zeros
_CACHE_TAG = {"tag": "attention_cache"}
_CACHE_NAMES = ("cached_key", "cached_value", "cache_index")


# -- masks ---------------------------------------------------------------------------


def make_attention_mask(
    query_input: jax.Array,
    key_input: jax.Array,
    pairwise_fn: Callable[..., Any] = jnp.multiply,
    extra_batch_dims: int = 0,
    dtype: Any = jnp.float32,
) -> jax.Array:
    """A mask from per-position query and key values: `pairwise_fn(q[:, None], k[None, :])`.

    Args:
        query_input: `(*batch, q_length)`, e.g. nonzero where a token is real.
        key_input: `(*batch, kv_length)`.
        pairwise_fn: Elementwise function of the two broadcast operands.
        extra_batch_dims: Leading unit axes to add.
        dtype: The mask's dtype.

    Returns:
        `(*extra, *batch, 1, q_length, kv_length)`.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> real = jnp.array([[1, 1, 0]])
        >>> bx.make_attention_mask(real, real)[0, 0].astype(int).tolist()
        [[1, 1, 0], [1, 1, 0], [0, 0, 0]]
    """
    mask = pairwise_fn(jnp.expand_dims(query_input, -1), jnp.expand_dims(key_input, -2))
    mask = jnp.expand_dims(mask, -3)
    mask = mask.reshape((1,) * extra_batch_dims + mask.shape)
    return mask.astype(dtype)


def make_causal_mask(
    x: jax.Array, extra_batch_dims: int = 0, dtype: Any = jnp.float32
) -> jax.Array:
    """The mask letting position `i` attend to positions `j <= i`.

    Args:
        x: `(*batch, length)`; only its shape is read.
        extra_batch_dims: Leading unit axes to add.
        dtype: The mask's dtype.

    Returns:
        `(*extra, *batch, 1, length, length)`.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> bx.make_causal_mask(jnp.zeros((1, 3)))[0, 0].astype(int).tolist()
        [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    """
    positions = jnp.broadcast_to(jnp.arange(x.shape[-1], dtype=jnp.int32), x.shape)
    return make_attention_mask(positions, positions, jnp.greater_equal, extra_batch_dims, dtype)


def combine_masks(*masks: jax.Array | None, dtype: Any = jnp.float32) -> jax.Array | None:
    """Logical AND of the given masks (`None` entries skipped).

    Args:
        *masks: Masks of one rank, broadcastable to each other, or `None`.
        dtype: The result's dtype.

    Returns:
        The combined mask, or `None` when every mask is `None`.

    Raises:
        ValueError: If the masks differ in rank.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> pad = bx.make_attention_mask(jnp.array([[1, 1, 0]]), jnp.array([[1, 1, 0]]))
        >>> causal = bx.make_causal_mask(jnp.zeros((1, 3)))
        >>> bx.combine_masks(pad, None, causal)[0, 0].astype(int).tolist()
        [[1, 0, 0], [1, 1, 0], [0, 0, 0]]
    """
    given = [m for m in masks if m is not None]
    if not given:
        return None
    ranks = [jnp.ndim(m) for m in given]
    if len(set(ranks)) != 1:
        raise ValueError(
            f"bx.combine_masks: expected masks of one rank, got ranks {ranks}. Fix: "
            "add the missing leading axes, e.g. mask[None]."
        )
    mask = given[0]
    for other in given[1:]:
        mask = jnp.logical_and(mask, other)
    return jnp.asarray(mask).astype(dtype)


# -- the attention functions ---------------------------------------------------------------


def _check_qkv(where: str, query: Any, key: Any, value: Any = None) -> None:
    for name, array in (("query", query), ("key", key), ("value", value)):
        if array is not None and jnp.ndim(array) < 3:
            raise ValueError(
                f"{where}: expected {name} of rank >= 3 (*batch, length, num_heads, "
                f"head_dim), got shape {tuple(jnp.shape(array))}. Fix: split the "
                "features into heads, e.g. x.reshape(*x.shape[:-1], heads, -1)."
            )
    q, k = jnp.shape(query), jnp.shape(key)
    if len(q) != len(k) or q[:-3] != k[:-3] or q[-2:] != k[-2:]:
        raise ValueError(
            f"{where}: expected query and key with the same batch axes, num_heads and "
            f"head_dim (*batch, length, num_heads, head_dim), got {q} and {k}. Fix: "
            "project both to the same number of heads and head size."
        )
    if value is not None:
        v = jnp.shape(value)
        if len(v) != len(k) or v[:-1] != k[:-1]:
            raise ValueError(
                f"{where}: expected value with key's batch axes, length and num_heads "
                f"{k[:-1]}, got shape {v}. Fix: keys and values come from the same "
                "positions; only their last axis may differ."
            )


def _weights_shape(query: Any, key: Any) -> tuple[int, ...]:
    q, k = jnp.shape(query), jnp.shape(key)
    return (*q[:-3], q[-2], q[-3], k[-3])


def _fit(where: str, name: str, array: Any, shape: tuple[int, ...]) -> jax.Array | None:
    """`array` with leading unit axes up to the weights' rank, checked to broadcast."""
    if array is None:
        return None
    array = jnp.asarray(array)
    try:
        if array.ndim > len(shape) or np.broadcast_shapes(array.shape, shape) != shape:
            raise ValueError
    except ValueError:
        raise ValueError(
            f"{where}: expected a {name} broadcastable to (*batch, num_heads, q_length, "
            f"kv_length) = {shape}, got shape {array.shape}. Fix: build it with "
            f"bx.make_attention_mask / bx.make_causal_mask, or give it unit axes where "
            "it does not vary, e.g. (batch, 1, q_length, kv_length)."
        ) from None
    return _lead(array, len(shape))


def _check_dropout(where: str, rate: float, rng: Any, deterministic: bool) -> bool:
    if not isinstance(rate, int | float) or not 0.0 <= rate < 1.0:
        raise ValueError(
            f"{where}: expected dropout_rate in [0, 1), got {rate!r}. Fix: pass the "
            "probability of dropping an attention weight, e.g. 0.1."
        )
    active = not deterministic and rate > 0.0
    if active and rng is None:
        raise ValueError(
            f"{where}: expected a dropout_rng with deterministic=False and "
            f"dropout_rate={rate}, got None. Fix: pass dropout_rng=jax.random.key(...), "
            "or deterministic=True."
        )
    return active


def _weights(
    query: jax.Array,
    key: jax.Array,
    bias: jax.Array | None,
    mask: jax.Array | None,
    broadcast_dropout: bool,
    dropout_rng: Any,
    dropout_rate: float,
    dropout: bool,
    precision: Any,
) -> jax.Array:
    """The textbook weights; inputs already promoted, checked and fitted."""
    dtype = query.dtype
    query = query / jnp.sqrt(query.shape[-1]).astype(dtype)
    logits = jnp.einsum("...qhd,...khd->...hqk", query, key, precision=precision)
    if bias is not None:
        logits = logits + bias
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits).astype(dtype)
    if dropout:
        keep_prob = 1.0 - dropout_rate
        # A broadcast mask is shared by the batch and head axes, as in flax.
        shape = (1,) * (key.ndim - 2) + weights.shape[-2:] if broadcast_dropout else weights.shape
        keep = jax.random.bernoulli(dropout_rng, keep_prob, shape)
        weights = weights * (keep.astype(dtype) / jnp.asarray(keep_prob, dtype))
    return weights


def dot_product_attention_weights(
    query: jax.Array,
    key: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    broadcast_dropout: bool = True,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    deterministic: bool = True,
    dtype: Any = None,
    precision: Any = None,
) -> jax.Array:
    """Attention weights `softmax(query key^T / sqrt(head_dim) + bias)` where `mask`.

    Masked logits are set to the dtype's most negative value before the
    softmax (flax's rule), so a fully masked row is uniform. With dropout the
    weights are dropped and rescaled by `1 / (1 - dropout_rate)`.

    Args:
        query: `(*batch, q_length, num_heads, head_dim)`.
        key: `(*batch, kv_length, num_heads, head_dim)`.
        bias: Added to the logits; broadcastable to
            `(*batch, num_heads, q_length, kv_length)`.
        mask: Boolean or 0/1, `True` where attending is allowed; broadcastable
            like `bias`.
        broadcast_dropout: Share one dropout mask over the batch and head axes.
        dropout_rate: Probability of dropping a weight.
        dropout_rng: Key for the dropout mask.
        deterministic: No dropout when `True`.
        dtype: Compute dtype (`None`: promote the inputs).
        precision: `jax.lax.Precision` of the einsum.

    Returns:
        `(*batch, num_heads, q_length, kv_length)`.

    Raises:
        ValueError: On mismatched query/key shapes, a mask or bias that does
            not broadcast, a bad rate, or dropout without a key.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> q = k = jnp.ones((1, 3, 2, 4))
        >>> w = bx.dot_product_attention_weights(q, k, mask=bx.make_causal_mask(jnp.ones((1, 3))))
        >>> w.shape, [round(v, 3) for v in w[0, 0, 2].tolist()]
        ((1, 2, 3, 3), [0.333, 0.333, 0.333])
    """
    where = "bx.dot_product_attention_weights"
    _check_qkv(where, query, key)
    shape = _weights_shape(query, key)
    bias, mask = _fit(where, "bias", bias, shape), _fit(where, "mask", mask, shape)
    dropout = _check_dropout(where, dropout_rate, dropout_rng, deterministic)
    query, key = promote_dtype(query, key, dtype=dtype)
    return _weights(
        query, key, bias, mask, broadcast_dropout, dropout_rng, dropout_rate, dropout, precision
    )


def _fused(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None,
    mask: jax.Array | None,
) -> jax.Array:
    """`jax.nn.dot_product_attention` over any number of batch axes (even none)."""
    batch = query.shape[:-3]
    size = math.prod(batch)

    def four(x: jax.Array) -> jax.Array:
        return x.reshape((size, *x.shape[-3:]))

    def logits_like(x: jax.Array | None) -> jax.Array | None:
        # jax.nn wants (batch, heads or 1, q, kv): keep unit batch/head axes unit.
        if x is None:
            return None
        lead_shape = x.shape[: len(batch)]
        b = 1 if all(n == 1 for n in lead_shape) else size
        h = 1 if x.shape[-3] == 1 else query.shape[-2]
        target = (*(batch if b != 1 else (1,) * len(batch)), h, query.shape[-3], key.shape[-3])
        return jnp.broadcast_to(x, target).reshape((b, h, *target[-2:]))

    out = jax.nn.dot_product_attention(
        four(query),
        four(key),
        four(value),
        bias=logits_like(bias),
        mask=None if mask is None else logits_like(mask.astype(bool)),
    )
    return out.reshape((*batch, *out.shape[1:]))


def dot_product_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    broadcast_dropout: bool = True,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    deterministic: bool = True,
    dtype: Any = None,
    precision: Any = None,
) -> jax.Array:
    """Attention: `dot_product_attention_weights(query, key, ...) @ value` per head.

    Without dropout, with `precision=None` and values of the queries' head
    size, this calls `jax.nn.dot_product_attention` (fused kernels on
    accelerators; equal to the textbook formula up to float rounding);
    otherwise it computes the weights as `dot_product_attention_weights` does.

    Args:
        query: `(*batch, q_length, num_heads, head_dim)`.
        key: `(*batch, kv_length, num_heads, head_dim)`.
        value: `(*batch, kv_length, num_heads, v_head_dim)`.
        bias: Added to the logits; broadcastable to
            `(*batch, num_heads, q_length, kv_length)`.
        mask: `True` where attending is allowed; broadcastable like `bias`.
        broadcast_dropout: Share one dropout mask over batch and head axes.
        dropout_rate: Probability of dropping a weight.
        dropout_rng: Key for the dropout mask.
        deterministic: No dropout when `True`.
        dtype: Compute dtype (`None`: promote the inputs).
        precision: `jax.lax.Precision` of the einsums.

    Returns:
        `(*batch, q_length, num_heads, v_head_dim)`.

    Raises:
        ValueError: On mismatched shapes, a mask or bias that does not
            broadcast, a bad rate, or dropout without a key.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import blox as bx
        >>> q, k, v = jax.random.normal(jax.random.key(0), (3, 2, 5, 4, 8))
        >>> bx.dot_product_attention(q, k, v).shape
        (2, 5, 4, 8)
    """
    where = "bx.dot_product_attention"
    _check_qkv(where, query, key, value)
    shape = _weights_shape(query, key)
    bias, mask = _fit(where, "bias", bias, shape), _fit(where, "mask", mask, shape)
    dropout = _check_dropout(where, dropout_rate, dropout_rng, deterministic)
    query, key, value = promote_dtype(query, key, value, dtype=dtype)
    # jax.nn needs values of the queries' head size; other sizes go the textbook way.
    if not dropout and precision is None and value.shape[-1] == query.shape[-1]:
        return _fused(query, key, value, bias, mask)
    weights = _weights(
        query, key, bias, mask, broadcast_dropout, dropout_rng, dropout_rate, dropout, precision
    )
    return jnp.einsum("...hqk,...khd->...qhd", weights, value, precision=precision)


def apply_rotary_embedding(
    x: jax.Array, positions: jax.Array, *, max_wavelength: float = 10_000
) -> jax.Array:
    """Rotary position embedding (RoPE) of queries or keys.

    The head axis is split into halves `x1, x2`; pair `i` rotates by the angle
    `positions * max_wavelength ** (-2 i / head_dim)`:
    `[x1 cos - x2 sin, x2 cos + x1 sin]`. The dot product of a rotated query
    and key then depends on their positions only through the difference.
    Computed in float32, returned in `x`'s dtype.

    Args:
        x: `(*batch, length, num_heads, head_dim)`, `head_dim` even.
        positions: `(*batch, length)` or `(length,)`, integer or float.
        max_wavelength: The longest wavelength.

    Returns:
        Same shape and dtype as `x`.

    Raises:
        ValueError: If `head_dim` is odd, `x` has rank < 3, or `positions`
            does not broadcast to `x.shape[:-2]`.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> x = jnp.ones((1, 4, 2, 8))
        >>> y = bx.apply_rotary_embedding(x, jnp.arange(4))
        >>> y.shape, bool(jnp.allclose(y[:, 0], x[:, 0]))
        ((1, 4, 2, 8), True)
    """
    where = "bx.apply_rotary_embedding"
    shape = jnp.shape(x)
    if len(shape) < 3 or shape[-1] % 2:
        raise ValueError(
            f"{where}: expected x of shape (*batch, length, num_heads, head_dim) with an "
            f"even head_dim, got {tuple(shape)}. Fix: use an even head size."
        )
    positions = jnp.asarray(positions)
    target = tuple(shape[:-2])
    try:
        fits = positions.ndim <= len(target)
        fits = fits and np.broadcast_shapes(positions.shape, target) == target
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"{where}: expected positions broadcastable to (*batch, length) = {target}, "
            f"got shape {positions.shape}. Fix: pass one position per token, e.g. "
            "jnp.arange(length)."
        )
    half = shape[-1] // 2
    inverse = max_wavelength ** (-jnp.arange(half, dtype=jnp.float32) * 2 / shape[-1])
    angle = _lead(positions.astype(jnp.float32), len(target))[..., None, None]
    angle = angle * _lead(inverse, angle.ndim)
    sin, cos = jnp.sin(angle), jnp.cos(angle)
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


# -- the layer -------------------------------------------------------------------------------


class _Projection(Module):
    """flax's `DenseGeneral` as attention uses it: contract the last `len(in)` axes.

    The kernel is `(*in, *out)` and is initialised as the flat matrix
    `(prod(in), prod(out))` and reshaped (so fan-in is the full contraction,
    as in flax); the bias is `(*out,)`.
    """

    def __init__(
        self,
        graph: Graph,
        rng: Any,
        use_bias: bool,
        kernel_init: Initializer,
        bias_init: Initializer,
        dtype: Any,
        param_dtype: Any,
        precision: Any,
        kernel_metadata: dict[str, Any] | None,
        bias_metadata: dict[str, Any] | None,
    ) -> None:
        super().__init__(graph)
        self.rng = rng
        self.use_bias = use_bias
        self.kernel_init = kernel_init
        self.bias_init = bias_init
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.precision = precision
        self.kernel_metadata = kernel_metadata
        self.bias_metadata = bias_metadata

    def __call__(
        self, params: Params, inputs: jax.Array, n_in: int, features: tuple[int, ...]
    ) -> tuple[jax.Array, Params]:
        contract = tuple(inputs.shape[-n_in:])
        flat = (math.prod(contract), math.prod(features))

        def kernel_init(key: Any, shape: tuple[int, ...], dtype: Any) -> jax.Array:
            return jnp.reshape(self.kernel_init(key, flat, dtype), shape)

        kernel, params = self.get_param(
            params,
            "kernel",
            contract + features,
            kernel_init,
            dtype=self.param_dtype,
            metadata=self.kernel_metadata,
            rng=self.rng,
        )
        bias = None
        if self.use_bias:

            def bias_init(key: Any, shape: tuple[int, ...], dtype: Any) -> jax.Array:
                return jnp.reshape(self.bias_init(key, (flat[1],), dtype), shape)

            bias, params = self.get_param(
                params,
                "bias",
                features,
                bias_init,
                dtype=self.param_dtype,
                metadata=self.bias_metadata,
                rng=self.rng,
            )
        inputs, kernel, bias = promote_dtype(inputs, kernel, bias, dtype=self.dtype)
        axes = tuple(range(inputs.ndim - n_in, inputs.ndim))
        out = jax.lax.dot_general(
            inputs, kernel, ((axes, tuple(range(n_in))), ((), ())), precision=self.precision
        )
        if bias is not None:
            out = out + _lead(bias, out.ndim)
        return out, params


class MultiHeadAttention(Module):
    """Multi-head dot-product attention with flax.linen's parameters and semantics.

    `query`, `key` and `value` project their inputs to
    `(*batch, length, num_heads, head_dim)` (kernels `(in, num_heads,
    head_dim)`, biases `(num_heads, head_dim)`); with `normalize_qk`,
    `query_ln`/`key_ln` (LayerNorm without bias, epsilon 1e-6) normalise the
    projected queries and keys; `dot_product_attention` mixes the values; and
    `out` (kernel `(num_heads, head_dim, out_features)`) projects back. The
    names, nesting and shapes are those of flax.linen's
    `MultiHeadDotProductAttention`, so its params copy over by path.

    With `decode=True` the layer decodes autoregressively from a cache:
    `params = mha.init_cache(params, batch_shape, max_length)` creates
    `cached_key`/`cached_value` `(*batch, max_length, num_heads, head_dim)`
    and `cache_index` (non-trainable), and each call with `L >= 1` new
    positions writes their keys and values at `cache_index`, attends causally
    over everything cached so far, and advances the index by `L`. Decoding a
    sequence token by token equals the causal forward over the whole of it.

    Args:
        graph: This module's node.
        num_heads: Number of heads; must divide `qkv_features`.
        qkv_features: Size of the projected queries/keys/values (default: the
            query inputs' feature size).
        out_features: Output size (default: the query inputs' feature size).
        dropout_rate: Dropout on the attention weights while training.
        broadcast_dropout: One dropout mask shared by batch and head axes
            (flax's default; PyTorch drops independently).
        use_bias: Biases in the four projections.
        decode: Decode from a cache (see above).
        normalize_qk: LayerNorm the projected queries and keys.
        dtype: Compute dtype (`None`: promote inputs and params).
        param_dtype: Dtype the params are created in.
        precision: `jax.lax.Precision` for the projections and attention.
        kernel_init: Initialiser of the kernels (as flat matrices).
        bias_init: Initialiser of the biases.
        out_kernel_init: Initialiser of `out`'s kernel (default: `kernel_init`).
        out_bias_init: Initialiser of `out`'s bias (default: `bias_init`).
        kernel_metadata: Metadata of the query/key/value kernels.
        bias_metadata: Metadata of the query/key/value biases.
        out_kernel_metadata: Metadata of `out`'s kernel.
        out_bias_metadata: Metadata of `out`'s bias.
        rng: `Rng` for initialisation and for dropout.

    Raises:
        TypeError: If `num_heads` is not a positive int.

    Shapes:
        inputs_q `(*batch, q_length, q_features)`, inputs_k/inputs_v
        `(*batch, kv_length, kv_features)` -> `(*batch, q_length, out_features)`;
        mask and bias broadcastable to `(*batch, num_heads, q_length, kv_length)`.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> mha = bx.MultiHeadAttention(g / 'mha', 2, rng=rng)
        >>> x = jnp.ones((3, 5, 8))
        >>> y, params = mha(rng.seed(bx.Params(), seed=0), x, mask=bx.make_causal_mask(x[..., 0]))
        >>> y.shape, params[('net', 'mha', 'query', 'kernel')].value.shape
        ((3, 5, 8), (8, 2, 4))
        >>> params[('net', 'mha', 'out', 'kernel')].value.shape
        (2, 4, 8)
    """

    def __init__(
        self,
        graph: Graph,
        num_heads: int,
        *,
        qkv_features: int | None = None,
        out_features: int | None = None,
        dropout_rate: float = 0.0,
        broadcast_dropout: bool = True,
        use_bias: bool = True,
        decode: bool = False,
        normalize_qk: bool = False,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        precision: Any = None,
        kernel_init: Initializer = _DEFAULT_KERNEL_INIT,
        bias_init: Initializer = _DEFAULT_BIAS_INIT,
        out_kernel_init: Initializer | None = None,
        out_bias_init: Initializer | None = None,
        kernel_metadata: dict[str, Any] | None = None,
        bias_metadata: dict[str, Any] | None = None,
        out_kernel_metadata: dict[str, Any] | None = None,
        out_bias_metadata: dict[str, Any] | None = None,
        rng: Any = None,
    ) -> None:
        super().__init__(graph)
        for name, size in (("num_heads", num_heads), ("qkv_features", qkv_features)):
            if size is None and name == "qkv_features":
                continue
            if not isinstance(size, int) or isinstance(size, bool) or size < 1:
                raise TypeError(
                    f"{_where(self)}: expected {name} to be a positive int, got {size!r}. "
                    f"Fix: pass e.g. {name}=4."
                )
        self.num_heads = num_heads
        if qkv_features is not None and qkv_features % num_heads:
            raise ValueError(self._heads_error(qkv_features))
        if not isinstance(dropout_rate, int | float) or not 0.0 <= dropout_rate < 1.0:
            raise ValueError(
                f"{_where(self)}: expected dropout_rate in [0, 1), got {dropout_rate!r}. "
                "Fix: pass the probability of dropping an attention weight, e.g. 0.1."
            )
        self.qkv_features = qkv_features
        self.out_features = out_features
        self.dropout_rate = float(dropout_rate)
        self.broadcast_dropout = broadcast_dropout
        self.decode = decode
        self.normalize_qk = normalize_qk
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.precision = precision
        self.rng = rng
        common = {"rng": rng, "use_bias": use_bias, "dtype": dtype}
        common.update(param_dtype=param_dtype, precision=precision)
        for name in ("query", "key", "value"):
            projection = _Projection(
                graph.child(name),
                kernel_init=kernel_init,
                bias_init=bias_init,
                kernel_metadata=kernel_metadata,
                bias_metadata=bias_metadata,
                **common,
            )
            setattr(self, name, projection)
        self.out = _Projection(
            graph.child("out"),
            kernel_init=out_kernel_init or kernel_init,
            bias_init=out_bias_init or bias_init,
            kernel_metadata=out_kernel_metadata,
            bias_metadata=out_bias_metadata,
            **common,
        )
        if normalize_qk:
            # flax.linen's LayerNorm defaults: epsilon 1e-6, scale only.
            self.query_ln = LayerNorm(graph.child("query_ln"), epsilon=1e-6, use_bias=False)
            self.key_ln = LayerNorm(graph.child("key_ln"), epsilon=1e-6, use_bias=False)

    def _heads_error(self, features: int) -> str:
        return (
            f"{_where(self)}: expected qkv_features divisible by num_heads="
            f"{self.num_heads}, got {features}. Fix: pick num_heads dividing the "
            "feature size, or pass qkv_features= a multiple of num_heads."
        )

    def _head_dim(self, params: Params) -> int:
        if self.qkv_features is not None:
            return self.qkv_features // self.num_heads
        kernel = params._data.get(self.query.param_path("kernel"))
        if kernel is None:
            raise ValueError(
                f"{_where(self)}: expected qkv_features or existing query params to size "
                "the cache, got neither. Fix: build the layer with qkv_features=..., or "
                "create its params with a first call before init_cache."
            )
        return kernel.value.shape[-1]

    def init_cache(
        self, params: Params, batch_shape: Sequence[int], max_length: int, *, dtype: Any = None
    ) -> Params:
        """Creates (or resets) an empty key/value cache for `decode=True`.

        Makes the non-trainable params `cached_key` and `cached_value`
        `(*batch_shape, max_length, num_heads, head_dim)` (zeros) and
        `cache_index` (int32 0). Calling it again starts a new generation.

        Args:
            params: The container (unlocked if the cache does not exist yet).
            batch_shape: The batch axes of the inputs to decode, e.g. `(batch,)`.
            max_length: Positions the cache holds.
            dtype: Dtype of the cached keys/values (default: `dtype`, else
                `param_dtype`); it must be the projected keys' dtype.

        Returns:
            The params with the cache.

        Raises:
            ValueError: If the layer was not built with `decode=True`,
                `max_length < 1`, or the head size is unknown.

        Example:
            >>> import jax.numpy as jnp
            >>> import blox as bx
            >>> g = bx.Graph('lm')
            >>> rng = bx.Rng(g / 'rng')
            >>> mha = bx.MultiHeadAttention(g / 'mha', 2, qkv_features=8, decode=True, rng=rng)
            >>> params = mha.init_cache(rng.seed(bx.Params(), seed=0), (3,), 10)
            >>> y, params = mha(params, jnp.ones((3, 1, 8)))
            >>> y.shape, int(params[('lm', 'mha', 'cache_index')].value)
            ((3, 1, 8), 1)
        """
        if not self.decode:
            raise ValueError(
                f"{_where(self)}: expected a layer built with decode=True for init_cache, "
                "got decode=False. Fix: build it with decode=True (the params are shared)."
            )
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
            raise ValueError(
                f"{_where(self)}: expected max_length to be a positive int, got "
                f"{max_length!r}. Fix: pass the number of positions to generate."
            )
        dtype = dtype or self.dtype or self.param_dtype
        shape = (*tuple(batch_shape), max_length, self.num_heads, self._head_dim(params))
        values = {
            "cached_key": jnp.zeros(shape, dtype),
            "cached_value": jnp.zeros(shape, dtype),
            "cache_index": jnp.zeros((), jnp.int32),
        }
        for name, value in values.items():
            if self.param_path(name) in params._data:
                params = self.set_param(params, name, value)
            else:
                _, params = self.get_param(
                    params,
                    name,
                    value.shape,
                    lambda *_, v=value: v,
                    dtype=value.dtype,
                    trainable=False,
                    metadata=dict(_CACHE_TAG),
                )
        return params

    def _decode(
        self, params: Params, key: jax.Array, value: jax.Array, mask: jax.Array | None
    ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, Params]:
        """Writes the new keys/values into the cache; returns the cache and its mask."""
        data = params._data
        if any(self.param_path(n) not in data for n in _CACHE_NAMES):
            raise ValueError(
                f"{_where(self)}: expected a key/value cache for decode=True, got params "
                "without one. Fix: params = mha.init_cache(params, batch_shape, "
                "max_length) before decoding."
            )
        cached_key = data[self.param_path("cached_key")].value
        cached_value = data[self.param_path("cached_value")].value
        index = data[self.param_path("cache_index")].value
        *batch, max_length, heads, head_dim = cached_key.shape
        length = key.shape[-3]
        expected = (*batch, length, heads, head_dim)
        if key.shape != expected:
            raise ValueError(
                f"{_where(self)}: expected new keys of shape (*batch, length, num_heads, "
                f"head_dim) = {expected} to fit the cache {cached_key.shape}, got "
                f"{key.shape}. Fix: decode with the batch shape given to init_cache."
            )
        if key.dtype != cached_key.dtype:
            raise TypeError(
                f"{_where(self)}: expected keys of the cache's dtype {cached_key.dtype}, "
                f"got {key.dtype}. Fix: pass dtype={key.dtype} to init_cache."
            )
        overflow = index + length > max_length
        if not isinstance(overflow, jax.core.Tracer) and bool(overflow):
            raise ValueError(
                f"{_where(self)}: expected at most {max_length} cached positions, got "
                f"{int(index)} + {length}. Fix: call init_cache with a larger max_length "
                "(or again, to start a new sequence)."
            )
        zero = jnp.zeros((), index.dtype)
        start = (zero,) * len(batch) + (index, zero, zero)
        cached_key = jax.lax.dynamic_update_slice(cached_key, key, start)
        cached_value = jax.lax.dynamic_update_slice(cached_value, value, start)
        params = self.set_param(params, "cached_key", cached_key)
        params = self.set_param(params, "cached_value", cached_value)
        params = self.set_param(params, "cache_index", index + length)
        # New position i (absolute index + i) sees cached positions j <= index + i.
        allowed = jnp.arange(max_length)[None, :] <= (index + jnp.arange(length))[:, None]
        allowed = allowed.reshape((1,) * (len(batch) + 1) + allowed.shape)
        mask = allowed if mask is None else jnp.logical_and(mask, allowed)
        return cached_key, cached_value, mask, overflow, params

    def __call__(
        self,
        params: Params,
        inputs_q: jax.Array,
        inputs_k: jax.Array | None = None,
        inputs_v: jax.Array | None = None,
        *,
        mask: jax.Array | None = None,
        bias: jax.Array | None = None,
        is_training: bool = False,
        return_weights: bool = False,
    ) -> tuple[Any, Params]:
        """Attends from `inputs_q` to `inputs_k` (default: `inputs_q`) and `inputs_v`.

        Args:
            params: The container.
            inputs_q: `(*batch, q_length, q_features)`.
            inputs_k: `(*batch, kv_length, k_features)`; default `inputs_q`.
            inputs_v: `(*batch, kv_length, v_features)`; default `inputs_k`.
            mask: `True`/nonzero where attending is allowed; broadcastable to
                `(*batch, num_heads, q_length, kv_length)` (kv_length is
                `max_length` when decoding).
            bias: Added to the logits, broadcastable like `mask` (PyTorch's
                float `attn_mask`).
            is_training: Apply attention dropout (keys drawn from `rng`).
            return_weights: Also return the attention weights used (after
                dropout), `(*batch, num_heads, q_length, kv_length)`.

        Returns:
            `(outputs, params)`, or `((outputs, weights), params)` with
            `return_weights`. When decoding under `jit`, writing past
            `max_length` cannot raise; the outputs are then NaN.

        Raises:
            ValueError: On inputs of the wrong rank or mismatched batch axes
                or lengths, features not divisible by `num_heads`, a mask that
                does not broadcast, a missing or full cache.
        """
        where = _where(self)
        if inputs_k is None:
            if inputs_v is not None:
                raise ValueError(
                    f"{where}: expected inputs_k when inputs_v is given, got inputs_k=None. "
                    "Fix: pass both, or inputs_k alone to use it for the values too."
                )
            inputs_k = inputs_q
        if inputs_v is None:
            inputs_v = inputs_k
        shapes = [jnp.shape(a) for a in (inputs_q, inputs_k, inputs_v)]
        if any(len(s) < 2 for s in shapes) or len({len(s) for s in shapes}) != 1:
            raise ValueError(
                f"{where}: expected inputs_q/inputs_k/inputs_v of one rank >= 2 (*batch, "
                f"length, features), got shapes {shapes}. Fix: add the length axis, "
                "e.g. x[..., None, :]."
            )
        q_shape, k_shape, v_shape = shapes
        if q_shape[:-2] != k_shape[:-2] or k_shape[:-1] != v_shape[:-1]:
            raise ValueError(
                f"{where}: expected inputs with the same batch axes, and keys and values "
                f"of one length, got shapes {shapes}. Fix: keys and values come from the "
                "same positions; batch axes must match."
            )
        qkv_features = self.qkv_features or q_shape[-1]
        if qkv_features % self.num_heads:
            raise ValueError(self._heads_error(qkv_features))
        for name, size in (("key", k_shape[-1]), ("value", v_shape[-1])):
            stored = params._data.get(getattr(self, name).param_path("kernel"))
            if stored is not None and stored.value.shape[0] != size:
                raise ValueError(
                    f"{where}: expected {name} inputs with {stored.value.shape[0]} features "
                    f"(as its params were created), got {size}. Fix: pass inputs_{name[0]} "
                    "of the size the layer was built for."
                )
        heads = (self.num_heads, qkv_features // self.num_heads)
        query, params = self.query(params, inputs_q, 1, heads)
        key, params = self.key(params, inputs_k, 1, heads)
        value, params = self.value(params, inputs_v, 1, heads)
        if self.normalize_qk:
            query, params = self.query_ln(params, query)
            key, params = self.key_ln(params, key)
        overflow = None
        if self.decode:
            if mask is not None:
                mask = jnp.asarray(mask)
            key, value, mask, overflow, params = self._decode(params, key, value, mask)
        shape = _weights_shape(query, key)
        bias, mask = _fit(where, "bias", bias, shape), _fit(where, "mask", mask, shape)
        dropout = is_training and self.dropout_rate > 0.0
        dropout_rng = None
        if dropout:
            if self.rng is None:
                raise ValueError(
                    f"{where}: expected an Rng to draw attention dropout masks, got rng=None. "
                    "Fix: build it with rng=bx.Rng(graph / 'rng'), or call it with "
                    "is_training=False."
                )
            dropout_rng, params = self.rng(params)
        query, key, value = promote_dtype(query, key, value, dtype=self.dtype)
        weights = None
        if return_weights or dropout or self.precision is not None:
            weights = _weights(
                query,
                key,
                bias,
                mask,
                self.broadcast_dropout,
                dropout_rng,
                self.dropout_rate,
                dropout,
                self.precision,
            )
            x = jnp.einsum("...hqk,...khd->...qhd", weights, value, precision=self.precision)
        else:
            x = _fused(query, key, value, bias, mask)
        out_features = self.out_features or q_shape[-1]
        out, params = self.out(params, x, 2, (out_features,))
        if overflow is not None:
            out = jnp.where(overflow, jnp.nan, out).astype(out.dtype)
        if return_weights:
            return (out, weights), params
        return out, params


class SelfAttention(MultiHeadAttention):
    """`MultiHeadAttention` whose keys and values come from its query inputs.

    Same options and parameters as `MultiHeadAttention` (flax.linen's
    `SelfAttention`).

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> att = bx.SelfAttention(g / 'att', 4, rng=rng)
        >>> y, params = att(rng.seed(bx.Params(), seed=0), jnp.ones((2, 3, 8)))
        >>> y.shape
        (2, 3, 8)
    """

    def __call__(  # type: ignore[override]
        self,
        params: Params,
        inputs_q: jax.Array,
        *,
        mask: jax.Array | None = None,
        bias: jax.Array | None = None,
        is_training: bool = False,
        return_weights: bool = False,
    ) -> tuple[Any, Params]:
        """Self-attention over `inputs_q` `(*batch, length, features)`."""
        return super().__call__(
            params,
            inputs_q,
            mask=mask,
            bias=bias,
            is_training=is_training,
            return_weights=return_weights,
        )
