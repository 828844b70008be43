"""Normalisation layers: `LayerNorm`, `RMSNorm` (last axis) and `BatchNorm`.

With `axis_name`, the statistics are averaged over that named axis with
`jax.lax.pmean`, so a model sharded over the batch under `jax.shard_map` (or
`jax.vmap(..., axis_name=...)`) normalises as if it saw the whole batch.
"""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from ._checks import nonempty_batch
from ._graph import Graph
from ._module import Initializer, Module, _lead, _where
from ._params import Params

_ONES = jax.nn.initializers.ones
_ZEROS = jax.nn.initializers.zeros


def _feature_dim(module: Module, inputs: jax.Array, min_rank: int = 1) -> int:
    if jnp.ndim(inputs) < min_rank:
        raise ValueError(
            f"{_where(module)}: expected inputs of rank >= {min_rank} with features "
            f"last, got shape {tuple(jnp.shape(inputs))}. Fix: add the missing "
            "axis, e.g. x[None]."
        )
    return inputs.shape[-1]


class _Norm(Module):
    """Shared affine tail and cross-device averaging of the norm layers."""

    axis_name: Any
    axis_index_groups: Any

    def _pmean(self, value: jax.Array) -> jax.Array:
        if self.axis_name is None:
            return value
        return jax.lax.pmean(value, self.axis_name, axis_index_groups=self.axis_index_groups)

    def _moments(self, inputs: jax.Array, axes: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
        """Mean and biased variance over `axes` (kept as unit axes).

        The variance is taken around the averaged mean in a second pass, so
        with `axis_name` it is the variance of all the shards together, not a
        mean of per-shard variances (which misses the spread between shards).
        Low-precision inputs are reduced in float32; the statistics are
        returned in the inputs' floating dtype.
        """
        dtype = inputs.dtype if jnp.issubdtype(inputs.dtype, jnp.inexact) else jnp.float32
        x = inputs.astype(jnp.promote_types(dtype, jnp.float32))
        mean = self._pmean(jnp.mean(x, axis=axes, keepdims=True))
        var = self._pmean(jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True))
        return mean.astype(dtype), var.astype(dtype)

    def _affine(self, params: Params, y: jax.Array, features: int) -> tuple[jax.Array, Params]:
        if self.use_scale:
            scale, params = self.get_param(
                params, "scale", (features,), self.scale_init, rng=self.rng
            )
            y = y * _lead(scale, y.ndim)
        if getattr(self, "use_bias", False):
            bias, params = self.get_param(params, "bias", (features,), self.bias_init, rng=self.rng)
            y = y + _lead(bias, y.ndim)
        return y, params


class LayerNorm(_Norm):
    """Normalises over the last axis: `(x - mean) / sqrt(var + eps) * scale + bias`.

    The variance is the biased one (divides by the feature count).

    Args:
        graph: This module's node.
        epsilon: Added to the variance.
        use_scale: Learn `scale` `(features,)`.
        use_bias: Learn `bias` `(features,)`.
        scale_init: Initialiser of `scale`.
        bias_init: Initialiser of `bias`.
        axis_name: Named axis to average statistics over (`pmean`).
        axis_index_groups: Device groups within `axis_name` (see `jax.lax.psum`).
        rng: `Rng` for initialisation (only needed for random inits).

    Shapes:
        `(*batch, features)` -> same.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> ln = bx.LayerNorm(bx.Graph('net') / 'ln')
        >>> y, params = ln(bx.Params(), jnp.array([[1.0, 2.0, 3.0]]))
        >>> [round(v, 4) for v in y[0].tolist()]
        [-1.2247, 0.0, 1.2247]
    """

    def __init__(
        self,
        graph: Graph,
        epsilon: float = 1e-5,
        use_scale: bool = True,
        use_bias: bool = True,
        scale_init: Initializer = _ONES,
        bias_init: Initializer = _ZEROS,
        axis_name: Any = None,
        axis_index_groups: Sequence[Sequence[int]] | None = None,
        rng: Any = None,
    ) -> None:
        super().__init__(graph)
        self.epsilon = epsilon
        self.use_scale = use_scale
        self.use_bias = use_bias
        self.scale_init = scale_init
        self.bias_init = bias_init
        self.axis_name = axis_name
        self.axis_index_groups = axis_index_groups
        self.rng = rng

    def __call__(self, params: Params, inputs: jax.Array) -> tuple[jax.Array, Params]:
        """Normalises `inputs` over its last axis."""
        features = _feature_dim(self, inputs)
        mean, var = self._moments(inputs, (-1,))
        y = (inputs - mean) / jnp.sqrt(var + self.epsilon)
        return self._affine(params, y, features)


