"""`display`: the module tree of a model, with its parameters when given.

A model's structure lives in its `Graph` and its state in `Params`; neither
alone tells what the model is. `display` joins them: every graph node with the
module bound to it and the arguments it was built with, and under each module
the arrays it owns, with dtype, shape, size, bytes and value statistics. A
module handed to another module's constructor (one `Rng` feeding many layers, a
`Linear` passed to a `Sequential`) appears once, at its own node, and as a
`-> path` reference wherever it is used, so shared state is visible and never
counted twice.

The view is first built as plain data (`_Node`, `_Leaf`), then drawn either as
a text tree (terminals, logs, doctests) or, inside a Jupyter kernel, as
foldable treescope objects. treescope is the optional `blox[display]` extra, so
it is imported only when a notebook needs it.
"""

import dataclasses
import functools
import inspect
import math
import sys
from collections.abc import Iterator
from typing import Any, TextIO

import jax
import jax.numpy as jnp
import numpy as np

from ._graph import Graph, Path
from ._module import Module
from ._params import Param, Params

_MAX_ITEMS = 8  # items of a list/tuple/dict argument shown before eliding the rest
_MAX_CHARS = 40  # characters of one argument value before it is cut
_MAX_USERS = 3  # users listed on a shared module before "+N more"
_INSTALL_HINT = (
    "(text view: treescope is not installed; for the interactive view run "
    "pip install 'blox[display]')"
)


# -- the view as plain data ----------------------------------------------------------


@dataclasses.dataclass
class _Leaf:
    """One parameter as displayed, its summary columns computed once."""

    label: str  # path relative to the node it is listed under
    param: Param
    kind: str  # e.g. "float32[3, 16]"
    count: int
    nbytes: int
    stats: str
    unowned: bool  # its path matches no bound module


@dataclasses.dataclass
class _Node:
    graph: Graph
    leaves: list[_Leaf]
    children: list["_Node"]


@dataclasses.dataclass
class _Model:
    trees: list[_Node]
    others: list[_Leaf]  # params under none of the displayed graphs
    users: dict[int, list[str]]  # id(module) -> paths of the modules built with it
    with_params: bool


def _walk(node: _Node) -> Iterator[_Node]:
    yield node
    for child in node.children:
        yield from _walk(child)


def _leaves(node: _Node) -> Iterator[_Leaf]:
    for each in _walk(node):
        yield from each.leaves


def _path_text(path: Path) -> str:
    return "/".join(str(p) for p in path)


def _build(graphs: tuple[Graph, ...], params: Params | None) -> _Model:
    index: dict[Path, _Node] = {}

    def make(graph: Graph) -> _Node:
        node = _Node(graph, [], [])
        index.setdefault(graph.path, node)
        node.children = [make(child) for child in graph.children.values()]
        return node

    trees = [make(graph) for graph in graphs]
    others: list[_Leaf] = []
    for path, param in params.items() if params is not None else ():
        # The deepest displayed node on the path owns the entry; an entry whose
        # parent node has no module still shows, flagged, so nothing is hidden.
        for cut in range(len(path) - 1, 0, -1):
            node = index.get(path[:cut])
            if node is not None:
                owned = cut == len(path) - 1 and node.graph.module is not None
                node.leaves.append(_leaf(_path_text(path[cut:]), param, not owned))
                break
        else:
            others.append(_leaf(_path_text(path), param, True))

    users: dict[int, list[str]] = {}
    for tree in trees:
        for node in _walk(tree):
            module = node.graph.module
            if module is None:
                continue
            user = _path_text(node.graph.path)
            for used in _modules_in(list(getattr(module, "_init_args", {}).values())):
                names = users.setdefault(id(used), [])
                if user not in names:
                    names.append(user)
    return _Model(trees, others, users, params is not None)


def _modules_in(value: Any) -> Iterator[Module]:
    if isinstance(value, Module):
        yield value
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _modules_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _modules_in(item)


# -- one parameter's summary ------------------------------------------------------------


