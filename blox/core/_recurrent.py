"""Recurrent cells and the wrappers that run them over sequences.

Cells compute one step. Those derived from `RNNCellBase` split the step into
a time-independent input projection (`project`), recurrent weights read once
(`recurrent_weights`) and the per-step update (`recur`), so `scan_cell` runs
the projection of every step as one matmul before the loop. The flax.linen
cells keep flax's parameter names and nesting, so flax params copy by path;
the ancestor's `LSTM` and `GRU` keep their fused kernels and equations.
`RNN` and `Bidirectional` follow flax.linen's wrappers; `StackedRNN` is the
multi-layer, optionally bidirectional layer behind the eager `nn.LSTM`.
"""

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ._conv import Conv
from ._dropout import Dropout
from ._dtypes import promote_dtype
from ._graph import Graph
from ._linear import Linear
from ._module import Initializer, Module, _lead, _where
from ._params import Params
from ._recurrent_kernels import gru_sequence, lstm_sequence
from ._scan import RecurrenceBase, SequenceBase, _check_unroll, scan_cell

_LECUN = jax.nn.initializers.lecun_normal()
_ORTHOGONAL = jax.nn.initializers.orthogonal()
_ZEROS = jax.nn.initializers.zeros
_ONES = jax.nn.initializers.ones


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


def _dense(x: jax.Array, kernel: jax.Array, bias: jax.Array | None, dtype: Any) -> jax.Array:
    """`x @ kernel + bias` after casting all three to the compute dtype."""
    x, kernel, bias = promote_dtype(x, kernel, bias, dtype=dtype)
    y = _matmul(x, kernel)
    return y if bias is None else y + _lead(bias, y.ndim)


def _matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """`x @ kernel` over the last axis, as one 2-D matmul for any leading axes.

    XLA:CPU runs a rank-3 `dot_general` (all time steps of a projection) far
    slower than the same product on a `(rows, features)` matrix.
    """
    if x.ndim <= 2:
        return jnp.dot(x, kernel)
    flat = jnp.dot(x.reshape(-1, x.shape[-1]), kernel)
    return flat.reshape(x.shape[:-1] + kernel.shape[-1:])


def _key(key: Any) -> jax.Array:
    return jax.random.key(0) if key is None else key


class _DenseParams(Module):
    """The `kernel` (and `bias`) of one flax `Dense`, created but not applied."""

    def __init__(
        self,
        graph: Graph,
        features: int,
        rng: Any,
        use_bias: bool,
        kernel_init: Initializer,
        bias_init: Initializer,
        param_dtype: Any,
        kernel_metadata: dict[str, Any] | None,
        bias_metadata: dict[str, Any] | None,
    ) -> None:
        super().__init__(graph)
        self.features = features
        self.rng = rng
        self.use_bias = use_bias
        self.kernel_init = kernel_init
        self.bias_init = bias_init
        self.param_dtype = param_dtype
        self.kernel_metadata = kernel_metadata
        self.bias_metadata = bias_metadata

    def __call__(
        self, params: Params, in_features: int
    ) -> tuple[tuple[jax.Array, jax.Array | None], Params]:
        kernel, params = self.get_param(
            params,
            "kernel",
            (in_features, self.features),
            self.kernel_init,
            dtype=self.param_dtype,
            metadata=self.kernel_metadata,
            rng=self.rng,
        )
        bias = None
        if self.use_bias:
            bias, params = self.get_param(
                params,
                "bias",
                (self.features,),
                self.bias_init,
                dtype=self.param_dtype,
                metadata=self.bias_metadata,
                rng=self.rng,
            )
        return (kernel, bias), params


class RNNCellBase(RecurrenceBase):
    """A recurrent cell in three parts, so its input projection leaves the loop.

    Subclasses implement:

    - `initialize_carry(key, input_shape)`: the carry before the first step,
      for one step's input shape `(*batch, *features)` (flax's semantics;
      `key` may be `None` for deterministic `carry_init`s).
    - `project(params, inputs) -> (projected, params)`: the part of a step
      that reads only the input, for inputs with any leading axes (all time
      steps at once); it creates the input-side parameters.
    - `recurrent_weights(params) -> (weights, params)`: the arrays `recur`
      reads (fused once, outside the loop); creates the recurrent parameters.
    - `recur(weights, projected_t, carry) -> (output, carry)`: one step from
      the projected input; pure, no params.

    `__call__` (one step) is `project`, `recurrent_weights`, then `recur`;
    `apply` and the `RNN` wrapper run `project` over the whole sequence in
    one call (see `scan_cell`). A custom cell with another parameter layout
    (e.g. PyTorch's `weight_ih_l0`) only overrides these methods.

    Args:
        graph: This module's node.
        is_static: Unroll `apply` in Python instead of `jax.lax.scan`.
        unroll: Steps per `jax.lax.scan` iteration in `apply`.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> cell = bx.SimpleCell(g / 'cell', 4, rng=rng)
        >>> params = rng.seed(bx.Params(), seed=0)
        >>> carry = cell.initialize_carry(None, (2, 3))
        >>> (y, carry), params = cell(params, jnp.ones((2, 3)), carry)
        >>> isinstance(cell, bx.RNNCellBase), y.shape
        (True, (2, 4))
    """

    num_feature_axes: int = 1
    hoist_inputs: bool = True  # False: `scan_cell` scans the one-step `__call__`

    def initialize_carry(self, key: Any, input_shape: tuple[int, ...]) -> Any:
        """The carry before the first step, for a step input of `input_shape`."""
        raise NotImplementedError(
            f"{_where(self)}: expected initialize_carry to be implemented by the "
            "subclass, got none. Fix: define initialize_carry(self, key, input_shape)."
        )

    def initial_state(self, params: Params, inputs: Any) -> tuple[Any, Params]:
        """`initialize_carry` for one step's inputs `(*batch, *features)`.

        Example:
            >>> import jax.numpy as jnp
            >>> import blox as bx
            >>> cell = bx.GRUCell(bx.Graph('n') / 'cell', 3)
            >>> carry, _ = cell.initial_state(bx.Params(), jnp.ones((2, 5)))
            >>> carry.shape
            (2, 3)
        """
        return self.initialize_carry(None, jnp.shape(jax.tree.leaves(inputs)[0])), params

    def project(self, params: Params, inputs: jax.Array) -> tuple[Any, Params]:
        """The input-only part of a step, for inputs with any leading axes."""
        raise NotImplementedError(
            f"{_where(self)}: expected project to be implemented by the subclass, "
            "got none. Fix: define project(self, params, inputs)."
        )

    def recurrent_weights(self, params: Params) -> tuple[Any, Params]:
        """The arrays `recur` reads, fetched (and fused) once per sequence."""
        raise NotImplementedError(
            f"{_where(self)}: expected recurrent_weights to be implemented by the "
            "subclass, got none. Fix: define recurrent_weights(self, params)."
        )

    def recur(self, weights: Any, projected: Any, carry: Any) -> tuple[Any, Any]:
        """One step from a projected input: `(output, carry)`.

        By default `update(projected, recurrent_projection(weights, carry),
        carry)`; cells whose step is not of that form override `recur`.
        """
        return self.update(projected, self.recurrent_projection(weights, carry), carry)

    def recurrent_projection(self, weights: Any, carry: Any) -> Any:
        """The only part of a step that reads the weights (e.g. `h @ W_h + b`).

        It must act on any leading axes of the carry, so that the weight
        gradient of a whole sequence is one call over the stacked carries.
        """
        raise NotImplementedError(
            f"{_where(self)}: expected recurrent_projection (or recur) to be "
            "implemented by the subclass, got none. Fix: define "
            "recurrent_projection(self, weights, carry) and update(...)."
        )

    def update(self, projected: Any, recurrent: Any, carry: Any) -> tuple[Any, Any]:
        """The weight-free rest of a step: `(output, carry)`."""
        raise NotImplementedError(
            f"{_where(self)}: expected update (or recur) to be implemented by the "
            "subclass, got none. Fix: define update(self, projected, recurrent, carry)."
        )

    def __call__(
        self,
        params: Params,
        inputs: jax.Array,
        prev_state: Any,
        is_reset: jax.Array | None = None,
        is_training: bool = True,
    ) -> tuple[tuple[jax.Array, Any], Params]:
        """One step: `((output, carry), params)`; rows with `is_reset` start fresh."""
        _check_step(self, inputs, prev_state)
        carry = self.maybe_reset_state(params, prev_state, inputs, is_reset)
        projected, params = self.project(params, inputs)
        weights, params = self.recurrent_weights(params)
        return self.recur(weights, projected, carry), params


