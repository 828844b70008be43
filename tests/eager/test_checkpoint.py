"""nn.save / nn.load: names, metadata, exact resume, atomic writes, one clear error."""

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from blox import eager as nn

from ._state_helpers import Net, randn

safetensors = pytest.importorskip("safetensors")

from . import _resume_train  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def read_raw(path):
    """Tensors and metadata, read by safetensors itself (not through blox)."""
    with safetensors.safe_open(path, framework="np") as f:
        return {name: f.get_tensor(name) for name in f.keys()}, f.metadata()


def trained_net(seed=0):
    """The spec's Net after two training calls: BatchNorm stats and RNG counter moved."""
    model = Net()
    model.load_state_dict(_seeded_state(seed))
    for i in range(2):
        model(randn(i, 4, 8, 8, 1))
    return model


def _seeded_state(seed):
    nn.manual_seed(seed)
    return Net().state_dict()


def assert_same_state(a, b):
    # As sets: a dict attribute of a model rebuilt from the pytree iterates in
    # JAX's sorted key order (as after any jax.tree.map), the original in insertion order.
    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb)
    for name in sa:
        assert sa[name].dtype == sb[name].dtype, name
        np.testing.assert_array_equal(np.asarray(sa[name]), np.asarray(sb[name]), err_msg=name)


class Table(nn.Module):
    """One plain array, so tests can choose its shape and dtype."""

    def __init__(self, shape=(3,), dtype=jnp.float32):
        super().__init__()
        self.w = jnp.ones(shape, dtype)

    def __call__(self, x):
        return x * self.w


class OtherTable(Table):
    """Same arrays as Table, different class."""


# -- round trip ------------------------------------------------------------------------------


def test_tensor_names_are_state_dict_names_and_metadata_is_recorded(tmp_path):
    model = trained_net()
    path = tmp_path / "net.safetensors"
    nn.save(path, model, step=42)
    tensors, meta = read_raw(path)
    assert set(tensors) == set(model.state_dict())
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(tensors[name], np.asarray(value))
    assert tensors["drop.rng.seed"].dtype == np.uint32  # raw key data
    assert meta["blox_version"] == __import__("blox").__version__
    assert meta["format"] == "1"
    assert meta["step"] == "42"
    assert meta["model_class"] == "Net"
    lines = sorted(
        f"{n}:{list(v.shape)}:{np.dtype(v.dtype).name}" for n, v in model.state_dict().items()
    )
    expected = hashlib.sha256("\n".join(["Net", *lines]).encode()).hexdigest()
    assert meta["structure_hash"] == expected
    assert "opt_state_treedef" not in meta


def test_load_gives_identical_arrays_and_outputs_and_leaves_like_alone(tmp_path):
    model = trained_net(seed=0)
    path = tmp_path / "net.safetensors"
    nn.save(path, model)
    like = trained_net(seed=1)
    before = {n: np.asarray(v) for n, v in like.state_dict().items()}
    loaded, opt_state, step = nn.load(path, like=like)
    assert loaded is not like and opt_state is None and step is None
    assert type(loaded) is Net
    assert_same_state(loaded, model)
    for name, value in like.state_dict().items():  # the template is untouched
        np.testing.assert_array_equal(np.asarray(value), before[name])
    x = randn(7, 4, 8, 8, 1)
    np.testing.assert_array_equal(loaded(x), model(x))  # training: same dropout mask
    np.testing.assert_array_equal(loaded.eval()(x), model.eval()(x))
    assert int(loaded.drop.rng.counter) == int(model.drop.rng.counter) == 3


def test_names_follow_state_dict_for_containers_and_nested_core_params(tmp_path):
    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = {"b": nn.Linear(2, 2), "a": [nn.LayerNorm(2), nn.Dropout(0.1)]}
            self.lstm = nn.LSTM(2, 3)

    model = Holder()
    path = tmp_path / "holder.safetensors"
    nn.save(path, model)
    assert set(read_raw(path)[0]) == set(model.state_dict())
    assert_same_state(nn.load(path, like=Holder()).model, model)


def test_mode_and_frozen_flags_come_from_like(tmp_path):
    path = tmp_path / "net.safetensors"
    nn.save(path, trained_net())
    like = Net().eval().freeze("fc")
    loaded = nn.load(path, like=like).model
    assert not loaded.training
    assert [n for n, _ in loaded.named_parameters(trainable_only=True)] == [
        "conv.kernel",
        "conv.bias",
        "bn.scale",
        "bn.bias",
    ]


