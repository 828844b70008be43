"""Eager `LSTM` and `GRU`: build the core cells and call `apply` or one step."""

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, TypeCheckError

from blox import core
from blox.core import GRUState, LSTMState

from ._core_module import CoreModule
from ._seed import build_core, check_sizes, example_zeros, init_params
from ._typecheck import typecheck

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "GRUCell",
    "GRUState",
    "LSTMCell",
    "LSTMState",
    "MGUCell",
    "OptimizedLSTMCell",
    "SimpleCell",
]


class _Recurrent(CoreModule):
    _core_cls: Any = None
    _state_cls: Any = None
    _blox_compiled_methods = ("step",)  # eager steps compile like __call__

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        num_layers: int = 1,
        dropout: float = 0.0,
        bidirectional: bool = False,
        batch_first: bool = True,
        seed: Any = None,
        _cell_extra: dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout = dropout
        self.bidirectional = bool(bidirectional)
        self.batch_first = bool(batch_first)
        self.options = tuple(sorted(options.items(), key=lambda kv: kv[0]))
        where = f"nn.{type(self).__name__}({input_size}, {hidden_size})"
        check_sizes(where, input_size=input_size, hidden_size=hidden_size)
        _check_stack(where, num_layers, dropout)
        self._stacked = num_layers != 1 or self.bidirectional
        if self._stacked:
            stack = dict(
                num_layers=num_layers,
                bidirectional=self.bidirectional,
                dropout=dropout,
                cell_options={**(_cell_extra or {}), **options},
            )
            layer, rng = build_core(where, core.StackedRNN, (self._core_cls, hidden_size), stack)
        else:
            layer, rng = build_core(
                where, self._core_cls, (hidden_size,), {**(_cell_extra or {}), **options}
            )
        x = example_zeros((1, input_size))

        def create(params: Any) -> Any:
            if self._stacked:
                return layer.apply(params, x[:, None], is_training=False)[1]
            state, params = layer.initial_state(params, x)
            return layer(params, x, state)[1]

        params = init_params(where, rng, seed, create, signature=(layer, input_size))
        # Dropout between layers draws from the layer's Rng: keep its state then.
        keep_rng = self._stacked and dropout > 0
        self.adopt_core(layer, params, keep=lambda path: keep_rng or path[1] != "rng")

    @property
    def num_directions(self) -> int:
        """2 for a bidirectional layer, else 1.

        Example:
            >>> from blox import eager as nn
            >>> nn.GRU(3, 4, bidirectional=True).num_directions
            2
        """
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        """Features per output step: `num_directions * hidden_size`.

        Example:
            >>> from blox import eager as nn
            >>> nn.LSTM(3, 4, bidirectional=True).output_size
            8
        """
        return self.num_directions * self.hidden_size

    def __call__(
        self,
        xs: Any,
        state: Any = None,
        is_reset: Any = None,
        *,
        seq_lengths: Any = None,
    ) -> tuple[Any, Any]:
        """Runs a sequence; returns `(outputs, final_state)`.

        Args:
            xs: `(batch, time, input_size)`, or `(time, batch, input_size)`
                with `batch_first=False`.
            state: `None` (zeros) or the state a previous call returned.
            is_reset: `None` or booleans in the layout of `xs` without
                features: reset those rows' state before that step.
            seq_lengths: `None` or `(batch,)` integer lengths: the final state
                is each row's state after its last valid step; outputs past a
                row's length are not zeroed.

        Returns:
            `(outputs, state)`, outputs `(batch, time, output_size)` (or
            time-first).
        """
        if self.batch_first:
            return self._batch_first(xs, state, is_reset, seq_lengths)
        return self._time_first(xs, state, is_reset, seq_lengths)

    @typecheck
    def _batch_first(
        self,
        xs: Float[Array, "batch time {self.input_size}"],
        state: Any = None,
        is_reset: Bool[Array, "batch time"] | None = None,
        seq_lengths: Int[Array, " batch"] | None = None,
    ) -> tuple[Float[Array, "batch time {self.output_size}"], Any]:
        self._check_state(state, xs.shape[0])
        return self._run(xs, state, is_reset, seq_lengths)

    @typecheck
    def _time_first(
        self,
        xs: Float[Array, "time batch {self.input_size}"],
        state: Any = None,
        is_reset: Bool[Array, "time batch"] | None = None,
        seq_lengths: Int[Array, " batch"] | None = None,
    ) -> tuple[Float[Array, "time batch {self.output_size}"], Any]:
        self._check_state(state, xs.shape[1])
        return self._run(xs, state, is_reset, seq_lengths)

    def _run(self, xs: Any, state: Any, is_reset: Any, seq_lengths: Any) -> Any:
        return self.call_core(
            self.core_layer.apply,
            xs,
            state,
            is_reset,
            self.training,
            time_major=not self.batch_first,
            seq_lengths=seq_lengths,
        )

    @typecheck
    def step(
        self,
        x: Float[Array, "batch {self.input_size}"],
        state: Any = None,
        is_reset: Bool[Array, " batch"] | None = None,
    ) -> tuple[Float[Array, "batch {self.hidden_size}"], Any]:
        """One time step; `state=None` starts from zeros. Returns `(output, state)`."""
        if state is None:
            state = self.initial_state(x.shape[0])
        self._check_state(state, x.shape[0])
        return self.call_core(self.core_layer, x, state, is_reset, self.training)

    def _state_shape(self, batch: int) -> tuple[int, ...]:
        if self._stacked:
            return (self.num_layers * self.num_directions, batch, self.hidden_size)
        return (batch, self.hidden_size)

    def _check_state(self, state: Any, batch: int) -> None:
        # The state is a NamedTuple (or a flax-style tuple), which the annotations
        # cannot describe; a wrong one would otherwise fail deep in the core.
        if state is None:
            return
        want = self._state_shape(batch)
        expected = self.initial_state(batch)
        same_kind = (
            type(state) is type(expected)
            if self._state_cls is not None
            else jax.tree.structure(state) == jax.tree.structure(expected)
        )
        if same_kind and all(
            jnp.shape(leaf) == want and jnp.issubdtype(jnp.result_type(leaf), jnp.floating)
            for leaf in jax.tree.leaves(state)
        ):
            return
        if isinstance(state, tuple) and hasattr(state, "_fields"):
            got = (
                f"{type(state).__name__}("
                + ", ".join(f"{name}={_short(leaf)}" for name, leaf in zip(state._fields, state))
                + ")"
            )
        elif isinstance(state, tuple):
            got = f"a plain tuple ({', '.join(_short(leaf) for leaf in state)})"
        else:
            got = _short(state)
        if self._state_cls is not None:
            fields = ", ".join(f"{name}=float{list(want)}" for name in self._state_cls._fields)
            shown = f"{self._state_cls.__name__}({fields})"
        else:
            shown = jax.tree.map(lambda _: f"float{list(want)}", expected)
            shown = f"{shown}".replace("'", "")
        raise TypeCheckError(
            f"expected state to be {shown}, got {got}. "
            f"Fix: pass state=None or {type(self).__name__.lower()}.initial_state"
            f"({batch}) to start, and the state the previous call returned to continue."
        )

    def initial_state(self, batch_size: int) -> Any:
        """The zero state for `batch_size` rows.

        One layer, one direction: leaves `(batch, hidden_size)`. Otherwise
        every leaf is `(num_layers * num_directions, batch, hidden_size)`,
        index `layer * num_directions + direction` (PyTorch's `h_n` order).

        Example:
            >>> from blox import eager as nn
            >>> nn.LSTM(3, 5).initial_state(2).cell.shape
            (2, 5)
            >>> nn.LSTM(3, 5, num_layers=2, bidirectional=True).initial_state(2).cell.shape
            (4, 2, 5)
        """
        state, _ = self.core_layer.initial_state(None, jnp.zeros((batch_size, 0)))
        return state

    def extra_repr(self) -> str:
        shown = "".join(f", {k}={v!r}" for k, v in self.options)
        for name, default in (
            ("num_layers", 1),
            ("dropout", 0.0),
            ("bidirectional", False),
            ("batch_first", True),
        ):
            value = getattr(self, name)
            if value != default:
                shown += f", {name}={value!r}"
        return f"{self.input_size}, {self.hidden_size}{shown}"


