"""Test-wide JAX settings: strict rank promotion (the `[tool.pytest.ini_options]` of pyproject.toml makes warnings errors)."""

import os

# Compile-time flag for the test run only (this process, and the subprocesses
# that examples, docs pages and sharding tests start, which inherit os.environ):
# XLA's CPU backend at optimisation level 0 skips LLVM's optimisation passes.
# The tests compile many small programs and run each a few times, so compiling
# dominates; measured on the heaviest parity tests (core attention vs flax,
# torch_nn conv and losses vs PyTorch) it halves their CPU time (101.7 s ->
# 53.7 s), with every reference comparison passing at its tolerance and the
# eager == core checks still bit for bit (both sides compile with the same
# flags). Library users and benchmarks are unaffected: only pytest sets it.
_O0 = "--xla_backend_optimization_level=0"
if _O0 not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_O0}".strip()

import jax  # noqa: E402  (after XLA_FLAGS, which the backend reads when it starts)
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


# -- test-suite wall time under pytest-xdist ------------------------------------------------
# CI runs `pytest -n 2`. The `slow` tests (examples, docs pages: subprocesses and
# whole sessions of 30-60 s each) go first, and the workers steal from each other
# (`--dist worksteal`) instead of xdist's default `load`: both workers then finish
# on a tail of short tests instead of one waiting for the other's last example.


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "load":
        return None  # an explicit --dist choice is kept
    from xdist.scheduler import WorkStealingScheduling

    return WorkStealingScheduling(config, log)
