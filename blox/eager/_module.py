"""`Module`: the PyTorch-style API of `blox.eager` (attributes, modes, state dicts).

Assigning an attribute classifies it once: a sub-module (or a list, tuple or
dict of them) is a child, an array a trainable parameter, `register_buffer`
makes non-trainable state, and anything else is static configuration. That
classification is what `_pytree.py` flattens, so the object is a JAX pytree
whose leaves are exactly its arrays. Everything a user calls on a model lives
here: traversal (`named_parameters`, `named_modules`), modes (`train`,
`eval`), freezing, `state_dict` / `load_state_dict`, `functional()` /
`load_params`, and forward hooks. How calls are compiled is `_dispatch.py`'s
business, how layers wrap `blox.core` is `_core_module.py`'s.

Misuse is refused where it happens, at assignment, with the fix: arrays
hidden in plain containers (they would be neither parameters nor
configuration), one module object registered under two names (it would
silently untie under any transformation), an integer array where a float
parameter was, and a new attribute created while a call is traced.
"""

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from blox.core import Param, Params

from . import _hooks
from ._dispatch import _compiled_method
from ._frames import _carry_state, _closed_over, _leaks, _note_copy
from ._hooks import RemovableHandle
from ._pytree import (
    _ARRAY_KINDS,
    _BUFFER,
    _CHILD,
    _CONTAINER,
    _PARAM,
    STAMP,
    _aux_of,
    _flatten,
    _flatten_with_keys,
    _is_array,
    _restructure,
    _touch,
    _unflatten,
    leaf_names,
)
from ._surgery import Surgery


def _holds_modules(value: Any) -> bool:
    if isinstance(value, Module):
        return True
    if isinstance(value, list | tuple):
        return any(_holds_modules(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_modules(v) for v in value.values())
    return False


def _check_container(owner: "Module", name: str, value: Any) -> None:
    if isinstance(value, dict):
        try:
            sorted(value)  # JAX flattens dicts by sorted key
        except TypeError:
            raise TypeError(
                f"{type(owner).__name__}.{name}: expected dict keys that sort (all str, "
                f"as in PyTorch's ModuleDict), got keys {list(value)!r}. Fix: use str "
                "keys, e.g. {str(k): m for k, m in layers.items()}."
            ) from None
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


def _dtype_problem(want: Any, value: Any) -> str:
    """Why `value` cannot be cast to `want` without changing it ('' if it can)."""
    if jnp.issubdtype(want, jnp.inexact):
        return ""
    got = np.asarray(value)
    if jnp.issubdtype(got.dtype, jnp.inexact):
        return f"expected {np.dtype(want).name} values, got {got.dtype.name}"
    if jnp.issubdtype(want, jnp.integer) and got.size:
        info = np.iinfo(want)
        low, high = got.min(), got.max()
        if low < info.min or high > info.max:
            return f"expected values in [{info.min}, {info.max}] for {np.dtype(want).name}, got [{low}, {high}]"
    return ""


def _float_kind(value: Any) -> bool:
    return jnp.issubdtype(value.dtype, jnp.inexact)


def _check_not_aliased(owner: "Module", name: str, value: Any) -> None:
    """Refuses a module object that `owner`'s tree already holds under another name."""
    old = owner.__dict__.get(name)
    held = {
        id(m): path
        for child_name, child in owner.named_children()
        if child_name != name and not child_name.startswith(name + ".")
        for path, m in child.named_modules(child_name)
    }
    if old is not None and isinstance(old, Module):
        held.pop(id(old), None)
    incoming = value if isinstance(value, Module) else None
    candidates = (
        [m for _, m in incoming.named_modules()]
        if incoming is not None
        else [m for _, c in _container_modules(name, value) for m in c.modules()]
    )
    seen: dict[int, int] = {}
    for module in candidates:
        if id(module) in held or id(module) == id(owner) or seen.get(id(module)):
            where = held.get(id(module), "itself" if module is owner else "another place")
            raise _aliased(owner, name, type(module).__name__, where)
        seen[id(module)] = 1


def _aliased(owner: Any, name: str, kind: str, where: str) -> TypeError:
    return TypeError(
        f"{type(owner).__name__}.{name}: expected a module held in one place only, got "
        f"a {kind} that is already registered as {where!r}; under any transformation "
        "the two names would become two copies and untie silently. Fix: keep one "
        "attribute and call it wherever it is needed (self.a(x) twice ties the "
        "weights), or build a second module and copy the weights with "
        "load_state_dict if they should start equal."
    )


def check_no_aliases(tree: Any) -> None:
    """Raises if one module object appears twice in `tree` (see `_aliased`)."""
    roots = [
        n
        for n in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, Module))
        if isinstance(n, Module)
    ]
    seen: dict[int, str] = {}
    for index, root in enumerate(roots):
        prefix = f"argument {index}" if len(roots) > 1 else ""
        for path, module in root.named_modules(prefix):
            if id(module) in seen:
                raise _aliased(root, path, type(module).__name__, seen[id(module)] or "(root)")
            seen[id(module)] = path


