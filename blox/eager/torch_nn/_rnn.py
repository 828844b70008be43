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

from .._seed import _next_key, build_core, init_params
from ._attention import uniform_arrays
from ._shell import Shell, check_device

__all__ = ["GRU", "LSTM", "RNN", "GRUCell", "LSTMCell", "RNNCell"]


class _Kind(NamedTuple):
    """How one PyTorch cell type maps onto a core cell."""

    gates: int  # blocks of `hidden` rows in weight_ih / weight_hh
    cell: Callable[[str], Any]  # nonlinearity -> (core cell class, its options)
    params: Callable[..., dict[tuple[str, ...], Any]]  # torch arrays -> core cell params
    to_state: Callable[[Any, Any], Any]  # (h, c) -> core carry
    from_state: Callable[[Any], tuple[Any, Any]]  # core carry -> (h, c)


def _split(w: Any, n: int) -> list[Any]:
    """`w`'s `n` gate blocks (equal slices of axis 0)."""
    return jnp.split(w, n, axis=0)


def _bias_sum(b_ih: Any, b_hh: Any, like: Any) -> Any:
    # bias=False in PyTorch; the core cells always add a bias, so add zeros.
    if b_ih is None:
        return jnp.zeros((like.shape[0],), like.dtype)
    return b_ih + b_hh


def _rnn_params(w_ih: Any, w_hh: Any, b_ih: Any, b_hh: Any) -> dict[tuple[str, ...], Any]:
    # SimpleCell: h' = act(x @ i.kernel + i.bias + h @ h.kernel).
    return {
        ("i", "kernel"): w_ih.T,
        ("i", "bias"): _bias_sum(b_ih, b_hh, w_ih),
        ("h", "kernel"): w_hh.T,
    }


def _lstm_params(w_ih: Any, w_hh: Any, b_ih: Any, b_hh: Any) -> dict[tuple[str, ...], Any]:
    # flax's LSTM cells: input kernels ii..io without bias, hidden kernels
    # hi..ho with one bias each, gates in PyTorch's order (i, f, g, o).
    bias = _split(_bias_sum(b_ih, b_hh, w_ih), 4)
    entries = {}
    for gate, wi, wh, b in zip("ifgo", _split(w_ih, 4), _split(w_hh, 4), bias):
        entries[(f"i{gate}", "kernel")] = wi.T
        entries[(f"h{gate}", "kernel")] = wh.T
        entries[(f"h{gate}", "bias")] = b
    return entries


def _gru_params(w_ih: Any, w_hh: Any, b_ih: Any, b_hh: Any) -> dict[tuple[str, ...], Any]:
    # PyTorch: r = s(W_ir x + b_ir + W_hr h + b_hr), z likewise,
    # n = tanh(W_in x + b_in + r * (W_hn h + b_hn)). The core GRUCell has the
    # same equations with one bias for r and z (ir, iz) and b_hn in hn.
    zeros = jnp.zeros((w_ih.shape[0],), w_ih.dtype)
    b_i = _split(zeros if b_ih is None else b_ih, 3)
    b_h = _split(zeros if b_hh is None else b_hh, 3)
    entries = {}
    for k, (gate, wi, wh) in enumerate(zip("rzn", _split(w_ih, 3), _split(w_hh, 3))):
        entries[(f"i{gate}", "kernel")] = wi.T
        entries[(f"h{gate}", "kernel")] = wh.T
        entries[(f"i{gate}", "bias")] = b_i[k] + b_h[k] if gate != "n" else b_i[k]
    entries[("hn", "bias")] = b_h[2]
    return entries


def _simple(nonlinearity: str) -> tuple[type, dict[str, Any]]:
    activation = jnp.tanh if nonlinearity == "tanh" else jax.nn.relu
    return core.SimpleCell, {"activation_fn": activation}


