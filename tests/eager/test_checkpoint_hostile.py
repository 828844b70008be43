"""Checkpoints under hostile conditions: OS errors, huge or crafted files, stale temps.

Every failure names the user's path and the operation (never the hidden
temporary file), text from a file is sanitised before it is echoed, and
nothing is read whole before its header length is known to fit.
"""

import json
import os

import numpy as np
import pytest

from blox import eager as nn


def model():
    return nn.Linear(2, 2, seed=0)


def crafted(path, header: bytes, data: bytes = b"") -> None:
    with open(path, "wb") as file:
        file.write(len(header).to_bytes(8, "little") + header + data)


def test_empty_path_and_folder_targets_are_refused(tmp_path):
    with pytest.raises(
        ValueError, match=r"nn.save: expected a file path to save to, got an empty path"
    ):
        nn.save("", model())
    with pytest.raises(
        IsADirectoryError, match=rf"expected a file path to save to, got the folder '{tmp_path}'"
    ):
        nn.save(tmp_path, model())
    with pytest.raises(
        ValueError, match=r"nn.load: expected a file path to load, got an empty path"
    ):
        nn.load("", like=model())
    with pytest.raises(
        IsADirectoryError, match=r"nn.load: expected a checkpoint file, got the folder"
    ):
        nn.load(tmp_path, like=model())
    with pytest.raises(FileNotFoundError, match="expected an existing folder"):
        nn.save(tmp_path / "missing" / "m.safetensors", model())


def test_permission_errors_are_reraised_naming_the_operation(tmp_path, monkeypatch):
    # Root (as in CI containers) ignores file modes, so the OS error is injected.
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/hidden/.m.safetensors.abc.tmp")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(
        PermissionError,
        match=r"expected to save to '.*m.safetensors', got PermissionError \(Permission denied\)",
    ) as info:
        nn.save(tmp_path / "m.safetensors", model())
    assert ".tmp" not in str(info.value)
    assert [p.name for p in tmp_path.iterdir()] == []  # the temp file went too


def test_a_huge_non_checkpoint_is_rejected_from_its_first_bytes(tmp_path):
    path = tmp_path / "big.bin"
    with open(path, "wb") as file:
        file.write(b"\xff" * 8)
        file.seek(2**30)  # a sparse 1 GiB file: cheap to make, costly to read whole
        file.write(b"\0")
    with pytest.raises(ValueError, match="a header length of 18446744073709551615 bytes"):
        nn.load(path, like=model())


def test_text_from_the_file_is_sanitised_in_errors(tmp_path):
    path = tmp_path / "evil.safetensors"
    name = "x\n\x1b[31mEVIL"
    crafted(path, json.dumps({name: {"dtype": "F32", "shape": [1]}}).encode())
    with pytest.raises(ValueError, match="no byte range for tensor") as info:
        nn.load(path, like=model())
    assert "\n" not in str(info.value) and "\x1b" not in str(info.value)


def test_deeply_nested_headers_give_the_documented_value_error(tmp_path):
    path = tmp_path / "deep.safetensors"
    crafted(path, b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(ValueError, match="a header that is not a JSON object"):
        nn.load(path, like=model())


def test_a_corrupt_step_or_metadata_value_blames_the_file(tmp_path):
    path = tmp_path / "m.safetensors"
    nn.save(path, model(), step=3)
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    for key, value in [("step", '"three"'), ("step", "true"), ("key_impls", "[1]")]:
        bad = dict(header, __metadata__={**header["__metadata__"], key: value})
        text = json.dumps(bad).encode()
        text += b" " * (-len(text) % 8)
        crafted(path, text, data[8 + length :])
        with pytest.raises(ValueError, match=r"expected a complete safetensors checkpoint"):
            nn.load(path, like=model())


def test_a_temp_file_left_by_a_killed_save_is_removed_by_the_next_save(tmp_path):
    path = tmp_path / "m.safetensors"
    stale = tmp_path / ".m.safetensors.dead00.tmp"
    stale.write_bytes(b"partial")
    old = os.path.getmtime(stale) - 3600
    os.utime(stale, (old, old))
    live = tmp_path / ".m.safetensors.live00.tmp"  # another writer, still busy
    live.write_bytes(b"partial")
    nn.save(path, model())
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "m.safetensors"]
    restored = nn.load(path, like=nn.Linear(2, 2, seed=1)).model
    np.testing.assert_array_equal(restored.kernel, model().kernel)
