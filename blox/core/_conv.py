"""`Conv`, `ConvTranspose` and `ConvLocal`: N-d convolutions over any batch dims.

Each layer reshapes `(*batch, *spatial, channels)` (or, with
`channels_first=True`, `(*batch, channels, *spatial)`) to one batch axis,
calls `jax.lax` with dimension numbers for that layout, and reshapes back.
Kernels keep one layout whatever the input layout, so parameters move
between channels-last and channels-first models unchanged.

Padding is resolved here, not in `jax.lax`: flax.linen's `'CIRCULAR'`,
`'REFLECT'` and `'CAUSAL'` pad the input first (`jnp.pad`) and convolve
`'VALID'`; `'REPLICATE'` (edge padding, PyTorch's `padding_mode='replicate'`)
is a blox addition that works the same way. Strings are also turned into
explicit pads where `jax.lax` refuses them, which is what lets `Conv`
combine `input_dilation > 1` with `'SAME'`/`'VALID'` and `ConvTranspose`
support `feature_group_count > 1`.
"""

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import spatial_rank_fix
from ._dtypes import promote_dtype
from ._graph import Graph
from ._initializers import LECUN_NORMAL
from ._module import Initializer, Module, _lead, _where
from ._params import Params

PaddingLike = str | int | Sequence[int | tuple[int, int]]
_DEFAULT_KERNEL_INIT = LECUN_NORMAL  # jax.nn.initializers.lecun_normal(), picklable
_DEFAULT_BIAS_INIT = jax.nn.initializers.zeros
# Padding strings that pad the input with `jnp.pad` before a 'VALID' convolution.
_PAD_MODES = {"CIRCULAR": "wrap", "REFLECT": "reflect", "REPLICATE": "edge"}
CONV_PADDINGS = ("SAME", "VALID", "CIRCULAR", "REFLECT", "REPLICATE", "CAUSAL")
TRANSPOSE_PADDINGS = ("SAME", "VALID", "CIRCULAR")


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _as_tuple(value: int | Sequence[int], n: int, name: str, where: str) -> tuple[int, ...]:
    if _is_int(value):
        return (int(value),) * n
    value = tuple(value)
    if len(value) != n or not all(_is_int(v) for v in value):
        raise ValueError(
            f"{where}: expected {name} to be an int or {n} ints (one per spatial "
            f"dim), got {value!r}. Fix: pass e.g. {name}={(1,) * n}."
        )
    return tuple(int(v) for v in value)


def _check_padding(
    padding: Any, n: int, where: str, strings: Sequence[str] = ("SAME", "VALID")
) -> str | tuple[tuple[int, int], ...]:
    """A padding string (upper case) or one `(low, high)` pair per spatial dim.

    Accepts flax.linen's forms: a string from `strings`, an int (the same pad
    on both sides of every dim), or `n` entries that are each an int (both
    sides) or a `(low, high)` pair.
    """
    expected = (
        f"padding {', '.join(repr(s) for s in strings)}, an int, or {n} ints or (low, high) pairs"
    )
    if isinstance(padding, str):
        mode = padding.upper()
        if mode not in strings:
            raise ValueError(
                f"{where}: expected {expected}, got {padding!r}. Fix: use one of those."
            )
        if mode == "CAUSAL" and n != 1:
            raise ValueError(
                f"{where}: expected a 1-D kernel for padding='CAUSAL', got {n} spatial "
                "dims. Fix: pass explicit pairs, e.g. ((k - 1, 0), (0, 0)) to pad the "
                "first dim causally."
            )
        return mode
    if _is_int(padding):
        return ((int(padding), int(padding)),) * n
    if not isinstance(padding, Sequence):
        raise TypeError(
            f"{where}: expected {expected}, got {type(padding).__name__}. Fix: use one of those."
        )
    pairs = []
    for entry in padding:
        if _is_int(entry):
            pairs.append((int(entry), int(entry)))
        elif (
            isinstance(entry, Sequence)
            and not isinstance(entry, str)
            and len(entry) == 2
            and all(_is_int(v) for v in entry)
        ):
            pairs.append((int(entry[0]), int(entry[1])))
        else:
            pairs = None
            break
    if pairs is None or len(pairs) != n:
        raise ValueError(
            f"{where}: expected {expected}, got {padding!r}. Fix: give one int or "
            "(low, high) pair per spatial dim."
        )
    return tuple(pairs)


