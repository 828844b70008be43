"""bx.save_params / bx.load_params: round trips, typed keys, metadata, clear errors."""

import hashlib
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import blox as bx

safetensors = pytest.importorskip("safetensors")
safetensors_numpy = pytest.importorskip("safetensors.numpy")


def read_raw(path):
    with safetensors.safe_open(path, framework="np") as f:
        return {name: f.get_tensor(name) for name in f.keys()}, f.metadata()


def model_params(seed=0):
    """A Linear, a BatchNorm and a seeded Rng, run once: every kind of entry."""
    g = bx.Graph("net")
    rng = bx.Rng(g / "rng")
    lin = bx.Linear(g / "lin", 4, rng=rng)
    bn = bx.BatchNorm(g / "bn")
    params = rng.seed(bx.Params(), seed=seed)
    x, params = lin(params, jnp.ones((2, 3)))
    _, params = bn(params, x)
    return params.locked()


def mixed_params():
    """Typed keys of two implementations, flags, nested metadata, an unlocked container."""
    return bx.Params.from_dict(
        {
            ("a", "w"): bx.Param(
                jnp.arange(6.0).reshape(2, 3),
                metadata={"sharding": (None, "model"), "nested": {"b": [1, (2, 3)], "a": None}},
            ),
            ("a", "key"): bx.Param(jax.random.key(3), trainable=False, metadata={"tag": "k"}),
            ("b", "rbg"): bx.Param(jax.random.key(4, impl="rbg"), trainable=False),
            ("b", "half"): bx.Param(jnp.ones((2,), jnp.bfloat16)),
            ("b", "count"): bx.Param(jnp.uint32(5), trainable=False),
        }
    )


def assert_params_equal(a, b):
    assert list(a.keys()) == list(b.keys())
    assert a.is_locked == b.is_locked
    for (path, pa), pb in zip(a.items(), b.values(), strict=True):
        assert pa.trainable == pb.trainable, path
        assert pa.metadata == pb.metadata, path
        assert pa.value.dtype == pb.value.dtype, path
        va, vb = pa.value, pb.value
        if jnp.issubdtype(va.dtype, jax.dtypes.prng_key):
            assert str(jax.random.key_impl(va)) == str(jax.random.key_impl(vb))
            va, vb = jax.random.key_data(va), jax.random.key_data(vb)
        np.testing.assert_array_equal(np.asarray(va), np.asarray(vb), err_msg=str(path))


def test_round_trip_without_like_rebuilds_everything(tmp_path):
    for params in (model_params(), mixed_params()):
        path = tmp_path / "p.safetensors"
        bx.save_params(path, params, step=3)
        restored, step = bx.load_params(path)
        assert step == 3
        assert_params_equal(restored, params)
    metadata = restored[("a", "w")].metadata
    assert metadata["sharding"] == (None, "model")  # tuples come back as tuples
    assert metadata["nested"] == {"b": [1, (2, 3)], "a": None}


def test_file_names_and_metadata(tmp_path):
    params = model_params()
    path = tmp_path / "p.safetensors"
    bx.save_params(path, params)
    tensors, meta = read_raw(path)
    assert set(tensors) == {"/".join(p) for p in params.keys()}
    assert tensors["net/rng/seed"].dtype == np.uint32  # key data
    assert meta["blox_version"] == bx.__version__
    assert meta["format"] == "1" and meta["step"] == "null"
    assert json.loads(meta["key_impls"]) == {"net/rng/seed": "threefry2x32"}
    layout = json.loads(meta["params"])
    assert layout["locked"] is True
    assert [e["trainable"] for e in layout["entries"]] == [p.trainable for p in params.values()]
    lines = []
    for key, param in params.items():
        value = param.value
        if jnp.issubdtype(value.dtype, jax.dtypes.prng_key):
            shape, dtype = jax.random.key_data(value).shape, "key<threefry2x32>"
        else:
            shape, dtype = value.shape, value.dtype.name
        lines.append(f"{'/'.join(key)}:{list(shape)}:{dtype}")
    expected = hashlib.sha256("\n".join(["Params", *sorted(lines)]).encode()).hexdigest()
    assert meta["structure_hash"] == expected


def test_load_into_like_keeps_its_structure_and_metadata(tmp_path):
    params = model_params(seed=0)
    path = tmp_path / "p.safetensors"
    bx.save_params(path, params, step=11)
    like = bx.Params.from_dict(
        {k: p.replace(metadata={"tag": "mine"}) for k, p in model_params(seed=1).items()}
    )  # unlocked, other values, other metadata
    restored, step = bx.load_params(path, like=like)
    assert step == 11 and not restored.is_locked
    assert list(restored.keys()) == list(like.keys())
    for key, param in restored.items():
        assert param.metadata == {"tag": "mine"}
        assert param.trainable == like[key].trainable
    # Values from the file: the saved params with like's metadata and lock state.
    expected = {k: p.replace(metadata={"tag": "mine"}) for k, p in params.items()}
    assert_params_equal(restored, bx.Params.from_dict(expected))


