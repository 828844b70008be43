"""Sequence processing: step functions scanned over a batch-major time axis.

`static_scan` unrolls a step function in Python; `dynamic_scan` runs it with
`jax.lax.scan`. Both take `[batch, time, ...]` inputs and thread `Params`
through every step, so RNG counters and statistics advance per step.

While params are unlocked (the first, creating call), `dynamic_scan` runs the
first step outside the scan so every parameter exists before the scan fixes
the carry's structure, then scans the remaining steps. The result equals a
fully unrolled run, without the ancestor's compile cost of unrolling.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._module import Module, _where
from ._params import Params

StepFn = Callable[[Params, Any, Any, Any, bool], tuple[tuple[Any, Any], Params]]


def _describe(step_fn: Any, fallback: str) -> str:
    owner = getattr(step_fn, "__self__", step_fn)
    return _where(owner) if isinstance(owner, Module) else fallback


def _time_length(step_fn: Any, inputs: Any, is_reset: Any, fn_name: str) -> int:
    where = _describe(step_fn, fn_name)
    leaves = jax.tree.leaves(inputs)
    if not leaves:
        raise ValueError(
            f"{where}: expected inputs with at least one array of shape "
            "[batch, time, ...], got an empty pytree. Fix: pass the sequence array."
        )
    for leaf in leaves:
        if jnp.ndim(leaf) < 2:
            raise ValueError(
                f"{where}: expected every input leaf to have rank >= 2 "
                f"([batch, time, ...]), got shape {tuple(jnp.shape(leaf))}. "
                "Fix: add the missing batch or time axis, e.g. x[None] or x[:, None]."
            )
    lengths = {jnp.shape(leaf)[1] for leaf in leaves}
    if len(lengths) != 1:
        shapes = [tuple(jnp.shape(leaf)) for leaf in leaves]
        raise ValueError(
            f"{where}: expected every input leaf to share one time length "
            f"(axis 1), got shapes {shapes}. Fix: pad or crop the sequences "
            "to a common length."
        )
    length = lengths.pop()
    for leaf in jax.tree.leaves(is_reset):
        if jnp.ndim(leaf) < 2 or jnp.shape(leaf)[1] != length:
            raise ValueError(
                f"{where}: expected is_reset leaves of shape [batch, time={length}], "
                f"got shape {tuple(jnp.shape(leaf))}. Fix: give one reset flag "
                "per batch row and time step."
            )
    if length == 0:
        raise ValueError(
            f"{where}: expected at least one time step, got time length 0. "
            "Fix: skip the call for empty sequences."
        )
    return length


def _at(tree: Any, t: int) -> Any:
    return jax.tree.map(lambda x: x[:, t], tree)


def _stack(outputs: list[Any]) -> Any:
    return jax.tree.map(lambda *xs: jnp.stack(xs, axis=1), *outputs)


def static_scan(
    step_fn: StepFn,
    params: Params,
    inputs: Any,
    prev_state: Any,
    is_reset: Any,
    is_training: bool,
) -> tuple[tuple[Any, Any], Params]:
    """Runs `step_fn` over the time axis with a Python loop (fully unrolled).

    Args:
        step_fn: `step_fn(params, x_t, state, reset_t, is_training)` returning
            `((output_t, state), params)`.
        params: The container, threaded through every step.
        inputs: A pytree of `[batch, time, ...]` arrays.
        prev_state: The state before the first step.
        is_reset: `None` or a pytree of `[batch, time]` booleans.
        is_training: Passed to every step.

    Returns:
        `((outputs, final_state), params)` with outputs `[batch, time, ...]`.

    Raises:
        ValueError: If a leaf has rank < 2 or the time lengths differ.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> def step(params, x, state, reset, is_training):
        ...     state = state + x
        ...     return (state, state), params
        >>> (ys, last), _ = bx.static_scan(step, bx.Params(), jnp.ones((2, 3)),
        ...                                jnp.zeros(2), None, True)
        >>> ys.tolist(), last.tolist()
        ([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]], [3.0, 3.0])
    """
    length = _time_length(step_fn, inputs, is_reset, "static_scan")
    state = prev_state
    outputs = []
    for t in range(length):
        (out, state), params = step_fn(params, _at(inputs, t), state, _at(is_reset, t), is_training)
        outputs.append(out)
    return (_stack(outputs), state), params


class _ParamsChanged(Exception):
    """Raised while tracing a scan body whose step updated its params."""


def dynamic_scan(
    step_fn: StepFn,
    params: Params,
    inputs: Any,
    prev_state: Any,
    is_reset: Any,
    is_training: bool,
) -> tuple[tuple[Any, Any], Params]:
    """Runs `step_fn` over the time axis with `jax.lax.scan`.

    Same arguments and result as `static_scan`. With unlocked params, the
    first step runs outside the scan to create the parameters.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> def step(params, x, state, reset, is_training):
        ...     state = state * 2 + x
        ...     return (state, state), params
        >>> (ys, last), _ = bx.dynamic_scan(step, bx.Params(), jnp.ones((1, 3)),
        ...                                 jnp.zeros(1), None, True)
        >>> ys.tolist()
        [[1.0, 3.0, 7.0]]
    """
    length = _time_length(step_fn, inputs, is_reset, "dynamic_scan")
    first = []
    start = 0
    state = prev_state
    if not params.is_locked:
        (out, state), params = step_fn(params, _at(inputs, 0), state, _at(is_reset, 0), is_training)
        first.append(out)
        start = 1
    if start == length:
        return (_stack(first), state), params

    def time_major(x: jax.Array) -> jax.Array:
        return jnp.swapaxes(x[:, start:], 0, 1)

    xs = (jax.tree.map(time_major, inputs), jax.tree.map(time_major, is_reset))
    leaves, treedef = jax.tree.flatten(params)

    def constant_body(state: Any, xs: Any) -> tuple[Any, Any]:
        x_t, reset_t = xs
        (out, state), new_params = step_fn(params, x_t, state, reset_t, is_training)
        new_leaves, new_treedef = jax.tree.flatten(new_params)
        if new_treedef != treedef or any(a is not b for a, b in zip(new_leaves, leaves)):
            raise _ParamsChanged
        return state, out

    def body(carry: Any, xs: Any) -> tuple[Any, Any]:
        state, params = carry
        x_t, reset_t = xs
        (out, state), params = step_fn(params, x_t, state, reset_t, is_training)
        return (state, params), out

    # Params the step leaves alone (no RNG draw, no statistics) are closed
    # over, as in a hand-written scan. Carried, JAX would still hoist them out
    # of the loop, but the backward loop would accumulate their gradients in
    # the params' sorted order instead of the order the step uses them, and
    # XLA schedules that loop worse (about 2% on a CPU LSTM training step).
    # A step that updates its params aborts this trace, and they are carried.
    try:
        state, outs = jax.lax.scan(constant_body, state, xs)
    except _ParamsChanged:
        (state, params), outs = jax.lax.scan(body, (state, params), xs)
    outs = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), outs)
    if first:
        outs = jax.tree.map(lambda a, b: jnp.concatenate([a[:, None], b], axis=1), first[0], outs)
    return (outs, state), params


class SequenceBase(Module):
    """Interface of modules that process sequences.

    Subclasses implement `initial_state`, the one-step `__call__` and the
    whole-sequence `apply`; `RecurrenceBase` supplies `apply` for recurrent
    cells.

    Example:
        >>> import blox as bx
        >>> issubclass(bx.LSTM, bx.SequenceBase)
        True
    """

    def initial_state(self, params: Params, inputs: Any) -> tuple[Any, Params]:
        """The state before the first step, for inputs `[batch, ...]`."""
        raise NotImplementedError(
            f"{_where(self)}: expected initial_state to be implemented by the "
            "subclass, got none. Fix: define initial_state(self, params, inputs)."
        )

    def __call__(
        self,
        params: Params,
        inputs: Any,
        prev_state: Any,
        is_reset: Any = None,
        is_training: bool = True,
    ) -> tuple[tuple[Any, Any], Params]:
        """One step: `((output, state), params)`."""
        raise NotImplementedError(
            f"{_where(self)}: expected __call__ (one step) to be implemented by "
            "the subclass, got none. Fix: define __call__(self, params, inputs, "
            "prev_state, is_reset=None, is_training=True)."
        )

    def apply(
        self,
        params: Params,
        inputs: Any,
        prev_state: Any = None,
        is_reset: Any = None,
        is_training: bool = True,
    ) -> tuple[tuple[Any, Any], Params]:
        """A whole `[batch, time, ...]` sequence: `((outputs, state), params)`."""
        raise NotImplementedError(
            f"{_where(self)}: expected apply to be implemented by the subclass, "
            "got none. Fix: define apply, or derive from RecurrenceBase."
        )


class RecurrenceBase(SequenceBase):
    """A recurrent cell whose `apply` scans its one-step `__call__`.

    Args:
        graph: This module's node.
        is_static: Unroll with a Python loop (`static_scan`) instead of
            `jax.lax.scan` (`dynamic_scan`).

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> lstm = bx.LSTM(g / 'lstm', 4, rng=rng)
        >>> params = rng.seed(bx.Params(), seed=0)
        >>> (ys, state), params = lstm.apply(params, jnp.ones((2, 5, 3)))
        >>> ys.shape, state.cell.shape
        ((2, 5, 4), (2, 4))
    """

    def __init__(self, graph: Any, is_static: bool = False) -> None:
        super().__init__(graph)
        self._is_static = bool(is_static)

    @property
    def is_static(self) -> bool:
        """Whether `apply` unrolls in Python instead of using `jax.lax.scan`.

        Example:
            >>> import blox as bx
            >>> bx.GRU(bx.Graph('n') / 'gru', 4, rng=None, is_static=True).is_static
            True
        """
        return self._is_static

    @is_static.setter
    def is_static(self, value: bool) -> None:
        self._is_static = bool(value)

    def maybe_reset_state(
        self, params: Params, prev_state: Any, inputs: Any, is_reset: Any = None
    ) -> Any:
        """Replaces the state of rows where `is_reset` is true with a fresh one.

        `is_reset` is `None`, one `[batch]` boolean array (a JAX or NumPy array,
        broadcast over every state leaf's feature axes), or a pytree matching
        the state.

        Example:
            >>> import jax.numpy as jnp
            >>> import blox as bx
            >>> gru = bx.GRU(bx.Graph('n') / 'gru', 3, rng=None)
            >>> state = bx.GRUState(hidden=jnp.ones((2, 3)))
            >>> new = gru.maybe_reset_state(bx.Params(), state, jnp.ones((2, 5)),
            ...                             jnp.array([True, False]))
            >>> new.hidden.tolist()
            [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]
        """
        if is_reset is None:
            return prev_state
        fresh, _ = self.initial_state(params, inputs)

        def pick(reset: jax.Array, new: jax.Array, old: jax.Array) -> jax.Array:
            reset = jnp.asarray(reset)
            reset = reset.reshape(reset.shape + (1,) * (jnp.ndim(old) - reset.ndim))
            return jnp.where(reset, new, old)

        if isinstance(is_reset, jax.Array | np.ndarray):
            return jax.tree.map(lambda new, old: pick(is_reset, new, old), fresh, prev_state)
        return jax.tree.map(pick, is_reset, fresh, prev_state)

    def apply(
        self,
        params: Params,
        inputs: Any,
        prev_state: Any = None,
        is_reset: Any = None,
        is_training: bool = True,
    ) -> tuple[tuple[Any, Any], Params]:
        """Scans the step over `[batch, time, ...]` inputs.

        Args:
            params: The container.
            inputs: `[batch, time, features]` (or a pytree of such arrays).
            prev_state: The starting state; `None` means `initial_state`.
            is_reset: `None` or `[batch, time]` booleans: reset those rows'
                state before that step.
            is_training: Passed to every step.

        Returns:
            `((outputs [batch, time, ...], final_state), params)`.

        Raises:
            ValueError: If an input leaf has rank < 2 or time lengths differ.

        Example:
            >>> import jax.numpy as jnp
            >>> import blox as bx
            >>> g = bx.Graph('n')
            >>> rng = bx.Rng(g / 'rng')
            >>> gru = bx.GRU(g / 'gru', 4, rng=rng)
            >>> params = rng.seed(bx.Params(), seed=0)
            >>> (ys, state), params = gru.apply(params, jnp.ones((3, 6, 2)))
            >>> ys.shape
            (3, 6, 4)
        """
        for leaf in jax.tree.leaves(inputs):
            if jnp.ndim(leaf) < 2:
                raise ValueError(
                    f"{_where(self)}: expected every input leaf to have rank >= 2 "
                    f"([batch, time, ...]), got shape {tuple(jnp.shape(leaf))}. "
                    "Fix: add the missing batch or time axis, e.g. x[None]."
                )
        if prev_state is None:
            prev_state, params = self.initial_state(params, inputs)
        scan = static_scan if self._is_static else dynamic_scan
        return scan(self, params, inputs, prev_state, is_reset, is_training)
