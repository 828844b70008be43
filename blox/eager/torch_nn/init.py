"""`torch.nn.init` for blox: PyTorch's initialiser names, fans and gains.

JAX arrays are immutable, so an initialiser cannot fill its argument in
place. Each function here takes the array it would fill and **returns** a
new one of the same shape and dtype; assign it back::

    module.weight = nn.init.normal_(module.weight, 0.0, 0.02)

and inside `model.apply`, as PyTorch code does::

    def init_weights(m):
        if isinstance(m, nn.Linear):
            m.weight = nn.init.xavier_uniform_(m.weight)
            m.bias = nn.init.zeros_(m.bias)

    model.apply(init_weights)

Random draws come from the global stream (`nn.manual_seed`) unless
`generator=` gives an int seed or a key. Fans follow PyTorch's layouts
(`weight` `(out, in, *kernel)`: `fan_in = in * prod(kernel)`), which is how
`torch_nn` layers store their weights. The distributions are
`jax.nn.initializers`'.
"""

import math
from typing import Any

import jax
import jax.numpy as jnp

from .._seed import _next_key

__all__ = [
    "calculate_gain",
    "constant_",
    "eye_",
    "kaiming_normal_",
    "kaiming_uniform_",
    "normal_",
    "ones_",
    "orthogonal_",
    "trunc_normal_",
    "uniform_",
    "xavier_normal_",
    "xavier_uniform_",
    "zeros_",
]


def _key(where: str, generator: Any) -> jax.Array:
    return _next_key(generator, f"nn.init.{where}")


def _like(tensor: Any) -> tuple[tuple[int, ...], Any]:
    tensor = jnp.asarray(tensor)
    return tuple(tensor.shape), tensor.dtype


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """PyTorch's recommended gain for `nonlinearity`.

    Raises:
        ValueError: For an unknown nonlinearity.

    Example:
        >>> from blox.eager.torch_nn import init
        >>> round(init.calculate_gain('relu'), 4), round(init.calculate_gain('tanh'), 4)
        (1.4142, 1.6667)
    """
    linear = (
        "linear",
        "conv1d",
        "conv2d",
        "conv3d",
        "conv_transpose1d",
        "conv_transpose2d",
        "conv_transpose3d",
        "sigmoid",
    )
    if nonlinearity in linear:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(
        f"calculate_gain: expected one of {[*linear, 'tanh', 'relu', 'leaky_relu', 'selu']}, "
        f"got {nonlinearity!r}. Fix: use one of those."
    )


def uniform_(tensor: Any, a: float = 0.0, b: float = 1.0, generator: Any = None) -> jax.Array:
    """`U(a, b)` of `tensor`'s shape and dtype (returned: assign it back).

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import init
        >>> w = init.uniform_(jnp.zeros((100,)), -1.0, 1.0, generator=0)
        >>> bool((w >= -1).all() & (w < 1).all())
        True
    """
    shape, dtype = _like(tensor)
    return jax.random.uniform(_key("uniform_", generator), shape, dtype, a, b)


def normal_(tensor: Any, mean: float = 0.0, std: float = 1.0, generator: Any = None) -> jax.Array:
    """`N(mean, std**2)` of `tensor`'s shape and dtype (returned: assign it back).

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import init
        >>> init.normal_(jnp.zeros((2, 3)), 0.0, 0.02).shape
        (2, 3)
    """
    shape, dtype = _like(tensor)
    return mean + std * jax.random.normal(_key("normal_", generator), shape, dtype)


def trunc_normal_(
    tensor: Any,
    mean: float = 0.0,
    std: float = 1.0,
    a: float = -2.0,
    b: float = 2.0,
    generator: Any = None,
) -> jax.Array:
    """`N(mean, std**2)` truncated to `[a, b]` (absolute bounds, as in PyTorch).

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import init
        >>> w = init.trunc_normal_(jnp.zeros((1000,)), std=1.0, a=-0.5, b=0.5, generator=0)
        >>> bool((abs(w) <= 0.5).all())
        True
    """
    shape, dtype = _like(tensor)
    lo, hi = (a - mean) / std, (b - mean) / std
    return mean + std * jax.random.truncated_normal(
        _key("trunc_normal_", generator), lo, hi, shape, dtype
    )


def constant_(tensor: Any, val: float) -> jax.Array:
    """`val` everywhere, with `tensor`'s shape and dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import init
        >>> init.constant_(jnp.zeros(2), 0.5).tolist()
        [0.5, 0.5]
    """
    shape, dtype = _like(tensor)
    return jnp.full(shape, val, dtype)


def zeros_(tensor: Any) -> jax.Array:
    """Zeros of `tensor`'s shape and dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import init
        >>> init.zeros_(jnp.ones(2)).tolist()
        [0.0, 0.0]
    """
    return constant_(tensor, 0.0)