def test_opt_state_and_step_round_trip(tmp_path):
    model = trained_net()
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(nn.trainable(model))
    grads = jax.tree.map(jnp.ones_like, nn.trainable(model))
    _, opt_state = optimizer.update(grads, opt_state, nn.trainable(model))
    path = tmp_path / "net.safetensors"
    nn.save(path, model, opt_state, step=np.int64(7))
    tensors, meta = read_raw(path)
    assert "opt_state[0].count" in tensors and "opt_state[0].mu.fc.kernel" in tensors
    assert "ScaleByAdamState" in meta["opt_state_treedef"]

    like = Net()
    template = optimizer.init(nn.trainable(like))
    _, restored, step = nn.load(path, like=like, opt_state=template)
    assert step == 7
    assert jax.tree.structure(restored) == jax.tree.structure(opt_state)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(opt_state), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert int(restored[0].count) == 1
    # An optimizer state in the file but not asked for is fine.
    assert nn.load(path, like=Net()).opt_state is None


def test_overwriting_replaces_the_checkpoint(tmp_path):
    path = tmp_path / "t.safetensors"
    nn.save(path, Table(), step=1)
    nn.save(path, Table(), step=2)
    assert nn.load(path, like=Table()).step == 2
    assert sorted(os.listdir(tmp_path)) == ["t.safetensors"]  # no temporary files left


# -- exact resume ----------------------------------------------------------------------------


