"""Runs one row of a group: builds its contenders, measures them, makes `Result`s.

A contender whose package is missing becomes a skipped row with a note; one
that raises (while building, compiling or running) becomes an error row, its
traceback goes to stderr, and the run carries on with the others, so a broken
contender never hides the rest of the table.
"""

import sys
import traceback
from collections.abc import Callable
from typing import Any

from ._common import RAW, Contender, Program, Result, Settings, missing, temp_bytes
from ._timing import interleaved, paired_ratio

_UNITS = {"us": 1e6, "ms": 1e3}


def _error(group: str, row: str, contender: Contender, unit: str, error: BaseException) -> Result:
    print(f"[benchmarks] {group} / {row} / {contender.name} failed:", file=sys.stderr)
    traceback.print_exception(error, file=sys.stderr)
    message = f"{type(error).__name__}: {error}".splitlines()[0][:160]
    return Result(
        group,
        row,
        contender.name,
        unit,
        target=contender.target,
        against=contender.against,
        note=message,
        error=True,
    )


def _prepare(
    group: str, row: str, unit: str, spec: Any, contenders: list[Contender], baseline: str
) -> tuple[dict[str, Result], dict[str, Callable[[], Program]]]:
    """Builds every installed contender; returns placeholder results and the makers."""
    results: dict[str, Result] = {}
    makers: dict[str, Callable[[], Program]] = {}
    for contender in contenders:
        result = Result(
            group,
            row,
            contender.name,
            unit,
            baseline=contender.name == baseline,
            target=contender.target,
            against=contender.against,
            note=contender.note,
        )
        results[contender.name] = result
        absent = missing(contender.requires)
        if absent is not None:
            result.note = f"skipped: {absent} not installed"
            continue
        print(f"[benchmarks] {group} / {row}: building {contender.name}", file=sys.stderr)
        try:
            makers[contender.name] = contender.build(spec)
        except Exception as error:
            results[contender.name] = _error(group, row, contender, unit, error)
    return results, makers


def timed_row(
    group: str,
    row: str,
    spec: Any,
    contenders: list[Contender],
    settings: Settings,
    *,
    unit: str = "us",
    baseline: str = RAW,
    cold: bool = False,
    before_each: Callable[[], None] | None = None,
    long: bool = False,
    pipelined: bool = False,
) -> list[Result]:
    """Medians per call (or, with `cold`, per first call of a fresh `make()`).

    With `cold`, each timed call is `make().step()`: a new jitted function,
    traced, compiled and run once; `before_each` (e.g. `jax.clear_caches`)
    runs untimed before it. Otherwise `make()` runs once and its `step` is
    warmed up, then timed in inner loops of `settings.min_time` seconds
    (`settings.long_min_time` with `long`, for steps of tens of milliseconds).
    With `pipelined`, those loops dispatch their calls back to back and block
    once at the end, as a training loop does (see `_timing`), instead of
    blocking on every call.
    """
    if cold and pipelined:
        raise ValueError(
            f"timed_row({row!r}): expected cold or pipelined, got both. Fix: time "
            "first calls blocked (cold) and warm loops pipelined, in two rows."
        )
    results, makers = _prepare(group, row, unit, spec, contenders, baseline)
    by_name = {c.name: c for c in contenders}
    calls: dict[str, Callable[[], Any]] = {}
    for name, make in makers.items():
        if cold:
            calls[name] = lambda make=make: make().step()
            continue
        try:
            calls[name] = make().step
        except Exception as error:
            results[name] = _error(group, row, by_name[name], unit, error)
    print(f"[benchmarks] {group} / {row}: timing {len(calls)} contenders", file=sys.stderr)
    if cold:
        stats, errors = interleaved(
            calls,
            rounds=settings.compile_rounds,
            warmup=0,
            min_time=None,
            before_each=before_each,
        )
    else:
        stats, errors = interleaved(
            calls,
            rounds=settings.rounds,
            warmup=settings.warmup,
            min_time=settings.long_min_time if long else settings.min_time,
            pipelined=pipelined,
        )
    for name, error in errors.items():
        results[name] = _error(group, row, by_name[name], unit, error)
    scale = _UNITS[unit]
    base = stats.get(baseline)
    for name, s in stats.items():
        result = results[name]
        result.value, result.low, result.high = s.median * scale, s.low * scale, s.high * scale
        result.extra = {"rounds": s.rounds, "inner": s.inner}
        if base is not None and len(base.samples) == len(s.samples):
            paired = paired_ratio(s.samples, base.samples)
            result.ratio, result.ratio_low, result.ratio_high = paired[:3]
        other = stats.get(result.against) if result.against else None
        if other is not None and len(other.samples) == len(s.samples):
            median, low, high, *_ = paired_ratio(s.samples, other.samples)
            result.target_ratio = (median, low, high)
    return list(results.values())


def memory_row(
    group: str, row: str, spec: Any, contenders: list[Contender], *, baseline: str = RAW
) -> list[Result]:
    """Temporary bytes (as KiB) of each contender's compiled step."""
    results, makers = _prepare(group, row, "KiB", spec, contenders, baseline)
    by_name = {c.name: c for c in contenders}
    for name, make in makers.items():
        try:
            program = make()
            if program.lower is None:
                api = name.rsplit("(", 1)[-1].rstrip(")")
                results[name].note = f"skipped: {api} offers no .lower()"
                continue
            results[name].value = temp_bytes(program.lower()) / 1024
        except Exception as error:
            results[name] = _error(group, row, by_name[name], "KiB", error)
    return list(results.values())
