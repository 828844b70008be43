"""`BatchNorm1d/2d/3d`, `LayerNorm`, `GroupNorm`, `InstanceNorm1d/2d/3d` with PyTorch's semantics.

Each is `blox.core`'s norm with PyTorch's options switched on: channels
first, the running statistics updated as `(1 - momentum) * running +
momentum * batch` with the unbiased batch variance, `momentum=None` as the
cumulative average over `num_batches_tracked`, `affine` as `use_scale` and
`use_bias`, and PyTorch's names (`weight`, `bias`).
"""

from typing import Any

import jax.numpy as jnp
from jaxtyping import Array, Float

from blox import core

from .._seed import example_zeros
from .._typecheck import typecheck
from ._layout import Name
from ._shell import Shell, check_device

_AFFINE = (Name("weight", "scale"), Name("bias", "bias"))
_STATS = (Name("running_mean", "running_mean"), Name("running_var", "running_var"))
_COUNT = (Name("num_batches_tracked", "num_batches_tracked"),)


class _BatchNorm(Shell):
    _ranks: tuple[int, ...] = ()

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: Any = None,
        dtype: Any = None,
        *,
        seed: Any = None,
    ) -> None:
        super().__init__()
        where = f"nn.{type(self).__name__}({num_features})"
        check_device(where, device)
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(
                f"{where}: expected momentum in [0, 1] or None, got {momentum!r}. Fix: "
                "use PyTorch's convention (the weight of the new batch, e.g. 0.1)."
            )
        self.num_features = num_features
        self.eps, self.momentum, self.affine = eps, momentum, affine
        self.track_running_stats = track_running_stats
        options = {
            "momentum": None if momentum is None else 1.0 - momentum,
            "epsilon": eps,
            "use_scale": affine,
            "use_bias": affine,
            "channels_first": True,
            "track_running_stats": track_running_stats,
            "unbiased_running_var": True,
            "count_batches": track_running_stats,
        }
        names = (_AFFINE if affine else ()) + ((_STATS + _COUNT) if track_running_stats else ())
        example = example_zeros((2, num_features), jnp.float32)
        self._adopt(
            where,
            core.BatchNorm,
            (),
            options,
            names,
            (example,),
            seed=seed,
            dtype=dtype,
            call_kwargs=(("is_training", False),),
        )

    def _forward(self, input: Array) -> Array:
        if input.ndim not in self._ranks:
            raise ValueError(
                f"nn.{type(self).__name__}({self.num_features}): expected an input of rank "
                f"{' or '.join(map(str, self._ranks))} (N, C, ...), got shape "
                f"{tuple(input.shape)}. Fix: use the BatchNorm of your input's rank."
            )
        return self.call_core(self.core_layer, input, is_training=self.training)

    @typecheck
    def forward(
        self, input: Float[Array, "n {self.num_features} *spatial"]
    ) -> Float[Array, "n {self.num_features} *spatial"]:
        """Normalises over the batch and spatial dims (per channel)."""
        return self._forward(input)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats}"
        )


class BatchNorm1d(_BatchNorm):
    """PyTorch's `nn.BatchNorm1d` over `(N, C)` or `(N, C, L)`.

    Buffers `running_mean`, `running_var` (unbiased), `num_batches_tracked`;
    parameters `weight`, `bias` (with `affine`). The numerics are
    `blox.core.BatchNorm`'s.

    Args:
        num_features: Channels `C`.
        eps: Added to the variance.
        momentum: Weight of the new batch statistic (PyTorch's convention);
            `None`: cumulative average.
        affine: Learn `weight` and `bias`.
        track_running_stats: Keep running statistics (otherwise batch
            statistics in both modes).
        device: Only `None`.
        dtype: Storage dtype of `weight` and `bias`.
        seed: Int or key for this layer's init.

    Raises:
        ValueError: If `momentum` is outside `[0, 1]` or the input rank is wrong.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager import torch_nn as nn
        >>> bn = nn.BatchNorm1d(3)
        >>> _ = bn(jnp.arange(6.0).reshape(2, 3))
        >>> [round(v, 4) for v in bn.running_mean.tolist()], int(bn.num_batches_tracked)
        ([0.15, 0.25, 0.35], 1)
    """

    _ranks = (2, 3)


