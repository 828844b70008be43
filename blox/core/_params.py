"""Parameters: every array of a model, in one immutable pytree.

`Param` wraps one value with its trainable flag and metadata. `Params` maps
tuple paths to `Param`s and is the only thing that holds model state: weights,
BatchNorm statistics and RNG state alike. Every operation returns a new
container, so a `Params` can be passed through `jax.jit`, `jax.grad`,
`jax.lax.scan` and `optax` as a plain pytree whose leaves are the values.

Flattening is on the hot path of every jitted call, so the static part of the
flattened form (paths, flags, metadata) is built once per container and cached.
"""

from collections.abc import Callable, ItemsView, Iterable, KeysView, Mapping, ValuesView
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Path = tuple[str, ...]


def _freeze(value: Any) -> Any:
    """A hashable stand-in for a metadata value, tagged by container type.

    Tags keep `[1]`, `(1,)` and `{...}` apart, so two metadata dicts freeze
    equal exactly when they are equal.
    """
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: repr(kv[0]))
        return ("dict", tuple((k, _freeze(v)) for k, v in items))
    if isinstance(value, list):
        return ("list", tuple(_freeze(v) for v in value))
    if isinstance(value, tuple):
        return ("tuple", tuple(_freeze(v) for v in value))
    if isinstance(value, set | frozenset):
        return ("set", frozenset(_freeze(v) for v in value))
    return value


class _Static:
    """The static (treedef) form of a metadata dict.

    It compares and hashes by the frozen form, so treedefs of equal metadata
    are equal and jit caches hit, and it keeps the original dict, so
    unflattening gives back the metadata exactly (nested dicts and lists
    included) rather than its frozen stand-in.
    """

    __slots__ = ("_hash", "_key", "metadata")

    def __init__(self, metadata: dict[str, Any]) -> None:
        self.metadata = dict(metadata)
        self._key = _freeze(self.metadata)
        self._hash: int | None = None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Static) and self._key == other._key

    def __hash__(self) -> int:
        # Lazy: metadata holding an unhashable value still maps and flattens;
        # only jit, which hashes treedefs, needs the hash.
        if self._hash is None:
            self._hash = hash(self._key)
        return self._hash

    def __repr__(self) -> str:
        return repr(self.metadata)


def _path_str(path: Path) -> str:
    return "/".join(str(p) for p in path)