class _FlaxCell(RNNCellBase):
    """Shared configuration of the flax.linen cells (sizes, inits, dtypes)."""

    def _setup(
        self,
        features: int,
        rng: Any,
        kernel_init: Initializer,
        recurrent_kernel_init: Initializer,
        dtype: Any,
        param_dtype: Any,
        carry_init: Initializer,
        kernel_metadata: dict[str, Any] | None,
        recurrent_kernel_metadata: dict[str, Any] | None,
        bias_metadata: dict[str, Any] | None,
    ) -> None:
        if isinstance(features, bool) or not isinstance(features, int) or features < 1:
            raise ValueError(
                f"{_where(self)}: expected features to be a positive int, got "
                f"{features!r}. Fix: pass the hidden size, e.g. 128."
            )
        self.features = features
        self.rng = rng
        self.kernel_init = kernel_init
        self.recurrent_kernel_init = recurrent_kernel_init
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.carry_init = carry_init
        self.kernel_metadata = kernel_metadata
        self.recurrent_kernel_metadata = recurrent_kernel_metadata
        self.bias_metadata = bias_metadata

    def _dense(
        self, name: str, recurrent: bool, use_bias: bool, bias_init: Initializer
    ) -> _DenseParams:
        return _DenseParams(
            self.graph.child(name),
            self.features,
            self.rng,
            use_bias,
            self.recurrent_kernel_init if recurrent else self.kernel_init,
            bias_init,
            self.param_dtype,
            self.recurrent_kernel_metadata if recurrent else self.kernel_metadata,
            self.bias_metadata,
        )

    def _hidden(self, key: Any, input_shape: tuple[int, ...]) -> jax.Array:
        shape = tuple(input_shape[:-1]) + (self.features,)
        return self.carry_init(_key(key), shape, self.param_dtype)

    def _check_input(self, inputs: jax.Array) -> None:
        if jnp.ndim(inputs) < 1:
            raise ValueError(
                f"{_where(self)}: expected inputs of rank >= 1 (*batch, features), "
                "got a scalar. Fix: pass at least a vector, e.g. x[None]."
            )

    def _fused(
        self, params: Params, denses: Sequence[_DenseParams], in_features: int
    ) -> tuple[tuple[jax.Array, jax.Array | None], Params]:
        """The kernels (and biases) of `denses` concatenated along features."""
        kernels, biases = [], []
        for dense in denses:
            (kernel, bias), params = dense(params, in_features)
            kernels.append(kernel)
            biases.append(bias)
        kernel = jnp.concatenate(kernels, axis=-1)
        if any(b is None for b in biases):
            return (kernel, None), params
        return (kernel, jnp.concatenate(biases, axis=-1)), params


class SimpleCell(_FlaxCell):
    """Elman cell (flax.linen's `SimpleCell`; PAX's `VanillaRNN`).

    One step: `h' = activation_fn(x @ i.kernel + i.bias + h @ h.kernel)`, plus
    `h` inside the activation when `residual`. The carry and output are `h'`.

    Args:
        graph: This module's node; children `i` (kernel, bias) and `h`
            (kernel), as in flax.
        features: Hidden size.
        rng: `Rng` for initialisation.
        activation_fn: The nonlinearity (`jnp.tanh`; `jax.nn.relu` for a ReLU
            RNN).
        kernel_init: Initialiser of the input kernel `(in, features)`.
        recurrent_kernel_init: Initialiser of `h.kernel` `(features, features)`.
        bias_init: Initialiser of `i.bias`.
        dtype: Compute dtype (`None`: promoted from inputs and params).
        param_dtype: Storage dtype of the parameters and the carry.
        carry_init: Initialiser of the carry in `initialize_carry`.
        residual: Add `h` to the pre-activation.
        kernel_metadata: Metadata of the input kernels (e.g. sharding).
        recurrent_kernel_metadata: Metadata of the recurrent kernels.
        bias_metadata: Metadata of the biases.
        is_static: Unroll `apply` in Python.
        unroll: Steps per `jax.lax.scan` iteration in `apply`.

    Shapes:
        step: `(*batch, in)` -> `(*batch, features)`; carry `(*batch, features)`.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> cell = bx.SimpleCell(g / 'cell', 4, rng=rng)
        >>> params = rng.seed(bx.Params(), seed=0)
        >>> (ys, h), params = cell.apply(params, jnp.ones((2, 5, 3)))
        >>> ys.shape, params[('net', 'cell', 'h', 'kernel')].value.shape
        ((2, 5, 4), (4, 4))
    """

    def __init__(
        self,
        graph: Graph,
        features: int,
        rng: Any = None,
        activation_fn: Callable[[jax.Array], jax.Array] = jnp.tanh,
        kernel_init: Initializer = _LECUN,
        recurrent_kernel_init: Initializer = _ORTHOGONAL,
        bias_init: Initializer = _ZEROS,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        carry_init: Initializer = _ZEROS,
        residual: bool = False,
        kernel_metadata: dict[str, Any] | None = None,
        recurrent_kernel_metadata: dict[str, Any] | None = None,
        bias_metadata: dict[str, Any] | None = None,
        is_static: bool = False,
        unroll: int = 1,
    ) -> None:
        super().__init__(graph, is_static, unroll)
        self._setup(
            features,
            rng,
            kernel_init,
            recurrent_kernel_init,
            dtype,
            param_dtype,
            carry_init,
            kernel_metadata,
            recurrent_kernel_metadata,
            bias_metadata,
        )
        self.activation_fn = activation_fn
        self.residual = residual
        self.i = self._dense("i", False, True, bias_init)
        self.h = self._dense("h", True, False, _ZEROS)

    def initialize_carry(self, key: Any, input_shape: tuple[int, ...]) -> jax.Array:
        """`carry_init` of shape `(*batch, features)` for step inputs `(*batch, in)`.

        Example:
            >>> import blox as bx
            >>> bx.SimpleCell(bx.Graph('n') / 'c', 4).initialize_carry(None, (2, 3)).shape
            (2, 4)
        """
        return self._hidden(key, input_shape)

    def project(self, params: Params, inputs: jax.Array) -> tuple[jax.Array, Params]:
        """`x @ i.kernel + i.bias` for inputs `(..., in)`."""
        self._check_input(inputs)
        (kernel, bias), params = self.i(params, inputs.shape[-1])
        return _dense(inputs, kernel, bias, self.dtype), params

    def recurrent_weights(self, params: Params) -> tuple[jax.Array, Params]:
        """`h.kernel`."""
        (kernel, _), params = self.h(params, self.features)
        return kernel, params

    def recurrent_projection(self, weights: jax.Array, carry: jax.Array) -> jax.Array:
        """`h @ h.kernel`."""
        return _dense(carry, weights, None, self.dtype)

    def update(self, projected: jax.Array, recurrent: jax.Array, carry: jax.Array) -> Any:
        """`h' = activation_fn(projected + h @ h.kernel (+ h))`."""
        pre = projected + recurrent
        if self.residual:
            pre = pre + carry
        h = self.activation_fn(pre)
        return h, h


VanillaRNN = SimpleCell
"""PAX's name for `SimpleCell` (`h' = tanh(W_i x + b + W_h h)`)."""


class _LSTMBase(_FlaxCell):
    """The parameters of flax's `LSTMCell`: `ii, if, ig, io` and `hi, hf, hg, ho`."""

    def __init__(
        self,
        graph: Graph,
        features: int,
        rng: Any = None,
        gate_fn: Callable[[jax.Array], jax.Array] = jax.nn.sigmoid,
        activation_fn: Callable[[jax.Array], jax.Array] = jnp.tanh,
        kernel_init: Initializer = _LECUN,
        recurrent_kernel_init: Initializer = _ORTHOGONAL,
        bias_init: Initializer = _ZEROS,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        carry_init: Initializer = _ZEROS,
        forget_gate_bias: float = 0.0,
        kernel_metadata: dict[str, Any] | None = None,
        recurrent_kernel_metadata: dict[str, Any] | None = None,
        bias_metadata: dict[str, Any] | None = None,
        is_static: bool = False,
        unroll: int = 1,
    ) -> None:
        super().__init__(graph, is_static, unroll)
        self._setup(
            features,
            rng,
            kernel_init,
            recurrent_kernel_init,
            dtype,
            param_dtype,
            carry_init,
            kernel_metadata,
            recurrent_kernel_metadata,
            bias_metadata,
        )
        self.gate_fn = gate_fn
        self.activation_fn = activation_fn
        self.forget_gate_bias = float(forget_gate_bias)
        self.input_denses = [self._dense(f"i{g}", False, False, _ZEROS) for g in "ifgo"]
        self.hidden_denses = [self._dense(f"h{g}", True, True, bias_init) for g in "ifgo"]

    def initialize_carry(self, key: Any, input_shape: tuple[int, ...]) -> tuple[Any, Any]:
        """`(c, h)`, each `carry_init` of shape `(*batch, features)` (two keys).

        Example:
            >>> import blox as bx
            >>> c, h = bx.LSTMCell(bx.Graph('n') / 'c', 4).initialize_carry(None, (2, 3))
            >>> c.shape, h.shape
            ((2, 4), (2, 4))
        """
        key_c, key_h = jax.random.split(_key(key))
        return self._hidden(key_c, input_shape), self._hidden(key_h, input_shape)

    def _update(self, i: Any, f: Any, g: Any, o: Any, c: Any) -> tuple[Any, Any]:
        if self.forget_gate_bias:
            f = f + self.forget_gate_bias
        i, f, o = self.gate_fn(i), self.gate_fn(f), self.gate_fn(o)
        new_c = f * c + i * self.activation_fn(g)
        new_h = o * self.activation_fn(new_c)
        return new_h, (new_c, new_h)