def _check_stack(where: str, num_layers: Any, dropout: Any) -> None:
    if isinstance(num_layers, bool) or not isinstance(num_layers, int):
        raise TypeError(
            f"{where}: expected num_layers to be an int, got {type(num_layers).__name__}. "
            "Fix: pass e.g. num_layers=2."
        )
    if num_layers < 1:
        raise ValueError(
            f"{where}: expected num_layers >= 1, got {num_layers}. Fix: pass e.g. num_layers=2."
        )
    if isinstance(dropout, bool) or not isinstance(dropout, int | float):
        raise TypeError(
            f"{where}: expected dropout to be a float, got {type(dropout).__name__}. "
            "Fix: pass the probability of dropping an element, e.g. dropout=0.2."
        )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(
            f"{where}: expected dropout in [0, 1), got {dropout!r}. Fix: pass the "
            "probability of dropping an element, e.g. dropout=0.2."
        )


def _short(value: Any) -> str:
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is None or dtype is None:
        return type(value).__name__
    return f"{dtype}{list(shape)}"


class LSTM(_Recurrent):
    """Long short-term memory over sequences (the ancestor's fused cell, `blox.core.LSTM`).

    `outputs, state = lstm(xs, state=None, is_reset=None, seq_lengths=None)`;
    one step: `out, state = lstm.step(x, state)`. One layer keeps the
    parameters `lstm.gates.kernel` `(input + hidden, 4 * hidden)` and
    `lstm.gates.bias` and the state `LSTMState(hidden, cell)`, each
    `(batch, hidden)`. With `num_layers > 1` or `bidirectional`, layer `l`'s
    cells are `lstm.l{l}.gates...` and `lstm.l{l}_reverse.gates...`, and the
    state's leaves are `(num_layers * num_directions, batch, hidden)`, index
    `layer * num_directions + direction` (PyTorch's `h_n` order); it
    round-trips as `state=`.

    With `batch_first=True` (the default), a `(time, batch, features)` input
    whose two leading sizes are any valid pair runs as `batch=time` rows
    without an error: shapes cannot tell them apart. Pass `batch_first=False`
    for sequence-first data; a `state`, `is_reset` or `seq_lengths` whose
    batch disagrees raises naming the layer.

    Args:
        input_size: Features per step.
        hidden_size: Size of `h` and `c`.
        num_layers: Stacked layers; the outputs of one are the inputs of the next.
        dropout: Dropout probability on the outputs of every layer but the
            last, in training mode only (its masks draw from the layer's
            `rng` buffers, which are then kept as state).
        bidirectional: Add a backward direction per layer; outputs
            concatenate forward and backward features.
        batch_first: `True`: `(batch, time, features)`; `False`:
            `(time, batch, features)` for inputs, outputs and `is_reset`.
        seed: Int or key for this layer's init.
        **options: Other `blox.core.LSTM` options (`is_static`, `unroll`,
            `forget_gate_bias`, `hoist_inputs`).

    Raises:
        TypeError: If `num_layers` or `dropout` has the wrong type.
        ValueError: If `num_layers < 1` or `dropout` is outside `[0, 1)`.
        jaxtyping.TypeCheckError: (a `TypeError`) If the inputs, `is_reset`,
            `seq_lengths` or `state` do not have the documented dtypes and shapes.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> lstm = nn.LSTM(3, 8)
        >>> ys, state = lstm(jnp.ones((2, 5, 3)))
        >>> ys.shape, state.cell.shape, lstm.gates.kernel.shape
        ((2, 5, 8), (2, 8), (11, 32))
        >>> deep = nn.LSTM(3, 8, num_layers=2, bidirectional=True, batch_first=False)
        >>> ys, state = deep(jnp.ones((5, 2, 3)))
        >>> ys.shape, state.hidden.shape
        ((5, 2, 16), (4, 2, 8))
    """

    _core_cls = core.LSTM
    _state_cls = LSTMState


