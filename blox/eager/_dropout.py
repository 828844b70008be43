"""Eager `Dropout`: builds `blox.core.Dropout` and keeps its RNG state."""

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
from jaxtyping import Array, Float

from blox import core

from ._core_module import CoreModule
from ._seed import build_core, init_params
from ._typecheck import typecheck


class Dropout(CoreModule):
    """Zeroes each element with probability `rate` in training mode.

    Its RNG state (`rng.seed` as raw key data, `rng.counter`) is a pair of
    buffers; each training call draws one key and advances the counter, so
    consecutive calls use different masks. Eval mode is the identity.

    Args:
        rate: Drop probability in `[0, 1)`.
        broadcast_dims: Axes along which one mask value is shared (flax.linen's
            `broadcast_dims`; see `blox.core.Dropout`).
        seed: Int or key for this layer's RNG; default: the global stream.

    Raises:
        TypeError: If `rate` is not a real number.
        ValueError: If `rate` is outside `[0, 1)`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> drop = nn.Dropout(0.5)
        >>> a, b = drop(jnp.ones(8)), drop(jnp.ones(8))
        >>> bool((a != b).any()), int(drop.rng.counter)
        (True, 2)
        >>> bool((drop.eval()(jnp.ones(8)) == 1).all())
        True
        >>> channels = nn.Dropout(0.5, broadcast_dims=(-2,))  # whole features of (length, features)
        >>> y = channels(jnp.ones((4, 6)))
        >>> bool((y == y[:1]).all())
        True
    """

    def __init__(
        self, rate: float, *, broadcast_dims: Sequence[int] = (), seed: Any = None
    ) -> None:
        super().__init__()
        where = f"nn.Dropout({rate!r})"
        if not isinstance(rate, numbers.Real) or isinstance(rate, bool | np.bool_):
            raise TypeError(
                f"{where}: expected a dropout rate as a float in [0, 1), got "
                f"{type(rate).__name__}. Fix: pass the probability of dropping an "
                "element, e.g. nn.Dropout(0.1)."
            )
        if not 0.0 <= rate < 1.0:
            raise ValueError(
                f"{where}: expected a dropout rate in [0, 1), got {rate!r}. Fix: pass "
                "the probability of dropping an element, e.g. nn.Dropout(0.1)."
            )
        self.rate = float(rate)
        self.broadcast_dims = broadcast_dims
        options = {"broadcast_dims": broadcast_dims} if broadcast_dims != () else {}
        layer, rng = build_core(where, core.Dropout, (self.rate,), options)
        params = init_params(where, rng, seed, lambda p: p)
        self.adopt_core(layer, params, keep=lambda path: True)

    @typecheck
    def __call__(self, x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        """Applies dropout in training mode; identity in eval mode."""
        return self.call_core(self.core_layer, x, is_training=self.training)

    def extra_repr(self) -> str:
        shown = f", broadcast_dims={self.broadcast_dims!r}" if self.broadcast_dims != () else ""
        return f"rate={self.rate}{shown}"
