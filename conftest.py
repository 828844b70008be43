"""Test-wide JAX settings: strict rank promotion (the `[tool.pytest.ini_options]` of pyproject.toml makes warnings errors)."""


# No compile-time flags for the test run: XLA's CPU backend at optimisation
# level 0 halved the heaviest parity tests' CPU time, but it changes how
# programs round, and the eager == core checks compare programs of different
# shapes bit for bit (initial values drawn by blox.core._sampling's fixed-size
# programs against the core's creating call): three of them failed under it.
# The tests run at the optimisation level users get.

import jax
import pytest

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
