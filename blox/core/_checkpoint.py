"""Checkpoints on disk: `Params` as safetensors files, written atomically.

A checkpoint is one safetensors file: a JSON header naming every tensor with
its dtype, shape and byte range, then the raw bytes. Loading one never runs
code (unlike pickle), so an untrusted file can at worst fail to load. The
header's string metadata records the blox version, the format version, the
training step and a structure hash, plus what is needed to rebuild the
container (trainable flags, metadata, lock state, PRNG key implementations).

This file also holds the pieces `blox.eager`'s `nn.save` / `nn.load` share:
the atomic write, reading with validation, and the one error that lists how a
checkpoint differs from the model it is loaded into.

Writes are atomic: the bytes go to a temporary file in the target's folder,
are flushed and fsynced, then renamed over the target (and the folder is
fsynced), so a crash at any point leaves either the old checkpoint or the
new one, never a mix. A crash can leave a hidden ``.<name>.<random>.tmp``
file behind; it is never read.
"""

import contextlib
import hashlib
import json
import numbers
import os
import secrets
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._params import Param, Params

FORMAT_VERSION = 1

# Key of one tensor in a signature: (shape, dtype name). Typed PRNG keys are
# stored as their raw key data; their dtype reads as "key<impl>".
Signature = dict[str, tuple[tuple[int, ...], str]]

_LIST_LIMIT = 20


def _safetensors(where: str) -> Any:
    try:
        import safetensors
        import safetensors.numpy
    except ImportError as error:
        raise ImportError(
            f"{where}: expected the safetensors package (blox checkpoints are "
            'safetensors files), got none installed. Fix: pip install "blox[checkpoint]".'
        ) from error
    return safetensors


def _dtypes() -> dict[str, Any]:
    """numpy dtypes of the safetensors dtype codes (ml_dtypes ships with jax)."""
    import ml_dtypes

    return {
        "BOOL": np.bool_,
        "U8": np.uint8,
        "I8": np.int8,
        "U16": np.uint16,
        "I16": np.int16,
        "U32": np.uint32,
        "I32": np.int32,
        "U64": np.uint64,
        "I64": np.int64,
        "F16": np.float16,
        "BF16": ml_dtypes.bfloat16,
        "F32": np.float32,
        "F64": np.float64,
        "C64": np.complex64,
        "F8_E4M3": ml_dtypes.float8_e4m3fn,
        "F8_E5M2": ml_dtypes.float8_e5m2,
    }


# -- values ---------------------------------------------------------------------------------


def _is_key(value: Any) -> bool:
    dtype = getattr(value, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)


def _encode(value: Any) -> tuple[np.ndarray, str | None]:
    """`value` as a contiguous numpy array, and its PRNG impl if it was a typed key."""
    if _is_key(value):
        return np.asarray(jax.random.key_data(value), order="C"), str(jax.random.key_impl(value))
    return np.asarray(value, order="C"), None


def _decode(array: np.ndarray, impl: str | None) -> jax.Array:
    value = jnp.asarray(array)
    if impl is not None:
        value = jax.random.wrap_key_data(value, impl=impl)
    return value


def _shape_dtype(value: Any) -> tuple[tuple[int, ...], str]:
    """The signature entry of an in-memory value (typed keys by their key data)."""
    if _is_key(value):
        data = jax.eval_shape(jax.random.key_data, value)
        return tuple(data.shape), f"key<{jax.random.key_impl(value)}>"
    dtype = getattr(value, "dtype", None)
    if dtype is None:  # a Python scalar: stored as numpy stores it
        dtype = np.asarray(value).dtype
    return tuple(np.shape(value)), np.dtype(dtype).name


def _file_signature(tensors: Mapping[str, np.ndarray], key_impls: Mapping[str, str]) -> Signature:
    return {
        name: (
            tuple(array.shape),
            f"key<{key_impls[name]}>" if name in key_impls else array.dtype.name,
        )
        for name, array in tensors.items()
    }


