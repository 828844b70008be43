"""PyTorch's recurrent layers (`RNN`, `LSTM`, `GRU`, their cells) over blox's core cells.

Each shell holds exactly PyTorch's arrays (`weight_ih_l0` `(gates * hidden,
input)`, `weight_hh_l0`, `bias_ih_l0`, `bias_hh_l0`, `*_reverse`), so a
PyTorch `state_dict` loads key for key. On every call those arrays are laid
out as the core cell's parameters (transposed, gate blocks reordered, the
two biases summed where the core cell has one bias) and the core cell runs
the recurrence. Stacking layers, running the reverse direction on the
time-flipped sequence and dropout between layers (a core `Dropout`) are
plumbing around the core cell; the arithmetic of a step lives only in
`blox.core`.
"""

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from blox import core

from .._module import CoreModule
from .._seed import _next_key, build_core, init_params

__all__ = ["GRU", "LSTM", "RNN", "GRUCell", "LSTMCell", "RNNCell"]


class _Kind(NamedTuple):
    """How one PyTorch cell type maps onto a core cell."""

    gates: int  # blocks of `hidden` rows in weight_ih / weight_hh
    build: Callable[[str, int, str], Any]  # (where, hidden, nonlinearity) -> core cell
    params: Callable[..., dict[tuple[str, ...], jax.Array]]  # torch arrays -> core params
    to_state: Callable[[jax.Array, jax.Array | None], Any]  # (h, c) -> core state
    from_state: Callable[[Any], tuple[jax.Array, jax.Array | None]]


def _blocks(w: jax.Array, order: tuple[int, ...]) -> jax.Array:
    """`w`'s gate blocks (equal slices of axis 0) in `order`."""
    parts = jnp.split(w, len(order), axis=0)
    return jnp.concatenate([parts[i] for i in order], axis=0)


def _lstm_build(where: str, hidden: int, nonlinearity: str) -> Any:
    return build_core(where, core.LSTM, (hidden,), {})[0]


# PyTorch's LSTM gates are (i, f, g, o); blox's core LSTM splits (i, g, f, o)
# from one Linear over [x, h], with one bias.
_LSTM_ORDER = (0, 2, 1, 3)


def _lstm_params(w_ih: Any, w_hh: Any, b_ih: Any, b_hh: Any) -> dict[tuple[str, ...], Any]:
    kernel = _blocks(jnp.concatenate([w_ih, w_hh], axis=1), _LSTM_ORDER).T
    if b_ih is None:
        bias = jnp.zeros((kernel.shape[1],), kernel.dtype)
    else:
        bias = _blocks(b_ih + b_hh, _LSTM_ORDER)
    return {("gates", "kernel"): kernel, ("gates", "bias"): bias}


_KINDS: dict[str, _Kind] = {
    "LSTM": _Kind(
        gates=4,
        build=_lstm_build,
        params=_lstm_params,
        to_state=lambda h, c: core.LSTMState(hidden=h, cell=c),
        from_state=lambda s: (s.hidden, s.cell),
    ),
}


def _uniform_init(
    where: str, seed: Any, shapes: dict[str, tuple[int, ...]], bound: float, dtype: Any
) -> dict[str, jax.Array]:
    """PyTorch's recurrent init: every array `U(-bound, bound)`, one key each."""
    key = _next_key(seed, where)
    return {
        name: jax.random.uniform(
            jax.random.fold_in(key, i), shape, dtype=dtype, minval=-bound, maxval=bound
        )
        for i, (name, shape) in enumerate(shapes.items())
    }


def _check_size(where: str, name: str, value: Any) -> int:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
        raise ValueError(
            f"{where}: expected {name} to be a positive int, got {value!r}. "
            f"Fix: pass e.g. {name}=16."
        )
    return int(value)


class _Torch(CoreModule):
    """Shared by the recurrent shells: calling the module runs `forward`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def _core_params(self, prefix: tuple[str, ...], names: dict[str, str]) -> core.Params:
        """This object's arrays `names` (torch name -> role) as core params under `prefix`."""
        arrays = {role: self.__dict__.get(name) for role, name in names.items()}
        mapped = self._kind.params(arrays["w_ih"], arrays["w_hh"], arrays["b_ih"], arrays["b_hh"])
        return core.Params.from_dict(
            {prefix + path: value for path, value in mapped.items()}, locked=True
        )


