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

from ._module import _UNTRACEABLE

_stream: dict[str, Any] = {"seed": 0, "key": None, "count": 0}
_core_cache: dict[Any, Any] = {}


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


def _next_key(seed: Any, where: str) -> jax.Array:
    if seed is None:
        if _stream["key"] is None:
            _stream["key"] = jax.random.key(_stream["seed"])
        key = jax.random.fold_in(_stream["key"], _stream["count"])
        _stream["count"] += 1
        return key
    if _is_int(seed):
        return jax.random.key(int(seed))
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
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(
            f"{where}: expected options among {allowed}, got unknown {unknown}. "
            "Fix: use the core layer's option names; sizes are positional arguments."
        )
    try:
        key = (core_cls, _hashable(args), _hashable(options))
    except TypeError:
        key = None
    if key is not None and key in _core_cache:
        return _core_cache[key]
    root = core.Graph("blox")
    rng = core.Rng(root / "rng")
    layer = core_cls(root / "layer", *args, rng=rng, **options)
    if key is not None:
        _core_cache[key] = (layer, rng)
    return layer, rng


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
    one warning.
    """
    from blox import core

    key = _next_key(seed, where)
    cached = _init_cache.get(signature) if signature is not None else None
    if signature is None or cached is _OP_BY_OP or jax.config.jax_disable_jit:
        return create(rng.seed(core.Params(), seed=key))
    if cached is None:
        order: list[tuple[str, ...]] = []

        def run(key: jax.Array) -> Any:
            params = create(rng.seed(core.Params(), seed=key))
            order[:] = params.keys()
            return params

        cached = (jax.jit(run), order)
        if len(_init_cache) >= _INIT_CACHE_SIZE:
            # Configurations the core cache cannot key (unhashable options) make a
            # new layer, hence a new signature, each time: keep the cache bounded.
            _init_cache.pop(next(iter(_init_cache)))
        _init_cache[signature] = cached
    jitted, order = cached
    try:
        params = jitted(key)
    except _UNTRACEABLE as error:
        _init_cache[signature] = _OP_BY_OP
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


_init_cache: dict[Any, Any] = {}  # signature -> (jitted, creation order) or _OP_BY_OP
_OP_BY_OP = object()
_INIT_CACHE_SIZE = 512
