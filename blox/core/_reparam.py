"""Weight reparametrisations: `WeightNorm` and `SpectralNorm` wrap any layer with a kernel.

Both are functional: they read the wrapped layer's params from the container,
compute normalised copies, call the layer on a container holding the copies,
then put the stored (unnormalised) values back, keeping whatever else the
layer updated (running statistics, key counters). The gradient reaches the
stored values through the normalisation. Their own params live under their
own node, named like flax's (`'<layer name>/kernel/scale'`, `.../u`,
`.../sigma`), so a flax param tree copies in by path. A first call on params
without the wrapped layer's creates them with one plain call of the layer.
"""

from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp

from ._graph import Graph
from ._module import Initializer, Module, _where
from ._params import Params

Path = tuple[str, ...]


def _l2_normalize(x: jax.Array, axis: Any, eps: float) -> jax.Array:
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=axis, keepdims=True) + eps)


class _Reparam(Module):
    """Shared plumbing: find the wrapped layer's params, swap in normalised values."""

    layer: Module

    def _layer_params(self, params: Params, args: tuple, kwargs: dict) -> tuple[dict, Params]:
        """`{relative name: (path, Param)}` of the layer's trainable params, created if absent."""
        prefix = self.layer.graph.path
        if not any(p[: len(prefix)] == prefix for p in params.keys()):
            _, params = self.layer(params, *args, **kwargs)
        found = {}
        for path, param in params.items():
            if path[: len(prefix)] == prefix and len(path) > len(prefix) and param.trainable:
                name = "/".join((prefix[-1],) + path[len(prefix) :])
                found[name] = (path, param)
        return found, params

    def create(self, params: Params) -> Params:
        """Creates this module's own params for the wrapped layer's existing ones.

        Lets a caller set the wrapper up without an example input (the eager
        shells do). Nothing is updated.

        Raises:
            KeyError: If the wrapped layer has no params in `params` yet.

        Example:
            >>> import jax, jax.numpy as jnp
            >>> import blox as bx
            >>> g = bx.Graph('net')
            >>> lin = bx.Linear(g / 'dense', 3, kernel_init=jax.nn.initializers.ones)
            >>> _, params = lin(bx.Params(), jnp.ones((1, 2)))
            >>> wn = bx.WeightNorm(g / 'wn', lin)
            >>> sorted('/'.join(p) for p in wn.create(params).keys())
            ['net/dense/bias', 'net/dense/kernel', 'net/wn/dense/kernel/scale']
        """
        prefix = self.layer.graph.path
        if not any(p[: len(prefix)] == prefix for p in params.keys()):
            raise KeyError(
                f"{_where(self)}: expected the params of the wrapped layer at "
                f"{'/'.join(prefix)!r}, got none. Fix: call the layer (or the wrapper "
                "with an input) once first."
            )
        found, params = self._layer_params(params, (), {})
        return self._swap(params, found)[1]

    def _call_with(
        self, params: Params, swapped: dict[Path, jax.Array], args: tuple, kwargs: dict
    ) -> tuple[Any, Params]:
        """Calls the layer with `swapped` values, then restores the stored ones."""
        data = params._data
        new = dict(data)
        for path, value in swapped.items():
            new[path] = data[path].replace(value=value)
        outputs, after = self.layer(Params._make(new, params._locked), *args, **kwargs)
        restored = dict(after._data)
        for path in swapped:
            restored[path] = data[path]
        return outputs, Params._make(restored, after._locked)