def _structure_hash(kind: str, signature: Signature) -> str:
    """sha256 over `kind` and the sorted ``name:shape:dtype`` lines: stable across runs."""
    lines = [kind] + sorted(f"{n}:{list(s)}:{d}" for n, (s, d) in signature.items())
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _step_text(where: str, step: Any) -> str:
    if step is None:
        return "null"
    if isinstance(step, bool | np.bool_) or not (
        isinstance(step, numbers.Integral)
        or (
            hasattr(step, "dtype")
            and np.shape(step) == ()
            and np.issubdtype(step.dtype, np.integer)
        )
    ):
        raise TypeError(
            f"{where}: expected step to be an int or None, got {type(step).__name__} "
            f"{step!r}. Fix: pass the training step as an int, e.g. step=1000."
        )
    return str(int(step))


def _base_metadata(step: str, structure_hash: str, key_impls: Mapping[str, str]) -> dict[str, str]:
    from blox import __version__

    return {
        "format": str(FORMAT_VERSION),
        "blox_version": __version__,
        "step": step,
        "structure_hash": structure_hash,
        "key_impls": json.dumps(dict(key_impls), sort_keys=True),
    }


# -- writing -------------------------------------------------------------------------------


def _write(
    where: str, path: Any, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]
) -> None:
    """Serialises `tensors` and `metadata` as safetensors and writes them atomically."""
    safetensors = _safetensors(where)
    data = safetensors.numpy.save(dict(tensors), metadata=dict(metadata))
    _atomic_write(where, os.fspath(path), data)


def _atomic_write(where: str, path: str, data: bytes) -> None:
    """Temporary file in the same folder, fsync, rename over `path`, fsync the folder.

    The temporary file is created with `os.open(..., 0o666)` rather than
    `tempfile.mkstemp` so that the checkpoint gets the permissions of any
    newly written file (umask applied), not mkstemp's private 0o600.
    """
    _check_path(where, path, "save to")
    if os.path.isdir(path):
        raise IsADirectoryError(
            f"{where}: expected a file path to save to, got the folder '{path}'. Fix: "
            "name a file inside it, e.g. os.path.join(folder, 'model.safetensors')."
        )
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"{where}: expected an existing folder for '{path}', got no folder "
            f"'{folder}'. Fix: create it first, e.g. os.makedirs(folder, exist_ok=True)."
        )
    _remove_stale_temps(folder, os.path.basename(path))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
        except OSError as error:
            raise _os_error(where, "save to", path, error) from None
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(error, OSError):
            raise _os_error(where, "save to", path, error) from None
        raise
    _fsync_folder(folder)


# A temporary file untouched this long belongs to a save that was killed (a
# live save writes, fsyncs and renames its file within moments of its last
# write), so the next save to the same path removes it.
_STALE_TEMP_SECONDS = 600.0


def _remove_stale_temps(folder: str, name: str) -> None:
    prefix, now = f".{name}.", time.time()
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            if entry.name.startswith(prefix) and entry.name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    if now - entry.stat().st_mtime > _STALE_TEMP_SECONDS:
                        os.unlink(entry.path)


def _check_path(where: str, path: str, operation: str) -> None:
    if path == "":
        raise ValueError(
            f"{where}: expected a file path to {operation}, got an empty path. Fix: "
            "pass e.g. 'model.safetensors'."
        )


def _os_error(where: str, operation: str, path: str, error: OSError) -> OSError:
    """`error` re-raised naming the user's path and the operation, not a temp file."""
    reason = error.strerror or type(error).__name__
    text = (
        f"{where}: expected to {operation} '{path}', got {type(error).__name__} "
        f"({reason}). Fix: check the path and its folder's permissions."
    )
    try:
        return type(error)(error.errno, text) if error.errno is not None else type(error)(text)
    except TypeError:
        return OSError(text)


def _clean(text: Any, limit: int = 80) -> str:
    """Text from a file, safe to echo: control characters escaped, length capped."""
    text = str(text)
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return out + ("..." if len(text) > limit else "")


def _fsync_folder(folder: str) -> None:
    # Makes the rename itself durable. Windows cannot open a folder; there
    # os.replace is still atomic, only its durability is up to the OS.
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- reading -------------------------------------------------------------------------------


def _corrupt(where: str, path: str, got: str) -> ValueError:
    return ValueError(
        f"{where}: expected a complete safetensors checkpoint at '{path}', got {got}; "
        "the file is truncated, corrupted or not a safetensors file. Fix: load an "
        "intact copy or save it again (an interrupted save never damages the previous "
        "file, so the damage happened elsewhere, e.g. in a copy or a download)."
    )


# safetensors' own limit on the JSON header.
_MAX_HEADER = 100 * 1024 * 1024


