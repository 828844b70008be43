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

import itertools
import operator
import weakref
from typing import Any

import jax
import numpy as np

from ._context import CONTEXT, INTERN_LIMIT
from ._frames import OPEN, _local, _note_copy

_PARAM, _BUFFER, _CHILD, _CONTAINER = "param", "buffer", "child", "container"
_ARRAY_KINDS = (_PARAM, _BUFFER)


def _is_array(value: Any) -> bool:
    return isinstance(value, jax.Array | np.ndarray)


def _restructure(module: Any) -> None:
    """Drops `module`'s cached static half after a structural change."""
    module.__dict__["_blox_aux"] = None
    _touch()


# -- stamped flattenings -------------------------------------------------------------------
#
# A compiled call flattens its module arguments on every call: jax calls
# `_flatten` once per module object, a few hundred ns each, which on a small
# model is most of what blox adds to raw `jax.jit`. Objects blox has just
# flattened (a model called eagerly) or just built (the model a compiled
# training step returned) are stamped with their leaves and treedef: the
# record sits in the object's own `__dict__` under `STAMP`, so it lives and
# dies with the object, and the next call on the same object reuses it. Every
# write to a module's arrays or structure (`__setattr__`, `_restructure`,
# state write-back, `load_state_dict`, surgery, sharding) calls `_touch`,
# which replaces `CONTEXT.token` (a stamp made under an older token is never
# read) and removes the stamps of every object stamped since the last touch
# (`CONTEXT.stamped`, weakly), so no stale stamp keeps a replaced array
# alive. A stamp is only ever read while no module anywhere has changed
# since it was made. Trees that hold a mutable container (a list or dict,
# which can change without telling any module) or a pytree node blox does
# not know are never stamped. Copies and pickles leave the stamp behind
# (`Module.__getstate__`).

STAMP = "_blox_stamp"
"""The `__dict__` key of a module's stamp: `(token, leaves, treedef, signature)`."""


def _touch() -> None:
    """Some module's arrays or structure changed: forgets every stamped flattening."""
    CONTEXT.token[0] = object()
    stamped = CONTEXT.stamped
    if stamped:
        refs = list(stamped.values())  # (one C call: another thread may stamp meanwhile)
        stamped.clear()
        for ref in refs:
            obj = ref()
            if obj is not None:
                obj.__dict__.pop(STAMP, None)


def stamp(
    obj: Any,
    leaves: list[Any],
    treedef: Any,
    signature: int | None = None,
    *,
    checked: bool = False,
) -> None:
    """Records `obj`'s flattening for the next call on it, if its tree may be stamped.

    `signature` (from `signature_of`) names the treedef and leaf avals
    together, for a compiled call's cache; None leaves it to be found later.
    `checked`: the caller already knows `stampable(treedef)`.
    """
    if not checked and not stampable(treedef):
        return
    obj.__dict__[STAMP] = (CONTEXT.token[0], leaves, treedef, signature)
    _register(obj)


def _register(obj: Any, stamped: dict[int, Any] = CONTEXT.stamped) -> None:
    """Notes a stamped object for the next `_touch` (the builder does this inline)."""
    if len(stamped) >= INTERN_LIMIT:
        _prune()
    stamped[id(obj)] = weakref.ref(obj)


def _prune(stamped: dict[int, Any] = CONTEXT.stamped) -> None:
    """Drops the records of dead stamped objects; past the bound with all alive, every stamp."""
    for key, ref in list(stamped.items()):
        if ref() is None:
            stamped.pop(key, None)
    if len(stamped) >= INTERN_LIMIT:
        _touch()


def stamp_of(obj: Any) -> tuple[Any, ...] | None:
    """`obj`'s current stamp `(token, leaves, treedef, signature)`, or None.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> model = nn.Linear(2, 3)
        >>> _ = model(jnp.ones((1, 2)))  # an eager call stamps the model
        >>> len(stamp_of(model)[1])
        2
        >>> model.kernel = model.kernel * 2
        >>> stamp_of(model) is None
        True
    """
    d = getattr(obj, "__dict__", None)
    found = d.get(STAMP) if type(d) is dict else None
    if found is None or found[0] is not CONTEXT.token[0]:
        return None
    return found


def stampable(treedef: Any) -> bool:
    """Whether trees of `treedef` may be stamped: modules, tuples and None, over leaves."""
    safe = _STAMPABLE.get(treedef)
    if safe is None:
        if len(_STAMPABLE) >= INTERN_LIMIT:
            _STAMPABLE.clear()
        safe = _STAMPABLE[treedef] = treedef.num_nodes > 1 and _immutable_nodes(treedef)
    return safe


def signature_of(treedef: Any, leaves: list[Any]) -> int:
    """One number per distinct (treedef, leaf avals): a cheap key for compiled calls."""
    key = (treedef, *(leaf.aval for leaf in leaves))
    found = _SIGNATURES.get(key)
    if found is None:
        if len(_SIGNATURES) >= INTERN_LIMIT:
            _SIGNATURES.clear()  # numbers are never reused: old keys simply miss
        found = _SIGNATURES[key] = next(_NUMBERS)
    return found


# treedef -> whether every node is a module, a tuple (named tuples too) or None.
_STAMPABLE: dict[Any, bool] = {}
_SIGNATURES: dict[Any, int] = {}
_NUMBERS = itertools.count()


