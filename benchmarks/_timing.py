"""Interleaved timing: every contender of a row is measured in the same rounds.

This machine is shared, so its load drifts over seconds. Timing one library
for a minute and then the next would charge that drift to the libraries.
Instead, each round runs every contender once, in a freshly shuffled order,
each over an inner loop long enough to swamp the clock's resolution; the
reported figure is the median over rounds of the per-call time, which ignores
the rounds that a burst of outside load spoiled. Ratios between contenders
are paired: the median over rounds of the ratio within each round
(`paired_ratio`).

By default every call is synchronised (`jax.block_until_ready` on what it
returns; a no-op for PyTorch tensors, which are computed synchronously on
CPU), so a call is charged for its whole latency, dispatch and compute. With
`pipelined=True` a loop of calls runs without blocking and blocks once at the
end, on every output it kept, as a training loop runs: JAX dispatches the next
call while the previous one computes, so the time per call is the larger of
the Python-side cost of a call and its compute, and a library's per-call
overhead shows up undiluted by the latency of a synchronisation. Warm-up calls run
first, so compilation is never timed here (the compile group times it on
purpose, with `before_each=jax.clear_caches` and no warm-up). The garbage
collector stays on, as a user has it; a full collection runs between rounds so
that each round starts alike.
"""

import gc
import random
import statistics
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax


class Stats(NamedTuple):
    """Per-call seconds over rounds: median, quartiles, loop size and every round's figure."""

    median: float
    low: float
    high: float
    rounds: int
    inner: int
    samples: tuple[float, ...]  # one per round, in round order


def paired_ratio(samples: tuple[float, ...], baseline: tuple[float, ...]) -> Stats:
    """Median and quartiles over rounds of `samples[i] / baseline[i]`.

    Both were measured in the same round, seconds apart, so a round that
    outside load slowed down slows both and their ratio keeps its value; the
    ratio of two medians taken over different rounds would not.

    Example:
        >>> s = paired_ratio((2.0, 4.0, 3.0), (1.0, 2.0, 3.0))
        >>> s.median, s.rounds
        (2.0, 3)
    """
    if len(samples) != len(baseline):
        raise ValueError(
            f"paired_ratio: expected one baseline sample per round ({len(samples)}), "
            f"got {len(baseline)}. Fix: pair samples taken in the same rounds."
        )
    ratios = [a / b for a, b in zip(samples, baseline) if b > 0]
    if not ratios:
        raise ValueError(
            f"paired_ratio: expected positive baseline times, got {baseline!r}. "
            "Fix: pass the baseline's per-round samples."
        )
    low, high = _quartiles(ratios)
    return Stats(statistics.median(ratios), low, high, len(ratios), 1, tuple(ratios))


def _loop(call: Callable[[], Any], n: int) -> float:
    """Seconds per call over `n` synchronised calls."""
    start = time.perf_counter()
    for _ in range(n):
        jax.block_until_ready(call())
    return (time.perf_counter() - start) / n


def _pipelined_loop(call: Callable[[], Any], n: int) -> float:
    """Seconds per call over `n` calls dispatched back to back, one block at the end.

    Every output is kept and blocked on at the end, so a call whose result
    does not feed the next one (a forward) is charged in full too; a chained
    training step's last output already depends on every step before it.
    """
    outs = []
    keep = outs.append
    start = time.perf_counter()
    for _ in range(n):
        keep(call())
    jax.block_until_ready(outs)
    seconds = time.perf_counter() - start
    del outs[:]  # freed untimed, after the clock stopped
    return seconds / n


def _inner_size(
    call: Callable[[], Any], min_time: float, loop: Callable[..., float] = _loop
) -> int:
    """Calls per timed loop so that one loop lasts about `min_time` seconds."""
    n, spent = 1, 0.0
    while True:
        spent = loop(call, n) * n
        if spent >= min_time / 4 or n >= 1 << 16:
            break
        n *= 2
    return max(1, round(n * min_time / max(spent, 1e-9)))


def _quartiles(samples: list[float]) -> tuple[float, float]:
    if len(samples) < 2:
        return samples[0], samples[0]
    q = statistics.quantiles(samples, n=4, method="inclusive")
    return q[0], q[2]


def interleaved(
    calls: dict[str, Callable[[], Any]],
    *,
    rounds: int,
    warmup: int,
    min_time: float | None,
    before_each: Callable[[], None] | None = None,
    seed: int = 0,
    pipelined: bool = False,
) -> tuple[dict[str, Stats], dict[str, BaseException]]:
    """Times `calls` against each other.

    Args:
        calls: Contender name to a zero-argument function doing one call.
        rounds: Timed rounds; each runs every contender once, shuffled.
        warmup: Untimed calls per contender first (compilation happens here).
        min_time: Seconds one contender's inner loop lasts; `None` means one
            call per loop (for things that happen once, like compiling).
        before_each: Called, untimed, before each contender's loop.
        seed: Seeds the shuffling, so a rerun uses the same orders.
        pipelined: Time loops of unblocked calls with one block at the end
            (`_pipelined_loop`) instead of blocking on every call.

    Returns:
        `(stats, errors)`: per-call `Stats` in seconds for the contenders that
        ran, and the exception of each one that raised.
    """
    loop = _pipelined_loop if pipelined else _loop
    errors: dict[str, BaseException] = {}
    inner: dict[str, int] = {}
    for name, call in calls.items():
        try:
            for _ in range(warmup):
                jax.block_until_ready(call())
            inner[name] = 1 if min_time is None else _inner_size(call, min_time, loop)
        except Exception as error:
            errors[name] = error
    samples: dict[str, list[float]] = {name: [] for name in inner}
    order = list(inner)
    shuffle = random.Random(seed).shuffle
    for _ in range(rounds):
        gc.collect()
        shuffle(order)
        for name in list(order):
            if before_each is not None:
                before_each()
            try:
                samples[name].append(loop(calls[name], inner[name]))
            except Exception as error:
                errors[name] = error
                order.remove(name)
                del samples[name]
    stats = {}
    for name, values in samples.items():
        low, high = _quartiles(values)
        stats[name] = Stats(
            statistics.median(values), low, high, len(values), inner[name], tuple(values)
        )
    return stats, errors