_KINDS: dict[str, _Kind] = {
    "RNN": _Kind(1, _simple, _rnn_params, lambda h, c: h, lambda s: (s, None)),
    "LSTM": _Kind(
        4,
        lambda _: (core.OptimizedLSTMCell, {}),
        _lstm_params,
        lambda h, c: (c, h),  # flax's LSTM carry is (c, h)
        lambda s: (s[1], s[0]),
    ),
    "GRU": _Kind(3, lambda _: (core.GRUCell, {}), _gru_params, lambda h, c: h, lambda s: (s, None)),
}


def _uniform_init(
    where: str, seed: Any, shapes: dict[str, tuple[int, ...]], bound: float, dtype: Any
) -> dict[str, jax.Array]:
    """PyTorch's recurrent init: every array `U(-bound, bound)`, one key each."""
    specs = tuple((name, shape, bound) for name, shape in shapes.items())
    return uniform_arrays(_next_key(seed, where), specs, dtype)


def _check_size(where: str, name: str, value: Any) -> int:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
        raise ValueError(
            f"{where}: expected {name} to be a positive int, got {value!r}. "
            f"Fix: pass e.g. {name}=16."
        )
    return int(value)


def _check_dropout(where: str, dropout: Any) -> float:
    if not isinstance(dropout, int | float) or isinstance(dropout, bool) or not 0 <= dropout < 1:
        raise ValueError(
            f"{where}: expected dropout in [0, 1), got {dropout!r}. Fix: pass the "
            "probability of zeroing an element between layers, e.g. dropout=0.2."
        )
    return float(dropout)


def _check_nonlinearity(where: str, nonlinearity: Any) -> str:
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(
            f"{where}: expected nonlinearity 'tanh' or 'relu', got {nonlinearity!r}. "
            "Fix: pass one of those (PyTorch's RNN has no others)."
        )
    return nonlinearity


class _Torch(Shell):
    """A recurrent shell: maps PyTorch's arrays onto core cell params."""

    def _cell_params(self, prefix: tuple[str, ...], suffix: str) -> dict[tuple[str, ...], Any]:
        """PyTorch's arrays `weight_ih{suffix}`... as core cell params under `prefix`."""
        d = self.__dict__
        arrays = [d.get(f"{name}{suffix}") for name in ("weight_ih", "weight_hh")]
        arrays += [d.get(f"{name}{suffix}") for name in ("bias_ih", "bias_hh")]
        return {prefix + path: value for path, value in self._kind.params(*arrays).items()}


