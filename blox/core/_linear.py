"""`Linear`: `inputs @ kernel + bias` over the last axis."""

from typing import Any

import jax
import jax.numpy as jnp

from ._graph import Graph
from ._initializers import LECUN_NORMAL
from ._module import Initializer, Module, _lead, _where
from ._params import Params

_DEFAULT_KERNEL_INIT = LECUN_NORMAL  # jax.nn.initializers.lecun_normal(), picklable
_DEFAULT_BIAS_INIT = jax.nn.initializers.zeros


class Linear(Module):
    """A dense layer: `outputs = inputs @ kernel + bias`.

    The input size is read from the first call, which creates `kernel`
    `(in, out)` and `bias` `(out,)` (in that order, one rng key each).

    Args:
        graph: This module's node.
        output_size: Size of the last output axis.
        rng: `Rng` for initialisation (`None` is fine for constant inits).
        use_bias: Add a bias.
        kernel_init: `init(key, shape, dtype)` for the kernel.
        bias_init: Initialiser for the bias.
        kernel_metadata: Metadata stored with the kernel (e.g. sharding).
        bias_metadata: Metadata stored with the bias.

    Shapes:
        inputs `(*batch, in)` -> outputs `(*batch, output_size)`.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> lin = bx.Linear(g / 'lin', 4, rng=rng)
        >>> y, params = lin(rng.seed(bx.Params(), seed=0), jnp.ones((2, 3)))
        >>> y.shape, params[('net', 'lin', 'kernel')].value.shape
        ((2, 4), (3, 4))
    """

    def __init__(
        self,
        graph: Graph,
        output_size: int,
        rng: Any = None,
        use_bias: bool = True,
        kernel_init: Initializer = _DEFAULT_KERNEL_INIT,
        bias_init: Initializer = _DEFAULT_BIAS_INIT,
        kernel_metadata: dict[str, Any] | None = None,
        bias_metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(graph)
        self.output_size = output_size
        self.rng = rng
        self.use_bias = use_bias
        self.kernel_init = kernel_init
        self.bias_init = bias_init
        self.kernel_metadata = kernel_metadata
        self.bias_metadata = bias_metadata

    def __call__(
        self, params: Params, inputs: jax.Array, precision: Any = None
    ) -> tuple[jax.Array, Params]:
        """Applies the layer; `precision` is passed to the matmul."""
        if jnp.ndim(inputs) == 0:
            raise ValueError(
                f"{_where(self)}: expected inputs of rank >= 1 (*batch, features), "
                "got a scalar. Fix: pass at least a vector, e.g. x[None]."
            )
        kernel, params = self.get_param(
            params,
            "kernel",
            (inputs.shape[-1], self.output_size),
            self.kernel_init,
            metadata=self.kernel_metadata,
            rng=self.rng,
        )
        outputs = jnp.dot(inputs, kernel, precision=precision)
        if self.use_bias:
            bias, params = self.get_param(
                params,
                "bias",
                (self.output_size,),
                self.bias_init,
                metadata=self.bias_metadata,
                rng=self.rng,
            )
            outputs = outputs + _lead(bias, outputs.ndim)
        return outputs, params
