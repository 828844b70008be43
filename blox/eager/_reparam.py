"""Eager `WeightNorm` and `SpectralNorm`: wrap an eager layer's core twin and call it.

The wrapper rebuilds the wrapped layer's core module on its own graph (same
configuration), takes over a copy of its params as the `inner` group, and
creates its own (`scale`, or `u` and `sigma`) with the core wrapper's
`create`. SpectralNorm's `u` and `sigma` are buffers written back after each
training call, like BatchNorm statistics, also under `nn.filter_jit`.
"""

from typing import Any

from blox import core

from ._core_module import CoreModule
from ._seed import init_params


class _Wrapper(CoreModule):
    _core_cls: Any = None

    def __init__(self, layer: CoreModule, *, seed: Any = None, **options: Any) -> None:
        super().__init__()
        where = f"nn.{type(self).__name__}({type(layer).__name__})"
        if not isinstance(layer, CoreModule):
            raise TypeError(
                f"{where}: expected an eager layer built on a core twin (nn.Linear, "
                f"nn.Conv, ...), got {type(layer).__name__}. Fix: wrap such a layer."
            )
        self.options = tuple(sorted(options.items(), key=lambda kv: kv[0]))
        twin = layer.core_layer
        root = core.Graph("blox")
        rng = core.Rng(root / "rng")
        kept = {k: v for k, v in twin._init_args.items() if k != "rng"}
        inner = type(twin)(root / "inner", **kept)
        wrapper = self._core_cls(root / "layer", inner, rng=rng, **options)
        base = twin.graph.path
        copied = {
            ("blox", "inner", *path[len(base) :]): param
            for path, param in layer.core_params().items()
            if path[: len(base)] == base
        }
        params = init_params(
            where, rng, seed, lambda p: wrapper.create(p.unlocked().merge(_from(copied)))
        )
        self.adopt_core(wrapper, params, keep=lambda path: path[1] != "rng")


def _from(entries: dict) -> Any:
    return core.Params.from_dict(entries)


class WeightNorm(_Wrapper):
    """L2 weight normalisation of an eager layer's weights (flax's `WeightNorm`).

    Args:
        layer: The eager layer to wrap; its params are copied as `inner.*`.
        seed: Int or key for the init of `scale` (constant by default).
        **options: `blox.core.WeightNorm` options (`epsilon`, `use_scale`,
            `scale_init`, `feature_axes`, `variable_filter`, `dtype`,
            `param_dtype`).

    Raises:
        TypeError: If `layer` is not an eager layer with a core twin.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> wn = nn.WeightNorm(nn.Linear(4, 3, seed=0))
        >>> wn(jnp.ones((2, 4))).shape, sorted(wn.state_dict())
        ((2, 3), ['inner.bias', 'inner.kernel', 'inner/kernel/scale'])
    """

    _core_cls = core.WeightNorm

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Calls the wrapped layer with its weights normalised."""
        return self.call_core(self.core_layer, *args, **kwargs)


class SpectralNorm(_Wrapper):
    """Divides an eager layer's weights by their top singular value (flax's `SpectralNorm`).

    In training mode each call runs `n_steps` of power iteration and stores
    the new `u` and `sigma` buffers; in eval mode they are read only.

    Args:
        layer: The eager layer to wrap; its params are copied as `inner.*`.
        seed: Int or key for the initial `u` (a normal draw).
        **options: `blox.core.SpectralNorm` options (`n_steps`, `epsilon`,
            `error_on_non_matrix`, `dtype`, `param_dtype`).

    Raises:
        TypeError: If `layer` is not an eager layer with a core twin.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> sn = nn.SpectralNorm(nn.Linear(4, 3, seed=0), seed=1)
        >>> before = sn.__dict__['inner/kernel/u']
        >>> _ = sn(jnp.ones((2, 4)))
        >>> bool((sn.__dict__['inner/kernel/u'] != before).any())
        True
    """

    _core_cls = core.SpectralNorm

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Calls the wrapped layer with normalised weights; advances `u` when training."""
        return self.call_core(self.core_layer, *args, is_training=self.training, **kwargs)
