"""One of two processes of the multi-process check (run by test_sharding.py).

`python _distributed_worker.py PROCESS_ID PORT OUT_DIR`, with
`XLA_FLAGS=--xla_force_host_platform_device_count=4`: joins a 2-process JAX
runtime whose coordinator listens on 127.0.0.1:PORT, with 4 CPU devices per
process, trains the shared MLP data-parallel (params split over 'data' as
well, FSDP-style) for 10 steps feeding only this process's half of the batch,
then writes the final state (process 0, gathered) to OUT_DIR/final.npz and a
sharded orbax checkpoint of it to OUT_DIR/checkpoint. Every wait is bounded,
so a lost peer ends the process with an error instead of a hang.
"""

import functools
import os
import sys


def main(process_id: int, port: int, out_dir: str) -> None:
    # Imported here: pytest's doctest collection imports this file, and nothing
    # may start before the runtime is configured.
    import jax
    from jax._src.lib import _jax

    # Gloo's listening socket otherwise binds to whatever address the host name
    # resolves to; the test must listen on the loopback interface only.
    _jax.make_gloo_tcp_collectives = functools.partial(
        _jax.make_gloo_tcp_collectives, hostname="127.0.0.1"
    )
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}",
        coordinator_bind_address=f"127.0.0.1:{port}",
        num_processes=2,
        process_id=process_id,
        initialization_timeout=60,
    )

    import numpy as np
    import orbax.checkpoint as ocp
    from jax.experimental import multihost_utils
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from blox import eager as nn
    from tests.eager import _sharding_common as common

    assert jax.process_count() == 2 and jax.local_device_count() == 4, jax.devices()
    mesh = common.auto_mesh((8,), ("data",))
    model = nn.shard(common.make_model(), mesh, common.RULES_FSDP)
    opt_state = nn.shard(common.OPTIMIZER.init(nn.trainable(model)), mesh, common.RULES_FSDP)

    x, y = common.make_data()
    half = common.BATCH // 2
    rows = slice(process_id * half, (process_id + 1) * half)  # only this process's rows
    batch = NamedSharding(mesh, P("data"))
    xs = jax.make_array_from_process_local_data(batch, x[rows], x.shape)
    ys = jax.make_array_from_process_local_data(batch, y[rows], y.shape)

    model, opt_state = common.train(model, opt_state, xs, ys)
    assert len(common.TRACES) == 1, "the sharded step compiled more than once"

    state = model.state_dict()
    kernel = state["0.kernel"]
    assert not kernel.is_fully_addressable and kernel.sharding.spec == P(None, "data"), (
        kernel.sharding
    )
    gathered = {
        name: np.asarray(multihost_utils.process_allgather(v, tiled=True))
        for name, v in state.items()
    }
    if process_id == 0:
        np.savez(os.path.join(out_dir, "final.npz"), **gathered)

    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(out_dir, "checkpoint"), dict(state))
    checkpointer.wait_until_finished()
    checkpointer.close()
    print(f"OK process {process_id}", flush=True)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), os.path.abspath(sys.argv[3]))
