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

from ._flax_ref import normal, normal_init

TOL = {"rtol": 1e-5, "atol": 1e-5}
HIGHEST = jax.lax.Precision.HIGHEST
NORMAL = normal_init(1.0)  # jax.nn.initializers.normal(1.0)'s values, no compile per shape
ZEROS = jax.nn.initializers.zeros  # for params made by eval_shape, then filled
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
    return normal(seed, shape)  # jax.random.normal's values, no compile per shape


_REFERENCES: dict = {}


def _compiled(reference):
    """`reference` as one compiled program per (n, lax options): no op-by-op compiles."""

    def call(x, kernel, bias, n, **lax_kwargs):
        key = (reference, n, repr(sorted(lax_kwargs.items())))
        if key not in _REFERENCES:
            _REFERENCES[key] = jax.jit(lambda x, k, b: reference(x, k, b, n, **lax_kwargs))
        return _REFERENCES[key](x, kernel, bias)

    return call


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


_conv_reference = _compiled(_conv_reference)
_transpose_reference = _compiled(_transpose_reference)


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


# -- agreement with flax.linen (params copied by path) -------------------------------------

# Forward and gradient agreement is 1e-6 (float32): both sides run the same
# `jax.lax` convolution at HIGHEST precision, so differences are rounding only.
FLAX_TOL = {"rtol": 1e-6, "atol": 1e-6}


