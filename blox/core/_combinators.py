"""Combinators: `Parallel`, `BatchApply`, `Lambda` (a function as a layer) and `EMA`.

They wrap other layers or functions and hold no numerics of their own beyond
reshapes (`BatchApply`) and one running average (`EMA`). A wrapped item may be
a blox `Module` (called as `layer(params, *args)`) or a plain callable (called
as `fn(*args)`), as in `Sequential`. `is_training`, when given, reaches every
wrapped module whose call takes it.
"""

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._graph import Graph
from ._module import Module, _where
from ._params import Params
from ._sequential import _call_layer, _check_layers


class Parallel(Module):
    """Applies layer `i` to item `i` of a sequence of inputs (mlax's `Parallel`).

    Returns the list of outputs. With `Identity` as one of the layers it is the
    branch point of a residual block; mlax's `ParallelRng` is the same class
    (layers that need keys carry their own `Rng`).

    Args:
        graph: This module's node.
        layers: Blox modules and plain callables, one per input item.

    Raises:
        TypeError: If a layer is not callable.
        ValueError: If the inputs do not have one item per layer.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import blox as bx
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> par = bx.Parallel(g / 'par', [bx.Linear(g / 'l', 2, rng=rng), jnp.tanh])
        >>> (a, b), params = par(rng.seed(bx.Params(), seed=0), (jnp.ones(3), jnp.zeros(4)))
        >>> a.shape, b.tolist()
        ((2,), [0.0, 0.0, 0.0, 0.0])
    """

    def __init__(self, graph: Graph, layers: Sequence[Module | Callable[..., Any]]) -> None:
        super().__init__(graph)
        self.layers = _check_layers(self, layers)

    def __call__(
        self, params: Params, inputs: Sequence[Any], is_training: bool | None = None
    ) -> tuple[list[Any], Params]:
        """Returns `[layer_i(inputs[i]) for i]`."""
        if not isinstance(inputs, Sequence) or len(inputs) != len(self.layers):
            got = len(inputs) if isinstance(inputs, Sequence) else type(inputs).__name__
            raise ValueError(
                f"{_where(self)}: expected a sequence of {len(self.layers)} inputs, one "
                f"per layer, got {got}. Fix: pass a tuple or list with an item for "
                "each layer."
            )
        outputs = []
        for layer, item in zip(self.layers, inputs, strict=True):
            out, params = _call_layer(layer, params, (item,), {}, is_training)
            outputs.append(out)
        return outputs, params


def _mergeable(x: Any, num_dims: int) -> bool:
    return isinstance(x, jax.Array | np.ndarray) and x.ndim >= num_dims


class BatchApply(Module):
    """Merges the leading `num_dims` axes of the inputs, applies `layer`, splits them back.

    flax's `BatchApply`: array leaves of rank >= `num_dims` (in args and
    kwargs) have their leading axes merged into one; the others pass
    unchanged. Every array leaf of the output gets its leading axis split back
    into the leading shape of the first mergeable input. Useful to apply a
    layer to each step of a `(time, batch, ...)` array.

    Args:
        graph: This module's node.
        layer: A blox module or a plain callable.
        num_dims: How many leading axes to merge.

    Raises:
        TypeError: If `layer` is not callable.
        ValueError: If no input has rank >= `num_dims`.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> per_step = bx.BatchApply(g / 'ba', bx.Linear(g / 'lin', 4, rng=rng))
        >>> y, params = per_step(rng.seed(bx.Params(), seed=0), jnp.ones((5, 2, 3)))
        >>> y.shape
        (5, 2, 4)
    """

    def __init__(self, graph: Graph, layer: Module | Callable[..., Any], num_dims: int = 2) -> None:
        super().__init__(graph)
        (self.layer,) = _check_layers(self, [layer])
        self.num_dims = num_dims

    def __call__(
        self, params: Params, *args: Any, is_training: bool | None = None, **kwargs: Any
    ) -> tuple[Any, Params]:
        """Applies `layer` to the inputs with their leading axes merged."""
        n = self.num_dims
        leaves = jax.tree.leaves((args, kwargs))
        example = next((x for x in leaves if _mergeable(x, n)), None)
        if example is None:
            raise ValueError(
                f"{_where(self)}: expected at least one input array of rank >= {n}, "
                f"got ranks {[jnp.ndim(x) for x in leaves]}. Fix: pass batched "
                "inputs, or lower num_dims."
            )
        lead = example.shape[:n]

        def merge(x: Any) -> Any:
            return x.reshape((-1,) + x.shape[n:]) if _mergeable(x, n) else x

        def split(x: Any) -> Any:
            return x.reshape(lead + x.shape[1:]) if _mergeable(x, 1) else x

        args, kwargs = jax.tree.map(merge, (args, kwargs))
        outputs, params = _call_layer(self.layer, params, args, kwargs, is_training)
        return jax.tree.map(split, outputs), params


