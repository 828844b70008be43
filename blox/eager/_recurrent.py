"""Eager `LSTM` and `GRU`: build the core cells and call `apply` or one step."""

from typing import Any

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, TypeCheckError

from blox import core
from blox.core import GRUState, LSTMState

from ._core_module import CoreModule
from ._seed import build_core, check_sizes, init_params
from ._typecheck import typecheck

__all__ = ["GRU", "LSTM", "GRUState", "LSTMState"]


class _Recurrent(CoreModule):
    _core_cls: Any = None
    _state_cls: Any = None
    _blox_compiled_methods = ("step",)  # eager steps compile like __call__

    def __init__(
        self, input_size: int, hidden_size: int, *, seed: Any = None, **options: Any
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.options = tuple(sorted(options.items(), key=lambda kv: kv[0]))
        where = f"nn.{type(self).__name__}({input_size}, {hidden_size})"
        check_sizes(where, input_size=input_size, hidden_size=hidden_size)
        layer, rng = build_core(where, self._core_cls, (hidden_size,), options)
        x = jnp.zeros((1, input_size), jnp.float32)

        def create(params: Any) -> Any:
            state, params = layer.initial_state(params, x)
            return layer(params, x, state)[1]

        params = init_params(where, rng, seed, create, signature=(layer, input_size))
        self.adopt_core(layer, params, keep=lambda path: path[1] != "rng")

    @typecheck
    def __call__(
        self,
        xs: Float[Array, "batch time {self.input_size}"],
        state: Any = None,
        is_reset: Bool[Array, "batch time"] | None = None,
    ) -> tuple[Float[Array, "batch time {self.hidden_size}"], Any]:
        """Runs a batch-first sequence; returns `(outputs, final_state)`."""
        self._check_state(state, xs.shape[0])
        return self.call_core(self.core_layer.apply, xs, state, is_reset, self.training)

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

    def _check_state(self, state: Any, batch: int) -> None:
        # The state is a NamedTuple, which the annotations cannot describe; a wrong
        # one would otherwise fail deep in the core, naming its internal path.
        if state is None:
            return
        want = (batch, self.hidden_size)
        if isinstance(state, self._state_cls) and all(
            jnp.shape(leaf) == want and jnp.issubdtype(jnp.result_type(leaf), jnp.floating)
            for leaf in state
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
            got = type(state).__name__
        fields = ", ".join(f"{name}=float{list(want)}" for name in self._state_cls._fields)
        raise TypeCheckError(
            f"expected state to be {self._state_cls.__name__}({fields}), got {got}. "
            f"Fix: pass state=None or {type(self).__name__.lower()}.initial_state"
            f"({batch}) to start, and the state the previous call returned to continue."
        )

    def initial_state(self, batch_size: int) -> Any:
        """The zero state for `batch_size` rows.

        Example:
            >>> from blox import eager as nn
            >>> nn.LSTM(3, 5).initial_state(2).cell.shape
            (2, 5)
        """
        state, _ = self.core_layer.initial_state(None, jnp.zeros((batch_size, 0)))
        return state

    def extra_repr(self) -> str:
        shown = "".join(f", {k}={v!r}" for k, v in self.options)
        return f"{self.input_size}, {self.hidden_size}{shown}"


def _short(value: Any) -> str:
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is None or dtype is None:
        return type(value).__name__
    return f"{dtype}{list(shape)}"


class LSTM(_Recurrent):
    """Long short-term memory over batch-first sequences.

    `outputs, state = lstm(xs, state=None, is_reset=None)`; one step:
    `out, state = lstm.step(x, state)`. The gates' parameters are
    `lstm.gates.kernel` `(input + hidden, 4 * hidden)` and `lstm.gates.bias`.

    Args:
        input_size: Features per step.
        hidden_size: Size of `h` and `c`.
        seed: Int or key for this layer's init.
        **options: Other `blox.core.LSTM` options (`is_static`).

    Raises:
        jaxtyping.TypeCheckError: (a `TypeError`) If the inputs, `is_reset` or
            `state` do not have the documented dtypes and shapes.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> lstm = nn.LSTM(3, 8)
        >>> ys, state = lstm(jnp.ones((2, 5, 3)))
        >>> ys.shape, state.cell.shape, lstm.gates.kernel.shape
        ((2, 5, 8), (2, 8), (11, 32))
    """

    _core_cls = core.LSTM
    _state_cls = LSTMState


class GRU(_Recurrent):
    """Gated recurrent unit over batch-first sequences; same calls as `LSTM`.

    Args:
        input_size: Features per step.
        hidden_size: Size of `h`.
        seed: Int or key for this layer's init.
        **options: Other `blox.core.GRU` options (`is_static`).

    Raises:
        jaxtyping.TypeCheckError: (a `TypeError`) If the inputs, `is_reset` or
            `state` do not have the documented dtypes and shapes.

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