def test_foreign_safetensors_files_load_with_like_only(tmp_path):
    path = tmp_path / "foreign.safetensors"
    safetensors_numpy.save_file({"net/w": np.ones((2, 2), np.float32)}, str(path))
    like = bx.Params.from_dict({("net", "w"): jnp.zeros((2, 2))})
    restored, step = bx.load_params(path, like=like)
    assert step is None and float(restored[("net", "w")].value.sum()) == 4.0
    with pytest.raises(ValueError, match=r"expected blox params metadata .* Fix: pass like="):
        bx.load_params(path)


def test_failed_write_leaves_previous_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "p.safetensors"
    bx.save_params(path, model_params(), step=1)
    original = path.read_bytes()

    def crash(*args):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="Input/output error"):
        bx.save_params(path, mixed_params(), step=2)
    monkeypatch.undo()
    assert path.read_bytes() == original
    assert os.listdir(tmp_path) == ["p.safetensors"]


# -- errors ----------------------------------------------------------------------------------


def test_mismatch_with_like_is_one_error(tmp_path):
    path = tmp_path / "p.safetensors"
    bx.save_params(
        path,
        bx.Params.from_dict(
            {
                ("w",): jnp.ones((2, 3)),
                ("b",): jnp.ones(3),
                ("old",): jnp.ones(1),
                ("h",): jnp.ones(2, jnp.float16),
                ("k",): jax.random.key(0),
            }
        ),
    )
    like = bx.Params.from_dict(
        {
            ("w",): jnp.ones((3, 3)),
            ("b",): jnp.ones(3),
            ("new",): jnp.ones(1),
            ("h",): jnp.ones(2),
            ("k",): jax.random.key(0, impl="rbg"),
        }
    )
    with pytest.raises(ValueError) as info:
        bx.load_params(path, like=like)
    message = str(info.value)
    assert message.startswith("bx.load_params: expected a checkpoint with the names, shapes")
    assert "missing ['new']" in message and "unexpected ['old']" in message
    assert "w: expected (3, 3), got (2, 3)" in message
    assert "k: expected (4,), got (2,)" in message
    assert "h: expected float32, got float16" in message
    assert "k: expected key<rbg>, got key<threefry2x32>" in message
    assert "Fix: load into params of the architecture" in message


def test_corrupted_files(tmp_path):
    path = tmp_path / "p.safetensors"
    bx.save_params(path, model_params())
    data = path.read_bytes()
    for broken, reason in [
        (b"", "a file of 0 bytes, too short for a header"),
        (data[:-1], "bytes of tensor data where the header lists"),
        (bytes(range(256)) * 4, "a header length of"),
        (data[:8] + b"{" * (len(data) - 8), "a header that is not a JSON object"),
    ]:
        path.write_bytes(broken)
        with pytest.raises(ValueError, match=f"bx.load_params: expected a complete .*({reason})"):
            bx.load_params(path)


def test_safetensors_rejections_are_reported_as_corruption(tmp_path):
    header = json.dumps({"w": {"dtype": "NOPE", "shape": [1], "data_offsets": [0, 4]}}).encode()
    path = tmp_path / "p.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\x00" * 4)
    with pytest.raises(ValueError, match="got a file safetensors rejects"):
        bx.load_params(path)


def test_newer_format_is_refused(tmp_path):
    path = tmp_path / "p.safetensors"
    safetensors_numpy.save_file(
        {"w": np.ones(1, np.float32)}, str(path), metadata={"format": "99", "blox_version": "9"}
    )
    with pytest.raises(ValueError, match=r"got format 99 \(written by blox 9\)\. Fix: upgrade"):
        bx.load_params(path)


def test_bad_arguments(tmp_path):
    path = tmp_path / "p.safetensors"
    with pytest.raises(TypeError, match=r"bx\.save_params: expected a blox Params, got dict"):
        bx.save_params(path, {"w": jnp.ones(1)})
    with pytest.raises(TypeError, match="expected step to be an int or None, got bool"):
        bx.save_params(path, model_params(), step=True)
    with pytest.raises(TypeError, match="expected JSON-like metadata on 'w'"):
        bx.save_params(
            path, bx.Params.from_dict({("w",): bx.Param(jnp.ones(1), metadata={"init": jnp.zeros})})
        )
    with pytest.raises(ValueError, match="got two that read 'a/b'"):
        bx.save_params(path, bx.Params.from_dict({("a/b",): jnp.ones(1), ("a", "b"): jnp.ones(1)}))
    bx.save_params(path, model_params())
    with pytest.raises(TypeError, match="expected like to be a blox Params or None"):
        bx.load_params(path, like={"w": 1})


def test_safetensors_missing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    with pytest.raises(ImportError, match=r'bx.save_params: .* pip install "blox\[checkpoint\]"'):
        bx.save_params(tmp_path / "p.safetensors", model_params())
    with pytest.raises(ImportError, match=r'pip install "blox\[checkpoint\]"'):
        bx.load_params(tmp_path / "p.safetensors")
