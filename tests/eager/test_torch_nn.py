"""`blox.eager.torch_nn` against `torch.nn`: weights copied by `load_state_dict`, then
outputs (train and eval), gradients (inputs and weights) and buffers compared.

Tolerances: float32, 1e-5 unless a comment says why.
"""

from collections import OrderedDict

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from blox.eager import torch_nn as nn
from blox.eager.torch_nn import functional as F

from ._torch_parity import check, to_torch

torch.manual_seed(0)
RNG = np.random.default_rng(0)


def randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def test_linear_family_matches_torch():
    check(nn.Linear(3, 4), torch.nn.Linear(3, 4), [randn(2, 3)])
    check(nn.Linear(3, 4, bias=False), torch.nn.Linear(3, 4, bias=False), [randn(2, 5, 3)])
    check(nn.Bilinear(3, 2, 4), torch.nn.Bilinear(3, 2, 4), [randn(5, 3), randn(5, 2)])
    seq = check(
        nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Flatten(0), nn.Unflatten(0, (2, 4))),
        torch.nn.Sequential(
            torch.nn.Linear(3, 4),
            torch.nn.Tanh(),
            torch.nn.Flatten(0),
            torch.nn.Unflatten(0, (2, 4)),
        ),
        [randn(2, 3)],
    )
    assert list(seq.state_dict()) == ["0.weight", "0.bias"]


def test_containers_name_their_entries_like_torch():
    class Ours(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([nn.Linear(2, 2) for _ in range(2)])
            self.heads = nn.ModuleDict({"a": nn.Linear(2, 1), "b": nn.Identity()})
            self.seq = nn.Sequential(OrderedDict(fc=nn.Linear(2, 2), act=nn.ReLU()))

        def forward(self, x):
            for block in self.blocks:
                x = block(x)
            return self.heads["a"](self.seq(x))

    class Theirs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(2)])
            self.heads = torch.nn.ModuleDict({"a": torch.nn.Linear(2, 1), "b": torch.nn.Identity()})
            self.seq = torch.nn.Sequential(
                OrderedDict(fc=torch.nn.Linear(2, 2), act=torch.nn.ReLU())
            )

        def forward(self, x):
            for block in self.blocks:
                x = block(x)
            return self.heads["a"](self.seq(x))

    ours = check(Ours(), Theirs(), [randn(3, 2)])
    assert next(iter(ours.state_dict())) == "blocks.0.weight"
    assert len(ours.blocks) == 2 and ours.blocks[-1] is ours.blocks[1]
    assert list(ours.heads.keys()) == ["a", "b"] and "a" in ours.heads


@pytest.mark.parametrize("dtype", [None])
def test_activations_match_torch(dtype):
    x = randn(3, 5) * 4
    pairs = [
        (nn.ReLU(), torch.nn.ReLU()),
        (nn.ReLU6(), torch.nn.ReLU6()),
        (nn.LeakyReLU(0.2), torch.nn.LeakyReLU(0.2)),
        (nn.ELU(alpha=0.7), torch.nn.ELU(alpha=0.7)),
        (nn.SELU(), torch.nn.SELU()),
        (nn.CELU(0.5), torch.nn.CELU(0.5)),
        (nn.GELU(), torch.nn.GELU()),
        (nn.GELU(approximate="tanh"), torch.nn.GELU(approximate="tanh")),
        (nn.SiLU(), torch.nn.SiLU()),
        (nn.Mish(), torch.nn.Mish()),
        (nn.Hardtanh(-2.0, 2.0), torch.nn.Hardtanh(-2.0, 2.0)),
        (nn.Hardsigmoid(), torch.nn.Hardsigmoid()),
        (nn.Hardswish(), torch.nn.Hardswish()),
        (nn.Sigmoid(), torch.nn.Sigmoid()),
        (nn.LogSigmoid(), torch.nn.LogSigmoid()),
        (nn.Tanh(), torch.nn.Tanh()),
        (nn.Softsign(), torch.nn.Softsign()),
        (nn.Softplus(beta=2.0, threshold=5.0), torch.nn.Softplus(beta=2.0, threshold=5.0)),
        (nn.Softmax(dim=1), torch.nn.Softmax(dim=1)),
        (nn.LogSoftmax(dim=0), torch.nn.LogSoftmax(dim=0)),
        (nn.GLU(dim=0), None),
    ]
    for ours, theirs in pairs:
        if theirs is None:
            theirs = torch.nn.GLU(dim=0)
            x_in = randn(4, 3)
        else:
            x_in = x
        check(ours, theirs, [x_in], modes=(True,))


