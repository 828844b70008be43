"""`filter_jit`, `filter_grad`, `filter_value_and_grad` that carry state back.

Drop-ins for the Equinox functions of the same names. Inside, arguments are
copies that JAX unflattened; a layer call updates the copies' buffers (RNG
counters, running statistics). These wrappers return those buffers as extra
outputs and write them onto the caller's own objects, so state advances
exactly as it would outside a transformation. See `_dispatch.py` for the
state-return protocol.
"""

import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax

from ._context import CONTEXT
from ._dispatch import _Dispatcher, write_state
from ._frames import _carry_state
from ._module import Module, _flags


def _modules(tree: Any) -> list[Module]:
    return [
        node
        for node in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, Module))
        if isinstance(node, Module)
    ]


def _copy(tree: Any) -> Any:
    leaves, treedef = jax.tree.flatten(tree)
    return jax.tree.unflatten(treedef, leaves)


def _as_pytree_callable(fun: Callable[..., Any]) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """`fun` as `(func, lead)` with any model it holds as pytree data.

    A model called directly (`nn.filter_jit(model)`) or through a bound method
    (`nn.filter_jit(model.forward)`) must be traced like an argument, as
    `eqx.filter_jit` does: closed over, its arrays would be baked into the
    compiled program (stale after the next update) and its state could not
    come back.
    """
    if isinstance(fun, Module):
        return _call_module, (fun,)
    if inspect.ismethod(fun) and isinstance(fun.__self__, Module):
        return fun.__func__, (fun.__self__,)
    return fun, ()


def _call_module(module: Module, *args: Any, **kwargs: Any) -> Any:
    return module(*args, **kwargs)


def filter_jit(fun: Callable[..., Any] | None = None, *, donate: str = "none") -> Any:
    """`eqx.filter_jit` that also writes state updates back to the caller's modules.

    Arrays are traced, everything else is static (as in Equinox), including
    the arrays of `fun` itself when it is a model or a model's bound method.
    After each call, the buffers of every module passed in (RNG counters,
    running statistics) hold their new values, whether or not the function
    returns the model; a returned model carries them too.

    Like `jax.jit` and `eqx.filter_jit`, the result has `.lower(*args,
    **kwargs)`, returning the lowered program (e.g. for
    `.compile().memory_analysis()`).

    Args:
        fun: The function (or model) to compile.
        donate: As in `eqx.filter_jit` (``'none'``, ``'all'``,
            ``'all-except-first'``, ``'warn'``...).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from blox import eager as nn
        >>> model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5))
        >>> @nn.filter_jit
        ... def forward(model, x):
        ...     return model(x)
        >>> a = forward(model, jnp.ones((2, 3)))
        >>> b = forward(model, jnp.ones((2, 3)))
        >>> int(model[1].rng.counter), bool((a != b).any())
        (2, True)
        >>> _ = nn.filter_jit(model)(jnp.ones((2, 3)))
        >>> int(model[1].rng.counter)
        3
    """
    if fun is None:
        return functools.partial(filter_jit, donate=donate)
    func, lead = _as_pytree_callable(fun)
    dispatcher = _Dispatcher(func, donate)
    lock = CONTEXT.lock  # one step's read-compute-write of state at a time

    @functools.wraps(fun, updated=())
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return dispatcher(lead, args, kwargs)

    def lower(*args: Any, **kwargs: Any) -> Any:
        return dispatcher.lower(lead, args, kwargs)

    wrapper._blox_dispatcher = dispatcher  # type: ignore[attr-defined]
    wrapper.lower = lower  # type: ignore[attr-defined]
    return wrapper


def filter_value_and_grad(fun: Callable[..., Any] | None = None, *, has_aux: bool = False) -> Any:
    """`eqx.filter_value_and_grad` over trainable leaves, carrying state back.

    Differentiates with respect to the first argument's trainable leaves;
    buffers, RNG state, frozen and non-float leaves get `None` gradients.
    State updated inside (e.g. BatchNorm statistics) is written back to the
    modules passed in.

    Returns:
        A function returning `(value, grads)` (`((value, aux), grads)` with
        `has_aux`), `grads` shaped like `nn.trainable(first_argument)`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm(2))
        >>> loss, grads = nn.filter_value_and_grad(lambda m: m(jnp.ones((4, 2))).sum())(model)
        >>> grads[1].running_mean is None, grads[0].kernel.shape
        (True, (2, 2))
        >>> float(model[1].running_mean.sum()) != 0.0
        True
    """
    if fun is None:
        return functools.partial(filter_value_and_grad, has_aux=has_aux)
    lock = CONTEXT.lock

    @functools.wraps(fun, updated=())
    def wrapper(x: Any, *args: Any, **kwargs: Any) -> Any:
        leaves, treedef = jax.tree.flatten(x)
        flags = _flags(x)
        diff = [leaf if flag else None for leaf, flag in zip(leaves, flags)]

        changed: list[int] = []

        def inner(diff_leaves: list[Any]) -> tuple[Any, Any]:
            merged = [d if f else leaf for d, leaf, f in zip(diff_leaves, leaves, flags)]
            everything = (jax.tree.unflatten(treedef, merged), *_copy((args, kwargs)))
            before, structure = jax.tree.flatten(everything)
            with _carry_state(everything):
                out = fun(everything[0], *everything[1], **everything[2])
            after, new_structure = jax.tree.flatten(everything)
            if new_structure != structure:
                raise RuntimeError(
                    "nn.filter_grad: expected the arguments' structure (modes, frozen "
                    "flags, attributes) to stay the same during the call, got a "
                    "change inside it. Fix: call model.train()/eval()/freeze() and "
                    "create attributes (register_buffer) outside the function."
                )
            # The state-return protocol of `_dispatch.py`: replaced leaves by
            # flatten position, written back by key path after the call.
            changed[:] = [i for i, (a, b) in enumerate(zip(before, after)) if a is not b]
            state = [after[i] for i in changed]
            if has_aux:
                value, aux = out
                return value, (aux, state)
            return out, (None, state)

        with lock:
            (value, (aux, state)), grads = jax.value_and_grad(inner, has_aux=True)(diff)
            write_state((x, args, kwargs), changed, state)
        grads = jax.tree.unflatten(treedef, grads)
        return ((value, aux), grads) if has_aux else (value, grads)

    return wrapper


def filter_grad(fun: Callable[..., Any] | None = None, *, has_aux: bool = False) -> Any:
    """`eqx.filter_grad` over trainable leaves, carrying state back.

    Returns:
        A function returning `grads` (`(grads, aux)` with `has_aux`).

    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> lin = nn.Linear(2, 1).freeze('bias')
        >>> grads = nn.filter_grad(lambda m: m(jnp.ones((3, 2))).sum())(lin)
        >>> grads.kernel.tolist(), grads.bias
        ([[3.0], [3.0]], None)
    """
    if fun is None:
        return functools.partial(filter_grad, has_aux=has_aux)
    value_and_grad = filter_value_and_grad(fun, has_aux=has_aux)

    @functools.wraps(fun, updated=())
    def wrapper(x: Any, *args: Any, **kwargs: Any) -> Any:
        out, grads = value_and_grad(x, *args, **kwargs)
        return (grads, out[1]) if has_aux else grads

    return wrapper
