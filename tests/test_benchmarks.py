"""The benchmark suite runs end to end: a quick dispatch run writes its report.

Only that it runs and what the report contains are checked, never timings:
this machine is shared, and the numbers belong in docs/benchmarks.md.
"""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_dispatch_run_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "bench.md"
    command = [sys.executable, "-m", "benchmarks", "--quick", "--only", "dispatch"]
    done = subprocess.run(
        [*command, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    text = out.read_text()
    header = "| group | row | contender | median | IQR | ratio vs raw JAX | target | pass/fail |"
    assert header in text
    assert "| dispatch | MLP 32-64-64-10, b32: forward | **raw JAX (jax.jit)** |" in text
    assert "| baseline |" in text
    assert "python -m benchmarks --quick --only dispatch" in text
    for name in ("blox eager (no jit)", "blox eager (nn.filter_jit)", "blox core (jax.jit)"):
        assert f"| {name} |" in text


def test_paired_ratio_cancels_load_that_drifts_between_rounds() -> None:
    from benchmarks._timing import paired_ratio

    # Rounds 3-5 ran under outside load for the baseline only in round 3 and
    # for both afterwards: per-round ratios stay 1.1 except the spoiled round.
    baseline = (1.0, 1.0, 3.0, 3.0, 3.0)
    contender = (1.1, 1.1, 1.1, 3.3, 3.3)
    stats = paired_ratio(contender, baseline)
    assert stats.median == pytest.approx(1.1, rel=1e-12)
    assert stats.rounds == 5
    assert stats.low == pytest.approx(1.1, rel=1e-12)


def test_paired_ratio_rejects_rounds_that_do_not_pair() -> None:
    from benchmarks._timing import paired_ratio

    with pytest.raises(ValueError, match="paired_ratio: expected one baseline sample per round"):
        paired_ratio((1.0, 2.0), (1.0,))
    with pytest.raises(ValueError, match="paired_ratio: expected positive baseline times"):
        paired_ratio((1.0,), (0.0,))