class _RNNBase(_Torch):
    """`RNN`, `LSTM` and `GRU`: PyTorch's arrays over one core `StackedRNN`."""

    def __init__(
        self,
        mode: str,
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
        device: Any = None,
        dtype: Any = None,
        seed: Any = None,
    ) -> None:
        super().__init__()
        where = f"nn.{mode}({input_size}, {hidden_size})"
        check_device(where, device)
        _check_size(where, "input_size", input_size)
        _check_size(where, "hidden_size", hidden_size)
        _check_size(where, "num_layers", num_layers)
        dropout = _check_dropout(where, dropout)
        _check_nonlinearity(where, nonlinearity)
        if proj_size:
            raise ValueError(
                f"{where}: expected proj_size=0, got {proj_size!r}: LSTM projections are "
                "not supported yet. Fix: add an nn.Linear after the LSTM instead."
            )
        self.mode = mode
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.num_layers = int(num_layers)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = dropout
        self.bidirectional = bool(bidirectional)
        self.proj_size = 0
        if mode == "RNN":
            self.nonlinearity = nonlinearity
        kind = _KINDS[mode]
        self.__dict__["_kind"] = kind
        cell, cell_options = kind.cell(nonlinearity)
        options = {
            "num_layers": self.num_layers,
            "bidirectional": self.bidirectional,
            "dropout": dropout,
            "cell_options": cell_options,
        }
        stack, rng = build_core(where, core.StackedRNN, (cell, self.hidden_size), options)
        dtype = jnp.float32 if dtype is None else dtype
        directions = 2 if self.bidirectional else 1
        gates = kind.gates * self.hidden_size
        shapes: dict[str, tuple[int, ...]] = {}
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
        # Dropout between layers draws from the stack's Rng: its seed and counter
        # are this object's only buffers (and only when dropout > 0).
        params = init_params(where, rng, seed, lambda p: p)
        self.adopt_core(stack, params, keep=lambda path: dropout > 0)

    def _stack_params(self) -> core.Params:
        base = self.core_layer.graph.path
        entries: dict[tuple[str, ...], Any] = {}
        for layer in range(self.num_layers):
            for suffix in ("", "_reverse")[: 2 if self.bidirectional else 1]:
                node = f"l{layer}{suffix}"
                entries.update(self._cell_params(base + (node,), f"_{node}"))
        return core.Params.from_dict(entries, locked=True)

    def forward(self, input: Any, hx: Any = None) -> tuple[jax.Array, Any]:
        """Runs the stack over a sequence.

        Args:
            input: `(time, batch, input_size)`, `(batch, time, input_size)` with
                `batch_first`, or unbatched `(time, input_size)`.
            hx: Initial state, `(num_layers * directions, batch, hidden_size)`
                (`(num_layers * directions, hidden_size)` unbatched; an
                `(h_0, c_0)` pair for `LSTM`); `None` means zeros.

        Returns:
            `(output, h_n)` (`(output, (h_n, c_n))` for `LSTM`), `output` of
            shape `(time, batch, directions * hidden_size)` (batch first with
            `batch_first`, `(time, directions * hidden_size)` unbatched).
        """
        where = f"nn.{self.mode}({self.input_size}, {self.hidden_size})"
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
            x = x[:, None]  # (time, 1, features)
        elif self.batch_first:
            x = jnp.swapaxes(x, 0, 1)
        # x is time-major from here, as the core stack takes it with time_major.
        directions = 2 if self.bidirectional else 1
        want = (self.num_layers * directions, x.shape[1], self.hidden_size)
        is_lstm = self.mode == "LSTM"
        h0, c0 = self._initial(where, hx, want, batched, is_lstm, x.dtype)
        state = self._kind.to_state(h0, c0)
        weights = self._stack_params()
        stack = self.core_layer
        training = self.training

        def run(params: core.Params, x: Any, state: Any) -> tuple[Any, core.Params]:
            return stack.apply(params.merge(weights), x, state, None, training, time_major=True)

        out, state = self.call_core(run, x, state)
        h_n, c_n = self._kind.from_state(state)
        if not batched:
            out, h_n = out[:, 0], h_n[:, 0]
            c_n = None if c_n is None else c_n[:, 0]
        elif self.batch_first:
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
        if self.mode == "RNN" and self.nonlinearity != "tanh":
            shown += f", nonlinearity={self.nonlinearity!r}"
        for name, default in (("bias", True), ("batch_first", False), ("dropout", 0.0)):
            if getattr(self, name) != default:
                shown += f", {name}={getattr(self, name)!r}"
        if self.bidirectional:
            shown += ", bidirectional=True"
        return shown


