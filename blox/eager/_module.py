"""The stateful object of `blox.eager`: a PyTorch-style module that is a JAX pytree.

How state is threaded, and why this way
---------------------------------------
A model is a tree of `Module` objects. Its arrays (parameters, buffers such as
BatchNorm statistics, and RNG state stored as raw key data) are the pytree's
leaves; everything else (configuration, mode, which arrays are frozen, the
wrapped core module) is static data in the treedef. Flattening reads a cached
description of each object, so passing a model through `jax.jit` costs one
list comprehension per object.

An eager call (`model(x)` outside any transformation) is compiled once per
argument signature (treedef of the model and arguments, static leaves, array
shapes and dtypes) and then costs one dispatch: `_Dispatcher` flattens the
arguments, runs the cached program, and writes the state leaves the trace
replaced back onto the caller's objects through key paths found once. Inside
a trace, under `jax.disable_jit()`, or for a method whose Python control flow
needs concrete values (one warning), calls run op by op. `nn.filter_jit` is
the same dispatcher applied to a user function.

Every layer call builds a locked `blox.core.Params` from the object's arrays,
calls its core twin (`outputs, params = core(params, x)`), and writes the
state entries that came back (running statistics, RNG counters) onto the
object. Outside transformations that is the whole story: state advances in
place, as in PyTorch.

Inside a transformation, the object being called is a copy that JAX made when
it unflattened the arguments, and its new state consists of tracers. Those
updates reach the caller in one of three ways:

* `nn.filter_jit` / `nn.filter_grad` / `nn.filter_value_and_grad` return the
  copies' buffers as extra outputs and write them onto the caller's objects
  (see `_transforms.py`);
* a function that returns the model returns the updated copy (this is all
  plain `eqx.filter_jit` does);
* `model.functional()` returns the new `Params` explicitly.

Each blox transform traces its function inside `_carry_state`, a per-thread
frame listing the copies it will collect state from: the modules it passed in
and every module unflattened or built while the frame is open. Collection and
write-back go by dotted name, not position, because a copy's dict attributes
iterate in JAX's sorted key order while the original keeps insertion order.

Two failure modes are guarded. Writing a tracer onto an object that holds
concrete arrays and is not such a copy means the model was closed over by a
transformation rather than passed in (`jax.jit(lambda x: model(x))`, or a
closure inside `nn.filter_jit`); the update would leak a tracer, so it raises
with the fix. Eagerly computed updates (stop-gradient statistics under an
eager `nn.filter_grad`) are concrete and simply land in place. And a
training-mode RNG draw traced outside blox's own transforms (for example under
`eqx.filter_jit` whose function does not return the model) installs a cheap
host check that warns once per process when one draw site sees the same key
twice with no later key drawn in between: the symptom of state that silently
stopped advancing. Keying on the draw site keeps separate jitted functions
apart, and the "no later key" rule lets a fresh model with the same seed
replay its stream without a false alarm.
"""

import contextlib
import functools
import inspect
import itertools
import operator
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from blox.core import Param, Params

from ._surgery import Surgery

_PARAM, _BUFFER, _CHILD, _CONTAINER = "param", "buffer", "child", "container"
_ARRAY_KINDS = (_PARAM, _BUFFER)


class _Local(threading.local):
    """Per-thread stack of open `_carry_state` frames (sets of module ids)."""

    def __init__(self) -> None:
        # Always present, so the per-node check in `_unflatten` is a plain
        # attribute read (a missing attribute would cost an exception).
        self.frames: list[set[int]] = []


_local = _Local()


def _frames() -> list[set[int]]:
    return _local.frames


@contextlib.contextmanager
def _carry_state(*trees: Any) -> Iterator[None]:
    """Marks a trace whose module copies (those in `trees`) carry state back.

    Every module in `trees`, and every module unflattened or built while the
    context is open, may take traced state: a blox transform collects it
    afterwards. Any other object is one the traced function closed over.
    """
    frame: set[int] = set()
    for node in jax.tree.leaves(trees, is_leaf=lambda x: isinstance(x, Module)):
        if isinstance(node, Module):
            frame.update(id(module) for module in node.modules())
    frames = _frames()
    frames.append(frame)
    try:
        yield
    finally:
        frames.pop()


def _note_copy(module: "Module") -> None:
    frames = _local.frames
    if frames:
        frames[-1].add(id(module))


def _is_copy(module: "Module") -> bool:
    """True if `module` belongs to an open `_carry_state` (its state is carried back)."""
    frames = _local.frames
    return bool(frames) and any(id(module) in frame for frame in frames)


def _leaks(module: "Module", old: Any, value: Any) -> bool:
    """True if writing `value` over `old` on `module` would leak a tracer to the caller."""
    tracer = jax.core.Tracer
    return isinstance(value, tracer) and not isinstance(old, tracer) and not _is_copy(module)


def _closed_over(module: "Module", name: str) -> RuntimeError:
    return RuntimeError(
        f"{type(module).__name__}: expected state updates ({name}) on a model passed "
        "into the JAX transformation, got a model closed over by it (its arrays "
        "are concrete but the update is traced), so the update would leak a "
        "tracer. Fix: pass the model as an argument of nn.filter_jit / "
        "nn.filter_grad, call model.eval() for inference, or use "
        "fn, params = model.functional()."
    )


def _is_array(value: Any) -> bool:
    return isinstance(value, jax.Array | np.ndarray)


