"""Initial values without a compile per shape: fixed-size sampling programs.

JAX's default random bits (threefry, `jax_threefry_partitionable`, the
default since 0.5) give element `i` of any draw the bits
`threefry(key, i)`, whatever the shape: so the values of a flat draw of
`n` elements are the first `n` of a longer one, and a `(784, 1024)` kernel
is the flat draw reshaped. `sample` uses that to make the initial values of
the common initialisers (`VarianceScaling`, hence lecun normal; `Uniform`,
PyTorch's default; `zeros` and `ones`) from a few programs of one fixed
chunk size, each compiled once per process, instead of one program per
parameter shape: one makes a chunk's random bits (threefry), and one per
distribution turns bits into values. Values are bit for
bit those of the compiled initialiser (tests/core/test_sampling.py checks a
spread of shapes, scales, modes and distributions).

The compiled programs are also kept on disk (serialised executables, about
25 KiB each), so a new process loads them instead of compiling: under
`$BLOX_CACHE_DIR`, default `~/.cache/blox`; set `BLOX_CACHE_DIR=off` to
neither read nor write. Only these sampling programs are stored there; JAX's
own persistent compilation cache is untouched. A file's name carries the
JAX, jaxlib and device versions, a hash of `XLA_FLAGS` and one of this
module's source, so a program compiled under other settings or by other
code is never loaded.
"""

import contextlib
import functools
import hashlib
import math
import os
import pickle
import threading
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from jax import lax

from ._initializers import Uniform, VarianceScaling

CHUNK = 1 << 16
"""Elements per call of a sampling program."""

_programs: dict[str, Any] = {}

# While `planning(hook)` runs, `Module.get_param` creates parameters through
# `hook(rng, params, init, shape, dtype)` instead of drawing and initialising.
PLANNER: list[Callable[..., Any]] = []


@contextlib.contextmanager
def planning(hook: Callable[..., Any]) -> Iterator[None]:
    """Routes parameter creation in `Module.get_param` through `hook` (internal)."""
    PLANNER.append(hook)
    try:
        yield
    finally:
        PLANNER.pop()


def cache_dir() -> str | None:
    """Where the compiled sampling programs are kept, or `None` when switched off.

    `$BLOX_CACHE_DIR` if set (``off``, ``0``, ``none`` or empty switch it off),
    otherwise ``~/.cache/blox``.

    Example:
        >>> import os
        >>> from blox.core._sampling import cache_dir
        >>> os.environ['BLOX_CACHE_DIR'] = 'off'
        >>> cache_dir() is None
        True
        >>> del os.environ['BLOX_CACHE_DIR']
    """
    value = os.environ.get("BLOX_CACHE_DIR")
    if value is None:
        return os.path.join(os.path.expanduser("~"), ".cache", "blox")
    if value.strip().lower() in ("", "0", "off", "none", "false"):
        return None
    return value


_MASK = 0xFFFFFFFF
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def threefry2x32(k1: int, k2: int, x1: int, x2: int) -> tuple[int, int]:
    """One threefry-2x32 block (20 rounds) on Python ints, as JAX's `threefry2x32_p`.

    Integer arithmetic modulo 2**32, so exact: key derivation for one key
    costs microseconds on the host instead of a compiled program.

    Example:
        >>> import jax, numpy as np
        >>> from blox.core._sampling import threefry2x32
        >>> key = jax.random.key(7)
        >>> k1, k2 = (int(v) for v in np.asarray(jax.random.key_data(key)))
        >>> folded = np.asarray(jax.random.key_data(jax.random.fold_in(key, 3)))
        >>> threefry2x32(k1, k2, 0, 3) == tuple(int(v) for v in folded)
        True
    """
    keys = (k1, k2, k1 ^ k2 ^ 0x1BD11BDA)
    x = [(x1 + keys[0]) & _MASK, (x2 + keys[1]) & _MASK]
    for block in range(5):
        for rotation in _ROTATIONS[block % 2]:
            x[0] = (x[0] + x[1]) & _MASK
            x[1] = ((x[1] << rotation) | (x[1] >> (32 - rotation))) & _MASK
            x[1] ^= x[0]
        x[0] = (x[0] + keys[(block + 1) % 3]) & _MASK
        x[1] = (x[1] + keys[(block + 2) % 3] + block + 1) & _MASK
    return x[0], x[1]


def _threefry_default() -> bool:
    return str(jax.config.jax_default_prng_impl) == "threefry2x32" and not jax.config.jax_enable_x64


