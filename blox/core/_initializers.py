"""Default initialisers as importable, picklable objects.

`jax.nn.initializers.lecun_normal()` returns a local closure, which `pickle`
cannot store, so a layer holding it as its default could not be pickled (nor
a model containing that layer). `VarianceScaling` is the same initialiser
(it calls `jax.nn.initializers.variance_scaling` with the same arguments, so
values agree bit for bit) as a frozen dataclass: picklable, hashable, and
equal when its configuration is.
"""

import dataclasses
from typing import Any

import jax


@dataclasses.dataclass(frozen=True)
class VarianceScaling:
    """`jax.nn.initializers.variance_scaling(scale, mode, distribution, ...)`, picklable.

    Example:
        >>> import pickle, jax
        >>> from blox.core._initializers import VarianceScaling
        >>> init = VarianceScaling(1.0, "fan_in", "truncated_normal")
        >>> reference = jax.nn.initializers.lecun_normal()
        >>> key = jax.random.key(0)
        >>> bool((pickle.loads(pickle.dumps(init))(key, (3, 2)) == reference(key, (3, 2))).all())
        True
    """

    scale: float
    mode: str
    distribution: str
    in_axis: int = -2
    out_axis: int = -1

    def __call__(self, key: Any, shape: Any, dtype: Any = jax.numpy.float32) -> jax.Array:
        init = jax.nn.initializers.variance_scaling(
            self.scale, self.mode, self.distribution, in_axis=self.in_axis, out_axis=self.out_axis
        )
        return init(key, shape, dtype)


LECUN_NORMAL = VarianceScaling(1.0, "fan_in", "truncated_normal")


@dataclasses.dataclass(frozen=True)
class Uniform:
    """`U(-bound, bound)`, picklable: PyTorch's default init of Linear and Conv params.

    The values are `jax.random.uniform(key, shape, dtype, -bound, bound)`.

    Example:
        >>> import jax
        >>> from blox.core._initializers import Uniform
        >>> w = Uniform(0.5)(jax.random.key(0), (3, 4))
        >>> bool((abs(w) <= 0.5).all()), w.shape
        (True, (3, 4))
    """

    bound: float

    def __call__(self, key: Any, shape: Any, dtype: Any = jax.numpy.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -self.bound, self.bound)