class RNN(_RNNBase):
    """PyTorch's `torch.nn.RNN`: a stack of Elman layers.

    Per step: `h' = nonlinearity(W_ih x + b_ih + W_hh h + b_hh)`. Parameters
    as PyTorch's: `weight_ih_l{k}` `(hidden, in)`, `weight_hh_l{k}` `(hidden,
    hidden)`, `bias_ih_l{k}`, `bias_hh_l{k}`, and `*_reverse` when
    bidirectional, each `U(-1/sqrt(hidden), 1/sqrt(hidden))`. The step is
    `blox.core.SimpleCell`'s (its one bias is `b_ih + b_hh`).

    Args:
        input_size: Features per step.
        hidden_size: Size of `h`.
        num_layers: Stacked layers.
        nonlinearity: `'tanh'` or `'relu'`.
        bias: Whether the layers have biases.
        batch_first: Inputs and outputs are `(batch, time, features)`.
        dropout: Dropout on every layer's output but the last, in training.
        bidirectional: Also run each layer over the reversed sequence.
        device: Only `None` (JAX places arrays).
        dtype: Parameter dtype (default float32).
        seed: Int or key for the init; default: the global stream.

    Returns (from a call):
        `(output, h_n)`: `output` `(time, batch, directions * hidden)`, `h_n`
        `(num_layers * directions, batch, hidden)`.

    Raises:
        ValueError: For non-positive sizes, dropout outside `[0, 1)`, an
            unknown nonlinearity, or inputs and states of the wrong shape.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager import torch_nn as nn
        >>> rnn = nn.RNN(3, 4, nonlinearity='relu', bidirectional=True)
        >>> out, h = rnn(jnp.ones((5, 2, 3)))
        >>> out.shape, h.shape, rnn.weight_ih_l0_reverse.shape
        ((5, 2, 8), (2, 2, 4), (4, 3))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: Any = None,
        dtype: Any = None,
        *,
        seed: Any = None,
    ) -> None:
        super().__init__(
            "RNN",
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            nonlinearity=nonlinearity,
            device=device,
            dtype=dtype,
            seed=seed,
        )


class LSTM(_RNNBase):
    """PyTorch's `torch.nn.LSTM`: a stack of long short-term memory layers.

    Per step, gates in PyTorch's order `(i, f, g, o)`:
    `i, f, g, o = W_ih x + b_ih + W_hh h + b_hh`;
    `c' = sigmoid(f) * c + sigmoid(i) * tanh(g)`; `h' = sigmoid(o) * tanh(c')`.
    Parameters as PyTorch's: `weight_ih_l{k}` `(4 * hidden, in)`,
    `weight_hh_l{k}` `(4 * hidden, hidden)`, `bias_ih_l{k}`, `bias_hh_l{k}`
    `(4 * hidden,)`, and `*_reverse` when bidirectional, each
    `U(-1/sqrt(hidden), 1/sqrt(hidden))`. The step is
    `blox.core.OptimizedLSTMCell`'s (its hidden biases are `b_ih + b_hh`).

    Args:
        input_size: Features per step.
        hidden_size: Size of `h` and `c`.
        num_layers: Stacked layers.
        bias: Whether the layers have biases.
        batch_first: Inputs and outputs are `(batch, time, features)`.
        dropout: Dropout on every layer's output but the last, in training.
        bidirectional: Also run each layer over the reversed sequence.
        proj_size: Only 0 (projections are not supported yet).
        device: Only `None` (JAX places arrays).
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

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: Any = None,
        dtype: Any = None,
        *,
        seed: Any = None,
    ) -> None:
        super().__init__(
            "LSTM",
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            proj_size=proj_size,
            device=device,
            dtype=dtype,
            seed=seed,
        )


