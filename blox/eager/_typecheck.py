"""Runtime shape and dtype checks: jaxtyping annotations enforced by beartype.

`typecheck` wraps a method so its jaxtyping annotations are checked on every
call that runs Python: under `jit` that is only while tracing, so a compiled
step pays nothing. The error is jaxtyping's `TypeCheckError` (a `TypeError`)
prefixed with the layer, so it names the layer, the expected and the actual
shape. `set_typechecking(False)` (or ``BLOX_TYPECHECK=0`` or jaxtyping's own
``JAXTYPING_DISABLE=1``) turns all checks off.
"""

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

from beartype import beartype
from jaxtyping import TypeCheckError, jaxtyped

F = TypeVar("F", bound=Callable[..., Any])

_enabled = [os.environ.get("BLOX_TYPECHECK", "1") not in ("0", "false", "False")]


def set_typechecking(enabled: bool) -> None:
    """Turns blox's runtime shape checks on or off, globally.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> nn.set_typechecking(False)
        >>> nn.Linear(3, 2)(jnp.ones((1, 4)).astype(int)) is not None  # unchecked
        Traceback (most recent call last):
        ...
        ValueError: ...
        >>> nn.set_typechecking(True)
    """
    _enabled[0] = bool(enabled)


def typechecking_enabled() -> bool:
    """Whether runtime shape checks are on.

    Example:
        >>> from blox import eager as nn
        >>> nn.typechecking_enabled()
        True
    """
    return _enabled[0]


def typecheck(method: F) -> F:
    """Checks a method's jaxtyping annotations with beartype; errors name the module.

    Dimension names may use f-string fields of the arguments, e.g.
    ``"*batch {self.in_features}"``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxtyping import Array, Float
        >>> from blox import eager as nn
        >>> class Head(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.fc = nn.Linear(4, 2)
        ...
        ...     @nn.typecheck
        ...     def __call__(self, x: Float[Array, "batch 4"]) -> Float[Array, "batch 2"]:
        ...         return self.fc(x)
        >>> Head()(jnp.ones((3, 4))).shape
        (3, 2)
        >>> Head()(jnp.ones((3, 5)))
        Traceback (most recent call last):
        ...
        jaxtyping.TypeCheckError: Head(...): ...
    """
    checked = jaxtyped(typechecker=beartype)(method)

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not _enabled[0]:
            return method(self, *args, **kwargs)
        try:
            return checked(self, *args, **kwargs)
        except TypeCheckError as error:
            if getattr(error, "_blox_named", False):
                raise
            named = TypeCheckError(f"{_describe(self)}: {error}")
            named._blox_named = True  # type: ignore[attr-defined]
            raise named from None

    wrapper.__wrapped_unchecked__ = method  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def _describe(module: Any) -> str:
    extra = module.extra_repr() if hasattr(module, "extra_repr") else ""
    return f"{type(module).__name__}({extra})"
