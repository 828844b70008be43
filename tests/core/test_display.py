"""display: the text tree, its numbers checked against numpy, and the notebook paths."""

import functools
import io
import re
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import blox as bx

ONES = jax.nn.initializers.ones
UNITS = ("├── ", "└── ", "│   ", "    ")
KIND = re.compile(r"^\S+\[[\d, ]*\]$")


def text_of(graphs, params=None):
    buffer = io.StringIO()
    assert bx.display(graphs, params, file=buffer) is None
    return buffer.getvalue()


def parse(text):
    """Reads the tree back: {path: module line} and {path: parameter columns}."""
    nodes, leaves, stack = {}, {}, []
    for line in text.splitlines():
        depth = 0
        while line[4 * depth : 4 * depth + 4] in UNITS:
            depth += 1
        content = line[4 * depth :]
        if depth == 0:
            head = content.split("  ")[0]
            stack = [() if head == "params under no displayed graph" else tuple(head.split("/"))]
            continue
        fields = re.split(r" {2,}", content.strip())
        parent = stack[depth - 1]
        if len(fields) > 1 and KIND.match(fields[1]):
            leaves[parent + tuple(fields[0].split("/"))] = fields
        else:
            path = parent + (fields[0].split(":")[0],)
            stack = stack[:depth] + [path]
            nodes[path] = content
    return nodes, leaves


def expected_bytes(n):
    if n < 1024:
        return f"{n} B"
    assert n < 1024**2
    return f"{n / 1024:.1f} KiB"


def expected_stats(value):
    """The statistics column, computed here with numpy alone."""
    if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
        return "impl=threefry2x32"
    array = np.asarray(value)
    if array.size == 1:
        item = array.reshape(-1)[0]
        if np.issubdtype(array.dtype, np.integer) or array.dtype == bool:
            return f"= {int(item)}"
        return f"= {float(item) + 0.0:.4g}"
    if array.dtype == bool:
        return f"true={int(np.count_nonzero(array))}"
    if np.issubdtype(array.dtype, np.integer):
        return f"min={array.min()} max={array.max()}"
    data = array.astype(np.float64)
    fmt = "{:.4g}".format
    return (
        f"mean={fmt(data.mean() + 0.0)} std={fmt(data.std() + 0.0)} "
        f"min={fmt(data.min() + 0.0)} max={fmt(data.max() + 0.0)}"
    )


def nbytes(value):
    if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(value).nbytes
    return np.asarray(value).nbytes


def expected_totals(entries):
    """The header's totals over `(value, trainable)` pairs."""
    entries = list(entries)

    def plural(n, word):
        return f"{n:,} {word}{'' if n == 1 else 's'}"

    count = sum(int(np.size(v)) for v, _ in entries)
    size = sum(nbytes(v) for v, _ in entries)
    t_count = sum(int(np.size(v)) for v, t in entries if t)
    t_size = sum(nbytes(v) for v, t in entries if t)
    return (
        f"{plural(count, 'param')} in {plural(len(entries), 'array')}, {expected_bytes(size)}; "
        f"trainable: {plural(t_count, 'param')}, {expected_bytes(t_size)}; "
        f"frozen: {plural(count - t_count, 'param')}, {expected_bytes(size - t_size)}"
    )


def mlp_model():
    """An MLP with BatchNorm, one Rng shared by both Linears, all in a Sequential."""
    net = bx.Graph("net")
    rng = bx.Rng(net / "rng")
    l1 = bx.Linear(net / "l1", 16, rng=rng)
    bn = bx.BatchNorm(net / "bn", momentum=0.99)
    l2 = bx.Linear(net / "l2", 2, rng=rng, use_bias=False)
    mlp = bx.Sequential(net / "mlp", [l1, bn, jax.nn.relu, l2])
    params = rng.seed(bx.Params(), seed=0)
    _, params = mlp(params, jnp.arange(12.0).reshape(4, 3))
    return net, params


# -- structure only --------------------------------------------------------------------------------


