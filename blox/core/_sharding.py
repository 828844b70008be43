"""Logical axis names to mesh shardings: where each parameter lives on a device mesh.

A layer records, in each `Param`'s metadata, one *logical* axis name (or
`None`) per dimension, e.g. ``{'sharding': ('embed', 'mlp')}`` for a Linear
kernel. Rules, as in flax's logical axis rules, say which mesh axis each
logical name is split over; `shardings` turns the two into the
`jax.sharding.NamedSharding` of every parameter, and `shard` places the
parameters there. Everything after that (compiling a sharded step,
collectives, several processes) is JAX's own machinery.

A logical name is resolved per parameter: the first rule for it whose mesh
axes no earlier dimension of the same parameter uses wins; when every rule's
axes are taken, that dimension is replicated (flax's semantics, which lets one
write fallbacks such as ``[('batch', 'data'), ('batch', None)]``). A logical
name without any rule is an error rather than a silent replication, so a typo
cannot leave a large weight copied onto every device.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ._params import Param, Params, _path_str

Rules = Sequence[tuple[str, str | tuple[str, ...] | None]] | Mapping[str, Any]


def _rule_pairs(where: str, rules: Any) -> list[tuple[str, tuple[str, ...] | None]] | None:
    """`rules` as `(logical, mesh axes or None)` pairs; `None` means names are mesh axes."""
    if rules is None:
        return None
    items = rules.items() if isinstance(rules, Mapping) else rules
    if isinstance(items, str | bytes) or not isinstance(items, Sequence | type({}.items())):
        raise TypeError(
            f"{where}: expected rules to be a sequence of (logical name, mesh axis) pairs "
            f"or a dict, got {type(rules).__name__}. Fix: pass e.g. "
            "[('batch', 'data'), ('mlp', 'model'), ('embed', None)]."
        )
    pairs = []
    for item in items:
        if not (isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[0], str)):
            raise TypeError(
                f"{where}: expected every rule to be a (logical name, mesh axis) pair, "
                f"got {item!r}. Fix: write rules like ('mlp', 'model') or ('embed', None)."
            )
        name, axes = item
        if axes is None:
            pairs.append((name, None))
        elif isinstance(axes, str):
            pairs.append((name, (axes,)))
        elif isinstance(axes, tuple | list) and all(isinstance(a, str) for a in axes):
            pairs.append((name, tuple(axes)))
        else:
            raise TypeError(
                f"{where}: expected the mesh axis of rule {name!r} to be a name, a tuple "
                f"of names or None, got {axes!r}. Fix: e.g. ('mlp', 'model')."
            )
    return pairs


def _spec(
    where: str,
    logical: tuple[Any, ...],
    shape: tuple[int, ...],
    mesh: Mesh,
    rules: list[tuple[str, tuple[str, ...] | None]] | None,
) -> PartitionSpec:
    """The `PartitionSpec` of one array with logical axis names `logical`."""
    if not logical:
        return PartitionSpec()
    if len(logical) != len(shape):
        raise ValueError(
            f"{where}: expected one sharding name (or None) per dimension of shape "
            f"{shape}, got {logical!r}. Fix: give {len(shape)} names in the layer's "
            "<param>_sharding (or <param>_metadata={'sharding': ...}) option."
        )
    used: set[str] = set()
    spec: list[Any] = []
    for size, name in zip(shape, logical):
        axes = _mesh_axes(where, name, rules, used)
        for axis in axes or ():
            if axis not in mesh.shape:
                raise ValueError(
                    f"{where}: expected mesh axes among {tuple(mesh.shape)}, got {axis!r} "
                    f"(for {name!r}). Fix: name an axis of the mesh in the rules, or "
                    "build the mesh with that axis."
                )
        if axes:
            split = int(np.prod([mesh.shape[a] for a in axes]))
            if size % split:
                raise ValueError(
                    f"{where}: expected a dimension divisible by the {split} devices of "
                    f"mesh axes {axes} (for {name!r}), got size {size}. Fix: choose sizes "
                    "that divide evenly, or map that name to None in the rules."
                )
            used.update(axes)
        spec.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    while spec and spec[-1] is None:
        spec.pop()  # JAX's own normal form: P('model') rather than P('model', None)
    return PartitionSpec(*spec)


def _mesh_axes(
    where: str,
    name: Any,
    rules: list[tuple[str, tuple[str, ...] | None]] | None,
    used: set[str],
) -> tuple[str, ...] | None:
    if name is None:
        return None
    if rules is None:
        axes = (name,) if isinstance(name, str) else tuple(name)
        return None if used & set(axes) else axes
    candidates = [axes for logical, axes in rules if logical == name]
    if not candidates:
        known = sorted({logical for logical, _ in rules})
        raise ValueError(
            f"{where}: expected a rule for every logical axis name, got {name!r} which "
            f"none of the rules {known} names. Fix: add ({name!r}, <mesh axis>) to "
            f"the rules, or ({name!r}, None) to replicate it."
        )
    for axes in candidates:
        if axes is None or not used & set(axes):
            return axes
    return None  # every candidate's mesh axes are taken: replicate, as flax does


def _sharding_of(
    where: str, param: Param, mesh: Mesh, rules: Any = None, *, shape: Any = None
) -> NamedSharding:
    """The `NamedSharding` of one `Param` (shared with `nn.shard`)."""
    shape = tuple(np.shape(param.value) if shape is None else shape)
    return NamedSharding(mesh, _spec(where, param.sharding, shape, mesh, _rule_pairs(where, rules)))


def _check(where: str, params: Any, mesh: Any) -> None:
    if not isinstance(params, Params):
        raise TypeError(
            f"{where}: expected a bx.Params, got {type(params).__name__}. Fix: pass the "
            "params returned by the model's first call (for an eager model, nn.shard)."
        )
    if not isinstance(mesh, Mesh):
        raise TypeError(
            f"{where}: expected a jax.sharding.Mesh, got {type(mesh).__name__}. Fix: "
            "build one with jax.make_mesh((8,), ('data',))."
        )


def shardings(params: Params, mesh: Mesh, rules: Rules | None = None) -> Params:
    """The `NamedSharding` of every parameter, as a params-shaped tree.

    Each `Param`'s ``'sharding'`` metadata gives one logical axis name (or
    `None`) per dimension; `rules` map logical names to mesh axes. Params
    without the entry (RNG state, most statistics) are replicated. The result
    has the treedef of `params`, so it goes straight into `jax.device_put`,
    `jax.jit(..., in_shardings=..., out_shardings=...)` and orbax.

    Args:
        params: The model's params.
        mesh: The device mesh.
        rules: `(logical name, mesh axis)` pairs (or a dict); a mesh axis may
            be a name, a tuple of names, or `None` (replicated). The first
            rule for a name whose axes the param does not already use wins.
            `None` (the default) reads the names as mesh axes directly.

    Returns:
        A `Params` with the same paths whose values are `NamedSharding`s.

    Raises:
        TypeError: If `params` is not a `Params`, `mesh` not a `Mesh`, or the
            rules are malformed.
        ValueError: If a name has no rule, maps to an axis the mesh lacks,
            has the wrong number of entries, or splits a dimension unevenly.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import blox as bx
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> lin = bx.Linear(g / 'lin', 4, rng=rng, kernel_metadata={'sharding': ('embed', 'mlp')})
        >>> _, params = lin(rng.seed(bx.Params(), seed=0), jnp.ones((2, 3)))
        >>> mesh = jax.make_mesh((1,), ('model',))
        >>> specs = bx.shardings(params, mesh, [('embed', None), ('mlp', 'model')])
        >>> specs[('net', 'lin', 'kernel')].value.spec, specs[('net', 'lin', 'bias')].value.spec
        (P(None, 'model'), P())
    """
    _check("bx.shardings", params, mesh)
    pairs = _rule_pairs("bx.shardings", rules)
    out = {}
    for path, param in params.items():
        where = f"bx.shardings: {_path_str(path)}"
        spec = _spec(where, param.sharding, tuple(np.shape(param.value)), mesh, pairs)
        out[path] = param.replace(value=NamedSharding(mesh, spec))
    return Params.from_dict(out, locked=params.is_locked)


def shard(params: Params, mesh: Mesh, rules: Rules | None = None) -> Params:
    """`params` placed on `mesh` as `shardings(params, mesh, rules)` says.

    With several processes, every process passes the same full values (as
    after initialising from the same seed) and keeps the shards of its own
    devices.

    Args:
        params: The model's params.
        mesh: The device mesh.
        rules: As in `bx.shardings`.

    Returns:
        The same params with every value a `jax.Array` on `mesh`.

    Raises:
        TypeError, ValueError: As `bx.shardings`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import blox as bx
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> lin = bx.Linear(g / 'lin', 4, rng=rng, kernel_metadata={'sharding': (None, 'mlp')})
        >>> _, params = lin(rng.seed(bx.Params(), seed=0), jnp.ones((2, 3)))
        >>> mesh = jax.make_mesh((1,), ('model',))
        >>> placed = bx.shard(params, mesh, {'mlp': 'model'})
        >>> placed[('net', 'lin', 'kernel')].value.sharding.spec
        P(None, 'model')
    """
    _check("bx.shard", params, mesh)
    targets = shardings(params, mesh, rules)
    out = {
        path: param.replace(value=_place(param.value, targets[path].value))
        for path, param in params.items()
    }
    return Params.from_dict(out, locked=params.is_locked)


def _place(value: Any, sharding: NamedSharding) -> jax.Array:
    """`value` on `sharding`, also when the mesh spans other processes' devices.

    Every process holds the full value; each keeps the shards of its own devices.
    """
    if sharding.is_fully_addressable or (
        isinstance(value, jax.Array) and not value.is_fully_addressable
    ):
        return jax.device_put(value, sharding)  # local, or already global: a reshard
    if jax.dtypes.issubdtype(getattr(value, "dtype", None), jax.dtypes.prng_key):
        impl = jax.random.key_impl(value)
        data = _place(jax.random.key_data(value), NamedSharding(sharding.mesh, PartitionSpec()))
        return jax.random.wrap_key_data(data, impl=impl)
    host = np.asarray(value)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