def _read_checked(where: str, path: str, file: Any) -> bytes:
    """The file's bytes, read only after its header length fits the file."""
    size = os.fstat(file.fileno()).st_size
    if os.path.isdir(path):
        raise IsADirectoryError(path)
    head = file.read(8)
    if len(head) == 8:
        length = int.from_bytes(head, "little")
        if length > _MAX_HEADER or 8 + length > size:
            raise _corrupt(
                where, path, f"a header length of {length} bytes in a file of {size} bytes"
            )
    return head + file.read()


def _header(where: str, path: str, data: bytes) -> dict[str, Any]:
    """The parsed JSON header, after checking it against the file size."""
    size = len(data)
    if size < 8:
        raise _corrupt(where, path, f"a file of {size} bytes, too short for a header")
    length = int.from_bytes(data[:8], "little")
    if 8 + length > size:
        raise _corrupt(where, path, f"a header length of {length} bytes in a file of {size} bytes")
    try:
        header = json.loads(data[8 : 8 + length])
    except (UnicodeDecodeError, ValueError, RecursionError):  # deep nesting: RecursionError
        header = None
    if not isinstance(header, dict):
        raise _corrupt(where, path, "a header that is not a JSON object")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(o, int) and o >= 0 for o in offsets)
        ):
            raise _corrupt(where, path, f"no byte range for tensor '{_clean(name)}' in the header")
        end = max(end, offsets[1])
    stored = size - 8 - length
    if stored != end:
        raise _corrupt(
            where, path, f"{stored} bytes of tensor data where the header lists {end} bytes"
        )
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _corrupt(where, path, "metadata that is not a string-to-string map")
    return header


