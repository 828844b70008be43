"""Writes the results: a markdown report and a bar chart of ratios to raw JAX.

The markdown starts with the command, date, machine and package versions, so
a reader can tell whether two reports are comparable; then the targets with
pass or fail; then the full table (median, interquartile range over rounds,
ratio to the row's raw-JAX baseline); then the notes (skipped and failed
contenders).
"""

import datetime
import importlib.metadata
import math
import os
import platform
from pathlib import Path
from typing import Any

import jax

from . import _common as c
from . import build
from ._common import Result, Settings
from ._why import why

_PACKAGES = ("jax", "jaxlib", "equinox", "flax", "torch", "optax", "numpy", "blox")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def environment() -> dict[str, str]:
    """What the numbers depend on: machine, versions, thread counts."""
    env = {
        "machine": f"{platform.platform()} ({platform.machine()})",
        "CPU": f"{_cpu_model()}, {os.cpu_count()} logical CPUs",
        "python": platform.python_version(),
        "JAX devices": ", ".join(str(d) for d in jax.devices()),
    }
    for package in _PACKAGES:
        env[package] = _version(package)
    if c.missing(("torch",)) is None:
        import torch

        env["torch"] += f" ({torch.get_num_threads()} intra-op threads)"
    return env


def _ratios(results: list[Result]) -> dict[int, float]:
    """Ratio of each result to its row's baseline, by `id(result)`.

    The paired ratio where the row was timed (see `_timing.paired_ratio`),
    else (memory rows) the plain quotient.
    """
    baselines = {(r.group, r.row): r.value for r in results if r.baseline and r.value}
    ratios = {}
    for r in results:
        base = baselines.get((r.group, r.row))
        if r.ratio is not None:
            ratios[id(r)] = r.ratio
        elif base and r.value is not None:
            ratios[id(r)] = r.value / base
    return ratios


def _format_ratio(ratio: float | None, low: float | None, high: float | None) -> str:
    """`1.02x (0.99–1.05)`: a ratio with its quartiles over rounds, where known."""
    if ratio is None:
        return "—"
    if low is not None and high is not None and high > low:
        return f"{ratio:.2f}x ({low:.2f}–{high:.2f})"
    return f"{ratio:.2f}x"


def _shown_ratio(r: Result, ratios: dict[int, float]) -> str:
    return _format_ratio(ratios.get(id(r)), r.ratio_low, r.ratio_high)


def _judged(r: Result, ratios: dict[int, float]) -> tuple[float | None, str]:
    """The ratio a result's target applies to, and how to show it.

    The ratio to the row's baseline, or with `r.against` the paired ratio to
    that contender.
    """
    if r.against is None:
        return ratios.get(id(r)), _shown_ratio(r, ratios)
    ratio, low, high = r.target_ratio or (None, None, None)
    return ratio, _format_ratio(ratio, low, high)


def _shown_target(r: Result) -> str:
    if r.target is None:
        return ""
    return f"≤ {r.target:g}x" + (f" of {r.against}" if r.against else "")


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _verdict(ratio: float | None, target: float | None) -> str:
    if target is None:
        return ""
    if ratio is None:
        return "n/a"
    if ratio <= target:
        return "pass"
    return f"**FAIL** (+{100 * (ratio / target - 1):.0f}% over)"


