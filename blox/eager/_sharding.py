"""`nn.shard`: places an eager model's arrays on a device mesh, in place.

The eager twin of `bx.shard`. A layer built with `<param>_sharding=names`
(for example `nn.Linear(8, 32, kernel_sharding=('embed', 'mlp'))`) keeps those
logical axis names in the param's metadata, exactly as the core layer built
with `<param>_metadata={'sharding': names}` does; `nn.shard` resolves them
with the same rules and function as `bx.shardings`, so the two APIs place a
model identically. Buffers and RNG state carry no names and are replicated.
"""

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from blox.core import Param, internal

from . import _module  # partly initialised when _dispatch imports this file
from ._pytree import _touch


def shard(model: Any, mesh: Mesh, rules: Any = None) -> Any:
    """Places every array of `model` (params, buffers, RNG state) on `mesh`, in place.

    Each param annotated with `<param>_sharding` logical axis names (one per
    dimension) is split as `rules` map those names to mesh axes; everything
    else is replicated. `model` may also be a pytree holding modules, such as
    an optax state (whose moments are model-shaped, so they land where their
    params did); its bare arrays (a step count) are replicated, and the placed
    tree is returned. `nn.filter_jit` keeps these placements for what it
    writes back and for argument-shaped results, so a sharded training step
    compiles once.

    Args:
        model: The eager model, or a pytree holding modules and arrays.
        mesh: The device mesh, e.g. `jax.make_mesh((8,), ('data',))`.
        rules: `(logical name, mesh axis)` pairs or a dict, as in
            `bx.shardings`; `None` reads the names as mesh axes.

    Returns:
        `model` itself for a module (for chaining); the placed tree otherwise.

    Raises:
        TypeError: If `mesh` is not a `Mesh`.
        ValueError: As `bx.shardings` (a name without a rule, an unknown
            mesh axis, a dimension that does not split evenly).

    Example:
        >>> import jax
        >>> from blox import eager as nn
        >>> model = nn.Sequential(nn.Linear(4, 8, kernel_sharding=('embed', 'mlp')), nn.Dropout(0.1))
        >>> mesh = jax.make_mesh((1,), ('model',))
        >>> _ = nn.shard(model, mesh, [('embed', None), ('mlp', 'model')])
        >>> model[0].kernel.sharding.spec, model[0].bias.sharding.spec
        (P(None, 'model'), P())
    """
    if not isinstance(mesh, Mesh):
        raise TypeError(
            f"nn.shard: expected a jax.sharding.Mesh, got {type(mesh).__name__}. Fix: "
            "build one with jax.make_mesh((8,), ('data',))."
        )
    replicated = NamedSharding(mesh, PartitionSpec())
    placed = []

    def visit(node: Any) -> Any:
        if isinstance(node, _module.Module):
            for name, owner, attr in node._named_arrays():
                value = owner.__dict__[attr]
                if value is None:  # a trainable-only copy (optimiser moments)
                    continue
                names = owner.__dict__.get("_blox_metadata", {}).get(attr, {}).get("sharding")
                param = Param(value, metadata={"sharding": names} if names else None)
                sharding = internal.sharding_of(f"nn.shard: {name}", param, mesh, rules)
                placed.append((owner, attr, internal.place(value, sharding)))
            return node
        if isinstance(node, jax.Array | np.ndarray):
            return internal.place(node, replicated)
        return node

    out = jax.tree.map(visit, model, is_leaf=lambda node: isinstance(node, _module.Module))
    # Assigned only once every array is placed: an error leaves the model as it was.
    for owner, attr, value in placed:
        owner.__dict__[attr] = value
    _touch()
    return out


# -- used by the compiled-call dispatcher (`_module._Dispatcher`) -----------------------------
#
# XLA chooses the placement of a compiled program's outputs by propagation; it
# may, for instance, split a replicated BatchNorm scale along the model axis of
# the Linear before it. State written back (and a returned model) would then
# sit elsewhere than `nn.shard` put it, and the next call, seeing new input
# shardings, would compile again. So a step whose inputs live on a mesh pins
# what it writes back, and every returned argument-shaped value (the updated
# model, the optimiser state), to the placements those inputs had.


def _mesh_shardings(leaves: list[Any]) -> list[Any]:
    """Each leaf's sharding when it spans several devices, else `None`."""
    out = []
    for leaf in leaves:
        sharding = getattr(leaf, "sharding", None)
        out.append(
            sharding if isinstance(sharding, NamedSharding) and sharding.num_devices > 1 else None
        )
    return out


def placements(root: Any, leaves: list[Any], positions: list[int]) -> Any:
    """What a compiled call pins, or `None` when no input spans several devices.

    Returns `(by_dyn, by_leaf, arguments)`: `(index among the array leaves,
    sharding)` pairs checked on every call, the sharding of each flat leaf,
    and `(treedef, shapes, shardings)` of each argument that is a pytree
    rather than one array.
    """
    by_leaf = _mesh_shardings(leaves)
    if not any(by_leaf):
        return None
    by_dyn = tuple((k, by_leaf[p]) for k, p in enumerate(positions) if by_leaf[p] is not None)
    lead, args, kwargs = root
    arguments = []
    for argument in (*lead, *args, *kwargs.values()):
        arg_leaves, arg_def = jax.tree.flatten(argument)
        if arg_def.num_nodes > 1:
            shapes = tuple(np.shape(leaf) for leaf in arg_leaves)
            arguments.append((arg_def, shapes, _mesh_shardings(arg_leaves)))
    return by_dyn, by_leaf, arguments


def moved(placed: Any, dyn: list[Any]) -> bool:
    """Whether an input now sits elsewhere than when the call was compiled."""
    for k, sharding in placed[0]:
        now = dyn[k].sharding
        if now != sharding and not now.is_equivalent_to(sharding, dyn[k].ndim):
            return True
    return False


def pin(placed: Any, changed: list[int], state: list[Any], out: Any) -> tuple[list[Any], Any]:
    """`state` (the leaves at `changed`) and `out` constrained to the inputs' placements."""
    by_leaf, arguments = placed[1], placed[2]
    state = [_constrain(value, by_leaf[i]) for i, value in zip(changed, state)]

    def match(value: Any) -> Any:
        value_leaves, value_def = jax.tree.flatten(value)
        shapes = tuple(np.shape(leaf) for leaf in value_leaves)
        for arg_def, arg_shapes, shardings in arguments:
            if value_def == arg_def and shapes == arg_shapes:
                pinned = [_constrain(v, s) for v, s in zip(value_leaves, shardings)]
                return jax.tree.unflatten(value_def, pinned)
        return value

    if isinstance(out, tuple | list) and not hasattr(out, "_fields"):
        out = type(out)(match(item) for item in out)
    else:
        out = match(out)
    return state, out


def _constrain(value: Any, sharding: Any) -> Any:
    if sharding is None or not isinstance(value, jax.Array):
        return value
    return jax.lax.with_sharding_constraint(value, sharding)
