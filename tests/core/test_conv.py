"""`Conv` and `ConvTranspose` against `jax.lax` convolutions called directly.

References use the layer's own weights with channels-last dimension numbers:
`Conv` kernels are HWIO, `ConvTranspose` kernels are HWOI
(`(*kernel_size, out, in // groups)`). The "better than the ancestor" cases
(`input_dilation` with string padding, grouped transposed convolution) are
checked against references built without that feature.
"""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import blox as bx

TOL = {"rtol": 1e-5, "atol": 1e-5}
HIGHEST = jax.lax.Precision.HIGHEST
NORMAL = jax.nn.initializers.normal(1.0)
CONV_DN = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}
TRANSPOSE_DN = {1: ("NWC", "WOI", "NWC"), 2: ("NHWC", "HWOI", "NHWC")}


def _make(cls, kernel_size, out, **kwargs):
    graph = bx.Graph("net")
    rng = bx.Rng(graph / "rng")
    name = "conv" if cls is bx.Conv else "up"
    module = cls(
        graph / name, kernel_size, out, rng=rng, kernel_init=NORMAL, bias_init=NORMAL, **kwargs
    )
    return module, rng.seed(bx.Params(), seed=0)


def _run(module, params, x):
    """Output, kernel and bias of a first call (at HIGHEST precision)."""
    y, params = module(params, x, precision=HIGHEST)
    path = module.graph.path
    kernel = params[(*path, "kernel")].value
    bias = params[(*path, "bias")].value if (*path, "bias") in params else None
    return y, kernel, bias


def _one_batch(x, n):
    """`(*batch, *spatial, c)` -> `(prod(batch), *spatial, c)`."""
    lead = x.shape[: x.ndim - n - 1]
    return x.reshape((math.prod(lead),) + x.shape[x.ndim - n - 1 :]), lead


def _input(shape, seed=1):
    return jax.random.normal(jax.random.key(seed), shape)


def _conv_reference(x, kernel, bias, n, **lax_kwargs):
    flat, lead = _one_batch(x, n)
    y = jax.lax.conv_general_dilated(
        flat, kernel, dimension_numbers=CONV_DN[n], precision=HIGHEST, **lax_kwargs
    )
    y = y + bias.reshape((1,) * (y.ndim - 1) + (-1,))
    return y.reshape(lead + y.shape[1:])


def _transpose_reference(x, kernel, bias, n, **lax_kwargs):
    flat, lead = _one_batch(x, n)
    y = jax.lax.conv_transpose(
        flat, kernel, dimension_numbers=TRANSPOSE_DN[n], precision=HIGHEST, **lax_kwargs
    )
    y = y + bias.reshape((1,) * (y.ndim - 1) + (-1,))
    return y.reshape(lead + y.shape[1:])


def _pairs(value, n):
    return (value,) * n if isinstance(value, int) else tuple(value)


# -- Conv ---------------------------------------------------------------------------

