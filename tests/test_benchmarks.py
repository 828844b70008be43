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
