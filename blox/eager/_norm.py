"""Eager `LayerNorm`, `RMSNorm`, `BatchNorm`, `GroupNorm`, `InstanceNorm`: build the core layers and call them."""

from typing import Any, ClassVar

from jaxtyping import Array, Float

from blox import core

from ._core_module import CoreModule
from ._seed import build_core, check_sizes, example_zeros, init_params
from ._typecheck import typecheck


class _NormLayer(CoreModule):
    _core_cls: Any = None
    # Options at this layer's own default, left out of its repr (where the
    # eager default differs from the core's, the option is always passed on).
    _quiet_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(
        self, features: int, *, epsilon: float = 1e-5, seed: Any = None, **options: Any
    ) -> None:
        super().__init__()
        options = {"epsilon": epsilon, **options}
        self.features = features
        self.options = tuple(sorted(options.items(), key=lambda kv: kv[0]))
        where = f"nn.{type(self).__name__}({features})"
        check_sizes(where, features=features)
        layer, rng = build_core(where, self._core_cls, (), options)
        init_layer = layer
        if options.get("axis_name") is not None:
            # Parameters are made by one call outside any named axis, where `pmean`
            # fails; a twin without `axis_name` creates the very same parameters.
            local = {**options, "axis_name": None, "axis_index_groups": None}
            init_layer, rng = build_core(where, self._core_cls, (), local)
        x = example_zeros((1, features))
        kwargs = {"is_training": False} if self._core_cls is core.BatchNorm else {}
        params = init_params(
            where,
            rng,
            seed,
            lambda p: init_layer(p, x, **kwargs)[1],
            signature=(init_layer, features),
        )
        self.adopt_core(layer, params, keep=lambda path: path[1] != "rng")

    @typecheck
    def __call__(
        self, x: Float[Array, "*batch {self.features}"]
    ) -> Float[Array, "*batch {self.features}"]:
        """Normalises `x` (features last)."""
        return self.call_core(self.core_layer, x)

    def extra_repr(self) -> str:
        shown = "".join(
            f", {k}={v!r}"
            for k, v in self.options
            if not k.endswith("_init") and self._quiet_defaults.get(k, object()) != v
        )
        return f"{self.features}{shown}"


class LayerNorm(_NormLayer):
    """Normalises over the last axis, then `* scale + bias`.

    Args:
        features: Size of the last axis.
        epsilon: Added to the variance.
        seed: Int or key for this layer's init.
        **options: Other `blox.core.LayerNorm` options (`use_scale`,
            `use_bias`, inits, `axis_name`, `axis_index_groups`).

    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> ln = nn.LayerNorm(3)
        >>> [round(v, 3) for v in ln(jnp.array([1.0, 2.0, 3.0])).tolist()]
        [-1.225, 0.0, 1.225]
    """

    _core_cls = core.LayerNorm


class RMSNorm(_NormLayer):
    """Divides by the root mean square of the last axis, then `* scale`.

    Args:
        features: Size of the last axis.
        epsilon: Added to the mean square.
        seed: Int or key for this layer's init.
        **options: Other `blox.core.RMSNorm` options.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> nn.RMSNorm(4)(jnp.ones((2, 4))).shape
        (2, 4)
    """

    _core_cls = core.RMSNorm


class BatchNorm(_NormLayer):
    """Batch normalisation with running statistics, features last.

    Training mode normalises with batch statistics and updates
    `running_mean`/`running_var` (buffers) in place; eval mode uses them.
    The default is flax's formulation (`use_fast_variance=True`): the
    one-pass variance and one multiplier per feature, which trains a CNN
    on a CPU faster (docs/cnn-performance.md); `use_fast_variance=False` is
    the core default, the ancestor's two-pass variance and division.

    Args:
        features: Size of the last axis.
        momentum: Weight of the old running statistic.
        epsilon: Added to the variance.
        use_fast_variance: `E[x**2] - E[x]**2` and flax's order of operations
            (see `blox.core.BatchNorm`).
        seed: Int or key for this layer's init.
        **options: Other `blox.core.BatchNorm` options.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> bn = nn.BatchNorm(2)
        >>> _ = bn(jnp.array([[0.0, 1.0], [2.0, 3.0]]))
        >>> bn.running_mean.tolist()
        [0.10000000149011612, 0.20000000298023224]
    """

    _core_cls = core.BatchNorm
    _quiet_defaults: ClassVar[dict[str, Any]] = {"use_fast_variance": True}

    def __init__(
        self,
        features: int,
        *,
        momentum: float = 0.9,
        epsilon: float = 1e-5,
        use_fast_variance: bool = True,
        seed: Any = None,
        **options: Any,
    ) -> None:
        super().__init__(
            features,
            epsilon=epsilon,
            seed=seed,
            momentum=momentum,
            use_fast_variance=use_fast_variance,
            **options,
        )

    @typecheck
    def __call__(
        self, x: Float[Array, "batch *spatial {self.features}"]
    ) -> Float[Array, "batch *spatial {self.features}"]:
        """Normalises `x`; in training mode also updates the running statistics."""
        return self.call_core(self.core_layer, x, is_training=self.training)


class GroupNorm(_NormLayer):
    """Group normalisation over groups of channels, per example (flax's `GroupNorm`).

    Args:
        num_channels: Number of channels (last axis, or axis 1 with
            `channels_first=True`).
        num_groups: Number of groups (flax's default 32); `None` to give
            `group_size` instead.
        epsilon: Added to the variance.
        seed: Int or key for this layer's init.
        **options: Other `blox.core.GroupNorm` options (`group_size`,
            `channels_first`, `reduction_axes`, `use_scale`, `use_bias`,
            `use_fast_variance`, inits, `dtype`, `param_dtype`, `axis_name`).

    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> gn = nn.GroupNorm(4, num_groups=2)
        >>> gn(jnp.ones((2, 3, 4))).shape, gn.scale.shape
        ((2, 3, 4), (4,))
    """

    _core_cls = core.GroupNorm

    def __init__(
        self,
        num_channels: int,
        *,
        num_groups: int | None = 32,
        epsilon: float = 1e-6,
        seed: Any = None,
        **options: Any,
    ) -> None:
        super().__init__(num_channels, epsilon=epsilon, seed=seed, num_groups=num_groups, **options)

    @typecheck
    def __call__(self, x: Float[Array, "batch ..."]) -> Float[Array, "batch ..."]:
        """Normalises `x` per example and channel group."""
        return self.call_core(self.core_layer, x)


class InstanceNorm(_NormLayer):
    """Instance normalisation: per example and feature over the other axes (flax's).

    Args:
        features: Size of the feature axis (the last by default; pass
            `feature_axes=1` for channels first).
        epsilon: Added to the variance.
        seed: Int or key for this layer's init.
        **options: Other `blox.core.InstanceNorm` options.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> inorm = nn.InstanceNorm(3)
        >>> inorm(jnp.ones((2, 5, 3))).shape
        (2, 5, 3)
    """

    _core_cls = core.InstanceNorm

    def __init__(
        self, features: int, *, epsilon: float = 1e-6, seed: Any = None, **options: Any
    ) -> None:
        super().__init__(features, epsilon=epsilon, seed=seed, **options)

    @typecheck
    def __call__(self, x: Float[Array, "batch ..."]) -> Float[Array, "batch ..."]:
        """Normalises `x` per example and feature."""
        return self.call_core(self.core_layer, x)