class WeightNorm(_Reparam):
    """L2 weight normalisation of a wrapped layer's params (flax's `WeightNorm`).

    Each param of `layer` whose name (`'<layer name>/kernel'`) contains one
    of `variable_filter` is replaced by
    `w / sqrt(sum(w**2 over non-feature axes) + epsilon) * scale` before the
    layer runs; `scale` (one per feature) is a param of this module named
    `'<layer name>/kernel/scale'`.

    Args:
        graph: This module's node.
        layer: The wrapped blox layer (on its own node).
        epsilon: Added to the squared norm.
        dtype: Dtype of the normalised weights (`None`: promoted).
        param_dtype: Dtype `scale` is created in.
        use_scale: Learn `scale`.
        scale_init: Initialiser of `scale`.
        feature_axes: Axes of the weight kept (one norm per feature); `None`
            takes one norm over the whole weight.
        variable_filter: Substrings selecting the weights; `None` or empty:
            every trainable param of the layer.
        rng: `Rng` for initialisation (only needed for random inits).

    Raises:
        TypeError: If `layer` is not a blox Module.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> wn = bx.WeightNorm(g / 'wn', bx.Linear(g / 'dense', 3, rng=rng))
        >>> y, params = wn(rng.seed(bx.Params(), seed=0), jnp.ones((2, 4)))
        >>> y.shape, params[('net', 'wn', 'dense/kernel/scale')].value.shape
        ((2, 3), (3,))
    """

    def __init__(
        self,
        graph: Graph,
        layer: Module,
        epsilon: float = 1e-12,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        use_scale: bool = True,
        scale_init: Initializer = jax.nn.initializers.ones,
        feature_axes: int | Iterable[int] | None = -1,
        variable_filter: Iterable[str] | None = ("kernel",),
        rng: Any = None,
    ) -> None:
        super().__init__(graph)
        _check_layer(self, layer)
        self.layer = layer
        self.epsilon = epsilon
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.use_scale = use_scale
        self.scale_init = scale_init
        self.feature_axes = feature_axes
        self.variable_filter = None if variable_filter is None else tuple(variable_filter)
        self.rng = rng

    def __call__(self, params: Params, *args: Any, **kwargs: Any) -> tuple[Any, Params]:
        """Calls the wrapped layer with its selected weights normalised."""
        found, params = self._layer_params(params, args, kwargs)
        swapped, params = self._swap(params, found)
        return self._call_with(params, swapped, args, kwargs)

    def _swap(self, params: Params, found: dict) -> tuple[dict, Params]:
        swapped = {}
        for name, (path, param) in found.items():
            if self.variable_filter and not any(f in name for f in self.variable_filter):
                continue
            swapped[path], params = self._normalize(params, name, param.value)
        return swapped, params

    def _normalize(self, params: Params, name: str, value: jax.Array) -> tuple[jax.Array, Params]:
        ndim = value.ndim
        if self.feature_axes is None:
            features: tuple[int, ...] = ()
        else:
            given = (
                (self.feature_axes,) if isinstance(self.feature_axes, int) else self.feature_axes
            )
            features = tuple(sorted({a % ndim for a in given})) if ndim else ()
        reduce = tuple(a for a in range(ndim) if a not in features)
        normalized = _l2_normalize(value, reduce, self.epsilon)
        scale = None
        if self.use_scale:
            shape = tuple(value.shape[a] for a in features)
            scale, params = self.get_param(
                params, name + "/scale", shape, self.scale_init, self.param_dtype, rng=self.rng
            )
            broadcast = tuple(value.shape[a] if a in features else 1 for a in range(ndim))
            normalized = normalized * scale.reshape(broadcast)
        present = [a for a in (value, scale) if a is not None]
        dtype = jnp.result_type(*present) if self.dtype is None else self.dtype
        return normalized.astype(dtype), params


