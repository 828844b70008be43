"""Eager `Parallel`, `BatchApply`, `Lambda` and `EMA`: the core combinators as objects.

`Parallel` and `BatchApply` hold eager layers as children (named by index, as
in `Sequential`) and hand them to the core combinator as plain callables, so
the children keep updating their own state. `Lambda` and `EMA` own state
(an RNG, the averages) and are `CoreModule`s like every other layer.
"""

from collections.abc import Callable
from typing import Any

from blox import core

from ._core_module import CoreModule
from ._module import Module
from ._seed import build_core, init_params


def _children(owner: Module, where: str, layers: tuple) -> list[Any]:
    for i, layer in enumerate(layers):
        if isinstance(layer, Module):
            setattr(owner, str(i), layer)
        elif not callable(layer):
            raise TypeError(
                f"{where}: expected eager modules or callables, got "
                f"{type(layer).__name__} at position {i}. Fix: remove it or wrap it "
                "in a function."
            )
    return list(layers)


class Parallel(Module):
    """Applies layer `i` to item `i` of a sequence of inputs; returns the list (mlax's).

    Args:
        *layers: Eager modules and plain callables, one per input item.

    Raises:
        TypeError: If a layer is not callable.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> par = nn.Parallel(nn.Linear(3, 2), nn.Identity())
        >>> a, b = par((jnp.ones(3), jnp.zeros(4)))
        >>> a.shape, b.shape
        ((2,), (4,))
    """

    def __init__(self, *layers: Module | Callable[..., Any]) -> None:
        super().__init__()
        fns = _children(self, "nn.Parallel", layers)
        self._blox_order = tuple(str(i) if isinstance(f, Module) else f for i, f in enumerate(fns))

    def __call__(self, inputs: Any) -> list[Any]:
        """Returns `[layer_i(inputs[i]) for i]`."""
        # The children are looked up at each call: under blox's transforms the
        # object may be a rebuilt copy, as in `Sequential`.
        d = self.__dict__
        layers = [d[f] if isinstance(f, str) else f for f in self._blox_order]
        combinator = core.Parallel(core.Graph("blox") / "layer", layers)
        return combinator(core.Params(), inputs)[0]


class BatchApply(Module):
    """Merges the leading `num_dims` axes, applies `layer`, splits them back (flax's).

    Args:
        layer: An eager module or a plain callable.
        num_dims: How many leading axes to merge.

    Raises:
        TypeError: If `layer` is not callable.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> nn.BatchApply(nn.Linear(3, 4))(jnp.ones((5, 2, 3))).shape
        (5, 2, 4)
    """

    def __init__(self, layer: Module | Callable[..., Any], *, num_dims: int = 2) -> None:
        super().__init__()
        (fn,) = _children(self, "nn.BatchApply", (layer,))
        self.num_dims = num_dims
        self._blox_name = "0" if isinstance(fn, Module) else fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Applies the layer to the inputs with their leading axes merged."""
        name = self._blox_name
        fn = self.__dict__[name] if isinstance(name, str) else name
        combinator = core.BatchApply(core.Graph("blox") / "layer", fn, self.num_dims)
        return combinator(core.Params(), *args, **kwargs)[0]


class Lambda(CoreModule):
    """A function as a layer, with an optional key and an evaluation function.

    PAX's `Lambda`, mlax's `F`/`FRng`: `fn` runs in training mode, `eval_fn`
    (default `fn`) in eval mode; with `needs_rng=True` each call draws a key
    from the layer's RNG buffers and passes it last, `fn(x, key)`.

    Args:
        fn: The training-mode function.
        eval_fn: The evaluation-mode function.
        needs_rng: Give the functions a fresh key per call.
        seed: Int or key for the RNG; default: the global stream.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from blox import eager as nn
        >>> relu = nn.Lambda(jax.nn.relu)
        >>> relu(jnp.array([-1.0, 2.0])).tolist()
        [0.0, 2.0]
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        eval_fn: Callable[..., Any] | None = None,
        *,
        needs_rng: bool = False,
        seed: Any = None,
    ) -> None:
        super().__init__()
        where = f"nn.Lambda({getattr(fn, '__name__', type(fn).__name__)})"
        if needs_rng:
            layer, rng = build_core(where, core.Lambda, (fn,), {"eval_fn": eval_fn})
            params = init_params(where, rng, seed, lambda p: p)
        else:
            layer = core.Lambda(core.Graph("blox") / "layer", fn, eval_fn)
            params = core.Params()
        self.adopt_core(layer, params, keep=lambda path: True)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Calls `fn` (or `eval_fn` in eval mode)."""
        return self.call_core(self.core_layer, *args, is_training=self.training, **kwargs)


class EMA(CoreModule):
    """An exponential moving average of a pytree, kept as buffers (PAX's `EMA`).

    Args:
        initial_value: Pytree of the starting averages (fixes the structure).
        decay_rate: Weight of the old average.
        debias: Take the first value as is.
        allow_int: Keep integer leaves at their newest value.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> ema = nn.EMA(jnp.zeros(2), 0.5)
        >>> ema(jnp.ones(2)).tolist(), ema(jnp.ones(2)).tolist()
        ([0.5, 0.5], [0.75, 0.75])
    """

    def __init__(
        self,
        initial_value: Any,
        decay_rate: float,
        *,
        debias: bool = False,
        allow_int: bool = False,
    ) -> None:
        super().__init__()
        layer = core.EMA(core.Graph("blox") / "layer", decay_rate, debias, allow_int, initial_value)
        _, params = layer(core.Params(), initial_value, is_training=False)
        self.adopt_core(layer, params, keep=lambda path: True)

    def __call__(self, xs: Any) -> Any:
        """Updates the averages with `xs` in training mode and returns them."""
        return self.call_core(self.core_layer, xs, is_training=self.training)