CONV_CASES = {
    "1d_same": (3, 4, (2, 9, 3), {}),
    "1d_valid_strided": (3, 2, (2, 10, 3), {"strides": 2, "padding": "VALID"}),
    "2d_same_strided": ((3, 2), 4, (2, 7, 6, 3), {"strides": (2, 1)}),
    "2d_valid": ((3, 3), 4, (2, 6, 5, 2), {"padding": "VALID"}),
    "2d_explicit": ((3, 3), 4, (2, 6, 5, 2), {"padding": ((1, 2), (0, 1))}),
    "2d_kernel_dilation": ((3, 2), 4, (2, 8, 7, 2), {"kernel_dilation": (2, 3)}),
    "2d_groups": ((3, 3), 6, (2, 5, 5, 4), {"feature_group_count": 2}),
    "2d_groups_dw": ((2, 2), 6, (2, 5, 5, 3), {"feature_group_count": 3, "padding": "VALID"}),
    "2d_input_dilation_explicit": (
        (3, 3),
        4,
        (2, 4, 5, 3),
        {"input_dilation": (2, 1), "padding": ((1, 1), (2, 0))},
    ),
}


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_matches_lax(case: str) -> None:
    kernel_size, out, shape, kwargs = CONV_CASES[case]
    conv, params = _make(bx.Conv, kernel_size, out, **kwargs)
    x = _input(shape)
    y, kernel, bias = _run(conv, params, x)
    n = len(shape) - 2
    groups = kwargs.get("feature_group_count", 1)
    assert kernel.shape == _pairs(kernel_size, n) + (shape[-1] // groups, out)
    expected = _conv_reference(
        x,
        kernel,
        bias,
        n,
        window_strides=_pairs(kwargs.get("strides", 1), n),
        padding=kwargs.get("padding", "SAME"),
        lhs_dilation=_pairs(kwargs.get("input_dilation", 1), n),
        rhs_dilation=_pairs(kwargs.get("kernel_dilation", 1), n),
        feature_group_count=groups,
    )
    assert y.shape == expected.shape
    np.testing.assert_allclose(np.asarray(y), np.asarray(expected), **TOL)


@pytest.mark.parametrize("batch", [(), (3,), (2, 3)], ids=["batch0", "batch1", "batch2"])
@pytest.mark.parametrize("cls", [bx.Conv, bx.ConvTranspose], ids=["conv", "transpose"])
def test_any_number_of_batch_dims(cls, batch: tuple[int, ...]) -> None:
    module, params = _make(cls, (3, 3), 4, strides=2)
    x = _input((*batch, 5, 4, 2))
    y, kernel, bias = _run(module, params, x)
    if cls is bx.Conv:
        expected = _conv_reference(x, kernel, bias, 2, window_strides=(2, 2), padding="SAME")
    else:
        expected = _transpose_reference(x, kernel, bias, 2, strides=(2, 2), padding="SAME")
    assert y.shape[: len(batch)] == batch
    np.testing.assert_allclose(np.asarray(y), np.asarray(expected), **TOL)


def test_conv_without_bias() -> None:
    conv, params = _make(bx.Conv, 3, 4, use_bias=False)
    x = _input((2, 6, 3))
    y, kernel, bias = _run(conv, params, x)
    assert bias is None
    expected = jax.lax.conv_general_dilated(
        x, kernel, (1,), "SAME", dimension_numbers=CONV_DN[1], precision=HIGHEST
    )
    np.testing.assert_allclose(np.asarray(y), np.asarray(expected), **TOL)


def test_precision_is_passed_to_lax() -> None:
    conv, params = _make(bx.Conv, 3, 4)
    x = jnp.ones((2, 6, 3))
    _, params = conv(params, x)
    jaxpr = jax.make_jaxpr(lambda p, x: conv(p, x, precision=HIGHEST)[0])(params, x)
    (eqn,) = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "conv_general_dilated"]
    assert eqn.params["precision"] == (HIGHEST, HIGHEST)


# -- Conv with input_dilation and string padding (better than the ancestor) ---------------


