"""Counter-based randomness whose state lives in `Params`.

An `Rng` keeps two non-trainable parameters under its node: a typed `seed`
key and a `uint32` `counter`. Each draw returns `fold_in(seed, counter)` and
increments the counter, so the same seed and the same call order give the
same keys under `jit`, `grad`, `checkpoint` and `scan`, with no hidden state.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._graph import Graph
from ._module import Module, _where
from ._params import Param, Params

_SEED_TAG = {"tag": "rng_seed"}
_COUNTER_TAG = {"tag": "rng_counter"}


class Rng(Module):
    """A stream of random keys, its seed and counter stored in `Params`.

    Args:
        graph: This module's node.

    Example:
        >>> import jax
        >>> import blox as bx
        >>> rng = bx.Rng(bx.Graph('net') / 'rng')
        >>> params = rng.seed(bx.Params(), seed=42)
        >>> k1, params = rng(params)
        >>> k2, params = rng(params)
        >>> bool((jax.random.key_data(k1) != jax.random.key_data(k2)).any())
        True
        >>> int(rng.get_counter(params))
        2
    """

    def __init__(self, graph: Graph) -> None:
        super().__init__(graph)

    def _missing(self) -> KeyError:
        return KeyError(
            f"{_where(self)}: expected a seeded Rng, got params without its seed. "
            "Fix: use rng.seed(params, seed=...) first for new params; if these are "
            "trained params, they belong to another graph: pass the params this "
            "graph's modules made, and call params.locked() so a module of the wrong "
            "graph raises instead of creating fresh random parameters."
        )

    def get_seed(self, params: Params) -> jax.Array:
        """The typed seed key.

        Raises:
            KeyError: If the Rng was never seeded in `params`.

        Example:
            >>> import jax
            >>> import blox as bx
            >>> rng = bx.Rng(bx.Graph('net') / 'rng')
            >>> params = rng.seed(bx.Params(), seed=0)
            >>> jax.dtypes.issubdtype(rng.get_seed(params).dtype, jax.dtypes.prng_key)
            True
        """
        entry = params._data.get(self.graph.path + ("seed",))
        if entry is None:
            raise self._missing()
        return entry.value

    def get_counter(self, params: Params) -> jax.Array:
        """The `uint32` counter: how many keys were drawn since seeding.

        Raises:
            KeyError: If the Rng was never seeded in `params`.

        Example:
            >>> import blox as bx
            >>> rng = bx.Rng(bx.Graph('net') / 'rng')
            >>> int(rng.get_counter(rng.seed(bx.Params(), seed=0, counter=5)))
            5
        """
        entry = params._data.get(self.graph.path + ("counter",))
        if entry is None:
            raise self._missing()
        return entry.value

    def seed(
        self,
        params: Params,
        *,
        seed: int | jax.Array | None = None,
        counter: int | jax.Array | None = None,
    ) -> Params:
        """Seeds the stream, or updates its seed and/or counter.

        The first call needs `seed` (an int or a key; `counter` defaults to
        0). Later calls change whichever of the two is given.

        Raises:
            ValueError: If neither is given, or the first call has no `seed`.
            TypeError: If `seed` is neither an int, a typed key nor raw
                `uint32[2]` key data.

        Example:
            >>> import blox as bx
            >>> rng = bx.Rng(bx.Graph('net') / 'rng')
            >>> params = rng.seed(bx.Params(), seed=1)
            >>> params = rng.seed(params, counter=7)
            >>> int(rng.get_counter(params))
            7
        """
        seed_path = self.graph.path + ("seed",)
        counter_path = self.graph.path + ("counter",)
        first = seed_path not in params._data
        if first and seed is None:
            raise ValueError(
                f"{_where(self)}: expected seed= on the first rng.seed call, got "
                "none. Fix: rng.seed(params, seed=0)."
            )
        if seed is None and counter is None:
            raise ValueError(
                f"{_where(self)}: expected seed= and/or counter=, got neither. "
                "Fix: pass the value to change."
            )
        if first and params._locked:
            raise KeyError(
                f"{_where(self)}: expected to create the Rng state, got params "
                "that are locked. Fix: seed before locking, or use "
                "params.unlocked()."
            )
        data = dict(params._data)
        if seed is not None:
            data[seed_path] = Param(_as_key(self, seed), trainable=False, metadata=_SEED_TAG)
        if counter is not None or first:
            data[counter_path] = Param(
                _as_counter(counter),
                trainable=False,
                metadata=_COUNTER_TAG,
            )
        return Params._make(data, params._locked)

    def __call__(self, params: Params) -> tuple[jax.Array, Params]:
        """Draws one key: `fold_in(seed, counter)`, and increments the counter.

        Raises:
            KeyError: If the Rng was never seeded in `params`.

        Example:
            >>> import jax
            >>> import blox as bx
            >>> rng = bx.Rng(bx.Graph('net') / 'rng')
            >>> params = rng.seed(bx.Params(), seed=0)
            >>> key, params = rng(params)
            >>> expected = jax.random.fold_in(jax.random.key(0), 0)
            >>> bool((jax.random.key_data(key) == jax.random.key_data(expected)).all())
            True
        """
        data = params._data
        path = self.graph.path
        seed = data.get(path + ("seed",))
        count = data.get(path + ("counter",))
        if seed is None or count is None:
            raise self._missing()
        key = jax.random.fold_in(seed.value, count.value)
        new = dict(data)
        new[path + ("counter",)] = count.replace(value=count.value + jnp.uint32(1))
        return key, Params._make(new, params._locked)


def _as_counter(counter: Any) -> jax.Array:
    # A host value is put on the device as it is: `jnp.asarray` would compile
    # a conversion program, tens of milliseconds in a fresh process.
    if counter is None or isinstance(counter, np.uint32):
        return jax.device_put(np.uint32(0 if counter is None else counter))
    return jnp.asarray(counter, jnp.uint32)


def _as_key(rng: Rng, seed: Any) -> jax.Array:
    if isinstance(seed, bool):
        seed = None  # falls through to the TypeError below
    if isinstance(seed, int):
        return jax.random.key(seed)
    if isinstance(seed, np.ndarray | np.generic) and not isinstance(seed, np.bool_):
        seed = jnp.asarray(seed)
    if isinstance(seed, jax.Array):
        if jax.dtypes.issubdtype(seed.dtype, jax.dtypes.prng_key):
            return seed
        if seed.dtype == jnp.uint32 and seed.shape == (2,):
            return jax.random.wrap_key_data(seed)
        if seed.shape == () and jnp.issubdtype(seed.dtype, jnp.integer):
            return jax.random.key(seed)
        got = f"an array of shape {seed.shape} and dtype {seed.dtype}"
    else:
        got = type(seed).__name__
    raise TypeError(
        f"{_where(rng)}: expected seed to be an int, a typed JAX key or raw "
        f"uint32[2] key data, got {got}. Fix: pass an int or jax.random.key(...)."
    )
