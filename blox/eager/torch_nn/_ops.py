"""`F.pad`, `F.one_hot` and `F.scaled_dot_product_attention` with PyTorch's arguments.

`pad` is `jnp.pad` with PyTorch's argument order (pairs from the last dim
backwards); attention is `jax.nn.dot_product_attention` with PyTorch's
`(..., L, E)` layout and mask convention.
"""

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array

_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def pad(
    input: Array, pad: tuple[int, ...], mode: str = "constant", value: float | None = None
) -> Array:
    """`F.pad`: `pad = (last_low, last_high, second_last_low, ...)`.

    Raises:
        ValueError: On an odd-length or negative `pad`, or an unknown mode.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> F.pad(jnp.ones((1, 2)), (1, 2)).tolist()
        [[0.0, 1.0, 1.0, 0.0, 0.0]]
        >>> F.pad(jnp.arange(3.0)[None], (2, 0), mode='reflect').tolist()
        [[2.0, 1.0, 0.0, 1.0, 2.0]]
    """
    pad = tuple(pad)
    if len(pad) % 2 or len(pad) // 2 > input.ndim or any(p < 0 for p in pad):
        raise ValueError(
            f"pad: expected an even number of non-negative pads, at most two per dim of "
            f"the {input.ndim}-d input, got {pad}. Fix: pass (low, high) pairs from the "
            "last dim backwards (cropping is slicing)."
        )
    if mode not in _PAD_MODES:
        raise ValueError(
            f"pad: expected mode in {sorted(_PAD_MODES)}, got {mode!r}. Fix: use one of those."
        )
    pairs = [(pad[i], pad[i + 1]) for i in range(0, len(pad), 2)][::-1]
    width = [(0, 0)] * (input.ndim - len(pairs)) + pairs
    if mode == "constant":
        return jnp.pad(input, width, constant_values=0.0 if value is None else value)
    return jnp.pad(input, width, mode=_PAD_MODES[mode])


def one_hot(tensor: Array, num_classes: int = -1) -> Array:
    """`F.one_hot`: integer ids -> `(*shape, num_classes)` int32 (PyTorch: int64).

    `num_classes=-1` reads `max + 1` from the values, so it needs concrete
    (not traced) ids; pass the count inside jitted code.

    Raises:
        TypeError: If `tensor` is not an integer array.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> F.one_hot(jnp.array([0, 2])).tolist()
        [[1, 0, 0], [0, 0, 1]]
    """
    tensor = jnp.asarray(tensor)
    if not jnp.issubdtype(tensor.dtype, jnp.integer):
        raise TypeError(
            f"one_hot: expected integer ids, got {tensor.dtype}. Fix: cast them, e.g. "
            "ids.astype(jnp.int32)."
        )
    if num_classes == -1:
        num_classes = int(tensor.max()) + 1
    return jax.nn.one_hot(tensor, num_classes, dtype=jnp.int32)


def scaled_dot_product_attention(
    query: Array,
    key: Array,
    value: Array,
    attn_mask: Array | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> Array:
    """`F.scaled_dot_product_attention` over `(..., L, E)` queries and `(..., S, E)` keys.

    `attn_mask` is boolean (True takes part) or a float bias added to the
    scores, broadcastable to `(..., L, S)`; `is_causal` masks future keys.
    The numerics are `jax.nn.dot_product_attention`'s.

    Raises:
        ValueError: With `dropout_p > 0` (use `nn.MultiheadAttention`, which
            owns a dropout stream), `attn_mask` together with `is_causal`, or
            a value size other than the query's.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> q = jnp.ones((2, 4, 5, 8))
        >>> F.scaled_dot_product_attention(q, q, q, is_causal=True).shape
        (2, 4, 5, 8)
    """
    if dropout_p:
        raise ValueError(
            f"scaled_dot_product_attention: expected dropout_p=0.0, got {dropout_p}. Fix: "
            "drop it (no random stream here); nn.MultiheadAttention has attention dropout."
        )
    if attn_mask is not None and is_causal:
        raise ValueError(
            "scaled_dot_product_attention: expected attn_mask or is_causal, got both. "
            "Fix: fold the causal mask into attn_mask, as PyTorch requires."
        )
    if value.shape[-1] != query.shape[-1]:
        raise ValueError(
            f"scaled_dot_product_attention: expected value's last dim to equal the "
            f"query's ({query.shape[-1]}), as jax.nn.dot_product_attention requires, got "
            f"{value.shape[-1]}. Fix: project value to the query size."
        )
    lead = query.shape[:-2]
    heads = math.prod(lead[1:]) if len(lead) > 1 else 1
    batch = lead[0] if lead else 1

    def btnh(x: Array) -> Array:  # (..., T, E) -> (B, T, heads, E)
        x = x.reshape((batch, heads) + x.shape[-2:])
        return jnp.swapaxes(x, 1, 2)

    q, k, v = btnh(query), btnh(key), btnh(value)
    mask = bias = None
    if attn_mask is not None:
        full = jnp.broadcast_to(attn_mask, lead + (query.shape[-2], key.shape[-2]))
        full = full.reshape((batch, heads) + full.shape[-2:])
        if full.dtype == jnp.bool_:
            mask = full
        else:
            bias = full.astype(q.dtype)
    out = jax.nn.dot_product_attention(
        q, k, v, bias=bias, mask=mask, scale=scale, is_causal=is_causal
    )
    return jnp.swapaxes(out, 1, 2).reshape(query.shape[:-1] + value.shape[-1:])
