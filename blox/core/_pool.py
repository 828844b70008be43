"""Pooling functions over the spatial axes of `(*batch, *spatial, channels)`.

Every pool is one `jax.lax.reduce_window` over the spatial axes (the batch
dims flattened to one, the channel axis last, or second with
`channels_first=True`). `pool` is the general form (flax.linen's, with
mlax's window and input dilation); `max_pool`, `min_pool`, `sum_pool` and
`avg_pool` fix its reduction.
"""

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from ._checks import spatial_rank_fix
from ._conv import PaddingLike, _as_tuple, _check_padding


def _pool(
    name: str,
    inputs: jax.Array,
    init: Any,
    reduce_fn: Callable[[Any, Any], Any],
    window_shape: int | Sequence[int],
    strides: int | Sequence[int] | None,
    padding: PaddingLike,
    window_dilation: int | Sequence[int],
    input_dilation: int | Sequence[int],
    channels_first: bool,
) -> tuple[jax.Array, dict[str, Any], tuple[int, ...]]:
    """`(pooled flat array, reduce_window spatial arguments, batch shape)`."""
    window = (window_shape,) if isinstance(window_shape, int) else tuple(window_shape)
    n = len(window)
    if jnp.ndim(inputs) < n + 1:
        layout = f"channels, {n} spatial dims" if channels_first else f"{n} spatial dims, channels"
        fix = spatial_rank_fix(jnp.ndim(inputs), n, channels_first)
        raise ValueError(
            f"{name}: expected inputs of rank >= {n + 1} (*batch, {layout}), got rank "
            f"{jnp.ndim(inputs)} with shape {tuple(jnp.shape(inputs))}. Fix: {fix}."
        )
    spatial = {
        "window_dimensions": window,
        "window_strides": window if strides is None else _as_tuple(strides, n, "strides", name),
        "padding": _check_padding(padding, n, name),
        "base_dilation": _as_tuple(input_dilation, n, "input_dilation", name),
        "window_dilation": _as_tuple(window_dilation, n, "window_dilation", name),
    }
    batch = inputs.shape[: inputs.ndim - n - 1]
    flat = inputs.reshape((math.prod(batch),) + inputs.shape[inputs.ndim - n - 1 :])
    out = jax.lax.reduce_window(flat, init, reduce_fn, **_full(spatial, channels_first))
    return out, spatial, batch


def _full(spatial: dict[str, Any], channels_first: bool) -> dict[str, Any]:
    """The spatial `reduce_window` arguments extended by unit batch/channel entries."""

    def extend(values: Any, unit: Any) -> Any:
        if isinstance(values, str):
            return values
        values = tuple(values)
        return (unit, unit, *values) if channels_first else (unit, *values, unit)

    units = {"padding": (0, 0)}
    return {k: extend(v, units.get(k, 1)) for k, v in spatial.items()}


def _unflatten(out: jax.Array, batch: tuple[int, ...]) -> jax.Array:
    return out.reshape(batch + out.shape[1:])


def pool(
    inputs: jax.Array,
    init: Any,
    reduce_fn: Callable[[Any, Any], Any],
    window_shape: int | Sequence[int],
    strides: int | Sequence[int] | None = None,
    padding: PaddingLike = "VALID",
    *,
    window_dilation: int | Sequence[int] = 1,
    input_dilation: int | Sequence[int] = 1,
    channels_first: bool = False,
) -> jax.Array:
    """Reduces every window of the spatial axes with `reduce_fn`, from `init`.

    flax.linen's `pool` (and mlax's, with its dilations). Padded cells and
    the holes of a dilated input hold `init`, so they never change the result
    of a reduction whose identity `init` is.

    Args:
        inputs: `(*batch, *spatial, channels)`, zero or more batch dims (or
            `(*batch, channels, *spatial)` with `channels_first`).
        init: The reduction's initial value, e.g. `-jnp.inf` for a max.
        reduce_fn: `(a, b) -> c`, e.g. `jax.lax.max`.
        window_shape: Window per spatial dim; its length sets how many
            spatial dims there are (an int means 1-D).
        strides: Step per spatial dim; `None` means `window_shape` (blox's
            default everywhere; flax.linen's `None` means 1).
        padding: ``'VALID'``, ``'SAME'``, an int (both sides of every dim), or
            one int or `(low, high)` pair per spatial dim.
        window_dilation: Spacing of the window's cells per spatial dim (mlax).
        input_dilation: Spacing of the input's cells per spatial dim, the gaps
            holding `init` (mlax; `jax.lax.reduce_window`'s `base_dilation`).
        channels_first: The channel axis comes before the spatial axes.

    Returns:
        `(*batch, *out_spatial, channels)` (channels first if the input's are).

    Raises:
        ValueError: If `inputs` has too few dims or an option is malformed.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import blox as bx
        >>> x = jnp.arange(8.0).reshape(8, 1)
        >>> bx.pool(x, 0.0, jax.lax.add, 2, window_dilation=2)[..., 0].tolist()
        [2.0, 6.0, 10.0]
    """
    out, _, batch = _pool(
        "pool",
        inputs,
        init,
        reduce_fn,
        window_shape,
        strides,
        padding,
        window_dilation,
        input_dilation,
        channels_first,
    )
    return _unflatten(out, batch)