def test_structure_only_lists_every_module_with_type_and_arguments():
    net = bx.Graph("net")
    rng = bx.Rng(net / "rng")
    enc = net / "enc"
    bx.Linear(enc / "l1", 16, rng=rng, use_bias=False)
    bx.BatchNorm(enc / "bn", momentum=0.5, epsilon=1e-3)
    bx.LSTM(net / "lstm", 8, rng=rng)
    bx.Dropout(net / "drop", 0.25, rng=rng)
    text = text_of(net)
    assert text == (
        "net\n"
        "├── rng: Rng()  [used by net/enc/l1, net/lstm, net/lstm/gates, +1 more]\n"
        "├── enc\n"
        "│   ├── l1: Linear(output_size=16, rng=-> net/rng, use_bias=False)\n"
        "│   └── bn: BatchNorm(momentum=0.5, epsilon=0.001)\n"
        "├── lstm: LSTM(hidden_size=8, rng=-> net/rng)\n"
        "│   └── gates: Linear(output_size=32, rng=-> net/rng)\n"
        "└── drop: Dropout(rate=0.25, rng=-> net/rng)\n"
    )
    nodes, leaves = parse(text)
    assert set(nodes) == {path for path, _ in net.walk()} | {("net", "enc")}
    assert leaves == {}


def test_structure_only_is_the_default_and_prints_to_stdout(capsys):
    net, _ = mlp_model()
    bx.display(net)
    out = capsys.readouterr().out
    assert out == text_of(net)
    assert "float32" not in out and "params" not in out


def test_arguments_are_kept_short():
    class Custom(bx.Module):
        def __init__(self, graph, size, *, note="n" * 100, table=None, fn=None, init=ONES):
            super().__init__(graph)

    net = bx.Graph("net")
    lin = bx.Linear(net / "lin", 3, kernel_init=jax.nn.initializers.lecun_normal())
    Custom(
        net / "c",
        4,
        note="x" * 100,
        table=list(range(20)),
        fn=functools.partial(jnp.add, 1),
        init=ONES,
    )
    bx.Sequential(net / "seq", [lin, jax.nn.gelu])
    nodes, _ = parse(text_of(net))
    assert nodes[("net", "lin")] == (
        "lin: Linear(output_size=3, kernel_init=variance_scaling.init)  [used by net/seq]"
    )
    custom = nodes[("net", "c")]
    assert f"note='{'x' * 36}..." in custom
    assert "table=[0, 1, 2, 3, 4, 5, 6, 7, ... +12]" in custom
    assert "fn=partial(add, ...)" in custom
    assert "init=" not in custom  # left at its default
    assert nodes[("net", "seq")] == "seq: Sequential(layers=[-> net/lin, gelu])"


# -- with params ---------------------------------------------------------------------------------


def test_every_param_row_matches_numpy():
    net, params = mlp_model()
    _, leaves = parse(text_of(net, params))
    assert set(leaves) == set(params.keys())
    for path, param in params.items():
        value = param.value
        label, kind, count, size, stats, *flags = leaves[path]
        assert label == path[-1]
        assert kind == f"{value.dtype}[{', '.join(str(n) for n in value.shape)}]"
        assert count == f"{int(np.size(value)):,}"
        assert size == expected_bytes(nbytes(value))
        assert stats == expected_stats(value), path
        assert flags == ([] if param.trainable else ["[frozen]"]), path


def test_full_text_of_a_small_mlp():
    net = bx.Graph("net")
    rng = bx.Rng(net / "rng")
    l1 = bx.Linear(net / "l1", 2, rng=rng, kernel_init=ONES)
    bn = bx.BatchNorm(net / "bn")
    mlp = bx.Sequential(net / "mlp", [l1, bn, jax.nn.relu])
    params = rng.seed(bx.Params(), seed=0)
    _, params = mlp(params, jnp.array([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]]))
    assert text_of(net, params) == (
        "net  (18 params in 8 arrays, 76 B; trainable: 12 params, 48 B; "
        "frozen: 6 params, 28 B)\n"
        "├── rng: Rng()  (2 params, 12 B, frozen)  [used by net/l1]\n"
        "│   ├── seed     key<fry>[]  1  8 B  impl=threefry2x32  [frozen]\n"
        "│   └── counter  uint32[]    1  4 B  = 2                [frozen]\n"
        "├── l1: Linear(output_size=2, rng=-> net/rng, kernel_init=ones)  (8 params, 32 B)"
        "  [used by net/mlp]\n"
        "│   ├── kernel  float32[3, 2]  6  24 B  mean=1 std=0 min=1 max=1\n"
        "│   └── bias    float32[2]     2   8 B  mean=0 std=0 min=0 max=0\n"
        "├── bn: BatchNorm()  (8 params, 32 B, 4 frozen)  [used by net/mlp]\n"
        "│   ├── running_mean  float32[2]  2  8 B  mean=0.9 std=0 min=0.9 max=0.9  [frozen]\n"
        "│   ├── running_var   float32[2]  2  8 B  mean=1.8 std=0 min=1.8 max=1.8  [frozen]\n"
        "│   ├── scale         float32[2]  2  8 B  mean=1 std=0 min=1 max=1\n"
        "│   └── bias          float32[2]  2  8 B  mean=0 std=0 min=0 max=0\n"
        "└── mlp: Sequential(layers=[-> net/l1, -> net/bn, relu])\n"
    )


