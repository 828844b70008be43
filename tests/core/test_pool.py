"""Pooling functions against an explicit numpy loop over windows.

The reference pads with NaN and reduces each window with `nanmax`/`nanmin`/
`nanmean`, so padded cells never win and never count, whatever the padding.
"""

import functools
import itertools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import blox as bx

TOL = {"rtol": 1e-6, "atol": 1e-6}
POOLS = {"max": (bx.max_pool, np.nanmax), "min": (bx.min_pool, np.nanmin)}
POOLS["avg"] = (bx.avg_pool, np.nanmean)


def _same_pads(sizes, window, strides):
    """TF/XLA 'SAME': `ceil(size / stride)` outputs, extra padding low-first."""
    pads = []
    for size, w, s in zip(sizes, window, strides):
        out = -(-size // s)
        total = max((out - 1) * s + w - size, 0)
        pads.append((total // 2, total - total // 2))
    return pads


def _reference(x, window, strides, padding, reduce):
    """Loop over every output cell of `(batch, *spatial, channels)` input."""
    x = np.asarray(x, np.float64)
    n = len(window)
    sizes = x.shape[1:-1]
    if padding == "VALID":
        pads = [(0, 0)] * n
    elif padding == "SAME":
        pads = _same_pads(sizes, window, strides)
    else:
        pads = list(padding)
    padded = np.pad(x, [(0, 0), *pads, (0, 0)], constant_values=np.nan)
    out_sizes = [
        (size + lo + hi - w) // s + 1 for size, (lo, hi), w, s in zip(sizes, pads, window, strides)
    ]
    out = np.empty((x.shape[0], *out_sizes, x.shape[-1]))
    for index in itertools.product(*(range(o) for o in out_sizes)):
        window_slice = tuple(slice(i * s, i * s + w) for i, s, w in zip(index, strides, window))
        cells = padded[(slice(None), *window_slice, slice(None))]
        flat = cells.reshape(x.shape[0], -1, x.shape[-1])
        out[(slice(None), *index, slice(None))] = reduce(flat, axis=1)
    return out


def _input(shape, seed=0):
    """Inputs from numpy: a jax.random draw would compile a sampler per shape."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


CASES = {
    "2d_valid_default_strides": ((2, 2), None, "VALID", (2, 5, 6, 3)),
    "2d_valid_strided": ((3, 2), (2, 1), "VALID", (2, 7, 5, 2)),
    "2d_same_stride1": ((3, 3), 1, "SAME", (2, 5, 4, 2)),
    "2d_same_strided": ((2, 3), (2, 2), "SAME", (2, 5, 7, 2)),
    "2d_explicit": ((3, 2), (1, 2), ((1, 2), (0, 1)), (2, 4, 5, 2)),
    "1d_int_window": (3, None, "VALID", (2, 9, 2)),
    "1d_same": (4, 3, "SAME", (2, 10, 2)),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("kind", POOLS)
def test_pool_matches_numpy_loop(kind: str, case: str) -> None:
    window, strides, padding, shape = CASES[case]
    fn, reduce = POOLS[kind]
    x = _input(shape)
    y = fn(x, window, strides=strides, padding=padding)
    window_t = (window,) if isinstance(window, int) else window
    n = len(window_t)
    if strides is None:
        strides_t = window_t  # strides=None means strides = window_shape
    else:
        strides_t = (strides,) * n if isinstance(strides, int) else strides
    expected = _reference(x, window_t, strides_t, padding, reduce)
    assert y.shape == expected.shape
    np.testing.assert_allclose(np.asarray(y), expected, **TOL)


def test_avg_pool_counts_only_unpadded_cells() -> None:
    # Constant input: every window average is the constant, borders included.
    x = np.full((1, 4, 5, 1), 3.0, np.float32)
    y = bx.avg_pool(x, (3, 3), strides=1, padding="SAME")
    np.testing.assert_allclose(np.asarray(y), np.full((1, 4, 5, 1), 3.0), **TOL)
    y = bx.avg_pool(x, (2, 2), strides=1, padding=((1, 1), (1, 1)))
    np.testing.assert_allclose(np.asarray(y), np.full((1, 5, 6, 1), 3.0), **TOL)


@pytest.mark.parametrize("batch", [(), (3,), (2, 3)], ids=["batch0", "batch1", "batch2"])
@pytest.mark.parametrize("kind", POOLS)
def test_any_number_of_batch_dims(kind: str, batch: tuple[int, ...]) -> None:
    fn, reduce = POOLS[kind]
    x = _input((*batch, 5, 4, 2))
    y = fn(x, (2, 2), strides=1, padding="SAME")
    flat = np.asarray(x).reshape((math.prod(batch), 5, 4, 2))
    expected = _reference(flat, (2, 2), (1, 1), "SAME", reduce)
    assert y.shape == (*batch, 5, 4, 2)
    np.testing.assert_allclose(np.asarray(y), expected.reshape(y.shape), **TOL)


@pytest.mark.parametrize("kind", POOLS)
def test_too_few_dims_is_a_value_error(kind: str) -> None:
    fn, _ = POOLS[kind]
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"{kind}_pool: expected inputs of rank >= 3 (*batch, 2 spatial dims, channels), "
            "got rank 2 with shape (4, 4). Fix:"
        ),
    ):
        fn(np.ones((4, 4), np.float32), (2, 2))


@pytest.mark.parametrize(
    ("padding", "got"),
    [("FULL", "'FULL'"), (((1, 1),), r"\(\(1, 1\),\)")],
    ids=["bad_string", "too_few_pairs"],
)
@pytest.mark.parametrize("kind", POOLS)
def test_malformed_padding_is_a_value_error(kind: str, padding, got: str) -> None:
    fn, _ = POOLS[kind]
    with pytest.raises(
        ValueError,
        match=rf"{kind}_pool: expected padding 'SAME', 'VALID', an int, or 2 ints or \(low, high\) pairs, "
        rf"got {got}\. Fix:",
    ):
        fn(np.ones((1, 4, 4, 1), np.float32), (2, 2), padding=padding)


def test_strides_of_wrong_length_is_a_value_error() -> None:
    with pytest.raises(
        ValueError,
        match=r"max_pool: expected strides to be an int or 2 ints \(one per spatial dim\), "
        r"got \(1, 1, 1\)\. Fix:",
    ):
        bx.max_pool(np.ones((1, 4, 4, 1), np.float32), (2, 2), strides=(1, 1, 1))


# -- dilations, sum_pool, count_include_pad, padding forms ----------------------------------


def _dilated_reference(x, window, strides, pads, window_dilation, input_dilation, reduce):
    """The numpy loop over a NaN-holed dilated input with spaced window cells."""
    x = np.asarray(x, np.float64)
    sizes = [(s - 1) * d + 1 for s, d in zip(x.shape[1:-1], input_dilation)]
    holed = np.full((x.shape[0], *sizes, x.shape[-1]), np.nan)
    holed[(slice(None), *(slice(None, None, d) for d in input_dilation), slice(None))] = x
    padded = np.pad(holed, [(0, 0), *pads, (0, 0)], constant_values=np.nan)
    extents = [(w - 1) * d + 1 for w, d in zip(window, window_dilation)]
    out_sizes = [
        (size + lo + hi - e) // s + 1 for size, (lo, hi), e, s in zip(sizes, pads, extents, strides)
    ]
    out = np.empty((x.shape[0], *out_sizes, x.shape[-1]))
    for index in itertools.product(*(range(o) for o in out_sizes)):
        cells = padded[
            (
                slice(None),
                *(
                    slice(i * s, i * s + e, d)
                    for i, s, e, d in zip(index, strides, extents, window_dilation)
                ),
                slice(None),
            )
        ]
        out[(slice(None), *index, slice(None))] = reduce(
            cells.reshape(x.shape[0], -1, x.shape[-1]), axis=1
        )
    return out


DILATION_CASES = {
    "window_dilation_2d": ((2, 2), (1, 2), ((1, 0), (0, 1)), (2, 1), (1, 1), (2, 6, 7, 2)),
    "input_dilation_1d": ((3,), (2,), ((1, 1),), (1,), (2,), (2, 6, 2)),
    "both_2d": ((2, 3), (2, 1), ((0, 1), (2, 2)), (1, 2), (2, 1), (1, 5, 4, 1)),
}
REDUCERS = {
    "max": (bx.max_pool, np.nanmax),
    "sum": (bx.sum_pool, np.nansum),
    "avg": (bx.avg_pool, np.nanmean),
    "avg_include_pad": (
        functools.partial(bx.avg_pool, count_include_pad=True),
        None,  # nansum / prod(window): padded and hole cells count as zeros
    ),
}


@pytest.mark.parametrize("kind", REDUCERS)
@pytest.mark.parametrize("case", DILATION_CASES)
def test_dilated_pools_match_numpy_loop(case: str, kind: str) -> None:
    window, strides, pads, window_dilation, input_dilation, shape = DILATION_CASES[case]
    fn, reduce = REDUCERS[kind]
    if reduce is None:
        reduce = lambda cells, axis: np.nansum(cells, axis=axis) / math.prod(window)  # noqa: E731
    x = _input(shape)
    y = fn(x, window, strides, pads, window_dilation=window_dilation, input_dilation=input_dilation)
    expected = _dilated_reference(x, window, strides, pads, window_dilation, input_dilation, reduce)
    assert y.shape == expected.shape
    np.testing.assert_allclose(np.asarray(y), expected, **TOL)


def test_pool_with_a_custom_reduction_matches_numpy_loop() -> None:
    x = jnp.abs(_input((2, 5, 4, 2))) + 0.5
    y = bx.pool(x, 1.0, jax.lax.mul, (2, 2), (1, 2), "SAME", window_dilation=(2, 1))
    pads = _same_pads((5, 4), (3, 2), (1, 2))  # 'SAME' for the dilated window, (3, 2)
    expected = _dilated_reference(x, (2, 2), (1, 2), pads, (2, 1), (1, 1), np.nanprod)
    np.testing.assert_allclose(
        np.asarray(y), expected, rtol=1e-5, atol=1e-6
    )  # products: a few ulps


@pytest.mark.parametrize("padding", [1, (1, (0, 2))], ids=["int", "per_dim"])
def test_int_and_per_dim_padding_equal_explicit_pairs(padding) -> None:
    x = _input((2, 5, 4, 2))
    pairs = ((1, 1), (1, 1)) if padding == 1 else ((1, 1), (0, 2))
    for fn in (bx.max_pool, bx.avg_pool, bx.sum_pool):
        np.testing.assert_array_equal(
            np.asarray(fn(x, (2, 3), 1, padding)), np.asarray(fn(x, (2, 3), 1, pairs))
        )


@pytest.mark.parametrize(
    "fn", [bx.max_pool, bx.avg_pool, bx.sum_pool, bx.min_pool], ids=lambda f: f.__name__
)
def test_channels_first_equals_channels_last_transposed(fn) -> None:
    x = _input((3, 2, 5, 6, 4))  # two batch dims
    last = fn(x, (2, 3), (1, 2), "SAME")
    first = fn(jnp.moveaxis(x, -1, 2), (2, 3), (1, 2), "SAME", channels_first=True)
    np.testing.assert_array_equal(np.asarray(first), np.asarray(jnp.moveaxis(last, -1, 2)))


# -- agreement with flax.linen (forward and gradients) --------------------------------------

# flax's `strides=None` means 1 and blox's means the window, so the cases pass
# strides; flax's avg_pool counts padding by default, blox's does not, so they
# pass count_include_pad. Same reduce_window: agreement within 1e-6.
FLAX_POOL_CASES = {
    "max_same": ("max_pool", {}, ((3, 2), (2, 1), "SAME")),
    "min_pairs": ("min_pool", {}, ((2, 2), (1, 2), ((1, 0), (2, 1)))),
    "avg_same_exclude_pad": ("avg_pool", {"count_include_pad": False}, ((3, 3), (2, 1), "SAME")),
    "avg_pairs_include_pad": (
        "avg_pool",
        {"count_include_pad": True},
        ((2, 3), (1, 1), ((1, 1), (0, 2))),
    ),
    "avg_valid_include_pad": ("avg_pool", {"count_include_pad": True}, ((2, 2), (2, 2), "VALID")),
}


@pytest.mark.parametrize("case", FLAX_POOL_CASES)
def test_pools_match_flax_forward_and_gradients(case: str) -> None:
    import flax.linen as fnn

    name, options, (window, strides, padding) = FLAX_POOL_CASES[case]
    ours, theirs = getattr(bx, name), getattr(fnn.pooling, name)
    x = _input((2, 5, 6, 3))

    @jax.jit
    def both(x):
        def loss(fn, x):
            out = fn(x, window, strides, padding, **options)
            return jnp.sum(jnp.sin(out)), out

        return jax.grad(loss, 1, has_aux=True)(ours, x), jax.grad(loss, 1, has_aux=True)(theirs, x)

    (grad, y), (flax_grad, expected) = both(x)
    np.testing.assert_allclose(np.asarray(y), np.asarray(expected), **TOL)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(flax_grad), **TOL)


def test_pool_matches_flax_pool() -> None:
    import flax.linen as fnn

    x = _input((2, 5, 6, 3))
    y = bx.pool(x, 0.0, jax.lax.add, (2, 3), (1, 2), ((1, 0), (0, 1)))
    expected = fnn.pool(x, 0.0, jax.lax.add, (2, 3), (1, 2), ((1, 0), (0, 1)))
    np.testing.assert_allclose(np.asarray(y), np.asarray(expected), **TOL)


@pytest.mark.parametrize("what", ["window_dilation", "input_dilation"])
def test_dilation_of_wrong_length_is_a_value_error(what: str) -> None:
    with pytest.raises(
        ValueError,
        match=rf"sum_pool: expected {what} to be an int or 2 ints \(one per spatial dim\), "
        r"got \(1, 2, 3\)\. Fix:",
    ):
        bx.sum_pool(np.ones((1, 4, 4, 1), np.float32), (2, 2), **{what: (1, 2, 3)})


def test_channels_first_too_few_dims_names_the_layout() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(
            "avg_pool: expected inputs of rank >= 3 (*batch, channels, 2 spatial dims), got rank 2"
        ),
    ):
        bx.avg_pool(np.ones((4, 4), np.float32), (2, 2), channels_first=True)