class GRU(_RNNBase):
    """PyTorch's `torch.nn.GRU`: a stack of gated recurrent units, PyTorch's equations.

    Per step: `r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)`, `z` likewise,
    `n = tanh(W_in x + b_in + r * (W_hn h + b_hn))`, `h' = (1 - z) * n + z * h`
    (the reset gate multiplies the recurrent projection, bias included).
    Parameters as PyTorch's: `weight_ih_l{k}` `(3 * hidden, in)` (blocks
    `r, z, n`), `weight_hh_l{k}`, `bias_ih_l{k}`, `bias_hh_l{k}`, and
    `*_reverse`. The step is `blox.core.GRUCell`'s.

    Args:
        input_size: Features per step.
        hidden_size: Size of `h`.
        num_layers: Stacked layers.
        bias: Whether the layers have biases.
        batch_first: Inputs and outputs are `(batch, time, features)`.
        dropout: Dropout on every layer's output but the last, in training.
        bidirectional: Also run each layer over the reversed sequence.
        device: Only `None` (JAX places arrays).
        dtype: Parameter dtype (default float32).
        seed: Int or key for the init; default: the global stream.

    Returns (from a call):
        `(output, h_n)` as `RNN`'s.

    Raises:
        ValueError: For non-positive sizes, dropout outside `[0, 1)`, or
            inputs and states of the wrong shape.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager import torch_nn as nn
        >>> gru = nn.GRU(3, 4, batch_first=True)
        >>> out, h = gru(jnp.ones((2, 5, 3)))
        >>> out.shape, h.shape, gru.weight_hh_l0.shape
        ((2, 5, 4), (1, 2, 4), (12, 4))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: Any = None,
        dtype: Any = None,
        *,
        seed: Any = None,
    ) -> None:
        super().__init__(
            "GRU",
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            device=device,
            dtype=dtype,
            seed=seed,
        )


class _CellBase(_Torch):
    """`RNNCell`, `LSTMCell`, `GRUCell`: one step of a core cell on PyTorch's arrays."""

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        bias: bool,
        nonlinearity: str,
        device: Any,
        dtype: Any,
        seed: Any,
    ) -> None:
        super().__init__()
        name = f"{mode}Cell"
        where = f"nn.{name}({input_size}, {hidden_size})"
        check_device(where, device)
        _check_size(where, "input_size", input_size)
        _check_size(where, "hidden_size", hidden_size)
        _check_nonlinearity(where, nonlinearity)
        self.mode = mode
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.bias = bool(bias)
        if mode == "RNN":
            self.nonlinearity = nonlinearity
        kind = _KINDS[mode]
        self.__dict__["_kind"] = kind
        cell_cls, options = kind.cell(nonlinearity)
        cell, _ = build_core(where, cell_cls, (self.hidden_size,), options)
        gates = kind.gates * self.hidden_size
        shapes = {"weight_ih": (gates, self.input_size), "weight_hh": (gates, self.hidden_size)}
        if self.bias:
            shapes.update(bias_ih=(gates,), bias_hh=(gates,))
        dtype = jnp.float32 if dtype is None else dtype
        bound = 1.0 / math.sqrt(self.hidden_size)
        for key, value in _uniform_init(where, seed, shapes, bound, dtype).items():
            setattr(self, key, value)
        self.adopt_core(cell, core.Params(), keep=lambda path: False)

    def forward(self, input: Any, hx: Any = None) -> Any:
        """One step.

        Args:
            input: `(batch, input_size)` or unbatched `(input_size,)`.
            hx: `(batch, hidden_size)` (an `(h, c)` pair for `LSTMCell`);
                `None` means zeros.

        Returns:
            `h'` (`(h', c')` for `LSTMCell`), `(batch, hidden_size)`.
        """
        where = f"nn.{self.mode}Cell({self.input_size}, {self.hidden_size})"
        x = jnp.asarray(input)
        if x.ndim not in (1, 2) or x.shape[-1] != self.input_size:
            raise ValueError(
                f"{where}: expected input of shape (batch, {self.input_size}) or "
                f"({self.input_size},), got {tuple(x.shape)}. Fix: pass one step of the "
                "sequence, features last."
            )
        batched = x.ndim == 2
        if not batched:
            x = x[None]
        is_lstm = self.mode == "LSTM"
        want = (x.shape[0], self.hidden_size)
        if hx is None:
            zeros = jnp.zeros(want, x.dtype)
            h, c = zeros, (zeros if is_lstm else None)
        else:
            if is_lstm and (not isinstance(hx, tuple | list) or len(hx) != 2):
                raise TypeError(
                    f"{where}: expected hx to be a pair (h, c), got {type(hx).__name__}. "
                    "Fix: pass hx=(h, c) or None."
                )
            parts = [jnp.asarray(v) for v in (hx if is_lstm else (hx,))]
            for value in parts:
                if tuple(value.shape) != (want if batched else want[1:]):
                    raise ValueError(
                        f"{where}: expected each state of shape "
                        f"{want if batched else want[1:]}, got {tuple(value.shape)}. Fix: "
                        "pass (batch, hidden_size) arrays, as PyTorch."
                    )
            if not batched:
                parts = [v[None] for v in parts]
            h, c = parts[0], (parts[1] if is_lstm else None)
        cell = self.core_layer
        weights = core.Params.from_dict(self._cell_params(cell.graph.path, ""), locked=True)

        def run(params: core.Params, x: Any, carry: Any) -> tuple[Any, core.Params]:
            (_, carry), params = cell(params.merge(weights), x, carry)
            return carry, params

        h, c = self._kind.from_state(self.call_core(run, x, self._kind.to_state(h, c)))
        if not batched:
            h, c = h[0], (None if c is None else c[0])
        return (h, c) if is_lstm else h

    def extra_repr(self) -> str:
        shown = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            shown += ", bias=False"
        if self.mode == "RNN" and self.nonlinearity != "tanh":
            shown += f", nonlinearity={self.nonlinearity!r}"
        return shown


