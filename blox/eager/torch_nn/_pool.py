"""Pooling, resizing and pixel shuffling, channels first, with PyTorch's arguments.

Functions here only turn PyTorch's arguments into `blox.core`'s (explicit
`(low, high)` pads, channels last): `ceil_mode` becomes extra high padding
that no window average counts, and `count_include_pad=True` pads the input
with zeros first so that the core's average counts those cells. The numbers
are `blox.core.max_pool` / `avg_pool` and the core's resizing functions.
"""

import math
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
from jaxtyping import Array

from blox import core
from blox.core.internal import resizing

from ._module import Module
from ._shell import to_first, to_last


def _tuple(where: str, name: str, value: Any, n: int) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,) * n
    if isinstance(value, Sequence) and len(value) == n and all(isinstance(v, int) for v in value):
        return tuple(value)
    raise ValueError(
        f"{where}: expected {name} to be an int or {n} ints, got {value!r}. "
        f"Fix: pass e.g. {name}=2."
    )


def _pool_pads(
    where: str,
    sizes: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    ceil_mode: bool,
) -> tuple[tuple[int, int], ...]:
    """`(p, p + extra)` per dim, `extra` making room for `ceil_mode`'s last window."""
    pads = []
    for size, k, s, p in zip(sizes, kernel, stride, padding):
        span = size + 2 * p - k
        if span < 0:
            raise ValueError(
                f"{where}: expected an input of at least {k - 2 * p} cells, got {size}. "
                "Fix: use a smaller kernel or a larger input."
            )
        out = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (out - 1) * s >= size + p:
            out -= 1  # the last window would start in the right padding
        pads.append((p, p + max(0, (out - 1) * s + k - (size + 2 * p))))
    return tuple(pads)


