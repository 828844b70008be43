"""Runtime shape and dtype checks: jaxtyping annotations enforced by beartype.

`typecheck` wraps a method so its jaxtyping annotations are checked on every
call that runs Python: under `jit` that is only while tracing, so a compiled
step pays nothing. The error is jaxtyping's `TypeCheckError` (a `TypeError`)
led by one line in the house form: the layer, the argument, the expected
dtype and shape (with f-string dims such as ``{self.in_features}`` filled in
and bound dims such as ``batch=2`` shown), what arrived, and the fix;
jaxtyping's own report follows. A layer called by a model is named with its
path too (``Net.fc2 (nn.Linear(3, 4))``, see `_errors.py`). An error raised by
an inner layer is already named and passes through outer checked modules
unchanged.
`set_typechecking(False)` (or ``BLOX_TYPECHECK=0`` or jaxtyping's own
``JAXTYPING_DISABLE=1``) turns all checks off.
"""

import functools
import inspect
import os
import re
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from beartype import beartype
from jaxtyping import AbstractArray, TypeCheckError, jaxtyped

from ._errors import located

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
    ``"*batch {self.in_features}"``. The checks run whenever the method runs
    Python, so under `jax.jit` only while tracing.

    Raises:
        jaxtyping.TypeCheckError: (a `TypeError`) If an argument or the
            return value does not match its annotation.

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
        jaxtyping.TypeCheckError: Head(): expected x to be a float array of shape (batch=3, 4), got f32[3,5]. ...
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
            named = TypeCheckError(_message(method, self, args, kwargs, error))
            named._blox_named = True  # type: ignore[attr-defined]
            raise named from None

    return wrapper  # type: ignore[return-value]


def _describe(module: Any) -> str:
    extra = module.extra_repr() if hasattr(module, "extra_repr") else ""
    return f"{type(module).__name__}({extra})"


def _message(
    method: Callable[..., Any], module: Any, args: Any, kwargs: Any, error: Exception
) -> str:
    """The house-form first line (where it can be worked out) and jaxtyping's report."""
    text = str(error)
    try:
        summary = _summary(method, module, args, kwargs, text)
    except Exception:  # the error path must never fail itself; fall back to the report
        summary = None
    head = located(module, _describe(module))
    if summary is None:
        return f"{head}: {text}"
    return f"{head}: {summary}\n{text}"


def _summary(
    method: Callable[..., Any], module: Any, args: Any, kwargs: Any, text: str
) -> str | None:
    signature = inspect.signature(method)
    param = re.search(r"typechecking parameter '(\w+)'", text)
    if param is not None:
        name = param.group(1)
        annotation = signature.parameters[name].annotation
        what = name
        fix = f"pass {name} with that dtype and shape"
    elif "checking the return value" in text:
        annotation = signature.return_annotation
        what = "the return value"
        fix = f"make {method.__qualname__} return that dtype and shape, or correct its annotation"
    else:
        return None
    array_type = _array_annotation(annotation)
    actual = re.search(r"Actual value: (.*?)\nExpected type:", text, re.DOTALL)
    if array_type is None or actual is None:
        return None
    arguments = signature.bind(module, *args, **kwargs).arguments
    dims = array_type.dim_str.format(**arguments).split()
    bound = dict(re.findall(r"^(\w+)=(\S+)$", text.split("as follows.")[-1], re.MULTILINE))
    shown = [f"{d}={bound[d]}" if d in bound else d for d in dims]
    kind = array_type.__name__.split("[", 1)[0].lower()
    article = "an" if kind[:1] in "aeiou" else "a"
    optional = " (or None)" if _allows_none(annotation) else ""
    return (
        f"expected {what} to be {article} {kind} array of shape ({', '.join(shown)})"
        f"{optional}, got {actual.group(1).strip()}. Fix: {fix}."
    )


def _array_annotation(annotation: Any) -> Any:
    """The jaxtyping array type in `annotation` (itself, or the one in `X | None`)."""
    if isinstance(annotation, type) and issubclass(annotation, AbstractArray):
        return annotation
    options = [a for a in typing.get_args(annotation) if a is not type(None)]
    if len(options) == 1:
        return _array_annotation(options[0])
    return None


def _allows_none(annotation: Any) -> bool:
    return type(None) in typing.get_args(annotation)
