"""Helpers for agreement tests with flax.linen: copy a flax param tree into blox by path."""

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import blox as bx


def flax_paths(tree: Any, prefix: tuple[str, ...]) -> dict[tuple[str, ...], Any]:
    """`{prefix + path: leaf}` for a nested flax dict (`FrozenDict` or dict)."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {prefix + tuple(str(k.key) for k in path): leaf for path, leaf in flat}


def to_blox(tree: Any, prefix: tuple[str, ...], extra: dict | None = None) -> bx.Params:
    """A flax param tree as blox params under `prefix` (flax's names kept), plus `extra`."""
    return bx.Params.from_dict({**flax_paths(tree, prefix), **(extra or {})})


# -- random test data without a compile per shape --------------------------------------
# `jax.random.normal(key, shape)` run op by op compiles its threefry program
# for every new shape (about 1 s of CPU each on the CI machine, the largest
# part of many parity tests). Under JAX's default threefry
# (`jax_threefry_partitionable`, which blox.core._sampling relies on too) the
# draw's element i is a function of the key and i alone, so the values are the
# first elements of a longer flat draw: `normal` takes them from one program
# per power-of-two size, bit for bit those of `jax.random.normal`.

_FLAT_DRAWS: dict[int, Any] = {}


def _flat_draw(size: int) -> Any:
    if size not in _FLAT_DRAWS:
        _FLAT_DRAWS[size] = jax.jit(lambda key: jax.random.normal(key, (size,)))
    return _FLAT_DRAWS[size]


def normal(key: Any, shape: tuple[int, ...]) -> jax.Array:
    """`jax.random.normal(key, shape)` (float32) bit for bit; `key` a key or an int seed.

    Example:
        >>> import jax, numpy as np
        >>> got = normal(3, (2, 5))
        >>> bool(np.array_equal(got, jax.random.normal(jax.random.key(3), (2, 5))))
        True
    """
    traced = isinstance(key, jax.core.Tracer)  # inside a jit: nothing to save
    if traced or not jax.config.jax_threefry_partitionable:  # the flat-prefix property
        key = jax.random.key(key) if isinstance(key, int) else key
        return jax.random.normal(key, shape)
    if isinstance(key, int):
        key = jax.random.key(key)
    n = math.prod(shape)
    flat = np.asarray(_flat_draw(max(1024, 1 << (n - 1).bit_length()))(key))
    return jnp.asarray(flat[:n].reshape(shape))


def normal_init(stddev: float = 1.0) -> Any:
    """`jax.nn.initializers.normal(stddev)` with its values, drawn by `normal` in float32.

    Example:
        >>> import jax, numpy as np
        >>> key = jax.random.key(3)
        >>> want = jax.nn.initializers.normal(0.5)(key, (2, 5))
        >>> bool(np.array_equal(normal_init(0.5)(key, (2, 5)), want))
        True
    """
    reference = jax.nn.initializers.normal(stddev)

    def init(key: Any, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        if jnp.dtype(dtype) != jnp.float32 or isinstance(key, jax.core.Tracer):
            return reference(key, shape, dtype)
        return jnp.asarray(np.asarray(normal(key, shape)) * np.float32(stddev))

    return init


def probe(shape: tuple[int, ...], seed: int = 7) -> jax.Array:
    """Fixed cotangent for comparing gradients of a scalar `sum(y * probe)`."""
    return normal(seed, shape)


def close(actual: Any, expected: Any, rtol: float = 1e-6, atol: float = 1e-6) -> None:
    """Leafwise `assert_allclose` at the house float32 tolerance."""
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=rtol, atol=atol)


def inputs(shape: tuple[int, ...], seed: int = 1, dtype: Any = jnp.float32) -> jax.Array:
    """`(jax.random.normal(key(seed), shape) * 2 + 0.5).astype(dtype)`, computed in numpy.

    The same values (x * 2 is exact, so one float32 rounding either way) without
    compiling the arithmetic per shape.
    """
    x = np.asarray(normal(seed, shape)) * np.float32(2.0) + np.float32(0.5)
    return jnp.asarray(x.astype(dtype))


def agree(
    flax_module: Any,
    layer: Any,
    x: jax.Array,
    prefix: tuple[str, ...],
    *,
    flax_kwargs: dict[str, Any] | None = None,
    blox_kwargs: dict[str, Any] | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-6,
) -> bx.Params:
    """Asserts blox `layer` equals `flax_module` on `x`, outputs and gradients.

    flax's params are created by `init` and copied into blox by path; the
    gradients of `sum(y * probe)` with respect to the params (by path) and to
    `x` must agree too. Returns the copied params.
    """
    flax_kwargs = flax_kwargs or {}
    blox_kwargs = blox_kwargs or {}
    variables = flax_module.init(jax.random.key(3), x, **flax_kwargs)
    params = to_blox(variables.get("params", {}), prefix)
    # The output's shape by tracing alone (an op-by-op apply compiles every primitive).
    out = jax.eval_shape(lambda v, x: flax_module.apply(v, x, **flax_kwargs), variables, x)
    r = probe(out.shape)

    @jax.jit
    def flax_loss(p: Any, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        y = flax_module.apply({**variables, "params": p}, x, **flax_kwargs)
        return jnp.sum(y * r), y

    @jax.jit
    def blox_loss(p: bx.Params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        y, _ = layer(p, x, **blox_kwargs)
        return jnp.sum(y * r), y

    @jax.jit  # both sides' forwards and gradients: one compiled program
    def both(flax_params: Any, params: bx.Params, x: jax.Array) -> Any:
        theirs = jax.grad(flax_loss, argnums=(0, 1), has_aux=True)(flax_params, x)
        return theirs, jax.grad(blox_loss, argnums=(0, 1), has_aux=True)(params, x)

    ((gp_f, gx_f), y_f), ((gp_b, gx_b), y_b) = both(variables.get("params", {}), params, x)
    assert y_b.dtype == y_f.dtype, (y_b.dtype, y_f.dtype)
    close(y_b, y_f, rtol, atol)
    close(gx_b, gx_f, rtol, atol)
    expected = flax_paths(gp_f, prefix)
    assert set(expected) == set(gp_b.keys())
    for path, value in expected.items():
        close(gp_b[path].value, value, rtol, atol)
    return params
