"""`CoreModule`: the eager object that wraps a `blox.core` layer, and `from_core`.

Every eager layer is a `CoreModule`. Its `__init__` builds the core twin and
its params (`build_core` and `init_params` from `_seed.py`) and hands both to
`adopt_core`, which stores each kept param entry as an attribute (trainable
entries as parameters, the others as buffers; typed PRNG keys as raw key
data) and remembers, per entry, its core path and attribute chain.

Each call (`call_core`) builds a locked `blox.core.Params` from the object's
arrays (`core_params`), calls the core method (`outputs, params = core(params,
x)`), and writes the state entries that came back (running statistics, RNG
counters) onto the object. Outside transformations that is the whole story:
state advances in place, as in PyTorch. Inside one, the object is a copy
whose new state is traced; `_frames.py` says which copies may take it and
`_dispatch.py` carries it back. These four names (`adopt_core`, `call_core`,
`core_params`, `core_layer`) plus `self.training` are the contract layer
families subclass; docs/writing-layers.md documents it for authors outside
the repo.
"""

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from blox.core import Param, Params

from ._errors import located
from ._frames import _closed_over, _is_copy, _leaks
from ._module import Module, _Group
from ._pytree import _restructure, _touch
from ._rng_guard import guard_draw


class _Entry(NamedTuple):
    """How one core parameter maps onto an eager object's attributes."""

    path: tuple[str, ...]  # path in the core Params
    chain: tuple[str, ...]  # attribute chain on the eager object
    key_impl: str | None  # PRNG implementation when the value is a typed key
    trainable: bool
    metadata: tuple[tuple[str, Any], ...]


def _get(module: Module, chain: tuple[str, ...]) -> Any:
    for name in chain[:-1]:
        module = module.__dict__[name]
    return module.__dict__[chain[-1]]


def _set(module: Module, chain: tuple[str, ...], value: Any) -> None:
    for name in chain[:-1]:
        module = module.__dict__[name]
    module.__dict__[chain[-1]] = value
    _touch()


# The stale-state guard's host-side record: for each (draw site, seed), the


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
                _restructure(owner)
            entries.append(
                _Entry(
                    path, chain, key_impl, param.trainable, tuple(sorted(param.metadata.items()))
                )
            )
        d["_blox_core"] = core
        d["_blox_entries"] = tuple(entries)
        _restructure(self)

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
        try:
            out, new = method(params, *args, **kwargs)
        except (TypeError, ValueError) as error:
            renamed = _renamed(error, self)
            if renamed is None:
                raise
            raise renamed from None
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
                guard_draw(seed.value, old)
        _set(self, entry.chain, value)


def _renamed(error: Exception, module: CoreModule) -> Exception | None:
    """`error` naming the eager layer instead of its hidden core path ('blox/layer').

    Called by a model, the layer is named with its path: ``Net.bn
    (nn.BatchNorm(4, ...))``; called on its own, ``nn.BatchNorm``.
    """
    core = module.__dict__.get("_blox_core")
    if core is None or type(error) not in (TypeError, ValueError) or len(error.args) != 1:
        return None
    hidden = f"{type(core).__name__} at {'/'.join(core.graph.path)!r}"
    text = str(error.args[0])
    if hidden not in text or core.graph.path[:1] != ("blox",):
        return None
    return type(error)(text.replace(hidden, located(module, f"nn.{type(module).__name__}")))


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
    _restructure(wrapper)
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