def _table(results: list[Result], ratios: dict[int, float]) -> list[str]:
    lines = [
        "| group | row | contender | median | IQR | ratio vs raw JAX | target | pass/fail |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        if r.value is None:
            median, spread = "—", "—"
        else:
            median = f"{_number(r.value)} {r.unit}"
            has_spread = r.low is not None and r.high is not None and r.high > r.low
            spread = f"{_number(r.low)}–{_number(r.high)}" if has_spread else "—"
        name = f"**{r.contender}**" if r.baseline else r.contender
        shown_ratio = "baseline" if r.baseline else _shown_ratio(r, ratios)
        judged, _ = _judged(r, ratios)
        lines.append(
            f"| {r.group} | {r.row} | {name} | {median} | {spread} | {shown_ratio} | "
            f"{_shown_target(r)} | {_verdict(judged, r.target)} |"
        )
    return lines


def _targets(results: list[Result], ratios: dict[int, float]) -> list[str]:
    chosen = [r for r in results if r.target is not None]
    if not chosen:
        return ["No targets in the groups run."]
    lines = [
        "| row | contender | against | ratio | target | result |",
        "| --- | --- | --- | ---: | ---: | --- |",
    ]
    for r in chosen:
        ratio, shown = _judged(r, ratios)
        against = r.against or c.RAW
        lines.append(
            f"| {r.group}: {r.row} | {r.contender} | {against} | {shown} | ≤ {r.target:g}x | "
            f"{_verdict(ratio, r.target)} |"
        )
    return lines


def _peers_faster(results: list[Result], ratios: dict[int, float]) -> list[str]:
    """One line per (row, peer) where a peer's ratio is below every blox contender's."""
    rows: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        rows.setdefault((r.group, r.row), []).append(r)
    lines = []
    for (group, row), items in rows.items():
        blox = [ratios[id(r)] for r in items if r.contender.startswith("blox") and id(r) in ratios]
        if not blox:
            continue
        best = min(blox)
        for r in items:
            peer = not r.contender.startswith(("blox", "raw")) and not r.baseline
            if peer and id(r) in ratios and ratios[id(r)] < best:
                lines.append(
                    f"- {group} / {row}: {r.contender} {ratios[id(r)]:.2f}x against "
                    f"blox's best {best:.2f}x. {why(group, row, r.contender)}"
                )
    return lines


def _plot(results: list[Result], ratios: dict[int, float], path: Path) -> bool:
    """One panel per row: each contender's ratio to raw JAX, targets marked."""
    if c.missing(("matplotlib",)) is not None:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        if id(r) in ratios and r.plotted:
            rows.setdefault((r.group, r.row), []).append(r)
    if not rows:
        return False
    columns = 2 if len(rows) > 1 else 1
    nrows = math.ceil(len(rows) / columns)
    heights = [max(len(v) for v in list(rows.values())[i::columns]) for i in range(columns)]
    fig, axes = plt.subplots(
        nrows, columns, figsize=(8 * columns, 0.32 * max(heights) * nrows + 1.2 * nrows)
    )
    axes = [axes] if not hasattr(axes, "flat") else list(axes.flat)
    for ax, ((group, row), members) in zip(axes, rows.items()):
        names = [m.contender for m in members][::-1]
        values = [ratios[id(m)] for m in members][::-1]
        colors = [_color(m) for m in members][::-1]
        ax.barh(names, values, color=colors)
        ax.axvline(1.0, color="black", linewidth=0.8)
        by_name = {m.contender: m for m in members}
        for i, m in enumerate(members[::-1]):
            bound = m.target
            if bound is not None and m.against is not None:
                # The target is relative to another contender: mark it on this axis.
                other = ratios.get(id(by_name[m.against])) if m.against in by_name else None
                bound = bound * other if other is not None else None
            if bound is not None:
                ax.plot([bound, bound], [i - 0.4, i + 0.4], color="red", linewidth=2)
            ax.text(max(values[i], bound or 0), i, f" {values[i]:.2f}x", va="center", fontsize=7)
        if max(values) / min(values) > 20:
            ax.set_xscale("log")
        ax.set_xlim(right=max(values) * (3 if ax.get_xscale() == "log" else 1.25))
        ax.set_title(f"{group}: {row}", fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
        ax.tick_params(axis="x", labelsize=7)
    for ax in axes[len(rows) :]:
        ax.axis("off")
    fig.suptitle("Ratio to raw JAX (lower is better; red ticks: blox targets)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _color(result: Result) -> str:
    if result.baseline or result.contender == c.RAW_EAGER:
        return "#4c72b0"
    if result.contender in c.BLOX_NAMES:
        return "#dd8452"
    return "#9a9a9a"


def write(
    results: list[Result],
    *,
    out: Path,
    command: str,
    settings: Settings,
    groups: list[str],
    seconds: float,
    load: tuple[float, float],
) -> dict[str, Any]:
    """Writes `out` (markdown) and the chart next to it (same name, `.png`).

    Returns:
        `{'markdown': path, 'plot': path or None, 'ratios': {...}}`.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    ratios = _ratios(results)
    png = out.with_suffix(".png")
    plotted = _plot(results, ratios, png)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    env = environment()
    env["load average (1 min)"] = (
        f"{load[0]:.2f} at start, {load[1]:.2f} at end (the machine is shared; "
        f"above {os.cpu_count()} means contention)"
    )
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `{command}` on {now} in {seconds / 60:.1f} minutes "
        f"(groups: {', '.join(groups)}; {'quick smoke run' if settings.quick else 'full run'}).",
        "Do not compare these numbers with a report from another machine or load.",
        "",
        "| | |",
        "| --- | --- |",
        *(f"| {key} | {value} |" for key, value in env.items()),
        "",
        "## Method",
        "",
        "Each row runs the same workload in every contender, built in one process. "
        "Contenders of a row are interleaved: every round runs each of them once, "
        "in a new random order, over an inner loop of calls lasting about "
        f"{settings.min_time * 1e3:g} ms ({settings.long_min_time * 1e3:g} ms in the "
        "compute and recurrent groups), each call synchronised with "
        "`jax.block_until_ready`. Rows marked *pipelined* run the same inner loop "
        "without blocking per call and block once at the end, on every output, as "
        "a training loop runs: JAX dispatches the next call while the previous one "
        "computes, so a contender's time per call is the larger of its Python-side "
        "cost per call and its compute. Reported: the median over "
        f"{settings.rounds} rounds of the time per call, and the interquartile range "
        f"(IQR) over rounds; {settings.warmup} warm-up calls first, so compilation "
        "is not timed. Training steps are Adam (learning rate 1e-3) and chain "
        "their state: parameters, optimiser state, dropout RNG and BatchNorm "
        "statistics of one step feed the next. The compile group times cold first "
        f"calls ({settings.compile_rounds} rounds, `jax.clear_caches()` before each); "
        "the memory group reads XLA's temporary bytes of the compiled step. "
        "The build group times one cold event per fresh Python process, after "
        "untimed imports, a small warm-up compile and the event's setup, waited on until "
        f"its arrays are ready ({build.ROUNDS} rounds of construction, "
        f"{build.FIRST_ROUNDS} of first calls and steps). "
        "Ratios are to the row's raw-JAX baseline (a dict of arrays under "
        "`jax.jit`) and paired: the median over rounds of the contender's time "
        "divided by the baseline's time in the same round, with the IQR of those "
        "per-round ratios in brackets, so load that drifts between rounds cancels "
        "out (memory rows: the plain quotient). Targets apply to blox only; peers "
        "are shown for scale. A blox model driven by `eqx.filter_jit` runs Equinox's "
        "dispatcher, whose own cost raw JAX driven by `eqx.filter_jit` shows; where "
        "that row exists, the target compares the two (the Targets table's *against* "
        "column), so it measures what blox adds.",
        "",
        "## Targets",
        "",
        *_targets(results, ratios),
        "",
        "## Results",
        "",
    ]
    if plotted:
        lines += [f"![Ratios to raw JAX]({png.name})", ""]
    lines += _table(results, ratios)
    faster = _peers_faster(results, ratios)
    if faster:
        lines += ["", "## Where a peer is faster, and why", "", *faster]
    notes = [r for r in results if r.note]
    if notes:
        lines += ["", "## Notes", ""]
        lines += [f"- {r.group} / {r.row} / {r.contender}: {r.note}" for r in notes]
    out.write_text("\n".join(lines) + "\n")
    return {"markdown": out, "plot": png if plotted else None, "ratios": ratios}
