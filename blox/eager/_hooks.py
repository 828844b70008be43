"""Forward hooks: `module.register_forward_hook(hook)` with a removable handle.

As in PyTorch, a hook runs after the module's `__call__` returns, as
`hook(module, args, output)`, and a non-`None` result replaces the output.
Hooks belong to one module object and are kept in a registry outside it (so
they are not static data of the pytree and never change a treedef), weakly,
so a hooked module can still be garbage collected.

The call path pays for hooks only while one exists: the compiled-call wrapper
tests one dict, `HOOKS.table`, for emptiness, and with no hook registered goes
straight to the dispatcher. While any hook is registered, eager calls of every module run
op by op, so each sub-module runs as the real object (not a traced copy) and
its hooks see concrete outputs, as in PyTorch. Inside a transformation
(`nn.filter_jit`, `jax.jit`), modules are copies and their hooks do not fire;
`nn.summary` registers its hooks on those copies.
"""

import itertools
import threading
import weakref
from collections.abc import Callable
from typing import Any


class _Hooks:
    """The registry: id(module) -> {handle id: hook}.

    Keyed by id, with a `weakref.finalize` per hooked module that drops its
    entry when the module is collected (before its id can be reused), so
    `table` is a plain dict whose emptiness the call path tests in C.
    """

    def __init__(self) -> None:
        self.table: dict[int, dict[int, Callable[..., Any]]] = {}
        self.ids = itertools.count()
        self.running = threading.local()


HOOKS = _Hooks()


class RemovableHandle:
    """What `register_forward_hook` returns: `.remove()` unregisters the hook.

    Also a context manager that removes the hook on exit.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> lin = nn.Linear(2, 2)
        >>> seen = []
        >>> with lin.register_forward_hook(lambda m, args, out: seen.append(out.shape)):
        ...     _ = lin(jnp.ones((3, 2)))
        >>> _ = lin(jnp.ones((3, 2)))
        >>> seen
        [(3, 2)]
    """

    def __init__(self, module: Any, hook_id: int) -> None:
        self._module = weakref.ref(module)
        self._id = hook_id

    def remove(self) -> None:
        """Unregisters the hook (a second call does nothing).

        Example:
            >>> from blox import eager as nn
            >>> handle = nn.Linear(2, 2).register_forward_hook(lambda m, a, o: None)
            >>> handle.remove(); handle.remove()
        """
        module = self._module()
        hooks = HOOKS.table.get(id(module)) if module is not None else None
        if hooks is not None:
            hooks.pop(self._id, None)
            if not hooks:
                del HOOKS.table[id(module)]

    def __enter__(self) -> "RemovableHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


def register(module: Any, hook: Callable[..., Any]) -> RemovableHandle:
    """Adds `hook` to `module`'s forward hooks; see `Module.register_forward_hook`."""
    if not callable(hook):
        raise TypeError(
            f"{type(module).__name__}.register_forward_hook: expected a callable "
            f"hook(module, args, output), got {type(hook).__name__}. Fix: pass a "
            "function."
        )
    hook_id = next(HOOKS.ids)
    key = id(module)
    if key not in HOOKS.table:
        HOOKS.table[key] = {}
        weakref.finalize(module, HOOKS.table.pop, key, None)
    HOOKS.table[key][hook_id] = hook
    return RemovableHandle(module, hook_id)


def hooked_call(
    method: Callable[..., Any], module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Runs `method` op by op, then `module`'s hooks (once per call, not per super() level)."""
    running = HOOKS.running.__dict__.setdefault("ids", set())
    key = id(module)
    if key in running:  # a subclass's __call__ calling super().__call__()
        return method(module, *args, **kwargs)
    running.add(key)
    try:
        out = method(module, *args, **kwargs)
    finally:
        running.discard(key)
    for hook in list(HOOKS.table.get(key, {}).values()):
        result = hook(module, args, out)
        if result is not None:
            out = result
    return out