def _half(where: str, kernel: Sequence[int], padding: Sequence[int]) -> None:
    if any(p > k // 2 for p, k in zip(padding, kernel)):
        raise ValueError(
            f"{where}: expected padding at most half the kernel size, got padding="
            f"{tuple(padding)} for kernel {tuple(kernel)}. Fix: use padding <= "
            "kernel_size // 2, as PyTorch requires."
        )


def _args(where: str, n: int, kernel_size: Any, stride: Any, padding: Any) -> tuple:
    kernel = _tuple(where, "kernel_size", kernel_size, n)
    stride = kernel if stride is None or stride == () else _tuple(where, "stride", stride, n)
    return kernel, stride, _tuple(where, "padding", padding, n)


def _max_pool(
    n: int,
    input: Array,
    kernel_size: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    ceil_mode: bool,
    return_indices: bool,
) -> Array:
    where = f"max_pool{n}d"
    kernel, stride, padding = _args(where, n, kernel_size, stride, padding)
    dilation = _tuple(where, "dilation", dilation, n)
    _no_indices(where, return_indices)
    extent = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    _half(where, kernel, padding)
    pads = _pool_pads(where, input.shape[input.ndim - n :], extent, stride, padding, ceil_mode)
    x = to_last(input, n)
    return to_first(core.max_pool(x, kernel, stride, pads, window_dilation=dilation), n)


def _avg_pool(
    n: int,
    input: Array,
    kernel_size: Any,
    stride: Any,
    padding: Any,
    ceil_mode: bool,
    count_include_pad: bool,
    divisor_override: Any,
) -> Array:
    where = f"avg_pool{n}d"
    kernel, stride, padding = _args(where, n, kernel_size, stride, padding)
    if divisor_override is not None:
        raise ValueError(
            f"{where}: expected divisor_override=None, got {divisor_override!r}. Fix: "
            "multiply the output by kernel cells / divisor yourself."
        )
    _half(where, kernel, padding)
    pads = _pool_pads(where, input.shape[input.ndim - n :], kernel, stride, padding, ceil_mode)
    x = input
    if count_include_pad:
        # Zero cells that the core's average then counts; ceil_mode's extra is not.
        width = [(0, 0)] * (x.ndim - n) + [(p, p) for p in padding]
        x = jnp.pad(x, width)
        pads = tuple((0, high - low) for low, high in pads)
    if all(p == (0, 0) for p in pads):
        pads = "VALID"
    # Channels first in the core call too: blox.core.avg_pool counts the cells of
    # explicitly padded windows from the wrong axes for channels-last inputs today.
    return core.avg_pool(x, kernel, stride, pads, channels_first=True)


def max_pool1d(
    input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False
):
    """`F.max_pool1d` over `(*batch, C, L)`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> F.max_pool1d(jnp.arange(5.0).reshape(1, 5), 2, ceil_mode=True).tolist()
        [[1.0, 3.0, 4.0]]
    """
    return _max_pool(1, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool2d(
    input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False
):
    """`F.max_pool2d` over `(*batch, C, H, W)`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> F.max_pool2d(jnp.ones((1, 2, 4, 4)), 2).shape
        (1, 2, 2, 2)
    """
    return _max_pool(2, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool3d(
    input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False
):
    """`F.max_pool3d` over `(*batch, C, D, H, W)`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> F.max_pool3d(jnp.ones((1, 2, 4, 4, 4)), 2).shape
        (1, 2, 2, 2, 2)
    """
    return _max_pool(3, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """`F.avg_pool1d` over `(*batch, C, L)`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> F.avg_pool1d(jnp.ones((1, 4)), 3, 1, padding=1).tolist()
        [[0.6666666865348816, 1.0, 1.0, 0.6666666865348816]]
    """
    return _avg_pool(1, input, kernel_size, stride, padding, ceil_mode, count_include_pad, None)


def avg_pool2d(
    input,
    kernel_size,
    stride=None,
    padding=0,
    ceil_mode=False,
    count_include_pad=True,
    divisor_override=None,
):
    """`F.avg_pool2d` over `(*batch, C, H, W)`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> F.avg_pool2d(jnp.ones((1, 2, 4, 4)), 2).shape
        (1, 2, 2, 2)
    """
    return _avg_pool(
        2, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
    )


def avg_pool3d(
    input,
    kernel_size,
    stride=None,
    padding=0,
    ceil_mode=False,
    count_include_pad=True,
    divisor_override=None,
):
    """`F.avg_pool3d` over `(*batch, C, D, H, W)`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> F.avg_pool3d(jnp.ones((1, 2, 4, 4, 4)), 2).shape
        (1, 2, 2, 2, 2)
    """
    return _avg_pool(
        3, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
    )


def _adaptive(fn: Any, n: int, input: Array, output_size: Any) -> Array:
    sizes = (output_size,) * n if isinstance(output_size, int) else tuple(output_size)
    return to_first(fn(to_last(input, n), sizes), n)


def adaptive_avg_pool1d(input: Array, output_size: Any) -> Array:
    """`F.adaptive_avg_pool1d` over `(*batch, C, L)`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> F.adaptive_avg_pool1d(jnp.arange(5.0).reshape(1, 5), 2).tolist()
        [[1.0, 3.0]]
    """
    return _adaptive(resizing.adaptive_avg_pool, 1, input, output_size)


def adaptive_avg_pool2d(input: Array, output_size: Any) -> Array:
    """`F.adaptive_avg_pool2d` over `(*batch, C, H, W)` (`None` keeps a dim).

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> F.adaptive_avg_pool2d(jnp.ones((1, 2, 5, 7)), (2, None)).shape
        (1, 2, 2, 7)
    """
    return _adaptive(resizing.adaptive_avg_pool, 2, input, output_size)


def adaptive_avg_pool3d(input: Array, output_size: Any) -> Array:
    """`F.adaptive_avg_pool3d` over `(*batch, C, D, H, W)`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> F.adaptive_avg_pool3d(jnp.ones((1, 2, 3, 5, 7)), 1).shape
        (1, 2, 1, 1, 1)
    """
    return _adaptive(resizing.adaptive_avg_pool, 3, input, output_size)


def adaptive_max_pool1d(input: Array, output_size: Any, return_indices: bool = False) -> Array:
    """`F.adaptive_max_pool1d` over `(*batch, C, L)`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> F.adaptive_max_pool1d(jnp.arange(5.0).reshape(1, 5), 2).tolist()
        [[2.0, 4.0]]
    """
    _no_indices("adaptive_max_pool1d", return_indices)
    return _adaptive(resizing.adaptive_max_pool, 1, input, output_size)


def adaptive_max_pool2d(input: Array, output_size: Any, return_indices: bool = False) -> Array:
    """`F.adaptive_max_pool2d` over `(*batch, C, H, W)`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> F.adaptive_max_pool2d(jnp.ones((1, 2, 5, 7)), 3).shape
        (1, 2, 3, 3)
    """
    _no_indices("adaptive_max_pool2d", return_indices)
    return _adaptive(resizing.adaptive_max_pool, 2, input, output_size)


def _no_indices(where: str, return_indices: bool) -> None:
    if return_indices:
        raise ValueError(
            f"{where}: expected return_indices=False, got True. Fix: drop it (indices "
            "are not supported yet)."
        )


_MODES = {"nearest": 0, "linear": 1, "bilinear": 2, "trilinear": 3}


def interpolate(
    input: Array,
    size: Any = None,
    scale_factor: Any = None,
    mode: str = "nearest",
    align_corners: bool | None = None,
    recompute_scale_factor: bool | None = None,
    antialias: bool = False,
) -> Array:
    """`F.interpolate` over `(*batch, C, *spatial)`: `nearest`, `linear`, `bilinear`, `trilinear`.

    Raises:
        ValueError: On an unsupported mode, on both or neither of `size` and
            `scale_factor`, or `align_corners` with `nearest`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> F.interpolate(jnp.ones((1, 3, 4, 4)), scale_factor=2, mode='bilinear').shape
        (1, 3, 8, 8)
    """
    where = "interpolate"
    if mode not in _MODES or antialias:
        raise ValueError(
            f"{where}: expected mode in {sorted(_MODES)} without antialias, got "
            f"mode={mode!r}, antialias={antialias!r}. Fix: use one of those."
        )
    n = input.ndim - 2
    if _MODES[mode] not in (0, n) or n < 1:
        raise ValueError(
            f"{where}: expected a {_MODES[mode]}-d spatial input (N, C, ...) for mode "
            f"{mode!r}, got shape {tuple(input.shape)}. Fix: pick the mode for your rank."
        )
    if (size is None) == (scale_factor is None):
        raise ValueError(
            f"{where}: expected exactly one of size and scale_factor, got size={size!r}, "
            f"scale_factor={scale_factor!r}. Fix: pass one of them."
        )
    if mode == "nearest" and align_corners is not None:
        raise ValueError(
            f"{where}: expected align_corners=None with mode='nearest', got "
            f"{align_corners!r}. Fix: drop it."
        )
    spatial = input.shape[2:]
    scales = None
    if size is not None:
        sizes = _tuple(where, "size", size, n)
    else:
        factors = (
            (float(scale_factor),) * n
            if isinstance(scale_factor, int | float)
            else tuple(float(f) for f in scale_factor)
        )
        sizes = tuple(math.floor(s * f) for s, f in zip(spatial, factors))
        scales = None if recompute_scale_factor else factors
    method = "nearest" if mode == "nearest" else "linear"
    out = resizing.resize(
        to_last(input, n), sizes, method, align_corners=bool(align_corners), scales=scales
    )
    return to_first(out, n)


def pixel_shuffle(input: Array, upscale_factor: int) -> Array:
    """`F.pixel_shuffle`: `(*batch, C * r * r, H, W)` -> `(*batch, C, H * r, W * r)`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> F.pixel_shuffle(jnp.ones((1, 8, 3, 3)), 2).shape
        (1, 2, 6, 6)
    """
    return to_first(resizing.pixel_shuffle(to_last(input, 2), upscale_factor), 2)


def pixel_unshuffle(input: Array, downscale_factor: int) -> Array:
    """`F.pixel_unshuffle`: the inverse of `pixel_shuffle`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> F.pixel_unshuffle(jnp.ones((1, 2, 6, 6)), 2).shape
        (1, 8, 3, 3)
    """
    return to_first(resizing.pixel_unshuffle(to_last(input, 2), downscale_factor), 2)


class _Functional(Module):
    """A module holding its options and calling one function in `forward`."""

    _fn: Any = None
    _args: tuple[str, ...] = ()

    def forward(self, input: Array) -> Array:
        """Applies the function with this module's options."""
        return type(self)._fn(input, **{k: getattr(self, k) for k in self._args})

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={getattr(self, k)!r}" for k in self._args)


def _module(
    name: str, fn: Any, required: tuple[str, ...], example: str, doc: str, **defaults: Any
) -> type:
    args = required + tuple(defaults)

    def __init__(self: Any, *values: Any, **given: Any) -> None:
        _Functional.__init__(self)
        if len(values) > len(args) or set(given) - set(args):
            raise TypeError(
                f"nn.{name}: expected arguments among {list(args)}, got {len(values)} "
                f"positional and {sorted(given)}. Fix: use PyTorch's argument names."
            )
        config = {**defaults, **dict(zip(args, values)), **given}
        missing = [k for k in required if k not in config]
        if missing:
            raise TypeError(
                f"nn.{name}: expected {missing} to be given, got none. Fix: pass it, "
                f"e.g. nn.{name}({example})."
            )
        for key in args:
            setattr(self, key, config[key])

    cls = type(
        name,
        (_Functional,),
        {"__init__": __init__, "_fn": staticmethod(fn), "_args": args, "__doc__": doc},
    )
    cls.__module__, cls.__qualname__ = __name__, name
    return cls


def _doc(name: str, fn: str, example: str, shape: str, out: str) -> str:
    return f"""`torch.nn.{name}`: calls `functional.{fn}` with this module's options.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager import torch_nn as nn
        >>> nn.{name}({example})(jnp.ones({shape})).shape
        {out}
    """


def _pool_module(name: str, fn: Any, example: str, shape: str, out: str, **defaults: Any) -> type:
    return _module(
        name,
        fn,
        ("kernel_size",),
        example,
        _doc(name, fn.__name__, example, shape, out),
        **defaults,
    )


_MAX = {"stride": None, "padding": 0, "dilation": 1, "return_indices": False, "ceil_mode": False}
_AVG = {"stride": None, "padding": 0, "ceil_mode": False, "count_include_pad": True}
MaxPool1d = _pool_module("MaxPool1d", max_pool1d, "2", "(1, 2, 4)", "(1, 2, 2)", **_MAX)
MaxPool2d = _pool_module("MaxPool2d", max_pool2d, "2", "(1, 2, 4, 4)", "(1, 2, 2, 2)", **_MAX)
MaxPool3d = _pool_module("MaxPool3d", max_pool3d, "2", "(1, 2, 4, 4, 4)", "(1, 2, 2, 2, 2)", **_MAX)
AvgPool1d = _pool_module("AvgPool1d", avg_pool1d, "2", "(1, 2, 4)", "(1, 2, 2)", **_AVG)
AvgPool2d = _pool_module(
    "AvgPool2d", avg_pool2d, "2", "(1, 2, 4, 4)", "(1, 2, 2, 2)", **_AVG, divisor_override=None
)
AvgPool3d = _pool_module(
    "AvgPool3d",
    avg_pool3d,
    "2",
    "(1, 2, 4, 4, 4)",
    "(1, 2, 2, 2, 2)",
    **_AVG,
    divisor_override=None,
)


def _adaptive_module(name: str, fn: Any, shape: str, out: str, **defaults: Any) -> type:
    doc = _doc(name, fn.__name__, "2", shape, out)
    return _module(name, fn, ("output_size",), "2", doc, **defaults)


AdaptiveAvgPool1d = _adaptive_module(
    "AdaptiveAvgPool1d", adaptive_avg_pool1d, "(1, 2, 5)", "(1, 2, 2)"
)
AdaptiveAvgPool2d = _adaptive_module(
    "AdaptiveAvgPool2d", adaptive_avg_pool2d, "(1, 2, 5, 5)", "(1, 2, 2, 2)"
)
AdaptiveAvgPool3d = _adaptive_module(
    "AdaptiveAvgPool3d", adaptive_avg_pool3d, "(1, 2, 5, 5, 5)", "(1, 2, 2, 2, 2)"
)
AdaptiveMaxPool1d = _adaptive_module(
    "AdaptiveMaxPool1d", adaptive_max_pool1d, "(1, 2, 5)", "(1, 2, 2)", return_indices=False
)
AdaptiveMaxPool2d = _adaptive_module(
    "AdaptiveMaxPool2d", adaptive_max_pool2d, "(1, 2, 5, 5)", "(1, 2, 2, 2)", return_indices=False
)
Upsample = _module(
    "Upsample",
    interpolate,
    (),
    "scale_factor=2",
    _doc("Upsample", "interpolate", "scale_factor=2", "(1, 2, 3, 3)", "(1, 2, 6, 6)"),
    size=None,
    scale_factor=None,
    mode="nearest",
    align_corners=None,
    recompute_scale_factor=None,
)
PixelShuffle = _module(
    "PixelShuffle",
    pixel_shuffle,
    ("upscale_factor",),
    "2",
    _doc("PixelShuffle", "pixel_shuffle", "2", "(1, 8, 3, 3)", "(1, 2, 6, 6)"),
)
PixelUnshuffle = _module(
    "PixelUnshuffle",
    pixel_unshuffle,
    ("downscale_factor",),
    "2",
    _doc("PixelUnshuffle", "pixel_unshuffle", "2", "(1, 2, 6, 6)", "(1, 8, 3, 3)"),
)