def _read(where: str, path: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Reads and validates a checkpoint: `(tensors by name, parsed metadata)`.

    Parsed metadata has `format`, `step` (int or None) and `key_impls` decoded,
    every other entry as stored; a file written by other tools has none of
    blox's entries.
    """
    safetensors = _safetensors(where)
    path = os.fspath(path)
    _check_path(where, path, "load")
    try:
        with open(path, "rb") as file:
            data = _read_checked(where, path, file)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{where}: expected a checkpoint file, got no file at '{path}'. Fix: check "
            "the path (nn.save and bx.save_params write it)."
        ) from None
    except IsADirectoryError:
        raise IsADirectoryError(
            f"{where}: expected a checkpoint file, got the folder '{path}'. Fix: pass "
            "the file inside it, e.g. os.path.join(folder, 'model.safetensors')."
        ) from None
    except OSError as error:
        raise _os_error(where, "load", path, error) from None
    metadata = dict(_header(where, path, data).get("__metadata__") or {})
    try:
        views = safetensors.deserialize(data)
    except Exception as error:
        raise _corrupt(where, path, f"a file safetensors rejects ({error})") from error
    table = _dtypes()
    tensors = {}
    for name, info in views:
        dtype = table.get(info["dtype"])
        if dtype is None:
            raise ValueError(
                f"{where}: expected tensors of a dtype blox can load in '{path}', got "
                f"'{_clean(name)}' of safetensors dtype {_clean(info['dtype'])}. Fix: "
                f"convert it to one of {', '.join(table)} before loading."
            )
        tensors[name] = np.frombuffer(info["data"], dtype).reshape(tuple(info["shape"]))
    try:
        version = int(metadata.get("format", FORMAT_VERSION))
        metadata["step"] = json.loads(metadata.get("step", "null"))
        metadata["key_impls"] = json.loads(metadata.get("key_impls", "{}"))
    except (ValueError, RecursionError) as error:
        raise _corrupt(where, path, f"unreadable blox metadata ({_clean(error)})") from None
    step = metadata["step"]
    if step is not None and (not isinstance(step, int) or isinstance(step, bool)):
        raise _corrupt(where, path, f"a step of type {type(step).__name__} in its metadata")
    impls = metadata["key_impls"]
    if not isinstance(impls, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in impls.items()
    ):
        raise _corrupt(where, path, "key_impls metadata that is not a string-to-string map")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{where}: expected a checkpoint of format {FORMAT_VERSION} or older in "
            f"'{path}', got format {version} (written by blox "
            f"{_clean(metadata.get('blox_version', '?'))}). Fix: upgrade blox to load it."
        )
    return tensors, metadata


# -- comparing ------------------------------------------------------------------------------


def _listing(items: list[str]) -> str:
    shown = ", ".join(repr(item) for item in items[:_LIST_LIMIT])
    more = f", ... ({len(items)} in all)" if len(items) > _LIST_LIMIT else ""
    return f"[{shown}{more}]"


def _differences(expected: Signature, got: Signature) -> list[str]:
    """How `got` differs from `expected`: missing, unexpected, shape and dtype lines."""
    missing = [name for name in expected if name not in got]
    unexpected = sorted(name for name in got if name not in expected)
    shapes, dtypes = [], []
    for name, (shape, dtype) in expected.items():
        if name not in got:
            continue
        if got[name][0] != shape:
            shapes.append(f"{name}: expected {shape}, got {got[name][0]}")
        if got[name][1] != dtype:
            dtypes.append(f"{name}: expected {dtype}, got {got[name][1]}")
    problems = []
    if missing:
        problems.append(f"missing {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected {_listing(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches [{'; '.join(shapes[:_LIST_LIMIT])}]")
    if dtypes:
        problems.append(f"dtype mismatches [{'; '.join(dtypes[:_LIST_LIMIT])}]")
    return problems


def _mismatch(where: str, path: Any, problems: list[str], fix: str) -> ValueError:
    return ValueError(
        f"{where}: expected a checkpoint with the names, shapes and dtypes of `like`, "
        f"got '{os.fspath(path)}' with {'; '.join(problems)}. Fix: {fix}"
    )


# -- Params ---------------------------------------------------------------------------------


def _meta_to_json(where: str, name: str, value: Any) -> Any:
    """JSON form of a metadata value; tuples are tagged so they come back as tuples."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, tuple):
        return {"__tuple__": [_meta_to_json(where, name, v) for v in value]}
    if isinstance(value, list):
        return [_meta_to_json(where, name, v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _meta_to_json(where, name, v) for k, v in value.items()}
    raise TypeError(
        f"{where}: expected JSON-like metadata on {name!r} (str, numbers, bool, None, "
        f"lists, tuples, dicts with str keys), got {type(value).__name__} {value!r}. Fix: "
        "store a plain description instead (e.g. a tuple of mesh axis names)."
    )


def _meta_from_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_meta_from_json(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"__tuple__"}:
            return tuple(_meta_from_json(v) for v in value["__tuple__"])
        return {k: _meta_from_json(v) for k, v in value.items()}
    return value


def save_params(path: str | os.PathLike, params: Params, step: int | None = None) -> None:
    """Writes `params` to a safetensors file at `path`, atomically.

    Tensor names are the paths joined with ``'/'`` (``'net/lin/kernel'``).
    Typed PRNG keys are stored as their raw key data. The metadata holds the
    blox version, `step`, a structure hash, and each entry's path, trainable
    flag and metadata plus the lock state, so `load_params` can rebuild the
    container without a template. The file appears complete or not at all: a
    crash mid-save leaves any previous file at `path` untouched.

    Args:
        path: The file to write (by convention ``*.safetensors``); its folder
            must exist.
        params: The container to save.
        step: The training step to record, or `None`.

    Raises:
        TypeError: If `params` is not a `Params`, `step` not an int, or a
            metadata value is not JSON-like.
        ValueError: If two paths join to the same name.
        ImportError: If safetensors is not installed.

    Example:
        >>> import os, tempfile
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> params = bx.Params.from_dict({('net', 'w'): jnp.ones((2, 3))}, locked=True)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = os.path.join(folder, 'params.safetensors')
        ...     bx.save_params(path, params, step=10)
        ...     restored, step = bx.load_params(path)
        >>> restored == params, step
        (True, 10)
    """
    where = "bx.save_params"
    if not isinstance(params, Params):
        raise TypeError(
            f"{where}: expected a blox Params, got {type(params).__name__}. Fix: pass "
            "the params returned by a module call (eager models: use nn.save)."
        )
    step_text = _step_text(where, step)
    tensors, key_impls, signature, entries = {}, {}, {}, []
    for key, param in params.items():
        name = "/".join(key)
        if name in tensors:
            raise ValueError(
                f"{where}: expected paths that stay distinct when joined with '/', got "
                f"two that read {name!r}. Fix: rename the entries (Graph names never "
                "contain '/')."
            )
        tensors[name], impl = _encode(param.value)
        if impl is not None:
            key_impls[name] = impl
        signature[name] = _shape_dtype(param.value)
        entries.append(
            {
                "name": name,
                "path": list(key),
                "trainable": param.trainable,
                "metadata": _meta_to_json(where, name, param.metadata),
            }
        )
    metadata = _base_metadata(step_text, _structure_hash("Params", signature), key_impls)
    metadata["params"] = json.dumps({"locked": params.is_locked, "entries": entries})
    _write(where, path, tensors, metadata)


def load_params(path: str | os.PathLike, like: Params | None = None) -> tuple[Params, int | None]:
    """Reads a file written by `save_params`: `(params, step)`.

    Without `like`, the container is rebuilt from the file (values, paths,
    trainable flags, metadata, lock state; typed PRNG keys re-wrapped with
    their recorded implementation). With `like`, the file must hold exactly
    `like`'s names with the same shapes and dtypes; the result has `like`'s
    order, flags, metadata and lock state and the file's values.

    Args:
        path: The file to read.
        like: Optional template, e.g. the params of a freshly initialised model.

    Returns:
        `(params, step)`, `step` being `None` if none was saved.

    Raises:
        FileNotFoundError: If there is no file at `path`.
        ValueError: If the file is truncated, corrupted or not a safetensors
            file, or differs from `like` (one error listing missing and
            unexpected names and shape and dtype mismatches), or lacks blox's
            params metadata while `like` is `None`.
        TypeError: If `like` is neither `None` nor a `Params`.
        ImportError: If safetensors is not installed.

    Example:
        >>> import os, tempfile
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> lin = bx.Linear(g / 'lin', 2, rng=rng)
        >>> _, params = lin(rng.seed(bx.Params(), seed=0), jnp.ones((1, 3)))
        >>> _, fresh = lin(rng.seed(bx.Params(), seed=1), jnp.ones((1, 3)))
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = os.path.join(folder, 'params.safetensors')
        ...     bx.save_params(path, params)
        ...     restored, step = bx.load_params(path, like=fresh)
        >>> restored == params, step
        (True, None)
    """
    where = "bx.load_params"
    if like is not None and not isinstance(like, Params):
        raise TypeError(
            f"{where}: expected like to be a blox Params or None, got "
            f"{type(like).__name__}. Fix: pass the params of a freshly built model "
            "(eager models: use nn.load)."
        )
    tensors, metadata = _read(where, path)
    key_impls = metadata["key_impls"]
    got = _file_signature(tensors, key_impls)
    if like is None:
        return _rebuild(where, path, tensors, metadata), metadata["step"]
    names = {"/".join(key): key for key in like.keys()}
    expected = {name: _shape_dtype(like[key].value) for name, key in names.items()}
    problems = _differences(expected, got)
    if problems:
        raise _mismatch(
            where,
            path,
            problems,
            "load into params of the architecture and dtypes that were saved, or pass "
            "like=None to rebuild them from the file.",
        )
    data = {
        key: like[key].replace(value=_decode(tensors[name], key_impls.get(name)))
        for name, key in names.items()
    }
    return Params.from_dict(data, locked=like.is_locked), metadata["step"]


def _rebuild(
    where: str, path: Any, tensors: dict[str, np.ndarray], metadata: dict[str, Any]
) -> Params:
    if "params" not in metadata:
        raise ValueError(
            f"{where}: expected blox params metadata in '{os.fspath(path)}' to rebuild "
            "the container, got a file without it (written by nn.save or another tool). "
            "Fix: pass like=params of the model, or use nn.load for nn.save files."
        )
    try:
        layout = json.loads(metadata["params"])
        entries = layout["entries"]
        names = [entry["name"] for entry in entries]
    except (ValueError, KeyError, TypeError) as error:
        raise _corrupt(
            where, os.fspath(path), f"unreadable params metadata ({_clean(error)})"
        ) from None
    if sorted(names) != sorted(tensors):
        raise _corrupt(where, os.fspath(path), "params metadata that disagrees with its tensors")
    data = {}
    for entry in entries:
        name = entry["name"]
        value = _decode(tensors[name], metadata["key_impls"].get(name))
        meta = _meta_from_json(entry["metadata"])
        data[tuple(entry["path"])] = Param(value, trainable=entry["trainable"], metadata=meta)
    return Params.from_dict(data, locked=bool(layout["locked"]))