def test_module_errors_are_house_form():
    with pytest.raises(NotImplementedError, match="expected a forward"):
        nn.Module()(1)
    with pytest.raises(TypeError, match="expected modules"):
        nn.Sequential(jax.nn.relu)
    with pytest.raises(ValueError, match="not a method"):
        nn.ModuleDict({"keys": nn.ReLU()})
    with pytest.raises(TypeError, match="str keys"):
        nn.ModuleDict({1: nn.ReLU()})
    with pytest.raises(KeyError, match="expected one of"):
        nn.ModuleDict()["x"]
    with pytest.raises(IndexError, match="expected an index"):
        nn.ModuleList()[0]
    with pytest.raises(TypeError, match="expected dim to be an int"):
        F.softmax(jnp.ones(3))
    with pytest.raises(ValueError, match="approximate"):
        F.gelu(jnp.ones(3), approximate="erf")
    with pytest.raises(TypeError, match="at most 1 positional"):
        nn.LeakyReLU(0.1, 0.2)
    with pytest.raises(TypeError, match="options among"):
        nn.ELU(beta=1.0)
    with pytest.raises(ValueError, match="device=None"):
        nn.Linear(2, 2, device="cuda")
    with pytest.raises(ValueError, match="start_dim <= end_dim"):
        F.flatten(jnp.ones((2, 3)), 1, 0)


def test_state_dict_round_trips_through_torch_files(tmp_path):
    theirs = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    torch.save(theirs.state_dict(), tmp_path / "model.pt")
    ours = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    ours.load_state_dict(tmp_path / "model.pt")
    x = randn(2, 3)
    np.testing.assert_allclose(ours(jnp.asarray(x)), theirs(to_torch(x)).detach(), atol=1e-6)
    # Back the other way: torch.save of our state_dict loads into PyTorch.
    fresh = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    torch.save(fresh.state_dict(as_torch=True), tmp_path / "ours.pth")
    theirs.load_state_dict(torch.load(tmp_path / "ours.pth", weights_only=True))
    np.testing.assert_allclose(fresh(jnp.asarray(x)), theirs(to_torch(x)).detach(), atol=1e-6)
    # safetensors and numpy values load too.
    from safetensors.numpy import save_file

    save_file({k: np.asarray(v) for k, v in fresh.state_dict().items()}, tmp_path / "m.safetensors")
    ours.load_state_dict(str(tmp_path / "m.safetensors"))
    np.testing.assert_array_equal(ours[0].weight, fresh[0].weight)
    with pytest.raises(ValueError, match="missing keys"):
        ours.load_state_dict({"0.weight": np.zeros((4, 3))})
    result = ours.load_state_dict({"0.weight": np.zeros((4, 3)), "x": np.ones(1)}, strict=False)
    assert result.unexpected_keys == ["x"] and "0.bias" in result.missing_keys
    with pytest.raises(ValueError, match=r"expected a \.pt"):
        ours.load_state_dict(tmp_path / "model.npz")
    with pytest.raises(TypeError, match="expected a state_dict"):
        ours.load_state_dict(3)
    with pytest.raises(TypeError, match="as values"):
        ours.load_state_dict({"0.weight": "w"})


T = torch.nn
X4 = randn(4, 3, 7, 6)  # (N, C, H, W), shared so op-by-op kernels compile once


