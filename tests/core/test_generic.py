"""Generic suites run over every layer in the descriptor table.

Each test states one property every layer must have: transforms (jit, vmap,
grad, checkpoint) do not change results, both input dtypes run with the
documented output dtype, and the created parameters match the golden table.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import blox as bx
from tests.core.descriptors import DESCRIPTORS, ROOT, Descriptor, first_call, init, make_input

TIGHT = {"rtol": 1e-5, "atol": 1e-6}
ALL = pytest.mark.parametrize("desc", DESCRIPTORS, ids=lambda d: d.name)
RNG_PATHS = {(ROOT, "rng", "seed"), (ROOT, "rng", "counter")}


def _plain_leaves(tree: Any) -> list[np.ndarray]:
    """Leaves as numpy arrays; typed PRNG keys become their raw key data."""
    out = []
    for leaf in jax.tree.leaves(tree):
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        # numpy has no bfloat16 arithmetic of its own: compare in float64.
        out.append(np.asarray(leaf, np.float64 if leaf.dtype == jnp.bfloat16 else None))
    return out


def assert_trees_close(actual: Any, expected: Any, **tol: float) -> None:
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(_plain_leaves(actual), _plain_leaves(expected), strict=True):
        assert a.shape == e.shape
        np.testing.assert_allclose(a, e, **tol)


# Eager calls of a layer with a scan (the LSTMs, ConvLSTM) compile the scan
# again on every call, so each suite's reference results are made once per
# process and shared between the tests that compare against them.
_EAGER: dict[tuple[str, str], Any] = {}
_PLAIN_GRADS: dict[str, Any] = {}


def _eager(desc: Descriptor, dtype: Any = None) -> tuple[Any, bx.Params]:
    """`desc.call` on `init(desc, dtype)`'s params and input, eager, once per process."""
    module, params, x = init(desc, dtype)
    key = (desc.name, x.dtype.name)
    if key not in _EAGER:
        _EAGER[key] = desc.call(module, params, x)
    return _EAGER[key]


def _is_float(x: Any) -> bool:
    return jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)


def _loss_fn(desc: Descriptor, module: Any, rest: bx.Params, weights: Any):
    """A scalar loss with a fixed random cotangent per output leaf."""

    def loss(trainable: bx.Params, x: jax.Array) -> jax.Array:
        out, _ = desc.call(module, trainable.merge(rest), x)
        terms = [jnp.sum(o.astype(jnp.float32) * w) for o, w in zip(jax.tree.leaves(out), weights)]
        return sum(terms)

    return loss


def _weights(out: Any) -> list[jax.Array]:
    leaves = jax.tree.leaves(out)
    keys = jax.random.split(jax.random.key(7), len(leaves))
    return [jax.random.normal(k, o.shape) for k, o in zip(keys, leaves)]


@ALL
def test_golden_params(desc: Descriptor) -> None:
    _, params, _ = init(desc)
    created = [path for path in params.keys() if path not in RNG_PATHS]
    assert {p: tuple(params[p].value.shape) for p in created} == desc.params
    assert {p for p in created if not params[p].trainable} == set(desc.frozen)
    assert all(params[p].value.dtype == jnp.float32 for p in created)
    assert set(params.keys()) - set(created) == RNG_PATHS
    assert params.is_locked


@ALL
def test_jit_equals_eager(desc: Descriptor) -> None:
    module, params, x = init(desc)
    eager = _eager(desc)
    jitted = jax.jit(lambda p, x: desc.call(module, p, x))(params, x)
    assert_trees_close(jitted, eager, **TIGHT)


@ALL
def test_jit_init_equals_eager_init(desc: Descriptor) -> None:
    module, fresh, x, eager = first_call(desc)  # the eager call that created the params
    jitted = jax.jit(lambda p, x: desc.call(module, p, x))(fresh, x)
    assert set(jitted[1].keys()) == set(eager[1].keys())
    assert_trees_close(jitted, eager, **TIGHT)