class RNNCell(_CellBase):
    """PyTorch's `torch.nn.RNNCell`: `h' = nonlinearity(W_ih x + b_ih + W_hh h + b_hh)`.

    Parameters `weight_ih` `(hidden, in)`, `weight_hh` `(hidden, hidden)`,
    `bias_ih`, `bias_hh`, each `U(-1/sqrt(hidden), 1/sqrt(hidden))`; the step
    is `blox.core.SimpleCell`'s.

    Args:
        input_size: Features per step.
        hidden_size: Size of `h`.
        bias: Whether to add biases.
        nonlinearity: `'tanh'` or `'relu'`.
        device: Only `None` (JAX places arrays).
        dtype: Parameter dtype (default float32).
        seed: Int or key for the init; default: the global stream.

    Raises:
        ValueError: For non-positive sizes, an unknown nonlinearity, or
            inputs and states of the wrong shape.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager import torch_nn as nn
        >>> cell = nn.RNNCell(3, 4)
        >>> cell(jnp.ones((2, 3))).shape, cell.weight_ih.shape
        ((2, 4), (4, 3))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        device: Any = None,
        dtype: Any = None,
        *,
        seed: Any = None,
    ) -> None:
        super().__init__("RNN", input_size, hidden_size, bias, nonlinearity, device, dtype, seed)


class LSTMCell(_CellBase):
    """PyTorch's `torch.nn.LSTMCell`: one LSTM step, `(h', c') = cell(x, (h, c))`.

    Gates `(i, f, g, o)` as `LSTM`'s; parameters `weight_ih` `(4 * hidden,
    in)`, `weight_hh`, `bias_ih`, `bias_hh`. The step is
    `blox.core.OptimizedLSTMCell`'s.

    Args:
        input_size: Features per step.
        hidden_size: Size of `h` and `c`.
        bias: Whether to add biases.
        device: Only `None` (JAX places arrays).
        dtype: Parameter dtype (default float32).
        seed: Int or key for the init; default: the global stream.

    Raises:
        ValueError: For non-positive sizes or inputs and states of the wrong
            shape.
        TypeError: If `hx` is not an `(h, c)` pair.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager import torch_nn as nn
        >>> cell = nn.LSTMCell(3, 4)
        >>> h, c = cell(jnp.ones((2, 3)))
        >>> h, c = cell(jnp.ones((2, 3)), (h, c))
        >>> h.shape, c.shape
        ((2, 4), (2, 4))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
        *,
        seed: Any = None,
    ) -> None:
        super().__init__("LSTM", input_size, hidden_size, bias, "tanh", device, dtype, seed)


class GRUCell(_CellBase):
    """PyTorch's `torch.nn.GRUCell`: one GRU step with PyTorch's equations (see `GRU`).

    Parameters `weight_ih` `(3 * hidden, in)` (blocks `r, z, n`),
    `weight_hh`, `bias_ih`, `bias_hh`. The step is `blox.core.GRUCell`'s.

    Args:
        input_size: Features per step.
        hidden_size: Size of `h`.
        bias: Whether to add biases.
        device: Only `None` (JAX places arrays).
        dtype: Parameter dtype (default float32).
        seed: Int or key for the init; default: the global stream.

    Raises:
        ValueError: For non-positive sizes or inputs and states of the wrong
            shape.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager import torch_nn as nn
        >>> cell = nn.GRUCell(3, 4)
        >>> cell(jnp.ones(3)).shape
        (4,)
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
        *,
        seed: Any = None,
    ) -> None:
        super().__init__("GRU", input_size, hidden_size, bias, "tanh", device, dtype, seed)
