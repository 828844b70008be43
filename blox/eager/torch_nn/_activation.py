"""Activation functions (on `jax.nn`) with PyTorch's names and arguments, and their modules."""

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array

from ._module import Module


def _dim(where: str, dim: Any) -> int:
    if dim is None or isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(
            f"{where}: expected dim to be an int (the axis to normalise over), got "
            f"{dim!r}. Fix: pass it explicitly, e.g. dim=-1 (PyTorch's implicit "
            "choice is deprecated)."
        )
    return dim


def relu(input: Array, inplace: bool = False) -> Array:
    """`max(x, 0)` (`inplace` is accepted and ignored: arrays are immutable).

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> F.relu(jnp.array([-1.0, 2.0])).tolist()
        [0.0, 2.0]
    """
    return jax.nn.relu(input)


def relu6(input: Array, inplace: bool = False) -> Array:
    """`min(max(x, 0), 6)`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> F.relu6(jnp.array([-1.0, 8.0])).tolist()
        [0.0, 6.0]
    """
    return jax.nn.relu6(input)


def leaky_relu(input: Array, negative_slope: float = 0.01, inplace: bool = False) -> Array:
    """`x if x >= 0 else negative_slope * x`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> F.leaky_relu(jnp.array([-1.0, 2.0]), 0.5).tolist()
        [-0.5, 2.0]
    """
    return jax.nn.leaky_relu(input, negative_slope)


def elu(input: Array, alpha: float = 1.0, inplace: bool = False) -> Array:
    """`x if x > 0 else alpha * (exp(x) - 1)`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> F.elu(jnp.array([0.0, 2.0])).tolist()
        [0.0, 2.0]
    """
    return jax.nn.elu(input, alpha)


def selu(input: Array, inplace: bool = False) -> Array:
    """Scaled ELU with the self-normalising constants.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> F.selu(jnp.array([0.0])).tolist()
        [0.0]
    """
    return jax.nn.selu(input)


def celu(input: Array, alpha: float = 1.0, inplace: bool = False) -> Array:
    """`max(0, x) + min(0, alpha * (exp(x / alpha) - 1))`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> F.celu(jnp.array([1.0])).tolist()
        [1.0]
    """
    return jax.nn.celu(input, alpha)


def gelu(input: Array, approximate: str = "none") -> Array:
    """GELU, exact (`approximate='none'`) or the tanh approximation (`'tanh'`).

    Raises:
        ValueError: If `approximate` is neither.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> round(float(F.gelu(jnp.array(1.0))), 4)
        0.8413
    """
    if approximate not in ("none", "tanh"):
        raise ValueError(
            f"gelu: expected approximate 'none' or 'tanh', got {approximate!r}. "
            "Fix: use one of those."
        )
    return jax.nn.gelu(input, approximate=approximate == "tanh")


def silu(input: Array, inplace: bool = False) -> Array:
    """`x * sigmoid(x)`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> F.silu(jnp.array([0.0])).tolist()
        [0.0]
    """
    return jax.nn.silu(input)


def mish(input: Array, inplace: bool = False) -> Array:
    """`x * tanh(softplus(x))`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> F.mish(jnp.array([0.0])).tolist()
        [0.0]
    """
    return jax.nn.mish(input)


def hardtanh(
    input: Array, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False
) -> Array:
    """`clip(x, min_val, max_val)`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> F.hardtanh(jnp.array([-3.0, 0.5])).tolist()
        [-1.0, 0.5]
    """
    return jnp.clip(input, min_val, max_val)


def hardsigmoid(input: Array, inplace: bool = False) -> Array:
    """`relu6(x + 3) / 6`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> F.hardsigmoid(jnp.array([0.0])).tolist()
        [0.5]
    """
    return jax.nn.hard_sigmoid(input)


def hardswish(input: Array, inplace: bool = False) -> Array:
    """`x * relu6(x + 3) / 6`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> F.hardswish(jnp.array([0.0])).tolist()
        [0.0]
    """
    return jax.nn.hard_swish(input)


def sigmoid(input: Array) -> Array:
    """`1 / (1 + exp(-x))`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> F.sigmoid(jnp.array([0.0])).tolist()
        [0.5]
    """
    return jax.nn.sigmoid(input)


def logsigmoid(input: Array) -> Array:
    """`log(sigmoid(x))`, computed stably.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> round(float(F.logsigmoid(jnp.array(0.0))), 4)
        -0.6931
    """
    return jax.nn.log_sigmoid(input)


def tanh(input: Array) -> Array:
    """`tanh(x)`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> F.tanh(jnp.array([0.0])).tolist()
        [0.0]
    """
    return jnp.tanh(input)


def softsign(input: Array) -> Array:
    """`x / (1 + |x|)`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> F.softsign(jnp.array([1.0])).tolist()
        [0.5]
    """
    return jax.nn.soft_sign(input)