class LSTMCell(_LSTMBase):
    """LSTM cell with flax.linen's equations and parameters.

    One step, `Wx` the input kernels (no bias) and `Wh` the recurrent ones
    (with bias): `i = gate_fn(Wii x + Whi h + bhi)`, likewise `f` (plus
    `forget_gate_bias`, PAX's option) and `o`; `g = activation_fn(Wig x + Whg h
    + bhg)`; `c' = f * c + i * g`; `h' = o * activation_fn(c')`. The carry is
    `(c', h')` (flax's order), the output `h'`. Each gate has its own matmul,
    as in flax; `OptimizedLSTMCell` fuses them.

    Args:
        graph: This module's node; children `ii, if, ig, io` (kernel
            `(in, features)`) and `hi, hf, hg, ho` (kernel `(features,
            features)`, bias).
        features: Hidden size.
        rng: `Rng` for initialisation.
        gate_fn: Gate nonlinearity.
        activation_fn: Candidate and output nonlinearity.
        kernel_init: Initialiser of the input kernels.
        recurrent_kernel_init: Initialiser of the recurrent kernels.
        bias_init: Initialiser of the biases.
        dtype: Compute dtype (`None`: promoted from inputs and params).
        param_dtype: Storage dtype of the parameters and the carry.
        carry_init: Initialiser of `c` and `h` in `initialize_carry`.
        forget_gate_bias: A constant added to the forget gate's
            pre-activation (PAX's `LSTM(forget_gate_bias=)`).
        kernel_metadata: Metadata of the input kernels (e.g. sharding).
        recurrent_kernel_metadata: Metadata of the recurrent kernels.
        bias_metadata: Metadata of the biases.
        is_static: Unroll `apply` in Python.
        unroll: Steps per `jax.lax.scan` iteration in `apply`.

    Shapes:
        step: `(*batch, in)` -> `(*batch, features)`; carry two
        `(*batch, features)` arrays.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> cell = bx.LSTMCell(g / 'cell', 4, rng=rng)
        >>> params = rng.seed(bx.Params(), seed=0)
        >>> carry = cell.initialize_carry(None, (2, 3))
        >>> (h, (c, h)), params = cell(params, jnp.ones((2, 3)), carry)
        >>> h.shape, params[('net', 'cell', 'hf', 'bias')].value.shape
        ((2, 4), (4,))
    """

    def project(self, params: Params, inputs: jax.Array) -> tuple[tuple[Any, ...], Params]:
        """`(Wii x, Wif x, Wig x, Wio x)` for inputs `(..., in)`."""
        self._check_input(inputs)
        out = []
        for dense in self.input_denses:
            (kernel, _), params = dense(params, inputs.shape[-1])
            out.append(_dense(inputs, kernel, None, self.dtype))
        return tuple(out), params

    def recurrent_weights(self, params: Params) -> tuple[tuple[Any, ...], Params]:
        """`((Whi, bhi), (Whf, bhf), (Whg, bhg), (Who, bho))`."""
        out = []
        for dense in self.hidden_denses:
            kb, params = dense(params, self.features)
            out.append(kb)
        return tuple(out), params

    def recurrent_projection(self, weights: Any, carry: Any) -> tuple[Any, ...]:
        """`(Whi h + bhi, Whf h + bhf, Whg h + bhg, Who h + bho)`."""
        _, h = carry
        return tuple(_dense(h, k, b, self.dtype) for k, b in weights)

    def update(self, projected: Any, recurrent: Any, carry: Any) -> tuple[Any, Any]:
        """The gates from both projections, then `c'` and `h'`."""
        c, _ = carry
        i, f, g, o = (p + r for p, r in zip(projected, recurrent))
        return self._update(i, f, g, o, c)


class OptimizedLSTMCell(_LSTMBase):
    """`LSTMCell` with its four gates in one matmul each for `x` and `h`.

    The same equations and parameters as `LSTMCell` (so params copy between
    the two and from flax's `OptimizedLSTMCell`); the kernels are
    concatenated in gate order `i, f, g, o` before the matmuls, which is
    usually faster.

    Args:
        graph: This module's node; children `ii, if, ig, io, hi, hf, hg, ho`.
        features: Hidden size.
        rng: `Rng` for initialisation.
        gate_fn: Gate nonlinearity.
        activation_fn: Candidate and output nonlinearity.
        kernel_init: Initialiser of the input kernels.
        recurrent_kernel_init: Initialiser of the recurrent kernels.
        bias_init: Initialiser of the biases.
        dtype: Compute dtype (`None`: promoted from inputs and params).
        param_dtype: Storage dtype of the parameters and the carry.
        carry_init: Initialiser of `c` and `h` in `initialize_carry`.
        forget_gate_bias: A constant added to the forget gate's pre-activation.
        kernel_metadata: Metadata of the input kernels (e.g. sharding).
        recurrent_kernel_metadata: Metadata of the recurrent kernels.
        bias_metadata: Metadata of the biases.
        is_static: Unroll `apply` in Python.
        unroll: Steps per `jax.lax.scan` iteration in `apply`.

    Shapes:
        As `LSTMCell`.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> cell = bx.OptimizedLSTMCell(g / 'cell', 4, rng=rng)
        >>> params = rng.seed(bx.Params(), seed=0)
        >>> (ys, (c, h)), params = cell.apply(params, jnp.ones((2, 5, 3)))
        >>> ys.shape, params[('net', 'cell', 'ii', 'kernel')].value.shape
        ((2, 5, 4), (3, 4))
    """

    def project(self, params: Params, inputs: jax.Array) -> tuple[jax.Array, Params]:
        """`x @ [Wii | Wif | Wig | Wio]`, `(..., 4 * features)`."""
        self._check_input(inputs)
        (kernel, _), params = self._fused(params, self.input_denses, inputs.shape[-1])
        return _dense(inputs, kernel, None, self.dtype), params

    def recurrent_weights(self, params: Params) -> tuple[Any, Params]:
        """`([Whi | Whf | Whg | Who], [bhi | bhf | bhg | bho])`."""
        return self._fused(params, self.hidden_denses, self.features)

    def recurrent_projection(self, weights: Any, carry: Any) -> jax.Array:
        """`h @ [Whi | Whf | Whg | Who] + [bhi | bhf | bhg | bho]`."""
        kernel, bias = weights
        return _dense(carry[1], kernel, bias, self.dtype)

    def update(self, projected: jax.Array, recurrent: jax.Array, carry: Any) -> tuple[Any, Any]:
        """The gates from both projections, then `c'` and `h'`."""
        c, _ = carry
        hi, hf, hg, ho = jnp.split(recurrent, 4, axis=-1)
        xi, xf, xg, xo = jnp.split(projected, 4, axis=-1)
        return self._update(hi + xi, hf + xf, hg + xg, ho + xo, c)


