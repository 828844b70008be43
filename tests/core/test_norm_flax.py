"""Normalisation layers against flax.linen (params copied by path) and PyTorch's BatchNorm."""

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import blox as bx

from ._flax_ref import agree, close, inputs, to_blox

P = ("net", "n")


def _node() -> bx.Graph:
    return bx.Graph("net") / "n"


# -- LayerNorm / RMSNorm over several axes ---------------------------------------------


@pytest.mark.parametrize(
    "axes, fast",
    [(((-2, -1), (-2, -1)), True), (((1, 2), -1), False)],
    ids=["torch_normalized_shape_fast_masked", "instance_like_two_pass"],
)
def test_layer_norm_reduction_and_feature_axes_match_flax(axes, fast) -> None:
    reduction, feature = axes
    options = dict(reduction_axes=reduction, feature_axes=feature, epsilon=1e-6)
    ln = bx.LayerNorm(_node(), **options, use_fast_variance=fast)
    mask = {"mask": jax.random.bernoulli(jax.random.key(2), 0.7, (2, 3, 4))} if fast else {}
    flax_ln = fnn.LayerNorm(**options, use_fast_variance=fast)
    agree(flax_ln, ln, inputs((2, 3, 4)), P, flax_kwargs=mask, blox_kwargs=mask)


def test_rms_norm_axes_and_mask_match_flax() -> None:
    mask = {"mask": jnp.array([[True, True, False, True, False]] * 3)}
    agree(
        fnn.RMSNorm(reduction_axes=(0, 1), feature_axes=0),
        bx.RMSNorm(_node(), epsilon=1e-6, reduction_axes=(0, 1), feature_axes=0),
        inputs((3, 5)),
        P,
        flax_kwargs=mask,
        blox_kwargs=mask,
    )


def test_norm_dtypes_match_flax_bfloat16_compute_float32_params() -> None:
    x = inputs((4, 6), dtype=jnp.bfloat16)
    ln = bx.LayerNorm(_node(), epsilon=1e-6, use_fast_variance=True, dtype=jnp.bfloat16)
    params = agree(fnn.LayerNorm(dtype=jnp.bfloat16), ln, x, P)
    assert params[P + ("scale",)].value.dtype == jnp.float32
    # bf16 params, f32 result: statistics still in float32.
    gn = bx.GroupNorm(_node(), num_groups=3, param_dtype=jnp.bfloat16, dtype=jnp.float32)
    flax_gn = fnn.GroupNorm(num_groups=3, param_dtype=jnp.bfloat16, dtype=jnp.float32)
    params = agree(flax_gn, gn, x, P)
    assert params[P + ("bias",)].value.dtype == jnp.bfloat16


# -- GroupNorm / InstanceNorm ----------------------------------------------------------


@pytest.mark.parametrize(
    "options, masked",
    [
        (dict(num_groups=None, group_size=2, use_fast_variance=False, epsilon=1e-3), True),
        (dict(num_groups=3, reduction_axes=(2, 3), use_bias=False), False),
    ],
    ids=["group_size_two_pass_masked", "reduction_axes"],
)
def test_group_norm_matches_flax(options, masked) -> None:
    x = inputs((2, 3, 2, 6))
    mask = {"mask": jax.random.bernoulli(jax.random.key(2), 0.7, x.shape)} if masked else {}
    agree(
        fnn.GroupNorm(**options),
        bx.GroupNorm(_node(), **options),
        x,
        P,
        flax_kwargs=mask,
        blox_kwargs=mask,
    )


def test_group_norm_channels_first_is_channels_last_transposed() -> None:
    x = inputs((2, 6, 3, 2))  # (batch, channels, h, w)
    graph = bx.Graph("net")
    first = bx.GroupNorm(graph / "first", num_groups=3, channels_first=True)
    last = bx.GroupNorm(graph / "last", num_groups=3)
    y_first, _ = first(bx.Params(), x)
    y_last, _ = last(bx.Params(), jnp.moveaxis(x, 1, -1))
    np.testing.assert_array_equal(y_first, jnp.moveaxis(y_last, -1, 1))


def test_instance_norm_matches_flax() -> None:
    feature_axes = (1, -1)
    x = inputs((2, 3, 4, 2))
    agree(
        fnn.InstanceNorm(feature_axes=feature_axes),
        bx.InstanceNorm(_node(), feature_axes=feature_axes),
        x,
        P,
    )


def test_group_and_instance_norm_errors() -> None:
    graph = bx.Graph("net")
    with pytest.raises(
        ValueError,
        match=r"GroupNorm at 'net/a': expected exactly one of "
        r"num_groups and group_size, got num_groups=None, group_size=None\. Fix:",
    ):
        bx.GroupNorm(graph / "a", num_groups=None)
    gn = bx.GroupNorm(graph / "b", num_groups=4)
    with pytest.raises(
        ValueError,
        match=r"GroupNorm at 'net/b': expected num_groups to divide "
        r"the 6 channels, got num_groups=4\. Fix:",
    ):
        gn(bx.Params(), jnp.ones((2, 6)))
    gs = bx.GroupNorm(graph / "c", num_groups=None, group_size=4)
    with pytest.raises(ValueError, match=r"expected group_size to divide the 6 channels"):
        gs(bx.Params(), jnp.ones((2, 6)))
    axes = bx.GroupNorm(graph / "d", num_groups=2, reduction_axes=(1,))
    with pytest.raises(
        ValueError,
        match=r"GroupNorm at 'net/d': expected reduction_axes to "
        r"include the channel axis 2, got \(1,\)\. Fix:",
    ):
        axes(bx.Params(), jnp.ones((2, 3, 4)))
    inorm = bx.InstanceNorm(graph / "e", feature_axes=(0, -1))
    with pytest.raises(
        ValueError,
        match=r"InstanceNorm at 'net/e': expected feature_axes "
        r"without the batch axis 0, got \(0, -1\)\. Fix:",
    ):
        inorm(bx.Params(), jnp.ones((2, 3)))
    ln = bx.LayerNorm(graph / "f", reduction_axes=(-3,))
    with pytest.raises(
        ValueError,
        match=r"LayerNorm at 'net/f': expected reduction_axes to "
        r"be axes of an input of rank 2, got \(-3,\)\. Fix:",
    ):
        ln(bx.Params(), jnp.ones((2, 3)))