def test_resume_in_a_fresh_process_is_bit_exact(tmp_path):
    model, opt_state = _resume_train.train(*_resume_train.fresh(seed=0), 0, 10)
    straight = tmp_path / "straight.safetensors"
    nn.save(straight, model, opt_state, step=10)

    half, half_state = _resume_train.train(*_resume_train.fresh(seed=0), 0, 5)
    first = tmp_path / "first_half.safetensors"
    nn.save(first, half, half_state, step=5)
    resumed = tmp_path / "resumed.safetensors"
    result = subprocess.run(
        [sys.executable, "-m", "tests.eager._resume_train", str(first), str(resumed)],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr

    want, want_meta = read_raw(straight)
    got, got_meta = read_raw(resumed)
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert got_meta["structure_hash"] == want_meta["structure_hash"]
    assert int(got["drop.rng.counter"]) == 10
    assert int(got["opt_state[0].count"]) == 10
    assert not np.array_equal(got["bn.running_mean"], np.zeros(4, np.float32))


# -- atomic writes ---------------------------------------------------------------------------

_KILLED_SAVE = textwrap.dedent(
    """
    import os, shutil, signal, sys
    from blox import eager as nn

    path, reference, mode = sys.argv[1:4]
    nn.save(path, nn.Linear(4, 4, seed=0), step=1)
    shutil.copyfile(path, reference)
    big = nn.Linear(256, 256, seed=1)

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if mode == "mid-write":
        real_fdopen = os.fdopen

        class HalfThenDie:
            def __init__(self, file):
                self.file = file

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def write(self, data):
                self.file.write(bytes(memoryview(data)[: len(data) // 2]))
                self.file.flush()
                os.fsync(self.file.fileno())
                die()

        os.fdopen = lambda fd, *a, **k: HalfThenDie(real_fdopen(fd, *a, **k))
    else:  # the temporary file is complete and fsynced; the rename never happens
        os.replace = lambda *a, **k: die()
    nn.save(path, big, step=2)
    sys.exit("the save was not interrupted")
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")
@pytest.mark.parametrize("mode", ["mid-write", "before-rename"])
def test_a_save_killed_midway_leaves_the_previous_checkpoint_intact(tmp_path, mode):
    path, reference = tmp_path / "model.safetensors", tmp_path / "reference.bin"
    result = subprocess.run(
        [sys.executable, "-c", _KILLED_SAVE, str(path), str(reference), mode],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert path.read_bytes() == reference.read_bytes()
    loaded, _, step = nn.load(path, like=nn.Linear(4, 4, seed=9))
    assert step == 1
    np.testing.assert_array_equal(loaded.kernel, nn.Linear(4, 4, seed=0).kernel)
    # The interrupted write went to a hidden temporary file, never to the target.
    leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".model.safetensors.")
    full_size = 256 * 256 * 4
    if mode == "mid-write":
        assert 0 < leftovers[0].stat().st_size < full_size
    else:
        assert leftovers[0].stat().st_size > full_size


def test_a_failed_write_removes_its_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "t.safetensors"
    nn.save(path, Table(), step=1)
    original = path.read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        nn.save(path, Table(shape=(5,)), step=2)
    monkeypatch.undo()
    assert path.read_bytes() == original
    assert sorted(os.listdir(tmp_path)) == ["t.safetensors"]


# -- errors ----------------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "net.safetensors"
    nn.save(path, trained_net())
    return path


def test_truncated_file(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) - 10])
    with pytest.raises(ValueError, match=r"expected a complete safetensors checkpoint at .*net"):
        nn.load(saved, like=Net())
    saved.write_bytes(data[:5])
    with pytest.raises(ValueError, match="too short for a header"):
        nn.load(saved, like=Net())


def test_garbage_and_corrupted_bytes(saved):
    data = saved.read_bytes()
    saved.write_bytes(b"\x00not a checkpoint at all, just bytes" * 3)
    with pytest.raises(ValueError, match=r"header length of \d+ bytes in a file of 108 bytes"):
        nn.load(saved, like=Net())
    length = int.from_bytes(data[:8], "little")
    broken = data[:8] + b"#" * length + data[8 + length :]
    saved.write_bytes(broken)
    with pytest.raises(ValueError, match="header that is not a JSON object"):
        nn.load(saved, like=Net())
    saved.write_bytes(data + b"extra")
    with pytest.raises(ValueError, match="truncated, corrupted or not a safetensors file"):
        nn.load(saved, like=Net())


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected a checkpoint file, got no file"):
        nn.load(tmp_path / "nothing.safetensors", like=Net())
    with pytest.raises(FileNotFoundError, match="expected an existing folder"):
        nn.save(tmp_path / "no" / "folder.safetensors", Net())


def test_different_architecture_is_one_error_listing_every_difference(tmp_path):
    class Small(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 4)
            self.b = nn.Linear(4, 2)

    class Big(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 5)
            self.c = nn.Linear(5, 2)

    path = tmp_path / "small.safetensors"
    nn.save(path, Small())
    with pytest.raises(ValueError) as info:
        nn.load(path, like=Big())
    message = str(info.value)
    assert "missing ['c.kernel', 'c.bias']" in message
    assert "unexpected ['b.bias', 'b.kernel']" in message
    assert "a.kernel: expected (3, 5), got (3, 4)" in message
    assert "a.bias: expected (5,), got (4,)" in message
    assert "Fix: build `like` as the saved model was built (class 'Small'" in message


def test_dtype_mismatch(tmp_path):
    path = tmp_path / "t.safetensors"
    nn.save(path, Table(dtype=jnp.float16))
    with pytest.raises(ValueError, match=r"dtype mismatches \[w: expected float32, got float16\]"):
        nn.load(path, like=Table())


def test_same_arrays_different_class_mentions_the_structure_hash(tmp_path):
    path = tmp_path / "t.safetensors"
    nn.save(path, Table())
    with pytest.raises(
        ValueError,
        match=r"different structure_hash \(saved from class 'Table', loading into 'OtherTable'\)",
    ):
        nn.load(path, like=OtherTable())


def test_opt_state_requested_but_absent(saved):
    template = optax.adam(1e-3).init(nn.trainable(Net()))
    with pytest.raises(ValueError, match=r"expected an optimizer state .* saved without one"):
        nn.load(saved, like=Net(), opt_state=template)


def test_opt_state_of_another_optimizer(tmp_path):
    model = Net()
    path = tmp_path / "net.safetensors"
    nn.save(path, model, optax.adam(1e-3).init(nn.trainable(model)))
    sgd = optax.sgd(1e-3, momentum=0.9).init(nn.trainable(model))
    with pytest.raises(ValueError, match=r"optimizer state: missing \['opt_state\[0\]\.trace"):
        nn.load(path, like=Net(), opt_state=sgd)


def test_model_names_that_clash_with_the_opt_state(tmp_path):
    class Clash(nn.Module):
        def __init__(self):
            super().__init__()
            self.opt_state = nn.Linear(2, 2)

    model = Clash()
    nn.save(tmp_path / "fine.safetensors", model)  # no optimizer state: no clash
    with pytest.raises(ValueError, match="do not start with 'opt_state'"):
        nn.save(tmp_path / "c.safetensors", model, optax.sgd(0.1).init(nn.trainable(model)))


def test_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match=r"expected model to be a blox\.eager Module"):
        nn.save(tmp_path / "x.safetensors", {"w": jnp.ones(2)})
    with pytest.raises(TypeError, match="expected step to be an int or None, got float"):
        nn.save(tmp_path / "x.safetensors", Table(), step=1.5)
    nn.save(tmp_path / "x.safetensors", Table())
    with pytest.raises(TypeError, match=r"expected like to be a blox\.eager Module"):
        nn.load(tmp_path / "x.safetensors", like=None)


def test_safetensors_missing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    with pytest.raises(ImportError, match=r'pip install "blox\[checkpoint\]"'):
        nn.save(tmp_path / "x.safetensors", Table())
    with pytest.raises(ImportError, match=r"nn.load: expected the safetensors package"):
        nn.load(tmp_path / "x.safetensors", like=Table())