class Param:
    """One array of a model with its trainable flag and metadata.

    A pytree whose only child is `value`; `trainable` and `metadata` are static.

    Args:
        value: The array (or any pytree leaf).
        trainable: Whether optimisers should update it (`Params.split` default).
        metadata: A dict; common keys are ``'sharding'`` (one logical axis name
            or `None` per dimension, mapped onto a mesh by `bx.shardings`) and
            ``'tag'``.

    Raises:
        TypeError: If `trainable` is not a bool or `metadata` not a dict.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> p = bx.Param(jnp.zeros(3), trainable=False, metadata={'tag': 'stat'})
        >>> p.trainable, p.metadata['tag'], p.value.shape
        (False, 'stat', (3,))
        >>> p.replace(trainable=True).trainable
        True
    """

    __slots__ = ("metadata", "trainable", "value")

    def __init__(
        self,
        value: Any,
        trainable: bool = True,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(trainable, bool):
            raise TypeError(
                f"Param: expected trainable to be a bool, got "
                f"{type(trainable).__name__} {trainable!r}. Fix: pass True or False."
            )
        if metadata is not None and not isinstance(metadata, dict):
            raise TypeError(
                f"Param: expected metadata to be a dict or None, got "
                f"{type(metadata).__name__}. Fix: pass e.g. {{'tag': 'stat'}}."
            )
        self.value = value
        self.trainable = trainable
        self.metadata = dict(metadata) if metadata else {}

    @property
    def sharding(self) -> tuple[str | None, ...]:
        """The ``'sharding'`` metadata entry, or ``()`` when there is none.

        Example:
            >>> import jax.numpy as jnp
            >>> import blox as bx
            >>> bx.Param(jnp.zeros((2, 3)), metadata={'sharding': (None, 'model')}).sharding
            (None, 'model')
        """
        return tuple(self.metadata.get("sharding", ()))

    def replace(self, **updates: Any) -> "Param":
        """A copy with some of `value`, `trainable`, `metadata` replaced.

        Example:
            >>> import jax.numpy as jnp
            >>> import blox as bx
            >>> bx.Param(jnp.ones(2)).replace(value=jnp.zeros(2)).value.tolist()
            [0.0, 0.0]
        """
        unknown = set(updates) - {"value", "trainable", "metadata"}
        if unknown:
            raise TypeError(
                f"Param.replace: expected fields among value, trainable, metadata, "
                f"got {sorted(unknown)}. Fix: drop the unknown names."
            )
        fields = {"value": self.value, "trainable": self.trainable, "metadata": self.metadata}
        fields.update(updates)
        return Param(**fields)

    def __repr__(self) -> str:
        flag = "trainable" if self.trainable else "frozen"
        value = self.value
        if hasattr(value, "shape") and hasattr(value, "dtype"):
            shown = f"{value.dtype}{list(value.shape)}"
        else:
            shown = repr(value)
        extra = f", metadata={self.metadata}" if self.metadata else ""
        return f"Param({shown}, {flag}{extra})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Param):
            return NotImplemented
        return (
            self.trainable == other.trainable
            and self.metadata == other.metadata
            and _values_equal(self.value, other.value)
        )

    __hash__ = None  # type: ignore[assignment]


def _values_equal(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        if jnp.issubdtype(getattr(a, "dtype", None), jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    except Exception:
        return False


jax.tree_util.register_pytree_with_keys(
    Param,
    lambda p: (((jax.tree_util.GetAttrKey("value"), p.value),), (p.trainable, _Static(p.metadata))),
    lambda aux, children: _param_from_aux(aux, children[0]),
    flatten_func=lambda p: ((p.value,), (p.trainable, _Static(p.metadata))),
)


def _thaw(static: _Static) -> dict[str, Any]:
    # A fresh top-level dict per Param, so editing one Param's metadata in
    # place cannot reach the treedef or the other copies.
    return dict(static.metadata)


def _param_from_aux(aux: tuple[bool, _Static], value: Any) -> Param:
    p = object.__new__(Param)
    p.value = value
    p.trainable = aux[0]
    p.metadata = _thaw(aux[1])
    return p


class Params:
    """An immutable mapping from tuple paths to `Param`: all state of a model.

    Modules create entries lazily on their first call; every method returns a
    new container. As a pytree its leaves are the parameter values only, so it
    goes straight through `jax.jit`, `jax.grad`, `jax.vmap`, `jax.lax.scan`,
    `jax.checkpoint`, `jax.shard_map` and `optax`.

    A locked container refuses to create parameters, which catches a changed
    parameter name between initialisation and training.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import blox as bx
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> lin = bx.Linear(g / 'lin', 2, rng=rng)
        >>> params = rng.seed(bx.Params(), seed=0)
        >>> y, params = lin(params, jnp.ones((4, 3)))
        >>> params = params.locked()
        >>> sorted('/'.join(p) for p in params.keys())
        ['net/lin/bias', 'net/lin/kernel', 'net/rng/counter', 'net/rng/seed']
        >>> trainable, rest = params.split()
        >>> len(trainable), len(rest)
        (2, 2)
        >>> grads = jax.grad(lambda t: lin(t.merge(rest), jnp.ones(3))[0].sum())(trainable)
        >>> grads[('net', 'lin', 'bias')].value.tolist()
        [1.0, 1.0]
    """

    __slots__ = ("_aux", "_data", "_locked")

    def __init__(self) -> None:
        self._data: dict[Path, Param] = {}
        self._locked = False
        self._aux: Any = None

    @classmethod
    def _make(cls, data: dict[Path, Param], locked: bool) -> "Params":
        p = object.__new__(cls)
        p._data = data
        p._locked = locked
        p._aux = None
        return p

    @classmethod
    def from_dict(cls, entries: Mapping[Path, Param | Any], *, locked: bool = False) -> "Params":
        """Builds a container from `{path: Param or array}`.

        Plain arrays become trainable `Param`s. This is how pretrained weights
        are loaded into a model without running it.

        Args:
            entries: Tuple paths to `Param`s or arrays.
            locked: Whether the new container is locked.

        Raises:
            TypeError: If a path is not a tuple of strings.

        Example:
            >>> import jax.numpy as jnp
            >>> import blox as bx
            >>> p = bx.Params.from_dict({('net', 'w'): jnp.ones(2)}, locked=True)
            >>> p[('net', 'w')].trainable, p.is_locked
            (True, True)
        """
        data: dict[Path, Param] = {}
        for path, entry in entries.items():
            if not isinstance(path, tuple) or not all(isinstance(s, str) for s in path):
                raise TypeError(
                    f"Params.from_dict: expected tuple-of-str paths such as "
                    f"('net', 'kernel'), got {path!r}. Fix: split dotted names, "
                    "e.g. tuple('net.kernel'.split('.'))."
                )
            data[path] = entry if isinstance(entry, Param) else Param(entry)
        return cls._make(data, locked)

    # -- locking ---------------------------------------------------------------

    @property
    def is_locked(self) -> bool:
        """Whether creating new parameters is refused.

        Example:
            >>> import blox as bx
            >>> bx.Params().is_locked, bx.Params().locked().is_locked
            (False, True)
        """
        return self._locked

    def locked(self) -> "Params":
        """A copy that refuses to create new parameters.

        Example:
            >>> import blox as bx
            >>> bx.Params().locked().is_locked
            True
        """
        return Params._make(self._data, True)

    def unlocked(self) -> "Params":
        """A copy that may create new parameters (e.g. to add adapters).

        Example:
            >>> import blox as bx
            >>> bx.Params().locked().unlocked().is_locked
            False
        """
        return Params._make(self._data, False)

    # -- combining ---------------------------------------------------------------

    def split(
        self, predicate: Callable[[Path, Param], bool] | None = None
    ) -> tuple["Params", "Params"]:
        """Partitions into `(matching, rest)`; by default by `param.trainable`.

        Args:
            predicate: `predicate(path, param) -> bool`.

        Example:
            >>> import jax.numpy as jnp
            >>> import blox as bx
            >>> p = bx.Params.from_dict({('w',): jnp.ones(2),
            ...                          ('s',): bx.Param(jnp.ones(2), trainable=False)})
            >>> [list(x.keys()) for x in p.split()]
            [[('w',)], [('s',)]]
        """
        if predicate is None:
            match = {k: v for k, v in self._data.items() if v.trainable}
        else:
            match = {k: v for k, v in self._data.items() if predicate(k, v)}
        rest = {k: v for k, v in self._data.items() if k not in match}
        return Params._make(match, self._locked), Params._make(rest, self._locked)

    def merge(self, other: "Params") -> "Params":
        """A new container with the entries of both; `other` wins on conflicts.

        Raises:
            TypeError: If `other` is not a `Params`.
            ValueError: If the two differ in locked state.

        Example:
            >>> import jax.numpy as jnp
            >>> import blox as bx
            >>> a = bx.Params.from_dict({('w',): jnp.ones(1)})
            >>> b = bx.Params.from_dict({('w',): jnp.zeros(1), ('v',): jnp.ones(1)})
            >>> merged = a.merge(b)
            >>> merged[('w',)].value.tolist(), len(merged)
            ([0.0], 2)
        """
        if not isinstance(other, Params):
            raise TypeError(
                f"Params.merge: expected a Params, got {type(other).__name__}. "
                "Fix: build one with bx.Params.from_dict(...)."
            )
        if self._locked != other._locked:
            state = {True: "locked", False: "unlocked"}
            raise ValueError(
                f"Params.merge: expected both containers to have the same locked "
                f"state, got {state[self._locked]} and {state[other._locked]}. "
                "Fix: call .locked() (or .unlocked()) on both before merging."
            )
        return Params._make({**self._data, **other._data}, self._locked)

    # -- mapping interface -------------------------------------------------------

    def __getitem__(self, path: Path) -> Param:
        try:
            return self._data[path]
        except KeyError:
            raise KeyError(
                f"Params: expected a stored path, got {path!r} which is not among "
                f"the {len(self._data)} stored. Fix: check the module's graph path "
                "(list them with params.keys()) or run the model once to create it."
            ) from None

    def __setitem__(self, path: Path, value: Any) -> None:
        raise TypeError(
            "Params: expected no in-place assignment (the container is "
            f"immutable), got params[{path!r}] = .... Fix: "
            "params = params.merge(bx.Params.from_dict({path: bx.Param(value)})) "
            "or module.set_param(params, name, value)."
        )

    def __contains__(self, path: object) -> bool:
        return path in self._data

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self):
        return iter(self._data)

    def keys(self) -> KeysView[Path]:
        """The stored paths, in creation order.

        Example:
            >>> import jax.numpy as jnp
            >>> import blox as bx
            >>> list(bx.Params.from_dict({('a', 'w'): jnp.ones(1)}).keys())
            [('a', 'w')]
        """
        return self._data.keys()

    def values(self) -> ValuesView[Param]:
        """The stored `Param`s, in creation order.

        Example:
            >>> import jax.numpy as jnp
            >>> import blox as bx
            >>> [p.trainable for p in bx.Params.from_dict({('w',): jnp.ones(1)}).values()]
            [True]
        """
        return self._data.values()

    def items(self) -> ItemsView[Path, Param]:
        """`(path, Param)` pairs, in creation order.

        Example:
            >>> import jax.numpy as jnp
            >>> import blox as bx
            >>> [k for k, _ in bx.Params.from_dict({('w',): jnp.ones(1)}).items()]
            [('w',)]
        """
        return self._data.items()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Params):
            return NotImplemented
        return self._locked == other._locked and self._data == other._data

    __hash__ = None  # type: ignore[assignment]

    # -- internal updates used by Module ------------------------------------------

    def _with(self, path: Path, param: Param) -> "Params":
        data = dict(self._data)
        data[path] = param
        return Params._make(data, self._locked)

    def __repr__(self) -> str:
        state = "locked" if self._locked else "unlocked"
        if not self._data:
            return f"Params[{state}]({{}})"
        lines = [f"Params[{state}]({{"]
        for path, param in self._data.items():
            lines.append(f"  {_path_str(path)}: {param!r},")
        lines.append("})")
        return "\n".join(lines)

    # -- pytree ------------------------------------------------------------------------

    def _static(self) -> Any:
        aux = self._aux
        if aux is None:
            # Sorted paths: containers with the same entries flatten alike
            # whatever order they were built or merged in, so a jitted step
            # that splits and merges params compiles once.
            data = self._data
            paths = tuple(sorted(data))
            aux = (
                paths,
                tuple((data[k].trainable, _Static(data[k].metadata)) for k in paths),
                self._locked,
            )
            self._aux = aux
        return aux


def _flatten(p: Params) -> tuple[tuple[Any, ...], Any]:
    aux = p._static()
    data = p._data
    return tuple([data[k].value for k in aux[0]]), aux


def _flatten_with_keys(p: Params) -> tuple[tuple[Any, ...], Any]:
    DictKey = jax.tree_util.DictKey
    aux = p._static()
    data = p._data
    return tuple((DictKey(k), data[k].value) for k in aux[0]), aux


def _unflatten(aux: Any, values: Iterable[Any]) -> Params:
    paths, flags, locked = aux
    data = {}
    new = object.__new__
    for path, (trainable, meta), value in zip(paths, flags, values, strict=True):
        q = new(Param)
        q.value = value
        q.trainable = trainable
        q.metadata = _thaw(meta)
        data[path] = q
    p = Params._make(data, locked)
    p._aux = aux
    return p


jax.tree_util.register_pytree_with_keys(
    Params, _flatten_with_keys, _unflatten, flatten_func=_flatten
)