def key_from_int(seed: int) -> jax.Array | None:
    """`jax.random.key(seed)` without a compile, or `None` where it would differ.

    Covered: JAX's default threefry keys with 64-bit types off (the default),
    where the key data is `[0, seed mod 2**32]`.

    Example:
        >>> import jax
        >>> from blox.core._sampling import key_from_int
        >>> same = jax.random.key_data(key_from_int(5)) == jax.random.key_data(jax.random.key(5))
        >>> bool(same.all())
        True
    """
    if not _threefry_default():
        return None
    return jax.random.wrap_key_data(np.array([0, seed & _MASK], np.uint32))


def fold_in(key: Any, data: int) -> jax.Array | None:
    """`jax.random.fold_in(key, data)` for a concrete threefry key, without a compile.

    Returns `None` for any other key (a tracer, another implementation).

    Example:
        >>> import jax
        >>> from blox.core._sampling import fold_in
        >>> key = jax.random.key(0)
        >>> bool((jax.random.key_data(fold_in(key, 9))
        ...       == jax.random.key_data(jax.random.fold_in(key, 9))).all())
        True
    """
    if not _threefry_key(key) or not 0 <= data <= _MASK:
        return None
    k1, k2 = _key_words(key)
    return jax.random.wrap_key_data(np.array(threefry2x32(k1, k2, 0, data), np.uint32))


def _key_words(key: jax.Array) -> tuple[int, int]:
    """A concrete threefry key's two uint32 words."""
    # `key_data` works out the key's sharding each call (milliseconds); the
    # typed key array keeps its data as `_base_array`.
    data = getattr(key, "_base_array", None)
    if data is None:
        data = jax.random.key_data(key)
    k1, k2 = (int(v) for v in np.asarray(data))
    return k1, k2


def _threefry_key(key: Any) -> bool:
    if not isinstance(key, jax.Array) or isinstance(key, jax.core.Tracer):
        return False
    if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) or key.shape != ():
        return False
    return str(jax.random.key_impl(key)) == "threefry2x32"


