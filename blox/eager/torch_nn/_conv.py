"""`Conv1d/2d/3d` and `ConvTranspose1d/2d/3d`: channels first, PyTorch's arguments and weights.

The numbers are `blox.core.Conv` / `ConvTranspose`'s (channels last): the
shell moves the channel axis, turns PyTorch's padding arguments into the
core's explicit `(low, high)` pairs, pads the input itself for the
non-zero `padding_mode`s (`jnp.pad`'s reflect, edge and wrap modes), and
stores the weight in PyTorch's layout (see `_layout.py`).
"""

import math
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
from jaxtyping import Array, Float

from blox import core

from .._seed import example_zeros
from .._typecheck import typecheck
from ._layout import ConvTransposeWeight, ConvWeight, Name, Uniform
from ._shell import Shell, check_device, to_first, to_last

_PAD_MODES = {"zeros": None, "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _tuple(where: str, name: str, value: Any, n: int) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,) * n
    if isinstance(value, Sequence) and len(value) == n and all(isinstance(v, int) for v in value):
        return tuple(value)
    raise ValueError(
        f"{where}: expected {name} to be an int or {n} ints, got {value!r}. "
        f"Fix: pass e.g. {name}={(1,) * n if n > 1 else 1}."
    )


class _ConvNd(Shell):
    _n = 0
    _transposed = False

    def _setup(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any,
        padding: Any,
        dilation: Any,
        groups: int,
        bias: bool,
        padding_mode: str,
        device: Any,
        dtype: Any,
        seed: Any,
        output_padding: Any = 0,
    ) -> None:
        n = self._n
        name = type(self).__name__
        where = f"nn.{name}({in_channels}, {out_channels}, {kernel_size!r})"
        check_device(where, device)
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"{where}: expected in_channels and out_channels divisible by groups, "
                f"got {in_channels}, {out_channels} and groups={groups}. Fix: choose "
                "groups dividing both."
            )
        if padding_mode not in _PAD_MODES:
            raise ValueError(
                f"{where}: expected padding_mode in {sorted(_PAD_MODES)}, got "
                f"{padding_mode!r}. Fix: use one of those."
            )
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _tuple(where, "kernel_size", kernel_size, n)
        self.stride = _tuple(where, "stride", stride, n)
        self.dilation = _tuple(where, "dilation", dilation, n)
        self.padding_mode = padding_mode
        extent = [d * (k - 1) for k, d in zip(self.kernel_size, self.dilation)]
        if isinstance(padding, str):
            if padding not in ("same", "valid") or (padding == "same" and self._transposed):
                raise ValueError(
                    f"{where}: expected padding 'same', 'valid', an int or {n} ints, got "
                    f"{padding!r}. Fix: use one of those (ConvTranspose takes ints only)."
                )
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError(
                    f"{where}: expected stride 1 with padding='same', got stride="
                    f"{self.stride}. Fix: pass explicit padding ints for strided convs."
                )
            self.padding = padding
            pairs = tuple((e // 2, e - e // 2) if padding == "same" else (0, 0) for e in extent)
        else:
            self.padding = _tuple(where, "padding", padding, n)
            pairs = tuple((p, p) for p in self.padding)
        names = (
            Name(
                "weight",
                "kernel",
                (ConvTransposeWeight(n, groups) if self._transposed else ConvWeight(n)),
            ),
            Name("bias", "bias"),
        )[: 2 if bias else 1]
        k = math.prod(self.kernel_size)
        if self._transposed:
            self.output_padding = _tuple(where, "output_padding", output_padding, n)
            if any(
                op >= max(s, d) for op, s, d in zip(self.output_padding, self.stride, self.dilation)
            ):
                raise ValueError(
                    f"{where}: expected output_padding smaller than stride or dilation, got "
                    f"{self.output_padding}. Fix: use output_padding < stride."
                )
            if padding_mode != "zeros":
                raise ValueError(
                    f"{where}: expected padding_mode='zeros' (as PyTorch requires for "
                    f"transposed convolutions), got {padding_mode!r}. Fix: drop it."
                )
            fan_in = out_channels // groups * k
            # The transposed conv is a conv of the stride-dilated input padded by
            # d * (k - 1) - p on each side (plus output_padding at the end).
            core_pad = tuple(
                (e - p, e - p + op) for e, (p, _), op in zip(extent, pairs, self.output_padding)
            )
            core_cls, args = core.ConvTranspose, (self.kernel_size, out_channels)
            options = {
                "strides": self.stride,
                "padding": core_pad,
                "kernel_dilation": self.dilation,
            }
            self._pads = None
        else:
            fan_in = in_channels // groups * k
            core_cls, args = core.Conv, (self.kernel_size, out_channels)
            if padding_mode == "zeros":
                core_pad, self._pads = pairs, None
            else:
                core_pad, self._pads = tuple((0, 0) for _ in pairs), pairs
            options = {
                "strides": self.stride,
                "padding": core_pad,
                "kernel_dilation": self.dilation,
            }
        init = Uniform(1 / math.sqrt(fan_in) if fan_in else 0.0)
        options.update(
            feature_group_count=groups, use_bias=bool(bias), kernel_init=init, bias_init=init
        )
        example = example_zeros((1,) + tuple(max(1, e + 1) for e in extent) + (in_channels,))
        self._adopt(where, core_cls, args, options, names, (example,), seed=seed, dtype=dtype)

    def _forward(self, input: Array) -> Array:
        n = self._n
        x = to_last(input, n)
        if self._pads is not None:
            width = [(0, 0)] * (x.ndim - n - 1) + list(self._pads) + [(0, 0)]
            x = jnp.pad(x, width, mode=_PAD_MODES[self.padding_mode])
        return to_first(self.call_core(self.core_layer, x), n)

    def extra_repr(self) -> str:
        shown = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        shown += f", stride={self.stride}"
        if self.padding != (0,) * self._n:
            shown += f", padding={self.padding!r}"
        if self.dilation != (1,) * self._n:
            shown += f", dilation={self.dilation}"
        if self._transposed and self.output_padding != (0,) * self._n:
            shown += f", output_padding={self.output_padding}"
        if self.groups != 1:
            shown += f", groups={self.groups}"
        if "bias" not in self.__dict__:
            shown += ", bias=False"
        if self.padding_mode != "zeros":
            shown += f", padding_mode={self.padding_mode!r}"
        return shown


def _conv_doc(n: int) -> str:
    spatial = " ".join(["L"] if n == 1 else ["H", "W"] if n == 2 else ["D", "H", "W"])
    shape = ", ".join(["8"] * n)
    return f"""PyTorch's `nn.Conv{n}d`: `(*batch, C_in, {spatial})` -> `(*batch, C_out, ...)`.

    `weight` is `(out_channels, in_channels // groups, *kernel_size)`, `bias`
    `(out_channels,)`, both initialised `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`
    as in PyTorch. The numerics are `blox.core.Conv`'s (channels last).

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: An int or {n} ints.
        stride: An int or {n} ints.
        padding: ``'valid'``, ``'same'`` (stride 1), an int or {n} ints.
        dilation: An int or {n} ints.
        groups: Channel groups; must divide both channel counts.
        bias: Learn `bias`.
        padding_mode: ``'zeros'``, ``'reflect'``, ``'replicate'`` or ``'circular'``.
        device: Only `None`.
        dtype: Storage dtype of the parameters.
        seed: Int or key for this layer's init.

    Raises:
        ValueError: On a malformed size, padding, mode or group count.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager import torch_nn as nn
        >>> conv = nn.Conv{n}d(3, 4, 3, padding=1)
        >>> conv(jnp.ones((2, 3, {shape}))).shape, conv.weight.shape
        ((2, 4, {shape}), (4, 3{", 3" * n}))
    """


def _transpose_doc(n: int) -> str:
    shape = ", ".join(["4"] * n)
    out = ", ".join(["8"] * n)
    return f"""PyTorch's `nn.ConvTranspose{n}d`: the gradient of `Conv{n}d` with respect to its input.

    Output size per dim: `(in - 1) * stride - 2 * padding + dilation * (k - 1)
    + output_padding + 1`. `weight` is `(in_channels, out_channels // groups,
    *kernel_size)`. The numerics are `blox.core.ConvTranspose`'s with the
    kernel flipped (a layout change, see `_layout.py`).

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: An int or {n} ints.
        stride: An int or {n} ints.
        padding: An int or {n} ints.
        output_padding: Extra size at the end of each dim (less than stride).
        groups: Channel groups.
        bias: Learn `bias`.
        dilation: An int or {n} ints.
        padding_mode: Only ``'zeros'``.
        device: Only `None`.
        dtype: Storage dtype of the parameters.
        seed: Int or key for this layer's init.

    Raises:
        ValueError: On a malformed size, padding or group count.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager import torch_nn as nn
        >>> up = nn.ConvTranspose{n}d(3, 2, 4, stride=2, padding=1)
        >>> up(jnp.ones((1, 3, {shape}))).shape, up.weight.shape
        ((1, 2, {out}), (3, 2{", 4" * n}))
    """


def _make_conv(n: int) -> type:
    def __init__(
        self: Any,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: Any = None,
        dtype: Any = None,
        *,
        seed: Any = None,
    ) -> None:
        _ConvNd.__init__(self)
        self._setup(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
            device,
            dtype,
            seed,
        )

    axes = " ".join(["l"] if n == 1 else ["h", "w"] if n == 2 else ["d", "h", "w"])
    out_axes = " ".join(["_"] * n)

    @typecheck
    def forward(
        self: Any, input: Float[Array, f"*batch {{self.in_channels}} {axes}"]
    ) -> Float[Array, f"*batch {{self.out_channels}} {out_axes}"]:
        """Applies the convolution."""
        return self._forward(input)

    name = f"Conv{n}d"
    cls = type(
        name,
        (_ConvNd,),
        {"__init__": __init__, "forward": forward, "_n": n, "__doc__": _conv_doc(n)},
    )
    cls.__module__, cls.__qualname__ = __name__, name
    return cls


def _make_transpose(n: int) -> type:
    def __init__(
        self: Any,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        output_padding: Any = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: Any = 1,
        padding_mode: str = "zeros",
        device: Any = None,
        dtype: Any = None,
        *,
        seed: Any = None,
    ) -> None:
        _ConvNd.__init__(self)
        self._setup(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
            device,
            dtype,
            seed,
            output_padding,
        )

    axes = " ".join(["l"] if n == 1 else ["h", "w"] if n == 2 else ["d", "h", "w"])
    out_axes = " ".join(["_"] * n)

    @typecheck
    def forward(
        self: Any, input: Float[Array, f"*batch {{self.in_channels}} {axes}"]
    ) -> Float[Array, f"*batch {{self.out_channels}} {out_axes}"]:
        """Applies the transposed convolution."""
        return self._forward(input)

    name = f"ConvTranspose{n}d"
    attrs = {"__init__": __init__, "forward": forward, "_n": n, "_transposed": True}
    cls = type(name, (_ConvNd,), {**attrs, "__doc__": _transpose_doc(n)})
    cls.__module__, cls.__qualname__ = __name__, name
    return cls


Conv1d = _make_conv(1)
Conv2d = _make_conv(2)
Conv3d = _make_conv(3)
ConvTranspose1d = _make_transpose(1)
ConvTranspose2d = _make_transpose(2)
ConvTranspose3d = _make_transpose(3)
