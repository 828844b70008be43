"""Pooling functions against an explicit numpy loop over windows.

The reference pads with NaN and reduces each window with `nanmax`/`nanmin`/
`nanmean`, so padded cells never win and never count, whatever the padding.
"""

import itertools
import math
import re

import jax
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
    return jax.random.normal(jax.random.key(seed), shape)


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
