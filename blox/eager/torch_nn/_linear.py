"""`Identity`, `Flatten`, `Unflatten`, `Linear` and `Bilinear` with PyTorch's names."""

import math
from typing import Any

import jax.numpy as jnp
from jaxtyping import Array, Float

from blox import core
from blox.core.internal import Bilinear as _CoreBilinear

from .._seed import example_zeros
from .._typecheck import typecheck
from ._layout import LinearWeight, Name, Same, Uniform
from ._module import Module
from ._shell import Shell, check_device


class Identity(Module):
    """Returns its input; takes (and ignores) any arguments, as PyTorch's does.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager import torch_nn as nn
        >>> nn.Identity(54, unused='x')(jnp.ones(3)).shape
        (3,)
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, x: Any) -> Any:
        """Returns `x`."""
        return x


class Flatten(Module):
    """Flattens dims `start_dim..end_dim` into one (default: all but the batch dim).

    Args:
        start_dim: First dim to flatten.
        end_dim: Last dim to flatten.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager import torch_nn as nn
        >>> nn.Flatten()(jnp.ones((2, 3, 4, 5))).shape
        (2, 60)
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, x: Array) -> Array:
        """Flattens `x`."""
        return flatten(x, self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


def flatten(x: Array, start_dim: int = 0, end_dim: int = -1) -> Array:
    """`torch.flatten`: merges dims `start_dim..end_dim` of `x`.

    Raises:
        ValueError: If the dims are out of range or in the wrong order.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> F.flatten(jnp.ones((2, 3, 4)), 1).shape
        (2, 12)
    """
    ndim = max(jnp.ndim(x), 1)
    start, end = start_dim % ndim, end_dim % ndim
    if not -ndim <= start_dim < ndim or not -ndim <= end_dim < ndim or start > end:
        raise ValueError(
            f"flatten: expected start_dim <= end_dim within the {ndim} dims of the "
            f"input, got start_dim={start_dim}, end_dim={end_dim}. Fix: pass dims "
            "of the input, start first."
        )
    shape = jnp.shape(x)
    return jnp.reshape(x, shape[:start] + (math.prod(shape[start : end + 1]),) + shape[end + 1 :])


class Unflatten(Module):
    """Splits dim `dim` into `unflattened_size`.

    Args:
        dim: The dim to split.
        unflattened_size: Its new shape (one entry may be -1).

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager import torch_nn as nn
        >>> nn.Unflatten(1, (2, 5))(jnp.ones((3, 10))).shape
        (3, 2, 5)
    """

    def __init__(self, dim: int, unflattened_size: tuple[int, ...]) -> None:
        super().__init__()
        self.dim = dim
        self.unflattened_size = tuple(unflattened_size)

    def forward(self, x: Array) -> Array:
        """Reshapes `x`."""
        shape = jnp.shape(x)
        d = self.dim % len(shape)
        return jnp.reshape(x, shape[:d] + self.unflattened_size + shape[d + 1 :])

    def extra_repr(self) -> str:
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"


class Linear(Shell):
    """`y = x @ weight.T + bias`, with PyTorch's `weight` `(out_features, in_features)`.

    Initialised as PyTorch does: weight and bias `U(-1/sqrt(in), 1/sqrt(in))`.
    The numerics are `blox.core.Linear`'s (its kernel is `weight.T`).

    Args:
        in_features: Size of the last input axis.
        out_features: Size of the last output axis.
        bias: Learn `bias` `(out_features,)`.
        device: Only `None` (JAX places arrays).
        dtype: Storage dtype of the parameters (default float32).
        seed: Int or key for this layer's init; default: the global stream.

    Shapes:
        `(*batch, in_features)` -> `(*batch, out_features)`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager import torch_nn as nn
        >>> fc = nn.Linear(3, 4)
        >>> fc(jnp.ones((2, 3))).shape, fc.weight.shape, fc.bias.shape
        ((2, 4), (4, 3), (4,))
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
        *,
        seed: Any = None,
    ) -> None:
        super().__init__()
        where = f"nn.Linear({in_features}, {out_features})"
        check_device(where, device)
        self.in_features = in_features
        self.out_features = out_features
        init = Uniform(1 / math.sqrt(in_features) if in_features else 0.0)
        options = {"use_bias": bool(bias), "kernel_init": init, "bias_init": init}
        names = (Name("weight", "kernel", LinearWeight()), Name("bias", "bias"))
        self._adopt(
            where,
            core.Linear,
            (out_features,),
            options,
            names[: 2 if bias else 1],
            (example_zeros((1, in_features), jnp.float32),),
            seed=seed,
            dtype=dtype,
        )

    @typecheck
    def forward(
        self, x: Float[Array, "*batch {self.in_features}"]
    ) -> Float[Array, "*batch {self.out_features}"]:
        """Applies the layer."""
        return self.call_core(self.core_layer, x)

    def extra_repr(self) -> str:
        has_bias = "bias" in self.__dict__
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={has_bias}"


class Bilinear(Shell):
    """`y = x1 @ weight @ x2 + bias`, `weight` `(out_features, in1_features, in2_features)`.

    Initialised as PyTorch does: `U(-1/sqrt(in1), 1/sqrt(in1))`. The numerics
    are `blox.core`'s `Bilinear`.

    Args:
        in1_features: Size of the first input's last axis.
        in2_features: Size of the second input's last axis.
        out_features: Size of the output's last axis.
        bias: Learn `bias` `(out_features,)`.
        device: Only `None`.
        dtype: Storage dtype of the parameters.
        seed: Int or key for this layer's init.

    Shapes:
        `(*batch, in1)`, `(*batch, in2)` -> `(*batch, out)`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager import torch_nn as nn
        >>> bil = nn.Bilinear(3, 5, 4)
        >>> bil(jnp.ones((2, 3)), jnp.ones((2, 5))).shape, bil.weight.shape
        ((2, 4), (4, 3, 5))
    """

    def __init__(
        self,
        in1_features: int,
        in2_features: int,
        out_features: int,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
        *,
        seed: Any = None,
    ) -> None:
        super().__init__()
        where = f"nn.Bilinear({in1_features}, {in2_features}, {out_features})"
        check_device(where, device)
        self.in1_features = in1_features
        self.in2_features = in2_features
        self.out_features = out_features
        init = Uniform(1 / math.sqrt(in1_features) if in1_features else 0.0)
        options = {"use_bias": bool(bias), "kernel_init": init, "bias_init": init}
        names = (Name("weight", "kernel", _BilinearWeight()), Name("bias", "bias", Same()))
        example = (
            example_zeros((1, in1_features), jnp.float32),
            example_zeros((1, in2_features), jnp.float32),
        )
        self._adopt(
            where,
            _CoreBilinear,
            (out_features,),
            options,
            names[: 2 if bias else 1],
            example,
            seed=seed,
            dtype=dtype,
        )

    @typecheck
    def forward(
        self,
        input1: Float[Array, "*batch {self.in1_features}"],
        input2: Float[Array, "*batch {self.in2_features}"],
    ) -> Float[Array, "*batch {self.out_features}"]:
        """Applies the bilinear form."""
        return self.call_core(self.core_layer, input1, input2)

    def extra_repr(self) -> str:
        return (
            f"in1_features={self.in1_features}, in2_features={self.in2_features}, "
            f"out_features={self.out_features}, bias={'bias' in self.__dict__}"
        )


class _BilinearWeight:
    """PyTorch `(out, in1, in2)` <-> core `(in1, in2, out)`."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _BilinearWeight)

    def __hash__(self) -> int:
        return hash(_BilinearWeight)

    def to_core(self, value: Array) -> Array:
        return jnp.moveaxis(value, 0, -1)

    def from_core(self, value: Array) -> Array:
        return jnp.moveaxis(value, -1, 0)