def _np_input(shape, seed=1):
    """Inputs from numpy: a jax.random draw would compile a sampler per shape."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _flax_pair(bx_cls, flax_cls, kernel_size, features, x, copy=None, **kwargs):
    """A blox layer holding a flax layer's params (random, copied by path).

    Shapes come from `jax.eval_shape` on both sides, so nothing is compiled
    before the one comparison program. `copy(name, value)` maps a flax param
    to blox's layout (default: as is, asserting the path and shape match).
    """
    flax_module = flax_cls(features=features, kernel_size=kernel_size, precision=HIGHEST, **kwargs)
    shapes = jax.eval_shape(flax_module.init, jax.random.key(0), x)["params"]
    values = {
        name: _np_input(shape.shape, seed=i) for i, (name, shape) in enumerate(shapes.items())
    }
    module = bx_cls(bx.Graph("net") / "m", kernel_size, features, kernel_init=ZEROS, **kwargs)
    params = jax.eval_shape(lambda x: module(bx.Params(), x)[1], x)
    assert sorted(p[-1] for p in params.keys()) == sorted(values)
    for name, value in values.items():
        value = value if copy is None else copy(name, value)
        assert params[("net", "m", name)].value.shape == value.shape
        params = module.set_param(params, name, jnp.asarray(value))
    return module, params, flax_module, {"params": values}


def _assert_agrees_with_flax(module, params, flax_module, variables, x, copy_grad=None):
    """Forward and gradients (every param and the input), one compiled program."""

    @jax.jit
    def both(params, flax_params, x):
        def blox_loss(params, x):
            out = module(params, x, precision=HIGHEST)[0]
            return jnp.sum(jnp.sin(out)), out

        def flax_loss(flax_params, x):
            out = flax_module.apply({"params": flax_params}, x)
            return jnp.sum(jnp.sin(out)), out

        ours = jax.grad(blox_loss, argnums=(0, 1), has_aux=True)(params, x)
        theirs = jax.grad(flax_loss, argnums=(0, 1), has_aux=True)(flax_params, x)
        return ours, theirs

    ((grads, grad_x), y), ((flax_grads, flax_grad_x), expected) = both(
        params, variables["params"], x
    )
    assert y.shape == expected.shape
    np.testing.assert_allclose(np.asarray(y), np.asarray(expected), **FLAX_TOL)
    np.testing.assert_allclose(np.asarray(grad_x), np.asarray(flax_grad_x), **FLAX_TOL)
    for name, value in flax_grads.items():
        value = value if copy_grad is None else copy_grad(name, value)
        got = grads[("net", "m", name)].value
        np.testing.assert_allclose(np.asarray(got), np.asarray(value), **FLAX_TOL)


FLAX_CONV_CASES = {
    "circular_strided_dilated": (
        (3, 2),
        (2, 7, 6, 3),
        {"padding": "CIRCULAR", "strides": (2, 1), "kernel_dilation": (1, 2)},
    ),
    "reflect": ((3, 3), (2, 5, 6, 2), {"padding": "REFLECT"}),
    "causal_dilated": (3, (2, 9, 3), {"padding": "CAUSAL", "kernel_dilation": 2}),
    "int_padding": ((3, 3), (2, 5, 4, 2), {"padding": 2, "strides": 2}),
    "per_dim_int_and_pair": ((3, 2), (2, 5, 6, 2), {"padding": (1, (0, 2))}),
    "groups_mask": ((2, 2), (1, 4, 5, 4), {"feature_group_count": 2, "mask": "tril"}),
}


def _with_mask(kernel_shape, kwargs):
    if kwargs.get("mask") == "tril":
        kwargs = {**kwargs, "mask": jnp.tril(jnp.ones(kernel_shape))}
    return kwargs


@pytest.mark.parametrize("case", FLAX_CONV_CASES)
def test_conv_matches_flax_forward_and_gradients(case: str) -> None:
    import flax.linen as fnn

    kernel_size, shape, kwargs = FLAX_CONV_CASES[case]
    ks = _pairs(kernel_size, len(shape) - 2)
    kwargs = _with_mask(ks + (shape[-1] // kwargs.get("feature_group_count", 1), 4), kwargs)
    x = _np_input(shape)
    pair = _flax_pair(bx.Conv, fnn.Conv, kernel_size, 4, x, **kwargs)
    _assert_agrees_with_flax(*pair, x)


FLAX_LOCAL_CASES = {
    "same_strided_2d": ((3, 2), (2, 6, 5, 3), {"strides": (2, 1)}),
    "valid_1d_mask": (3, (2, 8, 3), {"padding": "VALID", "mask": "tril"}),
    "circular_dilated": ((2, 2), (1, 5, 4, 2), {"padding": "CIRCULAR", "kernel_dilation": 2}),
}


@pytest.mark.parametrize("case", FLAX_LOCAL_CASES)
def test_conv_local_matches_flax_forward_and_gradients(case: str) -> None:
    import flax.linen as fnn

    kernel_size, shape, kwargs = FLAX_LOCAL_CASES[case]
    if kwargs.get("mask") == "tril":
        kwargs = {**kwargs, "mask": jnp.tril(jnp.ones((6, 9, 4)))}  # flax's doc example
    x = _np_input(shape)
    pair = _flax_pair(bx.ConvLocal, fnn.ConvLocal, kernel_size, 4, x, **kwargs)
    _assert_agrees_with_flax(*pair, x)


FLAX_TRANSPOSE_CASES = {
    "flipped_circular": (
        (4, 4),
        (1, 5, 4, 3),
        {"strides": 2, "padding": "CIRCULAR", "transpose_kernel": True},
    ),
    "flipped_pairs_dilated": (
        (3, 3),
        (1, 4, 4, 2),
        {
            "strides": 2,
            "padding": ((1, 2), (0, 1)),
            "kernel_dilation": (2, 1),
            "transpose_kernel": True,
        },
    ),
    "flipped_mask_1d": (
        3,
        (2, 5, 3),
        {"strides": 3, "padding": "VALID", "transpose_kernel": True, "mask": "tril"},
    ),
    "stored_circular": ((2, 3), (1, 5, 4, 3), {"strides": (3, 1), "padding": "CIRCULAR"}),
}


@pytest.mark.parametrize("case", FLAX_TRANSPOSE_CASES)
def test_conv_transpose_matches_flax_forward_and_gradients(case: str) -> None:
    import flax.linen as fnn

    kernel_size, shape, kwargs = FLAX_TRANSPOSE_CASES[case]
    flipped = kwargs.get("transpose_kernel", False)
    ks = _pairs(kernel_size, len(shape) - 2)
    if kwargs.get("mask") == "tril":
        mask = jnp.tril(jnp.ones(ks + ((4, shape[-1]) if flipped else (shape[-1], 4))))
        # blox's stored layout is (..., out, in): the same mask, axes swapped.
        kwargs = {**kwargs, "mask": mask}
    # flax's transpose_kernel=True kernel copies by path; its default kernel
    # (*k, in, out) is blox's default (*k, out, in) with the last two axes swapped.
    swap = None if flipped else (lambda name, v: np.swapaxes(v, -1, -2) if name == "kernel" else v)
    x = _np_input(shape)
    flax_module = fnn.ConvTranspose(
        features=4, kernel_size=kernel_size, precision=HIGHEST, **kwargs
    )
    shapes = jax.eval_shape(flax_module.init, jax.random.key(0), x)["params"]
    values = {n: _np_input(v.shape, seed=i) for i, (n, v) in enumerate(shapes.items())}
    if not flipped and "mask" in kwargs:
        kwargs = {**kwargs, "mask": jnp.swapaxes(kwargs["mask"], -1, -2)}
    module = bx.ConvTranspose(bx.Graph("net") / "m", kernel_size, 4, kernel_init=ZEROS, **kwargs)
    params = jax.eval_shape(lambda x: module(bx.Params(), x)[1], x)
    for name, value in values.items():
        value = value if swap is None else swap(name, value)
        assert params[("net", "m", name)].value.shape == value.shape
        params = module.set_param(params, name, jnp.asarray(value))
    _assert_agrees_with_flax(module, params, flax_module, {"params": values}, x, copy_grad=swap)


def test_conv_dtype_and_param_dtype_match_flax() -> None:
    import flax.linen as fnn

    x = _np_input((2, 6, 5, 3))
    pair = _flax_pair(bx.Conv, fnn.Conv, (3, 3), 4, x, dtype=jnp.bfloat16, param_dtype=jnp.float32)
    module, params, flax_module, variables = pair
    assert params[("net", "m", "kernel")].value.dtype == jnp.float32
    y, expected = jax.jit(
        lambda p, v, x: (module(p, x, precision=HIGHEST)[0], flax_module.apply(v, x))
    )(params, variables, x)
    assert y.dtype == expected.dtype == jnp.bfloat16
    # Both cast to bfloat16 before the same convolution: identical bits.
    np.testing.assert_array_equal(np.asarray(y, np.float32), np.asarray(expected, np.float32))


@pytest.mark.parametrize("cls", [bx.Conv, bx.ConvTranspose, bx.ConvLocal], ids=lambda c: c.__name__)
def test_param_dtype_sets_the_stored_dtype_and_dtype_the_compute_dtype(cls) -> None:
    x = jax.ShapeDtypeStruct((2, 5, 3), jnp.float32)
    zeros = jax.nn.initializers.zeros
    half = cls(bx.Graph("net") / "m", 3, 4, param_dtype=jnp.bfloat16, kernel_init=zeros)
    y, params = jax.eval_shape(lambda x: half(bx.Params(), x), x)
    assert {p.value.dtype for p in params.values()} == {jnp.dtype(jnp.bfloat16)}
    assert y.dtype == jnp.float32  # float32 inputs promote the bfloat16 params
    low = cls(bx.Graph("net") / "m", 3, 4, dtype=jnp.bfloat16, kernel_init=zeros)
    y, params = jax.eval_shape(lambda x: low(bx.Params(), x), x)
    assert {p.value.dtype for p in params.values()} == {jnp.dtype(jnp.float32)}
    assert y.dtype == jnp.bfloat16


# -- PyTorch semantics through explicit pairs (what blox.eager.torch_nn builds on) ---------


def _np_params(module, x):
    """`module`'s params with random numpy values, made without compiling anything."""
    params = jax.eval_shape(lambda x: module(bx.Params(), x)[1], x)
    for i, (path, param) in enumerate(sorted(params.items())):
        params = module.set_param(params, path[-1], jnp.asarray(_np_input(param.value.shape, i)))
    return params