def _holds_modules(value: Any) -> bool:
    if isinstance(value, Module):
        return True
    if isinstance(value, list | tuple):
        return any(_holds_modules(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_modules(v) for v in value.values())
    return False


def _check_container(owner: "Module", name: str, value: Any) -> None:
    items = value.values() if isinstance(value, dict) else value
    for item in items:
        if isinstance(item, list | tuple | dict):
            _check_container(owner, name, item)
        elif not isinstance(item, Module):
            raise TypeError(
                f"{type(owner).__name__}.{name}: expected a list, tuple or dict of "
                f"modules only, got an item of type {type(item).__name__}. Fix: use "
                "nn.Sequential(*layers) to mix modules with plain functions, and "
                "assign arrays as separate attributes."
            )


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


def _aux_of(module: "Module") -> _Aux:
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
_interned: dict[Any, _Aux] = {}
_INTERN_LIMIT = 4096  # past it, new configurations are simply not interned


def _intern(aux: _Aux) -> _Aux:
    # Value types (inside tuples and lists too) are part of the key, so
    # `rate=1` and `rate=1.0`, equal as values, keep their own static data.
    try:
        key = (aux, tuple(_types(v) for _, v in aux.static))
        found = _interned.get(key)
    except TypeError:  # an unhashable static value: leave this one alone
        return aux
    if found is not None:
        return found
    if len(_interned) < _INTERN_LIMIT:
        _interned[key] = aux
    return aux


def _types(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return (type(value), tuple(_types(v) for v in value))
    return type(value)


def _flatten(module: "Module") -> tuple[Any, _Aux]:
    d = module.__dict__
    aux = d["_blox_aux"]
    if aux is None:
        aux = _aux_of(module)
    return aux.getter(d), aux


def _flatten_with_keys(module: "Module") -> tuple[list[tuple[Any, Any]], _Aux]:
    aux = _aux_of(module)
    d = module.__dict__
    key = jax.tree_util.GetAttrKey
    return [(key(name), d[name]) for name in aux.names], aux


def _unflatten(aux: _Aux, children: Any) -> "Module":
    module = _new(aux.cls)
    d = module.__dict__
    d.update(aux.base)
    d.update(zip(aux.names, children))
    if _local.frames:
        _note_copy(module)
    return module


_new = object.__new__


class Module(Surgery):
    """Base class of eager models: assign layers as attributes, write `__call__`.

    Sub-modules (and lists, tuples and dicts of them) become children; arrays
    become trainable parameters (`register_buffer` makes non-trainable state);
    anything else is static configuration. The object is a JAX pytree whose
    leaves are exactly its arrays, so `jax.tree.map`, `eqx.filter_jit`,
    `eqx.partition`, `eqx.apply_updates` and optax all work on it. New objects
    are in training mode.

    Raises:
        AttributeError: If an attribute is assigned before
            `super().__init__()`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from blox import eager as nn
        >>> class MLP(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.fc1 = nn.Linear(3, 8, seed=0)
        ...         self.fc2 = nn.Linear(8, 2, seed=1)
        ...
        ...     def __call__(self, x):
        ...         return self.fc2(jax.nn.relu(self.fc1(x)))
        >>> model = MLP()
        >>> model(jnp.ones((5, 3))).shape
        (5, 2)
        >>> [name for name, _ in model.named_parameters()]
        ['fc1.kernel', 'fc1.bias', 'fc2.kernel', 'fc2.bias']
        >>> len(jax.tree.leaves(model))
        4
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        jax.tree_util.register_pytree_with_keys(
            cls, _flatten_with_keys, _unflatten, flatten_func=_flatten
        )
        # Eager calls compile per argument signature (see `_compiled_method`).
        for name in ("__call__", *cls.__dict__.get("_blox_compiled_methods", ())):
            method = cls.__dict__.get(name)
            if method is not None and not getattr(method, "_blox_compiled", False):
                setattr(cls, name, _compiled_method(method))

    def __init__(self) -> None:
        d = self.__dict__
        d["_blox_kinds"] = {}
        d["_blox_aux"] = None
        d["_blox_training"] = True
        d["_blox_frozen"] = frozenset()
        _note_copy(self)  # built inside a blox transform: its state is carried back

    # -- attributes ---------------------------------------------------------------

    def __setattr__(self, name: str, value: Any) -> None:
        d = self.__dict__
        kinds = d.get("_blox_kinds")
        if kinds is None:
            raise AttributeError(
                f"{type(self).__name__}: expected super().__init__() to run before "
                f"assigning {name!r}, got an uninitialised module. Fix: call "
                f"super().__init__() first in {type(self).__name__}.__init__."
            )
        kind = kinds.get(name)
        if kind in _ARRAY_KINDS and _is_array(value):
            old = d[name]
            if hasattr(old, "shape") and tuple(old.shape) != tuple(value.shape):
                raise ValueError(
                    f"{type(self).__name__}.{name}: expected an array of shape "
                    f"{tuple(old.shape)}, got {tuple(value.shape)}. Fix: assign an "
                    f"array of the same shape, or `del module.{name}` first to "
                    "replace it with a new one."
                )
            d[name] = jnp.asarray(value) if isinstance(value, np.ndarray) else value
            return
        if name.startswith("_blox_"):
            d[name] = value
            d["_blox_aux"] = None
            return
        kinds = d["_blox_kinds"] = dict(kinds)  # copies may share it: copy on write
        kinds.pop(name, None)
        if isinstance(value, Module):
            kinds[name] = _CHILD
        elif _is_array(value):
            value = jnp.asarray(value)
            kinds[name] = _PARAM
        elif isinstance(value, list | tuple | dict) and _holds_modules(value):
            _check_container(self, name, value)
            kinds[name] = _CONTAINER
        d.pop(name, None)  # keep dynamic attributes in assignment order
        d[name] = value
        d["_blox_aux"] = None

    def __delattr__(self, name: str) -> None:
        d = self.__dict__
        if name not in d:
            raise AttributeError(
                f"{type(self).__name__}: expected an existing attribute to delete, "
                f"got {name!r}. Fix: check the name (see named_parameters())."
            )
        d["_blox_kinds"] = {k: v for k, v in d["_blox_kinds"].items() if k != name}
        del d[name]
        d["_blox_aux"] = None

    def register_buffer(self, name: str, value: Any) -> None:
        """Stores `value` as non-trainable state (like BatchNorm statistics).

        Buffers are pytree leaves and `state_dict` entries, get `None`
        gradients from `nn.filter_grad`, and are written back by blox's
        transforms when a call changes them.

        Raises:
            TypeError: If `value` is not an array.

        Example:
            >>> import jax.numpy as jnp
            >>> from blox import eager as nn
            >>> class Counter(nn.Module):
            ...     def __init__(self):
            ...         super().__init__()
            ...         self.register_buffer('count', jnp.zeros((), jnp.int32))
            >>> [name for name, _ in Counter().named_buffers()]
            ['count']
        """
        if not _is_array(value):
            raise TypeError(
                f"{type(self).__name__}.register_buffer({name!r}): expected an "
                f"array, got {type(value).__name__}. Fix: wrap it with jnp.asarray."
            )
        self.__setattr__(name, value)
        self.__dict__["_blox_kinds"] = {**self.__dict__["_blox_kinds"], name: _BUFFER}
        self.__dict__["_blox_aux"] = None

    # -- modes and freezing -----------------------------------------------------------

    @property
    def training(self) -> bool:
        """Whether the module is in training mode (dropout on, BatchNorm updating).

        Example:
            >>> from blox import eager as nn
            >>> nn.Dropout(0.5).eval().training
            False
        """
        return self.__dict__["_blox_training"]

    def train(self, mode: bool = True) -> "Module":
        """Sets training mode on this module and all sub-modules; returns self.

        Example:
            >>> from blox import eager as nn
            >>> model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1))
            >>> model.eval().train().training
            True
        """
        for _, module in self.named_modules():
            if module.__dict__["_blox_training"] != mode:
                module.__dict__["_blox_training"] = bool(mode)
                module.__dict__["_blox_aux"] = None
        return self

    def eval(self) -> "Module":
        """Sets inference mode on the whole tree (in place); returns self.

        Example:
            >>> from blox import eager as nn
            >>> nn.BatchNorm(4).eval().training
            False
        """
        return self.train(False)

    def freeze(self, *names: str) -> "Module":
        """Marks parameters as not trainable; returns self.

        With no names, freezes every parameter of this tree; otherwise each
        name is a dotted parameter name (``'fc.kernel'``) or a sub-module
        name (``'fc'``), whose parameters all freeze.

        Raises:
            KeyError: If a name matches no parameter or sub-module.

        Example:
            >>> from blox import eager as nn
            >>> model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
            >>> _ = model.freeze('0')
            >>> [name for name, _ in model.named_parameters(trainable_only=True)]
            ['1.kernel', '1.bias']
        """
        self._set_frozen(names, True)
        return self

    def unfreeze(self, *names: str) -> "Module":
        """Undoes `freeze` for the given names (all parameters if none); returns self.

        Example:
            >>> from blox import eager as nn
            >>> lin = nn.Linear(2, 3).freeze()
            >>> len(list(lin.unfreeze('bias').parameters(trainable_only=True)))
            1
        """
        self._set_frozen(names, False)
        return self

    def _set_frozen(self, names: tuple[str, ...], frozen: bool) -> None:
        entries = list(self._named_arrays(kinds=(_PARAM,)))
        targets = []
        for name in names:
            hits = [e for e in entries if e[0] == name or e[0].startswith(name + ".")]
            if not hits:
                known = ", ".join(e[0] for e in entries)
                raise KeyError(
                    f"{type(self).__name__}.freeze/unfreeze: expected a parameter or "
                    f"sub-module name, got {name!r}. Fix: use one of: {known}."
                )
            targets.extend(hits)
        for _, owner, attr in targets if names else entries:
            current = owner.__dict__["_blox_frozen"]
            updated = current | {attr} if frozen else current - {attr}
            if updated != current:
                owner.__dict__["_blox_frozen"] = frozenset(updated)
                owner.__dict__["_blox_aux"] = None

    # -- traversal -------------------------------------------------------------------------

    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        """Direct sub-modules with their names (containers flattened as ``name.i``).

        Example:
            >>> from blox import eager as nn
            >>> [n for n, _ in nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1)).named_children()]
            ['0', '1']
        """
        d = self.__dict__
        for name, kind in d["_blox_kinds"].items():
            if kind == _CHILD:
                yield name, d[name]
            elif kind == _CONTAINER:
                yield from _container_modules(name, d[name])

    def children(self) -> Iterator["Module"]:
        """Direct sub-modules.

        Example:
            >>> from blox import eager as nn
            >>> len(list(nn.Sequential(nn.Linear(2, 2)).children()))
            1
        """
        for _, module in self.named_children():
            yield module

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        """This module (name ``''``) and every descendant, depth first.

        Example:
            >>> from blox import eager as nn
            >>> [n for n, _ in nn.Sequential(nn.Linear(2, 2)).named_modules()]
            ['', '0']
        """
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator["Module"]:
        """This module and every descendant.

        Example:
            >>> from blox import eager as nn
            >>> [type(m).__name__ for m in nn.Sequential(nn.Linear(2, 2)).modules()]
            ['Sequential', 'Linear']
        """
        for _, module in self.named_modules():
            yield module

    def _named_arrays(
        self, kinds: tuple[str, ...] = _ARRAY_KINDS
    ) -> Iterator[tuple[str, "Module", str]]:
        for prefix, module in self.named_modules():
            d = module.__dict__
            for name, kind in d["_blox_kinds"].items():
                if kind in kinds:
                    yield (f"{prefix}.{name}" if prefix else name), module, name

    def named_parameters(self, *, trainable_only: bool = False) -> Iterator[tuple[str, jax.Array]]:
        """`(dotted name, array)` for every parameter (buffers excluded).

        Args:
            trainable_only: Skip frozen parameters.

        Example:
            >>> from blox import eager as nn
            >>> [(n, p.shape) for n, p in nn.Linear(3, 2).named_parameters()]
            [('kernel', (3, 2)), ('bias', (2,))]
        """
        for name, owner, attr in self._named_arrays(kinds=(_PARAM,)):
            if trainable_only and attr in owner.__dict__["_blox_frozen"]:
                continue
            yield name, owner.__dict__[attr]

    def parameters(self, *, trainable_only: bool = False) -> Iterator[jax.Array]:
        """Every parameter array (buffers excluded).

        Example:
            >>> from blox import eager as nn
            >>> sum(p.size for p in nn.Linear(3, 2).parameters())
            8
        """
        for _, value in self.named_parameters(trainable_only=trainable_only):
            yield value

    def named_buffers(self) -> Iterator[tuple[str, jax.Array]]:
        """`(dotted name, array)` for every buffer (statistics, RNG state).

        Example:
            >>> from blox import eager as nn
            >>> [n for n, _ in nn.BatchNorm(4).named_buffers()]
            ['running_mean', 'running_var']
        """
        for name, owner, attr in self._named_arrays(kinds=(_BUFFER,)):
            yield name, owner.__dict__[attr]

    def buffers(self) -> Iterator[jax.Array]:
        """Every buffer array.

        Example:
            >>> from blox import eager as nn
            >>> len(list(nn.Dropout(0.5).buffers()))
            2
        """
        for _, value in self.named_buffers():
            yield value

    # -- state dict ---------------------------------------------------------------------------

    def state_dict(self) -> "OrderedDict[str, jax.Array]":
        """Every parameter and buffer by dotted name (RNG keys as raw key data).

        Example:
            >>> from blox import eager as nn
            >>> list(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1)).state_dict())
            ['0.kernel', '0.bias', '1.rng.seed', '1.rng.counter']
        """
        return OrderedDict(
            (name, owner.__dict__[attr]) for name, owner, attr in self._named_arrays()
        )

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> "LoadResult":
        """Copies arrays from `state_dict` into this model, in place.

        Values are cast to the dtype of the array they replace. Shape
        mismatches always fail; with `strict`, so do missing and unexpected
        names. All problems are reported in one error.

        Returns:
            `LoadResult(missing_keys, unexpected_keys)`.

        Raises:
            ValueError: Listing missing, unexpected and shape-mismatched names.

        Example:
            >>> import jax.numpy as jnp
            >>> from blox import eager as nn
            >>> a, b = nn.Linear(2, 2, seed=0), nn.Linear(2, 2, seed=1)
            >>> _ = b.load_state_dict(a.state_dict())
            >>> bool((a.kernel == b.kernel).all())
            True
        """
        entries = {name: (owner, attr) for name, owner, attr in self._named_arrays()}
        missing = [name for name in entries if name not in state_dict]
        unexpected = [name for name in state_dict if name not in entries]
        mismatched = []
        for name, (owner, attr) in entries.items():
            if name in state_dict:
                want = tuple(owner.__dict__[attr].shape)
                got = tuple(np.shape(state_dict[name]))
                if want != got:
                    mismatched.append(f"{name}: expected {want}, got {got}")
        problems = []
        if strict and missing:
            problems.append(f"missing keys {missing}")
        if strict and unexpected:
            problems.append(f"unexpected keys {unexpected}")
        if mismatched:
            problems.append(f"shape mismatches [{'; '.join(mismatched)}]")
        if problems:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: expected the names and "
                f"shapes of this model's state_dict, got {', '.join(problems)}. Fix: "
                "load a state_dict saved from the same architecture, or pass "
                "strict=False to skip missing/unexpected names."
            )
        for name, (owner, attr) in entries.items():
            if name in state_dict:
                old = owner.__dict__[attr]
                owner.__dict__[attr] = jnp.asarray(state_dict[name], dtype=old.dtype)
        return LoadResult(missing, unexpected)

    # -- functional form ---------------------------------------------------------------------

    def functional(self) -> tuple[Callable[..., tuple[Any, Any]], Any]:
        """A pure function and a `blox.core.Params` covering the whole model.

        `outputs, params = fn(params, *args, **kwargs)` runs the model on a
        copy built from `params` and returns the new params (updated
        statistics and RNG counters), so it works with raw `jax.jit`,
        `jax.grad`, `jax.vmap` and `jax.shard_map`. The mode (train/eval) is
        the model's at the time of the call to `functional()`. Paths are the
        dotted names split on ``'.'``; frozen parameters and buffers are
        non-trainable.

        Example:
            >>> import jax, jax.numpy as jnp
            >>> from blox import eager as nn
            >>> model = nn.Linear(3, 2)
            >>> fn, params = model.functional()
            >>> y, params = jax.jit(fn)(params, jnp.ones((4, 3)))
            >>> y.shape, sorted(params.keys())
            ((4, 2), [('bias',), ('kernel',)])
            >>> model.load_params(params)
        """

        leaves, treedef = jax.tree.flatten(self)
        names, flags, metas = _leaf_table(self)
        paths = tuple(tuple(name.split(".")) for name in names)
        template = Params.from_dict(
            {
                p: Param(v, trainable=t, metadata=m)
                for p, v, t, m in zip(paths, leaves, flags, metas)
            },
            locked=True,
        )

        def fn(params: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            entries = [params[p] for p in paths]
            model = jax.tree.unflatten(treedef, [e.value for e in entries])
            with _carry_state(model):
                out = model(*args, **kwargs)
            # Matched by path, not by flatten order: Params flattens in its own
            # (sorted) order, the model in attribute order.
            new = {
                p: Param(v, trainable=e.trainable, metadata=e.metadata)
                for p, e, v in zip(paths, entries, jax.tree.leaves(model))
            }
            return out, Params.from_dict(new, locked=params.is_locked)

        return fn, template

    def load_params(self, params: Any) -> None:
        """Writes a `Params` from `functional()` back into this model, in place.

        Nothing is written unless every entry is present with its shape.

        Raises:
            KeyError: If `params` lacks one of this model's paths.
            ValueError: If an entry's shape differs from the model's array.
            RuntimeError: If traced values would be written onto a model the
                enclosing transformation closed over (a tracer leak).

        Example:
            >>> import jax, jax.numpy as jnp
            >>> from blox import eager as nn
            >>> model = nn.Linear(3, 2)
            >>> fn, params = model.functional()
            >>> params = jax.tree.map(jnp.zeros_like, params)
            >>> model.load_params(params)
            >>> float(abs(model.kernel).sum())
            0.0
        """
        writes, mismatched = [], []
        for name, owner, attr in list(self._named_arrays()):
            path = tuple(name.split("."))
            if path not in params:
                raise KeyError(
                    f"{type(self).__name__}.load_params: expected an entry for "
                    f"{path!r}, got params without it. Fix: pass the params "
                    "returned by this model's functional()."
                )
            value, old = params[path].value, owner.__dict__[attr]
            if tuple(jnp.shape(value)) != tuple(old.shape):
                mismatched.append(f"{name}: expected {tuple(old.shape)}, got {jnp.shape(value)}")
            if _leaks(owner, old, value):
                raise _closed_over(self, name)
            writes.append((owner, attr, value))
        if mismatched:
            raise ValueError(
                f"{type(self).__name__}.load_params: expected the shapes of this "
                f"model's arrays, got [{'; '.join(mismatched)}]. Fix: pass the params "
                "returned by this model's functional() (or by fn), not another "
                "architecture's or a stacked batch of them."
            )
        for owner, attr, value in writes:
            owner.__dict__[attr] = value

    # -- repr ----------------------------------------------------------------------------------

    def extra_repr(self) -> str:
        """The configuration shown inside this module's parentheses in `repr`.

        Example:
            >>> from blox import eager as nn
            >>> nn.Linear(3, 2).extra_repr()
            'in_features=3, out_features=2'
        """
        return ""

    def __repr__(self) -> str:
        children = [(n, c) for n, c in self.named_children() if not isinstance(c, _Group)]
        extra = self.extra_repr()
        if not children:
            return f"{type(self).__name__}({extra})"
        lines = [f"{type(self).__name__}({extra}" if extra else f"{type(self).__name__}("]
        for name, child in children:
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        lines.append(")")
        return "\n".join(lines)


class LoadResult(NamedTuple):
    """What `load_state_dict` skipped: `missing_keys` and `unexpected_keys`.

    Example:
        >>> from blox import eager as nn
        >>> nn.Linear(2, 2).load_state_dict({}, strict=False).missing_keys
        ['kernel', 'bias']
    """

    missing_keys: list[str]
    unexpected_keys: list[str]


def _container_modules(prefix: str, value: Any) -> Iterator[tuple[str, Module]]:
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        name = f"{prefix}.{key}"
        if isinstance(item, Module):
            yield name, item
        else:
            yield from _container_modules(name, item)


def _leaf_table(model: Module) -> tuple[list[str], list[bool], list[dict[str, Any]]]:
    """Names, trainable flags and metadata of `model`'s leaves, in flatten order."""
    names, flags, metas = [], [], []

    def visit(module: Module, prefix: str) -> None:
        d = module.__dict__
        frozen = d["_blox_frozen"]
        meta = d.get("_blox_metadata", {})
        for name, kind in _aux_of(module).kinds:
            full = f"{prefix}{name}"
            if kind in _ARRAY_KINDS:
                names.append(full)
                flags.append(kind == _PARAM and name not in frozen and _inexact(d[name]))
                metas.append(dict(meta.get(name, {})))
            elif kind == _CHILD:
                visit(d[name], full + ".")
            else:
                for sub, child in _sorted_container(full, d[name]):
                    visit(child, sub + ".")

    visit(model, "")
    return names, flags, metas