def test_totals_and_subtotals():
    net = bx.Graph("net")
    rng = bx.Rng(net / "rng")
    big = bx.Linear(net / "big", 64, rng=rng)
    _, params = big(rng.seed(bx.Params(), seed=1), jnp.ones((2, 32)))
    text = text_of(net, params)
    header = text.splitlines()[0]
    entries = [(p.value, p.trainable) for p in params.values()]
    assert header == f"net  ({expected_totals(entries)})"
    assert header.startswith("net  (2,114 params in 4 arrays, 8.3 KiB; trainable: 2,112 params")
    nodes, leaves = parse(text)
    assert leaves[("net", "big", "kernel")][2] == "2,048"
    assert (
        nodes[("net", "big")]
        == "big: Linear(output_size=64, rng=-> net/rng)  (2,112 params, 8.2 KiB)"
    )
    assert nodes[("net", "rng")] == "rng: Rng()  (2 params, 12 B, frozen)  [used by net/big]"


def test_integer_scalar_bool_key_and_nonfinite_statistics():
    net = bx.Graph("net")
    bx.Linear(net / "lin", 2)
    values = {
        "ints": jnp.array([[3, -1], [7, 2]], jnp.int32),
        "flags": jnp.array([True, False, True]),
        "scalar": jnp.float32(-0.5),
        "one": jnp.ones((1, 1), jnp.int8),
        "keys": jax.random.split(jax.random.key(0), 3),
        "half": jnp.linspace(-1.0, 2.0, 7, dtype=jnp.bfloat16),
        "bad": jnp.array([1.0, jnp.nan, 3.0, jnp.inf]),
    }
    params = bx.Params.from_dict({("net", "lin", k): v for k, v in values.items()})
    _, leaves = parse(text_of(net, params))
    for name, value in values.items():
        row = leaves[("net", "lin", name)]
        assert row[1] == f"{value.dtype}[{', '.join(str(n) for n in value.shape)}]"
        assert row[3] == expected_bytes(nbytes(value))
        if name != "bad":
            assert row[4] == expected_stats(value), name
    assert leaves[("net", "lin", "ints")][4] == "min=-1 max=7"
    assert leaves[("net", "lin", "keys")][2:5] == ["3", "24 B", "impl=threefry2x32"]
    assert leaves[("net", "lin", "bad")][4] == "mean=nan std=nan min=nan max=nan nonfinite=2"


def test_complex_values_and_sharding_metadata():
    net = bx.Graph("net")
    lin = bx.Linear(net / "lin", 2, kernel_init=ONES, kernel_metadata={"sharding": (None, "model")})
    _, params = lin(bx.Params(), jnp.ones(3))
    z = jnp.array([3 + 4j, 0j], jnp.complex64)
    params = params.merge(bx.Params.from_dict({("net", "lin", "z"): z}))
    _, leaves = parse(text_of(net, params))
    assert leaves[("net", "lin", "kernel")][-1] == "sharding=(None, 'model')"
    assert leaves[("net", "lin", "z")][1:] == [
        "complex64[2]",
        "2",
        "16 B",
        "abs_mean=2.5 abs_max=5",
    ]


