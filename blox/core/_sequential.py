"""`Sequential`: apply blox modules and plain functions one after another."""

from collections.abc import Callable, Sequence
from typing import Any

from ._graph import Graph
from ._module import Module, _where
from ._params import Params


class Sequential(Module):
    """Chains layers: blox modules get `(params, x)`, plain callables get `x`.

    Args:
        graph: This module's node.
        layers: Blox modules and plain callables such as `jax.nn.relu`.

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

    def __init__(self, graph: Graph, layers: Sequence[Module | Callable[[Any], Any]]) -> None:
        super().__init__(graph)
        layers = list(layers)
        for i, layer in enumerate(layers):
            if not callable(layer):
                raise TypeError(
                    f"{_where(self)}: expected every layer to be a blox Module or a "
                    f"callable, got {type(layer).__name__} at index {i}. Fix: "
                    "remove it or wrap it in a function."
                )
        self.layers = layers

    def __call__(self, params: Params, inputs: Any) -> tuple[Any, Params]:
        """Runs the layers in order."""
        x = inputs
        for layer in self.layers:
            if isinstance(layer, Module):
                x, params = layer(params, x)
            else:
                x = layer(x)
        return x, params
