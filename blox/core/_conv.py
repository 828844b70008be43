"""`Conv` and `ConvTranspose`: N-d convolutions, channels last, any batch dims.

Both reshape `(*batch, *spatial, channels)` to one batch axis, call
`jax.lax.conv_general_dilated` with channels-last dimension numbers, and
reshape back. Padding strings are turned into explicit pads here, which is
what lets `Conv` combine `input_dilation > 1` with `'SAME'`/`'VALID'` and
`ConvTranspose` support `feature_group_count > 1` (the ancestor could do
neither, because `jax.lax` refuses both).
"""

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from ._graph import Graph
from ._initializers import LECUN_NORMAL
from ._module import Initializer, Module, _lead, _where
from ._params import Params

PaddingLike = str | Sequence[tuple[int, int]]
_DEFAULT_KERNEL_INIT = LECUN_NORMAL  # jax.nn.initializers.lecun_normal(), picklable
_DEFAULT_BIAS_INIT = jax.nn.initializers.zeros


def _as_tuple(value: int | Sequence[int], n: int, name: str, where: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    value = tuple(value)
    if len(value) != n or not all(isinstance(v, int) for v in value):
        raise ValueError(
            f"{where}: expected {name} to be an int or {n} ints (one per spatial "
            f"dim), got {value!r}. Fix: pass e.g. {name}={(1,) * n}."
        )
    return value


def _check_padding(padding: Any, n: int, where: str) -> Any:
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise ValueError(
                f"{where}: expected padding 'SAME', 'VALID' or {n} (low, high) "
                f"pairs, got {padding!r}. Fix: use one of those."
            )
        return padding.upper()
    pairs = tuple(tuple(p) for p in padding)
    if len(pairs) != n or any(len(p) != 2 for p in pairs):
        raise ValueError(
            f"{where}: expected padding 'SAME', 'VALID' or {n} (low, high) pairs, "
            f"got {padding!r}. Fix: give one pair per spatial dim."
        )
    return pairs


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


def _promote(inputs: jax.Array, kernel: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Both operands in their promoted dtype, as `Linear`'s `jnp.dot` does.

    `jax.lax` convolutions refuse mixed dtypes, so without this a bfloat16
    input to a float32 kernel would fail instead of computing in float32.
    """
    dtype = jnp.result_type(inputs, kernel)
    return inputs.astype(dtype), kernel.astype(dtype)


def _dimension_numbers(n: int, transpose: bool) -> jax.lax.ConvDimensionNumbers:
    spatial = tuple(range(1, n + 1))
    lhs = (0, n + 1) + spatial
    # Kernel layout: (*kernel_size, in, out) for Conv, (*kernel_size, out, in) for
    # ConvTranspose; rhs_spec lists (out_dim, in_dim, *spatial_dims).
    rhs = ((n, n + 1) if transpose else (n + 1, n)) + tuple(range(n))
    return jax.lax.ConvDimensionNumbers(lhs_spec=lhs, rhs_spec=rhs, out_spec=lhs)


class _ConvBase(Module):
    def _setup(self, kernel_size: int | Sequence[int], output_channels: int) -> None:
        self.kernel_size = (kernel_size,) if isinstance(kernel_size, int) else tuple(kernel_size)
        self.output_channels = output_channels

    def _flatten_batch(self, inputs: jax.Array) -> tuple[jax.Array, tuple[int, ...]]:
        n = len(self.kernel_size)
        if jnp.ndim(inputs) < n + 1:
            raise ValueError(
                f"{_where(self)}: expected inputs of rank >= {n + 1} "
                f"(*batch, {n} spatial dims, channels), got rank {jnp.ndim(inputs)} "
                f"with shape {tuple(jnp.shape(inputs))}. Fix: add the channel axis, "
                "e.g. x[..., None]."
            )
        batch = inputs.shape[: inputs.ndim - n - 1]
        flat = inputs.reshape((math.prod(batch),) + inputs.shape[inputs.ndim - n - 1 :])
        channels = inputs.shape[-1]
        groups = self.feature_group_count
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

    def _finish(
        self, params: Params, outputs: jax.Array, batch: tuple[int, ...]
    ) -> tuple[jax.Array, Params]:
        if self.use_bias:
            bias, params = self.get_param(
                params,
                "bias",
                (self.output_channels,),
                self.bias_init,
                metadata=self.bias_metadata,
                rng=self.rng,
            )
            outputs = outputs + _lead(bias, outputs.ndim)
        return outputs.reshape(batch + outputs.shape[1:]), params


class Conv(_ConvBase):
    """N-d convolution; `len(kernel_size)` spatial dims (an int means 1-D).

    Args:
        graph: This module's node.
        kernel_size: Window size per spatial dim.
        output_channels: Output channels.
        rng: `Rng` for initialisation.
        strides: Stride per spatial dim (an int applies to all).
        padding: ``'SAME'``, ``'VALID'`` or one `(low, high)` pair per dim.
        input_dilation: Dilation of the input (works with string padding).
        kernel_dilation: Dilation of the kernel (atrous convolution).
        feature_group_count: Groups; must divide input and output channels.
        use_bias: Add a bias.
        kernel_init: Initialiser of `kernel` `(*kernel_size, in // groups, out)`.
        bias_init: Initialiser of `bias` `(out,)`.
        kernel_metadata: Metadata stored with the kernel.
        bias_metadata: Metadata stored with the bias.

    Shapes:
        `(*batch, *spatial, in)` -> `(*batch, *out_spatial, output_channels)`.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> conv = bx.Conv(g / 'conv', (3, 3), 8, rng=rng, strides=2)
        >>> y, params = conv(rng.seed(bx.Params(), seed=0), jnp.ones((2, 9, 9, 3)))
        >>> y.shape
        (2, 5, 5, 8)
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
    ) -> None:
        super().__init__(graph)
        self._setup(kernel_size, output_channels)
        n = len(self.kernel_size)
        where = _where(self)
        self.rng = rng
        self.strides = _as_tuple(strides, n, "strides", where)
        self.padding = _check_padding(padding, n, where)
        self.input_dilation = _as_tuple(input_dilation, n, "input_dilation", where)
        self.kernel_dilation = _as_tuple(kernel_dilation, n, "kernel_dilation", where)
        self.feature_group_count = feature_group_count
        self.use_bias = use_bias
        self.kernel_init = kernel_init
        self.bias_init = bias_init
        self.kernel_metadata = kernel_metadata
        self.bias_metadata = bias_metadata

    def __call__(
        self, params: Params, inputs: jax.Array, precision: Any = None
    ) -> tuple[jax.Array, Params]:
        """Applies the convolution; `precision` is passed to `jax.lax`."""
        flat, batch = self._flatten_batch(inputs)
        groups = self.feature_group_count
        kernel, params = self.get_param(
            params,
            "kernel",
            self.kernel_size + (inputs.shape[-1] // groups, self.output_channels),
            self.kernel_init,
            metadata=self.kernel_metadata,
            rng=self.rng,
        )
        padding = self.padding
        if isinstance(padding, str) and any(d > 1 for d in self.input_dilation):
            sizes = [(s - 1) * d + 1 for s, d in zip(flat.shape[1:-1], self.input_dilation)]
            kernel_extent = [
                (k - 1) * d + 1 for k, d in zip(self.kernel_size, self.kernel_dilation)
            ]
            padding = _string_pads(padding, sizes, kernel_extent, self.strides)
        flat, kernel = _promote(flat, kernel)
        outputs = jax.lax.conv_general_dilated(
            flat,
            kernel,
            window_strides=self.strides,
            padding=padding,
            lhs_dilation=self.input_dilation,
            rhs_dilation=self.kernel_dilation,
            dimension_numbers=_dimension_numbers(len(self.kernel_size), transpose=False),
            feature_group_count=groups,
            precision=precision,
        )
        return self._finish(params, outputs, batch)


class ConvTranspose(_ConvBase):
    """N-d transposed convolution, the gradient-shaped inverse of `Conv`.

    Matches `jax.lax.conv_transpose` (its default padding rule), and also
    supports `feature_group_count > 1`.

    Args:
        graph: This module's node.
        kernel_size: Window size per spatial dim (an int means 1-D).
        output_channels: Output channels.
        rng: `Rng` for initialisation.
        strides: Upsampling factor per spatial dim.
        padding: ``'SAME'``, ``'VALID'`` or one `(low, high)` pair per dim.
        kernel_dilation: Dilation of the kernel.
        feature_group_count: Groups; must divide input and output channels.
        use_bias: Add a bias.
        kernel_init: Initialiser of `kernel` `(*kernel_size, out, in // groups)`.
        bias_init: Initialiser of `bias` `(out,)`.
        kernel_metadata: Metadata stored with the kernel.
        bias_metadata: Metadata stored with the bias.

    Shapes:
        `(*batch, *spatial, in)` -> `(*batch, *spatial * strides, output_channels)`
        for ``'SAME'``.

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
    ) -> None:
        super().__init__(graph)
        self._setup(kernel_size, output_channels)
        n = len(self.kernel_size)
        where = _where(self)
        self.rng = rng
        self.strides = _as_tuple(strides, n, "strides", where)
        self.padding = _check_padding(padding, n, where)
        self.kernel_dilation = _as_tuple(kernel_dilation, n, "kernel_dilation", where)
        self.feature_group_count = feature_group_count
        self.use_bias = use_bias
        self.kernel_init = kernel_init
        self.bias_init = bias_init
        self.kernel_metadata = kernel_metadata
        self.bias_metadata = bias_metadata

    def __call__(
        self, params: Params, inputs: jax.Array, precision: Any = None
    ) -> tuple[jax.Array, Params]:
        """Applies the transposed convolution; `precision` goes to `jax.lax`."""
        flat, batch = self._flatten_batch(inputs)
        groups = self.feature_group_count
        kernel, params = self.get_param(
            params,
            "kernel",
            self.kernel_size + (self.output_channels, inputs.shape[-1] // groups),
            self.kernel_init,
            metadata=self.kernel_metadata,
            rng=self.rng,
        )
        kernel_extent = [(k - 1) * d + 1 for k, d in zip(self.kernel_size, self.kernel_dilation)]
        flat, kernel = _promote(flat, kernel)
        outputs = jax.lax.conv_general_dilated(
            flat,
            kernel,
            window_strides=(1,) * len(self.kernel_size),
            padding=_transpose_pads(self.padding, kernel_extent, self.strides),
            lhs_dilation=self.strides,
            rhs_dilation=self.kernel_dilation,
            dimension_numbers=_dimension_numbers(len(self.kernel_size), transpose=True),
            feature_group_count=groups,
            precision=precision,
        )
        return self._finish(params, outputs, batch)
