"""Every public layer is in a descriptor table or exempt with a reason (Haiku's
`descriptors_test.test_coverage`), and the eager layers run through the core table.
"""

import inspect

import jax
import numpy as np
import pytest

import blox as bx
from blox import core
from blox import eager as nn
from tests.core import descriptors as core_table

from .descriptors import EAGER, EXEMPT_CORE, EXEMPT_EAGER

BY_NAME = {desc.name: desc for desc in core_table.DESCRIPTORS}


def _public_classes(package, base):
    return {
        name
        for name in package.__all__
        if inspect.isclass(getattr(package, name)) and issubclass(getattr(package, name), base)
    }


def _described_core():
    names = set()
    for desc in core_table.DESCRIPTORS:
        graph = bx.Graph(core_table.ROOT)
        module = desc.build(graph, bx.Rng(graph / "rng"))
        if module is None:  # a pooling function: named by the descriptor
            pools = ("max_pool", "min_pool", "avg_pool", "sum_pool")
            names.add(next((f for f in pools if f in desc.name), "pool"))
        else:
            names.add(type(module).__name__)
    return names


def test_every_public_core_layer_is_described_or_exempt():
    layers = _public_classes(core, core.Module) | {n for n in core.__all__ if n.endswith("_pool")}
    missing = sorted(layers - _described_core() - set(EXEMPT_CORE))
    assert missing == [], f"add a Descriptor to tests/core/descriptors.py for {missing}"
    assert sorted(set(EXEMPT_CORE) - layers) == []  # no stale exemptions


def test_every_public_eager_layer_has_an_eager_row_or_is_exempt():
    layers = _public_classes(nn, nn.Module)
    described = {type(build()).__name__ for build, _ in EAGER.values()}
    missing = sorted(layers - described - set(EXEMPT_EAGER))
    assert missing == [], f"add a row to tests/eager/descriptors.py for {missing}"
    assert sorted(set(EAGER) - set(BY_NAME)) == []  # every row names a core descriptor


@pytest.mark.parametrize("name", sorted(EAGER))
def test_eager_layer_equals_its_core_descriptor(name):
    desc = BY_NAME[name]
    build, training = EAGER[name]
    layer = build().train(training)
    x = core_table.make_input(desc)
    # Golden parameters: the eager layer holds the core descriptor's entries.
    golden = {
        ".".join(path[2:]): shape
        for path, shape in desc.params.items()
        if path[1] != "rng" and len(path) > 2
    }
    ours = {n: tuple(v.shape) for n, v in layer.state_dict().items() if not n.startswith("rng.")}
    assert ours == golden
    # Both compiled, so the eager call must equal the core call bit for bit.
    expected, _ = jax.jit(lambda p, x: desc.call(layer.core_layer, p, x))(layer.core_params(), x)
    got = layer(x)
    expected_leaves = jax.tree.leaves(expected)
    got_leaves = jax.tree.leaves(got)
    assert len(got_leaves) == len(expected_leaves)
    for a, b in zip(got_leaves, expected_leaves, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
