"""Sharded params: logical axis names, rules, `bx.shard`/`nn.shard`, and training on meshes.

In process (one device): how names and rules resolve, the eager
`<param>_sharding` options, and every error. On 8 host devices and across two
processes, in subprocesses (JAX fixes its device count at start-up): data,
tensor and FSDP-style parallel training equal to one device, BatchNorm
statistics of the whole batch, placements kept step after step with a single
compile, and a sharded orbax checkpoint moved between process counts and meshes.
Three processes are started in all: the two workers, then the 8-device check.
"""

import os
import pathlib
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

import blox as bx
from blox import eager as nn

HERE = pathlib.Path(__file__).parent


def mesh2():
    return jax.make_mesh((1, 1), ("data", "model"))


def core_params(**metadata):
    g = bx.Graph("net")
    rng = bx.Rng(g / "rng")
    lin = bx.Linear(g / "lin", 4, rng=rng, **metadata)
    return lin(rng.seed(bx.Params(), seed=0), jnp.ones((1, 2)))[1]


def spec_of(logical, rules, shape=(2, 4)):
    params = bx.Params.from_dict(
        {("w",): bx.Param(jnp.zeros(shape), metadata={"sharding": logical})}
    )
    return bx.shardings(params, mesh2(), rules)[("w",)].value.spec


# -- resolution ------------------------------------------------------------------------------


def test_rules_map_logical_names_to_mesh_axes_and_unannotated_params_are_replicated():
    params = core_params(kernel_metadata={"sharding": ("embed", "mlp")})
    specs = bx.shardings(params, mesh2(), [("embed", None), ("mlp", "model")])
    assert specs[("net", "lin", "kernel")].value == jax.sharding.NamedSharding(
        mesh2(), P(None, "model")
    )
    assert specs[("net", "lin", "bias")].value.spec == P()
    assert specs[("net", "rng", "seed")].value.spec == P()
    # Params-shaped: same treedef, so it feeds jax.device_put / jit shardings directly.
    assert jax.tree.structure(specs) == jax.tree.structure(params)


def test_first_free_rule_wins_and_taken_axes_replicate_as_in_flax():
    rules = [("a", "data"), ("a", "model")]
    assert spec_of(("a", "a"), rules) == P("data", "model")
    assert spec_of(("a", "a"), [("a", "data")]) == P("data")
    assert spec_of(("a", None), {"a": ("data", "model")}) == P(("data", "model"))
    # Without rules the names are mesh axes.
    assert spec_of((None, "model"), None) == P(None, "model")


def test_shard_places_values_where_shardings_say():
    params = core_params(kernel_metadata={"sharding": (None, "model")})
    placed = bx.shard(params, mesh2())
    assert placed[("net", "lin", "kernel")].value.sharding.spec == P(None, "model")
    np.testing.assert_array_equal(
        placed[("net", "lin", "kernel")].value, params[("net", "lin", "kernel")].value
    )
    assert placed[("net", "lin", "kernel")].metadata == {"sharding": (None, "model")}


@pytest.mark.parametrize(
    ("logical", "rules", "error", "match"),
    [
        (("embed", "mlp"), [("embed", None)], ValueError, "none of the rules"),
        (("embed", "mlp"), [("embed", None), ("mlp", "tensor")], ValueError, "mesh axes among"),
        (("mlp",), [("mlp", None)], ValueError, "one sharding name"),
        (("mlp", None), "mlp", TypeError, "sequence of"),
        (("mlp", None), [("mlp",)], TypeError, "pair"),
        (("mlp", None), [("mlp", 3)], TypeError, "mesh axis of rule"),
    ],
)
def test_bad_names_and_rules_raise(logical, rules, error, match):
    with pytest.raises(error, match=match):
        spec_of(logical, rules)


def test_shardings_rejects_a_non_params_and_a_non_mesh():
    with pytest.raises(TypeError, match=r"bx.shardings: expected a bx.Params"):
        bx.shardings({"w": jnp.ones(2)}, mesh2())
    with pytest.raises(TypeError, match=r"bx.shard: expected a jax.sharding.Mesh"):
        bx.shard(bx.Params(), "data")


# -- eager options and nn.shard ------------------------------------------------------------------