def test_conv_family_matches_torch():
    cases = [
        (nn.Conv2d(3, 4, 3, padding=1), T.Conv2d(3, 4, 3, padding=1), X4),
        (
            nn.Conv2d(3, 6, (3, 2), 2, (1, 0), (1, 2), groups=3, padding_mode="reflect"),
            T.Conv2d(3, 6, (3, 2), 2, (1, 0), (1, 2), groups=3, padding_mode="reflect"),
            X4,
        ),
        (
            nn.Conv1d(3, 2, 3, padding="same", padding_mode="circular", bias=False),
            T.Conv1d(3, 2, 3, padding="same", padding_mode="circular", bias=False),
            X4[:, :, 0],
        ),
        (
            nn.Conv3d(3, 2, 2, padding=1, padding_mode="replicate"),
            T.Conv3d(3, 2, 2, padding=1, padding_mode="replicate"),
            X4[:, :, None],
        ),
        (
            nn.ConvTranspose2d(3, 6, 3, stride=2, padding=1, output_padding=1, groups=3),
            T.ConvTranspose2d(3, 6, 3, stride=2, padding=1, output_padding=1, groups=3),
            X4,
        ),
        (
            nn.ConvTranspose1d(3, 2, 4, stride=3, padding=2, dilation=2),
            T.ConvTranspose1d(3, 2, 4, stride=3, padding=2, dilation=2),
            X4[:, :, 0],
        ),
        (
            nn.ConvTranspose3d(3, 2, 2, stride=2),
            T.ConvTranspose3d(3, 2, 2, stride=2),
            X4[:, :, None],
        ),
    ]
    for ours, theirs, x in cases:
        check(ours, theirs, [x], modes=(True,))
    conv = cases[0][0]
    assert repr(conv) == "Conv2d(3, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))"
    # The shell's numbers are its core twin's, bit for bit (both compiled).
    x = jnp.asarray(X4)
    eager = jax.jit(lambda m, x: m(x))(conv, x)
    core = jax.jit(lambda p, x: conv.core_layer(p, jnp.moveaxis(x, 1, -1))[0])(
        conv.core_params(), x
    )
    np.testing.assert_array_equal(eager, jnp.moveaxis(core, -1, 1))


def test_conv_errors_are_house_form():
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="padding_mode in"):
        nn.Conv2d(3, 4, 3, padding_mode="mirror")
    with pytest.raises(ValueError, match="stride 1 with padding='same'"):
        nn.Conv2d(3, 4, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="expected kernel_size to be an int or 2 ints"):
        nn.Conv2d(3, 4, (3, 3, 3))
    with pytest.raises(ValueError, match="output_padding smaller"):
        nn.ConvTranspose2d(3, 4, 3, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="padding_mode='zeros'"):
        nn.ConvTranspose2d(3, 4, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="'same', 'valid'"):
        nn.ConvTranspose2d(3, 4, 3, padding="same")


def test_pools_resizing_and_shuffles_match_torch():
    cases = [
        (nn.MaxPool2d(3, 2, 1, ceil_mode=True), T.MaxPool2d(3, 2, 1, ceil_mode=True), X4),
        (nn.MaxPool1d(2), T.MaxPool1d(2), X4[:, :, 0]),
        (nn.MaxPool3d(2, ceil_mode=True), T.MaxPool3d(2, ceil_mode=True), X4[:, None]),
        (nn.AvgPool2d(3, 2, 1), T.AvgPool2d(3, 2, 1), X4),
        (nn.AvgPool2d(3, 2, 1, ceil_mode=True), T.AvgPool2d(3, 2, 1, ceil_mode=True), X4),
        (
            nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
            T.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
            X4,
        ),
        (nn.AvgPool1d(3, 2, 1, ceil_mode=True), T.AvgPool1d(3, 2, 1, ceil_mode=True), X4[:, :, 0]),
        (nn.AvgPool3d(2, 1), T.AvgPool3d(2, 1), X4[:, None]),
        (nn.AdaptiveAvgPool2d((3, 4)), T.AdaptiveAvgPool2d((3, 4)), X4),
        (nn.AdaptiveAvgPool1d(4), T.AdaptiveAvgPool1d(4), X4[:, :, 0]),
        (nn.AdaptiveMaxPool2d((4, None)), T.AdaptiveMaxPool2d((4, None)), X4),
        (nn.AdaptiveMaxPool1d(3), T.AdaptiveMaxPool1d(3), X4[:, :, 0]),
        (nn.AdaptiveAvgPool3d(2), T.AdaptiveAvgPool3d(2), X4[:, None]),
        (nn.Upsample(scale_factor=2), T.Upsample(scale_factor=2), X4),
        (nn.Upsample(size=(5, 9)), T.Upsample(size=(5, 9)), X4),
        (
            nn.Upsample(scale_factor=1.7, mode="bilinear"),
            T.Upsample(scale_factor=1.7, mode="bilinear"),
            X4,
        ),
        (
            nn.Upsample(size=(4, 11), mode="bilinear", align_corners=True),
            T.Upsample(size=(4, 11), mode="bilinear", align_corners=True),
            X4,
        ),
        (nn.Upsample(size=9, mode="linear"), T.Upsample(size=9, mode="linear"), X4[:, :, 0]),
        (nn.PixelShuffle(2), T.PixelShuffle(2), randn(2, 8, 3, 2)),
        (nn.PixelUnshuffle(2), T.PixelUnshuffle(2), randn(2, 2, 4, 6)),
    ]
    for ours, theirs, x in cases:
        check(ours, theirs, [x], modes=(True,))
    # JAX has no VJP for a dilated max pool: outputs only.
    check(nn.MaxPool2d(2, dilation=2), T.MaxPool2d(2, dilation=2), [X4], modes=(True,), grads=False)
    with pytest.raises(ValueError, match="at most half the kernel"):
        F.max_pool2d(jnp.asarray(X4), 2, padding=2)
    with pytest.raises(ValueError, match="divisor_override=None"):
        F.avg_pool2d(jnp.asarray(X4), 2, divisor_override=3)
    with pytest.raises(ValueError, match="return_indices=False"):
        F.adaptive_max_pool2d(jnp.asarray(X4), 2, return_indices=True)
    with pytest.raises(ValueError, match="exactly one of size"):
        F.interpolate(jnp.asarray(X4))
    with pytest.raises(ValueError, match="expected mode in"):
        F.interpolate(jnp.asarray(X4), size=3, mode="bicubic")
    with pytest.raises(ValueError, match="align_corners=None"):
        F.interpolate(jnp.asarray(X4), size=3, align_corners=True)
    with pytest.raises(ValueError, match="divisible by upscale_factor"):
        F.pixel_shuffle(jnp.asarray(X4), 2)
    with pytest.raises(TypeError, match="to be given"):
        nn.MaxPool2d()


