"""Eager `Linear`, `DenseGeneral`, `Einsum`, `Bias`, `Scaler`, `Identity`: build the core layers and call them."""

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Num

from blox import core

from ._core_module import CoreModule
from ._module import Module
from ._seed import build_core, check_sizes, example_zeros, init_params
from ._typecheck import typecheck


class Linear(CoreModule):
    """`y = x @ kernel + bias`, with `kernel` `(in_features, out_features)`.

    Args:
        in_features: Size of the last input axis.
        out_features: Size of the last output axis.
        use_bias: Add `bias` `(out_features,)`.
        seed: Int or key for this layer's init; default: the global stream.
        **options: Other `blox.core.Linear` options (`kernel_init`,
            `bias_init`, `kernel_metadata`, `bias_metadata`).

    Shapes:
        `(*batch, in_features)` -> `(*batch, out_features)`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> lin = nn.Linear(3, 4)
        >>> lin(jnp.ones((2, 3))).shape, lin.kernel.shape, lin.bias.shape
        ((2, 4), (3, 4), (4,))
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_bias: bool = True,
        seed: Any = None,
        **options: Any,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        options = {"use_bias": use_bias, **options}
        self.options = tuple(sorted(options.items(), key=lambda kv: kv[0]))
        where = f"nn.Linear({in_features}, {out_features})"
        check_sizes(where, in_features=in_features, out_features=out_features)
        layer, rng = build_core(where, core.Linear, (out_features,), options)
        params = init_params(
            where,
            rng,
            seed,
            lambda p: layer(p, example_zeros((1, in_features), jnp.float32))[1],
            signature=(layer, in_features),
        )
        self.adopt_core(layer, params, keep=lambda path: path[1] != "rng")

    @typecheck
    def __call__(
        self, x: Float[Array, "*batch {self.in_features}"], *, precision: Any = None
    ) -> Float[Array, "*batch {self.out_features}"]:
        """Applies the layer; `precision` is passed to the matmul."""
        return self.call_core(self.core_layer, x, precision=precision)

    def extra_repr(self) -> str:
        # Like PyTorch, only a non-default use_bias is shown; inits are functions.
        shown = "".join(
            f", {k}={v!r}"
            for k, v in self.options
            if not k.endswith("_init") and not (k == "use_bias" and v)
        )
        return f"in_features={self.in_features}, out_features={self.out_features}{shown}"


def _example(sizes: dict[int, int]) -> jax.Array:
    """A zero input with `sizes[axis]` at each given axis (negative ones count from the end)."""
    rank = max([len(sizes)] + [a + 1 for a in sizes if a >= 0] + [-a for a in sizes if a < 0])
    shape = [1] * rank
    for axis, size in sizes.items():
        shape[axis] = size
    return example_zeros(tuple(shape))


class _Built(CoreModule):
    """An eager shell whose params come from one core call on an example input."""

    def _build(self, where: str, cls: Any, args: tuple, options: dict, x: jax.Array, seed: Any):
        self.options = tuple(sorted(options.items(), key=lambda kv: kv[0]))
        layer, rng = build_core(where, cls, args, options)
        params = init_params(
            where, rng, seed, lambda p: layer(p, x)[1], signature=(layer, tuple(x.shape))
        )
        self.adopt_core(layer, params, keep=lambda path: path[1] != "rng")


class DenseGeneral(_Built):
    """A linear map over several axes to several output axes (flax's `DenseGeneral`).

    Args:
        in_features: Sizes of the contracted input `axis` (an int or a tuple).
        features: Output sizes (an int or a tuple).
        axis: The contracted input axes.
        seed: Int or key for this layer's init.
        **options: Other `blox.core.DenseGeneral` options (`use_bias`, inits,
            `dtype`, `param_dtype`, `precision`, metadata); `batch_dims`
            needs the batch sizes, so use the core layer for it.

    Raises:
        TypeError: If `batch_dims` is given.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> dense = nn.DenseGeneral((3, 4), (2, 5), axis=(-2, -1))
        >>> dense(jnp.ones((6, 3, 4))).shape, dense.kernel.shape
        ((6, 2, 5), (3, 4, 2, 5))
    """

    def __init__(
        self,
        in_features: int | tuple[int, ...],
        features: int | tuple[int, ...],
        *,
        axis: int | tuple[int, ...] = -1,
        seed: Any = None,
        **options: Any,
    ) -> None:
        super().__init__()
        where = f"nn.DenseGeneral({in_features}, {features})"
        if "batch_dims" in options:
            raise TypeError(
                f"{where}: expected no batch_dims in the eager layer (its kernel needs "
                "the batch sizes), got batch_dims. Fix: use blox.core.DenseGeneral."
            )
        sizes = (in_features,) if isinstance(in_features, int) else tuple(in_features)
        axes = (axis,) if isinstance(axis, int) else tuple(axis)
        if len(sizes) != len(axes):
            raise ValueError(
                f"{where}: expected one size per contracted axis {axes}, got "
                f"{len(sizes)} sizes. Fix: give in_features for each axis."
            )
        self.in_features, self.features = in_features, features
        x = _example(dict(zip(axes, sizes, strict=True)))
        self._build(where, core.DenseGeneral, (features,), {"axis": axis, **options}, x, seed)

    @typecheck
    def __call__(self, x: Num[Array, "*shape"]) -> Float[Array, "*out"]:
        """Contracts `x` over `axis`."""
        return self.call_core(self.core_layer, x)


class Einsum(_Built):
    """`einsum(einsum_str, x, kernel) + bias` with a learned kernel of `shape` (flax's `Einsum`).

    Args:
        shape: The kernel's shape.
        einsum_str: The two-operand equation, e.g. `'...c,cd->...d'`.
        seed: Int or key for this layer's init.
        **options: Other `blox.core.Einsum` options.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> ein = nn.Einsum((4, 3), '...c,cd->...d')
        >>> ein(jnp.ones((2, 4))).shape, ein.bias.shape
        ((2, 3), (3,))
    """

    def __init__(
        self, shape: tuple[int, ...], einsum_str: str, *, seed: Any = None, **options: Any
    ) -> None:
        super().__init__()
        where = f"nn.Einsum({tuple(shape)}, {einsum_str!r})"
        self.shape, self.einsum_str = tuple(shape), einsum_str
        operands = einsum_str.replace(" ", "").split("->")[0].split(",")
        if len(operands) != 2:
            raise ValueError(
                f"{where}: expected a two-operand equation 'input,kernel->output', got "
                f"{einsum_str!r}. Fix: write it like 'abc,cde->abde'."
            )
        lhs, rhs = operands
        sizes = dict(zip(rhs, self.shape, strict=False))
        x = example_zeros(tuple(sizes.get(c, 1) for c in lhs.replace("...", "")))
        self._build(where, core.Einsum, (self.shape, einsum_str), options, x, seed)

    @typecheck
    def __call__(self, x: Num[Array, "*shape"]) -> Float[Array, "*out"]:
        """Applies the einsum."""
        return self.call_core(self.core_layer, x)


class Bias(_Built):
    """Adds a learned `bias` of the trailing shape `in_features` (mlax's `Bias`).

    Args:
        in_features: Trailing shape, an int or a tuple (`None`: shared axis).
        seed: Int or key for this layer's init.
        **options: Other `blox.core.Bias` options.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> nn.Bias(3)(jnp.ones((2, 3))).tolist()
        [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    """

    _cls = core.Bias

    def __init__(self, in_features: Any, *, seed: Any = None, **options: Any) -> None:
        super().__init__()
        self.in_features = in_features
        where = f"nn.{type(self).__name__}({in_features!r})"
        sizes = (in_features,) if isinstance(in_features, int) else tuple(in_features)
        x = example_zeros(tuple(1 if s is None else s for s in sizes))
        self._build(where, self._cls, (in_features,), options, x, seed)

    @typecheck
    def __call__(self, x: Num[Array, "*shape"]) -> Float[Array, "*out"]:
        """Combines `x` with the learned array."""
        return self.call_core(self.core_layer, x)


class Scaler(Bias):
    """Multiplies by a learned `scale` of the trailing shape `in_features` (mlax's `Scaler`).

    Args:
        in_features: Trailing shape, an int or a tuple (`None`: shared axis).
        seed: Int or key for this layer's init.
        **options: Other `blox.core.Scaler` options.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> nn.Scaler(2)(jnp.array([3.0, 4.0])).tolist()
        [3.0, 4.0]
    """

    _cls = core.Scaler


class Identity(Module):
    """Returns its input unchanged (PAX's `Identity`; PyTorch's `nn.Identity`).

    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> nn.Identity()(jnp.ones(2)).tolist()
        [1.0, 1.0]
    """

    def __call__(self, x: Any) -> Any:
        """Returns `x`."""
        return x