class Lambda(Module):
    """A function as a layer, with an optional key and a separate evaluation function.

    PAX's `Lambda(func)`, mlax's `F(train_fn, infer_fn)` and
    `FRng(train_fn, infer_fn)` in one: `fn` runs in training, `eval_fn` (if
    given, else `fn`) with `is_training=False`. With `rng`, each call draws one
    key and passes it as the last positional argument, `fn(*args, key)`
    (mlax's `FRng` signature `fn(x, rng)`), in both modes.

    Args:
        graph: This module's node.
        fn: The training-mode function.
        eval_fn: The evaluation-mode function (default: `fn`).
        rng: `Rng` to draw a key from per call; `None` draws none.

    Raises:
        TypeError: If `fn` or `eval_fn` is not callable.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import blox as bx
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> noisy = bx.Lambda(g / 'noise', lambda x, key: x + jax.random.normal(key, x.shape),
        ...                   eval_fn=lambda x, key: x, rng=rng)
        >>> params = rng.seed(bx.Params(), seed=0)
        >>> y, params = noisy(params, jnp.zeros(2), is_training=False)
        >>> y.tolist(), int(rng.get_counter(params))
        ([0.0, 0.0], 1)
    """

    def __init__(
        self,
        graph: Graph,
        fn: Callable[..., Any],
        eval_fn: Callable[..., Any] | None = None,
        rng: Any = None,
    ) -> None:
        super().__init__(graph)
        for name, value in (("fn", fn), ("eval_fn", eval_fn)):
            if value is not None and not callable(value):
                raise TypeError(
                    f"{_where(self)}: expected {name} to be callable, got "
                    f"{type(value).__name__}. Fix: pass a function."
                )
        self.fn = fn
        self.eval_fn = eval_fn
        self.rng = rng

    def __call__(
        self, params: Params, *args: Any, is_training: bool = True, **kwargs: Any
    ) -> tuple[Any, Params]:
        """`fn(*args, **kwargs)` (or `eval_fn`), with a key last when `rng` is set."""
        fn = self.fn if is_training or self.eval_fn is None else self.eval_fn
        if self.rng is not None:
            key, params = self.rng(params)
            args = (*args, key)
        return fn(*args, **kwargs), params


class EMA(Module):
    """An exponential moving average of a pytree, kept as state (PAX's `EMA`).

    Each training call updates
    `average = decay_rate * average + (1 - decay_rate) * x` leaf by leaf and
    returns the new averages; with `is_training=False` the averages are
    returned unchanged. The averages start at `initial_value` (default: zeros
    like the first input). With `debias`, the first update ignores the
    initial value and takes `x` itself (PAX's debiasing: no bias towards the
    initial value); a boolean `debias` flag records whether it happened.
    Integer leaves are refused unless `allow_int`, which replaces them by the
    newest value. The state is non-trainable params named `average` plus the
    leaf's key path (`average[0]`, `average['w']`, or `average` for one array).

    Args:
        graph: This module's node.
        decay_rate: Weight of the old average, in [0, 1].
        debias: Take the first value as is.
        allow_int: Accept integer leaves (kept at their newest value).
        initial_value: Pytree of the starting averages.

    Raises:
        ValueError: If `decay_rate` is outside [0, 1].
        TypeError: If a leaf is an integer array and `allow_int` is false.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> ema = bx.EMA(bx.Graph('net') / 'ema', 0.9, debias=True)
        >>> avg, params = ema(bx.Params(), {'w': jnp.array(10.0)})
        >>> avg, params = ema(params, {'w': jnp.array(0.0)})
        >>> round(float(avg['w']), 4)
        9.0
    """

    def __init__(
        self,
        graph: Graph,
        decay_rate: float,
        debias: bool = False,
        allow_int: bool = False,
        initial_value: Any = None,
    ) -> None:
        super().__init__(graph)
        if not 0.0 <= decay_rate <= 1.0:
            raise ValueError(
                f"{_where(self)}: expected decay_rate in [0, 1], got {decay_rate}. "
                "Fix: use e.g. 0.999 (the weight kept from the old average)."
            )
        self.decay_rate = decay_rate
        self.debias = debias
        self.allow_int = allow_int
        self.initial_value = initial_value

    def __call__(self, params: Params, xs: Any, is_training: bool = True) -> tuple[Any, Params]:
        """Updates the averages with `xs` (when training) and returns them."""
        flat, treedef = jax.tree_util.tree_flatten_with_path(xs)
        starts = (
            [None] * len(flat)
            if self.initial_value is None
            else jax.tree.leaves(self.initial_value)
        )
        seen = None
        if self.debias:
            seen, params = self.get_param(
                params, "debias", (), lambda k, s, d: jnp.zeros(s, bool), trainable=False
            )
        averages = []
        for (path, x), start in zip(flat, starts, strict=True):
            x = jnp.asarray(x)
            is_int = not jnp.issubdtype(x.dtype, jnp.inexact)
            if is_int and not self.allow_int:
                raise TypeError(
                    f"{_where(self)}: expected floating leaves, got {x.dtype} at "
                    f"{jax.tree_util.keystr(path) or 'the root'}. Fix: pass "
                    "allow_int=True to keep integer leaves at their newest value."
                )
            name = "average" + jax.tree_util.keystr(path)

            def init(key: Any, shape: tuple[int, ...], dtype: Any, start=start, x=x) -> Any:
                return jnp.zeros_like(x) if start is None else jnp.asarray(start, x.dtype)

            average, params = self.get_param(
                params, name, x.shape, init, dtype=x.dtype, trainable=False
            )
            if is_training:
                if is_int:
                    average = x
                else:
                    d = self.decay_rate
                    average = d * average + (1 - d) * jax.lax.stop_gradient(x)
                    if seen is not None:
                        average = jnp.where(seen, average, jax.lax.stop_gradient(x))
                params = self.set_param(params, name, average.astype(x.dtype))
            averages.append(average)
        if is_training and seen is not None:
            params = self.set_param(params, "debias", jnp.ones((), bool))
        return jax.tree.unflatten(treedef, averages), params
