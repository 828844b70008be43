"""Call-time errors name the failing layer as written and its path in the model.

`Net.fc2 (nn.Linear(...)): expected ...` whether the model runs as an eager
call (compiled), inside `nn.filter_jit`, or op by op; a layer called on its
own keeps its plain name. Also: `named_parameters`/`named_buffers` name
leaves exactly as `state_dict` does.
"""

import jax
import jax.numpy as jnp
import pytest
from jaxtyping import TypeCheckError

from blox import eager as nn
from blox.eager import torch_nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(2, 3, seed=0)
        self.fc2 = nn.Linear(4, 4, seed=0)
        self.layers = nn.Sequential(nn.Linear(3, 3, seed=0), nn.BatchNorm(5))
        self.blocks = [nn.BatchNorm(3)]
        self.emb = nn.Embed(5, 3, seed=0)

    def __call__(self, x, which):
        h = self.fc1(x)
        if which == "fc2":
            return self.fc2(h)
        if which == "layers":
            return self.layers(h)
        if which == "blocks":
            return self.blocks[0](h)
        return self.emb(jnp.array([1, 9]))


def _calls(net, x, which):
    """The model run three ways: compiled eager call, filter_jit step, op by op."""

    def op_by_op():
        with jax.disable_jit():
            return net(x, which)

    step = nn.filter_jit(lambda m, x: m(x, which))
    return [lambda: net(x, which), lambda: step(net, x), op_by_op]


@pytest.mark.parametrize(
    ("which", "head"),
    [
        ("fc2", r"Net\.fc2 \(nn\.Linear\(.*4.*\)\): expected x to be a float array of shape"),
        ("layers", r"Net\.layers\.1 \(nn\.BatchNorm\(5.*\)\): expected x to be a float array"),
    ],
)
def test_shape_errors_name_the_layer_path_in_the_model(which, head):
    net = Net()
    for call in _calls(net, jnp.ones((2, 2)), which):
        with pytest.raises(TypeCheckError, match="^" + head):
            call()


def test_core_errors_name_the_layer_path_in_the_model():
    net = Net()
    head = r"^Net\.blocks\.0 \(nn\.BatchNorm\(3, .*\)\): expected a non-empty batch"
    for call in _calls(net, jnp.ones((0, 2)), "blocks"):
        with pytest.raises(ValueError, match=head):
            call()
    # Called on its own, the layer keeps its plain name.
    with pytest.raises(ValueError, match=r"^nn\.BatchNorm: expected a non-empty batch"):
        nn.BatchNorm(3)(jnp.ones((0, 3)))


def test_embed_ids_checked_op_by_op_name_the_path():
    net = Net()
    with (
        jax.disable_jit(),
        pytest.raises(
            ValueError, match=r"^Net\.emb \(nn\.Embed\(5, 3\)\): expected ids in \[0, 5\)"
        ),
    ):
        net(jnp.ones((2, 2)), "emb")


def test_a_root_sequential_and_torch_modules_name_their_children():
    seq = nn.Sequential(nn.Linear(2, 3, seed=0), nn.Linear(4, 1, seed=0))
    with pytest.raises(TypeCheckError, match=r"^Sequential\.1 \(nn\.Linear\(.*\)\): expected x"):
        seq(jnp.ones((1, 2)))

    class TorchNet(torch_nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch_nn.ModuleList([torch_nn.Linear(2, 3), torch_nn.Linear(4, 1)])

        def forward(self, x):
            for layer in self.body:
                x = layer(x)
            return x

    with pytest.raises(
        TypeCheckError, match=r"^TorchNet\.body\.1 \(nn\.Linear\(.*\)\): expected x"
    ):
        TorchNet()(jnp.ones((1, 2)))


def test_a_layer_not_held_by_the_calling_model_keeps_its_plain_name():
    loose = nn.Linear(4, 4, seed=0)

    class Caller(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 3, seed=0)

        def __call__(self, x):
            return loose(self.fc(x))

    with pytest.raises(TypeCheckError, match=r"^Linear\(.*\): expected x to be a float array"):
        Caller()(jnp.ones((1, 2)))
    with pytest.raises(TypeCheckError, match=r"^Linear\(.*\): expected x"):
        loose(jnp.ones((1, 3)))  # on its own


def test_named_parameters_and_buffers_use_the_state_dict_names():
    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.d = {"a": nn.Linear(1, 1, seed=0), "b.c": nn.BatchNorm(2)}
            self.i = {3: nn.Linear(1, 1, seed=0), 1: nn.Dropout(0.1)}
            self.nested = [[nn.Linear(1, 1, seed=0)], {"x": nn.LayerNorm(2)}]
            self.t = torch_nn.ModuleDict({"q": torch_nn.BatchNorm1d(2)})
            self.u = torch_nn.ModuleList([torch_nn.Linear(1, 1)])

    model = Holder()
    state = model.state_dict()
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    assert set(params).isdisjoint(buffers)
    assert sorted([*params, *buffers]) == sorted(state)
    assert "d.b.c.running_mean" in buffers and "t.q.num_batches_tracked" in buffers
    assert "i.1.rng.seed" in buffers and "nested.1.x.scale" in params
    for name, value in [*params.items(), *buffers.items()]:
        assert value is state[name] or (value == state[name]).all(), name


def test_conv_rank_hints_fit_the_case():
    import blox as bx

    graph = bx.Graph("net")
    rng = bx.Rng(graph / "rng")
    conv = bx.Conv(graph / "conv", (3, 3), 8, rng=rng)
    params = rng.seed(bx.Params(), seed=0)
    # One axis short: the channel axis or the spatial dims may be missing.
    with pytest.raises(
        ValueError,
        match=r"got rank 2 with shape \(2, 3\)\. Fix: if the channel axis is missing \(one "
        r"channel\), add it, e\.g\. x\[\.\.\., None\]; if the spatial dims are, reshape",
    ):
        conv(params, jnp.ones((2, 3)))
    # Two short: the spatial dims are missing, not the channel axis.
    with pytest.raises(
        ValueError, match=r"got rank 1 with shape \(3,\)\. Fix: the inputs lack spatial dims"
    ):
        conv(params, jnp.ones((3,)))


def test_pool_rank_hint_and_unsortable_container_keys():
    import blox as bx

    with pytest.raises(ValueError, match=r"max_pool: .*Fix: the inputs lack spatial dims"):
        bx.max_pool(jnp.ones((4,)), (2, 2))

    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.d = {"a": nn.Linear(1, 1, seed=0), 3: nn.Linear(1, 1, seed=0)}

    with pytest.raises(TypeError, match=r"^Mixed\.d: expected dict keys that sort .*Fix: use str"):
        Mixed()