class GRUCell(_FlaxCell):
    """GRU cell with flax.linen's (and PyTorch's) equations and parameters.

    One step: `r = gate_fn(Wir x + bir + Whr h)`, `z = gate_fn(Wiz x + biz +
    Whz h)`, `n = activation_fn(Win x + bin + r * (Whn h + bhn))` (the reset
    gate applied to the recurrent projection, bias included),
    `h' = (1 - z) * n + z * h`. Carry and output: `h'`.

    Args:
        graph: This module's node; children `ir, iz, in` (kernel
            `(in, features)`, bias), `hr, hz` (kernel) and `hn` (kernel,
            bias).
        features: Hidden size.
        rng: `Rng` for initialisation.
        gate_fn: Gate nonlinearity.
        activation_fn: Candidate nonlinearity.
        kernel_init: Initialiser of the input kernels.
        recurrent_kernel_init: Initialiser of the recurrent kernels.
        bias_init: Initialiser of the biases.
        dtype: Compute dtype (`None`: promoted from inputs and params).
        param_dtype: Storage dtype of the parameters and the carry.
        carry_init: Initialiser of the carry in `initialize_carry`.
        kernel_metadata: Metadata of the input kernels (e.g. sharding).
        recurrent_kernel_metadata: Metadata of the recurrent kernels.
        bias_metadata: Metadata of the biases.
        is_static: Unroll `apply` in Python.
        unroll: Steps per `jax.lax.scan` iteration in `apply`.

    Shapes:
        step: `(*batch, in)` -> `(*batch, features)`; carry `(*batch, features)`.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> cell = bx.GRUCell(g / 'cell', 4, rng=rng)
        >>> params = rng.seed(bx.Params(), seed=0)
        >>> (ys, h), params = cell.apply(params, jnp.ones((2, 5, 3)))
        >>> ys.shape, sorted(p[2] for p in params.keys() if p[1] == 'cell')
        ((2, 5, 4), ['hn', 'hn', 'hr', 'hz', 'in', 'in', 'ir', 'ir', 'iz', 'iz'])
    """

    def __init__(
        self,
        graph: Graph,
        features: int,
        rng: Any = None,
        gate_fn: Callable[[jax.Array], jax.Array] = jax.nn.sigmoid,
        activation_fn: Callable[[jax.Array], jax.Array] = jnp.tanh,
        kernel_init: Initializer = _LECUN,
        recurrent_kernel_init: Initializer = _ORTHOGONAL,
        bias_init: Initializer = _ZEROS,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        carry_init: Initializer = _ZEROS,
        kernel_metadata: dict[str, Any] | None = None,
        recurrent_kernel_metadata: dict[str, Any] | None = None,
        bias_metadata: dict[str, Any] | None = None,
        is_static: bool = False,
        unroll: int = 1,
    ) -> None:
        super().__init__(graph, is_static, unroll)
        self._setup(
            features,
            rng,
            kernel_init,
            recurrent_kernel_init,
            dtype,
            param_dtype,
            carry_init,
            kernel_metadata,
            recurrent_kernel_metadata,
            bias_metadata,
        )
        self.gate_fn = gate_fn
        self.activation_fn = activation_fn
        self.input_denses = [self._dense(f"i{g}", False, True, bias_init) for g in "rzn"]
        self.hidden_denses = [
            self._dense("hr", True, False, bias_init),
            self._dense("hz", True, False, bias_init),
            self._dense("hn", True, True, bias_init),
        ]

    def initialize_carry(self, key: Any, input_shape: tuple[int, ...]) -> jax.Array:
        """`carry_init` of shape `(*batch, features)`.

        Example:
            >>> import blox as bx
            >>> bx.GRUCell(bx.Graph('n') / 'c', 4).initialize_carry(None, (2, 3)).shape
            (2, 4)
        """
        return self._hidden(key, input_shape)

    def project(self, params: Params, inputs: jax.Array) -> tuple[jax.Array, Params]:
        """`x @ [Wir | Wiz | Win] + [bir | biz | bin]`, `(..., 3 * features)`."""
        self._check_input(inputs)
        (kernel, bias), params = self._fused(params, self.input_denses, inputs.shape[-1])
        return _dense(inputs, kernel, bias, self.dtype), params

    def recurrent_weights(self, params: Params) -> tuple[Any, Params]:
        """`([Whr | Whz | Whn], bhn)`."""
        (kernel, _), params = self._fused(params, self.hidden_denses, self.features)
        (_, bias_n), params = self.hidden_denses[2](params, self.features)
        return (kernel, bias_n), params

    def recurrent_projection(self, weights: Any, carry: jax.Array) -> tuple[Any, ...]:
        """`(Whr h, Whz h, Whn h + bhn)`."""
        kernel, bias_n = weights
        hr, hz, hn = jnp.split(_dense(carry, kernel, None, self.dtype), 3, axis=-1)
        bias_n = promote_dtype(hn, bias_n, dtype=self.dtype)[1]
        return hr, hz, hn + _lead(bias_n, hn.ndim)

    def update(self, projected: jax.Array, recurrent: Any, carry: jax.Array) -> tuple[Any, Any]:
        """`r`, `z`, `n` and `h'` from both projections."""
        hr, hz, hn = recurrent
        h = carry
        xr, xz, xn = jnp.split(projected, 3, axis=-1)
        r = self.gate_fn(xr + hr)
        z = self.gate_fn(xz + hz)
        n = self.activation_fn(xn + r * hn)
        new_h = (1.0 - z) * n + z * h
        return new_h, new_h


class MGUCell(_FlaxCell):
    """Minimal gated unit (flax.linen's `MGUCell`).

    One step: `f = gate_fn(Wif x + bif + Whf h)`,
    `n = activation_fn(Win x + bin + f * (Whn h + bhn))` (without the `f *`
    and `bhn` when `reset_gate=False`), `h' = (1 - f) * n + f * h`.

    Args:
        graph: This module's node; children `if, in` (kernel, bias), `hf`
            (kernel) and `hn` (kernel, and a bias when `reset_gate`).
        features: Hidden size.
        rng: `Rng` for initialisation.
        gate_fn: Gate nonlinearity.
        activation_fn: Candidate nonlinearity.
        kernel_init: Initialiser of the input kernels.
        recurrent_kernel_init: Initialiser of the recurrent kernels.
        forget_bias_init: Initialiser of `if.bias` (ones, as in flax).
        activation_bias_init: Initialiser of `in.bias` and `hn.bias`.
        dtype: Compute dtype (`None`: promoted from inputs and params).
        param_dtype: Storage dtype of the parameters and the carry.
        carry_init: Initialiser of the carry in `initialize_carry`.
        reset_gate: Gate the recurrent candidate term with `f`.
        kernel_metadata: Metadata of the input kernels (e.g. sharding).
        recurrent_kernel_metadata: Metadata of the recurrent kernels.
        bias_metadata: Metadata of the biases.
        is_static: Unroll `apply` in Python.
        unroll: Steps per `jax.lax.scan` iteration in `apply`.

    Shapes:
        step: `(*batch, in)` -> `(*batch, features)`; carry `(*batch, features)`.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> cell = bx.MGUCell(g / 'cell', 4, rng=rng)
        >>> params = rng.seed(bx.Params(), seed=0)
        >>> (ys, h), params = cell.apply(params, jnp.ones((2, 5, 3)))
        >>> ys.shape, params[('net', 'cell', 'if', 'bias')].value.tolist()
        ((2, 5, 4), [1.0, 1.0, 1.0, 1.0])
    """

    def __init__(
        self,
        graph: Graph,
        features: int,
        rng: Any = None,
        gate_fn: Callable[[jax.Array], jax.Array] = jax.nn.sigmoid,
        activation_fn: Callable[[jax.Array], jax.Array] = jnp.tanh,
        kernel_init: Initializer = _LECUN,
        recurrent_kernel_init: Initializer = _ORTHOGONAL,
        forget_bias_init: Initializer = _ONES,
        activation_bias_init: Initializer = _ZEROS,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        carry_init: Initializer = _ZEROS,
        reset_gate: bool = True,
        kernel_metadata: dict[str, Any] | None = None,
        recurrent_kernel_metadata: dict[str, Any] | None = None,
        bias_metadata: dict[str, Any] | None = None,
        is_static: bool = False,
        unroll: int = 1,
    ) -> None:
        super().__init__(graph, is_static, unroll)
        self._setup(
            features,
            rng,
            kernel_init,
            recurrent_kernel_init,
            dtype,
            param_dtype,
            carry_init,
            kernel_metadata,
            recurrent_kernel_metadata,
            bias_metadata,
        )
        self.gate_fn = gate_fn
        self.activation_fn = activation_fn
        self.reset_gate = reset_gate
        self.input_denses = [
            self._dense("if", False, True, forget_bias_init),
            self._dense("in", False, True, activation_bias_init),
        ]
        self.hidden_denses = [
            self._dense("hf", True, False, activation_bias_init),
            self._dense("hn", True, reset_gate, activation_bias_init),
        ]

    def initialize_carry(self, key: Any, input_shape: tuple[int, ...]) -> jax.Array:
        """`carry_init` of shape `(*batch, features)`.

        Example:
            >>> import blox as bx
            >>> bx.MGUCell(bx.Graph('n') / 'c', 4).initialize_carry(None, (2, 3)).shape
            (2, 4)
        """
        return self._hidden(key, input_shape)

    def project(self, params: Params, inputs: jax.Array) -> tuple[jax.Array, Params]:
        """`x @ [Wif | Win] + [bif | bin]`, `(..., 2 * features)`."""
        self._check_input(inputs)
        (kernel, bias), params = self._fused(params, self.input_denses, inputs.shape[-1])
        return _dense(inputs, kernel, bias, self.dtype), params

    def recurrent_weights(self, params: Params) -> tuple[Any, Params]:
        """`([Whf | Whn], bhn or None)`."""
        (kernel, _), params = self._fused(params, self.hidden_denses, self.features)
        (_, bias_n), params = self.hidden_denses[1](params, self.features)
        return (kernel, bias_n), params

    def recurrent_projection(self, weights: Any, carry: jax.Array) -> tuple[Any, ...]:
        """`(Whf h, Whn h (+ bhn))`."""
        kernel, bias_n = weights
        hf, hn = jnp.split(_dense(carry, kernel, None, self.dtype), 2, axis=-1)
        if bias_n is not None:
            bias_n = promote_dtype(hn, bias_n, dtype=self.dtype)[1]
            hn = hn + _lead(bias_n, hn.ndim)
        return hf, hn

    def update(self, projected: jax.Array, recurrent: Any, carry: jax.Array) -> tuple[Any, Any]:
        """`f`, `n` and `h'` from both projections."""
        hf, hn = recurrent
        h = carry
        xf, xn = jnp.split(projected, 2, axis=-1)
        f = self.gate_fn(xf + hf)
        if self.reset_gate:
            hn = hn * f
        n = self.activation_fn(xn + hn)
        new_h = (1.0 - f) * n + f * h
        return new_h, new_h