def ones_(tensor: Any) -> jax.Array:
    """Ones of `tensor`'s shape and dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import init
        >>> init.ones_(jnp.zeros(2)).tolist()
        [1.0, 1.0]
    """
    return constant_(tensor, 1.0)


def eye_(tensor: Any) -> jax.Array:
    """The identity matrix of a 2-D `tensor`'s shape.

    Raises:
        ValueError: If `tensor` is not 2-D.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import init
        >>> init.eye_(jnp.zeros((2, 3))).tolist()
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    """
    shape, dtype = _like(tensor)
    if len(shape) != 2:
        raise ValueError(
            f"nn.init.eye_: expected a 2-D tensor, got shape {shape}. Fix: use it on "
            "Linear weights."
        )
    return jnp.eye(*shape, dtype=dtype)


def _fans_ok(where: str, shape: tuple[int, ...]) -> None:
    if len(shape) < 2:
        raise ValueError(
            f"nn.init.{where}: expected a tensor of rank >= 2 (out, in, *kernel) to compute "
            f"fans, got shape {shape}. Fix: use it on weights, not biases."
        )


def _scaling(
    where: str, tensor: Any, scale: float, mode: str, distribution: str, generator: Any
) -> jax.Array:
    shape, dtype = _like(tensor)
    _fans_ok(where, shape)
    init = jax.nn.initializers.variance_scaling(scale, mode, distribution, in_axis=1, out_axis=0)
    return init(_key(where, generator), shape, dtype)


def xavier_uniform_(tensor: Any, gain: float = 1.0, generator: Any = None) -> jax.Array:
    """Glorot uniform: `U(±gain * sqrt(6 / (fan_in + fan_out)))`.

    Raises:
        ValueError: If `tensor` has rank below 2.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import init
        >>> w = init.xavier_uniform_(jnp.zeros((30, 20)), generator=0)
        >>> bool(abs(w).max() <= (6 / 50) ** 0.5)
        True
    """
    return _scaling("xavier_uniform_", tensor, gain**2, "fan_avg", "uniform", generator)


def xavier_normal_(tensor: Any, gain: float = 1.0, generator: Any = None) -> jax.Array:
    """Glorot normal: `N(0, gain**2 * 2 / (fan_in + fan_out))`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import init
        >>> init.xavier_normal_(jnp.zeros((3, 2, 3, 3))).shape
        (3, 2, 3, 3)
    """
    return _scaling("xavier_normal_", tensor, gain**2, "fan_avg", "normal", generator)


def _kaiming(
    where: str,
    tensor: Any,
    a: float,
    mode: str,
    nonlinearity: str,
    distribution: str,
    generator: Any,
) -> jax.Array:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(
            f"nn.init.{where}: expected mode 'fan_in' or 'fan_out', got {mode!r}. Fix: use "
            "one of those."
        )
    gain = calculate_gain(nonlinearity, a)
    return _scaling(where, tensor, gain**2, mode, distribution, generator)


def kaiming_uniform_(
    tensor: Any,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: Any = None,
) -> jax.Array:
    """He uniform: `U(±gain * sqrt(3 / fan))`, `gain = calculate_gain(nonlinearity, a)`.

    Raises:
        ValueError: On an unknown mode or nonlinearity, or rank below 2.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import init
        >>> init.kaiming_uniform_(jnp.zeros((4, 3)), a=5 ** 0.5).shape
        (4, 3)
    """
    return _kaiming("kaiming_uniform_", tensor, a, mode, nonlinearity, "uniform", generator)


def kaiming_normal_(
    tensor: Any,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: Any = None,
) -> jax.Array:
    """He normal: `N(0, gain**2 / fan)`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import init
        >>> init.kaiming_normal_(jnp.zeros((8, 4, 3, 3)), mode='fan_out', nonlinearity='relu').shape
        (8, 4, 3, 3)
    """
    return _kaiming("kaiming_normal_", tensor, a, mode, nonlinearity, "normal", generator)


def orthogonal_(tensor: Any, gain: float = 1.0, generator: Any = None) -> jax.Array:
    """A (semi-)orthogonal matrix over `(shape[0], prod(shape[1:]))`, times `gain`.

    Raises:
        ValueError: If `tensor` has rank below 2.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import init
        >>> q = init.orthogonal_(jnp.zeros((3, 5)), generator=0)
        >>> bool(jnp.allclose(q @ q.T, jnp.eye(3), atol=1e-5))
        True
    """
    shape, dtype = _like(tensor)
    _fans_ok("orthogonal_", shape)
    flat = (shape[0], math.prod(shape[1:]))
    init = jax.nn.initializers.orthogonal(scale=gain, column_axis=-1)
    return init(_key("orthogonal_", generator), flat, dtype).reshape(shape)