def _forward(module, params, x):
    return jax.jit(lambda p, x: module(p, x, precision=HIGHEST)[0])(params, x)


def test_flipped_grouped_conv_transpose_with_pairs_matches_torch() -> None:
    import torch

    # torch: weight (in, out // groups, kh, kw); padding p, output_padding q and
    # dilation d are the pairs (d * (k - 1) - p, d * (k - 1) - p + q) of blox's
    # transpose_kernel=True kernel (kh, kw, out // groups, in).
    stride, padding, output_padding, groups, dilation = (2, 3), (1, 0), (1, 2), 2, (1, 2)
    kernel_size, cin, cout = (3, 2), 4, 6
    pads = tuple(
        (d * (k - 1) - p, d * (k - 1) - p + q)
        for k, p, q, d in zip(kernel_size, padding, output_padding, dilation)
    )
    up = bx.ConvTranspose(
        bx.Graph("net") / "up",
        kernel_size,
        cout,
        strides=stride,
        padding=pads,
        kernel_dilation=dilation,
        feature_group_count=groups,
        transpose_kernel=True,
        channels_first=True,
        kernel_init=ZEROS,
    )
    x = _np_input((2, cin, 4, 3))
    params = _np_params(up, x)
    kernel, bias = (np.array(params[("net", "up", n)].value) for n in ("kernel", "bias"))
    assert kernel.shape == kernel_size + (cout // groups, cin)
    expected = torch.nn.functional.conv_transpose2d(
        torch.from_numpy(x),
        torch.from_numpy(np.ascontiguousarray(np.transpose(kernel, (3, 2, 0, 1)))),
        torch.from_numpy(bias),
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        groups=groups,
        dilation=dilation,
    ).numpy()
    y = _forward(up, params, x)
    assert y.shape == expected.shape
    # torch's CPU convolution accumulates in its own order: a few float32 ulps.
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("padding", "mode"),
    [("REPLICATE", "replicate"), ("REFLECT", "reflect"), ("CIRCULAR", "circular")],
)
def test_padding_modes_match_torch_padding_modes(padding: str, mode: str) -> None:
    import torch

    x = _np_input((2, 3, 5, 6))
    conv = bx.Conv(
        bx.Graph("net") / "conv",
        (3, 4),
        2,
        padding=padding,
        channels_first=True,
        strides=(1, 2),
        kernel_init=ZEROS,
    )
    params = _np_params(conv, x)
    kernel, bias = (np.array(params[("net", "conv", n)].value) for n in ("kernel", "bias"))
    # blox pads ((e - 1) // 2, e // 2): (1, 1) for the height 3, (1, 2) for the
    # width 4; torch's F.pad lists (left, right, top, bottom).
    padded = torch.nn.functional.pad(torch.from_numpy(x), (1, 2, 1, 1), mode=mode)
    expected = torch.nn.functional.conv2d(
        padded,
        torch.from_numpy(np.ascontiguousarray(np.transpose(kernel, (3, 2, 0, 1)))),
        torch.from_numpy(bias),
        stride=(1, 2),
    ).numpy()
    # torch's CPU convolution accumulates in its own order: a few float32 ulps.
    np.testing.assert_allclose(
        np.asarray(_forward(conv, params, x)), expected, rtol=1e-5, atol=1e-5
    )


