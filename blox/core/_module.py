"""The module base class: a graph node plus parameter helpers, never arrays.

A `Module` is bound to one `Graph` node and computes
`outputs, params = module(params, inputs, ...)`. It keeps configuration on
`self` and all state in the `Params` it is handed. Constructor arguments are
captured automatically so `display` and `repr` can show them.
"""

import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from . import _sampling
from ._graph import Graph, Path
from ._params import Param, Params

Shape = tuple[int, ...]
Initializer = Callable[..., Any]


def _where(module: "Module") -> str:
    """How errors name a module: its type and graph path."""
    graph = getattr(module, "graph", None)
    path = "/".join(graph.path) if graph is not None else "<unbound>"
    return f"{type(module).__name__} at {path!r}"


def _where_init(cls: type, signature: inspect.Signature, module: Any, args: Any, kw: Any) -> str:
    """`Type at 'path'` for a constructor error, the path read from its graph argument."""
    try:
        given = list(signature.bind(module, *args, **kw).arguments.values())[1:2]
    except TypeError:
        given = []
    if given and isinstance(given[0], Graph):
        return f"{cls.__name__} at {'/'.join(given[0].path)!r}"
    return cls.__name__


class Module:
    """Base class of every layer: subclass it, call `super().__init__(graph)`.

    A subclass takes its graph node first, keeps only configuration on
    `self`, and implements `__call__(self, params, ...) -> (output, params)`,
    creating and reading its arrays with `get_param`. Constructor arguments
    are recorded without any code in the subclass.

    Args:
        graph: This module's node; must be a child node, bound to no other
            module.

    Raises:
        ValueError: If `graph` is a root node or already bound.
        RuntimeError: If a subclass forgets `super().__init__(graph)`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import blox as bx
        >>> class Scale(bx.Module):
        ...     def __init__(self, graph, init_value=2.0):
        ...         super().__init__(graph)
        ...         self.init_value = init_value
        ...
        ...     def __call__(self, params, x):
        ...         init = jax.nn.initializers.constant(self.init_value)
        ...         s, params = self.get_param(params, 's', (), init)
        ...         return x * s, params
        >>> scale = Scale(bx.Graph('net') / 'scale')
        >>> y, params = scale(bx.Params(), jnp.ones(2))
        >>> y.tolist(), list(params.keys())
        ([2.0, 2.0], [('net', 'scale', 's')])
        >>> scale
        Scale(init_value=2.0)
    """

    _init_args: dict[str, Any]
    _init_type: str
    graph: Graph

    def __init__(self, graph: Graph) -> None:
        if not isinstance(graph, Graph):
            raise TypeError(
                f"{type(self).__name__}: expected a bx.Graph node as the first "
                f"argument, got {type(graph).__name__}. Fix: pass "
                "graph.child('name') (or graph / 'name')."
            )
        graph._bind(self)
        self.graph = graph

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" not in cls.__dict__:
            return
        original = cls.__dict__["__init__"]
        signature = inspect.signature(original)

        @functools.wraps(original)
        def __init__(self: Module, *args: Any, **kw: Any) -> None:
            if "_init_args" not in self.__dict__:  # the outermost __init__
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                names = list(bound.arguments)[2:]  # drop self and graph
                self._init_args = {n: bound.arguments[n] for n in names}
                self._init_type = type(self).__name__
            original(self, *args, **kw)
            # Checked after every __init__ in the chain, so the error names the
            # class that skipped the call, not only the outermost one.
            graph = self.__dict__.get("graph")
            if not isinstance(graph, Graph) or graph._module is not self:
                raise RuntimeError(
                    f"{_where_init(cls, signature, self, args, kw)}: expected "
                    "Module.__init__ to have bound the module to its graph node, "
                    "got a module without one. Fix: call super().__init__(graph) "
                    f"at the start of {cls.__name__}.__init__."
                )

        cls.__init__ = __init__  # type: ignore[method-assign]

    # -- parameters ----------------------------------------------------------------

    def param_path(self, name: str) -> Path:
        """The full tuple path of this module's parameter `name`.

        Example:
            >>> import blox as bx
            >>> bx.Linear(bx.Graph('net') / 'l1', 2, rng=None).param_path('kernel')
            ('net', 'l1', 'kernel')
        """
        return self.graph.path + (name,)

    def get_param(
        self,
        params: Params,
        name: str,
        shape: Shape | None = None,
        init: Initializer | None = None,
        dtype: Any = np.float32,
        trainable: bool = True,
        metadata: dict[str, Any] | None = None,
        rng: Any = None,
    ) -> tuple[Any, Params]:
        """Returns parameter `name`, creating it with `init` on first use.

        When `rng` is given, creating a parameter always draws one key from it
        (even for constant initialisers), so changing one initialiser never
        shifts the random values of the others. Without `rng` the initialiser
        gets `key=None`.

        Args:
            params: The container.
            name: Local name, e.g. ``'kernel'``.
            shape: Shape to create; also checked against an existing value.
            init: `init(key, shape, dtype)`.
            dtype: The created value's dtype.
            trainable: Flag stored with a created parameter.
            metadata: Metadata stored with a created parameter.
            rng: An `Rng` module that supplies the key.

        Returns:
            `(value, params)`.

        Raises:
            KeyError: If the parameter is missing and `shape`/`init` are not
                given, or the container is locked.
            ValueError: If an existing parameter's shape differs from `shape`.

        Example:
            >>> import jax, jax.numpy as jnp
            >>> import blox as bx
            >>> g = bx.Graph('net')
            >>> rng = bx.Rng(g / 'rng')
            >>> lin = bx.Linear(g / 'lin', 2, rng=rng)
            >>> params = rng.seed(bx.Params(), seed=0)
            >>> w, params = lin.get_param(params, 'w', (3,), jax.nn.initializers.ones, rng=rng)
            >>> w.tolist(), int(rng.get_counter(params))
            ([1.0, 1.0, 1.0], 1)
        """
        path = self.graph.path + (name,)
        data = params._data
        if path in data:
            value = data[path].value
            if shape is not None and hasattr(value, "shape"):
                if tuple(value.shape) != tuple(shape):
                    raise ValueError(
                        f"{_where(self)}: expected parameter {name!r} of shape "
                        f"{tuple(shape)}, got the stored shape {tuple(value.shape)}. "
                        "Fix: call the module with inputs of the size it was "
                        "created with, or give it a fresh graph node and params."
                    )
            return value, params
        if shape is None or init is None:
            raise KeyError(
                f"{_where(self)}: expected parameter {name!r} at {path!r} to exist, "
                "got a container without it and no shape/init to create it. "
                "Fix: run the module once on unlocked params to create it, or "
                "pass shape= and init=."
            )
        if params._locked:
            raise KeyError(
                f"{_where(self)}: expected to create parameter {name!r} at "
                f"{path!r}, got params that are locked. Fix: create all "
                "parameters in a first call, or call params.unlocked() to add "
                "new ones on purpose."
            )
        if _sampling.PLANNER:
            # Eager construction: the planner draws and initialises concretely.
            value, params = _sampling.PLANNER[-1](rng, params, init, tuple(shape), dtype)
        elif rng is not None:
            key, params = rng(params)
            value = init(key, tuple(shape), dtype)
        else:
            try:
                value = init(None, tuple(shape), dtype)
            except Exception as error:
                raise ValueError(
                    f"{_where(self)}: expected an Rng to initialise {name!r} (its "
                    f"initialiser needs a random key), got rng=None ({error}). Fix: "
                    "build the module with rng=bx.Rng(graph / 'rng') and seed it, "
                    "or use a constant initialiser."
                ) from error
        param = Param(value, trainable=trainable, metadata=metadata)
        return value, params._with(path, param)

    def set_param(
        self,
        params: Params,
        name: str,
        value: Any,
        trainable: bool | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Params:
        """Updates parameter `name`: its value, trainable flag and/or metadata.

        `value=None` keeps the value; `metadata` is merged into the existing.

        Raises:
            ValueError: If `value`, `trainable` and `metadata` are all `None`.
            KeyError: If the parameter does not exist.
            TypeError: If `value` is not an array, `trainable` not a bool or
                `metadata` not a dict.

        Example:
            >>> import jax.numpy as jnp
            >>> import blox as bx
            >>> g = bx.Graph('net')
            >>> rng = bx.Rng(g / 'rng')
            >>> lin = bx.Linear(g / 'lin', 2, rng=rng)
            >>> _, params = lin(rng.seed(bx.Params(), seed=0), jnp.ones(3))
            >>> params = lin.set_param(params, 'kernel', None, trainable=False)
            >>> params[('net', 'lin', 'kernel')].trainable
            False
        """
        if value is None and trainable is None and metadata is None:
            raise ValueError(
                f"{_where(self)}: expected at least one of value, trainable or "
                f"metadata for set_param({name!r}), got all None. Fix: pass the "
                "field to change."
            )
        path = self.graph.path + (name,)
        existing = params._data.get(path)
        if existing is None:
            raise KeyError(
                f"{_where(self)}: expected parameter {name!r} at {path!r} to exist "
                "for set_param, got a container without it. Fix: create it "
                "first with get_param (run the module once)."
            )
        if trainable is not None and not isinstance(trainable, bool):
            raise TypeError(
                f"{_where(self)}: expected trainable to be a bool or None for "
                f"set_param({name!r}), got {type(trainable).__name__} {trainable!r}. "
                "Fix: pass True or False."
            )
        if metadata is not None and not isinstance(metadata, dict):
            raise TypeError(
                f"{_where(self)}: expected metadata to be a dict or None for "
                f"set_param({name!r}), got {type(metadata).__name__}. Fix: pass "
                "e.g. {'tag': 'stat'}."
            )
        if value is not None and not isinstance(value, jax.Array | np.ndarray | np.generic):
            raise TypeError(
                f"{_where(self)}: expected an array value for set_param({name!r}), "
                f"got {type(value).__name__}. Fix: wrap it, e.g. jnp.asarray(value)."
            )
        param = object.__new__(Param)
        param.value = existing.value if value is None else value
        param.trainable = existing.trainable if trainable is None else trainable
        param.metadata = (
            existing.metadata if metadata is None else {**existing.metadata, **metadata}
        )
        return params._with(path, param)

    def __repr__(self) -> str:
        kind = getattr(self, "_init_type", type(self).__name__)
        args = getattr(self, "_init_args", {})
        shown = ", ".join(f"{k}={_short_repr(v)}" for k, v in args.items())
        return f"{kind}({shown})"

    def __call__(self, params: Params, *args: Any, **kwargs: Any) -> tuple[Any, Params]:
        raise NotImplementedError(
            f"{_where(self)}: expected a subclass that implements "
            "__call__(self, params, ...) -> (output, params), got none. Fix: "
            "define __call__ in the subclass."
        )


def _lead(value: jax.Array, ndim: int) -> jax.Array:
    """`value` with leading unit axes up to rank `ndim`, for strict rank promotion."""
    return value.reshape((1,) * (ndim - value.ndim) + value.shape)


def _short_repr(value: Any) -> str:
    if isinstance(value, Module):
        return f"<{type(value).__name__} {'/'.join(value.graph.path)}>"
    if isinstance(value, list | tuple):
        inner = ", ".join(_short_repr(v) for v in value)
        return (
            f"[{inner}]"
            if isinstance(value, list)
            else f"({inner}{',' if len(value) == 1 else ''})"
        )
    if callable(value) and not isinstance(value, type):
        name = getattr(value, "__qualname__", None) or getattr(value, "__name__", None)
        if name:
            return name
    return repr(value)
