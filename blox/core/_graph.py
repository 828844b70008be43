"""The structural graph: names and nesting of a model's parts, never its arrays.

A `Graph` node gives a module its place in the model, and so the prefix of
every parameter path it creates. Arrays live in `Params`; the graph only
answers "what is called what, and who contains whom".
"""

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._module import Module

Path = tuple[str, ...]


def _check_name(name: Any, where: str) -> str:
    if not isinstance(name, str):
        raise TypeError(
            f"{where}: expected a node name of type str, got "
            f"{type(name).__name__} {name!r}. Fix: pass a name such as 'encoder'."
        )
    if not name or "/" in name:
        raise ValueError(
            f"{where}: expected a non-empty node name without '/', got {name!r}. "
            "Fix: use a plain name such as 'encoder'; nest with "
            "graph.child('a').child('b') instead of 'a/b'."
        )
    return name


class Graph:
    """A named node in the tree that structures a model.

    `Graph(name)` makes a root; `graph.child(name)` (or `graph / name`) makes a
    child. Each module is bound to one non-root node, and that node's `path`
    prefixes the module's parameter paths in `Params`.

    Args:
        name: The node's name: a non-empty string without ``'/'``.

    Raises:
        TypeError: If the name is not a str.
        ValueError: If the name is empty or contains ``'/'``.

    Example:
        >>> import blox as bx
        >>> net = bx.Graph('net')
        >>> enc = net.child('enc')
        >>> (enc / 'l1').path
        ('net', 'enc', 'l1')
        >>> enc.parent is net, enc.root is net
        (True, True)
    """

    __slots__ = ("_children", "_module", "_parent", "metadata", "name", "path")

    def __init__(self, name: str) -> None:
        self.name = _check_name(name, "Graph")
        self.path: Path = (name,)
        self._parent: Graph | None = None
        self._children: dict[str, Graph] = {}
        self._module: Module | None = None
        # Free-form annotations for tools such as `display`.
        self.metadata: dict[str, Any] = {}

    def child(self, name: str) -> "Graph":
        """Makes a child node called `name`.

        Args:
            name: The child's name, unique among this node's children.

        Returns:
            The new child node.

        Raises:
            TypeError: If `name` is not a str.
            ValueError: If `name` is empty, contains ``'/'``, or this node
                already has a child called `name`.

        Example:
            >>> import blox as bx
            >>> g = bx.Graph('net')
            >>> g.child('l1').path
            ('net', 'l1')
        """
        where = f"Graph at {'/'.join(self.path)!r}"
        _check_name(name, where)
        if name in self._children:
            raise ValueError(
                f"{where}: expected a new child name, got {name!r} which already "
                f"exists. Fix: give each child a unique name, e.g. '{name}_2'."
            )
        node = Graph(name)
        node._parent = self
        node.path = self.path + (name,)
        self._children[name] = node
        return node

    def __truediv__(self, name: str) -> "Graph":
        """`graph / 'name'` is `graph.child('name')`.

        Example:
            >>> import blox as bx
            >>> (bx.Graph('net') / 'l1').path
            ('net', 'l1')
        """
        return self.child(name)

    @property
    def parent(self) -> "Graph | None":
        """The parent node, or `None` for a root.

        Example:
            >>> import blox as bx
            >>> bx.Graph('net').parent is None
            True
        """
        return self._parent

    @property
    def root(self) -> "Graph":
        """The root of this node's tree.

        Example:
            >>> import blox as bx
            >>> g = bx.Graph('net')
            >>> g.child('a').child('b').root is g
            True
        """
        node = self
        while node._parent is not None:
            node = node._parent
        return node

    @property
    def module(self) -> "Module | None":
        """The module bound to this node, or `None`.

        Example:
            >>> import blox as bx
            >>> g = bx.Graph('net')
            >>> lin = bx.Linear(g.child('l'), 2, rng=None)
            >>> g.child('x').module is None, lin.graph.module is lin
            (True, True)
        """
        return self._module

    @property
    def children(self) -> dict[str, "Graph"]:
        """A copy of this node's children, by name, in creation order.

        Example:
            >>> import blox as bx
            >>> g = bx.Graph('net')
            >>> _ = g.child('a'), g.child('b')
            >>> list(g.children)
            ['a', 'b']
        """
        return dict(self._children)

    def walk(self) -> Iterator[tuple[Path, "Module"]]:
        """Yields `(path, module)` for every bound descendant, depth first.

        The node itself is not included.

        Example:
            >>> import blox as bx
            >>> g = bx.Graph('net')
            >>> _ = bx.Linear(g / 'l1', 4, rng=None)
            >>> _ = bx.Linear(g / 'l2', 2, rng=None)
            >>> [path for path, _ in g.walk()]
            [('net', 'l1'), ('net', 'l2')]
        """
        for node in self._children.values():
            if node._module is not None:
                yield node.path, node._module
            yield from node.walk()

    def _bind(self, module: "Module") -> None:
        kind = type(module).__name__
        where = f"{kind} at {'/'.join(self.path)!r}"
        if self._parent is None:
            raise ValueError(
                f"{where}: expected a child graph node, got the root node "
                f"{self.name!r}. Fix: pass graph.child('name') (or graph / 'name')."
            )
        if self._module is not None:
            raise ValueError(
                f"{where}: expected an unbound graph node, got one already bound "
                f"to {type(self._module).__name__}. Fix: give each module its own "
                "node, e.g. graph.child('other_name'); to share weights, pass the "
                "existing module instead of building a second one."
            )
        self._module = module

    def __repr__(self) -> str:
        path = "/".join(self.path)
        if not self._children:
            return f"Graph({path!r})"
        return f"Graph({path!r}, children={len(self._children)})"
