"""PyTorch names and layouts over a core layer's params: the one adapter every shell uses.

A `torch_nn` layer stores its arrays as PyTorch does (`weight` `(out, in)`,
conv weights `(out, in / groups, *kernel)`, BatchNorm `weight`/`bias`), while
the numbers come from a `blox.core` layer with its own names and layouts
(`kernel` `(in, out)`, HWIO). `TorchLayout` is a core module that sits in
front of that layer: each call renames and re-lays-out the entries it is
given (`to_core`), calls the inner layer, and maps any state the layer changed
(running statistics) back (`from_core`). It only moves axes and renames, so
the numerics stay in one place, the core layer. Keeping it a core module
means the eager shell is an ordinary `CoreModule` (state write-back, the
stale-RNG guard and `filter_jit` all apply unchanged), and its core twin is
`shell.core_layer`.
"""

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from blox import core
from blox.core import Params, internal

from .._seed import _hashable


@dataclasses.dataclass(frozen=True)
class Same:
    """The identity layout (only the name changes)."""

    def to_core(self, value: jax.Array) -> jax.Array:
        return value

    def from_core(self, value: jax.Array) -> jax.Array:
        return value


@dataclasses.dataclass(frozen=True)
class LinearWeight:
    """PyTorch `(out, in)` <-> core `(in, out)`."""

    def to_core(self, value: jax.Array) -> jax.Array:
        return value.T

    def from_core(self, value: jax.Array) -> jax.Array:
        return value.T


@dataclasses.dataclass(frozen=True)
class ConvWeight:
    """PyTorch `(out, in / groups, *kernel)` <-> core `(*kernel, in / groups, out)`."""

    ndim: int

    def to_core(self, value: jax.Array) -> jax.Array:
        n = self.ndim
        return jnp.transpose(value, tuple(range(2, n + 2)) + (1, 0))

    def from_core(self, value: jax.Array) -> jax.Array:
        n = self.ndim
        return jnp.transpose(value, (n + 1, n) + tuple(range(n)))


