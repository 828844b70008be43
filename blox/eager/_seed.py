"""The global initialisation stream behind `nn.manual_seed`, and layer building.

Each eager layer draws one key: its own `seed=` if given, otherwise the next
key of the global stream. That key seeds a core `Rng` which initialises the
layer's parameters exactly as the core layer would with `bx.Rng` seeded by the
same key, so eager and core layers agree bit for bit.
"""

import inspect
import numbers
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from blox.core.internal import checks, sampling

from ._context import CONTEXT, INIT_LIMIT
from ._dispatch import _UNTRACEABLE

_stream: dict[str, Any] = {"seed": 0, "key": None, "count": 0}


def manual_seed(seed: int) -> None:
    """Restarts the global initialisation stream at `seed`, like `torch.manual_seed`.

    Layers built afterwards without `seed=` draw consecutive keys from it.

    Raises:
        TypeError: If `seed` is not an integer.

    Example:
        >>> from blox import eager as nn
        >>> nn.manual_seed(0); a = nn.Linear(2, 2)
        >>> nn.manual_seed(0); b = nn.Linear(2, 2)
        >>> bool((a.kernel == b.kernel).all())
        True
    """
    if not _is_int(seed):
        raise TypeError(
            f"nn.manual_seed: expected an int seed, got {type(seed).__name__}. "
            "Fix: pass e.g. nn.manual_seed(0)."
        )
    _stream.update(seed=int(seed), key=None, count=0)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def _key(seed: int) -> jax.Array:
    # Without a compile where the host computes the same key (see core._sampling).
    key = sampling.key_from_int(seed)
    return jax.random.key(seed) if key is None else key


def _next_key(seed: Any, where: str) -> jax.Array:
    if seed is None:
        if _stream["key"] is None:
            _stream["key"] = _key(_stream["seed"])
        key = sampling.fold_in(_stream["key"], _stream["count"])
        if key is None:
            key = jax.random.fold_in(_stream["key"], _stream["count"])
        _stream["count"] += 1
        return key
    if _is_int(seed):
        # Any size: reduced modulo 2**64 into the int64 range jax.random.key takes
        # (so seeds that differ by a multiple of 2**64 give the same stream).
        value = int(seed) % 2**64
        return _key(value - 2**64 if value >= 2**63 else value)
    if isinstance(seed, jax.Array | np.ndarray):
        if jax.dtypes.issubdtype(seed.dtype, jax.dtypes.prng_key):
            if seed.shape == ():
                return seed
        elif seed.dtype == np.uint32 and seed.shape == (2,):
            # Legacy `jax.random.PRNGKey(...)` key data, as `bx.Rng.seed` accepts.
            return jax.random.wrap_key_data(jnp.asarray(seed))
        got = f"an array of shape {tuple(seed.shape)} and dtype {seed.dtype}"
    else:
        got = type(seed).__name__
    raise TypeError(
        f"{where}: expected seed to be an int, a single typed JAX key, raw uint32[2] "
        f"key data or None, got {got}. Fix: pass seed=0 or seed=jax.random.key(0)."
    )


def example_zeros(shape: tuple[int, ...], dtype: Any = np.float32) -> jax.Array:
    """A zero example input for a layer's creating call, made without a compile.

    `jnp.zeros` compiles a small program for every new shape; a layer's
    example input is new for every configuration, so layers make it here
    (a host array put on the device) instead.

    Example:
        >>> from blox import eager as nn
        >>> nn.example_zeros((1, 3)).shape
        (1, 3)
    """
    return jax.device_put(np.zeros(shape, dtype))


def _hashable(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_hashable(v) for v in value)
    hash(value)
    return value


