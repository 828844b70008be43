"""`Dropout` with PyTorch's `p`; its random stream is a buffer outside the `state_dict`."""

import numbers
from typing import Any

import numpy as np
from jaxtyping import Array, Float

from blox import core

from .._typecheck import typecheck
from ._shell import Shell


class Dropout(Shell):
    """Zeroes each element with probability `p` in training mode, scaling by `1 / (1 - p)`.

    The numerics are `blox.core.Dropout`'s. Its random stream (`rng.seed`,
    `rng.counter` buffers) advances on every training call, also under
    `nn.filter_jit`; like PyTorch's global generator it is not part of
    `state_dict()`, but `nn.save` / `nn.load` carry it.

    Args:
        p: Drop probability in `[0, 1)`.
        inplace: Accepted for PyTorch compatibility (arrays are immutable).
        seed: Int or key for this layer's stream; default: the global stream.

    Raises:
        TypeError: If `p` is not a real number.
        ValueError: If `p` is outside `[0, 1)`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager import torch_nn as nn
        >>> drop = nn.Dropout(0.5)
        >>> sorted(set(drop(jnp.ones(100)).tolist())), len(drop.state_dict())
        ([0.0, 2.0], 0)
        >>> bool((drop.eval()(jnp.ones(4)) == 1).all())
        True
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, *, seed: Any = None) -> None:
        super().__init__()
        where = f"nn.{type(self).__name__}({p!r})"
        if not isinstance(p, numbers.Real) or isinstance(p, bool | np.bool_):
            raise TypeError(
                f"{where}: expected p to be a float in [0, 1), got {type(p).__name__}. "
                "Fix: pass the probability of dropping an element, e.g. p=0.1."
            )
        if not 0.0 <= p < 1.0:
            raise ValueError(
                f"{where}: expected p in [0, 1), got {p!r}. Fix: pass the probability "
                "of dropping an element, e.g. p=0.1 (p=1 drops everything: use zeros)."
            )
        self.p = float(p)
        self._adopt(where, core.Dropout, (self.p,), {}, (), None, seed=seed, keep_rng=True)

    @typecheck
    def forward(self, input: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        """Applies dropout in training mode; identity in eval mode."""
        return self.call_core(self.core_layer, input, is_training=self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace=False"
