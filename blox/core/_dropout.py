"""`Dropout`: zero a random fraction of inputs while training."""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from ._graph import Graph
from ._module import Module, _where
from ._params import Params


class Dropout(Module):
    """Training: `where(bernoulli(key, 1 - rate), x / (1 - rate), 0)`; otherwise identity.

    Draws one key from `rng` per training call; with `is_training=False` or
    `rate == 0` it returns the inputs and draws nothing. The mask is drawn
    with the input's shape, except that the `broadcast_dims` axes have size 1
    and share one draw (flax.linen's `broadcast_dims`: e.g. `(-2,)` drops the
    same features at every position of a `(batch, length, features)` input).
    Dropped cells are exact zeros, even where the input is not finite.

    Args:
        graph: This module's node.
        rate: Probability of dropping each element, in `[0, 1)`.
        rng: The `Rng` that supplies the masks.
        broadcast_dims: Axes (negative counts from the end) along which the
            mask is shared.

    Raises:
        ValueError: If `rate` is outside `[0, 1)`, or a `broadcast_dims` axis
            is outside the input's rank.

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
        >>> rows = bx.Dropout(g / 'rows', 0.5, rng=rng, broadcast_dims=(0,))
        >>> y, params = rows(params, jnp.ones((3, 1000)))
        >>> bool((y == y[:1]).all())
        True
    """

    def __init__(
        self, graph: Graph, rate: float, rng: Any = None, broadcast_dims: Sequence[int] = ()
    ) -> None:
        super().__init__(graph)
        if not isinstance(rate, int | float) or not 0.0 <= rate < 1.0:
            raise ValueError(
                f"{_where(self)}: expected a dropout rate in [0, 1), got {rate!r}. "
                "Fix: pass the probability of dropping an element, e.g. 0.1."
            )
        self.rate = float(rate)
        self.rng = rng
        if isinstance(broadcast_dims, int) or not all(
            isinstance(d, int) and not isinstance(d, bool) for d in broadcast_dims
        ):
            raise TypeError(
                f"{_where(self)}: expected broadcast_dims as a sequence of ints, got "
                f"{broadcast_dims!r}. Fix: pass a tuple of axes, e.g. broadcast_dims=(0,)."
            )
        self.broadcast_dims = tuple(broadcast_dims)

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
        shape = list(jnp.shape(inputs))
        for axis in self.broadcast_dims:
            if not -len(shape) <= axis < len(shape):
                raise ValueError(
                    f"{_where(self)}: expected broadcast_dims within the input's rank "
                    f"{len(shape)}, got axis {axis} for shape {tuple(shape)}. Fix: use "
                    f"axes in [-{len(shape)}, {len(shape)})."
                )
            shape[axis] = 1
        key, params = self.rng(params)
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(key, keep, tuple(shape))
        mask = jnp.broadcast_to(mask, jnp.shape(inputs))
        return jax.lax.select(mask, inputs / keep, jnp.zeros_like(inputs)), params
