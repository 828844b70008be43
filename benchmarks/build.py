"""Building a model, and its first call and training step, each in a fresh process.

Every timed event runs in a new Python process (see `_fresh.py`), after its
imports, a small warm-up compile and untimed setup: nothing compiled earlier
in the run can help it, as when a user starts a script. Three models are
constructed in every library's own way (raw JAX: `jax.random.normal` per
kernel; blox core: the creating call; blox eager, Equinox, Flax NNX, PyTorch:
their constructors): the compute group's MLP (784-1024x3-10), a CNN of 10
differently shaped 3x3 convolutions each with a BatchNorm, and 24 layers of
512x512. Then, on the MLP, the first jitted forward and the first Adam step
(trace, compile, run).

blox eager makes initial values with a few fixed-size sampling programs that
it keeps on disk (`$BLOX_CACHE_DIR`, see docs/state-threading.md): its main
row finds them there, as every run but a machine's first does; the "empty
disk cache" row starts from an empty folder each time, and so compiles them.
No other library keeps anything on disk here (JAX's own persistent cache is
off by default). Targets: blox eager's construction at most 0.25x
Equinox's, paired within each round; blox's first call and step at most
1.10x raw `jax.jit`'s.
"""

import shutil
import statistics
import sys
import tempfile

from . import _common as c
from ._common import Result, Settings
from ._fresh import measure
from ._timing import paired_ratio

GROUP = "build"
BUILD_NAMES = [c.RAW, c.BLOX_EAGER, c.BLOX_EAGER_COLD_DISK, c.BLOX_CORE, c.EQX, c.NNX, c.TORCH]
FIRST_NAMES = [c.RAW, c.BLOX_FILTER_JIT, c.BLOX_CORE, c.EQX, c.NNX]
BUILD_TARGETS = {c.BLOX_EAGER: 0.25, c.BLOX_EAGER_COLD_DISK: 0.25}
FIRST_TARGETS = {c.BLOX_FILTER_JIT: 1.10, c.BLOX_CORE: 1.10}
NOTES = {
    c.RAW: "jax.random.normal per kernel, op by op",
    c.BLOX_EAGER: "constructors; sampling programs loaded from the disk cache",
    c.BLOX_EAGER_COLD_DISK: "constructors; sampling programs compiled (empty cache)",
    c.BLOX_CORE: "the creating call, op by op",
    c.EQX: "constructors",
    c.NNX: "constructors",
    c.TORCH: "constructors",
}
# Construction rows are steady (quartiles within a few percent over 3 rounds);
# a first call lasts ~50 ms, where one burst of outside load moves a round by
# 20% (two full runs gave blox's first forward 1.07x and 1.17x over 9
# rounds), so the first-call and first-step rows take more rounds.
ROUNDS = 3
FIRST_ROUNDS = 15
REQUIRES = {c.NNX: ("flax",), c.TORCH: ("torch",)}

ROWS = [
    ("build/mlp", "MLP 784-1024x3-10: build the model (fresh process)", BUILD_NAMES),
    ("build/cnn", "CNN, 10 convs + BatchNorms: build the model (fresh process)", BUILD_NAMES),
    ("build/deep", "MLP, 24 layers of 512x512: build the model (fresh process)", BUILD_NAMES),
    ("call/mlp", "MLP 784-1024x3-10: first jitted forward (fresh process)", FIRST_NAMES),
    ("step/mlp", "MLP 784-1024x3-10: first Adam step (fresh process)", FIRST_NAMES),
]


def _timed(case: str, name: str, warm: str) -> float:
    """One fresh-process measurement; the empty-cache row gets a new empty folder."""
    if name != c.BLOX_EAGER_COLD_DISK:
        return measure(case, name, {"BLOX_CACHE_DIR": warm})
    with tempfile.TemporaryDirectory(prefix="blox-cold-") as empty:
        return measure(case, name, {"BLOX_CACHE_DIR": empty})


def _quartiles(samples: list[float]) -> tuple[float, float]:
    if len(samples) < 2:
        return samples[0], samples[0]
    low, _, high = statistics.quantiles(samples, n=4, method="inclusive")
    return low, high


def run(settings: Settings) -> list[Result]:
    """Times every row's cold event per contender, interleaved over rounds."""
    rounds = 1 if settings.quick else ROUNDS
    first_rounds = 1 if settings.quick else FIRST_ROUNDS
    warm = tempfile.mkdtemp(prefix="blox-warm-")
    samples: dict[tuple[str, str], list[float]] = {}
    failed: dict[tuple[str, str], str] = {}
    print(f"[benchmarks] {GROUP}: filling the disk cache in {warm}", file=sys.stderr)
    try:
        measure("build/cnn", c.BLOX_EAGER, {"BLOX_CACHE_DIR": warm})
    except RuntimeError as error:
        print(f"[benchmarks] {GROUP}: warming failed: {error}", file=sys.stderr)
    for index in range(max(rounds, first_rounds)):
        for case, row, names in ROWS:
            if index >= (rounds if case.startswith("build/") else first_rounds):
                continue
            print(f"[benchmarks] {GROUP} / {row}: round {index + 1}", file=sys.stderr)
            for name in names:
                key = (case, name)
                if key in failed or c.missing(REQUIRES.get(name, ())) is not None:
                    continue
                try:
                    samples.setdefault(key, []).append(_timed(case, name, warm))
                except RuntimeError as error:
                    print(f"[benchmarks] {GROUP} / {row} / {name} failed: {error}", file=sys.stderr)
                    failed[key] = str(error)[:160]
    shutil.rmtree(warm, ignore_errors=True)
    return [
        result for case, row, names in ROWS for result in _row(case, row, names, samples, failed)
    ]


def _row(
    case: str,
    row: str,
    names: list[str],
    samples: dict[tuple[str, str], list[float]],
    failed: dict[tuple[str, str], str],
) -> list[Result]:
    building = case.startswith("build/")
    targets = BUILD_TARGETS if building else FIRST_TARGETS
    base = samples.get((case, c.RAW))
    results = []
    for name in names:
        against = (c.EQX if building else c.RAW) if name in targets else None
        result = Result(
            GROUP,
            row,
            name,
            "ms",
            baseline=name == c.RAW,
            target=targets.get(name),
            against=against,
            note=NOTES.get(name, "") if building else "",
        )
        absent = c.missing(REQUIRES.get(name, ()))
        if absent is not None:
            result.note = f"skipped: {absent} not installed"
        elif (case, name) in failed:
            result.note, result.error = failed[(case, name)], True
        mine = samples.get((case, name))
        if mine and (case, name) not in failed:
            low, high = _quartiles(mine)
            result.value = statistics.median(mine) * 1e3
            result.low, result.high = low * 1e3, high * 1e3
            result.extra = {"rounds": len(mine), "inner": 1}
            if base is not None and len(base) == len(mine):
                paired = paired_ratio(tuple(mine), tuple(base))
                result.ratio, result.ratio_low, result.ratio_high = paired[:3]
            other = samples.get((case, against)) if against else None
            if other is not None and len(other) == len(mine):
                median, low, high, *_ = paired_ratio(tuple(mine), tuple(other))
                result.target_ratio = (median, low, high)
        results.append(result)
    return results
