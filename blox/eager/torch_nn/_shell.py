"""The base of every `torch_nn` layer: a `CoreModule` over a `TorchLayout`.

A shell's `__init__` names the core layer, its options, the PyTorch names and
layouts of its arrays and an example input; `_adopt` builds (or reuses) the
shared `TorchLayout`, creates the params with the core layer's own code (the
shell passes PyTorch's default initialisers as core options) and adopts them
under PyTorch's names. `forward` then moves the data into the core layout
(channels last) and calls `self.call_core(self.core_layer, ...)`.
"""

from typing import Any

import jax
import jax.numpy as jnp

from blox import core

from .._core_module import CoreModule
from .._seed import init_params
from ._layout import Name, build_torch_core
from ._module import Module


def check_device(where: str, device: Any) -> None:
    """Accepts PyTorch's `device=None` only (JAX places arrays itself)."""
    if device is not None:
        raise ValueError(
            f"{where}: expected device=None (arrays live on JAX's default device), got "
            f"{device!r}. Fix: drop device=, or move the built model with "
            "jax.device_put(model, device)."
        )


class Shell(Module, CoreModule):
    """A PyTorch-named layer whose numerics are a core layer's."""

    def _adopt(
        self,
        where: str,
        core_cls: type,
        args: tuple[Any, ...],
        options: dict[str, Any],
        names: tuple[Name, ...],
        example: tuple[Any, ...] | None,
        *,
        seed: Any = None,
        dtype: Any = None,
        call_kwargs: tuple[tuple[str, Any], ...] = (),
        keep_rng: bool = False,
    ) -> None:
        layer, rng = build_torch_core(core_cls, args, options, names)
        kwargs = dict(call_kwargs)
        # No example: the layer creates no params (its stream is seeded by init_params).
        shapes = None if example is None else tuple((jnp.shape(e), e.dtype) for e in example)

        def create(params: Any) -> Any:
            return params if example is None else layer(params, *example, **kwargs)[1]

        params = init_params(where, rng, seed, create, signature=(layer, shapes, call_kwargs))
        if dtype is not None:
            # Entry by entry (a tree map would sort the paths): the state_dict keeps
            # creation order, weight before bias, as PyTorch lists them.
            params = core.Params.from_dict(
                {
                    path: core.Param(
                        p.value.astype(dtype)
                        if jnp.issubdtype(p.value.dtype, jnp.floating)
                        else p.value,
                        trainable=p.trainable,
                        metadata=p.metadata,
                    )
                    for path, p in params.items()
                },
                locked=params.is_locked,
            )
        self.adopt_core(layer, params, keep=lambda path: keep_rng or path[1] != "rng")


def to_last(x: jax.Array, n: int) -> jax.Array:
    """`(*batch, C, *spatial)` (n spatial dims) -> `(*batch, *spatial, C)`."""
    return jnp.moveaxis(x, -n - 1, -1)


def to_first(x: jax.Array, n: int) -> jax.Array:
    """`(*batch, *spatial, C)` -> `(*batch, C, *spatial)`."""
    return jnp.moveaxis(x, -1, -n - 1)
