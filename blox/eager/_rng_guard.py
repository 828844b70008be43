"""The stale-RNG guard: a warning when traced dropout keys stop advancing.

A training-mode RNG draw traced outside blox's own transforms (for example
under `eqx.filter_jit` or `jax.vmap` whose function does not return the model)
updates the RNG counter of a copy that vanishes with the trace: every step
then reuses the same key, which is silent and wrong. `guard_draw` installs a
cheap host check on such a draw that warns when one draw site sees the same
key twice with no later key drawn in between: the symptom of state that
silently stopped advancing.

A draw site is one traced RNG draw, so separate jitted functions (and
separate tests) never see each other's draws, and each site warns once (a
second broken function warns again). The "no later key" rule lets a fresh
model with the same seed replay its stream without a false alarm. Under
`jax.vmap` over stacked models the check runs per model of the stack. The
records are bounded and live in `_context.CONTEXT`.
"""

import functools
import itertools
import warnings
from typing import Any

import jax
import numpy as np

from ._context import CONTEXT

_draw_sites = itertools.count()
_draw_clock = itertools.count()
_RECORD_LIMIT = 4096  # (site, seed) pairs remembered; past it the record starts over
_COUNTERS_LIMIT = 65536  # counters remembered per pair


def guard_draw(seed: Any, counter: Any) -> None:
    """Installs the host check for one traced draw from `seed` at `counter`.

    Args:
        seed: The typed key (or raw key data) the draw's `Rng` is seeded with.
        counter: The counter value the draw reads (a tracer).
    """
    if _is_key(seed):
        seed = jax.random.key_data(seed)
    site = functools.partial(_note_draw, next(_draw_sites))
    jax.debug.callback(site, seed, counter)


def _is_key(value: Any) -> bool:
    return jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key)


def _note_draw(site: int, seed: Any, counter: Any) -> None:
    """Host side of the guard: warn when one RNG key is drawn twice.

    A repeat of counter `c` is the symptom only if no higher counter was drawn
    since the last draw of `c`: otherwise a fresh model with the same seed has
    restarted the stream (reproducibility, not stale state), and the record
    starts over. Batched values (a vmapped stack of models) are checked per
    model.
    """
    seeds = np.asarray(seed)
    counters = np.asarray(counter)
    if counters.ndim:  # vmapped: one check per model in the stack
        flat_seeds = seeds.reshape(-1, seeds.shape[-1])
        for i, (one_seed, one_counter) in enumerate(zip(flat_seeds, counters.reshape(-1))):
            _note_one(site, one_seed.tobytes() + i.to_bytes(4, "little"), int(one_counter))
        return
    _note_one(site, seeds.tobytes(), int(counters))


def _note_one(site: int, seed: bytes, count: int) -> None:
    record = CONTEXT.seen_draws
    if site in CONTEXT.warned_sites:
        return
    if len(record) > _RECORD_LIMIT:
        record.clear()
    when = record.setdefault((site, seed), {})
    now = next(_draw_clock)
    last = when.get(count)
    if last is not None:
        if any(t > last for c, t in when.items() if c > count):
            when.clear()
        else:
            CONTEXT.warned_sites.add(site)
            warnings.warn(
                "blox.eager: a dropout/RNG key was drawn twice from the same state "
                f"(counter {count}) inside a jitted or vmapped function: the model's "
                "RNG state is not advancing, so every step reuses the same mask. Fix: "
                "use nn.filter_jit (which writes state back), or return the model "
                "from your eqx.filter_jit / jax.vmap function and use the returned one.",
                RuntimeWarning,
                stacklevel=2,
            )
    if len(when) > _COUNTERS_LIMIT:
        when.clear()
    when[count] = now