def _string_pads(
    padding: str, sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int]
) -> tuple[tuple[int, int], ...]:
    """Explicit pads of 'SAME'/'VALID' for (already dilated) sizes and kernels."""
    if padding == "VALID":
        return tuple((0, 0) for _ in sizes)
    pads = []
    for size, k, s in zip(sizes, kernel, strides, strict=True):
        out = -(-size // s)
        total = max((out - 1) * s + k - size, 0)
        pads.append((total // 2, total - total // 2))
    return tuple(pads)


def _transpose_pads(
    padding: Any, kernel: Sequence[int], strides: Sequence[int]
) -> tuple[tuple[int, int], ...]:
    """The pads `jax.lax.conv_transpose` uses by default, for grouped support."""
    if not isinstance(padding, str):
        return padding
    pads = []
    for k, s in zip(kernel, strides, strict=True):
        if padding == "SAME":
            total = k + s - 2
            low = k - 1 if s > k - 1 else -(-total // 2)
        else:
            total = k + s - 2 + max(k - s, 0)
            low = k - 1
        pads.append((low, total - low))
    return tuple(pads)


def _extents(kernel_size: Sequence[int], dilation: Sequence[int]) -> list[int]:
    return [(k - 1) * d + 1 for k, d in zip(kernel_size, dilation, strict=True)]


def _spatial_axes(n: int, channels_first: bool) -> tuple[int, ...]:
    """Spatial axes of the flattened `(N, ...)` array."""
    return tuple(range(2, n + 2)) if channels_first else tuple(range(1, n + 1))


def _dimension_numbers(
    n: int, transpose: bool, channels_first: bool = False
) -> jax.lax.ConvDimensionNumbers:
    spatial = _spatial_axes(n, channels_first)
    lhs = (0, 1 if channels_first else n + 1) + spatial
    # Kernel layout: (*kernel_size, in, out), or (*kernel_size, out, in) for a
    # ConvTranspose kernel used as stored; rhs_spec lists (out_dim, in_dim, *spatial).
    rhs = ((n, n + 1) if transpose else (n + 1, n)) + tuple(range(n))
    return jax.lax.ConvDimensionNumbers(lhs_spec=lhs, rhs_spec=rhs, out_spec=lhs)


def _pre_pad(
    inputs: jax.Array,
    padding: Any,
    kernel_size: Sequence[int],
    kernel_dilation: Sequence[int],
    spatial: Sequence[int],
) -> tuple[jax.Array, Any]:
    """Applies the padding strings `jax.lax` lacks; returns `(inputs, lax padding)`.

    `'CIRCULAR'`, `'REFLECT'` and `'REPLICATE'` pad each spatial dim by
    `((e - 1) // 2, e // 2)` for a dilated kernel extent `e` (so stride 1 keeps
    the size); `'CAUSAL'` pads `e - 1` zeros on the left only.
    """
    if padding not in _PAD_MODES and padding != "CAUSAL":
        return inputs, padding
    pads = [(0, 0)] * inputs.ndim
    for axis, e in zip(spatial, _extents(kernel_size, kernel_dilation), strict=True):
        pads[axis] = (e - 1, 0) if padding == "CAUSAL" else ((e - 1) // 2, e // 2)
    if padding == "CAUSAL":
        return jnp.pad(inputs, pads), "VALID"
    return jnp.pad(inputs, pads, mode=_PAD_MODES[padding]), "VALID"


class _ConvBase(Module):
    def _setup(
        self,
        kernel_size: int | Sequence[int],
        output_channels: int,
        rng: Any,
        strides: Any,
        padding: Any,
        kernel_dilation: Any,
        paddings: Sequence[str],
    ) -> None:
        self.kernel_size = (kernel_size,) if isinstance(kernel_size, int) else tuple(kernel_size)
        self.output_channels = output_channels
        n = len(self.kernel_size)
        where = _where(self)
        self.rng = rng
        self.strides = _as_tuple(strides, n, "strides", where)
        self.padding = _check_padding(padding, n, where, paddings)
        self.kernel_dilation = _as_tuple(kernel_dilation, n, "kernel_dilation", where)

    def _setup_options(self, options: dict[str, Any]) -> None:
        for name, value in options.items():
            setattr(self, name, value)
        if self.mask is not None:
            self.mask = jnp.asarray(self.mask)

    def _channels(self, inputs: jax.Array) -> int:
        n = len(self.kernel_size)
        return inputs.shape[inputs.ndim - n - 1] if self.channels_first else inputs.shape[-1]

    def _flatten_batch(
        self, inputs: jax.Array, groups: int = 1
    ) -> tuple[jax.Array, tuple[int, ...]]:
        n = len(self.kernel_size)
        if jnp.ndim(inputs) < n + 1:
            layout = (
                f"channels, {n} spatial dims"
                if self.channels_first
                else (f"{n} spatial dims, channels")
            )
            fix = spatial_rank_fix(jnp.ndim(inputs), n, self.channels_first)
            raise ValueError(
                f"{_where(self)}: expected inputs of rank >= {n + 1} "
                f"(*batch, {layout}), got rank {jnp.ndim(inputs)} "
                f"with shape {tuple(jnp.shape(inputs))}. Fix: {fix}."
            )
        batch = inputs.shape[: inputs.ndim - n - 1]
        flat = inputs.reshape((math.prod(batch),) + inputs.shape[inputs.ndim - n - 1 :])
        channels = self._channels(inputs)
        for what, count in (
            ("input channels", channels),
            ("output_channels", self.output_channels),
        ):
            if count % groups:
                raise ValueError(
                    f"{_where(self)}: expected {what} divisible by "
                    f"feature_group_count={groups}, got {count}. Fix: choose a "
                    f"feature_group_count that divides both {channels} and "
                    f"{self.output_channels}."
                )
        return flat, batch

    def _kernel_and_bias(
        self, params: Params, kernel_shape: tuple[int, ...], bias_shape: tuple[int, ...]
    ) -> tuple[jax.Array, jax.Array | None, Params]:
        """Creates or reads `kernel` then `bias` (that key order), masks the kernel."""
        if self.mask is not None and tuple(self.mask.shape) != kernel_shape:
            raise ValueError(
                f"{_where(self)}: expected a mask of the kernel's shape {kernel_shape}, "
                f"got shape {tuple(self.mask.shape)}. Fix: build the mask with the "
                "kernel's shape (it multiplies the kernel elementwise)."
            )
        kernel, params = self.get_param(
            params,
            "kernel",
            kernel_shape,
            self.kernel_init,
            dtype=self.param_dtype,
            metadata=self.kernel_metadata,
            rng=self.rng,
        )
        bias = None
        if self.use_bias:
            bias, params = self.get_param(
                params,
                "bias",
                bias_shape,
                self.bias_init,
                dtype=self.param_dtype,
                metadata=self.bias_metadata,
                rng=self.rng,
            )
        if self.mask is not None:
            kernel = kernel * self.mask
        return kernel, bias, params

    def _add_bias(self, outputs: jax.Array, bias: jax.Array | None) -> jax.Array:
        if bias is None:
            return outputs
        if self.channels_first:
            bias = jnp.moveaxis(bias, -1, 0)  # (out, *spatial) or (out,)
            bias = bias.reshape(bias.shape + (1,) * (outputs.ndim - 1 - bias.ndim))
        return outputs + _lead(bias, outputs.ndim)

    def _lax_padding(self, flat: jax.Array, padding: Any, input_dilation: Sequence[int]) -> Any:
        """'SAME'/'VALID' as explicit pads when the input is dilated (`jax.lax` refuses)."""
        if not isinstance(padding, str) or all(d == 1 for d in input_dilation):
            return padding
        spatial = _spatial_axes(len(self.kernel_size), self.channels_first)
        sizes = [(flat.shape[a] - 1) * d + 1 for a, d in zip(spatial, input_dilation)]
        extents = _extents(self.kernel_size, self.kernel_dilation)
        return _string_pads(padding, sizes, extents, self.strides)


class Conv(_ConvBase):
    """N-d convolution; `len(kernel_size)` spatial dims (an int means 1-D).

    The kernel is `(*kernel_size, in // feature_group_count, out)` and the
    bias `(out,)`, named and shaped as flax.linen's `Conv`.

    Args:
        graph: This module's node.
        kernel_size: Window size per spatial dim.
        output_channels: Output channels.
        rng: `Rng` for initialisation.
        strides: Stride per spatial dim (an int applies to all).
        padding: ``'SAME'``, ``'VALID'``, ``'CIRCULAR'`` (periodic),
            ``'REFLECT'`` (mirror, edge not repeated), ``'REPLICATE'`` (edge
            values repeated; a blox addition), ``'CAUSAL'`` (1-D: left pad
            only, same length out), an int (both sides of every dim), or one
            int or `(low, high)` pair per spatial dim. The padded modes pad
            `((e - 1) // 2, e // 2)` per dim, `e` the dilated kernel size.
        input_dilation: Dilation of the input (works with string padding).
        kernel_dilation: Dilation of the kernel (atrous convolution).
        feature_group_count: Groups; must divide input and output channels.
        batch_group_count: Groups of the batch (mlax, `jax.lax`): the one
            batch axis is split into this many groups, each convolved with its
            slice of the output channels; the output batch is `N // count`.
        use_bias: Add a bias.
        mask: Optional array of the kernel's shape that multiplies the kernel
            (masked convolution, as flax.linen's `mask`).
        dtype: Computation dtype; `None` promotes inputs and params together.
        param_dtype: Dtype the params are created in.
        kernel_init: Initialiser of `kernel`.
        bias_init: Initialiser of `bias`.
        kernel_metadata: Metadata stored with the kernel.
        bias_metadata: Metadata stored with the bias.
        channels_first: Inputs and outputs are `(*batch, channels, *spatial)`
            (PyTorch's layout) instead of `(*batch, *spatial, channels)`; the
            kernel layout does not change.

    Shapes:
        `(*batch, *spatial, in)` -> `(*batch, *out_spatial, output_channels)`.

    Raises:
        ValueError: For a malformed option, inputs of too low rank, channels
            not divisible by the groups, or a mask of the wrong shape.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> conv = bx.Conv(g / 'conv', (3, 3), 8, rng=rng, strides=2)
        >>> y, params = conv(rng.seed(bx.Params(), seed=0), jnp.ones((2, 9, 9, 3)))
        >>> y.shape
        (2, 5, 5, 8)
        >>> wrap = bx.Conv(g / 'wrap', 3, 4, rng=rng, padding='CIRCULAR', channels_first=True)
        >>> wrap(params, jnp.ones((2, 3, 10)))[0].shape
        (2, 4, 10)
    """

    def __init__(
        self,
        graph: Graph,
        kernel_size: int | Sequence[int],
        output_channels: int,
        rng: Any = None,
        strides: int | Sequence[int] = 1,
        padding: PaddingLike = "SAME",
        input_dilation: int | Sequence[int] = 1,
        kernel_dilation: int | Sequence[int] = 1,
        feature_group_count: int = 1,
        use_bias: bool = True,
        kernel_init: Initializer = _DEFAULT_KERNEL_INIT,
        bias_init: Initializer = _DEFAULT_BIAS_INIT,
        kernel_metadata: dict[str, Any] | None = None,
        bias_metadata: dict[str, Any] | None = None,
        batch_group_count: int = 1,
        mask: Any = None,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        channels_first: bool = False,
    ) -> None:
        super().__init__(graph)
        self._setup(
            kernel_size, output_channels, rng, strides, padding, kernel_dilation, CONV_PADDINGS
        )
        n = len(self.kernel_size)
        self.input_dilation = _as_tuple(input_dilation, n, "input_dilation", _where(self))
        if feature_group_count > 1 and batch_group_count > 1:
            raise ValueError(
                f"{_where(self)}: expected feature_group_count or batch_group_count "
                f"to be 1, got {feature_group_count} and {batch_group_count}. Fix: "
                "use one kind of grouping at a time (jax.lax allows no more)."
            )
        self._setup_options(
            {
                "feature_group_count": feature_group_count,
                "batch_group_count": batch_group_count,
                "use_bias": use_bias,
                "mask": mask,
                "dtype": dtype,
                "param_dtype": param_dtype,
                "kernel_init": kernel_init,
                "bias_init": bias_init,
                "kernel_metadata": kernel_metadata,
                "bias_metadata": bias_metadata,
                "channels_first": channels_first,
            }
        )

    def _check_batch_groups(self, batch: tuple[int, ...]) -> tuple[int, ...]:
        count = self.batch_group_count
        if count == 1:
            return batch
        if len(batch) != 1 or batch[0] % count or self.output_channels % count:
            raise ValueError(
                f"{_where(self)}: expected one batch axis and a batch size and "
                f"output_channels divisible by batch_group_count={count}, got batch "
                f"dims {batch} and {self.output_channels} output channels. Fix: pass "
                f"inputs of shape (N, ...) with N and output_channels multiples of {count}."
            )
        return (batch[0] // count,)

    def __call__(
        self, params: Params, inputs: jax.Array, precision: Any = None
    ) -> tuple[jax.Array, Params]:
        """Applies the convolution; `precision` is passed to `jax.lax`."""
        groups = self.feature_group_count
        flat, batch = self._flatten_batch(inputs, groups)
        batch = self._check_batch_groups(batch)
        kernel_shape = self.kernel_size + (self._channels(inputs) // groups, self.output_channels)
        kernel, bias, params = self._kernel_and_bias(params, kernel_shape, (self.output_channels,))
        n = len(self.kernel_size)
        spatial = _spatial_axes(n, self.channels_first)
        flat, padding = _pre_pad(
            flat, self.padding, self.kernel_size, self.kernel_dilation, spatial
        )
        padding = self._lax_padding(flat, padding, self.input_dilation)
        flat, kernel, bias = promote_dtype(flat, kernel, bias, dtype=self.dtype)
        outputs = jax.lax.conv_general_dilated(
            flat,
            kernel,
            window_strides=self.strides,
            padding=padding,
            lhs_dilation=self.input_dilation,
            rhs_dilation=self.kernel_dilation,
            dimension_numbers=_dimension_numbers(n, False, self.channels_first),
            feature_group_count=groups,
            batch_group_count=self.batch_group_count,
            precision=precision,
        )
        outputs = self._add_bias(outputs, bias)
        return outputs.reshape(batch + outputs.shape[1:]), params


class ConvLocal(_ConvBase):
    """N-d locally connected convolution: like `Conv`, one kernel per output pixel.

    Unshared weights, as flax.linen's `ConvLocal` (`jax.lax.conv_general_dilated_local`):
    the kernel is `(*out_spatial, prod(kernel_size) * in, out)` and the bias
    `(*out_spatial, out)`, so both depend on the input's spatial size, fixed by
    the first call. Same names and shapes as flax's, whatever `channels_first`.

    Args:
        graph: This module's node.
        kernel_size: Window size per spatial dim (an int means 1-D).
        output_channels: Output channels.
        rng: `Rng` for initialisation.
        strides: Stride per spatial dim.
        padding: Any `Conv` padding.
        input_dilation: Dilation of the input.
        kernel_dilation: Dilation of the window.
        use_bias: Add a bias.
        mask: Optional array of the kernel's shape that multiplies the kernel
            (masked convolution, as flax.linen's `mask`).
        dtype: Computation dtype; `None` promotes inputs and params together.
        param_dtype: Dtype the params are created in.
        kernel_init: Initialiser of `kernel`.
        bias_init: Initialiser of `bias`.
        kernel_metadata: Metadata stored with the kernel.
        bias_metadata: Metadata stored with the bias.
        channels_first: Inputs and outputs are `(*batch, channels, *spatial)`
            (PyTorch's layout) instead of `(*batch, *spatial, channels)`; the
            kernel layout does not change.

    Shapes:
        `(*batch, *spatial, in)` -> `(*batch, *out_spatial, output_channels)`.

    Raises:
        ValueError: For a malformed option, inputs of too low rank, or a mask
            of the wrong shape.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> local = bx.ConvLocal(g / 'local', 3, 4, rng=rng, padding='VALID')
        >>> y, params = local(rng.seed(bx.Params(), seed=0), jnp.ones((1, 8, 3)))
        >>> y.shape, params[('net', 'local', 'kernel')].value.shape
        ((1, 6, 4), (6, 9, 4))
    """

    def __init__(
        self,
        graph: Graph,
        kernel_size: int | Sequence[int],
        output_channels: int,
        rng: Any = None,
        strides: int | Sequence[int] = 1,
        padding: PaddingLike = "SAME",
        input_dilation: int | Sequence[int] = 1,
        kernel_dilation: int | Sequence[int] = 1,
        use_bias: bool = True,
        kernel_init: Initializer = _DEFAULT_KERNEL_INIT,
        bias_init: Initializer = _DEFAULT_BIAS_INIT,
        kernel_metadata: dict[str, Any] | None = None,
        bias_metadata: dict[str, Any] | None = None,
        mask: Any = None,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        channels_first: bool = False,
    ) -> None:
        super().__init__(graph)
        self._setup(
            kernel_size, output_channels, rng, strides, padding, kernel_dilation, CONV_PADDINGS
        )
        n = len(self.kernel_size)
        self.input_dilation = _as_tuple(input_dilation, n, "input_dilation", _where(self))
        self._setup_options(
            {
                "use_bias": use_bias,
                "mask": mask,
                "dtype": dtype,
                "param_dtype": param_dtype,
                "kernel_init": kernel_init,
                "bias_init": bias_init,
                "kernel_metadata": kernel_metadata,
                "bias_metadata": bias_metadata,
                "channels_first": channels_first,
            }
        )

    def __call__(
        self, params: Params, inputs: jax.Array, precision: Any = None
    ) -> tuple[jax.Array, Params]:
        """Applies the local convolution; `precision` is passed to `jax.lax`."""
        flat, batch = self._flatten_batch(inputs)
        n = len(self.kernel_size)
        spatial = _spatial_axes(n, self.channels_first)
        flat, padding = _pre_pad(
            flat, self.padding, self.kernel_size, self.kernel_dilation, spatial
        )
        padding = self._lax_padding(flat, padding, self.input_dilation)
        channels = self._channels(inputs)
        numbers = _dimension_numbers(n, False, self.channels_first)
        shared = jax.ShapeDtypeStruct(
            self.kernel_size + (channels, self.output_channels), flat.dtype
        )
        out_shape = jax.eval_shape(
            lambda lhs, rhs: jax.lax.conv_general_dilated(
                lhs,
                rhs,
                self.strides,
                padding,
                lhs_dilation=self.input_dilation,
                rhs_dilation=self.kernel_dilation,
                dimension_numbers=numbers,
            ),
            jax.ShapeDtypeStruct(flat.shape, flat.dtype),
            shared,
        ).shape
        out_spatial = tuple(out_shape[a] for a in spatial)
        kernel, bias, params = self._kernel_and_bias(
            params,
            out_spatial + (math.prod(self.kernel_size) * channels, self.output_channels),
            out_spatial + (self.output_channels,),
        )
        flat, kernel, bias = promote_dtype(flat, kernel, bias, dtype=self.dtype)
        outputs = jax.lax.conv_general_dilated_local(
            flat,
            kernel,
            window_strides=self.strides,
            padding=padding,
            filter_shape=self.kernel_size,
            lhs_dilation=self.input_dilation,
            rhs_dilation=self.kernel_dilation,
            dimension_numbers=numbers,
            precision=precision,
        )
        outputs = self._add_bias(outputs, bias)
        return outputs.reshape(batch + outputs.shape[1:]), params


class ConvTranspose(_ConvBase):
    """N-d transposed convolution, the gradient-shaped inverse of `Conv`.

    With `transpose_kernel=False` (the default) it matches
    `jax.lax.conv_transpose` with the kernel `(*kernel_size, out, in // groups)`
    used as stored (the ancestor's layout; flax.linen's default kernel is
    `(*kernel_size, in, out)`, the same numbers with the last two axes
    swapped). With `transpose_kernel=True` the kernel is the one of the `Conv`
    this layer transposes, `(*kernel_size, out // groups, in)`, flipped
    spatially and with its channel axes swapped before use: flax.linen's
    `ConvTranspose(transpose_kernel=True)`, shape and numbers, and (with
    explicit `(low, high)` pairs) PyTorch's `ConvTranspose*d`. Both layouts
    support `feature_group_count > 1`, which `jax.lax.conv_transpose` lacks.

    Args:
        graph: This module's node.
        kernel_size: Window size per spatial dim (an int means 1-D).
        output_channels: Output channels.
        rng: `Rng` for initialisation.
        strides: Upsampling factor per spatial dim.
        padding: ``'SAME'``, ``'VALID'``, ``'CIRCULAR'`` (the output wrapped
            periodically to `size * stride`, as flax.linen), an int, or one
            int or `(low, high)` pair per dim, the pads of the equivalent
            stride-1 convolution over the stride-dilated input (as
            `jax.lax.conv_transpose`).
        kernel_dilation: Dilation of the kernel.
        feature_group_count: Groups; must divide input and output channels.
        transpose_kernel: Use the kernel as the forward `Conv`'s (see above).
        use_bias: Add a bias.
        mask: Optional array of the kernel's shape that multiplies the kernel
            (masked convolution, as flax.linen's `mask`).
        dtype: Computation dtype; `None` promotes inputs and params together.
        param_dtype: Dtype the params are created in.
        kernel_init: Initialiser of `kernel`.
        bias_init: Initialiser of `bias`.
        kernel_metadata: Metadata stored with the kernel.
        bias_metadata: Metadata stored with the bias.
        channels_first: Inputs and outputs are `(*batch, channels, *spatial)`
            (PyTorch's layout) instead of `(*batch, *spatial, channels)`; the
            kernel layout does not change.

    Shapes:
        `(*batch, *spatial, in)` -> `(*batch, *spatial * strides, output_channels)`
        for ``'SAME'`` and ``'CIRCULAR'``.

    Raises:
        ValueError: For a malformed option, inputs of too low rank, channels
            not divisible by the groups, or a mask of the wrong shape.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> up = bx.ConvTranspose(g / 'up', (3, 3), 4, rng=rng, strides=2,
        ...                       feature_group_count=2)
        >>> y, params = up(rng.seed(bx.Params(), seed=0), jnp.ones((5, 5, 6)))
        >>> y.shape, params[('net', 'up', 'kernel')].value.shape
        ((10, 10, 4), (3, 3, 4, 3))
        >>> flipped = bx.ConvTranspose(g / 'flip', 3, 4, rng=rng, strides=2,
        ...                            padding=((1, 2),), transpose_kernel=True)
        >>> y, params = flipped(params, jnp.ones((2, 5, 6)))
        >>> y.shape, params[('net', 'flip', 'kernel')].value.shape
        ((2, 10, 4), (3, 4, 6))
    """

    def __init__(
        self,
        graph: Graph,
        kernel_size: int | Sequence[int],
        output_channels: int,
        rng: Any = None,
        strides: int | Sequence[int] = 1,
        padding: PaddingLike = "SAME",
        kernel_dilation: int | Sequence[int] = 1,
        feature_group_count: int = 1,
        use_bias: bool = True,
        kernel_init: Initializer = _DEFAULT_KERNEL_INIT,
        bias_init: Initializer = _DEFAULT_BIAS_INIT,
        kernel_metadata: dict[str, Any] | None = None,
        bias_metadata: dict[str, Any] | None = None,
        transpose_kernel: bool = False,
        mask: Any = None,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        channels_first: bool = False,
    ) -> None:
        super().__init__(graph)
        self._setup(
            kernel_size,
            output_channels,
            rng,
            strides,
            padding,
            kernel_dilation,
            TRANSPOSE_PADDINGS,
        )
        self._setup_options(
            {
                "feature_group_count": feature_group_count,
                "use_bias": use_bias,
                "transpose_kernel": transpose_kernel,
                "mask": mask,
                "dtype": dtype,
                "param_dtype": param_dtype,
                "kernel_init": kernel_init,
                "bias_init": bias_init,
                "kernel_metadata": kernel_metadata,
                "bias_metadata": bias_metadata,
                "channels_first": channels_first,
            }
        )

    def _forward_kernel(self, kernel: jax.Array) -> jax.Array:
        """`(*k, out // g, in)` -> the `(*k, in // g, out)` kernel it transposes to.

        Each group's channel axes are swapped and the window is flipped, which
        turns the forward convolution's kernel into its input gradient's.
        """
        n, g = len(self.kernel_size), self.feature_group_count
        out_per, in_channels = kernel.shape[n], kernel.shape[n + 1]
        kernel = kernel.reshape(self.kernel_size + (out_per, g, in_channels // g))
        kernel = jnp.moveaxis(kernel, n + 2, n)  # (*k, in // g, out // g, g)
        kernel = jnp.swapaxes(kernel, n + 1, n + 2)  # (*k, in // g, g, out // g)
        kernel = kernel.reshape(self.kernel_size + (in_channels // g, g * out_per))
        return jnp.flip(kernel, axis=tuple(range(n)))

    def _wrap(self, outputs: jax.Array, inputs_flat: jax.Array) -> jax.Array:
        """'CIRCULAR': fold the full transposed output onto periods `size * stride`.

        The output is padded to a whole, even number of periods (split as
        flax.linen does, the odd cell on the right with `transpose_kernel`,
        on the left without) and the periods are summed.
        """
        spatial = _spatial_axes(len(self.kernel_size), self.channels_first)
        for axis, stride in zip(spatial, self.strides):
            period = inputs_flat.shape[axis] * stride
            extra = -(outputs.shape[axis] - period) % (2 * period)
            if self.transpose_kernel:
                pair = (extra // 2, (extra + 1) // 2)
            else:
                pair = ((extra + 1) // 2, extra // 2)
            pads = [(0, 0)] * outputs.ndim
            pads[axis] = pair
            outputs = jnp.pad(outputs, pads)
            shape = outputs.shape
            outputs = outputs.reshape(shape[:axis] + (-1, period) + shape[axis + 1 :]).sum(axis)
        return outputs

    def __call__(
        self, params: Params, inputs: jax.Array, precision: Any = None
    ) -> tuple[jax.Array, Params]:
        """Applies the transposed convolution; `precision` goes to `jax.lax`."""
        groups = self.feature_group_count
        flat, batch = self._flatten_batch(inputs, groups)
        channels = self._channels(inputs)
        if self.transpose_kernel:
            kernel_shape = self.kernel_size + (self.output_channels // groups, channels)
        else:
            kernel_shape = self.kernel_size + (self.output_channels, channels // groups)
        kernel, bias, params = self._kernel_and_bias(params, kernel_shape, (self.output_channels,))
        n = len(self.kernel_size)
        padding = "VALID" if self.padding == "CIRCULAR" else self.padding
        pads = _transpose_pads(
            padding, _extents(self.kernel_size, self.kernel_dilation), self.strides
        )
        flat, kernel, bias = promote_dtype(flat, kernel, bias, dtype=self.dtype)
        if self.transpose_kernel:
            kernel = self._forward_kernel(kernel)
        outputs = jax.lax.conv_general_dilated(
            flat,
            kernel,
            window_strides=(1,) * n,
            padding=pads,
            lhs_dilation=self.strides,
            rhs_dilation=self.kernel_dilation,
            dimension_numbers=_dimension_numbers(n, not self.transpose_kernel, self.channels_first),
            feature_group_count=groups,
            precision=precision,
        )
        if self.padding == "CIRCULAR":
            outputs = self._wrap(outputs, flat)
        outputs = self._add_bias(outputs, bias)
        return outputs.reshape(batch + outputs.shape[1:]), params