def _leaf(label: str, param: Param, unowned: bool) -> _Leaf:
    value = param.value
    if isinstance(value, bool | int | float | complex):
        value = np.asarray(value)
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is None or dtype is None:
        return _Leaf(label, param, type(value).__name__, 0, 0, _clip(repr(value)), unowned)
    shape = tuple(shape)
    count = math.prod(shape)
    kind = f"{dtype}[{', '.join(str(n) for n in shape)}]"
    return _Leaf(label, param, kind, count, count * dtype.itemsize, _stats(value), unowned)


def _concrete(value: Any) -> bool:
    """Whether the values can be read (not a tracer, abstract shape or remote shard)."""
    if isinstance(value, np.ndarray | np.generic):
        return True
    if isinstance(value, jax.Array) and not isinstance(value, jax.core.Tracer):
        return value.is_fully_addressable and not value.is_deleted()
    return False


def _num(x: Any) -> str:
    return f"{float(x) + 0.0:.4g}"  # + 0.0 turns -0.0 into 0.0


def _stats(value: Any) -> str:
    dtype = value.dtype
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        # Key bits carry no meaning as numbers: name the generator instead.
        return f"impl={jax.random.key_impl(value)}" if _concrete(value) else ""
    if not _concrete(value) or value.size == 0:
        return ""
    array = np.asarray(value)
    is_bool = jnp.issubdtype(dtype, jnp.bool_)
    is_int = jnp.issubdtype(dtype, jnp.integer)
    is_complex = jnp.issubdtype(dtype, jnp.complexfloating)
    if array.size == 1:
        item = array.reshape(-1)[0]
        if is_bool or is_int:
            return f"= {int(item)}"
        return f"= {complex(item)}" if is_complex else f"= {_num(item)}"
    if is_bool:
        return f"true={int(array.sum())}"
    if is_int:
        return f"min={int(array.min())} max={int(array.max())}"
    with np.errstate(all="ignore"):
        if is_complex:
            magnitude = np.abs(array.astype(np.complex128))
            return f"abs_mean={_num(magnitude.mean())} abs_max={_num(magnitude.max())}"
        data = array.astype(np.float64)
        text = (
            f"mean={_num(data.mean())} std={_num(data.std())} "
            f"min={_num(data.min())} max={_num(data.max())}"
        )
        bad = data.size - int(np.isfinite(data).sum())
    return f"{text} nonfinite={bad}" if bad else text


# -- totals ---------------------------------------------------------------------------------


def _bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024
        if size < 1024 or unit == "TiB":
            break
    return f"{size:.1f} {unit}"


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _sums(leaves: list[_Leaf]) -> tuple[int, int, int, int]:
    """(count, bytes, trainable count, trainable bytes)."""
    trained = [leaf for leaf in leaves if leaf.param.trainable]
    return (
        sum(leaf.count for leaf in leaves),
        sum(leaf.nbytes for leaf in leaves),
        sum(leaf.count for leaf in trained),
        sum(leaf.nbytes for leaf in trained),
    )


def _long_totals(leaves: list[_Leaf]) -> str:
    count, nbytes, t_count, t_bytes = _sums(leaves)
    return (
        f"{_plural(count, 'param')} in {_plural(len(leaves), 'array')}, {_bytes(nbytes)}; "
        f"trainable: {_plural(t_count, 'param')}, {_bytes(t_bytes)}; "
        f"frozen: {_plural(count - t_count, 'param')}, {_bytes(nbytes - t_bytes)}"
    )


def _short_totals(leaves: list[_Leaf]) -> str:
    count, nbytes, t_count, _ = _sums(leaves)
    text = f"{_plural(count, 'param')}, {_bytes(nbytes)}"
    if t_count == 0:
        return f"{text}, frozen"
    if t_count < count:
        return f"{text}, {count - t_count:,} frozen"
    return text


# -- constructor arguments -------------------------------------------------------------------


