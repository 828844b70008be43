"""Data-parallel `model.functional()` under `jax.shard_map`, run by test_functional.py.

JAX fixes its device count at start-up, so the 8 host devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=8`) exist only in a fresh
process. Each check prints `OK <name>`; a failure raises, so the process
exits non-zero with the traceback on stderr.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from blox import eager as nn


def close(actual, expected):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=1e-5, atol=1e-5)


def check_mlp_forward(mesh, x):
    model = nn.Sequential(nn.Linear(3, 16, seed=0), jax.nn.relu, nn.Linear(16, 4, seed=1))
    fn, params = model.functional()
    expected, _ = fn(params, x)
    sharded = jax.shard_map(
        lambda p, xs: fn(p, xs)[0], mesh=mesh, in_specs=(P(), P("b")), out_specs=P("b")
    )
    close(sharded(params, x), expected)
    close(jax.jit(sharded)(params, x), expected)
    close(model(x), expected)
    print("OK mlp_forward")


def check_batchnorm_statistics(mesh, x):
    """Training with axis_name: the shards' statistics equal the whole batch's."""
    sharded = nn.Sequential(nn.Linear(3, 6, seed=0), nn.BatchNorm(6, axis_name="b"))
    single = nn.Sequential(nn.Linear(3, 6, seed=0), nn.BatchNorm(6))
    fn, params = sharded.functional()
    run = jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=(P(), P("b")), out_specs=(P("b"), P())))
    out, new = run(params, x)
    close(out, single(x))
    for name, value in single.state_dict().items():
        close(new[tuple(name.split("."))].value, value)
    sharded.load_params(new)
    assert int(np.asarray(sharded[1].running_mean != 0).sum()) == 6
    print("OK batchnorm_statistics")


def main():
    assert jax.device_count() == 8, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("b",))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((32, 3)), jnp.float32)
    check_mlp_forward(mesh, x)
    check_batchnorm_statistics(mesh, x)
    return 0


if __name__ == "__main__":
    jax.config.update("jax_numpy_rank_promotion", "raise")
    sys.exit(main())
