"""What every benchmark group shares: contender names, programs, results, data.

A contender is a function `build(spec) -> make`. Calling `build` does the
untimed setup (models, optimiser state, data); calling `make()` creates the
jitted function afresh and returns a `Program`, whose `step()` does exactly one
call or one training step. A training step keeps its state (parameters,
optimiser state, RNG, running statistics) in the closure and feeds it into the
next call, so every measured step depends on the one before it, as in real
training. The split lets the compile group time `make().step()` from a cold
start and the other groups time `step()` warm.
"""

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np

# Contender names, shared by every row so the table reads down the columns.
RAW = "raw JAX (jax.jit)"
RAW_EAGER = "raw JAX (op-by-op, no jit)"
RAW_EQX = "raw JAX (eqx.filter_jit)"
RAW_AGAIN = "raw JAX (jax.jit), a second copy"
BLOX_EAGER = "blox eager (no jit)"
BLOX_EAGER_NOCHECK = "blox eager (no jit, typecheck off)"
BLOX_FILTER_JIT = "blox eager (nn.filter_jit)"
BLOX_EQX_JIT = "blox eager (eqx.filter_jit)"
BLOX_CORE = "blox core (jax.jit)"
EQX = "Equinox (eqx.filter_jit)"
NNX = "Flax NNX (nnx.jit)"
NNX_CACHED = "Flax NNX (nnx.cached_partial)"
TORCH = "PyTorch (eager)"

BLOX_NAMES = (BLOX_EAGER, BLOX_EAGER_NOCHECK, BLOX_FILTER_JIT, BLOX_EQX_JIT, BLOX_CORE)

LEARNING_RATE = 1e-3


class Program(NamedTuple):
    """One ready contender: `step()` does one call; `lower()` gives its `jax.stages.Lowered`.

    `lower` is `None` where there is nothing to lower (PyTorch, op-by-op JAX)
    or the API offers no way to get at the compiled program.
    """

    step: Callable[[], Any]
    lower: Callable[[], Any] | None = None


@dataclass(frozen=True)
class Contender:
    """A named way to run a row's workload.

    `build(spec)` does the untimed setup and returns `make`; `make()` returns
    a `Program`. `requires` lists the packages it imports (a missing one skips
    it with a note). `target` is the largest ratio to the row's baseline the
    lead aims for, or `None`. With `against` (another contender of the row)
    the target bounds the ratio to that contender instead: blox driven by
    `eqx.filter_jit` is held to raw JAX driven by `eqx.filter_jit`, so the
    target measures what blox adds, not what Equinox's dispatcher costs.
    """

    name: str
    build: Callable[[Any], Callable[[], Program]]
    requires: tuple[str, ...] = ()
    target: float | None = None
    note: str = ""
    against: str | None = None


@dataclass
class Result:
    """One cell of the report: a contender's median in one row, or why it has none."""

    group: str
    row: str
    contender: str
    unit: str
    value: float | None = None
    low: float | None = None  # first quartile over rounds
    high: float | None = None  # third quartile over rounds
    baseline: bool = False
    target: float | None = None
    note: str = ""
    error: bool = False
    ratio: float | None = None  # paired ratio to the row's baseline (median over rounds)
    ratio_low: float | None = None  # its quartiles over rounds
    ratio_high: float | None = None
    against: str | None = None  # the contender the target compares with (default: baseline)
    target_ratio: tuple[float, float, float] | None = None  # paired ratio to `against`, quartiles
    plotted: bool = True  # False keeps a result out of the chart (it stays in the table)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    """Repeat counts; `--quick` shrinks them to a smoke run."""

    quick: bool
    rounds: int  # timed rounds per row, each running every contender once
    warmup: int  # untimed calls per contender first (the first one compiles)
    min_time: float  # seconds each contender's inner loop runs per round
    long_min_time: float  # the same for steps of tens of milliseconds (compute, recurrent)
    compile_rounds: int

    @classmethod
    def make(cls, quick: bool) -> "Settings":
        if quick:
            return cls(
                quick=True,
                rounds=3,
                warmup=2,
                min_time=0.005,
                long_min_time=0.005,
                compile_rounds=1,
            )
        # A 180 ms step would otherwise be one call per round: one noisy sample.
        return cls(
            quick=False,
            rounds=31,
            warmup=3,
            min_time=0.1,
            long_min_time=0.3,
            compile_rounds=9,
        )


def missing(packages: tuple[str, ...]) -> str | None:
    """The first of `packages` that is not installed, or `None`."""
    for name in packages:
        if importlib.util.find_spec(name) is None:
            return name
    return None


def classification_data(
    batch: int, shape: tuple[int, ...], classes: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Random float32 inputs `(batch, *shape)` and int32 labels `(batch,)`."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *shape), dtype=np.float32)
    y = rng.integers(0, classes, size=(batch,), dtype=np.int32)
    return x, y


def temp_bytes(lowered: Any) -> int:
    """Temporary buffer bytes XLA allocates for a lowered program.

    Equinox wraps `jax.stages.Lowered` (its `.lowered`); Flax returns JAX's.
    """
    lowered = getattr(lowered, "lowered", lowered)
    analysis = lowered.compile().memory_analysis()
    if analysis is None:
        raise RuntimeError("this backend returns no memory analysis")
    return int(analysis.temp_size_in_bytes)


def chained(jitted: Callable[..., Any], state: tuple[Any, ...], *args: Any) -> Program:
    """A program whose step is `*state, out = jitted(*state, *args)`, returning `out`.

    Each step feeds the state the previous one returned, so a training step
    really trains. `lower` lowers with the current state, if `jitted` can.
    """
    box = list(state)

    def step() -> Any:
        *new, out = jitted(*box, *args)
        box[:] = new
        return out

    lower = getattr(jitted, "lower", None)
    if lower is None:
        return Program(step)
    return Program(step, lambda: lower(*box, *args))


def pick(
    table: dict[str, Contender],
    names: list[str],
    targets: dict[str, float] | None = None,
    against: dict[str, str] | None = None,
) -> list[Contender]:
    """The contenders `names` from `table`, in that order, with `targets` (and `against`) attached."""
    targets, against = targets or {}, against or {}
    return [
        replace(table[name], target=targets.get(name), against=against.get(name)) for name in names
    ]


def reused(contenders: list[Contender], programs: dict[str, Program]) -> list[Contender]:
    """`contenders` whose programs are made once and kept in `programs`, by name.

    Two rows timing the same workload two ways (blocked and pipelined) then
    share one built, compiled and warmed program per contender, so the second
    row costs no setup and a training step carries on from the state the first
    row left.
    """

    def keep(contender: Contender) -> Contender:
        def build(spec: Any) -> Callable[[], Program]:
            program = programs.get(contender.name)
            if program is None:
                program = programs[contender.name] = contender.build(spec)()
            return lambda: program

        return replace(contender, build=build)

    return [keep(contender) for contender in contenders]


# The build group runs blox eager twice: with its disk cache of sampling
# programs filled by an earlier process (as every run after the first), and empty.
BLOX_EAGER_COLD_DISK = "blox eager (no jit, empty disk cache)"