class RMSNorm(_Norm):
    """Divides by the root mean square of the last axis: `x / sqrt(mean(x**2) + eps)`.

    Args:
        graph: This module's node.
        epsilon: Added to the mean square.
        use_scale: Learn `scale` `(features,)`.
        scale_init: Initialiser of `scale`.
        axis_name: Named axis to average statistics over (`pmean`).
        axis_index_groups: Device groups within `axis_name`.
        rng: `Rng` for initialisation.

    Shapes:
        `(*batch, features)` -> same.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> rms = bx.RMSNorm(bx.Graph('net') / 'rms', epsilon=0.0)
        >>> y, _ = rms(bx.Params(), jnp.array([3.0, 4.0]))
        >>> [round(v, 4) for v in y.tolist()]
        [0.8485, 1.1314]
    """

    use_bias = False

    def __init__(
        self,
        graph: Graph,
        epsilon: float = 1e-5,
        use_scale: bool = True,
        scale_init: Initializer = _ONES,
        axis_name: Any = None,
        axis_index_groups: Sequence[Sequence[int]] | None = None,
        rng: Any = None,
    ) -> None:
        super().__init__(graph)
        self.epsilon = epsilon
        self.use_scale = use_scale
        self.scale_init = scale_init
        self.axis_name = axis_name
        self.axis_index_groups = axis_index_groups
        self.rng = rng

    def __call__(self, params: Params, inputs: jax.Array) -> tuple[jax.Array, Params]:
        """Normalises `inputs` by the RMS of its last axis."""
        features = _feature_dim(self, inputs)
        mean_square = self._pmean(jnp.mean(jnp.square(inputs), axis=-1, keepdims=True))
        y = inputs / jnp.sqrt(mean_square + self.epsilon)
        return self._affine(params, y, features)


class BatchNorm(_Norm):
    """Normalises over every axis but the last, keeping running statistics.

    Training: normalise with the batch mean and biased variance and update
    `running = momentum * running + (1 - momentum) * stop_gradient(batch_stat)`.
    Inference (`is_training=False`): normalise with the running statistics.
    Parameters are created in the order `running_mean`, `running_var`
    (non-trainable, init 0 and 1), `scale`, `bias`.

    Args:
        graph: This module's node.
        momentum: Weight of the old running statistic.
        epsilon: Added to the variance.
        use_scale: Learn `scale` `(features,)`.
        use_bias: Learn `bias` `(features,)`.
        scale_init: Initialiser of `scale`.
        bias_init: Initialiser of `bias`.
        axis_name: Named axis to average batch statistics over (`pmean`).
        axis_index_groups: Device groups within `axis_name`.
        rng: `Rng` for initialisation.

    Shapes:
        `(batch, *spatial, features)` -> same.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> bn = bx.BatchNorm(bx.Graph('net') / 'bn')
        >>> x = jnp.array([[0.0], [2.0]])
        >>> y, params = bn(bx.Params(), x, is_training=True)
        >>> params[('net', 'bn', 'running_mean')].value.tolist()
        [0.10000000149011612]
        >>> y, _ = bn(params, x, is_training=False)
        >>> y.shape
        (2, 1)
    """

    def __init__(
        self,
        graph: Graph,
        momentum: float = 0.9,
        epsilon: float = 1e-5,
        use_scale: bool = True,
        use_bias: bool = True,
        scale_init: Initializer = _ONES,
        bias_init: Initializer = _ZEROS,
        axis_name: Any = None,
        axis_index_groups: Sequence[Sequence[int]] | None = None,
        rng: Any = None,
    ) -> None:
        super().__init__(graph)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(
                f"{_where(self)}: expected momentum in [0, 1], got {momentum}. "
                "Fix: use e.g. 0.9 (the weight kept from the old statistic)."
            )
        self.momentum = momentum
        self.epsilon = epsilon
        self.use_scale = use_scale
        self.use_bias = use_bias
        self.scale_init = scale_init
        self.bias_init = bias_init
        self.axis_name = axis_name
        self.axis_index_groups = axis_index_groups
        self.rng = rng

    def __call__(
        self, params: Params, inputs: jax.Array, is_training: bool = True
    ) -> tuple[jax.Array, Params]:
        """Normalises `inputs`; updates the running statistics when training."""
        features = _feature_dim(self, inputs, min_rank=2)
        shape = (features,)
        running_mean, params = self.get_param(
            params, "running_mean", shape, _ZEROS, trainable=False, rng=self.rng
        )
        running_var, params = self.get_param(
            params, "running_var", shape, _ONES, trainable=False, rng=self.rng
        )
        if is_training:
            nonempty_batch(_where(self), inputs.shape[:-1])
            mean, var = self._moments(inputs, tuple(range(inputs.ndim - 1)))
            mean, var = mean.reshape(shape), var.reshape(shape)
            m = self.momentum
            params = self.set_param(
                params, "running_mean", m * running_mean + (1 - m) * jax.lax.stop_gradient(mean)
            )
            params = self.set_param(
                params, "running_var", m * running_var + (1 - m) * jax.lax.stop_gradient(var)
            )
        else:
            mean, var = running_mean, running_var
        mean, var = _lead(mean, inputs.ndim), _lead(var, inputs.ndim)
        y = (inputs - mean) / jnp.sqrt(var + self.epsilon)
        return self._affine(params, y, features)