def _clip(text: str, limit: int = _MAX_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _arg_text(value: Any) -> str:
    """A short form of one constructor argument: modules as `-> path`, functions by name."""
    if isinstance(value, Module):
        graph = getattr(value, "graph", None)
        return (
            f"-> {_path_text(graph.path)}" if graph is not None else f"-> <{type(value).__name__}>"
        )
    if isinstance(value, Graph):
        return repr(value)
    if isinstance(value, jax.Array | np.ndarray | jax.ShapeDtypeStruct):
        return f"{value.dtype}[{', '.join(str(n) for n in value.shape)}]"
    if isinstance(value, list | tuple):
        items = [_arg_text(item) for item in value[:_MAX_ITEMS]]
        if len(value) > _MAX_ITEMS:
            items.append(f"... +{len(value) - _MAX_ITEMS}")
        inner = ", ".join(items)
        if isinstance(value, list):
            return f"[{inner}]"
        return f"({inner}{',' if len(value) == 1 else ''})"
    if isinstance(value, dict):
        items = [f"{_clip(repr(k))}: {_arg_text(v)}" for k, v in list(value.items())[:_MAX_ITEMS]]
        if len(value) > _MAX_ITEMS:
            items.append(f"... +{len(value) - _MAX_ITEMS}")
        return "{" + ", ".join(items) + "}"
    if isinstance(value, functools.partial):
        return f"partial({_arg_text(value.func)}, ...)"
    if isinstance(value, type):
        return value.__name__
    if callable(value):
        name = getattr(value, "__qualname__", None) or getattr(value, "__name__", None)
        if isinstance(name, str):
            return _clip(name.replace("<locals>.", ""))
    return _clip(repr(value))


def _defaults(module: Module) -> dict[str, Any]:
    """Default values of the constructor that recorded `module._init_args`."""
    # The outermost __init__ that ran (and recorded the arguments) is the first
    # one defined along the method resolution order.
    for cls in type(module).__mro__:
        if "__init__" in cls.__dict__:
            found = {}
            for name, p in inspect.signature(cls.__dict__["__init__"]).parameters.items():
                if p.kind is p.VAR_POSITIONAL:
                    found[name] = ()
                elif p.kind is p.VAR_KEYWORD:
                    found[name] = {}
                elif p.default is not p.empty:
                    found[name] = p.default
            return found
    return {}


def _same(value: Any, default: Any) -> bool:
    if value is default:
        return True
    if type(value) is not type(default):
        return False
    if not isinstance(value, int | float | complex | str | bytes | tuple | dict | frozenset):
        return False
    try:
        return bool(value == default)
    except Exception:  # e.g. tuples holding arrays
        return False


def _module_text(module: Module) -> str:
    """`Type(arg=value, ...)` with the arguments that differ from their defaults."""
    kind = getattr(module, "_init_type", type(module).__name__)
    defaults = _defaults(module)
    shown = [
        f"{name}={_arg_text(value)}"
        for name, value in getattr(module, "_init_args", {}).items()
        if not (name in defaults and _same(value, defaults[name]))
    ]
    return f"{kind}({', '.join(shown)})"


# -- text --------------------------------------------------------------------------------------


def _flags(leaf: _Leaf, in_tree: bool) -> str:
    flags = []
    if not leaf.param.trainable:
        flags.append("[frozen]")
    if leaf.unowned and in_tree:
        flags.append("[no module]")
    sharding = leaf.param.metadata.get("sharding")
    if sharding is not None:
        flags.append(f"sharding={_arg_text(sharding)}")
    return " ".join(flags)


def _leaf_rows(leaves: list[_Leaf], in_tree: bool = True) -> list[str]:
    """One line per parameter, columns aligned within the group."""
    cells = [
        [leaf.label, leaf.kind, f"{leaf.count:,}", _bytes(leaf.nbytes), leaf.stats]
        + [_flags(leaf, in_tree)]
        for leaf in leaves
    ]
    widths = [max((len(row[i]) for row in cells), default=0) for i in range(6)]
    right = (2, 3)  # numbers are right-aligned
    shown = [i for i, width in enumerate(widths) if width]  # drop all-empty columns
    rows = []
    for row in cells:
        padded = [row[i].rjust(widths[i]) if i in right else row[i].ljust(widths[i]) for i in shown]
        rows.append("  ".join(padded).rstrip())
    return rows


def _node_text(node: _Node, model: _Model, top: bool) -> str:
    graph, module = node.graph, node.graph.module
    text = _path_text(graph.path) if top else graph.name
    if module is not None:
        text += f": {_module_text(module)}"
    if model.with_params:
        leaves = list(_leaves(node))
        if top:
            text += f"  ({_long_totals(leaves)})"
        elif leaves:
            text += f"  ({_short_totals(leaves)})"
    users = model.users.get(id(module), []) if module is not None else []
    if users:
        listed = ", ".join(users[:_MAX_USERS])
        more = f", +{len(users) - _MAX_USERS} more" if len(users) > _MAX_USERS else ""
        text += f"  [used by {listed}{more}]"
    return text


def _draw(node: _Node, model: _Model, prefix: str, lines: list[str]) -> None:
    entries: list[tuple[str, _Node | None]] = [(row, None) for row in _leaf_rows(node.leaves)]
    entries += [(_node_text(child, model, top=False), child) for child in node.children]
    for i, (text, child) in enumerate(entries):
        last = i == len(entries) - 1
        lines.append(f"{prefix}{'└── ' if last else '├── '}{text}")
        if child is not None:
            _draw(child, model, prefix + ("    " if last else "│   "), lines)


def _render_text(graphs: tuple[Graph, ...], params: Params | None) -> str:
    """The text tree that `display` prints outside notebooks."""
    model = _build(graphs, params)
    lines: list[str] = []
    for tree in model.trees:
        lines.append(_node_text(tree, model, top=True))
        _draw(tree, model, "", lines)
    if model.others:
        lines.append(f"params under no displayed graph  ({_long_totals(model.others)})")
        rows = _leaf_rows(model.others, in_tree=False)
        lines += [f"{'└── ' if i == len(rows) - 1 else '├── '}{r}" for i, r in enumerate(rows)]
    if model.with_params and len(model.trees) + bool(model.others) > 1:
        lines.append(f"total  ({_long_totals(list(_all_leaves(model)))})")
    return "\n".join(lines)


def _all_leaves(model: _Model) -> Iterator[_Leaf]:
    for tree in model.trees:
        yield from _leaves(tree)
    yield from model.others


# -- treescope -----------------------------------------------------------------------------------


class _Text:
    """Text that treescope shows as it is, without quotes."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text

    def __treescope_repr__(self, path: str | None, subtree_renderer: Any) -> Any:
        from treescope import rendering_parts

        return rendering_parts.build_one_line_tree_node(rendering_parts.text(self.text), path)


class _View:
    """A plain object that treescope renders as `kind(name=value, ...)`, foldable."""

    def __init__(self, kind: type, attributes: dict[str, Any]) -> None:
        self._kind = kind
        self._attributes = attributes

    def __getattr__(self, name: str) -> Any:
        # treescope's path rendering expects the shown names to be attributes.
        try:
            return self.__dict__["_attributes"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __treescope_repr__(self, path: str | None, subtree_renderer: Any) -> Any:
        from treescope import repr_lib

        return repr_lib.render_object_constructor(
            self._kind, self._attributes, path, subtree_renderer
        )


def _free(attributes: dict[str, Any], name: str) -> str:
    while name in attributes:  # a parameter or child named like an argument
        name += "_"
    return name


def _tree_arg(value: Any) -> Any:
    if isinstance(value, Module):
        return _Text(_arg_text(value))
    if type(value) in (list, tuple):  # not namedtuples, whose fields treescope shows
        return type(value)(_tree_arg(item) for item in value)
    if isinstance(value, dict):
        return {k: _tree_arg(v) for k, v in value.items()}
    return value


def _leaf_view(leaf: _Leaf, in_tree: bool = True) -> _View:
    summary = "  ".join(
        part
        for part in (leaf.kind, f"{leaf.count:,}", _bytes(leaf.nbytes), leaf.stats)
        + (_flags(leaf, in_tree),)
        if part
    )
    attributes: dict[str, Any] = {"summary": _Text(summary)}
    if leaf.param.metadata:
        attributes["metadata"] = leaf.param.metadata
    attributes["value"] = leaf.param.value
    return _View(Param, attributes)


def _node_view(node: _Node, model: _Model, top: bool) -> _View:
    attributes: dict[str, Any] = {}
    if top:
        attributes["name"] = _Text(_path_text(node.graph.path))
        if model.with_params:
            attributes["totals"] = _Text(_long_totals(list(_leaves(node))))
    module = node.graph.module
    if module is not None:
        for name, value in getattr(module, "_init_args", {}).items():
            attributes[_free(attributes, name)] = _tree_arg(value)
        users = model.users.get(id(module))
        if users:
            attributes[_free(attributes, "used_by")] = _Text(", ".join(users))
    for leaf in node.leaves:
        attributes[_free(attributes, leaf.label)] = _leaf_view(leaf)
    for child in node.children:
        attributes[_free(attributes, child.graph.name)] = _node_view(child, model, top=False)
    return _View(type(module) if module is not None else Graph, attributes)


def _treescope_views(graphs: tuple[Graph, ...], params: Params | None) -> list[Any]:
    """What `display` hands to `treescope.show` in a notebook, one item per section."""
    model = _build(graphs, params)
    views: list[Any] = [_node_view(tree, model, top=True) for tree in model.trees]
    if model.others:
        attributes: dict[str, Any] = {"totals": _Text(_long_totals(model.others))}
        for leaf in model.others:
            attributes[_free(attributes, leaf.label)] = _leaf_view(leaf, in_tree=False)
        views.append(_View(Params, attributes))
    if model.with_params and len(model.trees) + bool(model.others) > 1:
        views.append(f"total  ({_long_totals(list(_all_leaves(model)))})")
    return views


# -- entry point ----------------------------------------------------------------------------------


def _in_notebook() -> bool:
    """Whether we run in a Jupyter (IPython) kernel, which can show rich output."""
    # A kernel has always imported IPython; not importing it here keeps a plain
    # terminal call free of IPython's import time.
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return hasattr(get_ipython(), "kernel")


def _import_treescope() -> Any:
    try:
        import treescope
    except ImportError:
        return None
    return treescope


def _check(graphs: Any, params: Any) -> tuple[Graph, ...]:
    fix = "Fix: pass the graph the model was built on, e.g. display(net, params)"
    if isinstance(graphs, Graph):
        roots: tuple[Graph, ...] = (graphs,)
    elif isinstance(graphs, tuple | list) and graphs:
        for i, item in enumerate(graphs):
            if not isinstance(item, Graph):
                raise TypeError(
                    f"display: expected a tuple of bx.Graph nodes, got "
                    f"{type(item).__name__} at index {i}. {fix}, or several graphs "
                    "as display((net_a, net_b), params)."
                )
        roots = tuple(graphs)
    elif isinstance(graphs, tuple | list):
        raise ValueError(
            f"display: expected at least one bx.Graph, got an empty {type(graphs).__name__}. {fix}."
        )
    elif isinstance(graphs, Module):
        where = _path_text(graphs.graph.path) if hasattr(graphs, "graph") else "<unbound>"
        raise TypeError(
            f"display: expected a bx.Graph or a tuple of them, got the module "
            f"{type(graphs).__name__} at {where!r}. Fix: pass its graph, e.g. "
            "display(module.graph.root, params)."
        )
    elif isinstance(graphs, Params):
        raise TypeError(
            "display: expected a bx.Graph or a tuple of them as the first argument, "
            "got Params. Fix: put the graph first: display(graph, params)."
        )
    else:
        raise TypeError(
            f"display: expected a bx.Graph or a tuple of them, got {type(graphs).__name__}. {fix}."
        )
    if params is not None and not isinstance(params, Params):
        extra = (
            " To show several graphs, pass them as a tuple: display((g1, g2), params)."
            if isinstance(params, Graph)
            else ""
        )
        raise TypeError(
            f"display: expected params to be a bx.Params or None, got "
            f"{type(params).__name__}. Fix: pass the container the model returned, "
            f"e.g. display(graph, params).{extra}"
        )
    return roots


def display(
    graphs: Graph | tuple[Graph, ...],
    params: Params | None = None,
    *,
    file: TextIO | None = None,
) -> None:
    """Shows the module tree of one or more graphs, with their parameters if given.

    Each graph node is listed with the module bound to it as
    ``Type(arg=value, ...)``: the constructor arguments that differ from their
    defaults, functions by name, long values cut short. A module passed to
    another module's constructor (a shared `Rng`, a layer handed to
    `Sequential`) is listed once, at its own node, marked ``[used by ...]``, and
    referred to as ``-> path`` elsewhere.

    With `params`, every entry is listed under its module: dtype and shape,
    number of values, bytes and value statistics (``mean std min max`` for
    floats, ``min max`` for integers, the value itself for one-element arrays,
    the generator for PRNG keys). Non-trainable entries are marked
    ``[frozen]``; entries whose path matches no module are still listed (marked
    ``[no module]``, or in a closing section when they lie outside every given
    graph). Headers give totals: values, arrays and bytes, trainable and
    frozen. Abstract values (`jax.ShapeDtypeStruct` from `jax.eval_shape`,
    tracers) show without statistics. Without `params` only the structure is
    shown.

    Inside a Jupyter kernel the tree is shown as a foldable treescope view
    (install the extra: ``pip install 'blox[display]'``; without it the text
    tree is printed with a note saying so). Elsewhere, or when `file` is given,
    the text tree is printed.

    Args:
        graphs: A `Graph` node (usually the root) or a tuple of them.
        params: The model's `Params`, or `None` for the structure only.
        file: Where to write the text tree; defaults to `sys.stdout` (and to
            the treescope view in a notebook).

    Returns:
        None, like `print`.

    Raises:
        TypeError: If `graphs` is not a `Graph` or tuple of `Graph`s, or
            `params` is neither `Params` nor `None`.
        ValueError: If `graphs` is an empty tuple.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import blox as bx
        >>> net = bx.Graph('net')
        >>> rng = bx.Rng(net / 'rng')
        >>> mlp = bx.Sequential(net / 'mlp', [bx.Linear(net / 'l1', 2, rng=rng), jax.nn.relu])
        >>> bx.display(net)
        net
        ├── rng: Rng()  [used by net/l1]
        ├── mlp: Sequential(layers=[-> net/l1, relu])
        └── l1: Linear(output_size=2, rng=-> net/rng)  [used by net/mlp]
        >>> params = rng.seed(bx.Params(), seed=0)
        >>> _, params = mlp(params, jnp.ones((1, 3)))
        >>> bx.display(net, params)
        net  (10 params in 4 arrays, 44 B; trainable: 8 params, 32 B; frozen: 2 params, 12 B)
        ├── rng: Rng()  (2 params, 12 B, frozen)  [used by net/l1]
        │   ├── seed     key<fry>[]  1  8 B  impl=threefry2x32  [frozen]
        │   └── counter  uint32[]    1  4 B  = 2                [frozen]
        ├── mlp: Sequential(layers=[-> net/l1, relu])
        └── l1: Linear(output_size=2, rng=-> net/rng)  (8 params, 32 B)  [used by net/mlp]
            ├── kernel  float32[3, 2]  6  24 B  mean=... std=... min=... max=...
            └── bias    float32[2]     2   8 B  mean=0 std=0 min=0 max=0
    """
    roots = _check(graphs, params)
    if file is None and _in_notebook():
        treescope = _import_treescope()
        if treescope is not None:
            for view in _treescope_views(roots, params):
                treescope.show(view)
            return
        print(_render_text(roots, params), file=sys.stdout)
        print(_INSTALL_HINT, file=sys.stdout)
        return
    print(_render_text(roots, params), file=sys.stdout if file is None else file)