class _RNNBase(_Torch):
    _mode = ""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        nonlinearity: str = "tanh",
        proj_size: int = 0,
        dtype: Any = None,
        seed: Any = None,
    ) -> None:
        super().__init__()
        where = f"nn.{type(self).__name__}({input_size}, {hidden_size})"
        _check_size(where, "input_size", input_size)
        _check_size(where, "hidden_size", hidden_size)
        _check_size(where, "num_layers", num_layers)
        if (
            not isinstance(dropout, int | float)
            or isinstance(dropout, bool)
            or not 0 <= dropout < 1
        ):
            raise ValueError(
                f"{where}: expected dropout in [0, 1), got {dropout!r}. Fix: pass the "
                "probability of zeroing an element between layers, e.g. dropout=0.2."
            )
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(
                f"{where}: expected nonlinearity 'tanh' or 'relu', got {nonlinearity!r}. "
                "Fix: pass one of those (PyTorch's RNN has no others)."
            )
        if proj_size:
            raise ValueError(
                f"{where}: expected proj_size=0, got {proj_size!r}: LSTM projections are "
                "not supported yet. Fix: add an nn.Linear after the LSTM instead."
            )
        self.mode = type(self).__name__ if not self._mode else self._mode
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.num_layers = int(num_layers)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        self.nonlinearity = nonlinearity
        self.proj_size = 0
        kind = _KINDS[self.mode]
        self.__dict__["_kind"] = kind
        self.__dict__["_cell"] = kind.build(where, self.hidden_size, nonlinearity)
        dtype = jnp.float32 if dtype is None else dtype
        shapes: dict[str, tuple[int, ...]] = {}
        directions = 2 if self.bidirectional else 1
        gates = kind.gates * self.hidden_size
        for layer in range(self.num_layers):
            width = self.input_size if layer == 0 else self.hidden_size * directions
            for suffix in ("", "_reverse")[:directions]:
                shapes[f"weight_ih_l{layer}{suffix}"] = (gates, width)
                shapes[f"weight_hh_l{layer}{suffix}"] = (gates, self.hidden_size)
                if self.bias:
                    shapes[f"bias_ih_l{layer}{suffix}"] = (gates,)
                    shapes[f"bias_hh_l{layer}{suffix}"] = (gates,)
        bound = 1.0 / math.sqrt(self.hidden_size)
        for name, value in _uniform_init(where, seed, shapes, bound, dtype).items():
            setattr(self, name, value)
        # Dropout between layers draws its masks from a core Rng whose state is
        # this object's only buffers.
        drop, rng = build_core(where, core.Dropout, (self.dropout,), {})
        self.__dict__["_drop"] = drop
        params = init_params(where, rng, seed, lambda p: p)
        self.adopt_core(drop, params, keep=lambda path: self.dropout > 0)

    def _cell_names(self, layer: int, suffix: str) -> dict[str, str]:
        names = {"w_ih": f"weight_ih_l{layer}{suffix}", "w_hh": f"weight_hh_l{layer}{suffix}"}
        names["b_ih"] = f"bias_ih_l{layer}{suffix}"
        names["b_hh"] = f"bias_hh_l{layer}{suffix}"
        return names

    def forward(self, input: Any, hx: Any = None) -> tuple[jax.Array, Any]:
        """Runs the stack over a sequence.

        Args:
            input: `(time, batch, input_size)`, `(batch, time, input_size)` with
                `batch_first`, or unbatched `(time, input_size)`.
            hx: Initial state, `(num_layers * directions, batch, hidden_size)`
                (an `(h_0, c_0)` pair for `LSTM`); `None` means zeros.

        Returns:
            `(output, h_n)` (`(output, (h_n, c_n))` for `LSTM`), `output` of
            shape `(time, batch, directions * hidden_size)` (batch first with
            `batch_first`).
        """
        where = f"nn.{type(self).__name__}({self.input_size}, {self.hidden_size})"
        x = jnp.asarray(input)
        if x.ndim not in (2, 3) or x.shape[-1] != self.input_size:
            raise ValueError(
                f"{where}: expected input of shape (time, batch, {self.input_size}) "
                f"(batch first if batch_first=True) or unbatched (time, "
                f"{self.input_size}), got {tuple(x.shape)}. Fix: pass the sequence with "
                "its features last."
            )
        batched = x.ndim == 3
        if not batched:
            x = x[None]
        elif not self.batch_first:
            x = jnp.swapaxes(x, 0, 1)
        # From here x is (batch, time, features), as the core cells scan.
        batch = x.shape[0]
        directions = 2 if self.bidirectional else 1
        want = (self.num_layers * directions, batch, self.hidden_size)
        is_lstm = self.mode == "LSTM"
        h0, c0 = self._initial(where, hx, want, batched, is_lstm, x.dtype)

        def run(params: core.Params, x: jax.Array) -> tuple[Any, core.Params]:
            hs, cs = [], []
            for layer in range(self.num_layers):
                outs = []
                for d, suffix in enumerate(("", "_reverse")[:directions]):
                    index = layer * directions + d
                    cell_params = self._core_params(
                        self._cell.graph.path, self._cell_names(layer, suffix)
                    )
                    state = self._kind.to_state(h0[index], None if c0 is None else c0[index])
                    seq = x if d == 0 else jnp.flip(x, axis=1)
                    (ys, state), _ = self._cell.apply(cell_params, seq, state, None, False)
                    outs.append(ys if d == 0 else jnp.flip(ys, axis=1))
                    h, c = self._kind.from_state(state)
                    hs.append(h)
                    cs.append(c)
                x = outs[0] if directions == 1 else jnp.concatenate(outs, axis=-1)
                if layer < self.num_layers - 1:
                    x, params = self._drop(params, x, is_training=self.training)
            h_n = jnp.stack(hs)
            c_n = jnp.stack(cs) if is_lstm else None
            return (x, h_n, c_n), params

        out, h_n, c_n = self.call_core(run, x)
        if not batched:
            out, h_n = out[0], h_n[:, 0]
            c_n = None if c_n is None else c_n[:, 0]
        elif not self.batch_first:
            out = jnp.swapaxes(out, 0, 1)
        return (out, (h_n, c_n)) if is_lstm else (out, h_n)

    def _initial(
        self, where: str, hx: Any, want: tuple[int, ...], batched: bool, is_lstm: bool, dtype: Any
    ) -> tuple[jax.Array, jax.Array | None]:
        shown = want if batched else (want[0], want[2])
        if hx is None:
            zeros = jnp.zeros(want, dtype)
            return zeros, (zeros if is_lstm else None)
        if is_lstm:
            if not isinstance(hx, tuple | list) or len(hx) != 2:
                raise TypeError(
                    f"{where}: expected hx to be a pair (h_0, c_0), got "
                    f"{type(hx).__name__}. Fix: pass hx=(h_0, c_0) or None."
                )
            parts = [jnp.asarray(v) for v in hx]
        else:
            parts = [jnp.asarray(hx)]
        for value in parts:
            if tuple(value.shape) != tuple(shown):
                raise ValueError(
                    f"{where}: expected each initial state of shape {tuple(shown)}, got "
                    f"{tuple(value.shape)}. Fix: pass (num_layers * directions, batch, "
                    "hidden_size) arrays, as PyTorch."
                )
        if not batched:
            parts = [v[:, None] for v in parts]
        return parts[0], (parts[1] if is_lstm else None)

    def extra_repr(self) -> str:
        shown = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            shown += f", num_layers={self.num_layers}"
        for name, default in (("bias", True), ("batch_first", False), ("dropout", 0.0)):
            if getattr(self, name) != default:
                shown += f", {name}={getattr(self, name)!r}"
        if self.bidirectional:
            shown += ", bidirectional=True"
        return shown


