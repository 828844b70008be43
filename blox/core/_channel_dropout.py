"""`ChannelDropout`: dropout whose mask is shared along some axes (whole channels).

PyTorch's `Dropout1d/2d/3d` zero entire feature maps: one Bernoulli draw per
(example, channel), broadcast over the spatial axes. (Written here because
`core/_dropout.py`'s `Dropout` has no `broadcast_dims` yet; it is flax's
`Dropout(broadcast_dims=...)` and can fold into it.)
"""

from collections.abc import Sequence
from typing import Any

import jax

from ._graph import Graph
from ._module import Module, _where
from ._params import Params


class ChannelDropout(Module):
    """Training: `x * bernoulli(key, 1 - rate, mask_shape) / (1 - rate)`; otherwise identity.

    The mask has size 1 along `broadcast_dims` (so one draw covers a whole
    channel there); one key is drawn from `rng` per training call.

    Args:
        graph: This module's node.
        rate: Probability of dropping each mask entry, in `[0, 1)`.
        rng: The `Rng` that supplies the masks.
        broadcast_dims: Axes (of the inputs) the mask is shared along.

    Raises:
        ValueError: If `rate` is outside `[0, 1)` or `rng` is missing when training.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> from blox.core._channel_dropout import ChannelDropout
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> drop = ChannelDropout(g / 'drop', 0.5, rng=rng, broadcast_dims=(-1,))
        >>> y, _ = drop(rng.seed(bx.Params(), seed=0), jnp.ones((6, 4)))
        >>> [len(set(row)) for row in y.tolist()]
        [1, 1, 1, 1, 1, 1]
    """

    def __init__(
        self, graph: Graph, rate: float, rng: Any = None, broadcast_dims: Sequence[int] = ()
    ) -> None:
        super().__init__(graph)
        if not isinstance(rate, int | float) or not 0.0 <= rate < 1.0:
            raise ValueError(
                f"{_where(self)}: expected a dropout rate in [0, 1), got {rate!r}. "
                "Fix: pass the probability of dropping a channel, e.g. 0.1."
            )
        self.rate = float(rate)
        self.rng = rng
        self.broadcast_dims = tuple(broadcast_dims)

    def __call__(
        self, params: Params, inputs: jax.Array, is_training: bool = True
    ) -> tuple[jax.Array, Params]:
        """Applies channel dropout when `is_training` and `rate > 0`."""
        if not is_training or self.rate == 0.0:
            return inputs, params
        if self.rng is None:
            raise ValueError(
                f"{_where(self)}: expected an Rng to draw dropout masks, got rng=None. "
                "Fix: build it with rng=bx.Rng(graph / 'rng'), or call it with "
                "is_training=False."
            )
        key, params = self.rng(params)
        ndim = inputs.ndim
        shared = {d % ndim for d in self.broadcast_dims}
        shape = tuple(1 if d in shared else s for d, s in enumerate(inputs.shape))
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(key, keep, shape)
        return inputs * mask / keep, params
