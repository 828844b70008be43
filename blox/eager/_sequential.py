"""Eager `Sequential`: eager modules and plain functions applied in order."""

import numbers
from collections.abc import Callable
from typing import Any

from ._module import Module


class Sequential(Module):
    """Applies its layers in order; modules are named by index as in PyTorch.

    Args:
        *layers: Eager modules and plain callables such as `jax.nn.relu`.
        splat: Pass a tuple output to the next layer as positional arguments
            and a dict as keyword arguments, as flax does; by default each
            output is one argument, as in PyTorch and `blox.core.Sequential`.

    Raises:
        TypeError: If a layer is not callable.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from blox import eager as nn
        >>> mlp = nn.Sequential(nn.Linear(3, 8), jax.nn.relu, nn.Linear(8, 2))
        >>> mlp(jnp.ones((4, 3))).shape, list(mlp.state_dict())[:2]
        ((4, 2), ['0.kernel', '0.bias'])
        >>> mlp[0].kernel.shape, len(mlp)
        ((3, 8), 3)
    """

    def __init__(self, *layers: Module | Callable[[Any], Any], splat: bool = False) -> None:
        super().__init__()
        self.splat = bool(splat)
        functions = []
        for i, layer in enumerate(layers):
            if isinstance(layer, Module):
                setattr(self, str(i), layer)
            elif callable(layer):
                functions.append((i, layer))
            else:
                raise TypeError(
                    f"nn.Sequential: expected eager modules or callables, got "
                    f"{type(layer).__name__} at position {i}. Fix: remove it or wrap it "
                    "in a function."
                )
        # Each position holds a module's attribute name or the function itself.
        fns = dict(functions)
        self._blox_order = tuple(fns.get(i, str(i)) for i in range(len(layers)))

    def __getitem__(self, index: int | slice) -> Any:
        """The layer at `index`; a slice gives a `Sequential` of the same objects.

        Raises:
            TypeError: If `index` is neither an int nor a slice.
            IndexError: If `index` is out of range.

        Example:
            >>> import jax
            >>> from blox import eager as nn
            >>> mlp = nn.Sequential(nn.Linear(3, 8), jax.nn.relu, nn.Linear(8, 2))
            >>> mlp[-1].kernel.shape, len(mlp[:2]), mlp[:2][0] is mlp[0]
            ((8, 2), 2, True)
        """
        if isinstance(index, slice):
            return Sequential(*(self[i] for i in range(len(self))[index]), splat=self.splat)
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            raise TypeError(
                f"nn.Sequential: expected an int or a slice index, got "
                f"{type(index).__name__}. Fix: use seq[i] or seq[start:stop]."
            )
        index = int(index)
        n = len(self)
        if not -n <= index < n:
            raise IndexError(
                f"nn.Sequential: expected an index in [-{n}, {n}), got {index}. "
                "Fix: use a valid position."
            )
        layer = self._blox_order[index]
        return self.__dict__[layer] if isinstance(layer, str) else layer

    def __len__(self) -> int:
        return len(self._blox_order)

    def __call__(self, x: Any) -> Any:
        """Runs the layers in order.

        With `splat=True` a tuple output is passed to the next layer as
        positional arguments and a dict as keyword arguments (flax's rule).

        Example:
            >>> import jax.numpy as jnp
            >>> from blox import eager as nn
            >>> halves = nn.Sequential(
            ...     lambda x: (x[:2], x[2:]), lambda a, b: a - b, splat=True)
            >>> halves(jnp.array([5.0, 7.0, 1.0, 2.0])).tolist()
            [4.0, 5.0]
        """
        d = self.__dict__
        splat = d["splat"]
        for i, layer in enumerate(self._blox_order):
            fn = d[layer] if isinstance(layer, str) else layer
            if i and splat and isinstance(x, tuple):
                x = fn(*x)
            elif i and splat and isinstance(x, dict):
                x = fn(**x)
            else:
                x = fn(x)
        return x

    def __repr__(self) -> str:
        lines = ["Sequential("]
        for i in range(len(self)):
            layer = self[i]
            shown = (
                repr(layer)
                if isinstance(layer, Module)
                else getattr(layer, "__name__", repr(layer))
            )
            lines.append(f"  ({i}): " + shown.replace("\n", "\n  "))
        lines.append(")")
        return "\n".join(lines)