def test_norms_embedding_and_dropout_match_torch():
    x = X4[:, :, :5, :2]
    cases = [
        (nn.BatchNorm2d(3), T.BatchNorm2d(3), x),
        (nn.BatchNorm1d(3, momentum=None), T.BatchNorm1d(3, momentum=None), x[:, :, :, 0]),
        (nn.BatchNorm1d(3, affine=False), T.BatchNorm1d(3, affine=False), x[:, :, 0, 0]),
        (
            nn.BatchNorm3d(3, track_running_stats=False),
            T.BatchNorm3d(3, track_running_stats=False),
            x[:, :, None],
        ),
        (nn.LayerNorm((5, 2)), T.LayerNorm((5, 2)), x),
        (nn.LayerNorm(3, bias=False), T.LayerNorm(3, bias=False), x.transpose(0, 3, 2, 1) * 3),
        (nn.GroupNorm(3, 3), T.GroupNorm(3, 3), x),
        (nn.GroupNorm(1, 3, affine=False), T.GroupNorm(1, 3, affine=False), x),
        (nn.InstanceNorm1d(3), T.InstanceNorm1d(3), x[:, :, :, 0]),
        (nn.InstanceNorm2d(3, affine=True), T.InstanceNorm2d(3, affine=True), x),
        (nn.Dropout(0.3), T.Dropout(0.3), x),  # eval mode: identity in both
    ]
    for ours, theirs, x_in in cases:
        modes = (False,) if isinstance(ours, nn.Dropout) else (True, False)
        check(ours, theirs, [x_in], modes=modes)
    # A second training step: the running statistics keep agreeing.
    bn, tbn = cases[0][0], cases[0][1]
    check(bn.train(), tbn.train(), [x * 2 + 1], modes=(True,), grads=False, reload=False)
    assert int(bn.num_batches_tracked) == int(tbn.num_batches_tracked) == 2
    emb, temb = nn.Embedding(7, 3, padding_idx=2), T.Embedding(7, 3, padding_idx=2)
    ids = np.array([[2, 1, 5], [2, 2, 0]], np.int32)
    check(emb, temb, [ids], modes=(True,))
    assert not np.asarray(nn.Embedding(7, 3, padding_idx=-1).weight[6]).any()
    with pytest.raises(ValueError, match="padding_idx in"):
        nn.Embedding(3, 2, padding_idx=3)
    with pytest.raises(ValueError, match="momentum in"):
        nn.BatchNorm2d(3, momentum=2.0)
    with pytest.raises(ValueError, match="rank 4"):
        nn.BatchNorm2d(3)(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="num_groups to divide"):
        nn.GroupNorm(2, 3)
    with pytest.raises(ValueError, match="track_running_stats=False"):
        nn.InstanceNorm2d(3, track_running_stats=True)
    with pytest.raises(ValueError, match="ending in"):
        nn.LayerNorm(4)(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="p in"):
        nn.Dropout(1.0)
    with pytest.raises(TypeError, match="expected p to be a float"):
        nn.Dropout2d("0.1")
    with pytest.raises(ValueError, match="max_norm=None"):
        nn.Embedding(3, 2, max_norm=1.0)


