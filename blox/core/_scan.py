"""Sequence processing: step functions scanned over a batch-major time axis.

`static_scan` unrolls a step function in Python; `dynamic_scan` runs it with
`jax.lax.scan`. Both take `[batch, time, ...]` inputs and thread `Params`
through every step, so RNG counters and statistics advance per step.

While params are unlocked (the first, creating call), `dynamic_scan` runs the
first step outside the scan so every parameter exists before the scan fixes
the carry's structure, then scans the remaining steps. The result equals a
fully unrolled run, without the ancestor's compile cost of unrolling.
"""

import functools
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


def _time_length(step_fn: Any, inputs: Any, is_reset: Any, fn_name: str, axis: int = 1) -> int:
    where = _describe(step_fn, fn_name)
    layout = "[time, batch, ...]" if axis == 0 else "[batch, time, ...]"
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
                f"({layout}), got shape {tuple(jnp.shape(leaf))}. "
                "Fix: add the missing batch or time axis, e.g. x[None] or x[:, None]."
            )
    lengths = {jnp.shape(leaf)[axis] for leaf in leaves}
    if len(lengths) != 1:
        shapes = [tuple(jnp.shape(leaf)) for leaf in leaves]
        raise ValueError(
            f"{where}: expected every input leaf to share one time length "
            f"(axis {axis}), got shapes {shapes}. Fix: pad or crop the sequences "
            "to a common length."
        )
    length = lengths.pop()
    want = f"[time={length}, batch]" if axis == 0 else f"[batch, time={length}]"
    for leaf in jax.tree.leaves(is_reset):
        if jnp.ndim(leaf) < 2 or jnp.shape(leaf)[axis] != length:
            raise ValueError(
                f"{where}: expected is_reset leaves of shape {want}, "
                f"got shape {tuple(jnp.shape(leaf))}. Fix: give one reset flag "
                "per batch row and time step."
            )
    if length == 0:
        raise ValueError(
            f"{where}: expected at least one time step, got time length 0. "
            "Fix: skip the call for empty sequences."
        )
    return length


def _at(tree: Any, t: int, axis: int = 1) -> Any:
    if axis == 0:
        return jax.tree.map(lambda x: x[t], tree)
    return jax.tree.map(lambda x: x[:, t], tree)


def _stack(outputs: list[Any], axis: int = 1) -> Any:
    return jax.tree.map(lambda *xs: jnp.stack(xs, axis=axis), *outputs)


