"""`Sequential`: apply blox modules and plain functions one after another.

Also home of the two helpers every combinator shares: checking its layers and
calling one of them (a blox module with params and the mode, a plain callable
without).
"""

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from ._graph import Graph
from ._module import Module, _where
from ._params import Params


def _check_layers(module: Module, layers: Sequence[Any]) -> list[Any]:
    layers = list(layers)
    for i, layer in enumerate(layers):
        if not callable(layer):
            raise TypeError(
                f"{_where(module)}: expected every layer to be a blox Module or a "
                f"callable, got {type(layer).__name__} at index {i}. Fix: "
                "remove it or wrap it in a function."
            )
    return layers


def _call_layer(
    layer: Any, params: Params, args: tuple, kwargs: dict, is_training: bool | None
) -> tuple[Any, Params]:
    """`layer(params, *args, **kwargs)` for a module (with the mode if it takes one)."""
    if isinstance(layer, Module):
        if is_training is not None and _takes_mode(layer):
            return layer(params, *args, is_training=is_training, **kwargs)
        return layer(params, *args, **kwargs)
    return layer(*args, **kwargs), params


class Sequential(Module):
    """Chains layers: blox modules get `(params, x)`, plain callables get `x`.

    By default each output is passed to the next layer as one argument, as the
    ancestor did (so jax-blox programs that hand a tuple on, such as an LSTM's
    `(outputs, state)`, run unchanged). With `splat=True` a `tuple` output is
    passed as positional arguments and a `dict` as keyword arguments, as
    flax's `Sequential` does. A `NamedTuple` such as an `LSTMState` is a tuple
    too.

    Args:
        graph: This module's node.
        layers: Blox modules and plain callables such as `jax.nn.relu`.
        splat: Expand tuple and dict outputs into the next layer's arguments
            (flax's behaviour).

    Raises:
        TypeError: If a layer is not callable.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import blox as bx
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> mlp = bx.Sequential(g / 'mlp', [
        ...     bx.Linear(g / 'l1', 16, rng=rng), jax.nn.relu,
        ...     bx.Linear(g / 'l2', 2, rng=rng)])
        >>> y, params = mlp(rng.seed(bx.Params(), seed=0), jnp.ones((4, 3)))
        >>> y.shape
        (4, 2)
    """

    def __init__(
        self,
        graph: Graph,
        layers: Sequence[Module | Callable[..., Any]],
        splat: bool = False,
    ) -> None:
        super().__init__(graph)
        self.layers = _check_layers(self, layers)
        self.splat = splat

    def __call__(
        self, params: Params, inputs: Any, is_training: bool | None = None
    ) -> tuple[Any, Params]:
        """Runs the layers in order.

        `is_training`, when given, is passed to every layer whose call takes
        it (`BatchNorm`, `Dropout`, nested `Sequential`s); `None` calls each
        layer with its own default, as the ancestor did.

        Example:
            >>> import jax.numpy as jnp
            >>> import blox as bx
            >>> g = bx.Graph('net')
            >>> rng = bx.Rng(g / 'rng')
            >>> net = bx.Sequential(g / 'seq', [bx.Dropout(g / 'drop', 0.5, rng=rng)])
            >>> params = rng.seed(bx.Params(), seed=0)
            >>> y, params = net(params, jnp.ones(4), is_training=False)
            >>> y.tolist(), int(rng.get_counter(params))
            ([1.0, 1.0, 1.0, 1.0], 0)
        """
        x = inputs
        for i, layer in enumerate(self.layers):
            args, kwargs = (x,), {}
            if i and self.splat and isinstance(x, tuple):
                args = x
            elif i and self.splat and isinstance(x, dict):
                args, kwargs = (), x
            x, params = _call_layer(layer, params, args, kwargs, is_training)
        return x, params


def _takes_mode(layer: Module) -> bool:
    """Whether `layer`'s call accepts `is_training` (looked up once per class)."""
    cls = type(layer)
    cached = _MODE_CACHE.get(cls)
    if cached is None:
        cached = "is_training" in inspect.signature(cls.__call__).parameters
        _MODE_CACHE[cls] = cached
    return cached


_MODE_CACHE: dict[type, bool] = {}