def _dilated_pads(padding, sizes, kernel, strides, input_dilation, kernel_dilation):
    """'SAME'/'VALID' of the zero-dilated input as explicit pads, from the definition.

    The dilated input has `(size - 1) * d + 1` cells and the dilated kernel
    `(k - 1) * kd + 1`; 'SAME' gives `ceil(dilated / stride)` outputs with the
    extra padding split low-first, 'VALID' pads nothing.
    """
    pads, out_sizes = [], []
    for size, k, s, d, kd in zip(sizes, kernel, strides, input_dilation, kernel_dilation):
        dilated = (size - 1) * d + 1
        extent = (k - 1) * kd + 1
        if padding == "VALID":
            pads.append((0, 0))
            out_sizes.append((dilated - extent) // s + 1)
        else:
            out = -(-dilated // s)
            total = max((out - 1) * s + extent - dilated, 0)
            pads.append((total // 2, total - total // 2))
            out_sizes.append(out)
    return tuple(pads), tuple(out_sizes)


def _zero_dilate(x, dilation):
    """Insert `d - 1` zeros between neighbours along each spatial axis (numpy)."""
    x = np.asarray(x)
    spatial = x.shape[1:-1]
    out_shape = (x.shape[0],) + tuple((s - 1) * d + 1 for s, d in zip(spatial, dilation))
    out = np.zeros(out_shape + (x.shape[-1],), x.dtype)
    index = (slice(None),) + tuple(slice(None, None, d) for d in dilation)
    out[index] = x
    return out


INPUT_DILATION_CASES = {
    "2d": ((3, 3), (2, 4, 5, 3), {"input_dilation": 2}),
    "2d_mixed": (
        (3, 2),
        (2, 4, 3, 2),
        {"input_dilation": (2, 3), "strides": (2, 1), "kernel_dilation": (1, 2)},
    ),
    "1d_strided": (2, (2, 5, 2), {"input_dilation": 3, "strides": 2}),
}


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("case", INPUT_DILATION_CASES)
def test_conv_input_dilation_with_string_padding(case: str, padding: str) -> None:
    kernel_size, shape, kwargs = INPUT_DILATION_CASES[case]
    n = len(shape) - 2
    conv, params = _make(bx.Conv, kernel_size, 4, padding=padding, **kwargs)
    x = _input(shape)
    y, kernel, bias = _run(conv, params, x)
    strides = _pairs(kwargs.get("strides", 1), n)
    input_dilation = _pairs(kwargs["input_dilation"], n)
    kernel_dilation = _pairs(kwargs.get("kernel_dilation", 1), n)
    pads, out_sizes = _dilated_pads(
        padding, shape[1:-1], _pairs(kernel_size, n), strides, input_dilation, kernel_dilation
    )
    assert y.shape == (shape[0], *out_sizes, 4)
    explicit = _conv_reference(
        x,
        kernel,
        bias,
        n,
        window_strides=strides,
        padding=pads,
        lhs_dilation=input_dilation,
        rhs_dilation=kernel_dilation,
    )
    np.testing.assert_allclose(np.asarray(y), np.asarray(explicit), **TOL)
    # Independently of the pad arithmetic: dilate the input by hand and let
    # jax.lax apply the same string padding to it.
    by_hand = _conv_reference(
        jnp.asarray(_zero_dilate(x, input_dilation)),
        kernel,
        bias,
        n,
        window_strides=strides,
        padding=padding,
        rhs_dilation=kernel_dilation,
    )
    np.testing.assert_allclose(np.asarray(y), np.asarray(by_hand), **TOL)


# -- ConvTranspose -----------------------------------------------------------------------

TRANSPOSE_CASES = {
    "2d_same_stride2": ((3, 3), (2, 4, 5, 3), {"strides": 2}),
    "2d_valid_stride2": ((3, 3), (2, 4, 5, 3), {"strides": 2, "padding": "VALID"}),
    "2d_same_stride1": ((3, 2), (2, 4, 5, 3), {}),
    "2d_kernel_dilation": ((3, 2), (2, 4, 5, 3), {"strides": 2, "kernel_dilation": (2, 1)}),
    "2d_explicit": ((3, 3), (2, 4, 5, 3), {"strides": 2, "padding": ((1, 0), (2, 1))}),
    "1d_stride_above_kernel": (2, (2, 5, 3), {"strides": 3}),
    "1d_valid_stride_above_kernel": (2, (2, 5, 3), {"strides": 3, "padding": "VALID"}),
}


@pytest.mark.parametrize("case", TRANSPOSE_CASES)
def test_conv_transpose_matches_lax_conv_transpose(case: str) -> None:
    kernel_size, shape, kwargs = TRANSPOSE_CASES[case]
    n = len(shape) - 2
    up, params = _make(bx.ConvTranspose, kernel_size, 4, **kwargs)
    x = _input(shape)
    y, kernel, bias = _run(up, params, x)
    assert kernel.shape == _pairs(kernel_size, n) + (4, shape[-1])
    strides = _pairs(kwargs.get("strides", 1), n)
    padding = kwargs.get("padding", "SAME")
    expected = _transpose_reference(
        x,
        kernel,
        bias,
        n,
        strides=strides,
        padding=padding,
        rhs_dilation=_pairs(kwargs.get("kernel_dilation", 1), n),
    )
    assert y.shape == expected.shape
    if padding == "SAME":
        assert y.shape[1:-1] == tuple(s * k for s, k in zip(shape[1:-1], strides))
    np.testing.assert_allclose(np.asarray(y), np.asarray(expected), **TOL)


GROUPED_CASES = {
    "groups2_same": (2, (2, 4, 4, 6), 4, {"strides": 2}),
    "groups3_valid": (3, (2, 3, 4, 6), 6, {"strides": 2, "padding": "VALID"}),
    "groups2_dilated_1d": (2, (2, 5, 4), 2, {"strides": 1, "kernel_dilation": 2}),
}


@pytest.mark.parametrize("case", GROUPED_CASES)
def test_grouped_conv_transpose_is_concat_of_per_group_transposes(case: str) -> None:
    groups, shape, out, kwargs = GROUPED_CASES[case]
    n = len(shape) - 2
    kernel_size = (3,) * n
    up, params = _make(bx.ConvTranspose, kernel_size, out, feature_group_count=groups, **kwargs)
    x = _input(shape)
    y, kernel, bias = _run(up, params, x)
    cin, cout = shape[-1] // groups, out // groups
    assert kernel.shape == kernel_size + (out, cin)
    parts = []
    for j in range(groups):
        parts.append(
            jax.lax.conv_transpose(
                x[..., j * cin : (j + 1) * cin],
                kernel[..., j * cout : (j + 1) * cout, :],
                strides=_pairs(kwargs["strides"], n),
                padding=kwargs.get("padding", "SAME"),
                rhs_dilation=_pairs(kwargs.get("kernel_dilation", 1), n),
                dimension_numbers=TRANSPOSE_DN[n],
                precision=HIGHEST,
            )
        )
    expected = jnp.concatenate(parts, axis=-1) + bias.reshape((1,) * (n + 1) + (-1,))
    assert y.shape == expected.shape
    np.testing.assert_allclose(np.asarray(y), np.asarray(expected), **TOL)


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "name"),
    [(bx.Conv, "Conv at 'net/conv'"), (bx.ConvTranspose, "ConvTranspose at 'net/up'")],
)
def test_too_few_dims_is_a_value_error(cls, name: str) -> None:
    module, params = _make(cls, (3, 3), 4)
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"{name}: expected inputs of rank >= 3 (*batch, 2 spatial dims, channels), "
        )
        + r"got rank 2 with shape \(5, 5\)\. Fix:",
    ):
        module(params, jnp.ones((5, 5)))