# -- channels_first, batch_group_count ------------------------------------------------------

LAYOUT_CASES = {
    "conv_groups_input_dilation": (
        bx.Conv,
        (3, 2),
        {"feature_group_count": 2, "input_dilation": 2, "padding": "SAME"},
    ),
    "transpose_flipped_circular": (
        bx.ConvTranspose,
        (3, 2),
        {"strides": 2, "padding": "CIRCULAR", "transpose_kernel": True, "feature_group_count": 2},
    ),
    "local_strided_causal_1d": (bx.ConvLocal, 3, {"strides": 2, "padding": "CAUSAL"}),
}


@pytest.mark.parametrize("case", LAYOUT_CASES)
def test_channels_first_equals_channels_last_transposed(case: str) -> None:
    cls, kernel_size, kwargs = LAYOUT_CASES[case]
    n = 1 if isinstance(kernel_size, int) else len(kernel_size)
    x = _np_input((3, 2) + (5, 4)[:n] + (4,))  # two batch dims
    last = cls(bx.Graph("net") / "m", kernel_size, 4, kernel_init=ZEROS, **kwargs)
    first = cls(
        bx.Graph("net") / "m", kernel_size, 4, channels_first=True, kernel_init=ZEROS, **kwargs
    )
    params = _np_params(last, x)
    x_first = np.moveaxis(x, -1, 2)
    assert jax.eval_shape(lambda x: first(bx.Params(), x)[1], x_first).keys() == params.keys()
    y_last, y_first = jax.jit(
        lambda p: (
            last(p, x, precision=HIGHEST)[0],
            first(p, x_first, precision=HIGHEST)[0],
        )
    )(params)
    np.testing.assert_allclose(
        np.asarray(y_first), np.asarray(jnp.moveaxis(y_last, -1, 2)), **FLAX_TOL
    )


