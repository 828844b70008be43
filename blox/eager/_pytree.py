"""How a module is a JAX pytree: its static half, flattening, and leaf names.

A model is a tree of `Module` objects. Its arrays (parameters, buffers such as
BatchNorm statistics, and RNG state stored as raw key data) are the pytree's
leaves; everything else (configuration, mode, which arrays are frozen, the
wrapped core module) is static data in the treedef, held in one `_Aux` per
object. The `_Aux` is built lazily the first time an object is flattened
after a structural change (an attribute added or removed, a mode or freeze
flag flipped) and is shared by every copy JAX unflattens from it, so passing a
model through `jax.jit` costs one `itemgetter` call per object. Structural
changes drop it through one function, `_restructure`.

Leaf names are built here, once, from `jax.tree_util`'s path flattening:
`leaf_names(model)` is the dotted name of every leaf in flatten order
(``fc1.kernel``, ``blocks.0.norm.scale``). `state_dict`, `functional()`,
checkpoints and the state write-back all use it, so there is one answer to
"what is this leaf called".
"""

import operator
from typing import Any

import jax
import numpy as np

from ._context import CONTEXT, INTERN_LIMIT
from ._frames import _local, _note_copy

_PARAM, _BUFFER, _CHILD, _CONTAINER = "param", "buffer", "child", "container"
_ARRAY_KINDS = (_PARAM, _BUFFER)


def _is_array(value: Any) -> bool:
    return isinstance(value, jax.Array | np.ndarray)


def _restructure(module: Any) -> None:
    """Drops `module`'s cached static half after a structural change."""
    module.__dict__["_blox_aux"] = None


class _Aux:
    """The static half of a flattened module: equal for equal architectures.

    Built once per object (and shared by every copy JAX unflattens from it),
    with its hash precomputed, so comparing and hashing treedefs on every
    jitted call stays cheap.
    """

    __slots__ = ("_hash", "base", "cls", "getter", "kinds", "names", "static")

    def __init__(
        self, cls: type, kinds: tuple[tuple[str, str], ...], static: tuple[tuple[str, Any], ...]
    ) -> None:
        self.cls = cls
        self.kinds = kinds
        self.static = static
        self.names = tuple(name for name, _ in kinds)
        # Reads the children straight from an instance __dict__, in C.
        if len(self.names) > 1:
            self.getter = operator.itemgetter(*self.names)
        elif self.names:
            only = self.names[0]
            self.getter = lambda d: (d[only],)
        else:
            self.getter = lambda d: ()
        # What an unflattened copy starts from; `_blox_kinds` is shared and
        # copied on write (see `Module.__setattr__`).
        self.base = {**dict(static), "_blox_kinds": dict(kinds), "_blox_aux": self}
        self._hash = hash((cls, kinds, tuple((k, _safe_hash(v)) for k, v in static)))

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, _Aux) or self._hash != other._hash:
            return False
        return self.cls is other.cls and self.kinds == other.kinds and self.static == other.static

    def __hash__(self) -> int:
        return self._hash


def _safe_hash(value: Any) -> Any:
    try:
        return hash(value)
    except TypeError:
        return type(value).__name__


def _aux_of(module: Any) -> _Aux:
    d = module.__dict__
    aux = d["_blox_aux"]
    if aux is None:
        kinds = d["_blox_kinds"]
        static = tuple(
            (k, v) for k, v in d.items() if k not in kinds and k not in ("_blox_aux", "_blox_kinds")
        )
        aux = _intern(_Aux(type(module), tuple(kinds.items()), static))
        d["_blox_aux"] = aux
    return aux


# Equal `_Aux`es made one object. A compiled call finds its program by
# comparing treedefs, which compares node data: `is` settles it at once, while
# equal but distinct objects cost a Python `__eq__` per module on every call
# (about 1 us each). Without this, only the first model of an architecture,
# whose auxes the cached treedef holds, would get the fast comparison.
# (The table is `CONTEXT.interned`; past `INTERN_LIMIT`, new configurations
# are simply not interned.)


def _intern(aux: _Aux) -> _Aux:
    # Value types (inside tuples and lists too) are part of the key, so
    # `rate=1` and `rate=1.0`, equal as values, keep their own static data.
    try:
        key = (aux, tuple(_types(v) for _, v in aux.static))
        found = CONTEXT.interned.get(key)
    except TypeError:  # an unhashable static value: leave this one alone
        return aux
    if found is not None:
        return found
    if len(CONTEXT.interned) < INTERN_LIMIT:
        CONTEXT.interned[key] = aux
    return aux


def _types(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return (type(value), tuple(_types(v) for v in value))
    return type(value)


def _flatten(module: Any) -> tuple[Any, _Aux]:
    d = module.__dict__
    aux = d["_blox_aux"]
    if aux is None:
        aux = _aux_of(module)
    return aux.getter(d), aux


def _flatten_with_keys(module: Any) -> tuple[list[tuple[Any, Any]], _Aux]:
    aux = _aux_of(module)
    d = module.__dict__
    key = jax.tree_util.GetAttrKey
    return [(key(name), d[name]) for name in aux.names], aux


def _unflatten(aux: _Aux, children: Any) -> Any:
    module = _new(aux.cls)
    d = module.__dict__
    d.update(aux.base)
    d.update(zip(aux.names, children))
    if _local.frames:
        _note_copy(module)
    return module


_new = object.__new__


def _key_text(key: Any) -> str:
    """One step of a JAX key path as it appears in a dotted leaf name."""
    if isinstance(key, jax.tree_util.GetAttrKey):
        return key.name
    if isinstance(key, jax.tree_util.SequenceKey):
        return str(key.idx)
    if isinstance(key, jax.tree_util.DictKey):
        return str(key.key)
    if isinstance(key, jax.tree_util.FlattenedIndexKey):
        return str(key.key)
    return str(key)


def path_name(path: tuple[Any, ...]) -> str:
    """The dotted name of one key path (``fc1.kernel``, ``blocks.0.scale``)."""
    return ".".join(_key_text(key) for key in path)


def leaf_names(tree: Any) -> list[str]:
    """Dotted names of every leaf of `tree`, in `jax.tree.leaves` order."""
    return [path_name(path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
