"""Test-wide JAX settings: strict rank promotion (the `[tool.pytest.ini_options]` of pyproject.toml makes warnings errors)."""

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")