def test_batch_group_count_is_per_group_convolution_of_batch_slices() -> None:
    # jax.lax semantics (mlax's batch_group_count): batch group j (rows
    # j * N / g ... (j + 1) * N / g) is convolved with output channels group j.
    groups = 2
    conv = bx.Conv(
        bx.Graph("net") / "conv",
        (2, 2),
        4,
        batch_group_count=groups,
        padding="VALID",
        kernel_init=ZEROS,
    )
    x = _np_input((4, 5, 4, 3))
    params = _np_params(conv, x)
    kernel, bias = (params[("net", "conv", n)].value for n in ("kernel", "bias"))
    assert kernel.shape == (2, 2, 3, 4)

    def reference(x, kernel, bias):
        per, out_per = 4 // groups, 4 // groups
        parts = [
            jax.lax.conv_general_dilated(
                x[j * per : (j + 1) * per],
                kernel[..., j * out_per : (j + 1) * out_per],
                (1, 1),
                "VALID",
                dimension_numbers=CONV_DN[2],
                precision=HIGHEST,
            )
            for j in range(groups)
        ]
        return jnp.concatenate(parts, axis=-1) + bias.reshape(1, 1, 1, -1)

    y, expected = jax.jit(
        lambda p, x: (conv(p, x, precision=HIGHEST)[0], reference(x, kernel, bias))
    )(params, x)
    assert y.shape == (2, 4, 3, 4)
    np.testing.assert_allclose(np.asarray(y), np.asarray(expected), **FLAX_TOL)


# -- errors of the new options --------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "name", "shape"),
    [
        (bx.Conv, "Conv at 'net/conv'", (3, 3, 4)),
        (bx.ConvTranspose, "ConvTranspose at 'net/up'", (3, 4, 3)),
        (bx.ConvLocal, "ConvLocal at 'net/up'", (4, 9, 4)),
    ],
    ids=["conv", "transpose", "local"],
)
def test_mask_of_wrong_shape_is_a_value_error(cls, name: str, shape) -> None:
    module, params = _make(cls, 3, 4, mask=jnp.ones((3, 3, 3)), padding="VALID")
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"{name}: expected a mask of the kernel's shape {shape}, got shape (3, 3, 3). Fix:"
        ),
    ):
        module(params, jnp.ones((2, 6, 3)))


def test_causal_padding_of_a_2d_kernel_is_a_value_error() -> None:
    with pytest.raises(
        ValueError,
        match=r"Conv at 'net/conv': expected a 1-D kernel for padding='CAUSAL', got 2 spatial "
        r"dims\. Fix:",
    ):
        _make(bx.Conv, (3, 3), 4, padding="causal")


def test_padding_of_the_wrong_type_is_a_type_error() -> None:
    with pytest.raises(
        TypeError,
        match=r"Conv at 'net/conv': expected padding 'SAME', .* pairs, got float\. Fix:",
    ):
        _make(bx.Conv, 3, 4, padding=1.5)


def test_both_group_counts_is_a_value_error() -> None:
    with pytest.raises(
        ValueError,
        match=r"Conv at 'net/conv': expected feature_group_count or batch_group_count to be 1, "
        r"got 2 and 2\. Fix:",
    ):
        _make(bx.Conv, 3, 4, feature_group_count=2, batch_group_count=2)


@pytest.mark.parametrize("shape", [(3, 6, 2), (2, 2, 6, 2)], ids=["indivisible", "two_batch_dims"])
def test_batch_group_count_needs_one_divisible_batch_axis(shape) -> None:
    conv, params = _make(bx.Conv, 3, 4, batch_group_count=2)
    with pytest.raises(
        ValueError,
        match=r"Conv at 'net/conv': expected one batch axis and a batch size and output_channels "
        r"divisible by batch_group_count=2, got batch dims \(.*\) and 4 output channels\. Fix:",
    ):
        conv(params, jnp.ones(shape))
