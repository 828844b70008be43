"""Normalisation layers: `LayerNorm`, `RMSNorm`, `BatchNorm`, `GroupNorm`, `InstanceNorm`.

All five share one recipe (flax.linen's): statistics over some axes, reduced
in float32 whatever the input dtype, then `(x - mean) / sqrt(var + eps)`, then
a learned `scale` and `bias` over the feature axes. They differ only in which
axes are reduced and which carry features; the option names (`reduction_axes`,
`feature_axes`, `axis`, `use_fast_variance`, `mask`) and the param shapes are
flax's, so a flax param tree copies in by path. The defaults of the three
ancestor layers are the ancestor's (two-pass variance, `epsilon=1e-5`,
momentum 0.9), so its programs keep their numbers; the two new layers take
flax's defaults. `use_fast_variance=True` is flax's formulation throughout:
one-pass statistics and one multiplier per feature, `(x - mean) *
(rsqrt(var + eps) * scale) + bias`.

With `axis_name`, the statistics are averaged over that named axis with
`jax.lax.pmean`, so a model sharded over the batch under `jax.shard_map` (or
`jax.vmap(..., axis_name=...)`) normalises as if it saw the whole batch.
"""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import nonempty_batch
from ._graph import Graph
from ._module import Initializer, Module, _where
from ._params import Params

_ONES = jax.nn.initializers.ones
_ZEROS = jax.nn.initializers.zeros
Axes = int | Sequence[int]


def _min_rank(module: Module, inputs: jax.Array, min_rank: int) -> None:
    if jnp.ndim(inputs) < min_rank:
        raise ValueError(
            f"{_where(module)}: expected inputs of rank >= {min_rank} with features "
            f"last, got shape {tuple(jnp.shape(inputs))}. Fix: add the missing "
            "axis, e.g. x[None]."
        )


def _axes(module: Module, ndim: int, axes: Axes, name: str) -> tuple[int, ...]:
    """`axes` as sorted, deduplicated, non-negative ints, checked against `ndim`."""
    given = (axes,) if isinstance(axes, int | np.integer) else tuple(axes)
    for axis in given:
        if not isinstance(axis, int | np.integer) or not -ndim <= axis < ndim:
            raise ValueError(
                f"{_where(module)}: expected {name} to be axes of an input of rank "
                f"{ndim}, got {axes!r}. Fix: pass axes in [-{ndim}, {ndim})."
            )
    return tuple(sorted({int(a) % ndim for a in given}))


def _float(inputs: jax.Array) -> jax.Array:
    """`inputs` in (at least) float32: the dtype every statistic reduces in."""
    dtype = inputs.dtype if jnp.issubdtype(inputs.dtype, jnp.inexact) else jnp.float32
    return inputs.astype(jnp.promote_types(dtype, jnp.float32))


def _result_dtype(dtype: Any, *arrays: jax.Array | None) -> Any:
    """`dtype`, else the promoted dtype of `arrays` widened to a float (flax's rule)."""
    if dtype is not None:
        return jnp.dtype(dtype)
    result = jnp.result_type(*(a for a in arrays if a is not None))
    if not jnp.issubdtype(result, jnp.inexact):
        result = jnp.promote_types(result, jnp.float32)
    return result


