"""Trace frames: which module objects may take traced state, and leak detection.

Inside a transformation, the module being called is a copy that JAX made when
it unflattened the arguments, and its new state consists of tracers. A blox
transform (the dispatcher, `nn.filter_grad`, `functional()`, `nn.summary`)
traces its function inside `_carry_state`, a per-thread frame listing the
copies whose state it will collect afterwards: the modules it passed in and
every module unflattened or built while the frame is open.

Writing a tracer onto any other object that holds concrete arrays means the
model was closed over by a transformation rather than passed in
(`jax.jit(lambda x: model(x))`, or a closure inside `nn.filter_jit`): the
update would leak a tracer, so `_closed_over` builds the error with the fix.
Eagerly computed updates (stop-gradient statistics under an eager
`nn.filter_grad`) are concrete and simply land in place.

All per-thread transform context lives in the one `_Local` object below, so a
second thread tracing its own model never sees the first thread's frames.
"""

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import jax


class _Local(threading.local):
    """Per-thread stack of open `_carry_state` frames (sets of module ids)."""

    def __init__(self) -> None:
        # Always present, so the per-node check in `_unflatten` is a plain
        # attribute read (a missing attribute would cost an exception).
        self.frames: list[set[int]] = []


_local = _Local()

OPEN = [0]
"""How many `_carry_state` frames are open in all threads: 0 spares a call the per-thread read."""
_OPEN_LOCK = threading.Lock()


@contextlib.contextmanager
def _carry_state(*trees: Any) -> Iterator[None]:
    """Marks a trace whose module copies (those in `trees`) carry state back.

    Every module in `trees`, and every module unflattened or built while the
    context is open, may take traced state: a blox transform collects it
    afterwards. Any other object is one the traced function closed over.
    """
    from ._module import Module

    frame: set[int] = set()
    for node in jax.tree.leaves(trees, is_leaf=lambda x: isinstance(x, Module)):
        if isinstance(node, Module):
            frame.update(id(module) for module in node.modules())
    frames = _local.frames
    frames.append(frame)
    with _OPEN_LOCK:
        OPEN[0] += 1
    try:
        yield
    finally:
        frames.pop()
        with _OPEN_LOCK:
            OPEN[0] -= 1


def _note_copy(module: Any) -> None:
    frames = _local.frames
    if frames:
        frames[-1].add(id(module))


def _is_copy(module: Any) -> bool:
    """True if `module` belongs to an open `_carry_state` (its state is carried back)."""
    frames = _local.frames
    return bool(frames) and any(id(module) in frame for frame in frames)


def _leaks(module: Any, old: Any, value: Any) -> bool:
    """True if writing `value` over `old` on `module` would leak a tracer to the caller."""
    tracer = jax.core.Tracer
    return isinstance(value, tracer) and not isinstance(old, tracer) and not _is_copy(module)


def _closed_over(module: Any, name: str) -> RuntimeError:
    return RuntimeError(
        f"{type(module).__name__}: expected state updates ({name}) on a model passed "
        "into the JAX transformation, got a model closed over by it (its arrays "
        "are concrete but the update is traced), so the update would leak a "
        "tracer. Fix: pass the model as an argument of nn.filter_jit / "
        "nn.filter_grad, call model.eval() for inference, or use "
        "fn, params = model.functional()."
    )