class BatchNorm2d(_BatchNorm):
    """PyTorch's `nn.BatchNorm2d` over `(N, C, H, W)`; arguments as `BatchNorm1d`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager import torch_nn as nn
        >>> list(nn.BatchNorm2d(3).state_dict())
        ['weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked']
    """

    _ranks = (4,)


class BatchNorm3d(_BatchNorm):
    """PyTorch's `nn.BatchNorm3d` over `(N, C, D, H, W)`; arguments as `BatchNorm1d`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager import torch_nn as nn
        >>> nn.BatchNorm3d(2)(jnp.ones((2, 2, 1, 2, 2))).shape
        (2, 2, 1, 2, 2)
    """

    _ranks = (5,)


class LayerNorm(Shell):
    """PyTorch's `nn.LayerNorm`: normalises over the last `len(normalized_shape)` dims.

    `weight` and `bias` have shape `normalized_shape`. The numerics are
    `blox.core.LayerNorm`'s (with `reduction_axes` and `feature_axes` the
    trailing dims).

    Args:
        normalized_shape: An int or the trailing shape to normalise over.
        eps: Added to the variance.
        elementwise_affine: Learn `weight` (and `bias`).
        bias: Learn `bias` (with `elementwise_affine`).
        device: Only `None`.
        dtype: Storage dtype of the parameters.
        seed: Int or key for this layer's init.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager import torch_nn as nn
        >>> ln = nn.LayerNorm((2, 3))
        >>> ln(jnp.ones((4, 2, 3))).shape, ln.weight.shape
        ((4, 2, 3), (2, 3))
    """

    def __init__(
        self,
        normalized_shape: int | tuple[int, ...],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
        *,
        seed: Any = None,
    ) -> None:
        super().__init__()
        shape = (
            (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        )
        where = f"nn.LayerNorm({shape})"
        check_device(where, device)
        self.normalized_shape, self.eps = shape, eps
        self.elementwise_affine = elementwise_affine
        axes = tuple(range(-len(shape), 0))
        use_bias = elementwise_affine and bias
        options = {
            "epsilon": eps,
            "use_scale": elementwise_affine,
            "use_bias": use_bias,
            "reduction_axes": axes,
            "feature_axes": axes,
        }
        names = (_AFFINE[:1] if elementwise_affine else ()) + (_AFFINE[1:] if use_bias else ())
        example = example_zeros((1, *shape), jnp.float32)
        self._adopt(where, core.LayerNorm, (), options, names, (example,), seed=seed, dtype=dtype)

    @typecheck
    def forward(self, input: Float[Array, "*batch"]) -> Float[Array, "*batch"]:
        """Normalises the trailing `normalized_shape` dims."""
        k = len(self.normalized_shape)
        if tuple(input.shape[input.ndim - k :]) != self.normalized_shape:
            raise ValueError(
                f"nn.LayerNorm({self.normalized_shape}): expected an input ending in "
                f"{self.normalized_shape}, got shape {tuple(input.shape)}. Fix: pass the "
                "trailing shape of your input as normalized_shape."
            )
        return self.call_core(self.core_layer, input)

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
        )