class _Norm(Module):
    """Shared statistics, affine tail and cross-device averaging of the norm layers."""

    axis_name: Any = None
    axis_index_groups: Any = None
    use_fast_variance: bool = False
    use_bias: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def _pmean(self, value: jax.Array) -> jax.Array:
        if self.axis_name is None:
            return value
        return jax.lax.pmean(value, self.axis_name, axis_index_groups=self.axis_index_groups)

    def _moments(
        self,
        x: jax.Array,
        axes: tuple[int, ...],
        use_mean: bool = True,
        mask: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """Mean and biased variance of float32 `x` over `axes` (kept as unit axes).

        The two-pass variance is taken around the averaged mean, so with
        `axis_name` it is the variance of all the shards together, not a mean
        of per-shard variances (which misses the spread between shards). The
        fast variance is `E[x**2] - E[x]**2` (one reduction, one `pmean`),
        clipped at zero, traced in flax's order (the square first, then the
        two means, stacked only for a `pmean`): the backward pass then sums
        its cotangents in flax's order too, so the gradients equal flax's to
        the bit, and XLA:CPU fuses them as it does flax's (the other order
        costs a full-size pass per layer, docs/cnn-performance.md). Without
        `use_mean` the mean is zero and the variance is the mean square
        (RMSNorm).
        """
        where = None if mask is None else jnp.broadcast_to(jnp.asarray(mask, bool), x.shape)

        def mean(value: jax.Array) -> jax.Array:
            return jnp.mean(value, axis=axes, keepdims=True, where=where)

        if not use_mean:
            return None, self._pmean(mean(jnp.square(x)))
        if self.use_fast_variance:
            square = jnp.square(x)  # traced before the means, as in flax
            mu, mu2 = mean(x), mean(square)
            if self.axis_name is not None:  # one `pmean` for both
                both = self._pmean(jnp.stack([mu, mu2]))
                mu, mu2 = both[0], both[1]
            return mu, jnp.maximum(0.0, mu2 - jnp.square(mu))
        mu = self._pmean(mean(x))
        return mu, self._pmean(mean(jnp.square(x - mu)))

    def _normalize(
        self,
        params: Params,
        inputs: jax.Array,
        mean: jax.Array | None,
        var: jax.Array,
        feature_axes: tuple[int, ...],
    ) -> tuple[jax.Array, Params]:
        """`(x - mean) / sqrt(var + eps) * scale + bias`, cast to the result dtype.

        With `use_fast_variance` it is computed as flax computes it,
        `(x - mean) * (rsqrt(var + eps) * scale) + bias`: the scale folds
        into one per-feature multiplier, so the backward pass reduces over
        fewer full-size arrays (on a CPU, BatchNorm's forward and backward
        take about 0.6x the time; see docs/cnn-performance.md). The two
        differ by rounding. `scale` and `bias` have the sizes of
        `feature_axes`; the result dtype is `dtype`, else the promoted dtype
        of the inputs and params (flax's rule), so a layer without params
        keeps the input dtype.
        """
        x = _float(inputs)
        y = x if mean is None else x - mean
        sizes = tuple(inputs.shape[a] for a in feature_axes)
        broadcast = tuple(inputs.shape[a] if a in feature_axes else 1 for a in range(y.ndim))
        scale, params = self._affine_param(params, "scale", self.use_scale, sizes)
        bias, params = self._affine_param(params, "bias", self.use_bias, sizes)
        if self.use_fast_variance:  # flax's order: one multiplier per feature
            multiplier = jax.lax.rsqrt(var + self.epsilon)
            if scale is not None:
                multiplier = multiplier * scale.reshape(broadcast)
            y = y * multiplier
        else:  # the ancestor's order
            y = y / jnp.sqrt(var + self.epsilon)
            if scale is not None:
                y = y * scale.reshape(broadcast)
        if bias is not None:
            y = y + bias.reshape(broadcast)
        return y.astype(_result_dtype(self.dtype, inputs, scale, bias)), params

    def _affine_param(
        self, params: Params, name: str, use: bool, sizes: tuple[int, ...]
    ) -> tuple[jax.Array | None, Params]:
        """The `scale` or `bias` param (created on first use), or `None` when off."""
        if not use:
            return None, params
        return self.get_param(
            params,
            name,
            sizes,
            getattr(self, f"{name}_init"),
            dtype=self.param_dtype,
            metadata=getattr(self, f"{name}_metadata", None),
            rng=self.rng,
        )


class LayerNorm(_Norm):
    """Normalises over `reduction_axes` (default the last): `(x - mean) / sqrt(var + eps)`.

    Then `* scale + bias`, both with the sizes of `feature_axes` (default the
    last). The variance is the biased one. `reduction_axes=(-2, -1)` with
    `feature_axes=(-2, -1)` is PyTorch's `LayerNorm(normalized_shape)` over two
    trailing axes.

    Args:
        graph: This module's node.
        epsilon: Added to the variance.
        use_scale: Learn `scale`.
        use_bias: Learn `bias`.
        scale_init: Initialiser of `scale`.
        bias_init: Initialiser of `bias`.
        reduction_axes: Axes the statistics are taken over (flax's option).
        feature_axes: Axes that carry a separate `scale` and `bias`.
        use_fast_variance: `E[x**2] - E[x]**2` and flax's order of operations
            (see `BatchNorm`) rather than the two-pass `E[(x - E[x])**2]` and
            the ancestor's order (the default here).
        axis_name: Named axis to average statistics over (`pmean`).
        axis_index_groups: Device groups within `axis_name` (see `jax.lax.psum`).
        dtype: Result dtype (`None`: the promoted dtype of inputs and params).
            Statistics reduce in float32 whatever it is.
        param_dtype: Dtype `scale` and `bias` are created in.
        rng: `Rng` for initialisation (only needed for random inits).

    Shapes:
        `(*batch, features)` -> same; `scale`, `bias`: `(features,)` (the
        sizes of `feature_axes`).

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> ln = bx.LayerNorm(bx.Graph('net') / 'ln')
        >>> y, params = ln(bx.Params(), jnp.array([[1.0, 2.0, 3.0]]))
        >>> [round(v, 4) for v in y[0].tolist()]
        [-1.2247, 0.0, 1.2247]
        >>> ln2 = bx.LayerNorm(bx.Graph('net') / 'ln2', reduction_axes=(-2, -1),
        ...                    feature_axes=(-2, -1))
        >>> y, params = ln2(bx.Params(), jnp.ones((4, 2, 3)))
        >>> params[('net', 'ln2', 'scale')].value.shape
        (2, 3)
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
        reduction_axes: Axes = -1,
        feature_axes: Axes = -1,
        use_fast_variance: bool = False,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        scale_metadata: dict[str, Any] | None = None,
        bias_metadata: dict[str, Any] | None = None,
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
        self.reduction_axes = reduction_axes
        self.feature_axes = feature_axes
        self.use_fast_variance = use_fast_variance
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.scale_metadata = scale_metadata
        self.bias_metadata = bias_metadata

    def __call__(
        self, params: Params, inputs: jax.Array, *, mask: jax.Array | None = None
    ) -> tuple[jax.Array, Params]:
        """Normalises `inputs`; `mask` (broadcastable to it) picks the entries counted."""
        _min_rank(self, inputs, 1)
        reduce = _axes(self, inputs.ndim, self.reduction_axes, "reduction_axes")
        features = _axes(self, inputs.ndim, self.feature_axes, "feature_axes")
        mean, var = self._moments(_float(inputs), reduce, mask=mask)
        return self._normalize(params, inputs, mean, var, features)


class RMSNorm(_Norm):
    """Divides by the root mean square over `reduction_axes`: `x / sqrt(mean(x**2) + eps)`.

    Then `* scale`, with the sizes of `feature_axes` (default the last axis).

    Args:
        graph: This module's node.
        epsilon: Added to the mean square.
        use_scale: Learn `scale`.
        scale_init: Initialiser of `scale`.
        reduction_axes: Axes the mean square is taken over.
        feature_axes: Axes that carry a separate `scale`.
        use_fast_variance: Flax's order, `x * (rsqrt(ms + eps) * scale)`,
            rather than the ancestor's `x / sqrt(ms + eps) * scale` (the mean
            square itself has one form).
        axis_name: Named axis to average statistics over (`pmean`).
        axis_index_groups: Device groups within `axis_name` (see `jax.lax.psum`).
        dtype: Result dtype (`None`: the promoted dtype of inputs and params).
            Statistics reduce in float32 whatever it is.
        param_dtype: Dtype `scale` and `bias` are created in.
        rng: `Rng` for initialisation (only needed for random inits).

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

    def __init__(
        self,
        graph: Graph,
        epsilon: float = 1e-5,
        use_scale: bool = True,
        scale_init: Initializer = _ONES,
        axis_name: Any = None,
        axis_index_groups: Sequence[Sequence[int]] | None = None,
        rng: Any = None,
        reduction_axes: Axes = -1,
        feature_axes: Axes = -1,
        use_fast_variance: bool = False,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        scale_metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(graph)
        self.epsilon = epsilon
        self.use_scale = use_scale
        self.scale_init = scale_init
        self.axis_name = axis_name
        self.axis_index_groups = axis_index_groups
        self.rng = rng
        self.reduction_axes = reduction_axes
        self.feature_axes = feature_axes
        self.use_fast_variance = use_fast_variance
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.scale_metadata = scale_metadata

    def __call__(
        self, params: Params, inputs: jax.Array, *, mask: jax.Array | None = None
    ) -> tuple[jax.Array, Params]:
        """Normalises `inputs` by its RMS; `mask` picks the entries counted."""
        _min_rank(self, inputs, 1)
        reduce = _axes(self, inputs.ndim, self.reduction_axes, "reduction_axes")
        features = _axes(self, inputs.ndim, self.feature_axes, "feature_axes")
        _, mean_square = self._moments(_float(inputs), reduce, use_mean=False, mask=mask)
        return self._normalize(params, inputs, None, mean_square, features)


class BatchNorm(_Norm):
    """Normalises over every axis but the feature `axis`, keeping running statistics.

    Training: normalise with the batch mean and biased variance and update
    `running = momentum * running + (1 - momentum) * stop_gradient(batch_stat)`.
    Inference (`is_training=False`): normalise with the running statistics.
    Parameters are created in the order `running_mean`, `running_var`
    (non-trainable float32, init 0 and 1), `num_batches_tracked` (when
    counted), `scale`, `bias`.

    PyTorch's variants: `momentum=None` is a cumulative average
    (`running += (batch - running) / num_batches_tracked`, the counter counted
    first); `unbiased_running_var=True` stores the running variance times
    `n / (n - 1)` (normalisation still uses the biased batch variance);
    `track_running_stats=False` keeps no running statistics and normalises
    with batch statistics in both modes.

    Args:
        graph: This module's node.
        momentum: Weight of the old running statistic; `None`: cumulative
            moving average (PyTorch's `momentum=None`).
        epsilon: Added to the variance.
        use_scale: Learn `scale` `(features,)`.
        use_bias: Learn `bias` `(features,)`.
        scale_init: Initialiser of `scale`.
        bias_init: Initialiser of `bias`.
        axis: The feature axis or axes (flax's option); every other axis is
            reduced.
        channels_first: Features on axis 1 (`(batch, features, *spatial)`),
            PyTorch's layout; same as `axis=1`.
        use_fast_variance: Flax's formulation: the one-pass variance
            `E[x**2] - E[x]**2` (clipped at zero) and one multiplier per
            feature, `(x - mean) * (rsqrt(var + eps) * scale) + bias`. The
            default (False) is the ancestor's: the two-pass variance and
            `(x - mean) / sqrt(var + eps) * scale + bias`. They differ by
            rounding (more for inputs far from zero mean); flax's takes about
            0.6x the time in a CPU training step (docs/cnn-performance.md).
        track_running_stats: Keep running statistics (PyTorch's option).
        unbiased_running_var: Store the unbiased variance in `running_var`.
        count_batches: Keep an int32 `num_batches_tracked` counter, advanced
            by every training call (always on with `momentum=None`).
        axis_name: Named axis to average statistics over (`pmean`).
        axis_index_groups: Device groups within `axis_name` (see `jax.lax.psum`).
        dtype: Result dtype (`None`: the promoted dtype of inputs and params).
            Statistics reduce in float32 whatever it is.
        param_dtype: Dtype `scale` and `bias` are created in.
        rng: `Rng` for initialisation (only needed for random inits).

    Raises:
        ValueError: If `momentum` is outside `[0, 1]`, or `channels_first` is
            combined with an `axis` other than -1.

    Shapes:
        `(batch, *spatial, features)` -> same (features on axis 1 with
        `channels_first`).

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
        >>> cma = bx.BatchNorm(bx.Graph('net') / 'cma', momentum=None)
        >>> _, params = cma(bx.Params(), x, is_training=True)
        >>> params[('net', 'cma', 'running_mean')].value.tolist()
        [1.0]
        >>> params[('net', 'cma', 'num_batches_tracked')].value.tolist()
        1
    """

    def __init__(
        self,
        graph: Graph,
        momentum: float | None = 0.9,
        epsilon: float = 1e-5,
        use_scale: bool = True,
        use_bias: bool = True,
        scale_init: Initializer = _ONES,
        bias_init: Initializer = _ZEROS,
        axis_name: Any = None,
        axis_index_groups: Sequence[Sequence[int]] | None = None,
        rng: Any = None,
        axis: Axes = -1,
        channels_first: bool = False,
        use_fast_variance: bool = False,
        track_running_stats: bool = True,
        unbiased_running_var: bool = False,
        count_batches: bool = False,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        scale_metadata: dict[str, Any] | None = None,
        bias_metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(graph)
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(
                f"{_where(self)}: expected momentum in [0, 1], got {momentum}. "
                "Fix: use e.g. 0.9 (the weight kept from the old statistic), or "
                "None for a cumulative average."
            )
        if channels_first and axis != -1:
            raise ValueError(
                f"{_where(self)}: expected axis=-1 with channels_first=True (it "
                f"puts the features on axis 1), got axis={axis!r}. Fix: pass one "
                "of the two."
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
        self.axis = axis
        self.channels_first = channels_first
        self.use_fast_variance = use_fast_variance
        self.track_running_stats = track_running_stats
        self.unbiased_running_var = unbiased_running_var
        self.count_batches = count_batches or momentum is None
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.scale_metadata = scale_metadata
        self.bias_metadata = bias_metadata

    def __call__(
        self,
        params: Params,
        inputs: jax.Array,
        is_training: bool = True,
        *,
        mask: jax.Array | None = None,
    ) -> tuple[jax.Array, Params]:
        """Normalises `inputs`; updates the running statistics when training.

        `mask` (broadcastable to `inputs`) picks the entries the batch
        statistics count, as in flax.
        """
        _min_rank(self, inputs, 2)
        axis = 1 if self.channels_first else self.axis
        features = _axes(self, inputs.ndim, axis, "axis")
        reduce = tuple(a for a in range(inputs.ndim) if a not in features)
        shape = tuple(inputs.shape[a] for a in features)
        broadcast = tuple(inputs.shape[a] if a in features else 1 for a in range(inputs.ndim))
        if not self.track_running_stats:
            mean, var = self._moments(_float(inputs), reduce, mask=mask)
            return self._normalize(params, inputs, mean, var, features)
        running_mean, params = self.get_param(
            params, "running_mean", shape, _ZEROS, trainable=False, rng=self.rng
        )
        running_var, params = self.get_param(
            params, "running_var", shape, _ONES, trainable=False, rng=self.rng
        )
        if self.count_batches:
            count, params = self.get_param(
                params, "num_batches_tracked", (), _ZEROS, jnp.int32, trainable=False, rng=self.rng
            )
        if not is_training:
            mean, var = running_mean.reshape(broadcast), running_var.reshape(broadcast)
            return self._normalize(params, inputs, mean, var, features)
        nonempty_batch(_where(self), tuple(inputs.shape[a] for a in reduce))
        mean, var = self._moments(_float(inputs), reduce, mask=mask)
        batch_mean = jax.lax.stop_gradient(mean).reshape(shape)
        batch_var = jax.lax.stop_gradient(var).reshape(shape)
        if self.unbiased_running_var:
            n = self._count(inputs, reduce, mask).reshape(shape if mask is not None else ())
            batch_var = batch_var * n / (n - 1)
        if self.count_batches:
            count = count + 1
            params = self.set_param(params, "num_batches_tracked", count)
        if self.momentum is None:
            new = 1.0 / count.astype(jnp.float32)
            old = 1.0 - new
        else:
            old, new = self.momentum, 1 - self.momentum
        # Stored back in the stats' own dtype (float32 unless cast on purpose).
        mean_new = (old * running_mean + new * batch_mean).astype(running_mean.dtype)
        var_new = (old * running_var + new * batch_var).astype(running_var.dtype)
        params = self.set_param(params, "running_mean", mean_new)
        params = self.set_param(params, "running_var", var_new)
        return self._normalize(params, inputs, mean, var, features)

    def _count(
        self, inputs: jax.Array, reduce: tuple[int, ...], mask: jax.Array | None
    ) -> jax.Array:
        """How many entries each feature's batch statistic averaged (all shards)."""
        if mask is None:
            local = jnp.float32(np.prod([inputs.shape[a] for a in reduce]))
        else:
            counted = jnp.broadcast_to(jnp.asarray(mask, jnp.float32), inputs.shape)
            local = jnp.sum(counted, axis=reduce, keepdims=True).reshape(-1)
        if self.axis_name is None:
            return local
        return jax.lax.psum(local, self.axis_name, axis_index_groups=self.axis_index_groups)


class GroupNorm(_Norm):
    """Group normalisation: statistics per example over groups of channels.

    The channels (last axis; axis 1 with `channels_first`) are split into
    `num_groups` groups of `group_size`; each group of each example is
    normalised over `reduction_axes` (default every axis but the batch axis)
    and its own channels, then `* scale + bias` per channel. `num_groups=1`
    is a LayerNorm over all but the batch axis; `group_size=1` an
    InstanceNorm. Options and defaults are flax's `GroupNorm`; PAX's `groups`
    is `num_groups`, its `axis` is `reduction_axes`, its
    `data_format='channels_first'` is `channels_first=True`.

    Args:
        graph: This module's node.
        num_groups: Number of channel groups (flax's default 32); pass
            `None` to give `group_size` instead.
        group_size: Channels per group.
        epsilon: Added to the variance.
        use_bias: Learn `bias` `(channels,)`.
        use_scale: Learn `scale` `(channels,)`.
        bias_init: Initialiser of `bias`.
        scale_init: Initialiser of `scale`.
        reduction_axes: Axes of the (channels-last) input reduced besides the
            group; must include the channel axis. `None`: all but axis 0.
        channels_first: Channels on axis 1, PyTorch's and PAX's NC... layout;
            `reduction_axes` then count axes of the input as given.
        use_fast_variance: `E[x**2] - E[x]**2` and flax's order of operations
            (flax's default; see `BatchNorm`) rather than the two-pass form.
        axis_name: Named axis to average statistics over (`pmean`).
        axis_index_groups: Device groups within `axis_name` (see `jax.lax.psum`).
        dtype: Result dtype (`None`: the promoted dtype of inputs and params).
            Statistics reduce in float32 whatever it is.
        param_dtype: Dtype `scale` and `bias` are created in.
        rng: `Rng` for initialisation (only needed for random inits).
        scale_metadata: Metadata stored with `scale`.
        bias_metadata: Metadata stored with `bias`.

    Raises:
        ValueError: If both or neither of `num_groups` and `group_size` are
            given (at construction), or they do not divide the channels, or
            `reduction_axes` leaves out the channel axis (at the call).

    Shapes:
        `(batch, *spatial, channels)` -> same.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> gn = bx.GroupNorm(bx.Graph('net') / 'gn', num_groups=2)
        >>> x = jnp.array([[[0.0, 2.0, 10.0, 30.0]]])
        >>> y, params = gn(bx.Params(), x)
        >>> [round(v, 3) for v in y[0, 0].tolist()]
        [-1.0, 1.0, -1.0, 1.0]
        >>> params[('net', 'gn', 'scale')].value.shape
        (4,)
    """

    def __init__(
        self,
        graph: Graph,
        num_groups: int | None = 32,
        group_size: int | None = None,
        epsilon: float = 1e-6,
        use_bias: bool = True,
        use_scale: bool = True,
        bias_init: Initializer = _ZEROS,
        scale_init: Initializer = _ONES,
        reduction_axes: Axes | None = None,
        channels_first: bool = False,
        use_fast_variance: bool = True,
        axis_name: Any = None,
        axis_index_groups: Sequence[Sequence[int]] | None = None,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rng: Any = None,
        scale_metadata: dict[str, Any] | None = None,
        bias_metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(graph)
        if (num_groups is None) == (group_size is None):
            raise ValueError(
                f"{_where(self)}: expected exactly one of num_groups and group_size, "
                f"got num_groups={num_groups!r}, group_size={group_size!r}. Fix: pass "
                "num_groups=None with group_size=..., or leave group_size out."
            )
        self.num_groups = num_groups
        self.group_size = group_size
        self.epsilon = epsilon
        self.use_bias = use_bias
        self.use_scale = use_scale
        self.bias_init = bias_init
        self.scale_init = scale_init
        self.reduction_axes = reduction_axes
        self.channels_first = channels_first
        self.use_fast_variance = use_fast_variance
        self.axis_name = axis_name
        self.axis_index_groups = axis_index_groups
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.rng = rng
        self.scale_metadata = scale_metadata
        self.bias_metadata = bias_metadata

    def _groups(self, channels: int) -> int:
        if self.group_size is not None:
            if self.group_size <= 0 or channels % self.group_size:
                raise ValueError(
                    f"{_where(self)}: expected group_size to divide the {channels} "
                    f"channels, got group_size={self.group_size}. Fix: pick a "
                    "divisor of the channel count."
                )
            return channels // self.group_size
        if self.num_groups <= 0 or channels % self.num_groups:
            raise ValueError(
                f"{_where(self)}: expected num_groups to divide the {channels} "
                f"channels, got num_groups={self.num_groups}. Fix: pick a divisor "
                "of the channel count (flax's default is 32)."
            )
        return self.num_groups

    def __call__(
        self, params: Params, inputs: jax.Array, *, mask: jax.Array | None = None
    ) -> tuple[jax.Array, Params]:
        """Normalises `inputs` per example and channel group; `mask` picks the entries counted."""
        _min_rank(self, inputs, 1)
        ndim = inputs.ndim
        if self.reduction_axes is None:
            reduce = tuple(range(1, ndim))
        else:
            reduce = _axes(self, ndim, self.reduction_axes, "reduction_axes")
        channel = 1 if self.channels_first and ndim > 1 else ndim - 1
        if channel not in reduce:
            raise ValueError(
                f"{_where(self)}: expected reduction_axes to include the channel axis "
                f"{channel}, got {self.reduction_axes!r}. Fix: add it (the channels "
                "of a group are always reduced together)."
            )
        if mask is not None:
            mask = jnp.broadcast_to(jnp.asarray(mask, bool), inputs.shape)
        if channel != ndim - 1:
            # Channels last from here on; the reduced axes follow their axes.
            moved = [a for a in range(ndim) if a != channel] + [channel]
            reduce = tuple(sorted(moved.index(a) for a in reduce))
            inputs = jnp.moveaxis(inputs, channel, -1)
            mask = None if mask is None else jnp.moveaxis(mask, channel, -1)
        channels = inputs.shape[-1]
        groups = self._groups(channels)
        grouped = _float(inputs).reshape(inputs.shape[:-1] + (groups, channels // groups))
        if mask is not None:
            mask = mask.reshape(grouped.shape)
        # The group axis (ndim - 1) is kept; its channels (axis ndim) are reduced.
        mean, var = self._moments(grouped, reduce[:-1] + (ndim,), mask=mask)

        def per_channel(stat: jax.Array) -> jax.Array:
            return jnp.broadcast_to(stat, grouped.shape).reshape(inputs.shape)

        y, params = self._normalize(
            params, inputs, per_channel(mean), per_channel(var), (ndim - 1,)
        )
        if channel != ndim - 1:
            y = jnp.moveaxis(y, -1, channel)
        return y, params


class InstanceNorm(_Norm):
    """Instance normalisation: per example and feature, over every other axis.

    Reduces all axes but the batch axis (0) and `feature_axes`; `scale` and
    `bias` have the sizes of `feature_axes`. Options and defaults are flax's
    `InstanceNorm`; PyTorch's channels-first layout is `feature_axes=1`.

    Args:
        graph: This module's node.
        epsilon: Added to the variance.
        use_bias: Learn `bias`.
        use_scale: Learn `scale`.
        bias_init: Initialiser of `bias`.
        scale_init: Initialiser of `scale`.
        feature_axes: Axes that carry features (not reduced); not axis 0.
        use_fast_variance: `E[x**2] - E[x]**2` and flax's order of operations
            (flax's default; see `BatchNorm`) rather than the two-pass form.
        axis_name: Named axis to average statistics over (`pmean`).
        axis_index_groups: Device groups within `axis_name` (see `jax.lax.psum`).
        dtype: Result dtype (`None`: the promoted dtype of inputs and params).
            Statistics reduce in float32 whatever it is.
        param_dtype: Dtype `scale` and `bias` are created in.
        rng: `Rng` for initialisation (only needed for random inits).
        scale_metadata: Metadata stored with `scale`.
        bias_metadata: Metadata stored with `bias`.

    Raises:
        ValueError: If `feature_axes` includes the batch axis 0.

    Shapes:
        `(batch, *spatial, features)` -> same.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> inorm = bx.InstanceNorm(bx.Graph('net') / 'in')
        >>> x = jnp.array([[[0.0, 5.0], [2.0, 7.0]]])
        >>> y, _ = inorm(bx.Params(), x)
        >>> [[round(v, 3) for v in row] for row in y[0].tolist()]
        [[-1.0, -1.0], [1.0, 1.0]]
    """

    def __init__(
        self,
        graph: Graph,
        epsilon: float = 1e-6,
        use_bias: bool = True,
        use_scale: bool = True,
        bias_init: Initializer = _ZEROS,
        scale_init: Initializer = _ONES,
        feature_axes: Axes = -1,
        use_fast_variance: bool = True,
        axis_name: Any = None,
        axis_index_groups: Sequence[Sequence[int]] | None = None,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rng: Any = None,
        scale_metadata: dict[str, Any] | None = None,
        bias_metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(graph)
        self.epsilon = epsilon
        self.use_bias = use_bias
        self.use_scale = use_scale
        self.bias_init = bias_init
        self.scale_init = scale_init
        self.feature_axes = feature_axes
        self.use_fast_variance = use_fast_variance
        self.axis_name = axis_name
        self.axis_index_groups = axis_index_groups
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.rng = rng
        self.scale_metadata = scale_metadata
        self.bias_metadata = bias_metadata

    def __call__(
        self, params: Params, inputs: jax.Array, *, mask: jax.Array | None = None
    ) -> tuple[jax.Array, Params]:
        """Normalises `inputs` per example and feature; `mask` picks the entries counted."""
        _min_rank(self, inputs, 2)
        features = _axes(self, inputs.ndim, self.feature_axes, "feature_axes")
        if 0 in features:
            raise ValueError(
                f"{_where(self)}: expected feature_axes without the batch axis 0, got "
                f"{self.feature_axes!r}. Fix: name the feature axes from 1 on, e.g. -1 "
                "or 1 for channels first."
            )
        reduce = tuple(a for a in range(1, inputs.ndim) if a not in features)
        mean, var = self._moments(_float(inputs), reduce, mask=mask)
        return self._normalize(params, inputs, mean, var, features)
