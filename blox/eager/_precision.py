"""`Module.to(dtype)`: cast a model's floating parameters and buffers in place.

Kept apart from `_module.py` (the state-threading machinery): it only reads
`state_dict` names and assigns same-shape arrays, which the module accepts.
Integer and key-data buffers (RNG seeds and counters, `num_batches_tracked`)
are left alone.
"""

from typing import Any

import jax.numpy as jnp


def cast_floating(module: Any, dtype: Any) -> Any:
    """Casts every floating entry of `module.state_dict()` to `dtype`; returns `module`.

    Raises:
        TypeError: If `dtype` is not a floating dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> model = nn.Sequential(nn.Linear(2, 3), nn.Dropout(0.1))
        >>> model.to(jnp.bfloat16)[0].kernel.dtype, model[1].rng.counter.dtype
        (dtype(bfloat16), dtype('uint32'))
    """
    try:
        target = jnp.dtype(dtype)
    except TypeError:
        target = None
    if target is None or not jnp.issubdtype(target, jnp.floating):
        raise TypeError(
            f"{type(module).__name__}.to: expected a floating dtype such as "
            f"jnp.bfloat16, got {dtype!r}. Fix: pass a float dtype; devices and "
            "shardings are set with jax.device_put."
        )
    for name, value in module.state_dict().items():
        if not jnp.issubdtype(value.dtype, jnp.floating) or value.dtype == target:
            continue
        *head, attr = name.split(".")
        owner = module
        for part in head:
            owner = getattr(owner, part)
        setattr(owner, attr, value.astype(target))
    return module
