"""`nn.save` / `nn.load`: a model (and optimizer state) as one safetensors file.

Tensors are named exactly as `model.state_dict()` names them (RNG seeds as raw
`uint32` key data), and optimizer state leaves as ``opt_state`` followed by
their JAX key path (``opt_state[0].mu.fc.kernel``), so the file reads well in
any safetensors tool and loads with no pickle. Loading builds a new model
from a template of the same architecture (`like`): the template supplies the
configuration, mode and frozen flags, the file every array. The file format,
atomic write and validation are `blox.core`'s (`core/_checkpoint.py`).
"""

import os
from typing import Any, NamedTuple

import jax
import numpy as np

from blox.core import internal

from ._module import Module
from ._pytree import path_name

_OPT = "opt_state"


class Checkpoint(NamedTuple):
    """What `nn.load` returns: the new `model`, the `opt_state` (or `None`) and the `step`.

    Example:
        >>> from blox import eager as nn
        >>> nn.Checkpoint(model=None, opt_state=None, step=3).step
        3
    """

    model: Any
    opt_state: Any
    step: int | None


def _model_leaves(model: Module) -> tuple[list[str], list[Any], Any]:
    """Dotted names (as in `state_dict`), values and treedef of the model's leaves."""
    pairs, treedef = jax.tree_util.tree_flatten_with_path(model)
    names = [path_name(path) for path, _ in pairs]  # the one leaf-naming function
    return names, [value for _, value in pairs], treedef


def _opt_leaves(opt_state: Any) -> tuple[list[str], list[Any], Any]:
    pairs, treedef = jax.tree_util.tree_flatten_with_path(opt_state)
    names = [_OPT + jax.tree_util.keystr(path) for path, _ in pairs]
    return names, [value for _, value in pairs], treedef


def _is_opt_name(name: str) -> bool:
    return name == _OPT or name.startswith((_OPT + "[", _OPT + "."))


def _check_model(where: str, model: Any, argument: str) -> None:
    if not isinstance(model, Module):
        raise TypeError(
            f"{where}: expected {argument} to be a blox.eager Module, got "
            f"{type(model).__name__}. Fix: pass the model object (core Params: use "
            "bx.save_params / bx.load_params)."
        )


def save(
    path: str | os.PathLike, model: Module, opt_state: Any = None, step: int | None = None
) -> None:
    """Writes `model` (and optionally `opt_state` and `step`) to a safetensors file.

    Every parameter and buffer is stored under its `state_dict` name, RNG
    state included, so training resumes exactly. The file is written to a
    temporary file in the same folder, fsynced and renamed over `path`: a
    crash mid-save leaves any previous checkpoint at `path` intact. The
    metadata records the blox version, `step`, the format version, a
    structure hash (class name, names, shapes, dtypes) and the optimizer
    state's tree structure.

    Args:
        path: The file to write (by convention ``*.safetensors``); its folder
            must exist.
        model: The model to save.
        opt_state: An optimizer state (any pytree of arrays, e.g. optax's),
            saved under ``opt_state`` + its key path.
        step: The training step to record, or `None`.

    Raises:
        TypeError: If `model` is not an eager Module or `step` not an int.
        ValueError: If a model name collides with the optimizer state's names.
        ImportError: If safetensors is not installed.

    Example:
        >>> import os, tempfile
        >>> import optax
        >>> from blox import eager as nn
        >>> model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.1))
        >>> opt_state = optax.adam(1e-3).init(nn.trainable(model))
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = os.path.join(folder, 'model.safetensors')
        ...     nn.save(path, model, opt_state, step=100)
        ...     ckpt = nn.load(path, like=nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.1)),
        ...                    opt_state=opt_state)
        >>> ckpt.step, bool((ckpt.model[0].kernel == model[0].kernel).all())
        (100, True)
    """
    where = "nn.save"
    _check_model(where, model, "model")
    step_text = internal.step_text(where, step)
    names, values, _ = _model_leaves(model)
    tensors, key_impls, signature, extra = {}, {}, {}, {}
    for name, value in zip(names, values):
        tensors[name], _ = internal.encode(value)  # eager models hold RNG keys as raw key data
        signature[name] = internal.shape_dtype(value)
    if opt_state is not None:
        clashes = [name for name in names if _is_opt_name(name)]
        if clashes:
            raise ValueError(
                f"{where}: expected model names that do not start with {_OPT!r} when "
                f"saving an optimizer state, got {clashes}. Fix: rename the model's "
                f"{_OPT!r} attribute, or save the optimizer state in a separate file."
            )
        opt_names, opt_values, opt_treedef = _opt_leaves(opt_state)
        for name, value in zip(opt_names, opt_values):
            tensors[name], impl = internal.encode(value)
            if impl is not None:
                key_impls[name] = impl
        extra["opt_state_treedef"] = str(opt_treedef)
    cls = type(model).__name__
    metadata = internal.base_metadata(step_text, internal.structure_hash(cls, signature), key_impls)
    metadata.update(model_class=cls, **extra)
    internal.write(where, path, tensors, metadata)


