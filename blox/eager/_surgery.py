"""Module surgery in PyTorch's words: `model.apply(fn)`, `model.to(dtype)`, `.float()`, ...

Kept apart from `_module.py` (the state-threading machinery): these methods
only walk the tree with the public traversal (`named_modules`,
`state_dict`) and assign arrays, so they are mixed into `Module` as they are.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from ._pytree import _touch


class Surgery:
    """PyTorch's tree-editing methods, mixed into `blox.eager.Module`."""

    def apply(self, fn: Callable[[Any], Any]) -> Any:
        """Calls `fn(module)` on every sub-module (children first) and on self; returns self.

        Use it to re-initialise, as in PyTorch (arrays are immutable, so `fn`
        assigns new ones; see `torch_nn.init`).

        Example:
            >>> import jax.numpy as jnp
            >>> from blox import eager as nn
            >>> model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
            >>> def zero_bias(m):
            ...     if isinstance(m, nn.Linear):
            ...         m.bias = jnp.zeros_like(m.bias)
            >>> float(model.apply(zero_bias)[1].bias.sum())
            0.0
        """
        for child in list(self.children()):
            child.apply(fn)
        fn(self)
        return self

    def to(self, dtype: Any = None, *, device: Any = None) -> Any:
        """Casts floating parameters and buffers to `dtype` and/or puts them on `device`.

        Integer buffers (counters) and random-stream state stay as they are.
        In place; returns self, as in PyTorch.

        Raises:
            TypeError: If `dtype` is not a floating dtype (or a device is
                passed positionally as a string).
            ValueError: For a 64-bit dtype while `jax_enable_x64` is off.

        Example:
            >>> import jax.numpy as jnp
            >>> from blox import eager as nn
            >>> nn.Linear(2, 3).to(jnp.bfloat16).kernel.dtype
            dtype(bfloat16)
        """
        if dtype is not None:
            if isinstance(dtype, str) and dtype in ("cpu", "cuda", "gpu", "tpu", "mps"):
                raise TypeError(
                    f"{type(self).__name__}.to: expected a floating dtype, got the device "
                    f"name {dtype!r}. Fix: JAX places arrays itself; use "
                    "model.to(device=jax.devices()[0]) to move them explicitly."
                )
            try:
                floating = jnp.issubdtype(jnp.dtype(dtype), jnp.floating)
            except TypeError:
                floating = False
            if not floating:
                raise TypeError(
                    f"{type(self).__name__}.to: expected a floating dtype such as "
                    f"jnp.bfloat16, got {dtype!r}. Fix: pass a float dtype."
                )
            if jnp.dtype(dtype).itemsize == 8 and not jax.config.jax_enable_x64:
                raise ValueError(
                    f"{type(self).__name__}.to: expected 64-bit floats to be enabled for "
                    f"{dtype!r}, got jax_enable_x64=False (JAX would silently keep "
                    "float32). Fix: jax.config.update('jax_enable_x64', True) first."
                )
        from ._module import Module

        modules = dict(self.named_modules())
        for name, value in Module.state_dict(self).items():
            prefix, _, attr = name.rpartition(".")
            new = value
            if dtype is not None and jnp.issubdtype(value.dtype, jnp.floating):
                new = new.astype(dtype)
            if device is not None:
                new = jax.device_put(new, device)
            if new is not value:
                modules[prefix].__dict__[attr] = new
                _touch()
        return self

    def float(self) -> Any:
        """`to(jnp.float32)`.

        Example:
            >>> import jax.numpy as jnp
            >>> from blox import eager as nn
            >>> nn.Linear(2, 3).half().float().kernel.dtype
            dtype('float32')
        """
        return self.to(jnp.float32)

    def double(self) -> Any:
        """`to(jnp.float64)`; needs `jax_enable_x64` (else `ValueError`, not a silent float32).

        Example:
            >>> from blox import eager as nn
            >>> nn.Linear(2, 3).double()
            Traceback (most recent call last):
            ...
            ValueError: Linear.to: expected 64-bit floats to be enabled ...
        """
        return self.to(jnp.float64)

    def half(self) -> Any:
        """`to(jnp.float16)`.

        Example:
            >>> from blox import eager as nn
            >>> nn.Linear(2, 3).half().kernel.dtype
            dtype('float16')
        """
        return self.to(jnp.float16)

    def bfloat16(self) -> Any:
        """`to(jnp.bfloat16)`.

        Example:
            >>> from blox import eager as nn
            >>> nn.BatchNorm(3).bfloat16().running_mean.dtype
            dtype(bfloat16)
        """
        return self.to(jnp.bfloat16)