class ConvLSTMCell(RNNCellBase):
    """Convolutional LSTM cell (flax.linen's `ConvLSTMCell`).

    One step, `*` a convolution with `features * 4` output channels:
    `i, g, f, o = split(ih * x + hh * h, 4)`, `f = sigmoid(f + 1)` (the
    forget-gate offset of Jozefowicz et al.), `c' = f c + sigmoid(i) tanh(g)`,
    `h' = sigmoid(o) tanh(c')`. Carry `(c', h')`, output `h'`.

    Args:
        graph: This module's node; children `ih` and `hh`, each a `Conv`
            with kernel `(*kernel_size, channels, 4 * features)` and bias.
        features: Channels of `h` and `c`.
        kernel_size: Window size per spatial dim.
        rng: `Rng` for initialisation.
        strides: Stride per spatial dim (`None`: 1).
        padding: ``'SAME'``, ``'VALID'`` or `(low, high)` pairs (keep the
            spatial shape of `h`, so usually ``'SAME'``).
        use_bias: Give both convolutions a bias.
        dtype: Cast inputs and `h` to this before the convolutions (`None`:
            as given).
        param_dtype: Storage dtype of the carry.
        carry_init: Initialiser of `c` and `h` in `initialize_carry`.
        is_static: Unroll `apply` in Python.
        unroll: Steps per `jax.lax.scan` iteration in `apply`.

    Shapes:
        step: `(*batch, *spatial, channels)` -> `(*batch, *spatial, features)`.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> cell = bx.ConvLSTMCell(g / 'cell', 6, (3, 3), rng=rng)
        >>> params = rng.seed(bx.Params(), seed=0)
        >>> (ys, (c, h)), params = cell.apply(params, jnp.ones((2, 4, 5, 5, 3)))
        >>> ys.shape, params[('net', 'cell', 'hh', 'kernel')].value.shape
        ((2, 4, 5, 5, 6), (3, 3, 6, 24))
    """

    def __init__(
        self,
        graph: Graph,
        features: int,
        kernel_size: Sequence[int],
        rng: Any = None,
        strides: Sequence[int] | None = None,
        padding: Any = "SAME",
        use_bias: bool = True,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        carry_init: Initializer = _ZEROS,
        is_static: bool = False,
        unroll: int = 1,
    ) -> None:
        super().__init__(graph, is_static, unroll)
        self.features = features
        self.kernel_size = tuple(kernel_size)
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.carry_init = carry_init
        conv = dict(strides=1 if strides is None else strides, padding=padding, use_bias=use_bias)
        self.ih = Conv(graph.child("ih"), self.kernel_size, 4 * features, rng=rng, **conv)
        self.hh = Conv(graph.child("hh"), self.kernel_size, 4 * features, rng=rng, **conv)

    @property
    def num_feature_axes(self) -> int:  # type: ignore[override]
        """Spatial dims plus channels: `len(kernel_size) + 1`.

        Example:
            >>> import blox as bx
            >>> bx.ConvLSTMCell(bx.Graph('n') / 'c', 4, (3, 3)).num_feature_axes
            3
        """
        return len(self.kernel_size) + 1

    def initialize_carry(self, key: Any, input_shape: tuple[int, ...]) -> tuple[Any, Any]:
        """`(c, h)` of shape `(*batch, *spatial, features)`.

        Example:
            >>> import blox as bx
            >>> cell = bx.ConvLSTMCell(bx.Graph('n') / 'c', 4, (3, 3))
            >>> cell.initialize_carry(None, (2, 5, 5, 3))[0].shape
            (2, 5, 5, 4)
        """
        shape = tuple(input_shape[:-1]) + (self.features,)
        key_c, key_h = jax.random.split(_key(key))
        return (
            self.carry_init(key_c, shape, self.param_dtype),
            self.carry_init(key_h, shape, self.param_dtype),
        )

    def _cast(self, x: jax.Array) -> jax.Array:
        return x if self.dtype is None else x.astype(self.dtype)

    def project(self, params: Params, inputs: jax.Array) -> tuple[jax.Array, Params]:
        """`ih * x` for inputs `(..., *spatial, channels)`."""
        return self.ih(params, self._cast(inputs))

    def recurrent_weights(self, params: Params) -> tuple[Params, Params]:
        """The params themselves: `recur` runs the `hh` convolution on them."""
        if self.hh.param_path("kernel") not in params:
            # Created here, not in `recur`, whose params a scan cannot return.
            probe = jnp.zeros((1, *self.kernel_size, self.features), self.param_dtype)
            _, params = self.hh(params, probe)
        return params, params

    def recur(self, weights: Params, projected: jax.Array, carry: Any) -> tuple[Any, Any]:
        """One step from `ih * x`."""
        c, h = carry
        hh, _ = self.hh(weights, self._cast(h))
        gates = projected + hh
        i, g, f, o = jnp.split(gates, 4, axis=-1)
        f = jax.nn.sigmoid(f + 1)
        new_c = f * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        new_h = jax.nn.sigmoid(o) * jnp.tanh(new_c)
        return new_h, (new_c, new_h)


