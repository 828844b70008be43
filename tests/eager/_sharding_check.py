"""Sharded training checks on 8 host devices, run by test_sharding.py in a subprocess.

JAX fixes its device count at start-up, so the 8 CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=8`) exist only in a fresh
process. `python _sharding_check.py WORKER_DIR` trains the shared MLP
(Linear, BatchNorm, Dropout, Linear) for 10 Adam steps on one device and on
three layouts of the 8 (data parallel, tensor parallel, FSDP-style), and a
small Transformer block tensor parallel over heads and hidden units, then
compares the FSDP run with the two-process run whose results and orbax
checkpoint lie in WORKER_DIR, and restores that checkpoint into this single
process on two meshes. Each check prints `OK <name>`; a failure raises.
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import blox as bx
from blox import eager as nn
from tests.eager import _sharding_common as common

# Float32 sums over the batch (BatchNorm moments, gradients) split into
# per-device partial sums add in a different order; 10 Adam steps of 1e-2
# keep the difference near 1e-7, well inside this.
TOL = 1e-5

compiles = []  # one entry per XLA compilation, filled once main() starts listening


def _note_compile(event, duration, **_):
    if event == "/jax/core/compile/backend_compile_duration":
        compiles.append(event)


def close(actual, expected, tol=TOL):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=tol, atol=tol)


def states_close(model, reference, tol=TOL):
    """Checks every array against the reference; returns the largest difference."""
    ref, worst = reference.state_dict(), 0.0
    for name, value in model.state_dict().items():
        close(value, ref[name], tol)
        diff = np.abs(np.asarray(value, np.float64) - np.asarray(ref[name], np.float64))
        worst = max(worst, float(diff.max(initial=0.0)))
    return worst


def whole_batch_statistics(model, x):
    """Running statistics after one training step, from the whole batch in float64."""
    hidden = np.asarray(x, np.float64) @ np.asarray(model[0].kernel, np.float64)
    m = common.MOMENTUM
    return (1 - m) * hidden.mean(0), m * 1.0 + (1 - m) * hidden.var(0)


def run_sharded(mesh, rules, x, y, expected_specs, make=common.make_model):
    """10 steps on `mesh`; checks placements after every step and a single compile."""
    model = nn.shard(make(), mesh, rules)
    stats = whole_batch_statistics(model, x) if make is common.make_model else None
    opt_state = nn.shard(common.OPTIMIZER.init(nn.trainable(model)), mesh, rules)
    batch = NamedSharding(mesh, P("data"))
    xs, ys = jax.device_put(x, batch), jax.device_put(y, batch)
    traces, seen = len(common.TRACES), []

    def on_step(model, opt_state):
        if not seen:
            if stats is not None:
                close(model[1].running_mean, stats[0])
                close(model[1].running_var, stats[1])
            seen.append(len(compiles))
        for name, value in model.state_dict().items():
            spec = expected_specs.get(name, P())
            assert value.sharding == NamedSharding(mesh, spec), (name, value.sharding)
        for leaf in jax.tree.leaves(opt_state):
            assert leaf.sharding.mesh == mesh, leaf.sharding

    model, opt_state = common.train(model, opt_state, xs, ys, on_step)
    assert len(common.TRACES) - traces == 1, "the sharded step traced more than once"
    assert len(compiles) == seen[0], "the sharded step compiled again after its first call"
    return model


def main(worker_dir):
    assert jax.device_count() == 8, jax.devices()
    jax.monitoring.register_event_duration_secs_listener(_note_compile)
    x, y = common.make_data()
    reference = common.make_model()
    reference, _ = common.train(reference, common.OPTIMIZER.init(nn.trainable(reference)), x, y)

    data_mesh = common.auto_mesh((8,), ("data",))
    model = run_sharded(data_mesh, common.RULES_DATA, x, y, {})
    print(f"DIFF data_parallel {states_close(model, reference):.2e}")
    print("OK data_parallel")

    model_mesh = common.auto_mesh((4, 2), ("data", "model"))
    tensor_specs = {"0.kernel": P(None, "model"), "3.kernel": P("model")}
    model = run_sharded(model_mesh, common.RULES_MODEL, x, y, tensor_specs)
    print(f"DIFF tensor_parallel {states_close(model, reference):.2e}")
    print("OK tensor_parallel")

    fsdp_specs = {"0.kernel": P(None, "data"), "3.kernel": P("data")}
    fsdp = run_sharded(data_mesh, common.RULES_FSDP, x, y, fsdp_specs)
    print(f"DIFF fsdp {states_close(fsdp, reference):.2e}")
    print("OK fsdp")

    # A small Transformer block, tensor parallel over heads and hidden units.
    xb, yb = common.make_sequences()
    block = common.make_block()
    block, _ = common.train(block, common.OPTIMIZER.init(nn.trainable(block)), xb, yb)
    block_specs = {
        "attn.query.kernel": P(None, "model"),
        "attn.key.kernel": P(None, "model"),
        "attn.value.kernel": P(None, "model"),
        "attn.out.kernel": P("model"),
        "fc1.kernel": P(None, "model"),
        "fc1.bias": P("model"),
        "fc2.kernel": P("model"),
    }
    sharded = run_sharded(
        model_mesh, common.RULES_BLOCK, xb, yb, block_specs, make=common.make_block
    )
    print(f"DIFF transformer_block {states_close(sharded, block):.2e}")
    print("OK transformer_block")

    # The two-process run fed each process half the batch; same layout, same result.
    final = np.load(os.path.join(worker_dir, "final.npz"))
    assert sorted(final) == sorted(fsdp.state_dict())
    worst = 0.0
    for name, value in fsdp.state_dict().items():
        close(final[name], value)
        worst = max(worst, float(np.abs(final[name] - np.asarray(value)).max(initial=0)))
    print(f"DIFF two_processes {worst:.2e}")
    print("OK two_processes")

    # Its checkpoint, restored here: into the layout it was saved with, and into
    # a different mesh (tensor parallel over 4 x 2 devices).
    checkpointer = ocp.StandardCheckpointer()
    for mesh, rules, specs in [
        (data_mesh, common.RULES_FSDP, fsdp_specs),
        (model_mesh, common.RULES_MODEL, tensor_specs),
    ]:
        model = nn.shard(common.make_model(), mesh, rules)
        target = {
            name: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=v.sharding)
            for name, v in model.state_dict().items()
        }
        restored = checkpointer.restore(os.path.join(worker_dir, "checkpoint"), target)
        model.load_state_dict(restored)
        for name, value in model.state_dict().items():
            np.testing.assert_array_equal(np.asarray(value), final[name])
            assert value.sharding == NamedSharding(mesh, specs.get(name, P())), name
    checkpointer.close()
    print("OK checkpoint_restore")

    # The core API places core params the same way and the sharded call agrees.
    g = bx.Graph("net")
    rng = bx.Rng(g / "rng")
    lin = bx.Linear(g / "lin", 8, rng=rng, kernel_metadata={"sharding": ("embed", "mlp")})
    _, params = lin(rng.seed(bx.Params(), seed=0), jnp.ones((1, 4)))
    placed = bx.shard(params, model_mesh, common.RULES_MODEL)
    assert placed[("net", "lin", "kernel")].value.sharding.spec == P(None, "model")
    assert placed[("net", "rng", "seed")].value.sharding.spec == P()
    inputs = jnp.arange(16.0).reshape(4, 4)
    close(jax.jit(lin)(placed, inputs)[0], lin(params, inputs)[0], 1e-6)
    try:
        bx.shardings(params, data_mesh, [("embed", "data"), ("mlp", None)])  # 4 rows, 8 devices
    except ValueError as error:
        assert "divisible by the 8 devices" in str(error), error
    else:
        raise AssertionError("an uneven split did not raise")
    print("OK core_shard")


if __name__ == "__main__":
    main(sys.argv[1])
