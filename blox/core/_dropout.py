"""`Dropout`: zero a random fraction of inputs while training."""

from typing import Any

import jax

from ._graph import Graph
from ._module import Module, _where
from ._params import Params


class Dropout(Module):
    """Training: `x * bernoulli(key, 1 - rate) / (1 - rate)`; otherwise identity.

    Draws one key from `rng` per training call; with `is_training=False` or
    `rate == 0` it returns the inputs and draws nothing.

    Args:
        graph: This module's node.
        rate: Probability of dropping each element, in `[0, 1)`.
        rng: The `Rng` that supplies the masks.

    Raises:
        ValueError: If `rate` is outside `[0, 1)`.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> drop = bx.Dropout(g / 'drop', 0.5, rng=rng)
        >>> params = rng.seed(bx.Params(), seed=0)
        >>> y, params = drop(params, jnp.ones(1000))
        >>> sorted(set(y.tolist()))
        [0.0, 2.0]
        >>> int(rng.get_counter(params))
        1
    """

    def __init__(self, graph: Graph, rate: float, rng: Any = None) -> None:
        super().__init__(graph)
        if not isinstance(rate, int | float) or not 0.0 <= rate < 1.0:
            raise ValueError(
                f"{_where(self)}: expected a dropout rate in [0, 1), got {rate!r}. "
                "Fix: pass the probability of dropping an element, e.g. 0.1."
            )
        self.rate = float(rate)
        self.rng = rng

    def __call__(
        self, params: Params, inputs: jax.Array, is_training: bool = True
    ) -> tuple[jax.Array, Params]:
        """Applies dropout when `is_training` and `rate > 0`."""
        if not is_training or self.rate == 0.0:
            return inputs, params
        if self.rng is None:
            raise ValueError(
                f"{_where(self)}: expected an Rng to draw dropout masks, got "
                "rng=None. Fix: build it with rng=bx.Rng(graph / 'rng'), or call "
                "it with is_training=False."
            )
        key, params = self.rng(params)
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(key, keep, inputs.shape)
        return inputs * mask / keep, params
