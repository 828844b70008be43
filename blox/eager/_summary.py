"""`nn.summary`: a table of a model's layers, output shapes and sizes, without compute.

The output shapes come from one abstract run of the model under
`jax.eval_shape`: arrays become shapes, nothing is computed or allocated, so a
summary of a model on an input too large for memory still works. While that
run is traced, every module's `__call__` is recorded (its dotted path and the
shapes it returned) by a forward hook on each traced copy of the modules,
removed when the run ends. The sizes come from the model's own arrays. The model itself
is never called: the traced run works on a copy (see `summary`), so no RNG
counter or running statistic moves. `blox.core.display` is the core's view of
the same information.
"""

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from blox.core import internal

from ._frames import _carry_state
from ._module import Module, _Group


class SummaryRow(NamedTuple):
    """One call of one module (or one module never called) in a `Summary`.

    `output_shape` is the module's output with every array replaced by its
    shape (a tuple of ints for a single array; other values by their type
    name, ``'None'`` for `None`), or `None` if the module was not called. `params`, `trainable` and `bytes` count the module's own arrays,
    not its children's: `params` its parameter elements (frozen ones
    included), `trainable` those `nn.trainable` keeps, `bytes` the memory of
    its parameters and buffers. Rows for a second or later call (path
    ``'name#2'``) count zero, so summing a column over the rows gives the total.
    """

    path: str
    type: str
    output_shape: Any
    params: int
    bytes: int
    trainable: int


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Summary:
    """What `nn.summary` returns: the rows and totals, printed as a table.

    Attributes:
        rows: A `SummaryRow` per module (in `named_modules()` order, the root
            first, path ``''``), followed directly by one more row per extra
            call (``'fc#2'``).
        total_params: Parameter elements in the whole model.
        trainable_params: The trainable ones among them.
        total_bytes: Memory of every parameter and buffer.
    """

    rows: list[SummaryRow]
    total_params: int
    trainable_params: int
    total_bytes: int

    def __str__(self) -> str:
        return _render(self)

    __repr__ = __str__


def summary(model: Module, /, *example_inputs: Any, **example_kwargs: Any) -> Summary:
    """Tabulates a model's layers: path, type, output shape, parameters and bytes.

    The model runs once under `jax.eval_shape`, on abstract versions of its
    arrays and of the example inputs, so nothing is computed: inputs may be
    arrays or `jax.ShapeDtypeStruct`, of any size. Inputs that are not arrays
    (ints, flags, ``None``) are passed through as they are. The model's mode
    (train or eval) is used as set, and its state does not change.

    Each module is listed once with the shape of what its first call returned;
    each further call adds a row ``'path#2'``, ``'path#3'``, ...; a module that
    was not called shows ``-``. Only `__call__` is recorded (other methods,
    such as `lstm.step`, are not). Sizes count each module's own arrays; the
    footer gives the totals. A module reachable under two paths is listed
    (and counted) under both, as in `named_parameters()`.

    Args:
        model: The eager model.
        *example_inputs: Positional arguments of the model's call.
        **example_kwargs: Keyword arguments of the model's call.

    Returns:
        A `Summary` whose ``str`` (and ``repr``) is the table.

    Raises:
        TypeError: If `model` is not an `nn.Module`.
        Exception: Whatever the model raises on the inputs (e.g. a shape
            error), with a note listing the input shapes.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from blox import eager as nn
        >>> model = nn.Sequential(nn.Linear(3, 8), jax.nn.relu, nn.Dropout(0.1), nn.Linear(8, 2))
        >>> nn.summary(model, jax.ShapeDtypeStruct((32, 3), jnp.float32))
        Layer   Type        Output shape  Params  Bytes
        -----------------------------------------------
        (root)  Sequential  (32, 2)            0    0 B
        0       Linear      (32, 8)           32  128 B
        2       Dropout     (32, 8)            0   12 B
        3       Linear      (32, 2)           18   72 B
        -----------------------------------------------
        Total params:         50
        Trainable params:     50
        Non-trainable params: 0
        Total size:           212 B (parameters and buffers)
        >>> int(model[2].rng.counter)  # the model did not run: its state is unchanged
        0
    """
    if not isinstance(model, Module):
        from blox.core import Module as CoreModule

        hint = (
            " For a blox.core module use bx.display(graph, params)."
            if isinstance(model, CoreModule)
            else ""
        )
        raise TypeError(
            f"nn.summary: expected an nn.Module as the first argument, got "
            f"{type(model).__name__}. Fix: pass the model first, then its example "
            f"inputs: nn.summary(model, x).{hint}"
        )
    calls = _trace_calls(model, example_inputs, example_kwargs)
    return _tabulate(model, calls)


def _is_input_array(leaf: Any) -> bool:
    return isinstance(leaf, jax.Array | np.ndarray | np.generic | jax.ShapeDtypeStruct)