def test_abstract_and_traced_values_show_shapes_without_statistics():
    net, params = mlp_model()
    abstract = jax.eval_shape(lambda: params)
    _, leaves = parse(text_of(net, abstract))
    assert leaves[("net", "l1", "kernel")] == ["kernel", "float32[3, 16]", "48", "192 B"]
    seen = []

    @jax.jit
    def inside(p):
        seen.append(text_of(net, p))
        return p

    inside(params)
    _, traced = parse(seen[0])
    assert traced[("net", "bn", "scale")] == ["scale", "float32[16]", "16", "64 B"]


def test_params_matching_no_module_are_still_shown():
    net, params = mlp_model()
    extra = bx.Params.from_dict(
        {
            ("net", "loose", "w"): jnp.ones(3),
            ("net", "l1", "sub", "v"): jnp.zeros(2),
            ("elsewhere", "w"): bx.Param(jnp.arange(4), trainable=False),
        }
    )
    text = text_of(net, params.merge(extra))
    _, leaves = parse(text)
    assert leaves[("net", "loose", "w")][-1] == "[no module]"
    assert leaves[("net", "l1", "sub", "v")][-1] == "[no module]"
    assert leaves[("elsewhere", "w")] == [
        "elsewhere/w",
        "int32[4]",
        "4",
        "16 B",
        "min=0 max=3",
        "[frozen]",
    ]
    lines = text.splitlines()
    assert lines[-3].startswith("params under no displayed graph  (4 params in 1 array, 16 B;")
    everything = [(p.value, p.trainable) for p in params.merge(extra).values()]
    assert lines[-1] == f"total  ({expected_totals(everything)})"


def test_shared_modules_are_references_not_copies():
    net, params = mlp_model()
    text = text_of(net, params)
    nodes, leaves = parse(text)
    assert sum("Rng(" in line for line in text.splitlines()) == 1
    assert sum(line.split("── ")[-1].startswith("seed ") for line in text.splitlines()) == 1
    assert sum("Linear(" in line for line in text.splitlines()) == 2
    assert nodes[("net", "rng")].endswith("[used by net/l1, net/l2]")
    assert "rng=-> net/rng" in nodes[("net", "l1")]
    assert "rng=-> net/rng" in nodes[("net", "l2")]
    assert nodes[("net", "mlp")] == (
        "mlp: Sequential(layers=[-> net/l1, -> net/bn, relu, -> net/l2])"
    )
    # The container's subtree holds no params of its own: nothing counted twice.
    assert [p for p in leaves if p[:2] == ("net", "mlp")] == []
    header_count = int(text.split("  (")[1].split(" params")[0].replace(",", ""))
    assert header_count == sum(int(np.size(p.value)) for p in params.values())


def test_several_roots():
    a, params_a = mlp_model()
    b = bx.Graph("other")
    rng_b = bx.Rng(b / "rng")
    lstm = bx.LSTM(b / "lstm", 4, rng=rng_b)
    (_, _), params_b = lstm.apply(rng_b.seed(bx.Params(), seed=3), jnp.ones((2, 3, 5)))
    params = params_a.merge(params_b)
    text = text_of((a, b), params)
    nodes, leaves = parse(text)
    assert set(leaves) == set(params.keys())
    heads = [line for line in text.splitlines() if not line.startswith(UNITS)]
    assert heads == [
        f"net  ({expected_totals((p.value, p.trainable) for p in params_a.values())})",
        f"other  ({expected_totals((p.value, p.trainable) for p in params_b.values())})",
        f"total  ({expected_totals((p.value, p.trainable) for p in params.values())})",
    ]
    assert nodes[("other", "lstm", "gates")].startswith("gates: Linear(output_size=16")
    assert text_of([a, b]) == text_of((a, b))


def test_a_subtree_can_be_shown():
    net, params = mlp_model()
    text = text_of(net / "extra", params)
    assert text.splitlines()[0].startswith("net/extra  (0 params in 0 arrays, 0 B;")
    _, leaves = parse(text)
    assert set(leaves) == set(params.keys())  # everything lands in the closing section


# -- errors --------------------------------------------------------------------------------------


