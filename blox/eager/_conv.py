"""Eager `Conv`, `ConvTranspose` and `ConvLocal`: build the core layers and call them.

The call is shape-checked for the layer's layout: channels last
(`(*batch, *spatial, in_channels)`) by one annotation, channels first
(`(*batch, in_channels, *spatial)`) by one per number of spatial dims, since
a jaxtyping shape holds a single variadic part.
"""

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jaxtyping import Array, Float

from blox import core

from ._core_module import CoreModule
from ._seed import build_core, check_groups, check_sizes, example_zeros, init_params
from ._typecheck import typecheck


def _is_array(value: Any) -> bool:
    return isinstance(value, jax.Array | np.ndarray)


def _kernel_tuple(kernel_size: int | Sequence[int]) -> tuple[int, ...]:
    return (kernel_size,) if isinstance(kernel_size, int) else tuple(kernel_size)


class _ConvLayer(CoreModule):
    _core_cls: Any = None

    def _build(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        options: dict[str, Any],
        seed: Any,
        spatial: Sequence[int] | None = None,
        shown: str = "",
    ) -> None:
        kernel = _kernel_tuple(kernel_size)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel
        # Configuration only: an array option (a kernel `mask`) is kept as nested
        # lists here, for repr; the core layer holds the array itself.
        self.options = tuple(
            sorted(
                ((k, np.asarray(v).tolist() if _is_array(v) else v) for k, v in options.items()),
                key=lambda kv: kv[0],
            )
        )
        where = (
            f"nn.{type(self).__name__}({in_channels}, {out_channels}, kernel_size={kernel}{shown})"
        )
        check_sizes(where, in_channels=in_channels, out_channels=out_channels, kernel_size=kernel)
        check_groups(where, options.get("feature_group_count", 1), in_channels, out_channels)
        layer, rng = build_core(where, self._core_cls, (kernel, out_channels), options)
        spatial = list(_example_spatial(layer) if spatial is None else spatial)
        batch = getattr(layer, "batch_group_count", 1)
        if layer.channels_first:
            shape = (batch, in_channels, *spatial)
        else:
            shape = (batch, *spatial, in_channels)
        x = example_zeros(shape)
        params = init_params(where, rng, seed, lambda p: layer(p, x)[1], signature=(layer, x.shape))
        self.adopt_core(layer, params, keep=lambda path: path[1] != "rng")

    def __call__(self, x: Any, *, precision: Any = None) -> Any:
        """Applies the layer to `(*batch, *spatial, in_channels)`.

        With `channels_first=True` the layout is `(*batch, in_channels, *spatial)`
        in and `(*batch, out_channels, *out_spatial)` out.
        """
        if not self.core_layer.channels_first:
            return self._last(x, precision=precision)
        checked = (self._first1, self._first2, self._first3)
        n = len(self.kernel_size)
        call = checked[n - 1] if n <= len(checked) else self._first_any
        return call(x, precision=precision)

    @typecheck
    def _last(
        self, x: Float[Array, "*batch_and_spatial {self.in_channels}"], *, precision: Any
    ) -> Float[Array, "*batch_and_out_spatial {self.out_channels}"]:
        return self.call_core(self.core_layer, x, precision=precision)

    @typecheck
    def _first1(
        self, x: Float[Array, "*batch {self.in_channels} w"], *, precision: Any
    ) -> Float[Array, "*batch {self.out_channels} out_w"]:
        return self.call_core(self.core_layer, x, precision=precision)

    @typecheck
    def _first2(
        self, x: Float[Array, "*batch {self.in_channels} h w"], *, precision: Any
    ) -> Float[Array, "*batch {self.out_channels} out_h out_w"]:
        return self.call_core(self.core_layer, x, precision=precision)

    @typecheck
    def _first3(
        self, x: Float[Array, "*batch {self.in_channels} d h w"], *, precision: Any
    ) -> Float[Array, "*batch {self.out_channels} out_d out_h out_w"]:
        return self.call_core(self.core_layer, x, precision=precision)

    @typecheck
    def _first_any(self, x: Float[Array, "..."], *, precision: Any) -> Float[Array, "..."]:
        return self.call_core(self.core_layer, x, precision=precision)

    def extra_repr(self) -> str:
        shown = "".join(
            f", {k}={v!r}" for k, v in self.options if k not in ("kernel_init", "bias_init")
        )
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}{shown}"


def _example_spatial(layer: Any) -> list[int]:
    """Spatial sizes of the input that creates the parameters.

    One full (dilated) window, plus what negative explicit padding crops away,
    gives at least one output position for any stride, dilation or padding.
    """
    extents = [(k - 1) * d + 1 for k, d in zip(layer.kernel_size, layer.kernel_dilation)]
    if isinstance(layer.padding, str):
        return extents
    return [e + sum(max(-p, 0) for p in pair) for e, pair in zip(extents, layer.padding)]