class GRU(_Recurrent):
    """Gated recurrent unit over sequences (`blox.core.GRU`); same calls as `LSTM`.

    The state is `GRUState(hidden)`, stacked like `LSTM`'s for several
    layers or directions.

    Args:
        input_size: Features per step.
        hidden_size: Size of `h`.
        num_layers: Stacked layers; the outputs of one are the inputs of the next.
        dropout: Dropout probability on the outputs of every layer but the
            last, in training mode only (its masks draw from the layer's
            `rng` buffers, which are then kept as state).
        bidirectional: Add a backward direction per layer; outputs
            concatenate forward and backward features.
        batch_first: `True`: `(batch, time, features)`; `False`:
            `(time, batch, features)` for inputs, outputs and `is_reset`.
        seed: Int or key for this layer's init.
        **options: Other `blox.core.GRU` options (`is_static`, `unroll`,
            `hoist_inputs`).

    Raises:
        TypeError: If `num_layers` or `dropout` has the wrong type.
        ValueError: If `num_layers < 1` or `dropout` is outside `[0, 1)`.
        jaxtyping.TypeCheckError: (a `TypeError`) If the inputs, `is_reset`,
            `seq_lengths` or `state` do not have the documented dtypes and shapes.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> gru = nn.GRU(3, 4)
        >>> out, state = gru.step(jnp.ones((2, 3)))
        >>> out.shape, state.hidden.shape
        ((2, 4), (2, 4))
    """

    _core_cls = core.GRU
    _state_cls = GRUState


