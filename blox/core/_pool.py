"""Pooling functions over the spatial axes of `(*batch, *spatial, channels)`."""

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from ._conv import PaddingLike, _as_tuple, _check_padding


def _pool(
    name: str,
    inputs: jax.Array,
    window_shape: int | Sequence[int],
    strides: int | Sequence[int] | None,
    padding: PaddingLike,
    init_value: Any,
    op: Callable[[Any, Any], Any],
) -> tuple[jax.Array, Any, tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    window = (window_shape,) if isinstance(window_shape, int) else tuple(window_shape)
    n = len(window)
    if jnp.ndim(inputs) < n + 1:
        raise ValueError(
            f"{name}: expected inputs of rank >= {n + 1} (*batch, {n} spatial dims, "
            f"channels), got rank {jnp.ndim(inputs)} with shape "
            f"{tuple(jnp.shape(inputs))}. Fix: add the channel axis, e.g. x[..., None]."
        )
    strides = window if strides is None else _as_tuple(strides, n, "strides", name)
    padding = _check_padding(padding, n, name)
    batch = inputs.shape[: inputs.ndim - n - 1]
    flat = inputs.reshape((math.prod(batch),) + inputs.shape[inputs.ndim - n - 1 :])
    full_pad = padding if isinstance(padding, str) else ((0, 0),) + padding + ((0, 0),)
    dims = (1,) + window + (1,)
    steps = (1,) + strides + (1,)
    out = jax.lax.reduce_window(flat, init_value, op, dims, steps, full_pad)
    return out, full_pad, dims, steps, batch


def max_pool(
    inputs: jax.Array,
    window_shape: int | Sequence[int],
    strides: int | Sequence[int] | None = None,
    padding: PaddingLike = "VALID",
) -> jax.Array:
    """Max over windows of the spatial axes; padded cells never win.

    Args:
        inputs: `(*batch, *spatial, channels)`, zero or more batch dims.
        window_shape: Window per spatial dim; its length sets how many
            spatial dims there are (an int means 1-D).
        strides: Step per spatial dim; `None` means `window_shape`.
        padding: ``'VALID'``, ``'SAME'`` or one `(low, high)` pair per dim.

    Returns:
        `(*batch, *out_spatial, channels)`.

    Raises:
        ValueError: If `inputs` has too few dims or `padding` is malformed.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> x = jnp.arange(16.0).reshape(4, 4, 1)
        >>> bx.max_pool(x, (2, 2))[..., 0].tolist()
        [[5.0, 7.0], [13.0, 15.0]]
    """
    out, *_, batch = _pool(
        "max_pool", inputs, window_shape, strides, padding, -jnp.inf, jax.lax.max
    )
    return out.reshape(batch + out.shape[1:])


def min_pool(
    inputs: jax.Array,
    window_shape: int | Sequence[int],
    strides: int | Sequence[int] | None = None,
    padding: PaddingLike = "VALID",
) -> jax.Array:
    """Min over windows of the spatial axes; same arguments as `max_pool`.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> x = jnp.arange(16.0).reshape(4, 4, 1)
        >>> bx.min_pool(x, (2, 2))[..., 0].tolist()
        [[0.0, 2.0], [8.0, 10.0]]
    """
    out, *_, batch = _pool("min_pool", inputs, window_shape, strides, padding, jnp.inf, jax.lax.min)
    return out.reshape(batch + out.shape[1:])


def avg_pool(
    inputs: jax.Array,
    window_shape: int | Sequence[int],
    strides: int | Sequence[int] | None = None,
    padding: PaddingLike = "VALID",
) -> jax.Array:
    """Mean over windows of the spatial axes, counting only unpadded cells.

    With ``'SAME'`` or explicit padding, each window is divided by the number
    of real input cells it covers, so borders are not pulled towards zero.
    Same arguments as `max_pool`.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> x = jnp.ones((3, 3, 1))
        >>> bx.avg_pool(x, (2, 2), strides=1, padding='SAME')[..., 0].tolist()
        [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    """
    total, full_pad, dims, steps, batch = _pool(
        "avg_pool", inputs, window_shape, strides, padding, 0.0, jax.lax.add
    )
    if full_pad == "VALID":
        out = total / math.prod(dims)
    else:
        # Count the real cells of every window by pooling a ones image of the
        # spatial shape alone (no batch or channel axes to spend work on).
        ones = jnp.ones(inputs.shape[inputs.ndim - len(dims) + 1 : -1], total.dtype)
        pad = full_pad if isinstance(full_pad, str) else full_pad[1:-1]
        counts = jax.lax.reduce_window(ones, 0.0, jax.lax.add, dims[1:-1], steps[1:-1], pad)
        out = total / counts[None, ..., None]
    return out.reshape(batch + out.shape[1:])