class Module(Surgery):
    """Base class of eager models: assign layers as attributes, write `__call__`.

    Sub-modules (and lists, tuples and dicts of them) become children; arrays
    become trainable parameters (`register_buffer` makes non-trainable state);
    anything else is static configuration. The object is a JAX pytree whose
    leaves are exactly its arrays, so `jax.tree.map`, `eqx.filter_jit`,
    `eqx.partition`, `eqx.apply_updates` and optax all work on it. New objects
    are in training mode. Models pickle, and `copy.deepcopy` gives an
    independent model whose RNG state (each Dropout's seed and counter) is a
    copy too: the copy replays the original's dropout masks from that point,
    exactly as a model restored from a checkpoint would. Load a different
    seed into the copy (`load_state_dict`) to decorrelate them.

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
        _restructure(self)
        d["_blox_training"] = True
        d["_blox_frozen"] = frozenset()
        _note_copy(self)  # built inside a blox transform: its state is carried back

    def __getstate__(self) -> dict[str, Any]:
        # A copy or a pickle leaves the stamp behind (see `_pytree.stamp`): it
        # records this object's flattening, and holds its leaves.
        d = self.__dict__
        return {k: v for k, v in d.items() if k != STAMP} if STAMP in d else d

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
            if _float_kind(old) and not _float_kind(value):
                raise TypeError(
                    f"{type(self).__name__}.{name}: expected a floating-point array "
                    f"(the parameter is {old.dtype}), got {value.dtype}, whose "
                    "gradient would silently be None. Fix: cast it first, e.g. "
                    f"module.{name} = value.astype({str(old.dtype)!r})."
                )
            d[name] = jnp.asarray(value) if isinstance(value, np.ndarray) else value
            _touch()
            return
        if name.startswith("_blox_"):
            d[name] = value
            _restructure(self)
            return
        kinds = d["_blox_kinds"] = dict(kinds)  # copies may share it: copy on write
        kinds.pop(name, None)
        if isinstance(value, Module):
            _check_not_aliased(self, name, value)
            kinds[name] = _CHILD
        elif _is_array(value):
            value = jnp.asarray(value)
            kinds[name] = _PARAM
        elif isinstance(value, list | tuple | dict) and _holds_modules(value):
            _check_container(self, name, value)
            _check_not_aliased(self, name, value)
            kinds[name] = _CONTAINER
        elif isinstance(value, list | tuple | dict) and any(
            _is_array(leaf) for leaf in jax.tree.leaves(value)
        ):
            raise TypeError(
                f"{type(self).__name__}.{name}: expected arrays as attributes of their "
                f"own, got a {type(value).__name__} holding arrays, which would be "
                "neither parameters nor configuration. Fix: assign each array to its "
                f"own attribute (self.{name}_0 = ...), stack them into one array, or "
                "hold them in sub-modules."
            )
        d.pop(name, None)  # keep dynamic attributes in assignment order
        d[name] = value
        _restructure(self)

    def __delattr__(self, name: str) -> None:
        d = self.__dict__
        if name not in d:
            raise AttributeError(
                f"{type(self).__name__}: expected an existing attribute to delete, "
                f"got {name!r}. Fix: check the name (see named_parameters())."
            )
        d["_blox_kinds"] = {k: v for k, v in d["_blox_kinds"].items() if k != name}
        del d[name]
        _restructure(self)

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
        _restructure(self)

    def register_forward_hook(self, hook: Callable[..., Any]) -> "RemovableHandle":
        """Calls `hook(module, args, output)` after each call of this module.

        As in PyTorch: a non-`None` result replaces the output, and the
        returned handle's `.remove()` unregisters the hook. While any hook is
        registered, eager calls run op by op (so sub-modules' hooks see
        concrete values); inside `nn.filter_jit` and other transformations
        the modules are traced copies and hooks do not fire.

        Raises:
            TypeError: If `hook` is not callable.

        Example:
            >>> import jax.numpy as jnp
            >>> from blox import eager as nn
            >>> model = nn.Sequential(nn.Linear(2, 4), nn.Linear(4, 1))
            >>> handle = model[0].register_forward_hook(lambda m, args, out: out * 0)
            >>> float(abs(model(jnp.ones((1, 2)))).sum()) == float(abs(model[1].bias).sum())
            True
            >>> handle.remove()
        """
        return _hooks.register(self, hook)

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
                _restructure(module)
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
                _restructure(owner)

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
        # Names from the one leaf-naming function (`_pytree.leaf_names`, which
        # checkpoints and `functional()` use too); the order is PyTorch's (a
        # module's own arrays, then its children's, dicts in insertion order).
        by_name = dict(zip(leaf_names(self), jax.tree.leaves(self)))
        return OrderedDict((name, by_name[name]) for name, _, _ in self._named_arrays())

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> "LoadResult":
        """Copies arrays from `state_dict` into this model, in place.

        Values are cast to the dtype of the array they replace. Shape
        mismatches always fail; with `strict`, so do missing and unexpected
        names. All problems are reported in one error.

        Returns:
            `LoadResult(missing_keys, unexpected_keys)`.

        Raises:
            ValueError: Listing missing, unexpected and shape-mismatched names,
                and values that do not fit the array they replace (a float
                into an integer array such as an RNG seed, or an integer out
                of its range).

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
        mismatched, bad_values = [], []
        for name, (owner, attr) in entries.items():
            if name in state_dict:
                want = tuple(owner.__dict__[attr].shape)
                got = tuple(np.shape(state_dict[name]))
                if want != got:
                    mismatched.append(f"{name}: expected {want}, got {got}")
                else:
                    wrong = _dtype_problem(owner.__dict__[attr].dtype, state_dict[name])
                    if wrong:
                        bad_values.append(f"{name}: {wrong}")
        problems = []
        if strict and missing:
            problems.append(f"missing keys {missing}")
        if strict and unexpected:
            problems.append(f"unexpected keys {unexpected}")
        if mismatched:
            problems.append(f"shape mismatches [{'; '.join(mismatched)}]")
        if bad_values:
            problems.append(f"values that do not fit the dtype [{'; '.join(bad_values)}]")
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
        _touch()
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
        _touch()

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


class _Group(Module):
    """A namespace for core parameters nested below a layer (``lstm.gates.kernel``)."""

    def __init__(self) -> None:
        super().__init__()


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
    flags: list[bool] = []
    metas: list[dict[str, Any]] = []

    def visit(module: Module, prefix: str) -> None:
        d = module.__dict__
        frozen = d["_blox_frozen"]
        meta = d.get("_blox_metadata", {})
        for name, kind in _aux_of(module).kinds:
            full = f"{prefix}{name}"
            if kind in _ARRAY_KINDS:
                flags.append(kind == _PARAM and name not in frozen and _inexact(d[name]))
                metas.append(dict(meta.get(name, {})))
            elif kind == _CHILD:
                visit(d[name], full + ".")
            else:
                for sub, child in _sorted_container(full, d[name]):
                    visit(child, sub + ".")

    visit(model, "")
    names = leaf_names(model)  # the one naming function; `visit` gives flags and metadata
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


def __getattr__(name: str) -> Any:
    # Layer files written before the split import `CoreModule` from here; the
    # class now lives in `_core_module.py` (which imports this module, hence
    # the lazy lookup). New code imports it from `blox.eager`.
    if name in ("CoreModule", "from_core"):
        from . import _core_module

        return getattr(_core_module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
