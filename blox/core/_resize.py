"""Adaptive pooling, resizing and pixel shuffling over `(*batch, *spatial, channels)`.

PyTorch's definitions, channels last like the rest of `blox.core`. Adaptive
pooling splits each spatial dim of size `n_in` into `n_out` bins
`[floor(i * n_in / n_out), ceil((i + 1) * n_in / n_out))`; resizing samples
each output cell at a source coordinate (`nearest`: `floor(i * scale)`;
`linear`: half-pixel centres, or corner-aligned with `align_corners`). All
of them are separable, so each works one spatial dim at a time.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import spatial_rank_fix


def _spatial(name: str, inputs: jax.Array, n: int) -> int:
    if jnp.ndim(inputs) < n + 1:
        raise ValueError(
            f"{name}: expected inputs of rank >= {n + 1} (*batch, {n} spatial dims, "
            f"channels), got shape {tuple(jnp.shape(inputs))}. Fix: "
            f"{spatial_rank_fix(jnp.ndim(inputs), n)}."
        )
    return jnp.ndim(inputs) - n - 1


def _sizes(name: str, output_size: int | Sequence[int | None], inputs: jax.Array) -> tuple:
    sizes = (output_size,) if isinstance(output_size, int) else tuple(output_size)
    first = _spatial(name, inputs, len(sizes))
    sizes = tuple(inputs.shape[first + i] if s is None else s for i, s in enumerate(sizes))
    if any(not isinstance(s, int) or s < 1 for s in sizes):
        raise ValueError(
            f"{name}: expected output sizes of positive ints (or None to keep a dim), "
            f"got {output_size!r}. Fix: pass e.g. (7, 7)."
        )
    return first, sizes


def _bins(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    i = np.arange(n_out)
    return (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)


def adaptive_avg_pool(inputs: jax.Array, output_size: int | Sequence[int | None]) -> jax.Array:
    """Mean over PyTorch's adaptive bins; `len(output_size)` spatial dims.

    Args:
        inputs: `(*batch, *spatial, channels)`.
        output_size: Output size per spatial dim (an int means 1-D; `None`
            keeps that dim).

    Returns:
        `(*batch, *output_size, channels)`.

    Raises:
        ValueError: If `inputs` has too few dims or a size is not positive.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> from blox.core._resize import adaptive_avg_pool
        >>> adaptive_avg_pool(jnp.arange(5.0).reshape(5, 1), 2)[:, 0].tolist()
        [1.0, 3.0]
    """
    first, sizes = _sizes("adaptive_avg_pool", output_size, inputs)
    x = inputs
    for i, n_out in enumerate(sizes):
        axis = first + i
        n_in = x.shape[axis]
        start, end = _bins(n_in, n_out)
        j = np.arange(n_in)
        inside = (j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])
        weights = jnp.asarray(inside / (end - start)[:, None], x.dtype)  # (n_out, n_in)
        x = jnp.moveaxis(jnp.tensordot(x, weights, axes=((axis,), (1,))), -1, axis)
    return x


def adaptive_max_pool(inputs: jax.Array, output_size: int | Sequence[int | None]) -> jax.Array:
    """Max over PyTorch's adaptive bins; same arguments as `adaptive_avg_pool`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.core._resize import adaptive_max_pool
        >>> adaptive_max_pool(jnp.arange(5.0).reshape(5, 1), 2)[:, 0].tolist()
        [2.0, 4.0]
    """
    first, sizes = _sizes("adaptive_max_pool", output_size, inputs)
    x = inputs
    for i, n_out in enumerate(sizes):
        axis = first + i
        start, end = _bins(x.shape[axis], n_out)
        width = int((end - start).max())
        # Each bin reads `width` cells; shorter bins repeat their last cell,
        # which leaves the max (and its gradient's total) unchanged.
        index = np.minimum(start[:, None] + np.arange(width)[None, :], end[:, None] - 1)
        gathered = jnp.take(x, jnp.asarray(index.reshape(-1)), axis=axis)
        shape = x.shape[:axis] + (n_out, width) + x.shape[axis + 1 :]
        x = jnp.max(gathered.reshape(shape), axis=axis + 1)
    return x


def _source(n_in: int, n_out: int, scale: float | None, method: str, align: bool) -> np.ndarray:
    i = np.arange(n_out, dtype=np.float64)
    if method == "nearest":
        step = n_in / n_out if scale is None else 1.0 / scale
        return np.minimum(np.floor(i * step), n_in - 1)
    if align:
        return i * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(n_out)
    step = n_in / n_out if scale is None else 1.0 / scale
    return np.maximum((i + 0.5) * step - 0.5, 0.0)


def resize(
    inputs: jax.Array,
    output_size: Sequence[int],
    method: str = "nearest",
    *,
    align_corners: bool = False,
    scales: Sequence[float] | None = None,
) -> jax.Array:
    """Resamples the spatial dims to `output_size` with PyTorch's sampling rules.

    Args:
        inputs: `(*batch, *spatial, channels)`.
        output_size: Output size per spatial dim.
        method: ``'nearest'`` (PyTorch's `nearest`: `floor(i * in / out)`) or
            ``'linear'`` (linear per dim: PyTorch's `linear`/`bilinear`/`trilinear`).
        align_corners: For ``'linear'``: map corner cells onto corner cells
            instead of using half-pixel centres.
        scales: The scale factors the size came from; when given they set
            the sampling step (`1 / scale`), as PyTorch does.

    Returns:
        `(*batch, *output_size, channels)`.

    Raises:
        ValueError: On an unknown method or malformed sizes.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.core._resize import resize
        >>> x = jnp.array([0.0, 1.0]).reshape(2, 1)
        >>> resize(x, (4,), 'linear')[:, 0].tolist()
        [0.0, 0.25, 0.75, 1.0]
        >>> resize(x, (3,), 'linear', align_corners=True)[:, 0].tolist()
        [0.0, 0.5, 1.0]
    """
    if method not in ("nearest", "linear"):
        raise ValueError(
            f"resize: expected method 'nearest' or 'linear', got {method!r}. Fix: use one of those."
        )
    first, sizes = _sizes("resize", tuple(output_size), inputs)
    x = inputs
    for i, n_out in enumerate(sizes):
        axis = first + i
        n_in = x.shape[axis]
        scale = None if scales is None else scales[i]
        src = _source(n_in, n_out, scale, method, align_corners)
        low = np.floor(src).astype(np.int32)
        if method == "nearest":
            x = jnp.take(x, jnp.asarray(low), axis=axis)
            continue
        high = np.minimum(low + 1, n_in - 1)
        frac = jnp.asarray(src - low, x.dtype).reshape(
            (1,) * axis + (-1,) + (1,) * (x.ndim - axis - 1)
        )
        a = jnp.take(x, jnp.asarray(low), axis=axis)
        b = jnp.take(x, jnp.asarray(high), axis=axis)
        x = a * (1 - frac) + b * frac
    return x


def pixel_shuffle(inputs: jax.Array, upscale_factor: int) -> jax.Array:
    """`(*batch, H, W, C * r * r)` -> `(*batch, H * r, W * r, C)`, PyTorch's channel order.

    Input channel `c * r * r + i * r + j` lands at output `(h * r + i, w * r + j)`
    of channel `c`.

    Raises:
        ValueError: If the channels are not divisible by `r * r`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.core._resize import pixel_shuffle
        >>> pixel_shuffle(jnp.arange(4.0).reshape(1, 1, 4), 2)[..., 0].tolist()
        [[0.0, 1.0], [2.0, 3.0]]
    """
    r = upscale_factor
    first = _spatial("pixel_shuffle", inputs, 2)
    *batch, h, w, c = inputs.shape
    if c % (r * r):
        raise ValueError(
            f"pixel_shuffle: expected channels divisible by upscale_factor**2={r * r}, "
            f"got {c}. Fix: give the conv before it C * {r * r} output channels."
        )
    x = inputs.reshape((*batch, h, w, c // (r * r), r, r))
    x = jnp.transpose(x, (*range(first), first, first + 3, first + 1, first + 4, first + 2))
    return x.reshape((*batch, h * r, w * r, c // (r * r)))


def pixel_unshuffle(inputs: jax.Array, downscale_factor: int) -> jax.Array:
    """The inverse of `pixel_shuffle`: `(*batch, H * r, W * r, C)` -> `(*batch, H, W, C * r * r)`.

    Raises:
        ValueError: If the spatial sizes are not divisible by `r`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.core._resize import pixel_unshuffle
        >>> pixel_unshuffle(jnp.arange(4.0).reshape(2, 2, 1), 2)[0, 0].tolist()
        [0.0, 1.0, 2.0, 3.0]
    """
    r = downscale_factor
    first = _spatial("pixel_unshuffle", inputs, 2)
    *batch, hr, wr, c = inputs.shape
    if hr % r or wr % r:
        raise ValueError(
            f"pixel_unshuffle: expected spatial sizes divisible by downscale_factor={r}, "
            f"got {(hr, wr)}. Fix: crop or pad the input first."
        )
    x = inputs.reshape((*batch, hr // r, r, wr // r, r, c))
    x = jnp.transpose(x, (*range(first), first, first + 2, first + 4, first + 1, first + 3))
    return x.reshape((*batch, hr // r, wr // r, c * r * r))
