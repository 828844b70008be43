"""Eager `Conv` and `ConvTranspose`: build the core layers and call them."""

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
from jaxtyping import Array, Float

from blox import core

from ._core_module import CoreModule
from ._seed import build_core, check_groups, check_sizes, init_params
from ._typecheck import typecheck


def _kernel_tuple(kernel_size: int | Sequence[int]) -> tuple[int, ...]:
    return (kernel_size,) if isinstance(kernel_size, int) else tuple(kernel_size)


class _ConvLayer(CoreModule):
    _core_cls: Any = None

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
        kernel = _kernel_tuple(kernel_size)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel
        self.options = tuple(sorted(options.items(), key=lambda kv: kv[0]))
        where = f"nn.{type(self).__name__}({in_channels}, {out_channels}, kernel_size={kernel})"
        check_sizes(where, in_channels=in_channels, out_channels=out_channels, kernel_size=kernel)
        check_groups(where, options.get("feature_group_count", 1), in_channels, out_channels)
        layer, rng = build_core(where, self._core_cls, (kernel, out_channels), options)
        x = jnp.zeros((1, *_example_spatial(layer), in_channels), jnp.float32)
        params = init_params(where, rng, seed, lambda p: layer(p, x)[1], signature=(layer, x.shape))
        self.adopt_core(layer, params, keep=lambda path: path[1] != "rng")

    @typecheck
    def __call__(
        self, x: Float[Array, "*batch_and_spatial {self.in_channels}"], *, precision: Any = None
    ) -> Float[Array, "*batch_and_out_spatial {self.out_channels}"]:
        """Applies the layer to `(*batch, *spatial, in_channels)`."""
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
    """N-d convolution, channels last; `len(kernel_size)` spatial dims.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Window per spatial dim (an int means 1-D).
        strides: Stride per spatial dim.
        padding: ``'SAME'``, ``'VALID'`` or `(low, high)` pairs.
        seed: Int or key for this layer's init; default: the global stream.
        **options: Other `blox.core.Conv` options (`input_dilation`,
            `kernel_dilation`, `feature_group_count`, `use_bias`, inits,
            metadata).

    Shapes:
        `(*batch, *spatial, in_channels)` -> `(*batch, *out_spatial, out_channels)`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> conv = nn.Conv(1, 8, kernel_size=(3, 3))
        >>> conv(jnp.ones((2, 8, 8, 1))).shape, conv.kernel.shape
        ((2, 8, 8, 8), (3, 3, 1, 8))
    """

    _core_cls = core.Conv


class ConvTranspose(_ConvLayer):
    """N-d transposed convolution, channels last (grouped too).

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Window per spatial dim (an int means 1-D).
        strides: Upsampling factor per spatial dim.
        padding: ``'SAME'``, ``'VALID'`` or `(low, high)` pairs.
        seed: Int or key for this layer's init; default: the global stream.
        **options: Other `blox.core.ConvTranspose` options.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> up = nn.ConvTranspose(4, 2, kernel_size=(2, 2), strides=2)
        >>> up(jnp.ones((1, 5, 5, 4))).shape
        (1, 10, 10, 2)
    """

    _core_cls = core.ConvTranspose