def test_bad_arguments():
    net, params = mlp_model()
    with pytest.raises(TypeError, match=r"expected a bx.Graph or a tuple of them, got int\. Fix"):
        bx.display(3)
    with pytest.raises(TypeError, match=r"got the module Linear at 'net/l1'.*module\.graph\.root"):
        bx.display(net.children["l1"].module, params)
    with pytest.raises(TypeError, match=r"got Params\. Fix: put the graph first"):
        bx.display(params, net)
    with pytest.raises(TypeError, match=r"tuple of bx.Graph nodes, got str at index 1"):
        bx.display((net, "other"))
    with pytest.raises(ValueError, match=r"expected at least one bx.Graph, got an empty tuple"):
        bx.display(())
    with pytest.raises(TypeError, match=r"params to be a bx.Params or None, got dict"):
        bx.display(net, {})
    with pytest.raises(TypeError, match=r"got Graph\..*display\(\(g1, g2\), params\)"):
        bx.display(net, bx.Graph("other"))


# -- notebook and terminal -------------------------------------------------------------------------


@pytest.fixture
def kernel(monkeypatch):
    """Makes `display` believe it runs in a Jupyter kernel."""
    ipython = pytest.importorskip("IPython")
    shell = types.SimpleNamespace(kernel=object())
    monkeypatch.setattr(ipython, "get_ipython", lambda: shell)


def test_notebook_renders_with_treescope(kernel, monkeypatch, capsys):
    treescope = pytest.importorskip("treescope")
    shown = []
    monkeypatch.setattr(treescope, "show", lambda *args, **kw: shown.append(args))
    net, params = mlp_model()
    assert bx.display(net, params) is None
    assert capsys.readouterr().out == ""
    assert len(shown) == 1 and len(shown[0]) == 1
    rendered = treescope.render_to_text(shown[0][0])
    for expected in (
        "name=net",
        "rng=Rng(",
        "kernel=Param(",
        "float32[3, 16]  48  192 B",
        "float32[16, 2]",
        "key<fry>[]",
        "rng=-> net/rng",
        "layers=[-> net/l1, -> net/bn, jax.nn.relu, -> net/l2]",
        "momentum=0.99",
        "use_bias=True",  # the interactive view also lists defaults
        "[frozen]",
        f"totals={expected_totals((p.value, p.trainable) for p in params.values())}",
    ):
        assert expected in rendered, expected


def test_notebook_treescope_sections_for_several_roots(kernel, monkeypatch):
    treescope = pytest.importorskip("treescope")
    shown = []
    monkeypatch.setattr(treescope, "show", lambda *args, **kw: shown.extend(args))
    net, params = mlp_model()
    other = bx.Graph("other")
    stray = bx.Params.from_dict({("stray",): jnp.arange(3)})
    bx.display((net, other), params.merge(stray))
    assert len(shown) == 4
    assert "name=other" in treescope.render_to_text(shown[1])
    assert "stray=Param(" in treescope.render_to_text(shown[2])
    assert shown[3].startswith("total  (")
    shown.clear()
    bx.display(net)  # structure only
    rendered = treescope.render_to_text(shown[0])
    assert "output_size=16" in rendered and "totals" not in rendered


def test_notebook_without_treescope_prints_text_and_install_hint(kernel, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "treescope", None)  # import treescope -> ImportError
    net, params = mlp_model()
    bx.display(net, params)
    out = capsys.readouterr().out
    assert out.startswith(text_of(net, params))
    hint = out[len(text_of(net, params)) :]
    assert hint.count("\n") == 1
    assert "pip install 'blox[display]'" in hint


def test_file_argument_writes_text_even_in_a_notebook(kernel, monkeypatch):
    treescope = pytest.importorskip("treescope")
    monkeypatch.setattr(treescope, "show", lambda *a, **k: pytest.fail("treescope used"))
    net, params = mlp_model()
    buffer = io.StringIO()
    bx.display(net, params, file=buffer)
    assert buffer.getvalue().startswith("net  (")


def test_terminal_ipython_without_kernel_prints_text(monkeypatch, capsys):
    ipython = pytest.importorskip("IPython")
    monkeypatch.setattr(ipython, "get_ipython", lambda: types.SimpleNamespace())
    net, params = mlp_model()
    bx.display(net, params)
    assert capsys.readouterr().out == text_of(net, params)


def test_treescope_is_not_imported_with_blox():
    import subprocess

    code = "import sys, blox; assert 'treescope' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