@pytest.mark.parametrize(
    "desc", [d for d in DESCRIPTORS if d.rows_independent], ids=lambda d: d.name
)
def test_vmap_over_batch_equals_batched(desc: Descriptor) -> None:
    module, params, x = init(desc)
    batched, _ = _eager(desc)

    def one_row(row: jax.Array) -> Any:
        out, _ = desc.call(module, params, row[None])
        return jax.tree.map(lambda o: o[0], out)

    # One compiled program instead of op-by-op batched primitives (the same batching rules).
    assert_trees_close(jax.jit(jax.vmap(one_row))(x), batched, rtol=1e-5, atol=1e-5)


@ALL
def test_vmap_over_problems_equals_loop(desc: Descriptor) -> None:
    # Holds for every layer, BatchNorm and Dropout included: each problem sees
    # the same params, so the same statistics rule and the same rng key.
    module, params, x = init(desc)
    xs = jnp.stack([x, make_input(desc, seed=2)])
    vmapped = jax.jit(jax.vmap(lambda x: desc.call(module, params, x)))(xs)
    looped = [_eager(desc), desc.call(module, params, xs[1])]  # xs[0] is x
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *looped)
    assert_trees_close(vmapped, stacked, rtol=1e-5, atol=1e-5)


def _plain_grads(desc: Descriptor) -> tuple[Any, Any, bx.Params, jax.Array, Any]:
    """`(loss, argnums, trainable, x, jitted grads)`, computed once per process."""
    if desc.name not in _PLAIN_GRADS:
        module, params, x = init(desc)
        trainable, rest = params.split()
        loss = _loss_fn(desc, module, rest, _weights(_eager(desc)[0]))
        argnums = (0, 1) if _is_float(x) else 0
        grads = jax.jit(jax.grad(loss, argnums=argnums))(trainable, x)
        _PLAIN_GRADS[desc.name] = (loss, argnums, trainable, x, grads)
    return _PLAIN_GRADS[desc.name]


@ALL
def test_grads_finite(desc: Descriptor) -> None:
    _, _, trainable, x, grads = _plain_grads(desc)
    grad_params = grads[0] if _is_float(x) else grads
    assert set(grad_params.keys()) == set(trainable.keys())
    leaves = _plain_leaves(grads)
    assert leaves, f"{desc.name}: nothing to differentiate"
    assert all(np.isfinite(leaf).all() for leaf in leaves)
    assert any(np.abs(leaf).max() > 0 for leaf in leaves if leaf.size)


@ALL
def test_checkpoint_gives_same_grads(desc: Descriptor) -> None:
    loss, argnums, trainable, x, plain = _plain_grads(desc)
    remat = jax.jit(jax.grad(jax.checkpoint(loss), argnums=argnums))(trainable, x)
    assert_trees_close(remat, plain, **TIGHT)


@ALL
@pytest.mark.parametrize("which", [0, 1], ids=["dtype0", "dtype1"])
def test_input_dtypes(desc: Descriptor, which: int) -> None:
    dtype = desc.dtypes[which]
    module, params, x = init(desc, dtype)
    assert x.dtype == dtype
    out, new_params = _eager(desc, dtype)
    for leaf in jax.tree.leaves(out):
        assert leaf.dtype == desc.out_dtype(dtype), (leaf.dtype, dtype)
    # Parameters are float32 whatever the input dtype.
    for path in desc.params:
        assert new_params[path].value.dtype == jnp.float32
    # Same values as on the same numbers in the reference dtype, up to the
    # precision of the narrower type.
    ref_dtype = desc.dtypes[0]
    if which == 0:  # x.astype(ref_dtype) is x: the call above
        ref = out
    else:
        ref, _ = desc.call(module, params, x.astype(ref_dtype))
    narrow = jnp.finfo(dtype).eps if jnp.issubdtype(dtype, jnp.floating) else 0.0
    tol = {"rtol": 1e-6 + 8 * float(narrow), "atol": 1e-6 + 8 * float(narrow)}
    assert_trees_close(out, ref, **tol)
