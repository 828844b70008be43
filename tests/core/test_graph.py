"""Graph: names, nesting, navigation, and binding of modules to nodes."""

import jax
import jax.numpy as jnp
import pytest

import blox as bx


def test_root_node_has_name_path_and_no_parent():
    g = bx.Graph("net")
    assert g.name == "net"
    assert g.path == ("net",)
    assert g.parent is None
    assert g.root is g
    assert g.module is None
    assert g.children == {}


def test_child_and_slash_build_paths_from_the_root():
    net = bx.Graph("net")
    enc = net.child("enc")
    l1 = enc / "l1"
    assert enc.name == "enc"
    assert enc.path == ("net", "enc")
    assert l1.path == ("net", "enc", "l1")
    assert l1.parent is enc
    assert enc.parent is net
    assert l1.root is net
    assert enc.root is net


def test_slash_and_child_share_one_namespace():
    net = bx.Graph("net")
    _ = net / "a"
    with pytest.raises(ValueError, match=r"Graph at 'net': .*'a' which already exists"):
        net.child("a")


def test_children_in_creation_order_and_is_a_copy():
    net = bx.Graph("net")
    b = net.child("b")
    a = net.child("a")
    children = net.children
    assert list(children) == ["b", "a"]
    assert children["b"] is b
    assert children["a"] is a
    children.pop("b")
    assert list(net.children) == ["b", "a"]


def test_module_property_reports_the_bound_module():
    net = bx.Graph("net")
    node = net / "lin"
    assert node.module is None
    lin = bx.Linear(node, 3)
    assert node.module is lin
    assert lin.graph is node
    assert net.module is None


def test_walk_is_depth_first_and_excludes_self():
    net = bx.Graph("net")
    enc = net / "enc"  # unbound: not yielded, but its children are
    l1 = bx.Linear(enc / "l1", 2)
    l2 = bx.Linear(enc / "l2", 2)
    dec = bx.Linear(net / "dec", 2)
    rng = bx.Rng(net / "rng")
    walked = list(net.walk())
    assert [path for path, _ in walked] == [
        ("net", "enc", "l1"),
        ("net", "enc", "l2"),
        ("net", "dec"),
        ("net", "rng"),
    ]
    assert [m for _, m in walked] == [l1, l2, dec, rng]
    # Starting below the root: only that subtree, and never the node itself.
    assert [path for path, _ in enc.walk()] == [("net", "enc", "l1"), ("net", "enc", "l2")]
    assert list(l1.graph.walk()) == []


def test_walk_visits_a_bound_node_before_its_children():
    net = bx.Graph("net")
    lstm = bx.LSTM(net / "lstm", 4)
    gates = lstm.gates
    assert list(net.walk()) == [(("net", "lstm"), lstm), (("net", "lstm", "gates"), gates)]


def test_duplicate_child_name_raises_value_error_with_path():
    net = bx.Graph("net")
    enc = net / "enc"
    enc.child("l1")
    with pytest.raises(
        ValueError,
        match=r"Graph at 'net/enc': expected a new child name, got 'l1' which already "
        r"exists\. Fix: .*'l1_2'",
    ):
        enc.child("l1")
    with pytest.raises(ValueError, match=r"Graph at 'net/enc': .*'l1' which already exists"):
        _ = enc / "l1"


@pytest.mark.parametrize("bad", ["", "a/b", "/", "a/"])
def test_empty_name_or_slash_in_child_name_raises_value_error(bad):
    net = bx.Graph("net")
    with pytest.raises(
        ValueError,
        match=rf"Graph at 'net': expected a non-empty node name without '/', got {bad!r}\. "
        r"Fix: .*graph\.child\('a'\)\.child\('b'\)",
    ):
        net.child(bad)
    assert net.children == {}


@pytest.mark.parametrize("bad", ["", "a/b"])
def test_empty_name_or_slash_in_root_name_raises_value_error(bad):
    with pytest.raises(
        ValueError, match=rf"Graph: expected a non-empty node name without '/', got {bad!r}"
    ):
        bx.Graph(bad)


@pytest.mark.parametrize("bad", [1, None, ("a",), b"a"])
def test_non_str_name_raises_type_error(bad):
    net = bx.Graph("net")
    kind = type(bad).__name__
    with pytest.raises(
        TypeError,
        match=rf"Graph at 'net': expected a node name of type str, got {kind} .*Fix: pass a name",
    ):
        net.child(bad)
    with pytest.raises(TypeError, match=rf"Graph: expected a node name of type str, got {kind}"):
        bx.Graph(bad)


def test_module_bound_twice_to_one_node_raises_value_error():
    net = bx.Graph("net")
    node = net / "lin"
    first = bx.Linear(node, 3)
    with pytest.raises(
        ValueError,
        match=r"Rng at 'net/lin': expected an unbound graph node, got one already bound "
        r"to Linear\. Fix: give each module its own node",
    ):
        bx.Rng(node)
    assert node.module is first


def test_module_bound_to_root_raises_value_error():
    net = bx.Graph("net")
    with pytest.raises(
        ValueError,
        match=r"Linear at 'net': expected a child graph node, got the root node 'net'\. "
        r"Fix: pass graph\.child\('name'\)",
    ):
        bx.Linear(net, 3)
    assert net.module is None


def test_module_given_a_non_graph_raises_type_error():
    with pytest.raises(
        TypeError, match=r"Linear: expected a bx\.Graph node as the first argument, got str"
    ):
        bx.Linear("net/lin", 3)


def test_repr_shows_path_and_child_count():
    net = bx.Graph("net")
    enc = net / "enc"
    enc / "a"
    enc / "b"
    assert repr(net / "leaf") == "Graph('net/leaf')"
    assert repr(enc) == "Graph('net/enc', children=2)"


def test_graph_and_modules_hold_no_arrays():
    net = bx.Graph("net")
    rng = bx.Rng(net / "rng")
    lin = bx.Linear(net / "lin", 2, rng=rng)
    params = rng.seed(bx.Params(), seed=0)
    _, params = lin(params, jnp.ones((1, 3)))
    assert len(params) == 4

    def nodes(node):
        yield node
        for child in node.children.values():
            yield from nodes(child)

    for node in nodes(net):
        slots = [getattr(node, name) for name in type(node).__slots__]
        assert not any(isinstance(v, jax.Array) for v in slots)
    for module in (rng, lin):
        assert not any(isinstance(v, jax.Array) for v in vars(module).values())