def load(path: str | os.PathLike, like: Module, opt_state: Any = None) -> Checkpoint:
    """Reads a file written by `nn.save` into a new model shaped like `like`.

    `like` is a model of the saved architecture (its own values are
    ignored and it is not modified); the returned model shares its
    configuration, training mode and frozen flags and holds the file's arrays.
    If `opt_state` is given (a template such as
    ``optimizer.init(nn.trainable(like))``), the saved optimizer state is
    returned in its structure; a saved optimizer state is simply skipped
    otherwise.

    Args:
        path: The file to read.
        like: A model of the same architecture, e.g. freshly built.
        opt_state: Optional optimizer-state template.

    Returns:
        `Checkpoint(model, opt_state, step)`: `opt_state` is `None` unless
        a template was given, `step` is `None` unless one was saved.

    Raises:
        FileNotFoundError: If there is no file at `path`.
        ValueError: If the file is truncated, corrupted or not a safetensors
            file; if it differs from `like` or the `opt_state` template (one
            error listing missing and unexpected names and shape and dtype
            mismatches, or a different model class); or if `opt_state` is
            given but the file holds none.
        TypeError: If `like` is not an eager Module.
        ImportError: If safetensors is not installed.

    Example:
        >>> import os, tempfile
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> model = nn.Linear(3, 2, seed=0)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = os.path.join(folder, 'linear.safetensors')
        ...     nn.save(path, model)
        ...     restored, _, step = nn.load(path, like=nn.Linear(3, 2, seed=1))
        >>> bool((restored(jnp.ones(3)) == model(jnp.ones(3))).all()), step
        (True, None)
    """
    where = "nn.load"
    _check_model(where, like, "like")
    tensors, metadata = internal.read(where, path)
    got = internal.file_signature(tensors, metadata["key_impls"])
    has_opt = "opt_state_treedef" in metadata
    got_model = {n: s for n, s in got.items() if not (has_opt and _is_opt_name(n))}
    got_opt = {n: s for n, s in got.items() if n not in got_model}

    names, values, treedef = _model_leaves(like)
    expected = {name: internal.shape_dtype(value) for name, value in zip(names, values)}
    problems = internal.differences(expected, got_model)
    if opt_state is not None:
        if not has_opt:
            raise ValueError(
                f"{where}: expected an optimizer state in '{os.fspath(path)}' (opt_state= "
                "was given), got a checkpoint saved without one. Fix: pass opt_state=None "
                "and initialise the optimizer afresh, or save with "
                "nn.save(path, model, opt_state)."
            )
        opt_names, opt_values, opt_treedef = _opt_leaves(opt_state)
        opt_expected = {n: internal.shape_dtype(v) for n, v in zip(opt_names, opt_values)}
        problems += [f"optimizer state: {p}" for p in internal.differences(opt_expected, got_opt)]
    saved_class = metadata.get("model_class", type(like).__name__)
    if not problems and "structure_hash" in metadata:
        if metadata["structure_hash"] != internal.structure_hash(type(like).__name__, expected):
            problems.append(
                f"a different structure_hash (saved from class {saved_class!r}, "
                f"loading into {type(like).__name__!r})"
            )
    if problems:
        fix = (
            f"build `like` as the saved model was built (class {saved_class!r}, blox "
            f"{metadata.get('blox_version', '?')}), with the same layer sizes and dtypes"
        )
        if opt_state is not None:
            fix += ", and build the opt_state template with the same optimizer"
        raise internal.mismatch(where, path, problems, fix + ".")

    model = jax.tree.unflatten(treedef, [internal.decode(tensors[name], None) for name in names])
    restored = None
    if opt_state is not None:
        leaves = [
            _restore_leaf(tensors[name], metadata["key_impls"].get(name), template)
            for name, template in zip(opt_names, opt_values)
        ]
        restored = jax.tree.unflatten(opt_treedef, leaves)
    return Checkpoint(model, restored, metadata["step"])


def _restore_leaf(array: np.ndarray, impl: str | None, template: Any) -> Any:
    # Optimizer states may hold numpy arrays or Python scalars; keep their kind.
    if isinstance(template, np.ndarray | np.generic):
        return np.array(array)
    if isinstance(template, bool | int | float | complex):
        return type(template)(array.item())
    return internal.decode(array, impl)
