"""Where a call-time error happened: the layer as the user wrote it, and its path.

A shape error deep in a model should say which layer failed in the user's
words: ``Net.fc2 (nn.Linear(3, 4)): expected ...``. The layer's own text
(``nn.Linear(3, 4)``) comes from its class and `extra_repr`; its path
(``Net.fc2``, ``Net.blocks.1``) from the modules calling it. Nothing is
recorded on the call path to know that: only when an error is being raised,
`located` walks the Python stack outward, takes the modules whose methods are
running (each parent's frame holds it as `self`), and finds the failing layer
among the outermost one's `named_modules()`, under the same dotted name
`state_dict` uses. Inside a trace the modules on the stack are the traced
copies, which hold each other as the originals do, so the path is the same.
A layer called on its own (no module calling it) keeps its plain text.
"""

import sys
from typing import Any


def _is_module(obj: Any) -> bool:
    return "_blox_kinds" in getattr(obj, "__dict__", ())


def as_written(module: Any) -> str:
    """The layer as its repr shows it, with `nn.` for blox layers; ``Head()`` for the user's own.

    Example:
        >>> from blox import eager as nn
        >>> as_written(nn.Linear(3, 4))
        'nn.Linear(in_features=3, out_features=4)'
    """
    extra = module.extra_repr() if hasattr(module, "extra_repr") else ""
    prefix = "nn." if type(module).__module__.startswith("blox.eager") else ""
    return f"{prefix}{type(module).__name__}({extra})"


def path_of(module: Any) -> str | None:
    """`module`'s path in the model whose method is running it (``Net.fc2``), or `None`.

    Only for error messages: it walks the Python stack, so call it only when
    an error is being raised.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> class Net(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.fc = nn.Linear(2, 2)
        ...
        ...     def __call__(self, x):
        ...         return path_of(self.fc)
        >>> Net()(jnp.ones(2))
        'Net.fc'
        >>> path_of(nn.Linear(2, 2)) is None  # not called by a model
        True
    """
    callers = []
    frame = sys._getframe(1)
    while frame is not None:
        obj = frame.f_locals.get("self")
        if obj is not module and _is_module(obj) and not any(obj is c for c in callers):
            callers.append(obj)
        frame = frame.f_back
    for root in reversed(callers):  # the outermost model first
        for name, sub in root.named_modules():
            if sub is module and name:
                return f"{type(root).__name__}.{name}"
    return None


def located(module: Any, head: str) -> str:
    """`head` (the layer's text) led by its path in the model, where one is known.

    Example:
        >>> from blox import eager as nn
        >>> located(nn.Linear(3, 4), 'Linear(3, 4)')  # not inside a model
        'Linear(3, 4)'
    """
    try:
        path = path_of(module)
    except Exception:  # the error path must never fail itself
        path = None
    return head if path is None else f"{path} ({as_written(module)})"
