"""Computation and storage dtypes: one promotion rule shared by every layer.

Layers take two options with flax.linen's meaning: `dtype`, the dtype the
layer computes in (`None`: the promoted dtype of its inputs and params), and
`param_dtype`, the dtype its params are created in (float32 by default). A
layer passes its inputs and params through `promote_dtype` right before
computing, so bfloat16 compute over float32 master weights is
`dtype=jnp.bfloat16` with the default `param_dtype`. Normalisation statistics
reduce in float32 whatever `dtype` says; see `_norm.py`.
"""

from typing import Any

import jax.numpy as jnp


def promote_dtype(*arrays: Any, dtype: Any = None, inexact: bool = True) -> tuple[Any, ...]:
    """Casts `arrays` to `dtype`, or to their promoted dtype when `dtype` is None.

    `None` entries pass through untouched (an absent bias). With `inexact`, an
    integer or boolean result type is widened to a float (as flax does), so a
    layer never computes in an integer dtype by accident.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.core._dtypes import promote_dtype
        >>> x, w = promote_dtype(jnp.ones(2, jnp.bfloat16), jnp.ones(2, jnp.float32))
        >>> x.dtype, w.dtype
        (dtype('float32'), dtype('float32'))
        >>> x, w, b = promote_dtype(jnp.ones(2), jnp.ones(2), None, dtype=jnp.bfloat16)
        >>> x.dtype, b is None
        (dtype(bfloat16), True)
    """
    if dtype is None:
        present = [jnp.asarray(a) for a in arrays if a is not None]
        dtype = jnp.result_type(*present)
        if inexact and not jnp.issubdtype(dtype, jnp.inexact):
            dtype = jnp.promote_types(jnp.float32, dtype)
    return tuple(None if a is None else jnp.asarray(a, dtype) for a in arrays)