def _threefry_unrolled(
    k1: jax.Array, k2: jax.Array, x1: jax.Array, x2: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """`threefry2x32_p` on uint32 arrays as straight-line ops (as `threefry2x32`).

    On CPU JAX lowers the primitive to a rolled loop, which XLA compiles in
    about three times the time of these 20 unrolled rounds; integer
    arithmetic, so the bits are the same (tests/core/test_sampling.py).
    Written in `lax` primitives: each `jnp` operator is a jitted function of
    its own, and tracing those ~130 of them was most of the time a
    process's first model construction spent before XLA compiled anything.
    """
    add, xor = lax.add, lax.bitwise_xor
    keys = (k1, k2, xor(xor(k1, k2), np.uint32(0x1BD11BDA)))
    x = [add(x1, keys[0]), add(x2, keys[1])]
    for block in range(5):
        for rotation in _ROTATIONS[block % 2]:
            x[0] = add(x[0], x[1])
            left = lax.shift_left(x[1], np.uint32(rotation))
            x[1] = lax.bitwise_or(left, lax.shift_right_logical(x[1], np.uint32(32 - rotation)))
            x[1] = xor(x[1], x[0])
        x[0] = add(x[0], keys[(block + 1) % 3])
        x[1] = add(add(x[1], keys[(block + 2) % 3]), np.uint32(block + 1))
    return x[0], x[1]


def _bits(k1: jax.Array, k2: jax.Array, high: jax.Array, low: jax.Array) -> jax.Array:
    """One chunk's random bits: threefry key `(k1, k2)`, from element `(high, low)` on.

    Four uint32 scalars rather than one array: indexing an array is a `jnp`
    call of its own to trace.
    """
    lows = lax.add(low, lax.iota(np.uint32, CHUNK))
    highs = lax.add(high, lax.convert_element_type(lax.lt(lows, low), np.uint32))
    bits1, bits2 = _threefry_unrolled(k1, k2, highs, lows)
    # As jax's partitionable threefry: element i gets threefry(key, i), folded.
    return lax.bitwise_xor(bits1, bits2)


def _unit_floats(bits: jax.Array) -> jax.Array:
    """Floats in [0, 1) from 32 random bits each, as `jax.random.uniform` makes them.

    The top 23 bits become the mantissa of a float in [1, 2), less one.
    """
    mantissa = lax.shift_right_logical(bits, np.uint32(32 - 23))
    one = lax.bitwise_or(mantissa, np.array(1.0, np.float32).view(np.uint32))
    return lax.sub(lax.bitcast_convert_type(one, np.float32), np.float32(1))


def _uniform(bits: jax.Array, low: Any, high: Any) -> jax.Array:
    """`jax.random.uniform(key, (CHUNK,), float32, low, high)` for a key drawing `bits`."""
    spread = lax.sub(high, low)
    return lax.max(low, lax.add(lax.mul(_unit_floats(bits), spread), low))


def _draw(kind: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """`kind`'s values from one chunk of bits: JAX's own formulas, op for op.

    Written in `lax` primitives rather than by calling `jax.random` on a key
    of given bits: the same operations in the same order (so the same
    numbers, which tests/core/test_sampling.py checks bit for bit against
    the compiled initialiser), traced and lowered in half the time, which a
    process's first model construction waits for.
    """
    sqrt2 = np.float32(np.sqrt(2))

    def draw(bits: jax.Array, scale: jax.Array) -> jax.Array:
        if kind == "bounded_uniform":  # `Uniform(bound)`: `scale` is the bound
            return _uniform(bits, lax.neg(scale), scale)
        if kind == "uniform":
            return lax.mul(_uniform(bits, np.float32(-1), np.float32(1)), scale)
        if kind == "normal":
            low = np.nextafter(np.float32(-1), np.float32(0))
            unit = _uniform(bits, low, np.float32(1))
            return lax.mul(lax.mul(sqrt2, lax.erf_inv(unit)), scale)
        # truncated_normal on [-2, 2]: the inverse CDF of a uniform on [erf(-2/√2), erf(2/√2)].
        lower, upper = np.float32(-2), np.float32(2)
        a = lax.erf(lax.div(lower, sqrt2))
        b = lax.erf(lax.div(upper, sqrt2))
        values = lax.mul(sqrt2, lax.erf_inv(_uniform(bits, a, b)))
        low = lax.nextafter(lower, np.float32(np.inf))
        high = lax.nextafter(upper, np.float32(-np.inf))
        return lax.mul(lax.min(lax.max(values, low), high), scale)

    return draw


@functools.cache
def _source_hash() -> str | None:
    """A hash of this file, so a program written by other code of it is never loaded.

    `None` where the source cannot be read (a frozen or source-less install):
    the disk cache is then not used, rather than risk a stale program.
    """
    try:
        with open(__file__, "rb") as file:
            return hashlib.sha256(file.read()).hexdigest()[:12]
    except OSError:
        return None


def _cache_file(name: str) -> str | None:
    folder, source = cache_dir(), _source_hash()
    if folder is None or source is None:
        return None
    import jaxlib

    device = jax.devices()[0]
    tag = f"{device.platform}-{device.device_kind}".replace(" ", "_").replace(os.sep, "_")
    stem = f"init-{name}-{CHUNK}-{source}-jax{jax.__version__}-jaxlib{jaxlib.__version__}"
    # A program compiled under other XLA flags may round differently: key on them.
    flags = hashlib.sha256(os.environ.get("XLA_FLAGS", "").encode()).hexdigest()[:12]
    return os.path.join(folder, f"{stem}-{tag}-xla{flags}.bin")


def _load(name: str) -> Any:
    """Program `name` from memory or from the disk cache, or `None`."""
    program = _programs.get(name)
    if program is not None:
        return program
    path = _cache_file(name)
    if path is not None and os.path.exists(path):
        from jax.experimental import serialize_executable

        try:
            with open(path, "rb") as file:
                payload, in_tree, out_tree = pickle.load(file)
            program = serialize_executable.deserialize_and_load(payload, in_tree, out_tree)
        except Exception:
            program = None  # a stale or damaged file: compile afresh and replace it
    return program


def _compile(name: str, lowered: Any, done: list[Any]) -> None:
    """Compiles `lowered`, stores it on disk, and appends it (or the error) to `done`."""
    try:
        program = lowered.compile()
        path = _cache_file(name)
        if path is not None:
            from jax.experimental import serialize_executable

            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                temporary = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
                with open(temporary, "wb") as file:
                    pickle.dump(serialize_executable.serialize(program), file)
                os.replace(temporary, path)
            except OSError:
                pass  # an unwritable cache only costs the next process a compile
        done.append(program)
    except BaseException as error:  # raised again by the waiting caller
        done.append(error)


def _program(kind: str) -> tuple[Any, Any]:
    """The compiled bits program and `kind`'s transform: from memory, disk, or compiled.

    Two programs, not one: the bits (threefry, shared by every kind) and the
    transform compile in about the same time, and XLA releases the GIL while
    it compiles, so on a cold start the bits compile in a thread while this
    one lowers and compiles the transform.
    """
    bits, draw = _load("bits"), _load(kind)
    compiling: list[Any] = []
    thread = None
    if bits is None:
        lowered = jax.jit(_bits).lower(*[np.uint32(0)] * 4)
        thread = threading.Thread(target=_compile, args=("bits", lowered, compiling))
        thread.start()
    if draw is None:
        compiled: list[Any] = []
        lowered = jax.jit(_draw(kind)).lower(np.zeros(CHUNK, np.uint32), np.float32(1))
        _compile(kind, lowered, compiled)
        draw = compiled[0]
    if thread is not None:
        thread.join()
        bits = compiling[0]
    for program in (bits, draw):
        if isinstance(program, BaseException):
            raise program
    _programs["bits"], _programs[kind] = bits, draw
    return bits, draw


def _fans(init: VarianceScaling, shape: tuple[int, ...]) -> float:
    """The denominator `jax.nn.initializers.variance_scaling` divides `scale` by."""

    def size(axis: Any) -> int:
        return shape[axis] if isinstance(axis, int) else math.prod(shape[i] for i in axis)

    in_size, out_size = size(init.in_axis), size(init.out_axis)
    receptive = math.prod(shape) / in_size / out_size / 1
    fan_in, fan_out = in_size * receptive, out_size * receptive
    return {
        "fan_in": fan_in,
        "fan_out": fan_out,
        "fan_avg": (fan_in + fan_out) / 2,
        "fan_geo_avg": (fan_in * fan_out) ** 0.5,
    }[init.mode]


def _variance_scale(init: VarianceScaling, shape: tuple[int, ...]) -> np.float32 | None:
    """What `init`'s unit draw is multiplied by, in float32, or `None` if not covered."""
    if init.mode not in ("fan_in", "fan_out", "fan_avg"):
        return None
    if init.distribution not in ("truncated_normal", "normal", "uniform"):
        return None
    try:
        denominator = _fans(init, shape)
    except (IndexError, ZeroDivisionError):
        return None
    # The scale as variance_scaling computes it, in float32 (IEEE sqrt and divide).
    variance = np.float32(init.scale / denominator)
    if init.distribution == "truncated_normal":
        return np.sqrt(variance) / np.float32(0.87962566103423978)
    if init.distribution == "normal":
        return np.sqrt(variance)
    return np.sqrt(np.float32(3) * variance)


def sample(init: Any, key: Any, shape: tuple[int, ...], dtype: Any) -> jax.Array | None:
    """`init(key, shape, dtype)` from the fixed-size programs, or `None` if not covered.

    Covered: `jax.nn.initializers.zeros` and `ones` (any dtype, no compile), and
    `VarianceScaling` and `Uniform` with float32 values and a threefry key
    (JAX's default).
    Anything else returns `None`, and the caller initialises as usual. The
    values are concrete arrays even when called inside a trace.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from blox.core._initializers import LECUN_NORMAL
        >>> from blox.core._sampling import sample
        >>> key = jax.random.key(0)
        >>> fast = sample(LECUN_NORMAL, key, (3, 5), jnp.float32)
        >>> bool((fast == jax.jit(lambda k: LECUN_NORMAL(k, (3, 5)))(key)).all())
        True
    """
    shape = tuple(int(d) for d in shape)
    if init is jax.nn.initializers.zeros or init is jax.nn.initializers.ones:
        fill = np.zeros if init is jax.nn.initializers.zeros else np.ones
        return _concrete(fill(shape, np.dtype(dtype)))
    if type(init) not in (VarianceScaling, Uniform) or key is None:
        return None
    if np.dtype(dtype) != np.float32:
        return None
    size = math.prod(shape)
    if not jax.config.jax_threefry_partitionable or not 0 < size < 2**32 - CHUNK:
        return None
    if not _threefry_key(key):
        return None
    if type(init) is Uniform:
        kind, scale = "bounded_uniform", np.float32(init.bound)
    else:
        found = _variance_scale(init, shape)
        if found is None:
            return None
        kind, scale = init.distribution, found
    bits, draw = _program(kind)
    k1, k2 = _key_words(key)
    out = np.empty(size, np.float32)
    scale = np.float32(scale)
    # Every chunk dispatched before the first is read: JAX runs them while
    # Python queues the rest, instead of one round trip per chunk.
    starts = range(0, size, CHUNK)
    k1, k2, high = np.uint32(k1), np.uint32(k2), np.uint32(0)
    chunks = [draw(bits(k1, k2, high, np.uint32(start)), scale) for start in starts]
    for start, chunk in zip(starts, chunks):
        out[start : start + CHUNK] = np.asarray(chunk)[: size - start]
    return _concrete(out.reshape(shape))


def _concrete(values: np.ndarray) -> jax.Array:
    # `device_put` inside a trace would give a tracer.
    with jax.ensure_compile_time_eval():
        return jax.device_put(values)
