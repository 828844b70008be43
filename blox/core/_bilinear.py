"""`Bilinear`: `y_o = sum_ij x1_i kernel_ijo x2_j + bias_o`, PyTorch's `nn.Bilinear` numerics."""

from typing import Any

import jax
import jax.numpy as jnp

from ._dtypes import promote_dtype
from ._graph import Graph
from ._module import Initializer, Module, _lead, _where
from ._params import Params

_DEFAULT_KERNEL_INIT = jax.nn.initializers.lecun_normal(in_axis=(0, 1), out_axis=2)
_DEFAULT_BIAS_INIT = jax.nn.initializers.zeros


class Bilinear(Module):
    """A bilinear form of two inputs: `einsum('...i,ijo,...j->...o') + bias`.

    The input sizes are read from the first call, which creates `kernel`
    `(in1, in2, out)` and `bias` `(out,)` (in that order, one rng key each).

    Args:
        graph: This module's node.
        output_size: Size of the last output axis.
        rng: `Rng` for initialisation.
        use_bias: Add a bias.
        kernel_init: Initialiser of the kernel.
        bias_init: Initialiser of the bias.
        kernel_metadata: Metadata stored with the kernel (e.g. sharding).
        bias_metadata: Metadata stored with the bias.
        dtype: Computation dtype (`None`: promoted from inputs and params).
        param_dtype: Storage dtype of the params.

    Shapes:
        `(*batch, in1)`, `(*batch, in2)` -> `(*batch, output_size)`.

    Raises:
        ValueError: If the two inputs' batch shapes differ.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> from blox.core._bilinear import Bilinear
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> bil = Bilinear(g / 'bil', 4, rng=rng)
        >>> y, params = bil(rng.seed(bx.Params(), seed=0), jnp.ones((2, 3)), jnp.ones((2, 5)))
        >>> y.shape, params[('net', 'bil', 'kernel')].value.shape
        ((2, 4), (3, 5, 4))
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
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
    ) -> None:
        super().__init__(graph)
        self.output_size = output_size
        self.rng = rng
        self.use_bias = use_bias
        self.kernel_init = kernel_init
        self.bias_init = bias_init
        self.kernel_metadata = kernel_metadata
        self.bias_metadata = bias_metadata
        self.dtype = dtype
        self.param_dtype = param_dtype

    def __call__(
        self, params: Params, inputs1: jax.Array, inputs2: jax.Array
    ) -> tuple[jax.Array, Params]:
        """Applies the bilinear form to `inputs1` and `inputs2`."""
        if jnp.ndim(inputs1) == 0 or jnp.shape(inputs1)[:-1] != jnp.shape(inputs2)[:-1]:
            raise ValueError(
                f"{_where(self)}: expected inputs (*batch, in1) and (*batch, in2) with "
                f"the same batch shape, got {tuple(jnp.shape(inputs1))} and "
                f"{tuple(jnp.shape(inputs2))}. Fix: broadcast them to one batch shape."
            )
        kernel, params = self.get_param(
            params,
            "kernel",
            (inputs1.shape[-1], inputs2.shape[-1], self.output_size),
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
                (self.output_size,),
                self.bias_init,
                dtype=self.param_dtype,
                metadata=self.bias_metadata,
                rng=self.rng,
            )
        x1, x2, kernel, bias = promote_dtype(inputs1, inputs2, kernel, bias, dtype=self.dtype)
        outputs = jnp.einsum("...i,ijo,...j->...o", x1, kernel, x2)
        if bias is not None:
            outputs = outputs + _lead(bias, outputs.ndim)
        return outputs, params
