"""`nn.Rng`: a public random stream for user modules (PyTorch's `torch.randn_like` inside `forward`).

An `Rng` is an eager object over a core `Rng`: its state (`seed` as raw key
data, `counter`) is a pair of buffers, and every draw advances the counter
exactly as `Dropout`'s stream does, so the draws are fresh on every call,
also under `nn.filter_jit` (the state is written back) and `nn.filter_grad`.
"""

from typing import Any

import jax
import jax.numpy as jnp

from blox import core

from ._core_module import CoreModule
from ._seed import init_params


class Rng(CoreModule):
    """A stream of random keys and draws, its state held as buffers.

    Assign it in `__init__` (`self.noise = nn.Rng()`) and draw in the call:
    `self.noise.normal(shape)`, `.uniform(shape)`, `.bernoulli(p, shape)` or a
    raw `.key()`. Each draw uses a new key (`fold_in(seed, counter)`, then the
    counter advances), in training and in eval mode alike; under
    `nn.filter_jit` the advanced state is written back to the model, so the
    next step draws new numbers.

    Args:
        seed: Int or key for the stream; default: the global stream
            (`nn.manual_seed`).

    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> class VAEHead(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.noise = nn.Rng(seed=0)
        ...
        ...     def __call__(self, mu, logvar):
        ...         return mu + jnp.exp(0.5 * logvar) * self.noise.normal(mu.shape)
        >>> head = VAEHead()
        >>> a = head(jnp.zeros(3), jnp.zeros(3))
        >>> b = head(jnp.zeros(3), jnp.zeros(3))
        >>> bool((a != b).all()), int(head.noise.counter)
        (True, 2)
    """

    def __init__(self, *, seed: Any = None) -> None:
        super().__init__()
        graph = core.Graph("blox")
        stream = core.Rng(graph / "rng")
        params = init_params("nn.Rng()", stream, seed, lambda p: p)
        self.adopt_core(stream, params, keep=lambda path: True)

    def key(self) -> jax.Array:
        """A fresh typed key (the counter advances).

        Example:
            >>> import jax
            >>> from blox import eager as nn
            >>> rng = nn.Rng(seed=0)
            >>> bool((jax.random.key_data(rng.key()) != jax.random.key_data(rng.key())).any())
            True
        """
        return self.call_core(self.core_layer)

    def normal(self, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        """Standard normal draws of `shape` (`torch.randn`).

        Example:
            >>> from blox import eager as nn
            >>> nn.Rng(seed=0).normal((2, 3)).shape
            (2, 3)
        """
        return jax.random.normal(self.key(), tuple(shape), dtype)

    def uniform(
        self, shape: tuple[int, ...], dtype: Any = jnp.float32, low: float = 0.0, high: float = 1.0
    ) -> jax.Array:
        """Uniform draws in `[low, high)` (`torch.rand`).

        Example:
            >>> from blox import eager as nn
            >>> bool((nn.Rng(seed=0).uniform((100,)) < 1).all())
            True
        """
        return jax.random.uniform(self.key(), tuple(shape), dtype, low, high)

    def bernoulli(self, p: Any, shape: tuple[int, ...] | None = None) -> jax.Array:
        """Boolean draws, True with probability `p` (`torch.bernoulli`).

        Example:
            >>> from blox import eager as nn
            >>> nn.Rng(seed=0).bernoulli(0.5, (4,)).dtype
            dtype('bool')
        """
        return jax.random.bernoulli(self.key(), p, None if shape is None else tuple(shape))

    def extra_repr(self) -> str:
        return ""
