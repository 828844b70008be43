"""`nn.summary`: rows, sizes and shapes against real calls, no compute, no state change."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxtyping import TypeCheckError

from blox import eager as nn

from ._state_helpers import Net


def _model(training: bool = True) -> Net:
    nn.manual_seed(0)
    model = Net()
    return model if training else model.eval()


def _real_shapes(model: Net, x: jax.Array) -> dict[str, tuple[int, ...]]:
    """Every layer's output shape from a real forward pass (eval mode, op by op)."""
    model.eval()
    with jax.disable_jit():  # op by op: cheaper than compiling each layer call
        conv = model.conv(x)
        bn = model.bn(conv)
        flat = nn.max_pool(jax.nn.relu(bn), (2, 2)).reshape(x.shape[0], -1)
        drop = model.drop(flat)
        fc = model.fc(drop)
        out = model(x)
    return {
        "": out.shape,
        "conv": conv.shape,
        "bn": bn.shape,
        "drop": drop.shape,
        "fc": fc.shape,
    }


def _own_sizes(model: nn.Module, path: str) -> tuple[int, int]:
    """Elements of a layer's parameters, and bytes of its parameters and buffers."""
    prefix = f"{path}." if path else ""
    own = [(n, v) for n, v in model.named_parameters() if n.startswith(prefix)]
    bufs = [(n, v) for n, v in model.named_buffers() if n.startswith(prefix)]
    if not path:  # the root owns only the arrays not under a child
        own = [(n, v) for n, v in own if "." not in n]
        bufs = [(n, v) for n, v in bufs if "." not in n]
    params = sum(v.size for _, v in own)
    nbytes = sum(v.size * v.dtype.itemsize for _, v in own + bufs)
    return params, nbytes


def _state(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in model.state_dict().items()}


def test_rows_of_the_spec_net_match_a_real_call():
    model = _model()
    x = jnp.ones((4, 8, 8, 1))
    s = nn.summary(model, x)
    assert [r.path for r in s.rows] == ["", "conv", "bn", "drop", "fc"]
    assert [r.type for r in s.rows] == ["Net", "Conv", "BatchNorm", "Dropout", "Linear"]
    real = _real_shapes(_model(), x)
    assert {r.path: r.output_shape for r in s.rows} == real
    for row in s.rows:
        assert (row.params, row.bytes) == _own_sizes(model, row.path), row.path
        assert row.trainable == row.params
    assert [r.params for r in s.rows] == [0, 3 * 3 * 1 * 8 + 8, 8 + 8, 0, 128 * 10 + 10]
    # BatchNorm's running statistics and Dropout's RNG (uint32[2] seed, uint32
    # counter) count as bytes, not params.
    assert s.rows[2].bytes == 4 * 4 * 8
    assert s.rows[3].bytes == 12
    assert s.total_params == sum(v.size for _, v in model.named_parameters())
    assert s.trainable_params == s.total_params
    assert s.total_bytes == sum(v.nbytes for v in model.state_dict().values())


def test_table_text():
    s = nn.summary(_model(), jnp.ones((16, 8, 8, 1)))
    assert str(s) == repr(s)
    assert str(s) == "\n".join(
        [
            "Layer   Type       Output shape   Params    Bytes",
            "-------------------------------------------------",
            "(root)  Net        (16, 10)            0      0 B",
            "conv    Conv       (16, 8, 8, 8)      80    320 B",
            "bn      BatchNorm  (16, 8, 8, 8)      16    128 B",
            "drop    Dropout    (16, 128)           0     12 B",
            "fc      Linear     (16, 10)        1,290  5.0 KiB",
            "-------------------------------------------------",
            "Total params:         1,386",
            "Trainable params:     1,386",
            "Non-trainable params: 0",
            "Total size:           5.5 KiB (parameters and buffers)",
        ]
    )


def test_abstract_and_huge_inputs_need_no_compute():
    model = _model()
    small = nn.summary(model, jax.ShapeDtypeStruct((4, 8, 8, 1), jnp.float32))
    assert small.rows[0].output_shape == (4, 10)
    # 2**26 images: 16 GiB of input and 128 GiB after the conv, far beyond this
    # machine, so only an abstract run can produce the shapes.
    huge = nn.summary(model, jax.ShapeDtypeStruct((2**26, 8, 8, 1), jnp.float32))
    assert huge.rows[1].output_shape == (2**26, 8, 8, 8)
    assert huge.total_params == small.total_params


@pytest.mark.parametrize("training", [True, False])
def test_state_unchanged(training):
    model = _model(training)
    before = _state(model)
    nn.summary(model, jnp.ones((4, 8, 8, 1)))
    after = _state(model)
    assert list(before) == list(after)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    assert model.training is training
    # The model still advances normally afterwards.
    if training:
        model(jnp.ones((4, 8, 8, 1)))
        assert int(model.drop.rng.counter) == int(before["drop.rng.counter"]) + 1


def test_call_wrappers_are_removed():
    classes = [Net, nn.Conv, nn.BatchNorm, nn.Dropout, nn.Linear]
    calls = [cls.__dict__.get("__call__") for cls in classes]
    nn.summary(_model(), jnp.ones((2, 8, 8, 1)))
    with pytest.raises(TypeError):
        nn.summary(_model(), jnp.ones((2, 8, 8, 3)))
    assert [cls.__dict__.get("__call__") for cls in classes] == calls