def static_scan(
    step_fn: StepFn,
    params: Params,
    inputs: Any,
    prev_state: Any,
    is_reset: Any,
    is_training: bool,
    *,
    time_major: bool = False,
    unroll: int = 1,
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
        time_major: Inputs, resets and outputs are `[time, batch, ...]`.
        unroll: Accepted for `dynamic_scan`'s signature; a Python loop is
            always fully unrolled.

    Returns:
        `((outputs, final_state), params)` with outputs `[batch, time, ...]`
        (`[time, batch, ...]` when `time_major`).

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
    axis = 0 if time_major else 1
    length = _time_length(step_fn, inputs, is_reset, "static_scan", axis)
    state = prev_state
    outputs = []
    for t in range(length):
        x_t, reset_t = _at(inputs, t, axis), _at(is_reset, t, axis)
        (out, state), params = step_fn(params, x_t, state, reset_t, is_training)
        outputs.append(out)
    return (_stack(outputs, axis), state), params


class _ParamsChanged(Exception):
    """Raised while tracing a scan body whose step updated its params."""


def dynamic_scan(
    step_fn: StepFn,
    params: Params,
    inputs: Any,
    prev_state: Any,
    is_reset: Any,
    is_training: bool,
    *,
    time_major: bool = False,
    unroll: int = 1,
) -> tuple[tuple[Any, Any], Params]:
    """Runs `step_fn` over the time axis with `jax.lax.scan`.

    Same arguments and result as `static_scan`; `unroll` steps run per loop
    iteration (`jax.lax.scan`'s `unroll`). With unlocked params, the first
    step runs outside the scan to create the parameters.

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
    axis = 0 if time_major else 1
    length = _time_length(step_fn, inputs, is_reset, "dynamic_scan", axis)
    first = []
    start = 0
    state = prev_state
    if not params.is_locked:
        x_0, reset_0 = _at(inputs, 0, axis), _at(is_reset, 0, axis)
        (out, state), params = step_fn(params, x_0, state, reset_0, is_training)
        first.append(out)
        start = 1
    if start == length:
        return (_stack(first, axis), state), params

    def to_time_major(x: jax.Array) -> jax.Array:
        if time_major:
            return x[start:] if start else x
        return jnp.swapaxes(x[:, start:], 0, 1)

    xs = (jax.tree.map(to_time_major, inputs), jax.tree.map(to_time_major, is_reset))
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
        state, outs = jax.lax.scan(constant_body, state, xs, unroll=unroll)
    except _ParamsChanged:
        (state, params), outs = jax.lax.scan(body, (state, params), xs, unroll=unroll)
    if first:
        outs = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b], axis=0), first[0], outs)
    if not time_major:
        outs = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), outs)
    return (outs, state), params


def flip_sequences(
    inputs: jax.Array,
    seq_lengths: Any = None,
    time_major: bool = False,
    num_batch_dims: int = 1,
) -> jax.Array:
    """Reverses every sequence along time, keeping its padding at the end.

    With `seq_lengths`, row `b` has its first `seq_lengths[b]` steps reversed
    and its padding left in place (flax's `flip_sequences`), so a reversed
    padded batch still starts with real data.

    Args:
        inputs: `[*batch, time, ...]` (`[time, *batch, ...]` when
            `time_major`).
        seq_lengths: `None` or integer lengths of shape `[*batch]`.
        time_major: Whether time is the leading axis.
        num_batch_dims: How many batch axes there are (read from
            `seq_lengths` when it is given).

    Returns:
        The flipped array, same shape.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> x = jnp.array([[1, 0, 0], [2, 3, 0], [4, 5, 6]])
        >>> bx.flip_sequences(x, jnp.array([1, 2, 3])).tolist()
        [[1, 0, 0], [3, 2, 0], [6, 5, 4]]
    """
    if seq_lengths is not None:
        num_batch_dims = jnp.ndim(seq_lengths)
    axis = 0 if time_major else num_batch_dims
    if seq_lengths is None:
        return jnp.flip(inputs, axis=axis)
    steps = inputs.shape[axis]
    lengths = jnp.expand_dims(jnp.asarray(seq_lengths), axis)
    shape = [1] * (num_batch_dims + 1)
    shape[axis] = steps
    # Position t of a flipped row reads step (length - 1 - t) mod steps: the
    # real steps come out reversed, the padding rotates to stay at the end.
    idx = (jnp.arange(steps - 1, -1, -1).reshape(shape) + lengths) % steps
    idx = idx.reshape(idx.shape + (1,) * (inputs.ndim - idx.ndim))
    return jnp.take_along_axis(inputs, idx, axis=axis)


def _check_unroll(where: str, unroll: Any) -> int:
    if isinstance(unroll, bool) or not isinstance(unroll, int) or unroll < 1:
        raise ValueError(
            f"{where}: expected unroll to be an int >= 1, got {unroll!r}. Fix: pass "
            "unroll=1 (a rolled loop) or the number of steps per loop iteration."
        )
    return unroll


def _last_valid(carries: Any, seq_lengths: Any) -> Any:
    """From `[time, *batch, ...]` carries, each row's carry after its last valid step."""
    last = jnp.asarray(seq_lengths) - 1

    def pick(x: jax.Array) -> jax.Array:
        idx = last.reshape((1,) + last.shape + (1,) * (x.ndim - 1 - last.ndim))
        return jnp.take_along_axis(x, idx, axis=0)[0]

    return jax.tree.map(pick, carries)


def _expand_like(flag: jax.Array, leaf: jax.Array) -> jax.Array:
    flag = jnp.asarray(flag)
    return flag.reshape(flag.shape + (1,) * (jnp.ndim(leaf) - flag.ndim))


def _has_split_step(cell: Any) -> bool:
    from ._recurrent import RNNCellBase

    kind = type(cell)
    return (
        isinstance(cell, RNNCellBase)
        and kind.recurrent_projection is not RNNCellBase.recurrent_projection
        and kind.update is not RNNCellBase.update
        and kind.recur is RNNCellBase.recur
    )


def _add(a: Any, b: Any) -> Any:
    return jax.tree.map(jnp.add, a, b)


def _recurrence(cell: Any, unroll: int) -> Callable[[Any, Any, Any], tuple[Any, Any]]:
    """The loop `carry -> update(p_t, recurrent_projection(W, carry), carry)` with a hand-made VJP.

    Autodiff of the loop would accumulate the weight gradient step by step
    inside the backward loop and keep every intermediate of the update. Here
    the forward loop saves only each step's carry and recurrent projection;
    the backward loop recomputes the (elementwise) update for its VJP and
    emits the cotangent of each projection; the weight gradient is then one
    VJP of `recurrent_projection` over all stacked carries at once (one
    matmul for `h @ W`), as PyTorch's fused kernels do. The outputs are the
    same as a plain scan's; the gradients agree within float32 rounding.
    """

    def forward(weights: Any, proj: Any, carry: Any) -> tuple[tuple[Any, Any], Any]:
        def step(state: Any, p_t: Any) -> tuple[Any, Any]:
            rec = cell.recurrent_projection(weights, state)
            out, new = cell.update(p_t, rec, state)
            return new, (out, state, rec)

        final, (outs, carries, recs) = jax.lax.scan(step, carry, proj, unroll=unroll)
        return (outs, final), (weights, proj, carries, recs)

    def backward(saved: Any, cotangents: Any) -> tuple[Any, Any, Any]:
        weights, proj, carries, recs = saved
        d_outs, d_final = cotangents

        def step(d_state: Any, xs: Any) -> tuple[Any, Any]:
            d_out, p_t, state, rec = xs
            _, vjp_update = jax.vjp(cell.update, p_t, rec, state)
            d_p, d_rec, d_prev = vjp_update((d_out, d_state))
            _, vjp_rec = jax.vjp(lambda c: cell.recurrent_projection(weights, c), state)
            (d_through,) = vjp_rec(d_rec)
            return _add(d_prev, d_through), (d_p, d_rec)

        d_carry, (d_proj, d_recs) = jax.lax.scan(
            step, d_final, (d_outs, proj, carries, recs), reverse=True, unroll=unroll
        )
        _, vjp_weights = jax.vjp(lambda w: cell.recurrent_projection(w, carries), weights)
        (d_weights,) = vjp_weights(d_recs)
        return d_weights, d_proj, d_carry

    @jax.custom_vjp
    def run(weights: Any, proj: Any, carry: Any) -> tuple[Any, Any]:
        return forward(weights, proj, carry)[0]

    run.defvjp(forward, backward)
    return run


def scan_cell(
    cell: Any,
    params: Params,
    inputs: jax.Array,
    carry: Any,
    *,
    is_reset: Any = None,
    is_training: bool = True,
    seq_lengths: Any = None,
    reverse: bool = False,
    keep_order: bool = False,
    unroll: int = 1,
    is_static: bool = False,
) -> tuple[tuple[Any, Any], Params]:
    """Runs a recurrent cell over time-major inputs: the engine of every wrapper.

    A cell with a whole-sequence kernel (`scan_sequence`, the ancestor `LSTM`
    and `GRU`) runs it when there is no `is_reset`, no `seq_lengths` and the
    scan is dynamic. Otherwise a cell that implements the projection protocol
    of `RNNCellBase` (`project`, `recurrent_weights`, `recur`) has the input
    projection of all time steps computed in one call before the loop and its
    recurrent weights read once; only `recur` runs per step. Any other
    `RecurrenceBase` has its one-step `__call__` scanned with params threaded
    (`dynamic_scan`).

    Args:
        cell: The cell.
        params: The container.
        inputs: `[time, *batch, *features]`.
        carry: The carry before the first processed step.
        is_reset: `None` or `[time, *batch]` booleans: rows whose carry is
            replaced by a fresh one before that step (in processing order).
        is_training: Passed to the cell.
        seq_lengths: `None` or `[*batch]` integer lengths; the returned carry
            is each row's carry after its last valid step.
        reverse: Process from the last valid step to the first.
        keep_order: With `reverse`, give the outputs back in input order.
        unroll: Steps per loop iteration.
        is_static: Unroll in Python instead of `jax.lax.scan`.

    Returns:
        `((outputs [time, *batch, ...], carry), params)`.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> cell = bx.GRUCell(g / 'cell', 4, rng=rng)
        >>> params = rng.seed(bx.Params(), seed=0)
        >>> xs = jnp.ones((5, 2, 3))
        >>> h0 = cell.initialize_carry(None, (2, 3))
        >>> (ys, h), params = bx.scan_cell(cell, params, xs, h0)
        >>> ys.shape, h.shape
        ((5, 2, 4), (2, 4))
    """
    if reverse:
        flip = functools.partial(
            flip_sequences, seq_lengths=seq_lengths, time_major=True, num_batch_dims=1
        )
        inputs = jax.tree.map(flip, inputs)
        is_reset = jax.tree.map(flip, is_reset)
    keep_carries = seq_lengths is not None
    scan = static_scan if is_static else dynamic_scan
    hoist = getattr(cell, "hoist_inputs", False)
    sequence = getattr(cell, "scan_sequence", None)
    if sequence is not None and is_reset is None and not keep_carries and not is_static:
        (outs, carry), params = sequence(params, inputs, carry, unroll)
    elif (
        hoist and _has_split_step(cell) and is_reset is None and not keep_carries and not is_static
    ):
        proj, params = cell.project(params, inputs)
        weights, params = cell.recurrent_weights(params)
        outs, carry = _recurrence(cell, unroll)(weights, proj, carry)
    elif hoist and hasattr(cell, "recur"):
        proj, params = cell.project(params, inputs)
        weights, params = cell.recurrent_weights(params)
        fresh = None
        if is_reset is not None:
            fresh = cell.initialize_carry(None, jax.tree.leaves(inputs)[0].shape[1:])

        def step(p: Params, x_t: Any, state: Any, reset_t: Any, _: bool) -> Any:
            if reset_t is not None:
                state = jax.tree.map(
                    lambda new, old: jnp.where(_expand_like(reset_t, old), new, old), fresh, state
                )
            out, state = cell.recur(weights, x_t, state)
            return ((state, out) if keep_carries else out, state), p

        (outs, carry), params = scan(
            step, params, proj, carry, is_reset, is_training, time_major=True, unroll=unroll
        )
    else:

        def step(p: Params, x_t: Any, state: Any, reset_t: Any, training: bool) -> Any:
            (out, state), p = cell(p, x_t, state, reset_t, training)
            return ((state, out) if keep_carries else out, state), p

        (outs, carry), params = scan(
            step, params, inputs, carry, is_reset, is_training, time_major=True, unroll=unroll
        )
    if keep_carries:
        carries, outs = outs
        carry = _last_valid(carries, seq_lengths)
    if reverse and keep_order:
        flip = functools.partial(
            flip_sequences, seq_lengths=seq_lengths, time_major=True, num_batch_dims=1
        )
        outs = jax.tree.map(flip, outs)
    return (outs, carry), params


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

    def __init__(self, graph: Any, is_static: bool = False, unroll: int = 1) -> None:
        super().__init__(graph)
        self._is_static = bool(is_static)
        self.unroll = _check_unroll(_where(self), unroll)

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
        *,
        time_major: bool = False,
        seq_lengths: Any = None,
    ) -> tuple[tuple[Any, Any], Params]:
        """Scans the step over `[batch, time, ...]` inputs.

        Cells with the projection protocol (`RNNCellBase`, `LSTM`, `GRU`)
        compute the input projection of every step in one matmul before the
        loop; see `scan_cell`.

        Args:
            params: The container.
            inputs: `[batch, time, features]` (or a pytree of such arrays).
            prev_state: The starting state; `None` means `initial_state`.
            is_reset: `None` or `[batch, time]` booleans: reset those rows'
                state before that step.
            is_training: Passed to every step.
            time_major: Inputs, `is_reset` and outputs are `[time, batch, ...]`.
            seq_lengths: `None` or `[batch]` integer lengths: the returned
                state is each row's state after its last valid step (outputs
                past a row's length are not zeroed).

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
        axis = 0 if time_major else 1
        layout = "[time, batch, ...]" if time_major else "[batch, time, ...]"
        for leaf in jax.tree.leaves(inputs):
            if jnp.ndim(leaf) < 2:
                raise ValueError(
                    f"{_where(self)}: expected every input leaf to have rank >= 2 "
                    f"({layout}), got shape {tuple(jnp.shape(leaf))}. "
                    "Fix: add the missing batch or time axis, e.g. x[None]."
                )
        _time_length(self, inputs, is_reset, "apply", axis)
        if prev_state is None:
            prev_state, params = self.initial_state(params, _at(inputs, 0, axis))

        def swap(x: Any) -> Any:
            return x if time_major else jnp.swapaxes(x, 0, 1)

        (outs, state), params = scan_cell(
            self,
            params,
            jax.tree.map(swap, inputs),
            prev_state,
            is_reset=jax.tree.map(swap, is_reset),
            is_training=is_training,
            seq_lengths=seq_lengths,
            unroll=self.unroll,
            is_static=self._is_static,
        )
        return (jax.tree.map(swap, outs), state), params