def test_param_sharding_option_is_the_core_metadata_entry():
    lin = nn.Linear(2, 4, kernel_sharding=("embed", "mlp"), bias_sharding=("mlp",), seed=0)
    core = lin.core_layer
    assert core.kernel_metadata == {"sharding": ("embed", "mlp")}
    assert core.bias_metadata == {"sharding": ("mlp",)}
    spelled = nn.Linear(2, 4, kernel_metadata={"sharding": ("embed", "mlp")}, seed=0)
    assert spelled.core_params()[("blox", "layer", "kernel")].sharding == ("embed", "mlp")
    emb = nn.Embed(5, 4, embedding_sharding=("vocab", "embed"))
    assert emb.core_layer.embedding_metadata == {"sharding": ("vocab", "embed")}
    # Other metadata is kept beside the sharding.
    tagged = nn.Linear(2, 4, kernel_metadata={"tag": "w"}, kernel_sharding=(None, "mlp"))
    assert tagged.core_layer.kernel_metadata == {"tag": "w", "sharding": (None, "mlp")}


def test_param_sharding_option_errors():
    with pytest.raises(ValueError, match=r"nn.Linear\(2, 4\): expected the sharding of one param"):
        nn.Linear(2, 4, kernel_sharding=(None, "mlp"), kernel_metadata={"sharding": ("a", "b")})
    with pytest.raises(TypeError, match=r"expected kernel_sharding to be a tuple"):
        nn.Linear(2, 4, kernel_sharding="mlp")
    with pytest.raises(TypeError, match=r"unknown \['scale_sharding'\]"):
        nn.Linear(2, 4, scale_sharding=("mlp",))


def test_nn_shard_places_params_buffers_and_rng_state_in_place():
    model = nn.Sequential(
        nn.Linear(2, 4, kernel_sharding=(None, "mlp")), nn.BatchNorm(4), nn.Dropout(0.5)
    )
    assert nn.shard(model, mesh2(), {"mlp": "model"}) is model
    specs = {name: value.sharding.spec for name, value in model.state_dict().items()}
    assert specs == {
        "0.kernel": P(None, "model"),
        "0.bias": P(),
        "1.scale": P(),
        "1.bias": P(),
        "1.running_mean": P(),
        "1.running_var": P(),
        "2.rng.seed": P(),
        "2.rng.counter": P(),
    }


def test_nn_shard_places_an_optimiser_state_like_its_params():
    model = nn.Linear(2, 4, kernel_sharding=(None, "mlp"))
    state = nn.shard(optax.adam(1e-3).init(nn.trainable(model)), mesh2(), {"mlp": "model"})
    assert state[0].mu.kernel.sharding.spec == P(None, "model")
    assert state[0].count.sharding == jax.sharding.NamedSharding(mesh2(), P())


def test_nn_shard_errors_leave_the_model_as_it_was():
    model = nn.Sequential(nn.Linear(2, 4), nn.Linear(4, 4, kernel_sharding=(None, "mlp")))
    before = model[0].kernel.sharding
    with pytest.raises(ValueError, match=r"nn.shard: 1.kernel: expected a rule"):
        nn.shard(model, mesh2(), [("batch", "data")])
    assert model[0].kernel.sharding == before
    with pytest.raises(TypeError, match=r"nn.shard: expected a jax.sharding.Mesh"):
        nn.shard(model, None)


# -- 8 devices, two processes --------------------------------------------------------------------


def _env(devices):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    flags = env.get("XLA_FLAGS", "")
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
    env["PYTHONPATH"] = os.pathsep.join(
        [str(HERE.parents[1])]  # this checkout: blox and tests.eager
        + [p for p in [os.environ.get("PYTHONPATH")] if p]
    )
    return env


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The two-process run, then the 8-device checks that read its results."""
    out = tmp_path_factory.mktemp("distributed")
    port = str(_free_port())
    worker = str(HERE / "_distributed_worker.py")
    workers = [
        subprocess.Popen(
            [sys.executable, "-W", "error", worker, str(rank), port, str(out)],
            env=_env(4),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    results = []
    for process in workers:
        try:
            stdout, stderr = process.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for other in workers:
                other.kill()
            stdout, stderr = process.communicate()
        results.append((process.returncode, stdout, stderr))
    check = subprocess.run(
        [sys.executable, "-W", "error", str(HERE / "_sharding_check.py"), str(out)],
        env=_env(8),
        capture_output=True,
        text=True,
        timeout=600,
    )
    return results, check


def test_two_processes_train_and_save_a_sharded_checkpoint(runs):
    workers, _ = runs
    for rank, (code, stdout, stderr) in enumerate(workers):
        assert code == 0, f"process {rank}:\n{stdout}\n{stderr[-6000:]}"
        assert f"OK process {rank}" in stdout


@pytest.mark.parametrize(
    "check",
    [
        "data_parallel",
        "tensor_parallel",
        "fsdp",
        "transformer_block",
        "two_processes",
        "checkpoint_restore",
        "core_shard",
    ],
)
def test_eight_devices(runs, check):
    _, run = runs
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr[-6000:]}"
    assert f"OK {check}" in run.stdout.splitlines(), run.stdout