class Twice(nn.Module):
    """Calls one layer twice (weight sharing) and leaves another unused."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4, seed=0)
        self.unused = nn.Linear(4, 2, seed=1)
        self.drop = nn.Dropout(0.5, seed=2)

    def __call__(self, x):
        return self.fc(self.drop(self.fc(x)))[..., :3]


def test_repeated_and_uncalled_modules():
    model = Twice()
    s = nn.summary(model, jnp.ones((5, 4)))
    rows = {r.path: r for r in s.rows}
    assert [r.path for r in s.rows] == ["", "fc", "fc#2", "unused", "drop"]
    assert rows[""].output_shape == (5, 3)
    assert rows["fc"].output_shape == rows["fc#2"].output_shape == (5, 4)
    assert rows["fc"].params == 20 and rows["fc#2"].params == 0
    assert rows["unused"].output_shape is None and rows["unused"].params == 10
    assert s.total_params == 30
    assert int(model.drop.rng.counter) == 0
    lines = str(s).splitlines()
    assert lines[4].split() == ["fc#2", "Linear", "(5,", "4)", "-", "-"]
    assert lines[5].split() == ["unused", "Linear", "-", "10", "40", "B"]


def test_nested_containers_tuple_outputs_and_frozen_params():
    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            # Not in sorted order: a copy's dict iterates sorted, the original does not.
            self.layers = {"proj": nn.Linear(3, 6, seed=0), "norm": nn.LayerNorm(6)}
            self.lstm = nn.LSTM(6, 4, seed=1)
            self.scale = jnp.ones((4,))

        def __call__(self, xs, *, reverse=False):
            h = self.layers["norm"](self.layers["proj"](xs))
            outputs, state = self.lstm(h[:, ::-1] if reverse else h)
            return outputs * self.scale[None, None], state

    model = Encoder().freeze("lstm.gates.bias")
    s = nn.summary(model, jnp.ones((2, 7, 3)), reverse=True)
    rows = {r.path: r for r in s.rows}
    # The LSTM's internal `gates` group is folded into the LSTM row.
    assert [r.path for r in s.rows] == ["", "layers.proj", "layers.norm", "lstm"]
    assert rows["layers.proj"].output_shape == (2, 7, 6) and rows["layers.proj"].params == 24
    assert rows[""].params == 4
    assert rows["lstm"].output_shape == ((2, 7, 4), nn.LSTMState((2, 4), (2, 4)))
    assert rows["lstm"].params == (6 + 4) * 16 + 16 and rows["lstm"].trainable == 160
    assert s.total_params - s.trainable_params == 16
    text = str(s)
    assert "Trainable" in text.splitlines()[0]
    assert "(2, 7, 4), (2, 4), (2, 4)" in text
    assert "Non-trainable params: 16" in text


def test_not_a_module():
    with pytest.raises(TypeError, match=r"nn.summary: expected an nn.Module .* got function"):
        nn.summary(lambda x: x, jnp.ones(3))
    import blox as bx

    core = bx.Linear(bx.Graph("net") / "fc", 2, rng=None)
    with pytest.raises(TypeError, match=r"got Linear.*bx.display\(graph, params\)"):
        nn.summary(core, jnp.ones(3))


def test_model_errors_propagate_with_the_shapes():
    model = _model()
    with pytest.raises(TypeCheckError, match=r"Conv\(1, 8.*got f32\[2,8,8,3\]") as info:
        nn.summary(model, jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32))
    notes = "\n".join(info.value.__notes__)
    assert "nn.summary running Net on inputs (float32[2, 8, 8, 3])" in notes
    before = _state(model)
    with pytest.raises(TypeError, match="missing 1 required positional argument"):
        nn.summary(model)
    assert _state(model).keys() == before.keys()


def test_subclass_calling_super_is_one_call():
    class Scaled(nn.Linear):
        def __call__(self, x):
            return 2.0 * super().__call__(x)

    model = nn.Sequential(Scaled(3, 2, seed=0), nn.Linear(2, 1, seed=1))
    own, base = Scaled.__dict__["__call__"], nn.Linear.__dict__["__call__"]
    s = nn.summary(model, jnp.ones((4, 3)))
    assert [(r.path, r.type, r.output_shape) for r in s.rows] == [
        ("", "Sequential", (4, 1)),
        ("0", "Scaled", (4, 2)),
        ("1", "Linear", (4, 1)),
    ]
    assert Scaled.__dict__["__call__"] is own and nn.Linear.__dict__["__call__"] is base


def test_non_array_outputs_and_static_inputs():
    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2, seed=0)

        def __call__(self, x, scale=None, *, skip=False):
            if skip:  # a Python flag: passed through as is, not traced
                return None
            return self.fc(x) * scale, "done"

    s = nn.summary(Gate(), jnp.ones((3, 2)), 2.0)
    assert s.rows[0].output_shape == ((3, 2), "str")
    s = nn.summary(Gate(), jnp.ones((3, 2)), skip=True)
    assert [r.output_shape for r in s.rows] == ["None", None]
    assert str(s).splitlines()[2].split()[:3] == ["(root)", "Gate", "None"]
