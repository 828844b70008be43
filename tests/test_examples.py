"""Runs every script in examples/ end to end in its fast mode, so they never rot.

Each example runs in a subprocess with `BLOX_EXAMPLES_FAST=1` (a few training
steps on a small subset, no accuracy target) and `--out` in a temporary
folder; the test checks the exit code and the files it must write. The
examples need the `examples` extra (scikit-learn, tqdm, matplotlib): without
it these tests are skipped, saying so.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

_EXTRA = "the examples need the 'examples' extra: pip install -e '.[examples]'"
for _module in ("sklearn", "tqdm", "matplotlib"):
    pytest.importorskip(_module, reason=f"{_module} is not installed; {_EXTRA}")

ROOT = Path(__file__).resolve().parent.parent

# example script -> (files it writes into --out, a line its output must contain)
EXAMPLES = {
    "digits_cnn.py": (("digits_cnn.png", "digits_cnn.safetensors"), "test accuracy:"),
    "digits_functional.py": (("digits_functional.png",), "test accuracy:"),
    "char_gpt.py": (("char_gpt.png",), "validation loss:"),
    "from_pytorch.py": (("from_pytorch.pt",), "logits match"),
    "char_lstm.py": (("char_lstm.png",), "validation loss:"),
    "data_parallel.py": (("data_parallel.png",), "test accuracy:"),
}


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(EXAMPLES))
def test_example_runs_in_fast_mode(script, tmp_path):
    outputs, expected_line = EXAMPLES[script]
    env = dict(os.environ, BLOX_EXAMPLES_FAST="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), "--out", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 0, log
    assert expected_line in result.stdout, log
    # The test suite treats warnings as errors; the examples should not emit any either.
    assert "Warning" not in result.stderr, log
    for name in outputs:
        path = tmp_path / name
        assert path.is_file() and path.stat().st_size > 0, f"{script} did not write {name}\n{log}"
