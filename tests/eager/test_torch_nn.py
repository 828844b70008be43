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