def softplus(input: Array, beta: float = 1.0, threshold: float = 20.0) -> Array:
    """`log(1 + exp(beta * x)) / beta`, and `x` where `beta * x > threshold`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> round(float(F.softplus(jnp.array(0.0))), 4), float(F.softplus(jnp.array(30.0)))
        (0.6931, 30.0)
    """
    scaled = input * beta
    return jnp.where(scaled > threshold, input, jax.nn.softplus(scaled) / beta)


def softmax(input: Array, dim: int | None = None, dtype: Any = None) -> Array:
    """Softmax over `dim` (required: PyTorch's implicit dim is deprecated).

    Raises:
        TypeError: If `dim` is not an int.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> F.softmax(jnp.zeros((2, 4)), dim=1)[0].tolist()
        [0.25, 0.25, 0.25, 0.25]
    """
    x = input if dtype is None else input.astype(dtype)
    return jax.nn.softmax(x, axis=_dim("softmax", dim))


def log_softmax(input: Array, dim: int | None = None, dtype: Any = None) -> Array:
    """Log-softmax over `dim` (required).

    Raises:
        TypeError: If `dim` is not an int.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> round(float(F.log_softmax(jnp.zeros(2), dim=0)[0]), 4)
        -0.6931
    """
    x = input if dtype is None else input.astype(dtype)
    return jax.nn.log_softmax(x, axis=_dim("log_softmax", dim))


def glu(input: Array, dim: int = -1) -> Array:
    """Gated linear unit: the first half of `dim` times the sigmoid of the second.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> F.glu(jnp.array([2.0, 0.0])).tolist()
        [1.0]
    """
    return jax.nn.glu(input, axis=dim)


class _Activation(Module):
    _fn: Any = None
    _args: tuple[str, ...] = ()

    def forward(self, input: Array) -> Array:
        """Applies the activation."""
        return type(self)._fn(input, **{k: getattr(self, k) for k in self._args})

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={getattr(self, k)!r}" for k in self._args)


def _module(name: str, fn: Any, example: str = "", **defaults: Any) -> type:
    args = tuple(defaults)

    def __init__(self: Any, *values: Any, inplace: bool = False, **given: Any) -> None:
        _Activation.__init__(self)
        if len(values) > len(args):
            raise TypeError(
                f"nn.{name}: expected at most {len(args)} positional arguments "
                f"({', '.join(args) or 'none'}), got {len(values)}. Fix: pass the options "
                "by name."
            )
        unknown = sorted(set(given) - set(args))
        if unknown:
            raise TypeError(
                f"nn.{name}: expected options among {list(args)}, got {unknown}. "
                "Fix: use PyTorch's argument names."
            )
        config = {**defaults, **dict(zip(args, values)), **given}
        for key in args:
            setattr(self, key, config[key])

    doc = (
        f"`torch.nn.{name}`: applies `functional.{fn.__name__}` elementwise"
        + (f" (options: {', '.join(f'{k}={v!r}' for k, v in defaults.items())})." if args else ".")
        + f"""

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager import torch_nn as nn
        >>> nn.{name}({example}){"(jnp.zeros((2, 3)))" if name != "GLU" else "(jnp.zeros((2, 4)))"}.shape
        {"(2, 3)" if name != "GLU" else "(2, 2)"}
    """
    )
    cls = type(
        name,
        (_Activation,),
        {"__init__": __init__, "_fn": staticmethod(fn), "_args": args, "__doc__": doc},
    )
    cls.__module__ = __name__
    cls.__qualname__ = name
    return cls


ReLU = _module("ReLU", relu)
ReLU6 = _module("ReLU6", relu6)
LeakyReLU = _module("LeakyReLU", leaky_relu, negative_slope=0.01)
ELU = _module("ELU", elu, alpha=1.0)
SELU = _module("SELU", selu)
CELU = _module("CELU", celu, alpha=1.0)
GELU = _module("GELU", gelu, approximate="none")
SiLU = _module("SiLU", silu)
Mish = _module("Mish", mish)
Hardtanh = _module("Hardtanh", hardtanh, min_val=-1.0, max_val=1.0)
Hardsigmoid = _module("Hardsigmoid", hardsigmoid)
Hardswish = _module("Hardswish", hardswish)
Sigmoid = _module("Sigmoid", sigmoid)
LogSigmoid = _module("LogSigmoid", logsigmoid)
Tanh = _module("Tanh", tanh)
Softsign = _module("Softsign", softsign)
Softplus = _module("Softplus", softplus, beta=1.0, threshold=20.0)
Softmax = _module("Softmax", softmax, "dim=-1", dim=None)
LogSoftmax = _module("LogSoftmax", log_softmax, "dim=-1", dim=None)
GLU = _module("GLU", glu, dim=-1)
