"""Runs every script in examples/ end to end in its fast mode, so they never rot.

Each example runs as `__main__` with `BLOX_EXAMPLES_FAST=1` (a few training
steps on a small subset, no accuracy target) and `--out` in a temporary
folder; the test checks the exit code, a line of its output, that its stderr
has no warning, and the files it must write. The examples need the
`examples` extra (scikit-learn, tqdm, matplotlib): without it these tests are
skipped, saying so.

Starting Python and importing JAX, scikit-learn, matplotlib and PyTorch cost
each script about as much as its fast run, so the scripts share one
subprocess, one after another, each with its own stdout and stderr (file
descriptors 1 and 2, so XLA's own messages land there too) and its own
warning registry. `data_parallel.py` runs alone: it sets the number of host
devices before JAX starts. Under pytest-xdist the shared run happens once per
worker that gets one of its tests: conftest.py puts the slow tests at the head
of the collection, which the first worker receives as one chunk.
"""

import os
import subprocess
import sys
import textwrap
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
ALONE = {"data_parallel.py"}  # needs its own process: 8 host devices from the start

# Runs each script given as `__main__`, as `python SCRIPT --out OUT/SCRIPT` would, and
# leaves OUT/SCRIPT/{stdout,stderr,returncode}.
_RUNNER = textwrap.dedent(
    """
    import os, runpy, sys, traceback, warnings

    out, scripts = sys.argv[1], sys.argv[2:]
    for script in scripts:
        folder = os.path.join(out, os.path.basename(script))
        os.makedirs(folder)
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        stdout = open(os.path.join(folder, "stdout"), "w")
        stderr = open(os.path.join(folder, "stderr"), "w")
        os.dup2(stdout.fileno(), 1)
        os.dup2(stderr.fileno(), 2)
        sys.argv = [script, "--out", folder]
        sys.path.insert(0, os.path.dirname(script))
        code = 0
        try:
            with warnings.catch_warnings():  # each script warns afresh
                runpy.run_path(script, run_name="__main__")
        except SystemExit as exit:
            if isinstance(exit.code, int) or exit.code is None:
                code = exit.code or 0
            else:
                print(exit.code, file=sys.stderr)
                code = 1
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            sys.path.remove(os.path.dirname(script))
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        stdout.close()
        stderr.close()
        with open(os.path.join(folder, "returncode"), "w") as f:
            f.write(str(code))
    """
)


def _run(scripts: list[str], out: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, BLOX_EXAMPLES_FAST="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    paths = [str(ROOT / "examples" / script) for script in scripts]
    return subprocess.run(
        [sys.executable, "-c", _RUNNER, str(out), *paths],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Every example but those in `ALONE`, in one subprocess; `(out, its own log)`."""
    out = tmp_path_factory.mktemp("examples")
    done = _run(sorted(set(EXAMPLES) - ALONE), out)
    return out, f"runner exit code {done.returncode}\n{done.stdout}\n{done.stderr}"


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(EXAMPLES))
def test_example_runs_in_fast_mode(script, request, tmp_path):
    outputs, expected_line = EXAMPLES[script]
    if script in ALONE:
        out, runner = tmp_path, _run([script], tmp_path)
        runner = f"runner exit code {runner.returncode}\n{runner.stdout}\n{runner.stderr}"
    else:
        out, runner = request.getfixturevalue("shared_run")
    folder = out / script
    assert (folder / "returncode").is_file(), f"{script} did not finish\n{runner}"
    returncode = int((folder / "returncode").read_text())
    stdout, stderr = (folder / "stdout").read_text(), (folder / "stderr").read_text()
    log = f"stdout:\n{stdout}\nstderr:\n{stderr}"
    assert returncode == 0, log
    assert expected_line in stdout, log
    # The test suite treats warnings as errors; the examples should not emit any either.
    assert "Warning" not in stderr, log
    for name in outputs:
        path = folder / name
        assert path.is_file() and path.stat().st_size > 0, f"{script} did not write {name}\n{log}"