# -- BatchNorm: flax's options and PyTorch's variants ----------------------------------


def test_batch_norm_axis_and_mask_match_flax_over_two_steps() -> None:
    x0, x1 = inputs((4, 3, 2)), inputs((4, 3, 2), seed=2)
    mask = jax.random.bernoulli(jax.random.key(5), 0.8, (4, 3, 2))
    flax_bn = fnn.BatchNorm(axis=1, momentum=0.8)
    variables = flax_bn.init(jax.random.key(0), x0, use_running_average=False)
    bn = bx.BatchNorm(_node(), axis=1, momentum=0.8, use_fast_variance=True)
    stats = {
        P + ("running_mean",): variables["batch_stats"]["mean"],
        P + ("running_var",): variables["batch_stats"]["var"],
    }
    params = to_blox(variables["params"], P, stats)
    for x in (x0, x1):
        y_f, updates = flax_bn.apply(
            variables, x, use_running_average=False, mask=mask, mutable=["batch_stats"]
        )
        variables = {**variables, **updates}
        y_b, params = jax.jit(lambda p, x: bn(p, x, mask=mask))(params, x)
        close(y_b, y_f)
    close(params[P + ("running_mean",)].value, variables["batch_stats"]["mean"])
    close(params[P + ("running_var",)].value, variables["batch_stats"]["var"])
    y_f = flax_bn.apply(variables, x0, use_running_average=True)
    close(bn(params, x0, is_training=False)[0], y_f)
    # channels_first is axis=1.
    first = bx.BatchNorm(
        bx.Graph("net") / "n", momentum=0.8, channels_first=True, use_fast_variance=True
    )
    y_first, _ = first(to_blox(variables["params"], P, stats), x0)
    y_axis, _ = bn(to_blox(variables["params"], P, stats), x0)
    np.testing.assert_array_equal(y_first, y_axis)


@pytest.mark.parametrize("momentum", [0.1, None], ids=["ema", "cumulative"])
def test_batch_norm_pytorch_variants_match_torch(momentum) -> None:
    # torch's momentum is the weight of the new statistic; blox's of the old.
    torch_bn = torch.nn.BatchNorm1d(3, momentum=momentum, eps=1e-5).double()
    bn = bx.BatchNorm(
        _node(),
        momentum=None if momentum is None else 1 - momentum,
        unbiased_running_var=True,
        count_batches=True,
        channels_first=True,
    )
    params = bx.Params()
    step = jax.jit(lambda p, x: bn(p, x, is_training=True))
    for seed in range(3):
        x = inputs((5, 3, 4), seed=seed)
        y_t = torch_bn(torch.from_numpy(np.asarray(x, np.float64)))
        y_b, params = step(params, x) if seed else bn(params, x)
        np.testing.assert_allclose(y_b, y_t.detach().numpy(), rtol=1e-5, atol=1e-5)  # f32 vs f64
    for name in ("running_mean", "running_var"):
        np.testing.assert_allclose(
            params[P + (name,)].value, getattr(torch_bn, name).numpy(), rtol=1e-5, atol=1e-6
        )
    assert params[P + ("num_batches_tracked",)].value == torch_bn.num_batches_tracked.item() == 3
    assert params[P + ("num_batches_tracked",)].trainable is False
    torch_bn.eval()
    x = inputs((2, 3, 4), seed=9)
    y_t = torch_bn(torch.from_numpy(np.asarray(x, np.float64))).detach().numpy()
    np.testing.assert_allclose(bn(params, x, is_training=False)[0], y_t, rtol=1e-5, atol=1e-5)


def test_batch_norm_without_running_stats_uses_batch_stats_in_both_modes() -> None:
    bn = bx.BatchNorm(_node(), track_running_stats=False, use_scale=False, use_bias=False)
    x = inputs((5, 3))
    y_train, params = bn(bx.Params(), x, is_training=True)
    y_eval, _ = bn(params, x, is_training=False)
    assert len(params) == 0
    x64 = np.asarray(x, np.float64)
    expected = (x64 - x64.mean(0)) / np.sqrt(x64.var(0) + 1e-5)
    np.testing.assert_allclose(y_train, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(y_eval, y_train)


def test_batch_norm_channels_first_with_axis_is_an_error() -> None:
    with pytest.raises(
        ValueError,
        match=r"BatchNorm at 'net/n': expected axis=-1 with "
        r"channels_first=True \(it puts the features on axis 1\), got axis=2\.",
    ):
        bx.BatchNorm(_node(), axis=2, channels_first=True)