class RNN(_Recurrent):
    """Elman RNN over sequences: `h' = nonlinearity(x W_i + b + h W_h)` (`blox.core.SimpleCell`).

    Same calls, layers and layouts as `LSTM`; the state is the hidden array
    itself, `(batch, hidden)` for one layer and `(num_layers *
    num_directions, batch, hidden)` otherwise. Parameters (one layer):
    `i.kernel` `(input, hidden)`, `i.bias`, `h.kernel` `(hidden, hidden)`.

    Args:
        input_size: Features per step.
        hidden_size: Size of `h`.
        nonlinearity: ``'tanh'`` or ``'relu'``.
        num_layers: Stacked layers; the outputs of one are the inputs of the next.
        dropout: Dropout probability on the outputs of every layer but the
            last, in training mode only (its masks draw from the layer's
            `rng` buffers, which are then kept as state).
        bidirectional: Add a backward direction per layer; outputs
            concatenate forward and backward features.
        batch_first: `True`: `(batch, time, features)`; `False`:
            `(time, batch, features)` for inputs, outputs and `is_reset`.
        seed: Int or key for this layer's init.
        **options: Other `blox.core.SimpleCell` options (`kernel_init`,
            `recurrent_kernel_init`, `bias_init`, `unroll`, ...).

    Raises:
        ValueError: If `nonlinearity` is not ``'tanh'`` or ``'relu'``, or the
            layer options are out of range.
        jaxtyping.TypeCheckError: (a `TypeError`) On inputs or state of the
            wrong shape.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> rnn = nn.RNN(3, 4, nonlinearity='relu', num_layers=2)
        >>> ys, h = rnn(jnp.ones((2, 5, 3)))
        >>> ys.shape, h.shape, rnn.l1.h.kernel.shape
        ((2, 5, 4), (2, 2, 4), (4, 4))
    """

    _core_cls = core.SimpleCell

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        nonlinearity: str = "tanh",
        num_layers: int = 1,
        dropout: float = 0.0,
        bidirectional: bool = False,
        batch_first: bool = True,
        seed: Any = None,
        **options: Any,
    ) -> None:
        if nonlinearity not in _NONLINEARITIES:
            raise ValueError(
                f"nn.RNN({input_size}, {hidden_size}): expected nonlinearity 'tanh' or "
                f"'relu', got {nonlinearity!r}. Fix: pass one of those."
            )
        extra = {"activation_fn": _NONLINEARITIES[nonlinearity]}
        super().__init__(
            input_size,
            hidden_size,
            num_layers=num_layers,
            dropout=dropout,
            bidirectional=bidirectional,
            batch_first=batch_first,
            seed=seed,
            _cell_extra=extra,
            **options,
        )
        self.nonlinearity = nonlinearity

    def extra_repr(self) -> str:
        shown = super().extra_repr()
        if self.nonlinearity != "tanh":
            shown += f", nonlinearity={self.nonlinearity!r}"
        return shown