class GroupNorm(Shell):
    """PyTorch's `nn.GroupNorm`: `(N, C, *)`, statistics per example over each group.

    The numerics are `blox.core.GroupNorm`'s (channels first, two-pass variance).

    Args:
        num_groups: Groups; must divide `num_channels`.
        num_channels: Channels `C`.
        eps: Added to the variance.
        affine: Learn per-channel `weight` and `bias`.
        device: Only `None`.
        dtype: Storage dtype of the parameters.
        seed: Int or key for this layer's init.

    Raises:
        ValueError: If `num_groups` does not divide `num_channels`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager import torch_nn as nn
        >>> nn.GroupNorm(2, 4)(jnp.ones((3, 4, 5))).shape
        (3, 4, 5)
    """

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        device: Any = None,
        dtype: Any = None,
        *,
        seed: Any = None,
    ) -> None:
        super().__init__()
        where = f"nn.GroupNorm({num_groups}, {num_channels})"
        check_device(where, device)
        if num_groups <= 0 or num_channels % num_groups:
            raise ValueError(
                f"{where}: expected num_groups to divide num_channels, got {num_groups} "
                f"and {num_channels}. Fix: pick a divisor of the channel count."
            )
        self.num_groups, self.num_channels = num_groups, num_channels
        self.eps, self.affine = eps, affine
        options = {
            "num_groups": num_groups,
            "epsilon": eps,
            "use_scale": affine,
            "use_bias": affine,
            "channels_first": True,
            "use_fast_variance": False,
        }
        example = example_zeros((1, num_channels), jnp.float32)
        self._adopt(
            where,
            core.GroupNorm,
            (),
            options,
            _AFFINE if affine else (),
            (example,),
            seed=seed,
            dtype=dtype,
        )

    @typecheck
    def forward(
        self, input: Float[Array, "n {self.num_channels} *spatial"]
    ) -> Float[Array, "n {self.num_channels} *spatial"]:
        """Normalises each example's channel groups."""
        return self.call_core(self.core_layer, input)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class _InstanceNorm(Shell):
    _n = 0

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = False,
        track_running_stats: bool = False,
        device: Any = None,
        dtype: Any = None,
        *,
        seed: Any = None,
    ) -> None:
        super().__init__()
        where = f"nn.{type(self).__name__}({num_features})"
        check_device(where, device)
        if track_running_stats:
            raise ValueError(
                f"{where}: expected track_running_stats=False, got True. Fix: drop it "
                "(running statistics for InstanceNorm are not supported yet)."
            )
        self.num_features, self.eps, self.affine = num_features, eps, affine
        options = {
            "epsilon": eps,
            "use_scale": affine,
            "use_bias": affine,
            "feature_axes": 1,
            "use_fast_variance": False,
        }
        example = example_zeros((1, num_features) + (1,) * self._n, jnp.float32)
        self._adopt(
            where,
            core.InstanceNorm,
            (),
            options,
            _AFFINE if affine else (),
            (example,),
            seed=seed,
            dtype=dtype,
        )

    @typecheck
    def forward(
        self, input: Float[Array, "n {self.num_features} *spatial"]
    ) -> Float[Array, "n {self.num_features} *spatial"]:
        """Normalises each example's channels over their spatial dims."""
        if input.ndim != self._n + 2:
            raise ValueError(
                f"nn.{type(self).__name__}({self.num_features}): expected input (N, C, "
                f"{self._n} spatial dims), got shape {tuple(input.shape)}. Fix: add the "
                "batch axis, e.g. x[None]."
            )
        return self.call_core(self.core_layer, input)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine={self.affine}"


class InstanceNorm1d(_InstanceNorm):
    """PyTorch's `nn.InstanceNorm1d` over `(N, C, L)` (no running statistics).

    Args:
        num_features: Channels `C`.
        eps: Added to the variance.
        momentum: Accepted for PyTorch's signature (no running statistics).
        affine: Learn per-channel `weight` and `bias`.
        track_running_stats: Only `False`.
        device: Only `None`.
        dtype: Storage dtype of the parameters.
        seed: Int or key for this layer's init.

    Raises:
        ValueError: With `track_running_stats=True` or the wrong input rank.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager import torch_nn as nn
        >>> y = nn.InstanceNorm1d(2)(jnp.arange(12.0).reshape(2, 2, 3))
        >>> [round(v, 3) for v in y[0, 0].tolist()]
        [-1.225, 0.0, 1.225]
    """

    _n = 1


class InstanceNorm2d(_InstanceNorm):
    """PyTorch's `nn.InstanceNorm2d` over `(N, C, H, W)`; arguments as `InstanceNorm1d`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager import torch_nn as nn
        >>> nn.InstanceNorm2d(2, affine=True)(jnp.ones((1, 2, 3, 3))).shape
        (1, 2, 3, 3)
    """

    _n = 2


class InstanceNorm3d(_InstanceNorm):
    """PyTorch's `nn.InstanceNorm3d` over `(N, C, D, H, W)`; arguments as `InstanceNorm1d`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager import torch_nn as nn
        >>> nn.InstanceNorm3d(2)(jnp.ones((1, 2, 2, 3, 3))).shape
        (1, 2, 2, 3, 3)
    """

    _n = 3
