"""Compiled calls: one cached program per argument signature, state written back.

An eager call (`model(x)` outside any transformation) is compiled once per
argument signature (treedef of the model and arguments, static leaves, array
shapes and dtypes) and then costs one dispatch: `_Dispatcher` flattens the
arguments, runs the cached program, and writes the state leaves the trace
replaced back onto the caller's objects. `nn.filter_jit` is the same
dispatcher applied to a user function. A repeat call whose leaves are all
`jax.Array`s (a training step, a model called on arrays) finds its program
by a key gathered in C (`map` over the leaves) and unflattens the outputs
straight from the program's results; per call, what remains in Python is one
flatten of the arguments, one unflatten of the outputs (one Python callback
per module object in each) and the state write-back, skipped when the trace
changed no state.

Stamps (`_pytree.stamp`) remove the flatten where they can. The modules a
compiled call returns (the model and the optimiser's moments of a training
step) and the modules it was called on are stamped with their leaves and a
signature number; a call whose arguments are arrays, None, tuples and stamped
modules (`_stamp_key`) finds its entry in `by_stamp` by that key and takes the
leaves from the stamps, walking no module. Any change to any module makes
every stamp stale, so a stamp is only read while it is exact. The key of the
last such call is also kept as generated straight-line code (`_make_probe`)
that checks the next call against it, about twice as fast as the walk; a
call of any other shape misses it and walks.

A module method called on arrays alone goes first by a direct route:
`jax.jit` itself over the module's leaves (stamped, so a repeat call walks
nothing) and the arrays, whose repeat calls are jax's C++ dispatch with a
few dictionary lookups of blox's in front. Its trace proves the call changes
no state; a call that does (a Dropout draw, BatchNorm in training) is handed
to the dispatcher before anything is compiled, and modules of that static
structure go to the dispatcher from then on (see `_compiled_method`).

The state-return protocol (shared with `nn.filter_grad` and `functional()`,
see `_write_back`): the trace records which input leaves it replaced, by
flatten position; after the call each new value goes onto the caller's object
that owns that position, reached by its JAX key path (found once per cache
entry). Positions agree between the caller's tree and the traced copy because
the copy is unflattened from the caller's own treedef.

Inside a trace (traced arguments), under `jax.disable_jit()`, while a forward
hook is registered, or for an argument signature whose Python control flow
needs concrete values (that signature only, with one warning), calls run op by
op. Caches are bounded and least-recently-used entries go first; all of them
are listed in `_context.py`, which `nn.clear_caches()` empties.
"""

import functools
import itertools
import operator
import threading
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from ._context import CONTEXT
from ._frames import OPEN, _carry_state, _closed_over, _leaks, _local
from ._hooks import HOOKS, hooked_call
from ._pytree import STAMP, _aux_of, _touch, builder, signature_of, stamp, stamp_of, stampable
from ._typecheck import _enabled as _CHECKS

_ARRAY_TYPES = (jax.Array, np.ndarray)
_UNTRACEABLE = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerIntegerConversionError,
    jax.errors.TracerArrayConversionError,
)
_DONATE = ("none", "all", "all-except-first", "warn", "warn-except-first")


class _Compiled:
    """One cache entry: the jitted function and what its trace recorded.

    The trace records the output's static half and which input leaves the
    call replaced (the state: running statistics, RNG counters). After the
    call those new values are written onto the caller's objects through key
    paths found once, so a repeat call does no tree walking beyond one
    flatten of its arguments.
    """

    __slots__ = (
        "build",
        "changed",
        "fast",
        "jitted",
        "out_dyn",
        "out_stamps",
        "out_static",
        "out_treedef",
        "placed",
        "plain",
        "split",
        "used",
        "writers",
    )

    def __init__(self) -> None:
        self.changed: list[int] = []
        self.fast = False  # repeat calls may take `_Dispatcher.__call__`'s fast path
        self.plain = False  # a probe's hit may go straight to `jitted` and `build`
        self.out_static: list[Any] | None = None  # None: every output leaf is an array
        self.placed: Any = None  # input placements on a mesh, pinned on outputs (_sharding.py)
        self.writers: list[tuple[tuple[Any, ...], str]] | None = None
        self.split: int | None = None  # donated leaves start here ('all-except-first')
        # Which returned trees are stamped for the next call (see `_out_stamps`):
        # None until the first call has returned, then a list of
        # (output index, first leaf, end leaf, treedef, signature).
        self.out_stamps: list[tuple[int, int, int, Any, int]] | None = None