def test_dropout_streams_are_fresh_under_filter_jit_and_stay_out_of_state_dict(tmp_path):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.drop = nn.Dropout2d(0.5)
            self.noise = nn.Rng()

        def forward(self, x):
            return self.drop(self.fc(x)[..., None, None]) + self.noise.normal((8, 4, 1, 1))

    net = Net()
    step = nn.filter_jit(lambda m, x: m(x))
    x = jnp.ones((8, 4))
    a, b = step(net, x), step(net, x)
    assert not np.allclose(a, b)  # fresh masks and noise on every call
    assert a.shape == (8, 4, 1, 1)
    assert list(net.state_dict()) == ["fc.weight", "fc.bias"]
    path = tmp_path / "net.safetensors"
    nn.save(path, net)
    restored = nn.load(path, like=Net()).model
    np.testing.assert_array_equal(restored.drop.rng.counter, net.drop.rng.counter)
    np.testing.assert_array_equal(step(restored, x), step(net, x))  # resuming stays exact


# PyTorch warns that its kl_div 'mean' will change; we match today's meaning.
@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides:UserWarning")
def test_losses_and_functional_match_torch():
    import torch.nn.functional as TF

    logits = randn(4, 5, 3)
    ids = np.array([[0, 4, 2], [1, 1, -100], [3, 2, 2], [-100, 0, 1]])
    w = RNG.uniform(0.5, 2, 5).astype(np.float32)
    probs = np.abs(randn(4, 5, 3))
    probs /= probs.sum(1, keepdims=True)
    x, y = randn(3, 4) * 2, randn(3, 4)
    p, t01 = 1 / (1 + np.exp(-x)), (y > 0).astype(np.float32)
    log_q, q = np.asarray(jax.nn.log_softmax(x, axis=1)), np.asarray(jax.nn.softmax(y, axis=1))
    q3, k3 = randn(2, 3, 5, 4), randn(2, 3, 6, 4)
    mask = RNG.standard_normal((5, 6)) > 0
    mask[:, 0] = True

    # Every case is compiled into one program (one compile instead of one per
    # case); PyTorch runs each case as it is recorded.
    ours_cases, torch_results = [], []

    def same(ours, theirs, *args, **kw):
        j = [jnp.asarray(a) for a in args]
        t = [torch.from_numpy(np.array(a)) for a in args]
        t[0].requires_grad_(True)
        t_kw = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
        j_kw = {k: jnp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
        out_t = theirs(*t, **t_kw)
        (out_t * 1.3).sum().backward()
        ours_cases.append((ours, j, j_kw))
        torch_results.append(((out_t * 1.3).sum().detach(), t[0].grad))

    def ours_all():
        return [
            jax.value_and_grad(lambda a, f=f, j=j, kw=kw: jnp.sum(f(a, *j[1:], **kw) * 1.3))(j[0])
            for f, j, kw in ours_cases
        ]

    for red in ("mean", "sum", "none"):
        for ls in (0.0, 0.2):
            same(
                F.cross_entropy,
                TF.cross_entropy,
                logits,
                ids,
                reduction=red,
                label_smoothing=ls,
            )
            same(
                F.cross_entropy,
                TF.cross_entropy,
                logits,
                ids,
                weight=w,
                reduction=red,
                label_smoothing=ls,
            )
            same(
                F.cross_entropy,
                TF.cross_entropy,
                logits,
                probs,
                weight=w,
                reduction=red,
                label_smoothing=ls,
            )
        same(F.nll_loss, TF.nll_loss, np.log(probs), ids, weight=w, reduction=red)
        same(F.mse_loss, TF.mse_loss, x, y, reduction=red)
        same(F.l1_loss, TF.l1_loss, x, y, reduction=red)
        same(F.smooth_l1_loss, TF.smooth_l1_loss, x, y, reduction=red, beta=0.5)
        same(F.huber_loss, TF.huber_loss, x, y, reduction=red, delta=0.7)
        same(
            F.binary_cross_entropy,
            TF.binary_cross_entropy,
            p,
            t01,
            weight=np.abs(y),
            reduction=red,
        )
        same(
            F.binary_cross_entropy_with_logits,
            TF.binary_cross_entropy_with_logits,
            x,
            t01,
            pos_weight=np.abs(y[0]) + 0.5,
            reduction=red,
        )
        same(
            F.binary_cross_entropy_with_logits,
            TF.binary_cross_entropy_with_logits,
            x,
            t01,
            reduction=red,
        )
        same(F.kl_div, TF.kl_div, log_q, q, reduction=red)
        same(F.kl_div, TF.kl_div, log_q, np.log(q), reduction=red, log_target=True)
    same(F.kl_div, TF.kl_div, log_q, q, reduction="batchmean")
    sdpa, t_sdpa = F.scaled_dot_product_attention, TF.scaled_dot_product_attention
    same(sdpa, t_sdpa, q3, k3, k3)
    same(sdpa, t_sdpa, q3, k3, k3, attn_mask=mask)
    same(sdpa, t_sdpa, q3, k3, k3, attn_mask=randn(3, 5, 6), scale=0.3)
    same(sdpa, t_sdpa, q3, q3, q3, is_causal=True)
    same(F.pad, TF.pad, x, pad=(1, 2, 0, 1))
    same(F.pad, TF.pad, x, pad=(1, 2), mode="reflect")
    same(F.pad, TF.pad, x[None], pad=(1, 2, 2, 1), mode="replicate")
    same(F.pad, TF.pad, x[None], pad=(1, 2, 2, 1), mode="circular", value=None)
    for (out, grad), (out_t, grad_t) in zip(jax.jit(ours_all)(), torch_results, strict=True):
        np.testing.assert_allclose(out, out_t, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(grad, grad_t, atol=1e-5, rtol=1e-5)
    # The loss modules: same numbers, and tensor options are buffers as in PyTorch.
    loss = nn.CrossEntropyLoss(weight=w, label_smoothing=0.1)
    theirs = T.CrossEntropyLoss(weight=torch.from_numpy(w), label_smoothing=0.1)
    assert list(loss.state_dict()) == list(theirs.state_dict()) == ["weight"]
    for ours, ref, args in [
        (loss, theirs, (logits, ids)),
        (nn.NLLLoss(), T.NLLLoss(), (np.log(probs), ids)),
        (nn.MSELoss(reduction="sum"), T.MSELoss(reduction="sum"), (x, y)),
        (nn.L1Loss(), T.L1Loss(), (x, y)),
        (nn.BCELoss(), T.BCELoss(), (p, t01)),
        (
            nn.BCEWithLogitsLoss(pos_weight=np.ones(4) * 2),
            T.BCEWithLogitsLoss(pos_weight=torch.ones(4) * 2),
            (x, t01),
        ),
        (nn.SmoothL1Loss(beta=0.3), T.SmoothL1Loss(beta=0.3), (x, y)),
        (nn.HuberLoss(delta=2.0), T.HuberLoss(delta=2.0), (x, y)),
        (nn.KLDivLoss(reduction="batchmean"), T.KLDivLoss(reduction="batchmean"), (log_q, q)),
    ]:
        got = ours(*(jnp.asarray(a) for a in args))
        want = ref(*(torch.from_numpy(np.array(a)) for a in args))
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    assert F.one_hot(jnp.array([0, 2])).tolist() == [[1, 0, 0], [0, 0, 1]]
    with pytest.raises(ValueError, match="reduction in"):
        F.mse_loss(jnp.ones(2), jnp.ones(2), reduction="avg")
    with pytest.raises(ValueError, match="size_average=None"):
        nn.MSELoss(size_average=True)
    with pytest.raises(TypeError, match="arguments among"):
        nn.L1Loss(margin=1.0)
    with pytest.raises(ValueError, match="even number"):
        F.pad(jnp.ones(3), (1,))
    with pytest.raises(ValueError, match="expected mode in"):
        F.pad(jnp.ones(3), (1, 1), mode="symmetric")
    with pytest.raises(TypeError, match="integer ids"):
        F.one_hot(jnp.ones(2))
    with pytest.raises(ValueError, match=r"dropout_p=0\.0"):
        F.scaled_dot_product_attention(
            jnp.ones((1, 2, 4)), jnp.ones((1, 2, 4)), jnp.ones((1, 2, 4)), dropout_p=0.1
        )
    with pytest.raises(ValueError, match="attn_mask or is_causal"):
        sdpa(
            jnp.ones((1, 2, 4)),
            jnp.ones((1, 2, 4)),
            jnp.ones((1, 2, 4)),
            attn_mask=jnp.ones((2, 2), bool),
            is_causal=True,
        )
    with pytest.raises(ValueError, match="value's last dim"):
        sdpa(jnp.ones((1, 2, 4)), jnp.ones((1, 2, 4)), jnp.ones((1, 2, 3)))


def test_init_idiom_apply_and_casts():
    from blox.eager.torch_nn import init

    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Conv2d(32, 16, 3))

    def init_weights(m):
        if isinstance(m, nn.Linear):
            m.weight = init.kaiming_normal_(m.weight, nonlinearity="relu", generator=0)
            m.bias = init.zeros_(m.bias)
        if isinstance(m, nn.Conv2d):
            m.weight = init.xavier_uniform_(m.weight, gain=init.calculate_gain("tanh"))

    assert model.apply(init_weights) is model
    w = np.asarray(model[0].weight)
    # Fans as PyTorch computes them: fan_in = 64; std of 2048 draws within 10%.
    assert abs(w.std() / np.sqrt(2 / 64) - 1) < 0.1 and not np.asarray(model[0].bias).any()
    bound = 5 / 3 * np.sqrt(6 / (32 * 9 + 16 * 9))
    conv_w = np.asarray(model[2].weight)
    assert np.abs(conv_w).max() <= bound and np.abs(conv_w).max() > 0.9 * bound
    q = init.orthogonal_(jnp.zeros((4, 2, 3)), gain=2.0, generator=1).reshape(4, 6)
    np.testing.assert_allclose(q @ q.T, 4 * np.eye(4), atol=1e-5)
    t = init.trunc_normal_(jnp.zeros(500), std=1.0, a=-0.5, b=0.5)
    assert np.abs(np.asarray(t)).max() <= 0.5
    assert float(init.normal_(jnp.zeros(4000), 3.0, 0.1, generator=2).mean()) == pytest.approx(
        3.0, abs=0.01
    )
    assert init.eye_(jnp.zeros((2, 2))).tolist() == [[1.0, 0.0], [0.0, 1.0]]
    with pytest.raises(ValueError, match="rank >= 2"):
        init.xavier_normal_(jnp.zeros(3))
    with pytest.raises(ValueError, match="fan_in' or 'fan_out"):
        init.kaiming_uniform_(jnp.zeros((2, 2)), mode="avg")
    with pytest.raises(ValueError, match="expected one of"):
        init.calculate_gain("swish")
    with pytest.raises(ValueError, match="2-D tensor"):
        init.eye_(jnp.zeros(3))
    # Casting: floating params and buffers move, integer counters and RNG state stay.
    net = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Dropout(0.1))
    assert net.bfloat16() is net
    assert net[0].weight.dtype == jnp.bfloat16 and net[1].running_var.dtype == jnp.bfloat16
    assert net[1].num_batches_tracked.dtype == jnp.int32
    assert net[2].rng.counter.dtype == jnp.uint32
    assert net.half()[0].bias.dtype == jnp.float16 and net.float()[0].bias.dtype == jnp.float32
    assert net(jnp.ones((4, 2))).dtype == jnp.float32
    with pytest.raises(TypeError, match="floating dtype"):
        net.to(jnp.int32)
    with pytest.raises(TypeError, match="device name"):
        net.to("cuda")
    with pytest.raises(ValueError, match="64-bit"):
        net.double()
    assert net.to(device=jax.devices()[0]) is net
