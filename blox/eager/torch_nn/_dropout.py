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
        self._check(where, p)
        self.p = float(p)
        self._adopt(where, core.Dropout, (self.p,), {}, (), None, seed=seed, keep_rng=True)

    @staticmethod
    def _check(where: str, p: Any) -> None:
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

    @typecheck
    def forward(self, input: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        """Applies dropout in training mode; identity in eval mode."""
        return self.call_core(self.core_layer, input, is_training=self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace=False"


class _ChannelDropout(Shell):
    _n = 0

    def __init__(self, p: float = 0.5, inplace: bool = False, *, seed: Any = None) -> None:
        super().__init__()
        where = f"nn.{type(self).__name__}({p!r})"
        Dropout._check(where, p)
        self.p = float(p)
        dims = tuple(range(-self._n, 0))
        # flax's Dropout(broadcast_dims=...): one draw per (example, channel).
        self._adopt(
            where,
            core.Dropout,
            (self.p,),
            {"broadcast_dims": dims},
            (),
            None,
            seed=seed,
            keep_rng=True,
        )

    def forward(self, input: Array) -> Array:
        """Zeroes whole channels (all spatial cells of a channel together) in training."""
        if input.ndim < self._n + 2:
            raise ValueError(
                f"nn.{type(self).__name__}: expected input (N, C, {self._n} spatial dims), "
                f"got shape {tuple(input.shape)}. Fix: add the batch axis, e.g. x[None]."
            )
        return self.call_core(self.core_layer, input, is_training=self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace=False"


class Dropout1d(_ChannelDropout):
    """Zeroes whole channels of `(N, C, L)` with probability `p` in training.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager import torch_nn as nn
        >>> y = nn.Dropout1d(0.5)(jnp.ones((4, 3, 5)))
        >>> bool(((y == 0).all(-1) | (y == 2).all(-1)).all())
        True
    """

    _n = 1


class Dropout2d(_ChannelDropout):
    """Zeroes whole channels of `(N, C, H, W)` with probability `p` in training.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager import torch_nn as nn
        >>> y = nn.Dropout2d(0.5)(jnp.ones((4, 3, 2, 2)))
        >>> bool(((y == 0).all((2, 3)) | (y == 2).all((2, 3))).all())
        True
    """

    _n = 2


class Dropout3d(_ChannelDropout):
    """Zeroes whole channels of `(N, C, D, H, W)` with probability `p` in training.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager import torch_nn as nn
        >>> nn.Dropout3d(0.5)(jnp.ones((4, 3, 2, 2, 2))).shape
        (4, 3, 2, 2, 2)
    """

    _n = 3