class LSTM(_RNNBase):
    """PyTorch's `torch.nn.LSTM`: a stack of long short-term memory layers.

    Per step, with PyTorch's gate order `(i, f, g, o)`:
    `i, f, g, o = W_ih x + b_ih + W_hh h + b_hh`;
    `c' = sigmoid(f) * c + sigmoid(i) * tanh(g)`; `h' = sigmoid(o) * tanh(c')`.
    Parameters as PyTorch's: `weight_ih_l{k}` `(4 * hidden, in)`,
    `weight_hh_l{k}` `(4 * hidden, hidden)`, `bias_ih_l{k}`, `bias_hh_l{k}`
    `(4 * hidden,)`, and `*_reverse` when bidirectional, each initialised
    `U(-1/sqrt(hidden), 1/sqrt(hidden))`.

    Args:
        input_size: Features per step.
        hidden_size: Size of `h` and `c`.
        num_layers: Stacked layers.
        bias: Whether the layers have biases.
        batch_first: Inputs and outputs are `(batch, time, features)`.
        dropout: Dropout on every layer's output but the last, in training.
        bidirectional: Also run each layer over the reversed sequence and
            concatenate both outputs.
        proj_size: Only 0 (projections are not supported yet).
        dtype: Parameter dtype (default float32).
        seed: Int or key for the init; default: the global stream.

    Returns (from a call):
        `(output, (h_n, c_n))`: `output` `(time, batch, directions * hidden)`,
        `h_n`, `c_n` `(num_layers * directions, batch, hidden)`.

    Raises:
        ValueError: For non-positive sizes, dropout outside `[0, 1)`, a
            non-zero `proj_size`, or inputs and states of the wrong shape.
        TypeError: If `hx` is not an `(h_0, c_0)` pair.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager import torch_nn as nn
        >>> lstm = nn.LSTM(3, 4, num_layers=2)
        >>> out, (h, c) = lstm(jnp.ones((5, 2, 3)))
        >>> out.shape, h.shape, lstm.weight_ih_l1.shape
        ((5, 2, 4), (2, 2, 4), (16, 4))
    """

    def __init__(self, input_size: int, hidden_size: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(input_size, hidden_size, *args, **kwargs)
