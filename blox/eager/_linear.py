"""Eager `Linear`: builds `blox.core.Linear` and calls it."""

from typing import Any

import jax.numpy as jnp
from jaxtyping import Array, Float

from blox import core

from ._core_module import CoreModule
from ._seed import build_core, check_sizes, init_params
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
            lambda p: layer(p, jnp.zeros((1, in_features), jnp.float32))[1],
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