def max_pool(
    inputs: jax.Array,
    window_shape: int | Sequence[int],
    strides: int | Sequence[int] | None = None,
    padding: PaddingLike = "VALID",
    *,
    window_dilation: int | Sequence[int] = 1,
    input_dilation: int | Sequence[int] = 1,
    channels_first: bool = False,
) -> jax.Array:
    """Max over windows of the spatial axes; padded cells never win.

    Args:
        inputs: `(*batch, *spatial, channels)`, zero or more batch dims (or
            `(*batch, channels, *spatial)` with `channels_first`).
        window_shape: Window per spatial dim; its length sets how many
            spatial dims there are (an int means 1-D).
        strides: Step per spatial dim; `None` means `window_shape`.
        padding: ``'VALID'``, ``'SAME'``, an int (both sides of every dim), or
            one int or `(low, high)` pair per spatial dim.
        window_dilation: Spacing of the window's cells per spatial dim.
        input_dilation: Spacing of the input's cells per spatial dim.
        channels_first: The channel axis comes before the spatial axes.

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
    out, _, batch = _pool(
        "max_pool",
        inputs,
        -jnp.inf,
        jax.lax.max,
        window_shape,
        strides,
        padding,
        window_dilation,
        input_dilation,
        channels_first,
    )
    return _unflatten(out, batch)


def min_pool(
    inputs: jax.Array,
    window_shape: int | Sequence[int],
    strides: int | Sequence[int] | None = None,
    padding: PaddingLike = "VALID",
    *,
    window_dilation: int | Sequence[int] = 1,
    input_dilation: int | Sequence[int] = 1,
    channels_first: bool = False,
) -> jax.Array:
    """Min over windows of the spatial axes; same arguments as `max_pool`.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> x = jnp.arange(16.0).reshape(4, 4, 1)
        >>> bx.min_pool(x, (2, 2))[..., 0].tolist()
        [[0.0, 2.0], [8.0, 10.0]]
    """
    out, _, batch = _pool(
        "min_pool",
        inputs,
        jnp.inf,
        jax.lax.min,
        window_shape,
        strides,
        padding,
        window_dilation,
        input_dilation,
        channels_first,
    )
    return _unflatten(out, batch)


def sum_pool(
    inputs: jax.Array,
    window_shape: int | Sequence[int],
    strides: int | Sequence[int] | None = None,
    padding: PaddingLike = "VALID",
    *,
    window_dilation: int | Sequence[int] = 1,
    input_dilation: int | Sequence[int] = 1,
    channels_first: bool = False,
) -> jax.Array:
    """Sum over windows of the spatial axes (mlax); same arguments as `max_pool`.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> x = jnp.arange(16.0).reshape(4, 4, 1)
        >>> bx.sum_pool(x, (2, 2))[..., 0].tolist()
        [[10.0, 18.0], [42.0, 50.0]]
    """
    out, _, batch = _pool(
        "sum_pool",
        inputs,
        0.0,
        jax.lax.add,
        window_shape,
        strides,
        padding,
        window_dilation,
        input_dilation,
        channels_first,
    )
    return _unflatten(out, batch)


def avg_pool(
    inputs: jax.Array,
    window_shape: int | Sequence[int],
    strides: int | Sequence[int] | None = None,
    padding: PaddingLike = "VALID",
    count_include_pad: bool = False,
    *,
    window_dilation: int | Sequence[int] = 1,
    input_dilation: int | Sequence[int] = 1,
    channels_first: bool = False,
) -> jax.Array:
    """Mean over windows of the spatial axes.

    With `count_include_pad=False` (the default) each window is divided by the
    number of real input cells it covers, so borders are not pulled towards
    zero; with `True` every window is divided by `prod(window_shape)`, padded
    cells counting as zeros (flax.linen's meaning of the flag, and its
    default). Same other arguments as `max_pool`.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> x = jnp.ones((3, 3, 1))
        >>> bx.avg_pool(x, (2, 2), strides=1, padding='SAME')[..., 0].tolist()
        [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
        >>> bx.avg_pool(x, (2, 2), 1, 'SAME', count_include_pad=True)[..., 0].tolist()
        [[1.0, 1.0, 0.5], [1.0, 1.0, 0.5], [0.5, 0.5, 0.25]]
    """
    total, spatial, batch = _pool(
        "avg_pool",
        inputs,
        0.0,
        jax.lax.add,
        window_shape,
        strides,
        padding,
        window_dilation,
        input_dilation,
        channels_first,
    )
    undilated = all(d == 1 for d in spatial["base_dilation"])
    if count_include_pad or (spatial["padding"] == "VALID" and undilated):
        out = total / math.prod(spatial["window_dimensions"])
    else:
        # Count the real cells of every window by pooling a ones image of the
        # spatial shape alone (no batch or channel axes to spend work on).
        n = len(spatial["window_dimensions"])
        sizes = inputs.shape[inputs.ndim - n :] if channels_first else inputs.shape[-n - 1 : -1]
        ones = jnp.ones(sizes, total.dtype)
        counts = jax.lax.reduce_window(ones, 0.0, jax.lax.add, **spatial)
        counts = counts[None, None] if channels_first else counts[None, ..., None]
        out = total / counts
    return _unflatten(out, batch)
