"""Every process-wide cache and record of `blox.eager`, in one object.

`CONTEXT` holds them all, each bounded, so a long process that builds many
configurations does not grow without limit, and `nn.clear_caches()` empties
them in one place (tests, notebooks that redefine classes, memory pressure).
The invariant each cache keeps: it only saves work. Emptying any of them at any
time changes no result, only how long the next call takes (it compiles or
traces again), and re-arms one-time warnings.

What is cached, and bounded how:

* `interned`: one `_Aux` (a module's static half) per distinct configuration,
  so equal treedefs compare by identity; past `INTERN_LIMIT`, new
  configurations are simply not interned.
* `core_layers`, `init_programs`: `nn.Layer(...)` construction (`_seed.py`):
  the shared core module per configuration and the compiled initialiser per
  signature, least-recently-built first out past `INIT_LIMIT`.
* each `_Dispatcher`'s compiled programs (`_dispatch.py`), one per argument
  signature, least-recently-called first out past `Dispatcher.limit`;
  `dispatchers` lists them weakly so `clear_caches` reaches them.
* `seen_draws`, `warned_sites`: the stale-RNG guard's record (`_rng_guard.py`).
* `warned`: one-time warnings already given (op-by-op fallbacks).
* `token`, `stamped`: the stamps (`_pytree.stamp`: the flattening of a module
  tree called or returned by a compiled call, kept in the object's own
  `__dict__`, so the next call on it skips walking it) are valid while
  their token is `token[0]`; `stamped` weakly lists the objects stamped
  since the last change to any module. Any change to any module's arrays or
  structure replaces the token and removes those stamps at once
  (`_pytree._touch`), so no stamp serves a stale leaf or keeps a replaced
  array alive.

`lock` serialises the read-compute-write of module state across threads: two
threads driving one model would otherwise both read the same RNG counter and
one update would be lost.
"""

import threading
import weakref
from typing import Any

INTERN_LIMIT = 4096
INIT_LIMIT = 512


class _Context:
    """The caches listed in the module docstring, and the state lock."""

    def __init__(self) -> None:
        self.interned: dict[Any, Any] = {}
        self.core_layers: dict[Any, Any] = {}
        self.init_programs: dict[Any, Any] = {}
        self.dispatchers: weakref.WeakSet[Any] = weakref.WeakSet()
        self.seen_draws: dict[tuple[int, bytes], dict[int, int]] = {}
        self.warned_sites: set[int] = set()
        self.warned: set[Any] = set()
        self.token: list[object] = [object()]
        self.stamped: dict[int, Any] = {}  # id -> weakref.ref
        self.lock = threading.RLock()

    def clear(self) -> None:
        from ._pytree import _touch  # (imports this module)

        with self.lock:
            self.interned.clear()
            self.core_layers.clear()
            self.init_programs.clear()
            for dispatcher in list(self.dispatchers):
                dispatcher.clear()
            self.seen_draws.clear()
            self.warned_sites.clear()
            self.warned.clear()
            _touch()  # every stamp


CONTEXT = _Context()


def cache_sizes() -> dict[str, int]:
    """How many entries each cache of `blox.eager` holds now (a debugging aid).

    Keys: ``'interned'`` (module structures), ``'core_layers'`` (shared core
    modules), ``'init_programs'`` (compiled initialisers), ``'compiled_calls'``
    (compiled signatures over every method and `nn.filter_jit` function) and
    ``'rng_records'`` (the stale-RNG guard's record).

    Example:
        >>> from blox import eager as nn
        >>> nn.clear_caches()
        >>> _ = nn.Linear(3, 2)
        >>> nn.cache_sizes()['init_programs']
        1
    """
    return {
        "interned": len(CONTEXT.interned),
        "core_layers": len(CONTEXT.core_layers),
        "init_programs": len(CONTEXT.init_programs),
        "compiled_calls": sum(len(d.cache) for d in list(CONTEXT.dispatchers)),
        "rng_records": len(CONTEXT.seen_draws),
    }


def clear_caches() -> None:
    """Empties every cache of `blox.eager` and re-arms its one-time warnings.

    Compiled calls, interned module structure, shared core layers and
    compiled initialisers are all dropped; the next call of each model
    compiles again. Results never change: caches only save time.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> lin = nn.Linear(2, 2)
        >>> _ = lin(jnp.ones((1, 2)))
        >>> nn.clear_caches()
        >>> nn.compile_stats(type(lin).__call__).cached
        0
    """
    CONTEXT.clear()