def _sorted_container(prefix: str, value: Any) -> Iterator[tuple[str, Module]]:
    # Containers flatten in JAX's order: dicts by sorted key.
    if isinstance(value, dict):
        items = sorted(value.items())
    else:
        items = list(enumerate(value))
    for key, item in items:
        name = f"{prefix}.{key}"
        if isinstance(item, Module):
            yield name, item
        else:
            yield from _sorted_container(name, item)


def _inexact(value: Any) -> bool:
    dtype = getattr(value, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jnp.inexact)


def trainable(model: Any) -> Any:
    """`model` with every non-trainable leaf replaced by `None`.

    Non-trainable means buffers (statistics, RNG state), frozen parameters and
    non-float arrays. This is the shape optax and `eqx.apply_updates` expect.

    Example:
        >>> import optax
        >>> from blox import eager as nn
        >>> model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm(2))
        >>> params = nn.trainable(model)
        >>> params[1].running_mean is None, params[1].scale.shape
        (True, (2,))
        >>> opt_state = optax.adam(1e-3).init(params)
    """
    leaves, treedef = jax.tree.flatten(model)
    flags = _flags(model)
    return jax.tree.unflatten(treedef, [v if f else None for v, f in zip(leaves, flags)])


def _flags(tree: Any) -> list[bool]:
    """Trainable flag of every leaf of a pytree that may contain modules."""
    flags: list[bool] = []
    for node in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, Module)):
        if isinstance(node, Module):
            flags.extend(_leaf_table(node)[1])
        else:
            flags.append(_inexact(node))
    return flags