@pytest.mark.parametrize(
    ("cls", "name"),
    [(bx.Conv, "Conv at 'net/conv'"), (bx.ConvTranspose, "ConvTranspose at 'net/up'")],
)
def test_channels_not_divisible_by_groups_is_a_value_error(cls, name: str) -> None:
    module, params = _make(cls, 3, 4, feature_group_count=2)
    with pytest.raises(
        ValueError,
        match=re.escape(name)
        + r": expected input channels divisible by feature_group_count=2, got 3\. Fix:",
    ):
        module(params, jnp.ones((2, 6, 3)))


def test_output_channels_not_divisible_by_groups_is_a_value_error() -> None:
    conv, params = _make(bx.Conv, 3, 5, feature_group_count=2)
    with pytest.raises(
        ValueError,
        match=r"Conv at 'net/conv': expected output_channels divisible by "
        r"feature_group_count=2, got 5\. Fix:",
    ):
        conv(params, jnp.ones((2, 6, 4)))


@pytest.mark.parametrize(
    ("padding", "got", "fix"),
    [
        ("FULL", "'FULL'", "use one of those"),
        (((1, 1),), r"\(\(1, 1\),\)", r"give one int or \(low, high\) pair per spatial dim"),
        (
            ((1, 1, 1), (0, 0)),
            r"\(\(1, 1, 1\), \(0, 0\)\)",
            r"give one int or \(low, high\) pair per spatial dim",
        ),
    ],
    ids=["bad_string", "too_few_pairs", "not_a_pair"],
)
@pytest.mark.parametrize(
    ("cls", "name", "strings"),
    [
        (
            bx.Conv,
            "Conv at 'net/conv'",
            "'SAME', 'VALID', 'CIRCULAR', 'REFLECT', 'REPLICATE', 'CAUSAL'",
        ),
        (bx.ConvTranspose, "ConvTranspose at 'net/up'", "'SAME', 'VALID', 'CIRCULAR'"),
    ],
    ids=["conv", "transpose"],
)
def test_malformed_padding_is_a_value_error(
    cls, name: str, strings: str, padding, got: str, fix: str
) -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"{name}: expected padding {strings}, an int, or 2 ints or (low, high) pairs, "
        )
        + f"got {got}\\. Fix: {fix}",
    ):
        _make(cls, (3, 3), 4, padding=padding)


@pytest.mark.parametrize("what", ["strides", "kernel_dilation", "input_dilation"])
def test_per_dim_option_of_wrong_length_is_a_value_error(what: str) -> None:
    with pytest.raises(
        ValueError,
        match=rf"Conv at 'net/conv': expected {what} to be an int or 2 ints \(one per spatial "
        rf"dim\), got \(1, 2, 3\)\. Fix: pass e\.g\. {what}=\(1, 1\)",
    ):
        _make(bx.Conv, (3, 3), 4, **{what: (1, 2, 3)})