def _immutable_nodes(treedef: Any) -> bool:
    from ._module import Module  # (imports this module)

    data = treedef.node_data()
    if data is None:  # a leaf
        return True
    kind = data[0]
    if not (kind is type(None) or issubclass(kind, tuple) or issubclass(kind, Module)):
        return False
    return all(_immutable_nodes(child) for child in treedef.children())


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
            (k, v)
            for k, v in d.items()
            if k not in kinds and k not in ("_blox_aux", "_blox_kinds", STAMP)
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
    for name, child in zip(aux.names, children):  # (measured faster than update(zip))
        d[name] = child
    if OPEN[0] and _local.frames:  # (OPEN: a frame open in any thread)
        _note_copy(module)
    return module


_new = object.__new__


# -- building outputs --------------------------------------------------------------------------
#
# A compiled training step returns model-shaped trees (the model, the
# optimiser's moments) on every call. `treedef.unflatten` builds them with
# one call of `_unflatten` per module from jax's C++ side; a builder compiled
# once per treedef builds the same objects in one Python function, about 2.5x
# faster on a small model.

_BUILDER_NODES = 4096  # larger trees keep `treedef.unflatten`


def builder(treedef: Any, stamped: dict[tuple[int, ...], tuple[Any, ...]] | None = None) -> Any:
    """A function `build(leaves)` equal to `treedef.unflatten(leaves)`, or None.

    Trees of modules, tuples, named tuples, lists and None only; anything
    else (dicts, other pytree nodes) returns None and keeps jax's unflatten.
    `stamped` maps the tuple-index path of a module subtree to `(first leaf,
    end leaf, treedef, signature)`: the built function also stamps that
    module (as `stamp` would), so the caller need not find it again.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from blox import eager as nn
        >>> leaves, treedef = jax.tree.flatten((nn.Linear(2, 3), None))
        >>> rebuilt = builder(treedef)(leaves)
        >>> jax.tree.structure(rebuilt) == treedef, rebuilt[0].kernel is leaves[0]
        (True, True)
    """
    from ._module import Module  # (imports this module)

    if treedef.num_nodes > _BUILDER_NODES:
        return None
    stamped = stamped or {}
    env: dict[str, Any] = {
        "_new": _new,
        "_local": _local,
        "_OPEN": OPEN,
        "_note_copy": _note_copy,
        "_T": CONTEXT.token,  # (its one item replaced in place, never the list)
        "_R": CONTEXT.stamped,  # (emptied in place, never replaced)
        "_wr": weakref.ref,
        "_prune": _prune,
        "_tnew": tuple.__new__,
    }
    lines: list[str] = []
    modules: list[str] = []
    counts = [0]  # leaves read so far

    def emit(node: Any, path: tuple[int, ...] = ()) -> str | None:
        data = node.node_data()
        if data is None:
            counts[0] += 1
            return f"L[{counts[0] - 1}]"
        kind, aux = data
        children = [emit(child, (*path, i)) for i, child in enumerate(node.children())]
        if None in children:
            return None
        items = "".join(f"{child}, " for child in children)
        if kind is tuple:
            return f"({items})"
        if kind is list:
            return f"[{items}]"
        if kind is type(None):
            return "None"
        n = len(env)
        if issubclass(kind, tuple) and hasattr(kind, "_fields"):
            env[f"T{n}"] = kind
            if _plain_namedtuple(kind):  # its generated __new__ only packs its arguments
                return f"_tnew(T{n}, ({items}))"
            return f"T{n}({items})"
        if issubclass(kind, Module) and isinstance(aux, _Aux) and aux.cls is kind:
            env[f"C{n}"], env[f"B{n}"] = kind, aux.base
            lines.append(f"    m{n} = _new(C{n}); d = m{n}.__dict__; d.update(B{n})")
            lines.extend(f"    d[{name!r}] = {child}" for name, child in zip(aux.names, children))
            modules.append(f"m{n}")
            if path in stamped:
                start, end, tree, signature = stamped[path]
                env[f"D{n}"] = tree
                lines.append(f"    d[{STAMP!r}] = (_T[0], L[{start}:{end}], D{n}, {signature!r})")
                lines.append(f"    _R[id(m{n})] = _wr(m{n})")
            return f"m{n}"
        return None

    out = emit(treedef)
    if out is None:
        return None
    if modules:
        lines.append("    if _OPEN[0] and _local.frames:")
        lines.append(f"        for m in ({''.join(m + ', ' for m in modules)}):")
        lines.append("            _note_copy(m)")
    if stamped:  # (the record of stamped objects stays bounded; see `_register`)
        lines.insert(0, f"    if len(_R) >= {INTERN_LIMIT}:\n        _prune()")
    source = "def build(L):\n" + "\n".join(lines) + f"\n    return {out}\n"
    exec(compile(source, f"<blox builder of {treedef.num_nodes} nodes>", "exec"), env)
    return env["build"]


def _plain_namedtuple(kind: type) -> bool:
    """Whether `kind(*items)` is `tuple.__new__(kind, items)`: `collections.namedtuple`'s own `__new__`."""
    new = getattr(kind.__new__, "__globals__", None)
    return new is not None and new.get("_tuple_new") is tuple.__new__


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
