"""Recurrent cells: `LSTM` and `GRU`, one step per `__call__`, scanned by `apply`."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ._graph import Graph
from ._linear import Linear
from ._module import _where
from ._params import Params
from ._scan import RecurrenceBase


class LSTMState(NamedTuple):
    """State of an `LSTM`: `hidden` and `cell`, each `(batch, hidden_size)`.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> bx.LSTMState(hidden=jnp.zeros((2, 3)), cell=jnp.zeros((2, 3))).cell.shape
        (2, 3)
    """

    hidden: jax.Array
    cell: jax.Array


class GRUState(NamedTuple):
    """State of a `GRU`: `hidden`, `(batch, hidden_size)`.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> bx.GRUState(hidden=jnp.zeros((2, 3))).hidden.shape
        (2, 3)
    """

    hidden: jax.Array


def _check_step(cell: RecurrenceBase, inputs: jax.Array, prev_state: Any) -> None:
    if prev_state is None:
        raise ValueError(
            f"{_where(cell)}: expected a prev_state for one step, got None. Fix: "
            "state, params = cell.initial_state(params, x) first, or use "
            "cell.apply(params, xs) for a whole sequence."
        )
    if jnp.ndim(inputs) < 2:
        raise ValueError(
            f"{_where(cell)}: expected step inputs of rank >= 2 (batch, features), got "
            f"shape {tuple(jnp.shape(inputs))}. Fix: pass x of shape (batch, features); "
            "for apply, pass (batch, time, features)."
        )


def _batch_size(cell: RecurrenceBase, inputs: Any) -> int:
    leaves = jax.tree.leaves(inputs)
    if not leaves or jnp.ndim(leaves[0]) < 1:
        raise ValueError(
            f"{_where(cell)}: expected inputs with a leading batch axis, got "
            f"{jax.tree.map(jnp.shape, inputs)}. Fix: pass (batch, ...) arrays."
        )
    return jnp.shape(leaves[0])[0]


class LSTM(RecurrenceBase):
    """Long short-term memory cell.

    One step, with `gates` a `Linear` to `4 * hidden_size` over `[x, h]`:
    `i, g, f, o = split(gates([x, h]), 4)`;
    `c' = sigmoid(f) * c + sigmoid(i) * tanh(g)`; `h' = sigmoid(o) * tanh(c')`.
    The output is `h'`.

    Args:
        graph: This module's node; the gates live at `graph / 'gates'`.
        hidden_size: Size of `h` and `c`.
        rng: `Rng` for initialisation.
        is_static: Unroll `apply` in Python instead of `jax.lax.scan`.

    Shapes:
        step: `(batch, in)` -> `(batch, hidden)`; `apply`: `(batch, time, in)`
        -> `(batch, time, hidden)`.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> lstm = bx.LSTM(g / 'lstm', 8, rng=rng)
        >>> params = rng.seed(bx.Params(), seed=0)
        >>> x = jnp.ones((2, 3))
        >>> state, params = lstm.initial_state(params, x)
        >>> (h, state), params = lstm(params, x, state)
        >>> h.shape, params[('net', 'lstm', 'gates', 'kernel')].value.shape
        ((2, 8), (11, 32))
    """

    def __init__(
        self, graph: Graph, hidden_size: int, rng: Any = None, is_static: bool = False
    ) -> None:
        super().__init__(graph, is_static)
        self.hidden_size = hidden_size
        self.gates = Linear(graph.child("gates"), 4 * hidden_size, rng=rng)

    def initial_state(self, params: Params, inputs: Any) -> tuple[LSTMState, Params]:
        """Zeros `(batch, hidden_size)` for `hidden` and `cell`."""
        zeros = jnp.zeros((_batch_size(self, inputs), self.hidden_size), jnp.float32)
        return LSTMState(hidden=zeros, cell=zeros), params

    def __call__(
        self,
        params: Params,
        inputs: jax.Array,
        prev_state: LSTMState | None,
        is_reset: jax.Array | None = None,
        is_training: bool = True,
    ) -> tuple[tuple[jax.Array, LSTMState], Params]:
        """One step; rows with `is_reset` start from a zero state."""
        _check_step(self, inputs, prev_state)
        state = self.maybe_reset_state(params, prev_state, inputs, is_reset)
        z, params = self.gates(params, jnp.concatenate([inputs, state.hidden], axis=-1))
        i, g, f, o = jnp.split(z, 4, axis=-1)
        cell = jax.nn.sigmoid(f) * state.cell + jax.nn.sigmoid(i) * jnp.tanh(g)
        hidden = jax.nn.sigmoid(o) * jnp.tanh(cell)
        return (hidden, LSTMState(hidden=hidden, cell=cell)), params


class GRU(RecurrenceBase):
    """Gated recurrent unit.

    One step: `z, r = sigmoid(split(gates([x, h]), 2))`;
    `n = tanh(candidate([x, r * h]))`; `h' = (1 - z) * h + z * n`.

    Args:
        graph: This module's node; children `gates` and `candidate`.
        hidden_size: Size of `h`.
        rng: `Rng` for initialisation.
        is_static: Unroll `apply` in Python instead of `jax.lax.scan`.

    Shapes:
        step: `(batch, in)` -> `(batch, hidden)`; `apply`: `(batch, time, in)`
        -> `(batch, time, hidden)`.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> gru = bx.GRU(g / 'gru', 8, rng=rng)
        >>> params = rng.seed(bx.Params(), seed=0)
        >>> (hs, state), params = gru.apply(params, jnp.ones((2, 5, 3)))
        >>> hs.shape, state.hidden.shape
        ((2, 5, 8), (2, 8))
    """

    def __init__(
        self, graph: Graph, hidden_size: int, rng: Any = None, is_static: bool = False
    ) -> None:
        super().__init__(graph, is_static)
        self.hidden_size = hidden_size
        self.gates = Linear(graph.child("gates"), 2 * hidden_size, rng=rng)
        self.candidate = Linear(graph.child("candidate"), hidden_size, rng=rng)

    def initial_state(self, params: Params, inputs: Any) -> tuple[GRUState, Params]:
        """Zeros `(batch, hidden_size)`."""
        zeros = jnp.zeros((_batch_size(self, inputs), self.hidden_size), jnp.float32)
        return GRUState(hidden=zeros), params

    def __call__(
        self,
        params: Params,
        inputs: jax.Array,
        prev_state: GRUState | None,
        is_reset: jax.Array | None = None,
        is_training: bool = True,
    ) -> tuple[tuple[jax.Array, GRUState], Params]:
        """One step; rows with `is_reset` start from a zero state."""
        _check_step(self, inputs, prev_state)
        state = self.maybe_reset_state(params, prev_state, inputs, is_reset)
        h = state.hidden
        zr, params = self.gates(params, jnp.concatenate([inputs, h], axis=-1))
        z, r = jnp.split(jax.nn.sigmoid(zr), 2, axis=-1)
        n, params = self.candidate(params, jnp.concatenate([inputs, r * h], axis=-1))
        n = jnp.tanh(n)
        hidden = (1 - z) * h + z * n
        return (hidden, GRUState(hidden=hidden)), params