def build_core(
    where: str, core_cls: type, args: tuple[Any, ...], options: dict[str, Any]
) -> tuple[Any, Any]:
    """The shared, stateless core module (and its init `Rng`) for one config.

    Core modules hold configuration only, so every eager layer with the same
    configuration uses the same one, which also makes their treedefs equal.
    Part of the layer-author contract (see docs/writing-layers.md).

    Args:
        where: The layer as the user wrote it (``'nn.Linear(3, 4)'``); errors
            name it.
        core_cls: The `blox.core` module class.
        args: Its positional sizes after the graph (checked as positive ints).
        options: Its keyword options (strides, epsilon, rates and padding are
            checked; unknown names are refused).

    Returns:
        `(core_module, rng)`: the shared core module and the `Rng` to seed for
        its parameters.

    Raises:
        TypeError: For an unknown option or a size of the wrong type.
        ValueError: For a size, stride, rate, epsilon or padding out of range.

    Example:
        >>> import blox as bx
        >>> from blox import eager as nn
        >>> layer, rng = nn.build_core('nn.Linear(3, 4)', bx.Linear, (4,), {})
        >>> layer is nn.build_core('nn.Linear(3, 4)', bx.Linear, (4,), {})[0]
        True
    """
    from blox import core

    names = [
        name
        for name, p in inspect.signature(core_cls.__init__).parameters.items()
        if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    # The graph and the sizes are given positionally; the init Rng is ours.
    taken = {"rng", *names[: 1 + len(args)]}
    allowed = [name for name in names if name not in taken]
    options = _sharding_options(where, options, allowed)
    allowed += [
        name[: -len("metadata")] + "sharding" for name in allowed if name.endswith("_metadata")
    ]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(
            f"{where}: expected options among {allowed}, got unknown {unknown}. "
            "Fix: use the core layer's option names; sizes are positional arguments."
        )
    # Validated here, so errors name the eager layer as the user wrote it, not
    # the hidden core path: sizes by their core names, options by theirs.
    checks.check_options(where, dict(zip(names[1:], args)))
    for name, value in zip(names[1:], args):
        if name not in checks.BY_OPTION and checks.is_size(value):
            checks.positive_ints(where, name, value)
    checks.check_options(where, options)
    try:
        key = (core_cls, _hashable(args), _hashable(options))
    except TypeError:
        key = None
    cache = CONTEXT.core_layers
    if key is not None and key in cache:
        return cache[key]
    root = core.Graph("blox")
    rng = core.Rng(root / "rng")
    try:
        layer = core_cls(root / "layer", *args, rng=rng, **options)
    except (TypeError, ValueError) as error:
        # Name the layer as the user wrote it, not its hidden core path.
        hidden = f"{core_cls.__name__} at 'blox/layer'"
        if len(error.args) == 1 and hidden in str(error.args[0]):
            raise type(error)(str(error.args[0]).replace(hidden, where)) from None
        raise
    if key is not None:
        if len(cache) >= INIT_LIMIT:
            cache.pop(next(iter(cache)))
        cache[key] = (layer, rng)
    return layer, rng


def _sharding_options(where: str, options: dict[str, Any], allowed: list[str]) -> dict[str, Any]:
    """`<param>_sharding=names` as the core's `<param>_metadata={'sharding': names}`.

    One option name per param for every layer: whatever core option stores a
    param's metadata, its eager twin takes the param's logical axis names as
    `<param>_sharding` (read by `nn.shard` and `bx.shardings`).
    """
    out = dict(options)
    for name, names in options.items():
        target = name[: -len("sharding")] + "metadata"
        if not name.endswith("_sharding") or target not in allowed:
            continue
        if not isinstance(names, tuple) or not all(n is None or isinstance(n, str) for n in names):
            raise TypeError(
                f"{where}: expected {name} to be a tuple of logical axis names (or None), "
                f"got {names!r}. Fix: pass one name per dimension, e.g. ('embed', 'mlp')."
            )
        metadata = dict(out.pop(target, None) or {})
        if "sharding" in metadata:
            raise ValueError(
                f"{where}: expected the sharding of one param once, got both {name} and "
                f"{target}['sharding']. Fix: keep only {name}."
            )
        metadata["sharding"] = names
        del out[name]
        out[target] = metadata
    return out


def check_sizes(where: str, **values: Any) -> None:
    """Checks a layer's size arguments (positive ints, per axis for tuples).

    Part of the layer-author contract: call it with the sizes under the names
    the user passed them, before `build_core`, so the error names them.

    Raises:
        TypeError: If a size is not an int (a bool or a float is not).
        ValueError: If a size is below 1.

    Example:
        >>> from blox.eager import check_sizes
        >>> check_sizes('nn.Linear(3, 0)', in_features=3, out_features=0)
        Traceback (most recent call last):
        ValueError: nn.Linear(3, 0): expected out_features to be a positive int, got 0. Fix: pass a size of at least 1.
    """
    for name, value in values.items():
        checks.positive_ints(where, name, value)


def check_groups(where: str, count: Any, in_channels: int, out_channels: int) -> None:
    """Checks a grouped layer's group count: an int >= 1 dividing both channel counts.

    Raises:
        TypeError: If `count` is not an int.
        ValueError: If it is below 1 or does not divide a channel count.

    Example:
        >>> from blox.eager import check_groups
        >>> check_groups('nn.Conv(4, 6, kernel_size=(3,))', 3, 4, 6)
        Traceback (most recent call last):
        ValueError: nn.Conv(4, 6, kernel_size=(3,)): expected feature_group_count to divide in_channels 4, got 3. Fix: pick a feature_group_count that divides both channel counts.
    """
    checks.positive_int(where, "feature_group_count", count)
    checks.divides(where, "feature_group_count", count, "in_channels", in_channels)
    checks.divides(where, "feature_group_count", count, "out_channels", out_channels)


def init_params(
    where: str,
    rng: Any,
    seed: Any,
    create: Callable[[Any], Any],
    signature: Any = None,
) -> Any:
    """Seeds the init `Rng` and runs `create(params)` to make every parameter.

    With a hashable `signature` (the shared core layer and the example input
    shape: everything `create` depends on besides the key), `create` runs as
    one compiled program, cached under it, so building a layer costs one
    dispatch instead of compiling each random primitive for each new shape.
    Initialisers that need concrete values (e.g. `int(key_data)` to seed
    numpy) cannot be compiled: that configuration then runs op by op, with
    one warning. Part of the layer-author contract (see
    docs/writing-layers.md).

    Args:
        where: The layer as the user wrote it (for errors and warnings).
        rng: The `Rng` returned by `build_core`.
        seed: The user's `seed=` (int, key, or `None` for the global stream).
        create: `params -> params`: runs the core module once to create them.
        signature: Hashable description of everything `create` depends on
            besides the key, or `None` not to compile.

    Returns:
        The created `blox.core.Params`, in creation order.

    Raises:
        TypeError: If `seed` is not an int, a key or `None`.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> from blox import eager as nn
        >>> layer, rng = nn.build_core('nn.Linear(3, 4)', bx.Linear, (4,), {})
        >>> params = nn.init_params('nn.Linear(3, 4)', rng, 0,
        ...                         lambda p: layer(p, jnp.zeros((1, 3)))[1])
        >>> sorted('/'.join(path) for path in params.keys() if path[1] == 'layer')
        ['blox/layer/bias', 'blox/layer/kernel']
    """
    from blox import core

    key = _next_key(seed, where)
    cached = CONTEXT.init_programs.get(signature) if signature is not None else None
    if signature is None or cached is _OP_BY_OP or jax.config.jax_disable_jit:
        return create(rng.seed(core.Params(), seed=key))
    if isinstance(cached, _Plan):
        params = cached.replay(rng, key)
        if params is not None:
            return params
    if cached is None or cached is _SAMPLED or isinstance(cached, _Plan):
        found = _sampled(create, rng, key)
        if found is not None:
            params, plan = found
            if signature not in CONTEXT.init_programs and len(CONTEXT.init_programs) >= INIT_LIMIT:
                CONTEXT.init_programs.pop(next(iter(CONTEXT.init_programs)))
            CONTEXT.init_programs[signature] = _SAMPLED if plan is None else plan
            return params
        cached = None
    if cached is None:
        order: list[tuple[str, ...]] = []

        def run(key: jax.Array) -> Any:
            params = create(rng.seed(core.Params(), seed=key))
            order[:] = params.keys()
            return params

        cached = (jax.jit(run), order)
        if len(CONTEXT.init_programs) >= INIT_LIMIT:
            # Configurations the core cache cannot key (unhashable options) make a
            # new layer, hence a new signature, each time: keep the cache bounded.
            CONTEXT.init_programs.pop(next(iter(CONTEXT.init_programs)))
        CONTEXT.init_programs[signature] = cached
    jitted, order = cached
    try:
        params = jitted(key)
    except _UNTRACEABLE as error:
        CONTEXT.init_programs[signature] = _OP_BY_OP
        warnings.warn(
            f"{where}: its initialisers could not be compiled ({type(error).__name__}: "
            "they need concrete values), so this configuration is built op by op, "
            "which is slower. Fix: write custom initialisers with jax.numpy and "
            "jax.random on the key they receive (no int() or np.asarray of it).",
            UserWarning,
            stacklevel=3,
        )
        return create(rng.seed(core.Params(), seed=key))
    # A pytree comes back in sorted path order; the layer's attributes (and so
    # its state_dict) follow creation order, as PyTorch lists weight before bias.
    return core.Params.from_dict({path: params[path] for path in order}, locked=params.is_locked)


# CONTEXT.init_programs: signature -> (jitted, creation order), _OP_BY_OP, _SAMPLED
# or a _Plan
_OP_BY_OP = object()
_SAMPLED = object()


class _NotSampled(Exception):
    """A parameter the fixed-size sampling programs do not cover."""


def _draw_counted(
    rng: Any, params: Any, init: Any, shape: tuple[int, ...], dtype: Any
) -> tuple[Any, Any, int | None, Any]:
    """Creates one parameter concretely inside `_sampled`'s abstract trace.

    Returns the value, the params (counter advanced), and the counter and seed
    its key was folded from (`None` without an `Rng`).
    """
    key = count = seed = None
    if rng is not None:
        with jax.ensure_compile_time_eval():
            # Rng.__call__ on the host: fold_in(seed, counter), counter + 1.
            count = rng.get_counter(params)
            if isinstance(count, jax.core.Tracer):
                raise _NotSampled
            count = int(count)
            seed = rng.get_seed(params)
            key = sampling.fold_in(seed, count)
            if key is None:
                raise _NotSampled
            params = rng.seed(params, counter=np.uint32((count + 1) % 2**32))
    # Outside compile-time evaluation: under it, compiling a sampling program
    # would also run (and compile) each constant operation in it.
    value = sampling.sample(init, key, shape, dtype)
    if value is None:
        raise _NotSampled
    return value, params, count, seed


class _Plan:
    """How a sampled configuration's params were made, to make them again for a new key.

    `create` depends on nothing but its signature and the key (the contract
    that lets `init_params` cache a compiled `create` per signature), so a
    second layer of the same configuration draws the same initialisers at the
    same shapes and counters: replaying them skips tracing `create` again.
    `entries` holds, in creation order, each param's path, trainable flag,
    metadata and source: ``'seed'`` (the key), the index of a draw, or a host
    copy of a value that does not depend on the key (the final counter).
    """

    def __init__(self, rng: Any, draws: list[tuple[Any, ...]], entries: list[Any], locked: bool):
        self.rng, self.draws, self.entries, self.locked = rng, draws, entries, locked

    def replay(self, rng: Any, key: jax.Array) -> Any:
        """The params `create` would make from `key`, or `None` where not possible."""
        from blox import core

        if rng is not self.rng:
            return None
        values = []
        for init, shape, dtype, count in self.draws:
            folded = None if count is None else sampling.fold_in(key, count)
            if count is not None and folded is None:
                return None  # not a concrete threefry key: the caller traces as usual
            value = sampling.sample(init, folded, shape, dtype)
            if value is None:
                return None
            values.append(value)
        data = {}
        for path, trainable, metadata, source in self.entries:
            if isinstance(source, str):
                value = key
            elif isinstance(source, int):
                value = values[source]
            else:  # a fresh buffer per layer: a shared one could be donated twice
                value = jax.device_put(source)
            data[path] = core.Param(value, trainable=trainable, metadata=dict(metadata))
        return core.Params._make(data, self.locked)


def _make_plan(rng: Any, key: jax.Array, drawn: list[tuple[Any, ...]], params: Any) -> Any:
    """The `_Plan` of `params` made from `key` by `drawn`, or `None` if not replayable."""
    draws, index = [], {}
    for number, (rng_used, init, shape, dtype, count, seed, value) in enumerate(drawn):
        if count is not None and (rng_used is not rng or seed is not key):
            return None  # drawn from another Rng, or a seed not the key
        draws.append((init, shape, dtype, count))
        index[id(value)] = number
    entries = []
    for path, param in params.items():
        value = param.value
        if value is key:
            source: Any = "seed"
        elif id(value) in index:
            source = index[id(value)]
        elif (
            isinstance(value, jax.Array)
            and not jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key)
            and not value.weak_type  # a host copy would lose it
        ):
            source = np.asarray(value)
        else:
            return None
        entries.append((path, param.trainable, param.metadata, source))
    return _Plan(rng, draws, entries, params.is_locked)