def _trace_calls(
    model: Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, list[Any]]:
    """Output shapes of every recorded call, by dotted module path, in call order."""
    leaves, treedef = jax.tree.flatten((model, args, kwargs))
    traced = [_is_input_array(leaf) for leaf in leaves]
    calls: dict[str, list[Any]] = {}

    def run(dynamic: list[Any]) -> None:
        it = iter(dynamic)
        with _carry_state():
            # The model is passed in, not closed over: JAX hands us abstract
            # values and unflattening them builds a fresh copy of every module,
            # whose state updates (RNG counters, running statistics) land on the
            # copy and vanish with the trace. `_carry_state` marks the copies as
            # such, so no closed-over error and no stale-RNG check fires. A
            # copy's paths are read from the copy itself: its named_modules()
            # names are the original's (dict containers may come in another
            # order, and a module shared under two names becomes two copies, one
            # per name, which is what a call through each name then uses).
            copy, copy_args, copy_kwargs = jax.tree.unflatten(
                treedef, [next(it) if t else leaf for leaf, t in zip(leaves, traced)]
            )
            paths = {id(m): name for name, m in copy.named_modules()}
            with _recording(copy, paths, calls):
                copy(*copy_args, **copy_kwargs)

    try:
        jax.eval_shape(run, [leaf for leaf, t in zip(leaves, traced) if t])
    except Exception as error:
        shapes = jax.tree.map(_shape_text, (args, kwargs), is_leaf=_is_input_array)
        error.add_note(
            f"(raised by nn.summary running {type(model).__name__} on inputs "
            f"{_inputs_text(*shapes)})"
        )
        raise
    return calls


@contextlib.contextmanager
def _recording(copy: Module, paths: dict[int, str], calls: dict[str, list[Any]]) -> Iterator[None]:
    """Records each copy's output shapes with a forward hook, removed afterwards."""

    def record(module: Any, args: Any, out: Any) -> None:
        calls.setdefault(paths[id(module)], []).append(_shapes(out))

    with contextlib.ExitStack() as stack:
        for module in copy.modules():
            if not isinstance(module, _Group):
                stack.enter_context(module.register_forward_hook(record))
        yield


def _shapes(out: Any) -> Any:
    """`out` with each array replaced by its shape tuple (other leaves by their type name)."""
    if out is None:  # kept apart from `None`, which marks a module never called
        return "None"
    return jax.tree.map(
        lambda leaf: tuple(leaf.shape) if hasattr(leaf, "shape") else type(leaf).__name__, out
    )


def _shape_text(leaf: Any) -> str:
    if _is_input_array(leaf):
        return f"{jnp.dtype(leaf.dtype).name}{list(leaf.shape)}"
    return repr(leaf)


def _inputs_text(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    parts = [str(a) for a in args] + [f"{k}={v}" for k, v in kwargs.items()]
    return f"({', '.join(parts)})"


def _tabulate(model: Module, calls: dict[str, list[Any]]) -> Summary:
    shown = [(name, m) for name, m in model.named_modules() if not isinstance(m, _Group)]
    names = {name for name, _ in shown}
    sizes = {name: [0, 0, 0] for name in names}  # params, bytes, trainable

    def owner(array_name: str) -> str:
        # The nearest listed module: arrays of internal groups (``drop.rng.seed``)
        # belong to the layer that holds them.
        parts = array_name.split(".")[:-1]
        while ".".join(parts) not in names:
            parts.pop()
        return ".".join(parts)

    trainable = {name for name, _ in model.named_parameters(trainable_only=True)}
    for name, value in model.named_parameters():
        size = sizes[owner(name)]
        size[0] += value.size
        size[1] += value.nbytes
        if name in trainable and jnp.issubdtype(value.dtype, jnp.inexact):
            size[2] += value.size
    for name, value in model.named_buffers():
        sizes[owner(name)][1] += value.nbytes

    rows = []
    for name, module in shown:
        kind = type(module).__name__
        outputs = calls.get(name) or [None]
        params, nbytes, train = sizes[name]
        rows.append(SummaryRow(name, kind, outputs[0], params, nbytes, train))
        for i, out in enumerate(outputs[1:], start=2):
            rows.append(SummaryRow(f"{name}#{i}", kind, out, 0, 0, 0))
    return Summary(
        rows=rows,
        total_params=sum(r.params for r in rows),
        trainable_params=sum(r.trainable for r in rows),
        total_bytes=sum(r.bytes for r in rows),
    )


# -- the table ---------------------------------------------------------------------------


def _is_shape(value: Any) -> bool:
    return isinstance(value, tuple) and all(isinstance(d, int) for d in value)


def _output_text(shape_tree: Any) -> str:
    if shape_tree is None:
        return "-"
    leaves = jax.tree.leaves(shape_tree, is_leaf=_is_shape)
    if _is_shape(shape_tree):
        leaves = [shape_tree]
    return ", ".join(str(leaf) for leaf in leaves) if leaves else "()"


def _render(s: Summary) -> str:
    show_trainable = any(r.trainable != r.params for r in s.rows)
    header = ["Layer", "Type", "Output shape", "Params"]
    if show_trainable:
        header.append("Trainable")
    header.append("Bytes")
    body = []
    for r in s.rows:
        repeat = "#" in r.path
        cells = [
            r.path or "(root)",
            r.type,
            _output_text(r.output_shape),
            "-" if repeat else f"{r.params:,}",
        ]
        if show_trainable:
            cells.append("-" if repeat else f"{r.trainable:,}")
        cells.append("-" if repeat else internal.format_bytes(r.bytes))
        body.append(cells)
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        # Text columns left-aligned, number columns (from Params on) right-aligned.
        parts = [c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(parts).rstrip()

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    non_trainable = s.total_params - s.trainable_params
    footer = [
        f"Total params:         {s.total_params:,}",
        f"Trainable params:     {s.trainable_params:,}",
        f"Non-trainable params: {non_trainable:,}",
        f"Total size:           {internal.format_bytes(s.total_bytes)} (parameters and buffers)",
    ]
    return "\n".join([line(header), rule, *map(line, body), rule, *footer])