class LSTM(RNNCellBase):
    """Long short-term memory cell (the ancestor's: one fused kernel over `[x, h]`).

    One step, with `gates` a `Linear` to `4 * hidden_size` over `[x, h]`:
    `i, g, f, o = split(gates([x, h]), 4)`;
    `c' = sigmoid(f + forget_gate_bias) * c + sigmoid(i) * tanh(g)`;
    `h' = sigmoid(o) * tanh(c')`. The output is `h'`. The kernel's first
    `in` rows multiply `x`: that product is computed for all steps at once
    before the loop (`project`), the last `hidden_size` rows multiply `h`.

    Args:
        graph: This module's node; the gates live at `graph / 'gates'`.
        hidden_size: Size of `h` and `c`.
        rng: `Rng` for initialisation.
        is_static: Unroll `apply` in Python instead of `jax.lax.scan`.
        unroll: Steps per `jax.lax.scan` iteration in `apply`.
        forget_gate_bias: A constant added to the forget gate's
            pre-activation (PAX's `LSTM(forget_gate_bias=)`).
        hoist_inputs: The form of the one-step `__call__` and of sequences
            with `is_reset` or `seq_lengths`: `True` computes `x @ kernel[:in]`
            for all steps before the loop, `False` (default) `[x, h] @ kernel`
            per step. Either way, other sequences run `lstm_sequence` (see
            below); the numbers agree within float32 rounding.

    `apply` (and `RNN`, `StackedRNN`) without `is_reset` or `seq_lengths`
    runs the whole sequence through one kernel with a hand-written backward
    pass (`blox.core._recurrent_kernels.lstm_sequence`): the input projection
    of all steps is one matmul before the loop, the backward loop computes
    only the gate cotangents and `dh @ kernel[in:]^T` per step, and the weight
    gradients are single matmuls over all steps. Calls with `is_reset` or
    `seq_lengths`, and `is_static`, scan the step instead.

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
        self,
        graph: Graph,
        hidden_size: int,
        rng: Any = None,
        is_static: bool = False,
        unroll: int = 1,
        forget_gate_bias: float = 0.0,
        hoist_inputs: bool = False,
    ) -> None:
        super().__init__(graph, is_static, unroll)
        self.hidden_size = hidden_size
        self.forget_gate_bias = float(forget_gate_bias)
        self.hoist_inputs = bool(hoist_inputs)
        self.gates = Linear(graph.child("gates"), 4 * hidden_size, rng=rng)

    def initial_state(self, params: Params, inputs: Any) -> tuple[LSTMState, Params]:
        """Zeros `(batch, hidden_size)` for `hidden` and `cell`."""
        zeros = jnp.zeros((_batch_size(self, inputs), self.hidden_size), jnp.float32)
        return LSTMState(hidden=zeros, cell=zeros), params

    def initialize_carry(self, key: Any, input_shape: tuple[int, ...]) -> LSTMState:
        """Zeros `(*batch, hidden_size)` for a step input `(*batch, in)`.

        Example:
            >>> import blox as bx
            >>> bx.LSTM(bx.Graph('n') / 'l', 4).initialize_carry(None, (2, 3)).cell.shape
            (2, 4)
        """
        zeros = jnp.zeros(tuple(input_shape[:-1]) + (self.hidden_size,), jnp.float32)
        return LSTMState(hidden=zeros, cell=zeros)

    def project(self, params: Params, inputs: jax.Array) -> tuple[jax.Array, Params]:
        """`x @ kernel[:in] + bias`, `(..., 4 * hidden_size)`."""
        size = inputs.shape[-1]
        return _fused_input(self.gates, params, inputs, size + self.hidden_size)

    def recurrent_weights(self, params: Params) -> tuple[jax.Array, Params]:
        """`kernel[in:]`, the rows that multiply `h`."""
        kernel, params = self.gates.get_param(params, "kernel")
        return kernel[-self.hidden_size :], params

    def recurrent_projection(self, weights: jax.Array, carry: LSTMState) -> jax.Array:
        """`h @ kernel[in:]`."""
        return _matmul(carry.hidden, weights)

    def update(self, projected: jax.Array, recurrent: jax.Array, carry: LSTMState) -> Any:
        """The gates `i, g, f, o`, then `c'` and `h'`."""
        z = projected + recurrent
        i, g, f, o = jnp.split(z, 4, axis=-1)
        if self.forget_gate_bias:
            f = f + self.forget_gate_bias
        cell = jax.nn.sigmoid(f) * carry.cell + jax.nn.sigmoid(i) * jnp.tanh(g)
        hidden = jax.nn.sigmoid(o) * jnp.tanh(cell)
        return hidden, LSTMState(hidden=hidden, cell=cell)

    def scan_sequence(
        self, params: Params, inputs: jax.Array, carry: LSTMState, unroll: int
    ) -> tuple[tuple[jax.Array, LSTMState], Params]:
        """Time-major `(time, batch, in)` inputs through `lstm_sequence` (see `scan_cell`)."""
        (kernel, bias), params = _fused_params(
            self.gates, params, inputs.shape[-1] + self.hidden_size
        )
        hs, h, c = lstm_sequence(
            kernel,
            bias,
            inputs,
            carry.hidden,
            carry.cell,
            forget_gate_bias=self.forget_gate_bias,
            unroll=unroll,
        )
        return (hs, LSTMState(hidden=h, cell=c)), params

    def __call__(
        self,
        params: Params,
        inputs: jax.Array,
        prev_state: LSTMState | None,
        is_reset: jax.Array | None = None,
        is_training: bool = True,
    ) -> tuple[tuple[jax.Array, LSTMState], Params]:
        """One step; rows with `is_reset` start from a zero state."""
        if self.hoist_inputs:
            return super().__call__(params, inputs, prev_state, is_reset, is_training)
        _check_step(self, inputs, prev_state)
        state = self.maybe_reset_state(params, prev_state, inputs, is_reset)
        z, params = self.gates(params, jnp.concatenate([inputs, state.hidden], axis=-1))
        i, g, f, o = jnp.split(z, 4, axis=-1)
        if self.forget_gate_bias:
            f = f + self.forget_gate_bias
        cell = jax.nn.sigmoid(f) * state.cell + jax.nn.sigmoid(i) * jnp.tanh(g)
        hidden = jax.nn.sigmoid(o) * jnp.tanh(cell)
        return (hidden, LSTMState(hidden=hidden, cell=cell)), params


def _fused_params(
    linear: Linear, params: Params, rows: int
) -> tuple[tuple[jax.Array, jax.Array], Params]:
    """`(kernel, bias)` of a `Linear` whose input is `[x, h]`, `rows` = `in + hidden`."""
    kernel, params = linear.get_param(
        params,
        "kernel",
        (rows, linear.output_size),
        linear.kernel_init,
        metadata=linear.kernel_metadata,
        rng=linear.rng,
    )
    bias, params = linear.get_param(
        params,
        "bias",
        (linear.output_size,),
        linear.bias_init,
        metadata=linear.bias_metadata,
        rng=linear.rng,
    )
    return (kernel, bias), params


def _fused_input(
    linear: Linear, params: Params, inputs: jax.Array, rows: int
) -> tuple[jax.Array, Params]:
    """`inputs @ kernel[:in] + bias` of a `Linear` whose input is `[x, h]`."""
    (kernel, bias), params = _fused_params(linear, params, rows)
    y = _matmul(inputs, kernel[: inputs.shape[-1]])
    return y + _lead(bias, y.ndim), params


class GRU(RNNCellBase):
    """Gated recurrent unit (the ancestor's: fused kernels over `[x, h]`).

    One step: `z, r = sigmoid(split(gates([x, h]), 2))`;
    `n = tanh(candidate([x, r * h]))`; `h' = (1 - z) * h + z * n`.

    Args:
        graph: This module's node; children `gates` and `candidate`.
        hidden_size: Size of `h`.
        rng: `Rng` for initialisation.
        is_static: Unroll `apply` in Python instead of `jax.lax.scan`.
        unroll: Steps per `jax.lax.scan` iteration in `apply`.
        hoist_inputs: The form of the one-step `__call__` and of sequences
            with `is_reset` or `seq_lengths` (as for `LSTM`).

    As for `LSTM`, `apply` without `is_reset` or `seq_lengths` runs one
    kernel with a hand-written backward pass (`gru_sequence`); calls with
    them, and `is_static`, scan the step. That kernel's training loops run
    one step per iteration whatever `unroll` says (unrolled, XLA would copy
    their in-place buffers every iteration).

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
        self,
        graph: Graph,
        hidden_size: int,
        rng: Any = None,
        is_static: bool = False,
        unroll: int = 1,
        hoist_inputs: bool = False,
    ) -> None:
        super().__init__(graph, is_static, unroll)
        self.hidden_size = hidden_size
        self.hoist_inputs = bool(hoist_inputs)
        self.gates = Linear(graph.child("gates"), 2 * hidden_size, rng=rng)
        self.candidate = Linear(graph.child("candidate"), hidden_size, rng=rng)

    def initial_state(self, params: Params, inputs: Any) -> tuple[GRUState, Params]:
        """Zeros `(batch, hidden_size)`."""
        zeros = jnp.zeros((_batch_size(self, inputs), self.hidden_size), jnp.float32)
        return GRUState(hidden=zeros), params

    def initialize_carry(self, key: Any, input_shape: tuple[int, ...]) -> GRUState:
        """Zeros `(*batch, hidden_size)` for a step input `(*batch, in)`.

        Example:
            >>> import blox as bx
            >>> bx.GRU(bx.Graph('n') / 'g', 4).initialize_carry(None, (2, 3)).hidden.shape
            (2, 4)
        """
        return GRUState(hidden=jnp.zeros(tuple(input_shape[:-1]) + (self.hidden_size,)))

    def project(self, params: Params, inputs: jax.Array) -> tuple[Any, Params]:
        """`(x @ gates.kernel[:in] + gates.bias, x @ candidate.kernel[:in] + candidate.bias)`."""
        rows = inputs.shape[-1] + self.hidden_size
        zr, params = _fused_input(self.gates, params, inputs, rows)
        n, params = _fused_input(self.candidate, params, inputs, rows)
        return (zr, n), params

    def recurrent_weights(self, params: Params) -> tuple[Any, Params]:
        """The rows of both kernels that multiply `h` (and `r * h`)."""
        gates, params = self.gates.get_param(params, "kernel")
        candidate, params = self.candidate.get_param(params, "kernel")
        return (gates[-self.hidden_size :], candidate[-self.hidden_size :]), params

    def recur(self, weights: Any, projected: Any, carry: GRUState) -> Any:
        """One step from the input products."""
        w_gates, w_candidate = weights
        x_zr, x_n = projected
        h = carry.hidden
        z, r = jnp.split(jax.nn.sigmoid(x_zr + jnp.dot(h, w_gates)), 2, axis=-1)
        n = jnp.tanh(x_n + jnp.dot(r * h, w_candidate))
        hidden = (1 - z) * h + z * n
        return hidden, GRUState(hidden=hidden)

    def scan_sequence(
        self, params: Params, inputs: jax.Array, carry: GRUState, unroll: int
    ) -> tuple[tuple[jax.Array, GRUState], Params]:
        """Time-major `(time, batch, in)` inputs through `gru_sequence` (see `scan_cell`)."""
        rows = inputs.shape[-1] + self.hidden_size
        (k_gates, b_gates), params = _fused_params(self.gates, params, rows)
        (k_candidate, b_candidate), params = _fused_params(self.candidate, params, rows)
        hs, h = gru_sequence(
            k_gates, b_gates, k_candidate, b_candidate, inputs, carry.hidden, unroll=unroll
        )
        return (hs, GRUState(hidden=h)), params

    def __call__(
        self,
        params: Params,
        inputs: jax.Array,
        prev_state: GRUState | None,
        is_reset: jax.Array | None = None,
        is_training: bool = True,
    ) -> tuple[tuple[jax.Array, GRUState], Params]:
        """One step; rows with `is_reset` start from a zero state."""
        if self.hoist_inputs:
            return super().__call__(params, inputs, prev_state, is_reset, is_training)
        _check_step(self, inputs, prev_state)
        state = self.maybe_reset_state(params, prev_state, inputs, is_reset)
        h = state.hidden
        zr, params = self.gates(params, jnp.concatenate([inputs, h], axis=-1))
        z, r = jnp.split(jax.nn.sigmoid(zr), 2, axis=-1)
        n, params = self.candidate(params, jnp.concatenate([inputs, r * h], axis=-1))
        n = jnp.tanh(n)
        hidden = (1 - z) * h + z * n
        return (hidden, GRUState(hidden=hidden)), params