class _Dispatcher:
    """Compiles `fun(*lead, *args, **kwargs)` per argument signature and threads state.

    The signature is the treedef of `(lead, args, kwargs)` (so a mode,
    freezing or architecture change retraces), the static leaves, and the
    shape and dtype of every array leaf. Arrays are traced; everything else
    is static, as in `eqx.filter_jit`.
    """

    def __init__(self, fun: Callable[..., Any], donate: str = "none") -> None:
        if donate not in _DONATE:
            raise ValueError(
                f"nn.filter_jit: expected donate to be one of {_DONATE}, got {donate!r}. "
                "Fix: pass one of those."
            )
        self.fun = fun
        self.donate = donate
        # signature -> _Compiled, or _OP_BY_OP for a signature that cannot be
        # compiled. At most `limit` entries; the least recently called goes
        # first (each hit stamps `entry.used`, one integer store).
        self.cache: dict[Any, Any] = {}
        # The same entries keyed by the call's top-level arguments alone: each
        # array's aval, each stamped tree's signature (`_pytree.stamp`), so a
        # call on stamped trees finds its program without flattening them.
        self.by_stamp: dict[Any, _Compiled] = {}
        # The last stamp signature that hit, as a generated check of the call's
        # shape (`_make_probe`) and its entry; the probes made so far, by key.
        self.probe: tuple[Any, _Compiled] | None = None
        self.probes: dict[Any, Any] = {}
        self.unstamped: set[Any] = set()  # argument structures that cannot be stamped
        self.limit = CACHE_LIMIT
        self.clock = 0
        self.traces = 0  # how many times `fun` was traced (see `compile_stats`)
        self.compiles = 0
        # A module method's direct path (see `_compiled_method`): its two `jax.jit`s
        # and the static halves of modules whose calls it refused.
        self.direct: Any = None
        self.direct_cached = 0  # signatures the direct path compiled (and holds)
        self.refused: set[Any] = set()
        CONTEXT.dispatchers.add(self)

    def clear(self) -> None:
        """Drops every compiled program (and every op-by-op verdict)."""
        self.cache.clear()
        self.by_stamp.clear()
        self.probe = None
        self.probes.clear()
        self.unstamped.clear()
        self.refused.clear()
        if self.direct is not None:
            for pair in self.direct.values():
                for direct in pair:  # (a pair may also be held by its method's memo)
                    direct.clear_cache()
            self.direct.clear()
            self.direct_cached = 0

    def __call__(
        self,
        lead: tuple[Any, ...],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        eager: bool = False,
    ) -> Any:
        root = (lead, args, kwargs)
        entry = key_s = None
        if not kwargs:
            # Arrays and stamped trees only (a training loop feeding back what
            # the last step returned): the program, found without a tree walk.
            # First the shape of the last such call, checked by generated code.
            probe = self.probe
            if probe is not None:
                dyn = probe[0](lead, args)
                if dyn is not None:
                    entry = probe[1]
                    if entry.plain:  # a training loop's step: no state, builder-stamped outputs
                        self.clock = entry.used = self.clock + 1
                        return entry.build(entry.jitted(dyn)[0])
            if entry is None:
                key_s, dyn = _stamp_key(lead, args)
                if key_s is not None:
                    entry = self.by_stamp.get(key_s)
                    if entry is not None:
                        self._arm(key_s, entry, lead, args)
        if entry is not None:
            self.clock = entry.used = self.clock + 1
            fresh, key_t = False, None
        else:
            leaves, treedef = _flatten(root)
            if _JAX_TYPES.issuperset(map(type, leaves)):
                # The common repeat call: every leaf a concrete jax.Array, so
                # the signature is the treedef and the avals (the key `_entry`
                # builds, in the same form), gathered in C. Entries pinned to a
                # mesh or splitting donated arguments take `_entry`.
                key_t = (treedef, _CHECKS[0], *map(_AVAL, leaves))
                try:
                    entry = self.cache.get(key_t)
                except TypeError:  # unhashable node data: `_entry` says so in house form
                    entry = None
                if entry is None or entry is _OP_BY_OP or not entry.fast:
                    entry = None
                else:
                    self.clock = entry.used = self.clock + 1
                    dyn, fresh = leaves, False
            if entry is None:
                found = self._entry(root, eager, leaves, treedef)
                if found is _NOT_COMPILED:
                    return _NOT_COMPILED
                entry, dyn, key_t, fresh = found
            elif key_s is not None:
                # Stamped arguments whose signature maps to this entry: the
                # next such call skips the walk.
                if len(self.by_stamp) >= self.limit:
                    self.by_stamp.clear()
                    self.probe = None
                    self.probes.clear()
                self.by_stamp[key_s] = entry
            elif not kwargs and not entry.changed and treedef not in self.unstamped:
                # Arguments a later call may pass again (a model called on new
                # data, an evaluation loop): stamped, so that call skips the walk.
                if not (_stamp_modules(lead) and _stamp_modules(args)):
                    if len(self.unstamped) >= self.limit:
                        self.unstamped.clear()
                    self.unstamped.add(treedef)  # (a list inside, say): not tried again
        split = entry.split
        groups = (dyn,) if split is None else (dyn[:split], dyn[split:])
        try:
            if fresh and self.donate in ("all", "all-except-first"):
                # As in Equinox, only the 'warn' modes report buffers XLA could
                # not reuse (reported once, while compiling).
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", "Some donated buffers were not usable")
                    out_dyn, state = entry.jitted(*groups)
            else:
                out_dyn, state = entry.jitted(*groups)
        except _UNTRACEABLE:
            # An eager call falls back op by op for this signature only.
            if eager and key_t is not None:
                self.cache[key_t] = _OP_BY_OP
            else:
                self.cache.pop(key_t, None)
            raise
        except _StructureChanged:
            self.cache.pop(key_t, None)
            raise
        if entry.changed:
            _write_back(entry, root, state)
        if fresh:
            # Repeat calls take the fast path once a trace has succeeded.
            entry.fast = entry.split is None and entry.placed is None
        if entry.out_static is not None:
            return _output(entry, out_dyn)
        stamps = entry.out_stamps
        if stamps is None:
            stamps = _out_stamps(entry, out_dyn)
            build = builder(entry.out_treedef, {s[0]: s[1:] for s in stamps})
            if build is None:  # jax's unflatten, then the stamps found here
                entry.build, entry.out_stamps = entry.out_treedef.unflatten, stamps
            else:  # the builder stamps as it builds
                entry.build, entry.out_stamps = build, stamps = build, ()
        out = entry.build(out_dyn)
        for path, start, end, tree, signature in stamps:
            value = out
            for index in path:
                value = value[index]
            stamp(value, out_dyn[start:end], tree, signature, checked=True)
        # What the probe's hit may skip from now on: donation splits, state to
        # write back, static outputs, stamps the builder does not make.
        entry.plain = entry.split is None and not entry.changed and not stamps
        return out

    def _arm(self, key_s: Any, entry: _Compiled, lead: Any, args: Any) -> None:
        """Makes the probe for stamp signature `key_s` (once) the first one tried."""
        probe = self.probes.get(key_s)
        if probe is None:
            if len(self.probes) >= self.limit:
                self.probes.clear()
            probe = self.probes[key_s] = _make_probe(lead, args)
        self.probe = probe, entry

    def _entry(
        self, root: Any, eager: bool = False, leaves: Any = None, treedef: Any = None
    ) -> Any:
        """The cache entry for `root`'s signature, its array leaves, key and freshness.

        `leaves` and `treedef` are `root`'s flattening, when the caller has it.
        """
        if treedef is None:
            leaves, treedef = _flatten(root)
        dyn = []
        # Whether runtime shape checks are on: they run while tracing, so a
        # program traced without them must not serve a call made with them.
        key: list[Any] = [treedef, _CHECKS[0]]
        append = key.append
        kinds = _LEAF_KINDS
        for leaf in leaves:
            kind = kinds.get(type(leaf))
            if kind is None:
                kind = _leaf_kind(type(leaf))
            if kind is _JAX:
                dyn.append(leaf)
                # Shape, dtype and weak type: what jax.jit keys on. `.aval`, not
                # the public `jax.typeof`, which measured ~10x slower per leaf.
                append(leaf.aval)
            elif kind is _TRACER:
                if eager:
                    return _NOT_COMPILED
                dyn.append(leaf)
                append(leaf.aval)
            elif kind is _NUMPY:
                dyn.append(leaf)
                append(_NUMPY)
                append((leaf.shape, leaf.dtype))
            else:
                append(_STATIC)
                append(leaf)
        key_t = tuple(key)
        try:
            entry = self.cache.get(key_t)
            if (
                entry is not None
                and entry is not _OP_BY_OP
                and entry.placed is not None
                and _sharding.moved(entry.placed, dyn)
            ):
                entry = None  # same shapes, new placement on the mesh: compile for it
        except TypeError:
            bad = [type(leaf).__name__ for leaf in leaves if not _hashable(leaf)]
            raise TypeError(
                f"nn.filter_jit: expected every non-array argument leaf to be hashable "
                f"(it is static), got {bad}. Fix: pass it as an array, or make it "
                "hashable (e.g. a tuple instead of a list of numbers is already a "
                "pytree; wrap other objects in a frozen dataclass)."
            ) from None
        fresh = entry is None
        if fresh:
            entry = self._compile(leaves, treedef, root)
            self.compiles += 1
            if len(self.cache) >= self.limit:
                del self.cache[min(self.cache, key=lambda k: getattr(self.cache[k], "used", -1))]
            self.cache[key_t] = entry
        elif entry is _OP_BY_OP:
            return _NOT_COMPILED
        self.clock = entry.used = self.clock + 1
        return entry, dyn, key_t, fresh

    def lower(self, lead: tuple[Any, ...], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """`jax.stages.Lowered` of the program these arguments would run."""
        found = self._entry((lead, args, kwargs))
        if found is _NOT_COMPILED:
            raise ValueError(
                "nn.filter_jit(...).lower: expected arguments this function can "
                "compile, got a signature that runs op by op. Fix: call it once "
                "to see the warning saying why, and fix that."
            )
        entry, dyn, _, _ = found
        split = entry.split
        groups = (dyn,) if split is None else (dyn[:split], dyn[split:])
        return entry.jitted.lower(*groups)

    def _compile(self, leaves: list[Any], treedef: Any, root: Any) -> _Compiled:
        from ._module import check_no_aliases  # (imports this module)

        # Once per signature: a module object held in two places would be traced
        # as two copies and untie. Assignment refuses most such cases; this
        # catches one assigned into a sub-module after the fact.
        check_no_aliases(root)
        entry = _Compiled()
        positions = [i for i, leaf in enumerate(leaves) if isinstance(leaf, _ARRAY_TYPES)]
        template = [None if isinstance(leaf, _ARRAY_TYPES) else leaf for leaf in leaves]
        fun = self.fun

        def traced(*groups: list[Any]) -> tuple[list[Any], list[Any]]:
            self.traces += 1
            full = list(template)
            for position, value in zip(positions, itertools.chain(*groups)):
                full[position] = value
            lead, args, kwargs = jax.tree.unflatten(treedef, full)
            with _carry_state(lead, args, kwargs):
                out = fun(*lead, *args, **kwargs)
            new_leaves, new_treedef = jax.tree.flatten((lead, args, kwargs))
            if new_treedef != treedef:
                raise _StructureChanged(
                    "nn.filter_jit: expected the arguments' structure (modes, frozen "
                    "flags, attributes) to stay the same during the call, got a "
                    "change inside it. Fix: call model.train()/eval()/freeze() and "
                    "assign attributes outside the compiled function.",
                    new_arrays=len(new_leaves) > len(leaves),
                )
            entry.changed = [i for i in positions if new_leaves[i] is not full[i]]
            state = [new_leaves[i] for i in entry.changed]
            if entry.placed is not None:
                state, out = _sharding.pin(entry.placed, entry.changed, state, out)
            out_leaves, entry.out_treedef = jax.tree.flatten(out)
            entry.out_dyn = [i for i, leaf in enumerate(out_leaves) if isinstance(leaf, jax.Array)]
            dyn_set = set(entry.out_dyn)
            entry.out_static = (
                None  # every output leaf an array: unflatten the results directly
                if len(dyn_set) == len(out_leaves)
                else [None if i in dyn_set else leaf for i, leaf in enumerate(out_leaves)]
            )
            return [out_leaves[i] for i in entry.out_dyn], state

        donate: tuple[int, ...] = ()
        if self.donate in ("all", "warn"):
            donate = (0,)
        elif self.donate in ("all-except-first", "warn-except-first"):
            # The leaves of `lead` and of the first positional argument are exempt.
            lead, args, _ = root
            first = len(jax.tree.leaves(lead)) + (len(jax.tree.leaves(args[0])) if args else 0)
            entry.split = sum(1 for p in positions if p < first)
            donate = (1,)
        entry.placed = _sharding.placements(root, leaves, positions)
        entry.jitted = jax.jit(traced, donate_argnums=donate)
        return entry


class _Caller(threading.local):
    """The module object a direct call was made on (the trace sees a copy)."""

    root: Any = None


_CALLER = _Caller()


class _JitOff(Exception):
    """A direct call made under `jax.disable_jit()`: the method runs op by op instead."""


class _Unrooted(Exception):
    """A stamped direct call needs a trace: it is made again, naming its object."""


class _NotDirect(Exception):
    """A direct trace found that the call changes state: the dispatcher takes it."""


def _distinct(fun: Callable[..., Any]) -> Callable[..., Any]:
    """A new function object that calls `fun` (its own entry in jax's trace cache)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return fun(*args, **kwargs)

    return call


def _all_jax(values: Any) -> bool:
    """Whether every value is a concrete `jax.Array` (learning new leaf types on the way)."""
    values = tuple(values)
    if _JAX_TYPES.issuperset(map(type, values)):
        return True
    for value in values:
        if type(value) not in _LEAF_KINDS:
            _leaf_kind(type(value))
    return _JAX_TYPES.issuperset(map(type, values))


def _holds_module(tree: Any) -> bool:
    from ._module import Module

    nodes = jax.tree.leaves(tree, is_leaf=lambda node: isinstance(node, Module))
    return any(isinstance(node, Module) for node in nodes)


class _StructureChanged(RuntimeError):
    """A compiled function changed its arguments' static structure while running.

    `new_arrays` says whether the change created array leaves (a new
    parameter or buffer), which no fallback could keep correct.
    """

    def __init__(self, message: str, *, new_arrays: bool = False) -> None:
        super().__init__(message)
        self.new_arrays = new_arrays


_STATIC = object()
_NUMPY = object()
_JAX = object()
_TRACER = object()
_NOT_COMPILED = object()
_OP_BY_OP = object()
CACHE_LIMIT = 256  # compiled signatures kept per method or filter_jit function

# Leaf type -> kind, so the per-call signature loop avoids `isinstance` against
# the `jax.Array` ABC (a few hundred ns per leaf). Filled on first sight.
_LEAF_KINDS: dict[type, object] = {}


# The leaf types of kind `_JAX` seen so far: a signature whose leaves all have
# one of these types takes the dispatcher's fast path.
_JAX_TYPES: set[type] = set()
_AVAL = operator.attrgetter("aval")
_flatten = jax.tree_util.default_registry.flatten  # `jax.tree.flatten` minus two Python frames


def _stamp_key(lead: tuple[Any, ...], args: tuple[Any, ...]) -> tuple[Any, Any]:
    """The stamp signature of a call on arrays and stamped modules, and its array leaves.

    `(None, None)` when an argument holds anything else. Tuples (named
    tuples too, such as optax states) and None are walked here in Python;
    each array adds its aval and each stamped module its signature (which
    stands for its treedef and leaf avals), so the key determines the full
    signature `_entry` would build, and the leaves come in flatten order.
    """
    key: list[Any] = [_CHECKS[0], len(lead)]
    dyn: list[Any] = []
    if _stamp_walk(lead, key, dyn) and _stamp_walk(args, key, dyn):
        return tuple(key), dyn
    return None, None


def _stamp_walk(values: tuple[Any, ...], key: list[Any], dyn: list[Any]) -> bool:
    token = CONTEXT.token[0]
    jax_types = _JAX_TYPES
    for value in values:
        if type(value) in jax_types:
            key.append(value.aval)
            dyn.append(value)
            continue
        d = getattr(value, "__dict__", None)
        found = d.get(STAMP) if type(d) is dict else None
        if found is not None:  # a stamped module
            if found[3] is None or found[0] is not token:
                return False
            key.append(found[3])
            dyn += found[1]
        elif value is None:
            key.append(None)
        elif isinstance(value, tuple):
            key.append(type(value))
            key.append(len(value))
            if not _stamp_walk(value, key, dyn):
                return False
        else:
            return False
    return True


def _make_probe(lead: tuple[Any, ...], args: tuple[Any, ...]) -> Callable[..., Any]:
    """`probe(lead, args)`: `_stamp_key`'s leaves for calls shaped exactly like this one.

    Generated code checks what `_stamp_key` would put in the key, in the
    same order, against this call's values: the shape-check setting, each
    argument's kind (array, None, tuple type and length, stamped module),
    each array's aval (interned, so compared by identity) and each stamped
    module's signature; it returns the array leaves when all match and None
    otherwise (the caller then walks as usual). One check per argument in
    straight-line code costs about half of the walk it replaces.
    """
    env: dict[str, Any] = {"_T": CONTEXT.token, "_JT": _JAX_TYPES, "_CH": _CHECKS}
    lines = [f"    if _CH[0] is not {_CHECKS[0]!r}:", "        return None"]
    parts: list[str] = []
    count = itertools.count()

    def emit(value: Any, var: str) -> None:
        n = next(count)
        if type(value) in _JAX_TYPES:
            env[f"A{n}"] = value.aval
            lines.append(f"    if type({var}) not in _JT or {var}.aval is not A{n}:")
            lines.append("        return None")
            parts.append(var)
            return
        found = stamp_of(value)
        if found is not None:
            env[f"C{n}"] = type(value)
            lines.append(f"    if type({var}) is not C{n}:")
            lines.append("        return None")
            lines.append(f"    s{n} = {var}.__dict__.get({STAMP!r})")
            lines.append(f"    if s{n} is None or s{n}[0] is not _T[0] or s{n}[3] != {found[3]!r}:")
            lines.append("        return None")
            parts.append(f"*s{n}[1]")
        elif value is None:
            lines.append(f"    if {var} is not None:")
            lines.append("        return None")
        else:  # a tuple (`_stamp_key` accepted this call)
            env[f"T{n}"] = type(value)
            lines.append(f"    if type({var}) is not T{n} or len({var}) != {len(value)}:")
            lines.append("        return None")
            names = [f"v{n}_{i}" for i in range(len(value))]
            if names:
                lines.append(f"    {''.join(name + ', ' for name in names)}= {var}")
            for item, name in zip(value, names, strict=True):
                emit(item, name)

    emit(lead, "lead")  # (tuples: their type and length are checked like any other)
    emit(args, "args")
    source = "def probe(lead, args):\n" + "\n".join(lines) + f"\n    return [{', '.join(parts)}]\n"
    exec(compile(source, "<blox stamp probe>", "exec"), env)
    return env["probe"]


def _stamp_modules(values: tuple[Any, ...]) -> bool:
    """Stamps the module trees among `values` (walking tuples), for the next call on them.

    Returns whether `_stamp_walk` will now accept `values`: every value an
    array, None, a tuple of such, or a module that could be stamped.
    """
    from ._module import Module  # (imports this module)

    for value in values:
        if value is None or type(value) in _JAX_TYPES:
            continue
        if isinstance(value, tuple):
            if not _stamp_modules(value):
                return False
            continue
        if not isinstance(value, Module):
            return False
        found = stamp_of(value)
        if found is not None and found[3] is not None:
            continue
        leaves, treedef = _flatten(value)
        if not (stampable(treedef) and _JAX_TYPES.issuperset(map(type, leaves))):
            return False
        stamp(value, leaves, treedef, signature_of(treedef, leaves), checked=True)
    return True


def _out_stamps(entry: _Compiled, out_dyn: list[Any]) -> list[tuple[Any, ...]]:
    """Where the modules a call of `entry` returns sit, found on its first call.

    One `(path, first leaf, end leaf, treedef, signature)` per module tree in
    the output, the output itself or reached through tuples (`model,
    opt_state, loss`, with the optimiser's moments inside `opt_state`).
    """
    from ._module import Module  # (imports this module)

    found: list[tuple[Any, ...]] = []

    def walk(treedef: Any, path: tuple[int, ...], start: int) -> None:
        data = treedef.node_data()
        if data is None:
            return
        if issubclass(data[0], Module):
            if stampable(treedef):
                end = start + treedef.num_leaves
                signature = signature_of(treedef, out_dyn[start:end])
                found.append((path, start, end, treedef, signature))
            return
        if issubclass(data[0], tuple):
            for index, child in enumerate(treedef.children()):
                walk(child, (*path, index), start)
                start += child.num_leaves

    walk(entry.out_treedef, (), 0)
    return found


def _output(entry: _Compiled, out_dyn: list[Any]) -> Any:
    """The call's output: the static leaves the trace recorded, the arrays it returned."""
    out = list(entry.out_static)
    for position, value in zip(entry.out_dyn, out_dyn):
        out[position] = value
    return entry.out_treedef.unflatten(out)


def _leaf_kind(cls: type) -> object:
    if issubclass(cls, jax.core.Tracer):
        kind = _TRACER
    elif issubclass(cls, jax.Array):
        kind = _JAX
        _JAX_TYPES.add(cls)
    elif issubclass(cls, np.ndarray):
        kind = _NUMPY
    else:
        kind = _STATIC
    _LEAF_KINDS[cls] = kind
    return kind


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _write_back(entry: _Compiled, root: Any, values: list[Any]) -> None:
    """Puts the state a compiled call replaced onto the caller's objects."""
    writers = entry.writers
    if writers is None:
        writers = entry.writers = _writers(root, entry.changed)
    tracer = jax.core.Tracer
    for (path, name), value in zip(writers, values):
        owner = root
        for step in path:
            owner = step(owner)
        if owner is None:
            continue
        d = owner.__dict__
        if isinstance(value, tracer) and _leaks(owner, d[name], value):
            raise _closed_over(owner, name)
        d[name] = value
    _touch()


def write_state(root: Any, changed: list[int], values: list[Any]) -> None:
    """The state-return protocol outside the dispatcher (`nn.filter_grad`).

    `changed` are flatten positions of `root`'s leaves that a traced call
    replaced, `values` their new values; each lands on the caller's object
    that owns the position, reached by its key path.
    """
    entry = _Compiled()
    entry.changed = changed
    _write_back(entry, root, values)


def _writers(root: Any, changed: list[int]) -> list[tuple[tuple[Any, ...], str]]:
    """For each changed leaf, how to reach its owning module and the attribute name."""
    keyed = jax.tree_util.tree_flatten_with_path(root)[0]
    out = []
    for index in changed:
        path = keyed[index][0]
        *head, last = path
        steps = tuple(_key_step(k) for k in head)
        if not isinstance(last, jax.tree_util.GetAttrKey) or None in steps:
            out.append(((lambda _: None,), ""))
            continue
        out.append((steps, last.name))
    return out


def _key_step(key: Any) -> Any:
    if isinstance(key, jax.tree_util.GetAttrKey):
        name = key.name
        return lambda obj: getattr(obj, name)
    if isinstance(key, jax.tree_util.SequenceKey):
        idx = key.idx
        return lambda obj: obj[idx]
    if isinstance(key, jax.tree_util.DictKey):
        k = key.key
        return lambda obj: obj[k]
    return None


def _disable_jit_state() -> Any:
    """`jax.disable_jit`'s setting, as an object whose `.value` reads it (thread-local too).

    `jax.config.jax_disable_jit` reads the same through `Config.__getattr__`,
    at twice the cost; a JAX without the state object keeps that way.
    """
    from jax._src import config

    state = getattr(config, "disable_jit", None)
    if state is not None and hasattr(state, "value"):
        return state

    class _Read:
        @property
        def value(self) -> bool:
            return bool(jax.config.jax_disable_jit)

    return _Read()


def _compiled_method(method: Callable[..., Any]) -> Callable[..., Any]:
    """Makes a module method compile and cache itself when called eagerly.

    Outside transformations, `model(x)` runs as one dispatch of a program
    compiled for its argument signature; state updates are written back as
    usual. Inside a trace (traced arguments or module), under
    `jax.disable_jit()`, or while any forward hook is registered, the method
    runs op by op instead; so does an argument signature whose Python control
    flow depends on array values (it warns once, and other signatures still
    compile). A call that changes the module's structure (a new attribute, a
    mode switch) raises: the change would be lost with the trace.

    Two routes lead to the program. A call on arrays alone (`model(x)`, array
    keyword arguments too) first takes the direct route: `jax.jit` itself
    over the module's leaves and the arrays, one pair of jits per treedef,
    so a repeat call on a stamped module is a lookup and jax's own C++
    dispatch. Its trace proves the call changes no state
    (no leaf replaced, no attribute added, arrays only in the output); a call
    that does change state (Dropout drawing, BatchNorm in training) stops
    that trace before anything is compiled, and from then on modules of that
    static structure take the dispatcher (`_Dispatcher`), which writes state
    back. So every signature is compiled once, by one of the two.
    """
    dispatcher = _Dispatcher(method)
    forward = method.__name__ == "__call__"
    lock = CONTEXT.lock
    refused = dispatcher.refused
    jax_types = _JAX_TYPES
    token = CONTEXT.token  # (its one item is replaced in place)
    local = _local  # per thread: the open `_carry_state` frames of blox's transforms
    opened = OPEN  # (how many are open in all threads)

    def direct_body(self: Any, *args: Any, **kwargs: Any) -> Any:
        from ._module import check_no_aliases  # (imports this module)

        # Once per signature, on the caller's objects (the trace sees copies):
        # a module held in two places would be traced as two copies and untie.
        # A stamped call does not name its object (a thread-local write per
        # call); on a new signature it is traced again by `rooted`, which does.
        caller = _CALLER.root
        if caller is None:
            raise _Unrooted
        check_no_aliases(caller)
        root = ((self,), args, kwargs)
        leaves, treedef = jax.tree.flatten(root)
        with _carry_state((self,), args, kwargs):
            out = method(self, *args, **kwargs)
        new_leaves, new_treedef = jax.tree.flatten(root)
        if new_treedef != treedef or any(a is not b for a, b in zip(leaves, new_leaves)):
            raise _NotDirect
        if not all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(out)) or _holds_module(
            out
        ):
            raise _NotDirect
        # Counted once the trace has succeeded: a refused attempt is the
        # router's business, not a trace of the user's signature.
        dispatcher.traces += 1
        dispatcher.compiles += 1
        dispatcher.direct_cached += 1  # (each trace is one program `by_treedef` holds)
        if dispatcher.direct_cached > dispatcher.limit:
            by_treedef.clear()  # bounded, as the dispatcher's cache is (this call completes)
            memo[0] = None, None
            dispatcher.direct_cached = 0
        return out

    # The module travels as its flat leaves, one `jax.jit` pair per treedef:
    # a stamped module (see `_pytree.stamp`) then costs no tree walk at all.
    # One `jax.jit` per setting of the runtime shape checks (they run while
    # tracing): a program traced without them never serves a checked call.
    # (Distinct functions: jax keys its trace cache on the function.)
    by_treedef: dict[Any, tuple[Any, Any]] = {}
    dispatcher.direct = by_treedef
    no_jit = _disable_jit_state()
    # The last treedef looked up and its programs, as one tuple (threads read it whole).
    memo: list[Any] = [(None, None)]

    def programs(treedef: Any) -> tuple[Any, Any]:
        last, found = memo[0]
        if last is treedef:
            return found
        found = by_treedef.get(treedef)
        if found is None:

            def body(leaves: list[Any], *args: Any, **kwargs: Any) -> Any:
                if no_jit.value:  # jax.jit calls its function under jax.disable_jit()
                    raise _JitOff
                return direct_body(treedef.unflatten(leaves), *args, **kwargs)

            found = by_treedef[treedef] = (jax.jit(body), jax.jit(_distinct(body)))
        memo[0] = treedef, found
        return found

    def flat(self: Any) -> tuple[list[Any], Any]:  # (`call` reads a stamp inline first)
        leaves, treedef = _flatten(self)
        stamp(self, leaves, treedef)
        return leaves, treedef

    def rooted(self: Any, leaves: list[Any], treedef: Any, args: Any, kwargs: Any) -> Any:
        """The direct call, naming `self` for a trace's alias check (`direct_body`)."""
        _CALLER.root = self
        try:
            return programs(treedef)[_CHECKS[0]](leaves, *args, **kwargs)
        finally:
            _CALLER.root = None  # (read only while tracing; not kept alive)

    def refuse(self: Any) -> None:
        if len(refused) >= CACHE_LIMIT:
            refused.clear()  # bounded; a refused structure is simply refused again
        refused.add(_aux_of(self))

    hooks = HOOKS

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        if hooks.table and forward:
            return hooked_call(method, self, args, kwargs)
        if dispatcher.fun is None:
            return method(self, *args, **kwargs)
        if (
            (not opened[0] or not local.frames)
            and (
                (len(args) == 1 and type(args[0]) in jax_types)  # model(x): one test
                or jax_types.issuperset(map(type, args))
                or _all_jax(args)
            )
            and (not kwargs or _all_jax(kwargs.values()))
            and (not refused or self.__dict__["_blox_aux"] not in refused)
        ):
            entry = self.__dict__.get(STAMP)
            try:
                if entry is not None and entry[0] is token[0]:
                    leaves, treedef = entry[1], entry[2]
                    last, found = memo[0]
                    program = (found if last is treedef else programs(treedef))[_CHECKS[0]]
                    try:
                        if kwargs:
                            return program(leaves, *args, **kwargs)
                        if len(args) == 1:
                            return program(leaves, args[0])
                        return program(leaves, *args)
                    except _Unrooted:
                        pass  # a new signature: traced below, naming `self`
                else:
                    leaves, treedef = flat(self)
                return rooted(self, leaves, treedef, args, kwargs)
            except (_NotDirect, *_UNTRACEABLE):
                refuse(self)  # the dispatcher below runs it (and says why, if it must)
            except _JitOff:  # (read there, not on every call)
                return method(self, *args, **kwargs)
        if no_jit.value:
            return method(self, *args, **kwargs)
        with lock:
            try:
                out = dispatcher((self,), args, kwargs, eager=True)
            except _UNTRACEABLE as error:
                why = f"its Python control flow depends on array values: {type(error).__name__}"
                _warn_op_by_op(
                    method, why, "use jnp.where / jax.lax.cond instead of Python `if` on arrays"
                )
                return method(self, *args, **kwargs)
            except _StructureChanged as error:
                if error.new_arrays:
                    raise _StructureChanged(
                        f"{type(self).__name__}.{method.__name__}: expected a call that "
                        "creates no new array attributes, got one that assigns an array "
                        "to a new attribute while running, which a compiled call would "
                        "lose (and op by op would make a trainable parameter). Fix: "
                        "create it in __init__ with register_buffer (e.g. a cached "
                        "mask), then assign the new value to it in __call__: same-shape "
                        "updates of a buffer are carried back."
                    ) from None
                # Static attributes (a Python counter) change on every call: this
                # method cannot be compiled at all.
                dispatcher.fun = None
                why = "it changes the module's attributes or mode while running"
                _warn_op_by_op(
                    method,
                    why,
                    "keep counters in a buffer (register_buffer) and change modes outside",
                )
                return method(self, *args, **kwargs)
            if out is _NOT_COMPILED:
                return method(self, *args, **kwargs)
            return out

    call._blox_dispatcher = dispatcher  # type: ignore[attr-defined]
    call._blox_compiled = True  # type: ignore[attr-defined]
    return call


def _warn_op_by_op(method: Callable[..., Any], why: str, fix: str) -> None:
    if method in CONTEXT.warned:
        return
    CONTEXT.warned.add(method)
    warnings.warn(
        f"blox.eager: {method.__qualname__} could not be compiled ({why}); such "
        f"calls now run op by op, which is much slower. Fix: {fix}.",
        UserWarning,
        stacklevel=3,
    )


class CompileStats(NamedTuple):
    """What `compile_stats` reports for one compiled function or method.

    Attributes:
        traces: How many times the Python function was traced.
        compiles: How many argument signatures were compiled.
        cached: Compiled signatures held now (at most the cache limit).
        op_by_op: Signatures marked to run op by op (control flow on values).
    """

    traces: int
    compiles: int
    cached: int
    op_by_op: int


def compile_stats(fn: Any) -> CompileStats:
    """Trace and compile counts of an `nn.filter_jit` function or a module method.

    A debugging helper in the spirit of `eqx.debug.assert_max_traces`: a
    training loop that retraces every step shows up as `traces` growing. Pass
    the object `nn.filter_jit` returned, a module class's method
    (``nn.Linear.__call__``), a bound method, or a module (its class's
    `__call__`). Counts are per class method, shared by every instance.

    Raises:
        TypeError: If `fn` is none of those.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> step = nn.filter_jit(lambda x: x * 2)
        >>> _ = step(jnp.ones(3)); _ = step(jnp.ones(3)); _ = step(jnp.ones(4))
        >>> nn.compile_stats(step)
        CompileStats(traces=2, compiles=2, cached=2, op_by_op=0)
    """
    dispatcher = getattr(fn, "_blox_dispatcher", None)
    if dispatcher is None:
        # A bound method, or a module: its class's compiled `__call__`.
        target = getattr(fn, "__func__", None)
        if target is None:
            target = next(
                (c.__dict__["__call__"] for c in type(fn).__mro__ if "__call__" in c.__dict__), None
            )
        dispatcher = getattr(target, "_blox_dispatcher", None)
    if not isinstance(dispatcher, _Dispatcher):
        raise TypeError(
            f"nn.compile_stats: expected an nn.filter_jit function, a module method "
            f"or a module, got {type(fn).__name__}. Fix: pass e.g. "
            "nn.compile_stats(model) or nn.compile_stats(step) where "
            "step = nn.filter_jit(fn)."
        )
    values = list(dispatcher.cache.values())
    op_by_op = sum(1 for v in values if v is _OP_BY_OP)
    cached = len(values) - op_by_op
    cached += dispatcher.direct_cached
    return CompileStats(dispatcher.traces, dispatcher.compiles, cached, op_by_op)


from . import _sharding  # noqa: E402  (it imports Module, which imports this file)