class SpectralNorm(_Reparam):
    """Divides a wrapped layer's weights by their largest singular value (flax's `SpectralNorm`).

    For every trainable param of `layer` with two or more axes (viewed as a
    matrix `(-1, last)`), `n_steps` of power iteration from the stored vector
    `u` `(1, last)` estimate the top singular value `sigma`, and the layer
    runs with `w / sigma`. `u` and `sigma` are non-trainable state of this
    module named `'<layer name>/kernel/u'` and `'.../sigma'`; they are updated
    only when `is_training` (flax's `update_stats`), so evaluation is
    deterministic. `u` starts as a standard normal draw (needs `rng`).

    Args:
        graph: This module's node.
        layer: The wrapped blox layer (on its own node).
        n_steps: Power-iteration steps per call (0: no normalisation).
        epsilon: Added inside the l2 normalisations.
        dtype: Dtype of the normalised weights (`None`: promoted).
        param_dtype: Dtype `u` and `sigma` are created in.
        error_on_non_matrix: Refuse weights with more than two axes instead
            of flattening their leading axes.
        rng: `Rng` that draws the initial `u`.

    Raises:
        TypeError: If `layer` is not a blox Module.
        ValueError: If a weight has more than two axes and
            `error_on_non_matrix` is set.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> sn = bx.SpectralNorm(g / 'sn', bx.Linear(g / 'dense', 3, rng=rng), rng=rng)
        >>> y, params = sn(rng.seed(bx.Params(), seed=0), jnp.ones((2, 4)))
        >>> params[('net', 'sn', 'dense/kernel/u')].value.shape
        (1, 3)
    """

    def __init__(
        self,
        graph: Graph,
        layer: Module,
        n_steps: int = 1,
        epsilon: float = 1e-12,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        error_on_non_matrix: bool = False,
        rng: Any = None,
    ) -> None:
        super().__init__(graph)
        _check_layer(self, layer)
        self.layer = layer
        self.n_steps = n_steps
        self.epsilon = epsilon
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.error_on_non_matrix = error_on_non_matrix
        self.rng = rng

    def __call__(
        self, params: Params, *args: Any, is_training: bool = True, **kwargs: Any
    ) -> tuple[Any, Params]:
        """Calls the wrapped layer with spectrally normalised weights; updates `u` when training."""
        found, params = self._layer_params(params, args, kwargs)
        swapped, params = self._swap(params, found, is_training)
        return self._call_with(params, swapped, args, kwargs)

    def _swap(self, params: Params, found: dict, is_training: bool = False) -> tuple[dict, Params]:
        swapped = {}
        for name, (path, param) in found.items():
            value = param.value
            if value.ndim <= 1 or self.n_steps < 1:
                continue
            if value.ndim > 2 and self.error_on_non_matrix:
                raise ValueError(
                    f"{_where(self)}: expected 2-D weights with error_on_non_matrix=True, "
                    f"got {name!r} of shape {tuple(value.shape)}. Fix: pass "
                    "error_on_non_matrix=False to flatten its leading axes."
                )
            swapped[path], params = self._normalize(params, name, value, is_training)
        return swapped, params

    def _normalize(
        self, params: Params, name: str, value: jax.Array, is_training: bool
    ) -> tuple[jax.Array, Params]:
        matrix = value.reshape(-1, value.shape[-1])
        normal: Callable = jax.nn.initializers.normal(1.0)
        stored, params = self.get_param(
            params,
            name + "/u",
            (1, matrix.shape[-1]),
            normal,
            self.param_dtype,
            trainable=False,
            rng=self.rng,
        )
        sigma, params = self.get_param(
            params, name + "/sigma", (), jax.nn.initializers.ones, self.param_dtype, trainable=False
        )
        u, v = stored, None
        for _ in range(self.n_steps):
            v = _l2_normalize(jnp.matmul(u, matrix.T), None, self.epsilon)
            u = _l2_normalize(jnp.matmul(v, matrix), None, self.epsilon)
        u, v = jax.lax.stop_gradient(u), jax.lax.stop_gradient(v)
        sigma = jnp.matmul(jnp.matmul(v, matrix), u.T)[0, 0]
        normalized = (matrix / jnp.where(sigma != 0, sigma, 1)).reshape(value.shape)
        if is_training:
            params = self.set_param(params, name + "/u", u.astype(stored.dtype))
            params = self.set_param(params, name + "/sigma", sigma.astype(stored.dtype))
        dtype = jnp.result_type(value, u, v, sigma) if self.dtype is None else self.dtype
        return normalized.astype(dtype), params


def _check_layer(module: Module, layer: Any) -> None:
    if not isinstance(layer, Module):
        raise TypeError(
            f"{_where(module)}: expected a blox Module to wrap, got "
            f"{type(layer).__name__}. Fix: wrap a layer such as bx.Linear(graph / "
            "'dense', 4, rng=rng)."
        )