# -- compiled calls: one dispatch per call, state written back by leaf position -----------

_ARRAY_TYPES = (jax.Array, np.ndarray)
_UNTRACEABLE = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerIntegerConversionError,
    jax.errors.TracerArrayConversionError,
)
_DONATE = ("none", "all", "all-except-first", "warn", "warn-except-first")


class _Compiled:
    """One cache entry: the jitted function and what its trace recorded.

    The trace records the output's static half and which input leaves the
    call replaced (the state: running statistics, RNG counters). After the
    call those new values are written onto the caller's objects through key
    paths found once, so a repeat call does no tree walking beyond one
    flatten of its arguments.
    """

    __slots__ = ("changed", "jitted", "out_dyn", "out_static", "out_treedef", "split", "writers")

    def __init__(self) -> None:
        self.changed: list[int] = []
        self.writers: list[tuple[tuple[Any, ...], str]] | None = None
        self.split: int | None = None  # donated leaves start here ('all-except-first')


class _Dispatcher:
    """Compiles `fun(*lead, *args, **kwargs)` per argument signature and threads state.

    The signature is the treedef of `(lead, args, kwargs)` (so a mode,
    freezing or architecture change retraces), the static leaves, and the
    shape and dtype of every array leaf. Arrays are traced; everything else
    is static, as in `eqx.filter_jit`.
    """

    def __init__(self, fun: Callable[..., Any], donate: str = "none") -> None:
        if donate not in _DONATE:
            raise ValueError(
                f"nn.filter_jit: expected donate to be one of {_DONATE}, got {donate!r}. "
                "Fix: pass one of those."
            )
        self.fun = fun
        self.donate = donate
        self.cache: dict[Any, _Compiled] = {}
        self.traces = 0  # how many times `fun` was traced (for tests and debugging)

    def __call__(
        self,
        lead: tuple[Any, ...],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        eager: bool = False,
    ) -> Any:
        root = (lead, args, kwargs)
        found = self._entry(root, eager)
        if found is _NOT_COMPILED:
            return _NOT_COMPILED
        entry, dyn, key_t, fresh = found
        split = entry.split
        groups = (dyn,) if split is None else (dyn[:split], dyn[split:])
        try:
            if fresh and self.donate in ("all", "all-except-first"):
                # As in Equinox, only the 'warn' modes report buffers XLA could
                # not reuse (reported once, while compiling).
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", "Some donated buffers were not usable")
                    out_dyn, state = entry.jitted(*groups)
            else:
                out_dyn, state = entry.jitted(*groups)
        except (*_UNTRACEABLE, _StructureChanged):
            del self.cache[key_t]
            raise
        if entry.changed:
            _write_back(entry, root, state)
        out = list(entry.out_static)
        for position, value in zip(entry.out_dyn, out_dyn):
            out[position] = value
        return jax.tree.unflatten(entry.out_treedef, out)

    def _entry(self, root: Any, eager: bool = False) -> Any:
        """The cache entry for `root`'s signature, its array leaves, key and freshness."""
        leaves, treedef = jax.tree.flatten(root)
        dyn = []
        key: list[Any] = [treedef]
        append = key.append
        kinds = _LEAF_KINDS
        for leaf in leaves:
            kind = kinds.get(type(leaf))
            if kind is None:
                kind = _leaf_kind(type(leaf))
            if kind is _JAX:
                dyn.append(leaf)
                append(leaf.aval)  # shape, dtype and weak type: what jax.jit keys on
            elif kind is _TRACER:
                if eager:
                    return _NOT_COMPILED
                dyn.append(leaf)
                append(leaf.aval)
            elif kind is _NUMPY:
                dyn.append(leaf)
                append(_NUMPY)
                append((leaf.shape, leaf.dtype))
            else:
                append(_STATIC)
                append(leaf)
        key_t = tuple(key)
        try:
            entry = self.cache.get(key_t)
        except TypeError:
            bad = [type(leaf).__name__ for leaf in leaves if not _hashable(leaf)]
            raise TypeError(
                f"nn.filter_jit: expected every non-array argument leaf to be hashable "
                f"(it is static), got {bad}. Fix: pass it as an array, or make it "
                "hashable (e.g. a tuple instead of a list of numbers is already a "
                "pytree; wrap other objects in a frozen dataclass)."
            ) from None
        fresh = entry is None
        if fresh:
            entry = self._compile(leaves, treedef, root)
            self.cache[key_t] = entry
        return entry, dyn, key_t, fresh

    def lower(self, lead: tuple[Any, ...], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """`jax.stages.Lowered` of the program these arguments would run."""
        entry, dyn, _, _ = self._entry((lead, args, kwargs))
        split = entry.split
        groups = (dyn,) if split is None else (dyn[:split], dyn[split:])
        return entry.jitted.lower(*groups)

    def _compile(self, leaves: list[Any], treedef: Any, root: Any) -> _Compiled:
        entry = _Compiled()
        positions = [i for i, leaf in enumerate(leaves) if isinstance(leaf, _ARRAY_TYPES)]
        template = [None if isinstance(leaf, _ARRAY_TYPES) else leaf for leaf in leaves]
        fun = self.fun

        def traced(*groups: list[Any]) -> tuple[list[Any], list[Any]]:
            self.traces += 1
            full = list(template)
            for position, value in zip(positions, itertools.chain(*groups)):
                full[position] = value
            lead, args, kwargs = jax.tree.unflatten(treedef, full)
            with _carry_state(lead, args, kwargs):
                out = fun(*lead, *args, **kwargs)
            new_leaves, new_treedef = jax.tree.flatten((lead, args, kwargs))
            if new_treedef != treedef:
                raise _StructureChanged(
                    "nn.filter_jit: expected the arguments' structure (modes, frozen "
                    "flags, attributes) to stay the same during the call, got a "
                    "change inside it. Fix: call model.train()/eval()/freeze() and "
                    "assign attributes outside the compiled function."
                )
            entry.changed = [i for i in positions if new_leaves[i] is not full[i]]
            out_leaves, entry.out_treedef = jax.tree.flatten(out)
            entry.out_dyn = [i for i, leaf in enumerate(out_leaves) if isinstance(leaf, jax.Array)]
            dyn_set = set(entry.out_dyn)
            entry.out_static = [None if i in dyn_set else leaf for i, leaf in enumerate(out_leaves)]
            return [out_leaves[i] for i in entry.out_dyn], [new_leaves[i] for i in entry.changed]

        donate: tuple[int, ...] = ()
        if self.donate in ("all", "warn"):
            donate = (0,)
        elif self.donate in ("all-except-first", "warn-except-first"):
            # The leaves of `lead` and of the first positional argument are exempt.
            lead, args, _ = root
            first = len(jax.tree.leaves(lead)) + (len(jax.tree.leaves(args[0])) if args else 0)
            entry.split = sum(1 for p in positions if p < first)
            donate = (1,)
        entry.jitted = jax.jit(traced, donate_argnums=donate)
        return entry


class _StructureChanged(RuntimeError):
    """A compiled function changed its arguments' static structure while running."""


_STATIC = object()
_NUMPY = object()
_JAX = object()
_TRACER = object()
_NOT_COMPILED = object()

# Leaf type -> kind, so the per-call signature loop avoids `isinstance` against
# the `jax.Array` ABC (a few hundred ns per leaf). Filled on first sight.
_LEAF_KINDS: dict[type, object] = {}


def _leaf_kind(cls: type) -> object:
    if issubclass(cls, jax.core.Tracer):
        kind = _TRACER
    elif issubclass(cls, jax.Array):
        kind = _JAX
    elif issubclass(cls, np.ndarray):
        kind = _NUMPY
    else:
        kind = _STATIC
    _LEAF_KINDS[cls] = kind
    return kind


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _write_back(entry: _Compiled, root: Any, values: list[Any]) -> None:
    """Puts the state a compiled call replaced onto the caller's objects."""
    writers = entry.writers
    if writers is None:
        writers = entry.writers = _writers(root, entry.changed)
    tracer = jax.core.Tracer
    for (path, name), value in zip(writers, values):
        owner = root
        for step in path:
            owner = step(owner)
        if owner is None:
            continue
        d = owner.__dict__
        if isinstance(value, tracer) and _leaks(owner, d[name], value):
            raise _closed_over(owner, name)
        d[name] = value


def _writers(root: Any, changed: list[int]) -> list[tuple[tuple[Any, ...], str]]:
    """For each changed leaf, how to reach its owning module and the attribute name."""
    keyed = jax.tree_util.tree_flatten_with_path(root)[0]
    out = []
    for index in changed:
        path = keyed[index][0]
        *head, last = path
        steps = tuple(_key_step(k) for k in head)
        if not isinstance(last, jax.tree_util.GetAttrKey) or None in steps:
            out.append(((lambda _: None,), ""))
            continue
        out.append((steps, last.name))
    return out


def _key_step(key: Any) -> Any:
    if isinstance(key, jax.tree_util.GetAttrKey):
        name = key.name
        return lambda obj: getattr(obj, name)
    if isinstance(key, jax.tree_util.SequenceKey):
        idx = key.idx
        return lambda obj: obj[idx]
    if isinstance(key, jax.tree_util.DictKey):
        k = key.key
        return lambda obj: obj[k]
    return None


_warned_untraceable: set[Any] = set()


def _compiled_method(method: Callable[..., Any]) -> Callable[..., Any]:
    """Makes a module method compile and cache itself when called eagerly.

    Outside transformations, `model(x)` runs as one dispatch of a program
    compiled for its argument signature; state updates are written back as
    usual. Inside a trace (traced arguments or module), under
    `jax.disable_jit()`, or for a method whose Python control flow depends on
    array values (it then warns once), the method runs op by op instead.
    """
    dispatcher = _Dispatcher(method)

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        if dispatcher.fun is None or jax.config.jax_disable_jit:
            return method(self, *args, **kwargs)
        try:
            out = dispatcher((self,), args, kwargs, eager=True)
        except (*_UNTRACEABLE, _StructureChanged) as error:
            dispatcher.fun = None
            if isinstance(error, _StructureChanged):
                why = "it changes the module's attributes or mode while running"
                fix = "keep counters in a buffer (register_buffer) and change modes outside"
            else:
                why = f"its Python control flow depends on array values: {type(error).__name__}"
                fix = "use jnp.where / jax.lax.cond instead of Python `if` on arrays"
            if method not in _warned_untraceable:
                _warned_untraceable.add(method)
                warnings.warn(
                    f"blox.eager: {method.__qualname__} could not be compiled ({why}); it "
                    f"now runs op by op, which is much slower. Fix: {fix}.",
                    UserWarning,
                    stacklevel=2,
                )
            return method(self, *args, **kwargs)
        if out is _NOT_COMPILED:
            return method(self, *args, **kwargs)
        return out

    call._blox_dispatcher = dispatcher  # type: ignore[attr-defined]
    call._blox_compiled = True  # type: ignore[attr-defined]
    return call


# -- calling core modules: where state is read and written back ---------------------------


class _Entry(NamedTuple):
    """How one core parameter maps onto an eager object's attributes."""

    path: tuple[str, ...]  # path in the core Params
    chain: tuple[str, ...]  # attribute chain on the eager object
    key_impl: str | None  # PRNG implementation when the value is a typed key
    trainable: bool
    metadata: tuple[tuple[str, Any], ...]


class _Group(Module):
    """A namespace for core parameters nested below a layer (``lstm.gates.kernel``)."""

    def __init__(self) -> None:
        super().__init__()


def _get(module: Module, chain: tuple[str, ...]) -> Any:
    for name in chain[:-1]:
        module = module.__dict__[name]
    return module.__dict__[chain[-1]]


def _set(module: Module, chain: tuple[str, ...], value: Any) -> None:
    for name in chain[:-1]:
        module = module.__dict__[name]
    module.__dict__[chain[-1]] = value


# The stale-state guard's host-side record: for each (draw site, seed), the
# counters drawn and when. A draw site is one traced RNG draw, so separate
# jitted functions (and separate tests) never see each other's draws.
_seen_draws: dict[tuple[int, bytes], dict[int, int]] = {}
_warned_stale = [False]
_draw_sites = itertools.count()
_draw_clock = itertools.count()


def _note_draw(site: int, seed: Any, counter: Any) -> None:
    """Host side of the stale-state guard: warn when one RNG key is drawn twice.

    A repeat of counter `c` is the symptom only if no higher counter was drawn
    since the last draw of `c`: otherwise a fresh model with the same seed has
    restarted the stream (reproducibility, not stale state), and the record
    starts over.
    """
    if _warned_stale[0]:
        return
    if len(_seen_draws) > 4096:
        _seen_draws.clear()
    when = _seen_draws.setdefault((site, np.asarray(seed).tobytes()), {})
    count = int(counter)
    now = next(_draw_clock)
    last = when.get(count)
    if last is not None:
        if any(t > last for c, t in when.items() if c > count):
            when.clear()
        else:
            _warned_stale[0] = True
            warnings.warn(
                "blox.eager: a dropout/RNG key was drawn twice from the same state "
                f"(counter {count}) inside a jitted function: the model's RNG state "
                "is not advancing, so every step reuses the same mask. Fix: use "
                "nn.filter_jit (which writes state back), or return the model from "
                "your eqx.filter_jit function and use the returned one.",
                RuntimeWarning,
                stacklevel=2,
            )
    if len(when) > 65536:
        when.clear()
    when[count] = now


class CoreModule(Module):
    """An eager object wrapping a core module and the `Params` it uses.

    Built by `nn.from_core(module, params)` and the base of every eager
    layer. Each call builds locked core params from the object's arrays,
    calls the core module, and writes changed state (non-trainable entries)
    back. Typed PRNG keys are held as raw key data. If the core method takes
    `is_training`, the object's mode is passed.
    """

    @property
    def core_layer(self) -> Any:
        """The core module this object wraps (set by `adopt_core`).

        Example:
            >>> from blox import eager as nn
            >>> type(nn.Linear(2, 3).core_layer).__name__
            'Linear'
        """
        return self.__dict__["_blox_core"]

    def adopt_core(self, core: Any, params: Any, keep: Callable[[tuple[str, ...]], bool]) -> None:
        """Takes `params` (entries where `keep(path)`) as this object's arrays.

        Part of the layer-author contract: a layer's `__init__` builds its core
        module, creates its params, and hands both here; afterwards
        `core_layer` is the module and each kept entry is an attribute
        (trainable entries as parameters, the others as buffers).

        Example:
            >>> import jax.numpy as jnp
            >>> import blox as bx
            >>> from blox import eager as nn
            >>> g = bx.Graph('net')
            >>> rng = bx.Rng(g / 'rng')
            >>> lin = bx.Linear(g / 'lin', 2, rng=rng)
            >>> _, params = lin(rng.seed(bx.Params(), seed=0), jnp.ones((1, 3)))
            >>> obj = nn.CoreModule()
            >>> obj.adopt_core(lin, params, keep=lambda path: True)
            >>> obj.kernel.shape
            (3, 2)
        """
        d = self.__dict__
        base = core.graph.path
        root = base[:1]
        entries = []
        for path, param in params.items():
            if not keep(path):
                continue
            if path[: len(base)] == base:
                chain = path[len(base) :]
            else:
                chain = path[len(root) :]
            value = param.value
            key_impl = None
            if jnp.issubdtype(value.dtype, jax.dtypes.prng_key):
                key_impl = str(jax.random.key_impl(value))
                value = jax.random.key_data(value)
            owner = self
            for name in chain[:-1]:
                if name not in owner.__dict__:
                    owner.__setattr__(name, _Group())
                owner = owner.__dict__[name]
            if param.trainable:
                owner.__setattr__(chain[-1], value)
            else:
                owner.register_buffer(chain[-1], value)
            if param.metadata:
                group_meta = dict(owner.__dict__.get("_blox_metadata", {}))
                group_meta[chain[-1]] = dict(param.metadata)
                owner.__dict__["_blox_metadata"] = group_meta
                owner.__dict__["_blox_aux"] = None
            entries.append(
                _Entry(
                    path, chain, key_impl, param.trainable, tuple(sorted(param.metadata.items()))
                )
            )
        d["_blox_core"] = core
        d["_blox_entries"] = tuple(entries)
        d["_blox_aux"] = None

    def core_params(self) -> Any:
        """This object's arrays as the locked core `Params` its core layer reads.

        Example:
            >>> from blox import eager as nn
            >>> sorted('/'.join(p) for p in nn.Linear(2, 3).core_params().keys())
            ['blox/layer/bias', 'blox/layer/kernel']
        """
        data = {}
        new = object.__new__
        for entry in self.__dict__["_blox_entries"]:
            value = _get(self, entry.chain)
            if entry.key_impl is not None:
                value = jax.random.wrap_key_data(value, impl=entry.key_impl)
            p = new(Param)
            p.value = value
            p.trainable = entry.trainable
            p.metadata = dict(entry.metadata)
            data[entry.path] = p
        return Params._make(data, True)

    def call_core(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Calls a core method with this object's params and writes state back.

        `method(params, *args, **kwargs)` must return `(outputs, params)`;
        changed non-trainable entries (statistics, RNG counters) land on the
        object, and the outputs are returned.

        Example:
            >>> import jax.numpy as jnp
            >>> from blox import eager as nn
            >>> lin = nn.Linear(2, 3)
            >>> lin.call_core(lin.core_layer, jnp.ones((1, 2))).shape
            (1, 3)
        """
        params = self.core_params()
        out, new = method(params, *args, **kwargs)
        old_data, new_data = params._data, new._data
        for entry in self.__dict__["_blox_entries"]:
            if entry.trainable or new_data[entry.path] is old_data[entry.path]:
                continue
            value = new_data[entry.path].value
            if entry.key_impl is not None:
                value = jax.random.key_data(value)
            self._blox_write(entry, old_data, value)
        return out

    def _blox_write(self, entry: _Entry, old_data: Any, value: Any) -> None:
        old = _get(self, entry.chain)
        if _leaks(self, old, value):
            raise _closed_over(self, ".".join(entry.chain))
        if (
            isinstance(value, jax.core.Tracer)
            and not _is_copy(self)
            and dict(entry.metadata).get("tag") == "rng_counter"
        ):
            # Traced outside blox's transforms (e.g. eqx.filter_jit): the update
            # reaches the caller only if the function returns the model.
            seed = old_data.get(entry.path[:-1] + ("seed",))
            if seed is not None:
                site = functools.partial(_note_draw, next(_draw_sites))
                jax.debug.callback(site, jax.random.key_data(seed.value), old)
        _set(self, entry.chain, value)


def from_core(module: Any, params: Any, *, method: str = "__call__") -> CoreModule:
    """Wraps a hand-built core module and its params as an eager object.

    Calling the object calls `getattr(module, method)(params, *args, **kwargs)`
    with the object's arrays, returns the outputs, and keeps updated state
    (statistics, RNG counters). Parameters keep their core paths relative
    to the module's node (entries elsewhere, such as a shared `Rng`, are
    relative to the graph root) as dotted names.

    Args:
        module: A `blox.core.Module` whose params already exist.
        params: A `blox.core.Params` holding them.
        method: The core method that `__call__` invokes (e.g. ``'apply'``).

    Raises:
        TypeError: If `module` is not a core module, `params` not a Params,
            or `method` not a str.
        ValueError: If `method` names no method of `module`.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> from blox import eager as nn
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> mlp = bx.Sequential(g / 'mlp', [bx.Linear(g / 'l1', 4, rng=rng),
        ...                                  bx.Dropout(g / 'drop', 0.5, rng=rng)])
        >>> _, params = mlp(rng.seed(bx.Params(), seed=0), jnp.ones((2, 3)))
        >>> model = nn.from_core(mlp, params)
        >>> sorted(model.state_dict())
        ['l1.bias', 'l1.kernel', 'rng.counter', 'rng.seed']
        >>> model(jnp.ones((2, 3))).shape
        (2, 4)
    """
    from blox.core import Module as CoreBase

    if not isinstance(module, CoreBase):
        raise TypeError(
            f"nn.from_core: expected a blox.core Module, got {type(module).__name__}. "
            "Fix: pass a module built like bx.Linear(graph / 'name', ...)."
        )
    if not isinstance(params, Params):
        raise TypeError(
            f"nn.from_core: expected a blox.core Params, got {type(params).__name__}. "
            "Fix: pass the params returned by the module's first call."
        )
    if not isinstance(method, str):
        raise TypeError(
            f"nn.from_core: expected method to be a str, got {type(method).__name__}. "
            "Fix: pass the method's name, e.g. method='apply'."
        )
    bound = getattr(module, method, None)
    if not callable(bound):
        raise ValueError(
            f"nn.from_core: expected method to name a method of "
            f"{type(module).__name__}, got {method!r}. Fix: use '__call__' or "
            "another of its methods taking params first, e.g. 'apply'."
        )
    wrapper = _FromCore()
    wrapper.adopt_core(module, params, keep=lambda path: True)
    takes_mode = "is_training" in inspect.signature(bound).parameters
    wrapper.__dict__["_blox_method"] = method
    wrapper.__dict__["_blox_takes_mode"] = takes_mode
    wrapper.__dict__["_blox_aux"] = None
    return wrapper


class _FromCore(CoreModule):
    """The eager object returned by `from_core`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        d = self.__dict__
        method = getattr(d["_blox_core"], d["_blox_method"])
        if d["_blox_takes_mode"] and "is_training" not in kwargs:
            kwargs["is_training"] = d["_blox_training"]
        return self.call_core(method, *args, **kwargs)

    def extra_repr(self) -> str:
        core = self.__dict__["_blox_core"]
        return f"{core!r} at {'/'.join(core.graph.path)!r}"