# -- wrappers ----------------------------------------------------------------------------------


def _num_feature_axes(cell: Any) -> int:
    return int(getattr(cell, "num_feature_axes", 1))


class RNN(Module):
    """Runs a cell over a sequence (flax.linen's `RNN`, with flax's semantics).

    Inputs are `(*batch, time, *features)` (`(time, *batch, *features)` when
    `time_major`), `*features` being the cell's `num_feature_axes` trailing
    axes. With `reverse`, steps are processed last to first and the outputs
    come back in processing order unless `keep_order`. With `seq_lengths`
    (`(*batch)` ints), reversal keeps each row's padding at the end
    (`flip_sequences`) and the returned carry is the carry after each row's
    last valid step; outputs at padded steps are not zeroed. The input
    projection of every step runs as one call before the loop (`scan_cell`).
    This also covers mlax's `Recurrent(cell, reverse, unroll)`.

    Args:
        graph: This module's node (no params of its own; build the cell at
            `graph / 'cell'` so paths match flax's `RNN`).
        cell: An `RNNCellBase` (or any `RecurrenceBase`).
        time_major: Time is the leading axis.
        reverse: Process the sequence from its end.
        keep_order: With `reverse`, return outputs in input order.
        unroll: Steps per `jax.lax.scan` iteration.
        return_carry: Return `(carry, outputs)` instead of `outputs`.
        is_static: Unroll in Python instead of `jax.lax.scan`.

    Raises:
        TypeError: If `cell` is not a `RecurrenceBase`.
        ValueError: If `unroll` is not a positive int.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> node = g / 'rnn'
        >>> rnn = bx.RNN(node, bx.LSTMCell(node / 'cell', 8, rng=rng))
        >>> params = rng.seed(bx.Params(), seed=0)
        >>> ys, params = rnn(params, jnp.ones((2, 5, 3)))
        >>> (carry, ys), params = rnn(params, jnp.ones((2, 5, 3)), return_carry=True,
        ...                           seq_lengths=jnp.array([5, 3]))
        >>> ys.shape, carry[1].shape
        ((2, 5, 8), (2, 8))
    """

    def __init__(
        self,
        graph: Graph,
        cell: Any,
        *,
        time_major: bool = False,
        reverse: bool = False,
        keep_order: bool = False,
        unroll: int = 1,
        return_carry: bool = False,
        is_static: bool = False,
    ) -> None:
        super().__init__(graph)
        if not isinstance(cell, RecurrenceBase):
            raise TypeError(
                f"{_where(self)}: expected cell to be a blox recurrent cell "
                f"(RNNCellBase or RecurrenceBase), got {type(cell).__name__}. Fix: pass "
                "e.g. bx.LSTMCell(graph / 'cell', features, rng=rng)."
            )
        self.cell = cell
        self.time_major = time_major
        self.reverse = reverse
        self.keep_order = keep_order
        self.unroll = _check_unroll(_where(self), unroll)
        self.return_carry = return_carry
        self.is_static = is_static

    def __call__(
        self,
        params: Params,
        inputs: jax.Array,
        *,
        initial_carry: Any = None,
        init_key: Any = None,
        seq_lengths: Any = None,
        return_carry: bool | None = None,
        time_major: bool | None = None,
        reverse: bool | None = None,
        keep_order: bool | None = None,
        is_reset: Any = None,
        is_training: bool = True,
    ) -> tuple[Any, Params]:
        """Runs the cell; the keyword flags override the constructor's for this call.

        Args:
            params: The container.
            inputs: `(*batch, time, *features)` or, time-major,
                `(time, *batch, *features)`.
            initial_carry: The carry before the first step; `None` means
                `cell.initialize_carry(init_key, step_input_shape)`.
            init_key: Key for `initialize_carry` (default `jax.random.key(0)`).
            seq_lengths: `None` or `(*batch)` integer lengths.
            return_carry: Override of the constructor's flag.
            time_major: Override of the constructor's flag.
            reverse: Override of the constructor's flag.
            keep_order: Override of the constructor's flag.
            is_reset: `None` or booleans `(*batch, time)` (`(time, *batch)`
                time-major): reset those rows' carry before that step.
            is_training: Passed to the cell.

        Returns:
            `(outputs, params)`, or `((carry, outputs), params)` with
            `return_carry`; outputs in the input's layout.

        Raises:
            ValueError: If the inputs have too few axes for the cell.
        """
        return_carry = self.return_carry if return_carry is None else return_carry
        time_major = self.time_major if time_major is None else time_major
        reverse = self.reverse if reverse is None else reverse
        keep_order = self.keep_order if keep_order is None else keep_order
        features = _num_feature_axes(self.cell)
        if jnp.ndim(inputs) < features + 1:
            raise ValueError(
                f"{_where(self)}: expected inputs with a time axis and {features} "
                f"feature axes, got shape {tuple(jnp.shape(inputs))}. Fix: pass "
                "(*batch, time, *features), or (time, *batch, *features) with "
                "time_major=True."
            )
        time_axis = 0 if time_major else jnp.ndim(inputs) - features - 1
        xs = jnp.moveaxis(inputs, time_axis, 0)
        if is_reset is not None:
            is_reset = jnp.moveaxis(jnp.asarray(is_reset), 0 if time_major else -1, 0)
        carry = initial_carry
        if carry is None:
            carry = self.cell.initialize_carry(_key(init_key), xs.shape[1:])
        (outs, carry), params = scan_cell(
            self.cell,
            params,
            xs,
            carry,
            is_reset=is_reset,
            is_training=is_training,
            seq_lengths=seq_lengths,
            reverse=reverse,
            keep_order=keep_order,
            unroll=self.unroll,
            is_static=self.is_static,
        )
        outs = jax.tree.map(lambda y: jnp.moveaxis(y, 0, time_axis), outs)
        return ((carry, outs) if return_carry else outs), params