class Conv(_ConvLayer):
    """N-d convolution, channels last unless `channels_first`; `len(kernel_size)` spatial dims.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Window per spatial dim (an int means 1-D).
        strides: Stride per spatial dim.
        padding: ``'SAME'``, ``'VALID'``, ``'CIRCULAR'``, ``'REFLECT'``,
            ``'REPLICATE'``, ``'CAUSAL'``, an int, or one int or
            `(low, high)` pair per spatial dim (see `blox.core.Conv`).
        seed: Int or key for this layer's init; default: the global stream.
        **options: Other `blox.core.Conv` options (`input_dilation`,
            `kernel_dilation`, `feature_group_count`, `batch_group_count`,
            `use_bias`, `mask`, `dtype`, `param_dtype`, `channels_first`,
            inits, metadata).

    Shapes:
        `(*batch, *spatial, in_channels)` -> `(*batch, *out_spatial, out_channels)`,
        or `(*batch, in_channels, *spatial)` -> `(*batch, out_channels, *out_spatial)`
        with `channels_first=True`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> conv = nn.Conv(1, 8, kernel_size=(3, 3))
        >>> conv(jnp.ones((2, 8, 8, 1))).shape, conv.kernel.shape
        ((2, 8, 8, 8), (3, 3, 1, 8))
        >>> torch_like = nn.Conv(1, 8, 3, padding='REPLICATE', channels_first=True)
        >>> torch_like(jnp.ones((2, 1, 10))).shape
        (2, 8, 10)
    """

    _core_cls = core.Conv

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        *,
        strides: int | Sequence[int] = 1,
        padding: Any = "SAME",
        seed: Any = None,
        **options: Any,
    ) -> None:
        super().__init__()
        options = {"strides": strides, "padding": padding, **options}
        self._build(in_channels, out_channels, kernel_size, options, seed)


class ConvTranspose(_ConvLayer):
    """N-d transposed convolution, channels last unless `channels_first` (grouped too).

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Window per spatial dim (an int means 1-D).
        strides: Upsampling factor per spatial dim.
        padding: ``'SAME'``, ``'VALID'``, ``'CIRCULAR'``, an int, or one int
            or `(low, high)` pair per dim (see `blox.core.ConvTranspose`).
        seed: Int or key for this layer's init; default: the global stream.
        **options: Other `blox.core.ConvTranspose` options (`kernel_dilation`,
            `feature_group_count`, `transpose_kernel`, `use_bias`, `mask`,
            `dtype`, `param_dtype`, `channels_first`, inits, metadata).

    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> up = nn.ConvTranspose(4, 2, kernel_size=(2, 2), strides=2)
        >>> up(jnp.ones((1, 5, 5, 4))).shape
        (1, 10, 10, 2)
    """

    _core_cls = core.ConvTranspose

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        *,
        strides: int | Sequence[int] = 1,
        padding: Any = "SAME",
        seed: Any = None,
        **options: Any,
    ) -> None:
        super().__init__()
        options = {"strides": strides, "padding": padding, **options}
        self._build(in_channels, out_channels, kernel_size, options, seed)


class ConvLocal(_ConvLayer):
    """Locally connected N-d convolution (unshared weights) for one input size.

    Its kernel `(*out_spatial, prod(kernel_size) * in_channels, out_channels)`
    and bias `(*out_spatial, out_channels)` depend on the input's spatial
    size, so that size is given here and every call must have it.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Window per spatial dim (an int means 1-D).
        input_size: Spatial size of the inputs (an int means 1-D).
        strides: Stride per spatial dim.
        padding: Any `nn.Conv` padding.
        seed: Int or key for this layer's init; default: the global stream.
        **options: Other `blox.core.ConvLocal` options (`input_dilation`,
            `kernel_dilation`, `use_bias`, `mask`, `dtype`, `param_dtype`,
            `channels_first`, inits, metadata).

    Shapes:
        `(*batch, *input_size, in_channels)` -> `(*batch, *out_spatial, out_channels)`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> local = nn.ConvLocal(3, 4, 3, 8, padding='VALID')
        >>> local(jnp.ones((2, 8, 3))).shape, local.kernel.shape, local.bias.shape
        ((2, 6, 4), (6, 9, 4), (6, 4))
    """

    _core_cls = core.ConvLocal

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        input_size: int | Sequence[int],
        *,
        strides: int | Sequence[int] = 1,
        padding: Any = "SAME",
        seed: Any = None,
        **options: Any,
    ) -> None:
        super().__init__()
        size = (input_size,) if isinstance(input_size, int) else tuple(input_size)
        kernel = _kernel_tuple(kernel_size)
        if len(size) != len(kernel):
            raise ValueError(
                f"nn.ConvLocal({in_channels}, {out_channels}, kernel_size={kernel}): "
                f"expected input_size with {len(kernel)} spatial sizes (one per kernel "
                f"dim), got {input_size!r}. Fix: pass the inputs' spatial shape, e.g. "
                f"{(8,) * len(kernel)}."
            )
        self.input_size = size
        options = {"strides": strides, "padding": padding, **options}
        self._build(
            in_channels,
            out_channels,
            kernel_size,
            options,
            seed,
            spatial=size,
            shown=f", input_size={size}",
        )

    def extra_repr(self) -> str:
        base = super().extra_repr()
        head = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        return head + f", input_size={self.input_size}" + base[len(head) :]