def _sampled(create: Callable[[Any], Any], rng: Any, key: jax.Array) -> Any:
    """`create`'s params with values from `blox.core._sampling`, and their `_Plan`, or `None`.

    `create` runs abstractly (`jax.eval_shape`: its example forward pass is
    traced, never compiled), while every parameter is drawn and initialised
    concretely as it is created, from programs compiled once per process (and
    kept on disk): so a new shape costs no compile. Returns `None` when some
    parameter is not covered (another initialiser or dtype) or is computed
    from the forward pass; the caller then compiles `create` as before. The
    plan is `None` where the params cannot be replayed from a new key.
    """
    from blox import core

    seeded = rng.seed(core.Params(), seed=key, counter=np.uint32(0))
    made: list[Any] = []
    drawn: list[tuple[Any, ...]] = []

    def hook(rng_used: Any, params: Any, init: Any, shape: tuple[int, ...], dtype: Any) -> Any:
        value, params, count, seed = _draw_counted(rng_used, params, init, shape, dtype)
        drawn.append((rng_used, init, shape, dtype, count, seed, value))
        return value, params

    def run() -> None:
        with sampling.planning(hook):
            params = create(seeded)
        if not any(isinstance(p.value, jax.core.Tracer) for p in params.values()):
            made.append(params)

    try:
        jax.eval_shape(run)
    except Exception:
        # Not covered (_NotSampled), or the creating call cannot run abstractly;
        # a real error in it is raised again, as before, by the compiled path.
        return None
    if not made:
        return None
    return made[0], _make_plan(rng, key, drawn, made[0])