def _concatenate(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.concatenate([a, b], axis=-1)


class Bidirectional(Module):
    """Runs one RNN forwards and one backwards and merges them (flax's `Bidirectional`).

    The backward RNN runs with `reverse=True, keep_order=True`, so both
    outputs line up step by step (padding respected with `seq_lengths`);
    `merge_fn(forward, backward)` combines them (default: concatenate
    features). The carry is `(forward_carry, backward_carry)`.

    Args:
        graph: This module's node (no params of its own; build the RNNs at
            `graph / 'forward_rnn'` and `graph / 'backward_rnn'` to match
            flax's paths).
        forward_rnn: An `RNN`.
        backward_rnn: An `RNN`.
        merge_fn: `merge_fn(forward_outputs, backward_outputs)`.
        time_major: Time is the leading axis.
        return_carry: Return `(carry, outputs)`.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> node = g / 'bi'
        >>> f, b = node / 'forward_rnn', node / 'backward_rnn'
        >>> fwd = bx.RNN(f, bx.GRUCell(f / 'cell', 4, rng=rng))
        >>> bwd = bx.RNN(b, bx.GRUCell(b / 'cell', 4, rng=rng))
        >>> bi = bx.Bidirectional(node, fwd, bwd)
        >>> ys, params = bi(rng.seed(bx.Params(), seed=0), jnp.ones((2, 5, 3)))
        >>> ys.shape
        (2, 5, 8)
    """

    def __init__(
        self,
        graph: Graph,
        forward_rnn: Any,
        backward_rnn: Any,
        *,
        merge_fn: Callable[[Any, Any], Any] = _concatenate,
        time_major: bool = False,
        return_carry: bool = False,
    ) -> None:
        super().__init__(graph)
        self.forward_rnn = forward_rnn
        self.backward_rnn = backward_rnn
        self.merge_fn = merge_fn
        self.time_major = time_major
        self.return_carry = return_carry

    def __call__(
        self,
        params: Params,
        inputs: jax.Array,
        *,
        initial_carry: Any = None,
        init_key: Any = None,
        seq_lengths: Any = None,
        return_carry: bool | None = None,
        time_major: bool | None = None,
        is_reset: Any = None,
        is_training: bool = True,
    ) -> tuple[Any, Params]:
        """Runs both directions: `(outputs, params)` or `((carry, outputs), params)`.

        Args:
            params: The container.
            inputs: As for `RNN`.
            initial_carry: `None` or `(forward_carry, backward_carry)`.
            init_key: Split into one key per direction for `initialize_carry`.
            seq_lengths: `None` or `(*batch)` integer lengths.
            return_carry: Override of the constructor's flag.
            time_major: Override of the constructor's flag.
            is_reset: As for `RNN` (in each direction's processing order).
            is_training: Passed to the cells.

        Returns:
            The merged outputs, with the carry when `return_carry`.
        """
        time_major = self.time_major if time_major is None else time_major
        return_carry = self.return_carry if return_carry is None else return_carry
        key_forward = key_backward = None
        if init_key is not None:
            key_forward, key_backward = jax.random.split(init_key)
        carry_forward = carry_backward = None
        if initial_carry is not None:
            carry_forward, carry_backward = initial_carry
        common = dict(
            seq_lengths=seq_lengths,
            return_carry=True,
            time_major=time_major,
            is_reset=is_reset,
            is_training=is_training,
        )
        (carry_forward, out_forward), params = self.forward_rnn(
            params,
            inputs,
            initial_carry=carry_forward,
            init_key=key_forward,
            reverse=False,
            **common,
        )
        (carry_backward, out_backward), params = self.backward_rnn(
            params,
            inputs,
            initial_carry=carry_backward,
            init_key=key_backward,
            reverse=True,
            keep_order=True,
            **common,
        )
        outputs = jax.tree.map(self.merge_fn, out_forward, out_backward)
        carry = (carry_forward, carry_backward)
        return ((carry, outputs) if return_carry else outputs), params


class StackedRNN(SequenceBase):
    """Several recurrent layers, optionally bidirectional, with dropout between them.

    Layer `l` runs cell `l{l}` forwards and, when `bidirectional`, cell
    `l{l}_reverse` backwards (`reverse=True, keep_order=True`, padding kept
    at the end with `seq_lengths`); their outputs are concatenated along
    features and, in training and except after the last layer, passed
    through `Dropout(dropout)` before the next layer (PyTorch's `nn.LSTM`
    semantics). The state stacks every cell's state leaf by leaf on a new
    leading axis of size `num_layers * num_directions`, in the order `l0`,
    `l0_reverse`, `l1`, ... (PyTorch's `h_n` order).

    Args:
        graph: This module's node.
        cell: The cell class, built as `cell(graph / 'l0', hidden_size,
            rng=rng, **cell_options)` per layer and direction.
        hidden_size: The cells' hidden size.
        rng: `Rng` for initialisation and dropout masks.
        num_layers: Number of layers.
        bidirectional: Add a backward cell per layer.
        dropout: Drop probability between layers, in `[0, 1)`.
        cell_options: Other arguments for every cell (a dict).

    Raises:
        ValueError: If `num_layers < 1` or `dropout` is outside `[0, 1)`.

    Shapes:
        `apply`: `(batch, time, in)` -> `(batch, time, num_directions *
        hidden_size)`; state leaves `(num_layers * num_directions, batch,
        hidden_size)`.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> stack = bx.StackedRNN(g / 'rnn', bx.LSTM, 4, rng=rng, num_layers=2,
        ...                       bidirectional=True)
        >>> params = rng.seed(bx.Params(), seed=0)
        >>> (ys, state), params = stack.apply(params, jnp.ones((3, 5, 2)))
        >>> ys.shape, state.hidden.shape
        ((3, 5, 8), (4, 3, 4))
    """

    def __init__(
        self,
        graph: Graph,
        cell: Any,
        hidden_size: int,
        rng: Any = None,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        cell_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(graph)
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(
                f"{_where(self)}: expected num_layers to be an int >= 1, got "
                f"{num_layers!r}. Fix: pass e.g. num_layers=2."
            )
        if isinstance(dropout, bool) or not isinstance(dropout, int | float):
            raise ValueError(
                f"{_where(self)}: expected dropout to be a float in [0, 1), got "
                f"{dropout!r}. Fix: pass e.g. dropout=0.2."
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(
                f"{_where(self)}: expected dropout in [0, 1), got {dropout!r}. "
                "Fix: pass the probability of dropping an element, e.g. 0.2."
            )
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bool(bidirectional)
        self.dropout = float(dropout)
        options = dict(cell_options or {})
        self.cells = []
        for layer in range(num_layers):
            for suffix in ("", "_reverse") if self.bidirectional else ("",):
                node = graph.child(f"l{layer}{suffix}")
                self.cells.append(cell(node, hidden_size, rng=rng, **options))
        self.drop = Dropout(graph.child("dropout"), self.dropout, rng=rng) if dropout else None

    @property
    def num_directions(self) -> int:
        """2 when bidirectional, else 1.

        Example:
            >>> import blox as bx
            >>> bx.StackedRNN(bx.Graph('n') / 's', bx.GRU, 3, bidirectional=True).num_directions
            2
        """
        return 2 if self.bidirectional else 1

    def initial_state(self, params: Params, inputs: Any) -> tuple[Any, Params]:
        """Every cell's initial state for step inputs `(batch, in)`, stacked on axis 0."""
        states = []
        for cell in self.cells:
            state, params = cell.initial_state(params, inputs)
            states.append(state)
        return _stack_states(states), params

    def _unstack(self, state: Any) -> list[Any]:
        count = len(self.cells)
        for leaf in jax.tree.leaves(state):
            if jnp.ndim(leaf) < 1 or jnp.shape(leaf)[0] != count:
                raise ValueError(
                    f"{_where(self)}: expected state leaves with a leading axis of "
                    f"num_layers * num_directions = {count}, got shape "
                    f"{tuple(jnp.shape(leaf))}. Fix: pass the state this layer "
                    "returned, or None to start from zeros."
                )
        return [jax.tree.map(lambda x, k=k: x[k], state) for k in range(count)]

    def __call__(
        self,
        params: Params,
        inputs: jax.Array,
        prev_state: Any,
        is_reset: Any = None,
        is_training: bool = True,
    ) -> tuple[tuple[jax.Array, Any], Params]:
        """One step through every layer (unidirectional stacks only).

        Raises:
            ValueError: If the stack is bidirectional (a backward direction
                needs the whole sequence).
        """
        if self.bidirectional:
            raise ValueError(
                f"{_where(self)}: expected a unidirectional stack for one step, got "
                "bidirectional=True. Fix: use apply over the whole sequence."
            )
        if prev_state is None:
            prev_state, params = self.initial_state(params, inputs)
        states = self._unstack(prev_state)
        x = inputs
        new_states = []
        for k, (cell, state) in enumerate(zip(self.cells, states)):
            if k and self.drop is not None:
                x, params = self.drop(params, x, is_training=is_training)
            (x, state), params = cell(params, x, state, is_reset, is_training)
            new_states.append(state)
        return (x, _stack_states(new_states)), params

    def apply(
        self,
        params: Params,
        inputs: jax.Array,
        prev_state: Any = None,
        is_reset: Any = None,
        is_training: bool = True,
        *,
        time_major: bool = False,
        seq_lengths: Any = None,
    ) -> tuple[tuple[jax.Array, Any], Params]:
        """Runs every layer over the sequence: `((outputs, state), params)`.

        Args:
            params: The container.
            inputs: `(batch, time, in)` (`(time, batch, in)` when `time_major`).
            prev_state: `None` (zeros) or the stacked state.
            is_reset: `None` or `(batch, time)` booleans (`(time, batch)`
                time-major), applied to every cell in its processing order.
            is_training: Dropout between layers runs only in training.
            time_major: Time is the leading axis of inputs, resets and outputs.
            seq_lengths: `None` or `(batch,)` lengths (see `RNN`).

        Returns:
            `((outputs, state), params)`.

        Raises:
            ValueError: If the inputs are not rank 3 or the state does not fit.
        """
        if jnp.ndim(inputs) != 3:
            layout = "(time, batch, in)" if time_major else "(batch, time, in)"
            raise ValueError(
                f"{_where(self)}: expected inputs {layout}, got shape "
                f"{tuple(jnp.shape(inputs))}. Fix: add the missing batch or time axis."
            )
        xs = inputs if time_major else jnp.swapaxes(inputs, 0, 1)
        resets = None
        if is_reset is not None:
            resets = jnp.asarray(is_reset)
            resets = resets if time_major else jnp.swapaxes(resets, 0, 1)
        if prev_state is None:
            prev_state, params = self.initial_state(params, xs[0])
        states = self._unstack(prev_state)
        new_states = []
        for layer in range(self.num_layers):
            if layer and self.drop is not None:
                xs, params = self.drop(params, xs, is_training=is_training)
            outs = []
            for d in range(self.num_directions):
                k = layer * self.num_directions + d
                cell = self.cells[k]
                (out, state), params = scan_cell(
                    cell,
                    params,
                    xs,
                    states[k],
                    is_reset=resets,
                    is_training=is_training,
                    seq_lengths=seq_lengths,
                    reverse=d == 1,
                    keep_order=True,
                    unroll=cell.unroll,
                    is_static=cell.is_static,
                )
                outs.append(out)
                new_states.append(state)
            xs = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=-1)
        outputs = xs if time_major else jnp.swapaxes(xs, 0, 1)
        return (outputs, _stack_states(new_states)), params


def _stack_states(states: list[Any]) -> Any:
    return jax.tree.map(lambda *xs: jnp.stack(xs, axis=0), *states)