_NONLINEARITIES = {"tanh": jnp.tanh, "relu": jax.nn.relu}


class _Cell(_Recurrent):
    """A single flax-style cell: no layers or directions, flax's carry."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        batch_first: bool = True,
        seed: Any = None,
        **options: Any,
    ) -> None:
        super().__init__(input_size, hidden_size, batch_first=batch_first, seed=seed, **options)


def _cell_doc(name: str, carry: str, params: str) -> str:
    return f"""`blox.core.{name}` (flax.linen's `{name}`) over sequences, with a `step` form.

    `outputs, carry = cell(xs, carry=None, is_reset=None, seq_lengths=None)`
    over `(batch, time, input_size)` (time first with `batch_first=False`);
    `out, carry = cell.step(x, carry)` for one step. The carry is {carry},
    flax's convention; parameters: {params}, flax's names and shapes.

    Args:
        input_size: Features per step.
        hidden_size: Size of the hidden state (flax's `features`).
        batch_first: Layout of `xs`, outputs and `is_reset`.
        seed: Int or key for this layer's init.
        **options: Other `blox.core.{name}` options.

    Raises:
        jaxtyping.TypeCheckError: (a `TypeError`) On inputs or carry of the
            wrong shape.
"""


class LSTMCell(_Cell):
    __doc__ = (
        _cell_doc(
            "LSTMCell",
            "`(c, h)`, each `(batch, hidden)`",
            "`ii, if, ig, io` kernels `(input, hidden)` and `hi, hf, hg, ho` kernels and biases",
        )
        + """
    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> cell = nn.LSTMCell(3, 4)
        >>> h, (c, h) = cell.step(jnp.ones((2, 3)))
        >>> ys, (c, h) = cell(jnp.ones((2, 5, 3)), (c, h))
        >>> ys.shape, cell.hi.kernel.shape
        ((2, 5, 4), (4, 4))
    """
    )

    _core_cls = core.LSTMCell


class OptimizedLSTMCell(_Cell):
    __doc__ = (
        _cell_doc(
            "OptimizedLSTMCell",
            "`(c, h)`, each `(batch, hidden)`",
            "as `LSTMCell` (fused into one matmul per operand when run)",
        )
        + """
    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> ys, (c, h) = nn.OptimizedLSTMCell(3, 4)(jnp.ones((2, 5, 3)))
        >>> ys.shape
        (2, 5, 4)
    """
    )

    _core_cls = core.OptimizedLSTMCell


class GRUCell(_Cell):
    __doc__ = (
        _cell_doc(
            "GRUCell",
            "`h`, `(batch, hidden)`",
            "`ir, iz, in` kernels and biases, `hr, hz` kernels, `hn` kernel and bias",
        )
        + """
    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> out, h = nn.GRUCell(3, 4).step(jnp.ones((2, 3)))
        >>> out.shape, h.shape
        ((2, 4), (2, 4))
    """
    )

    _core_cls = core.GRUCell


class MGUCell(_Cell):
    __doc__ = (
        _cell_doc(
            "MGUCell",
            "`h`, `(batch, hidden)`",
            "`if, in` kernels and biases, `hf` kernel, `hn` kernel and bias",
        )
        + """
    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> ys, h = nn.MGUCell(3, 4)(jnp.ones((2, 5, 3)))
        >>> ys.shape
        (2, 5, 4)
    """
    )

    _core_cls = core.MGUCell


class SimpleCell(_Cell):
    __doc__ = (
        _cell_doc(
            "SimpleCell",
            "`h`, `(batch, hidden)`",
            "`i` kernel and bias, `h` kernel",
        )
        + """
    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> ys, h = nn.SimpleCell(3, 4)(jnp.ones((2, 5, 3)))
        >>> ys.shape
        (2, 5, 4)
    """
    )

    _core_cls = core.SimpleCell