@dataclasses.dataclass(frozen=True)
class ConvTransposeWeight:
    """PyTorch `(in, out / groups, *kernel)` <-> core `(*kernel, out, in / groups)`, flipped.

    PyTorch's transposed convolution is the gradient of a convolution, which
    is a convolution of the dilated input with the spatially flipped kernel,
    in and out swapped within each group. The core layer computes that
    convolution without flipping, so the flip and the per-group swap are done
    here, on the weight.
    """

    ndim: int
    groups: int

    def to_core(self, value: jax.Array) -> jax.Array:
        n, g = self.ndim, self.groups
        cin, cout_g, *kernel = value.shape
        w = value.reshape((g, cin // g, cout_g, *kernel))
        w = jnp.swapaxes(w, 1, 2).reshape((g * cout_g, cin // g, *kernel))
        w = jnp.flip(w, axis=tuple(range(2, n + 2)))
        return jnp.transpose(w, tuple(range(2, n + 2)) + (0, 1))

    def from_core(self, value: jax.Array) -> jax.Array:
        n, g = self.ndim, self.groups
        *kernel, cout, cin_g = value.shape
        w = jnp.transpose(value, (n, n + 1) + tuple(range(n)))
        w = jnp.flip(w, axis=tuple(range(2, n + 2)))
        w = w.reshape((g, cout // g, cin_g, *kernel))
        return jnp.swapaxes(w, 1, 2).reshape((g * cin_g, cout // g, *kernel))


@dataclasses.dataclass(frozen=True)
class Flattened:
    """PyTorch `shape` <-> core `(prod(shape),)` (LayerNorm over several axes)."""

    shape: tuple[int, ...]

    def to_core(self, value: jax.Array) -> jax.Array:
        return value.reshape((math.prod(self.shape),))

    def from_core(self, value: jax.Array) -> jax.Array:
        return value.reshape(self.shape)


@dataclasses.dataclass(frozen=True)
class Name:
    """One PyTorch-named entry: its name, the core layer's name, and the layout."""

    torch: str
    core: str
    layout: Any = Same()


class TorchLayout(core.Module):
    """A core module exposing `inner`'s params under PyTorch names and layouts.

    Args:
        graph: This module's node; the inner layer lives at ``graph / 'core'``.
        names: The `Name` entries, in PyTorch's `state_dict` order.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> from blox.eager.torch_nn._layout import Name, LinearWeight, TorchLayout
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> node = g / 'fc'
        >>> shell = TorchLayout(node, (Name('weight', 'kernel', LinearWeight()),))
        >>> shell.inner = bx.Linear(node / 'core', 4, rng=rng, use_bias=False)
        >>> y, params = shell(rng.seed(bx.Params(), seed=0), jnp.ones((2, 3)))
        >>> y.shape, params[('net', 'fc', 'weight')].value.shape
        ((2, 4), (4, 3))
    """

    def __init__(self, graph: core.Graph, names: tuple[Name, ...]) -> None:
        super().__init__(graph)
        self.names = tuple(names)
        self.inner: Any = None

    def __call__(self, params: Params, *args: Any, **kwargs: Any) -> tuple[Any, Params]:
        """Calls the inner layer on re-laid-out params; maps changed entries back."""
        return self.apply(params, "__call__", *args, **kwargs)

    def apply(self, params: Params, method: str, *args: Any, **kwargs: Any) -> tuple[Any, Params]:
        """Like `__call__`, for the inner layer's method named `method`.

        Example:
            >>> import jax.numpy as jnp
            >>> import blox as bx
            >>> from blox.eager.torch_nn._layout import Name, TorchLayout
            >>> g = bx.Graph('net')
            >>> node = g / 'ln'
            >>> shell = TorchLayout(node, (Name('weight', 'scale'),))
            >>> shell.inner = bx.LayerNorm(node / 'core', use_bias=False)
            >>> y, params = shell.apply(bx.Params(), '__call__', jnp.ones((2, 3)))
            >>> [path[-1] for path in params.keys()]
            ['weight']
        """
        base, inner_base = self.graph.path, self.inner.graph.path
        data = params._data
        given = dict(data)
        sent = {}
        for name in self.names:
            entry = given.pop(base + (name.torch,), None)
            if entry is not None:
                moved = entry.replace(value=name.layout.to_core(entry.value))
                sent[name] = moved
                given[inner_base + (name.core,)] = moved
        out, result = getattr(self.inner, method)(
            Params._make(given, params._locked), *args, **kwargs
        )
        mapped = {inner_base + (name.core,) for name in self.names}
        back = {path: entry for path, entry in result._data.items() if path not in mapped}
        for name in self.names:
            entry = result._data.get(inner_base + (name.core,))
            if entry is None:
                continue
            if sent.get(name) is entry:  # unchanged: hand back the caller's own entry
                back[base + (name.torch,)] = data[base + (name.torch,)]
            else:
                back[base + (name.torch,)] = entry.replace(value=name.layout.from_core(entry.value))
        return out, Params._make(back, result._locked)


_cache: dict[Any, Any] = {}


def build_torch_core(
    core_cls: type, args: tuple[Any, ...], options: dict[str, Any], names: tuple[Name, ...]
) -> tuple[TorchLayout, Any]:
    """The shared `TorchLayout` over `core_cls(*args, **options)` and its init `Rng`.

    Like `blox.eager._seed.build_core`, one stateless core module serves every
    eager layer of the same configuration (so their treedefs are equal).
    """
    try:
        key = (core_cls, _hashable(args), _hashable(options), names)
    except TypeError:
        key = None
    if key is not None and key in _cache:
        return _cache[key]
    root = core.Graph("blox")
    rng = core.Rng(root / "rng")
    node = root / "layer"
    shell = TorchLayout(node, names)
    shell.inner = core_cls(node / "core", *args, rng=rng, **options)
    if key is not None:
        _cache[key] = (shell, rng)
    return shell, rng


# `U(-bound, bound)`, PyTorch's default init of Linear/Conv weights and biases: the
# core's, so its values come from the shape-independent sampling programs.
Uniform = internal.Uniform


@dataclasses.dataclass(frozen=True)
class Normal:
    """`N(0, 1)`: PyTorch's default init of Embedding."""

    def __call__(self, key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Any:
        return jax.random.normal(key, shape, dtype)
