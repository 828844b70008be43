"""The relu MLP and its Adam training step, written once per library.

Used by the dispatch group (32-64-64-10, batch 32), the compute group
(784-1024-1024-1024-10, batch 256), the compile group (48 layers) and the
memory group. The loss is softmax cross-entropy against integer labels; every
optimiser is Adam with the same learning rate. Imports of optional packages
happen inside the builders, so a missing package only skips its contenders.
"""

from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import blox as bx
from blox import eager as nn

from . import _common as c
from ._common import Contender, Program


@dataclass(frozen=True)
class MLPSpec:
    """`hidden` layers of `width` between `in_size` and `out_size`; `batch` rows."""

    in_size: int
    width: int
    hidden: int
    out_size: int
    batch: int

    @property
    def sizes(self) -> tuple[int, ...]:
        return (self.in_size, *([self.width] * self.hidden), self.out_size)

    def data(self) -> tuple[jax.Array, jax.Array]:
        x, y = c.classification_data(self.batch, (self.in_size,), self.out_size)
        return jnp.asarray(x), jnp.asarray(y)


def xent(logits: jax.Array, y: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


# -- raw JAX: a dict of arrays --------------------------------------------------------------


def _raw_params(sizes: tuple[int, ...]) -> dict[str, jax.Array]:
    keys = jax.random.split(jax.random.key(0), len(sizes) - 1)
    params = {}
    for i, (a, b) in enumerate(pairwise(sizes)):
        params[f"w{i}"] = jax.random.normal(keys[i], (a, b)) / np.sqrt(a)
        params[f"b{i}"] = jnp.zeros((b,))
    return params


def _raw_forward(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    n = len(params) // 2
    for i in range(n):
        x = x @ params[f"w{i}"] + params[f"b{i}"]
        if i < n - 1:
            x = jax.nn.relu(x)
    return x


def raw_forward_eager(spec: MLPSpec) -> Callable[[], Program]:
    params, (x, _) = _raw_params(spec.sizes), spec.data()
    return lambda: Program(lambda: _raw_forward(params, x))


def raw_forward(spec: MLPSpec) -> Callable[[], Program]:
    params, (x, _) = _raw_params(spec.sizes), spec.data()

    def make() -> Program:
        jitted = jax.jit(lambda p, x: _raw_forward(p, x))
        return Program(lambda: jitted(params, x), lambda: jitted.lower(params, x))

    return make


def raw_step(spec: MLPSpec, jit: Callable[..., Any] = jax.jit) -> Callable[[], Program]:
    """The hand-written step under `jit` (`jax.jit`, or `eqx.filter_jit` for `RAW_EQX`)."""
    params, (x, y) = _raw_params(spec.sizes), spec.data()
    opt = optax.adam(c.LEARNING_RATE)
    opt_state = opt.init(params)

    def make() -> Program:
        def step(params, opt_state, x, y):
            loss, grads = jax.value_and_grad(lambda p: xent(_raw_forward(p, x), y))(params)
            updates, opt_state = opt.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        return c.chained(jit(step), (params, opt_state), x, y)

    return make


# -- blox eager --------------------------------------------------------------------------------


def _blox_model(sizes: tuple[int, ...]) -> nn.Sequential:
    layers: list[Any] = []
    for i, (a, b) in enumerate(pairwise(sizes)):
        if i:
            layers.append(jax.nn.relu)
        layers.append(nn.Linear(a, b, seed=i))
    return nn.Sequential(*layers)


def blox_forward_eager(spec: MLPSpec, *, typecheck: bool = True) -> Callable[[], Program]:
    model, (x, _) = _blox_model(spec.sizes), spec.data()
    if typecheck:
        return lambda: Program(lambda: model(x))

    def call() -> jax.Array:
        was = nn.typechecking_enabled()
        nn.set_typechecking(False)
        try:
            return model(x)
        finally:
            nn.set_typechecking(was)

    return lambda: Program(call)


def blox_forward_filter_jit(spec: MLPSpec) -> Callable[[], Program]:
    model, (x, _) = _blox_model(spec.sizes), spec.data()

    def make() -> Program:
        jitted = nn.filter_jit(lambda model, x: model(x))
        lower = getattr(jitted, "lower", None)
        return Program(
            lambda: jitted(model, x), None if lower is None else (lambda: lower(model, x))
        )

    return make


def blox_forward_eqx(spec: MLPSpec) -> Callable[[], Program]:
    model, (x, _) = _blox_model(spec.sizes), spec.data()

    def make() -> Program:
        jitted = eqx.filter_jit(lambda model, x: model(x))
        return Program(lambda: jitted(model, x), lambda: jitted.lower(model, x))

    return make


def blox_step_body(opt: Any, loss: Callable[[Any, Any, Any], jax.Array]) -> Callable[..., Any]:
    """A fresh eager training step on `loss(model, x, y)`, for `nn.filter_jit` or `eqx.filter_jit`.

    It returns the model, so under `eqx.filter_jit` the updated state (RNG
    counters, running statistics) comes back too.
    """

    def step(model, opt_state, x, y):
        value, grads = nn.filter_value_and_grad(lambda m: loss(m, x, y))(model)
        updates, opt_state = opt.update(grads, opt_state, nn.trainable(model))
        return eqx.apply_updates(model, updates), opt_state, value

    return step


def model_xent(model: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    """The classification loss of any callable model: `xent(model(x), y)`."""
    return xent(model(x), y)


def blox_step_filter_jit(spec: MLPSpec) -> Callable[[], Program]:
    model, (x, y) = _blox_model(spec.sizes), spec.data()
    opt = optax.adam(c.LEARNING_RATE)
    opt_state = opt.init(nn.trainable(model))
    return lambda: c.chained(
        nn.filter_jit(blox_step_body(opt, model_xent)), (model, opt_state), x, y
    )


def blox_step_eqx(spec: MLPSpec) -> Callable[[], Program]:
    model, (x, y) = _blox_model(spec.sizes), spec.data()
    opt = optax.adam(c.LEARNING_RATE)
    opt_state = opt.init(nn.trainable(model))
    return lambda: c.chained(
        eqx.filter_jit(blox_step_body(opt, model_xent)), (model, opt_state), x, y
    )


# -- blox core -------------------------------------------------------------------------------


def _core_model(spec: MLPSpec) -> tuple[bx.Sequential, bx.Params]:
    graph = bx.Graph("mlp")
    rng = bx.Rng(graph / "rng")
    layers: list[Any] = []
    for i, b in enumerate(spec.sizes[1:]):
        if i:
            layers.append(jax.nn.relu)
        layers.append(bx.Linear(graph / f"l{i}", b, rng=rng))
    mlp = bx.Sequential(graph / "seq", layers)
    params = rng.seed(bx.Params(), seed=0)
    _, params = mlp(params, jnp.zeros((1, spec.in_size)))
    return mlp, params.locked()


def core_forward(spec: MLPSpec) -> Callable[[], Program]:
    (mlp, params), (x, _) = _core_model(spec), spec.data()

    def make() -> Program:
        jitted = jax.jit(lambda params, x: mlp(params, x)[0])
        return Program(lambda: jitted(params, x), lambda: jitted.lower(params, x))

    return make


def core_train_step(module: Callable[..., Any], opt: Any, loss: Callable[..., Any]) -> Any:
    """A fresh core training step: split, differentiate the trainable part, merge state back.

    `module(params, x)` returns `(outputs, params)`; `loss(outputs, y)` a scalar.
    """

    def step(params, opt_state, x, y):
        trainable, rest = params.split()

        def loss_fn(trainable):
            out, new = module(trainable.merge(rest), x)
            return loss(out, y), new

        (value, new), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
        updates, opt_state = opt.update(grads, opt_state, trainable)
        trainable = optax.apply_updates(trainable, updates)
        return params.merge(new.split()[1]).merge(trainable), opt_state, value

    return step


def core_step(spec: MLPSpec) -> Callable[[], Program]:
    (mlp, params), (x, y) = _core_model(spec), spec.data()
    opt = optax.adam(c.LEARNING_RATE)
    opt_state = opt.init(params.split()[0])
    return lambda: c.chained(jax.jit(core_train_step(mlp, opt, xent)), (params, opt_state), x, y)


# -- Equinox -------------------------------------------------------------------------------


def _eqx_model(spec: MLPSpec) -> eqx.nn.MLP:
    return eqx.nn.MLP(
        spec.in_size,
        spec.out_size,
        spec.width,
        spec.hidden,
        activation=jax.nn.relu,
        key=jax.random.key(0),
    )


def eqx_forward(spec: MLPSpec) -> Callable[[], Program]:
    model, (x, _) = _eqx_model(spec), spec.data()

    def make() -> Program:
        jitted = eqx.filter_jit(lambda model, x: jax.vmap(model)(x))
        return Program(lambda: jitted(model, x), lambda: jitted.lower(model, x))

    return make


def eqx_step(spec: MLPSpec) -> Callable[[], Program]:
    model, (x, y) = _eqx_model(spec), spec.data()
    opt = optax.adam(c.LEARNING_RATE)
    opt_state = opt.init(eqx.filter(model, eqx.is_inexact_array))

    def make() -> Program:
        def step(model, opt_state, x, y):
            loss, grads = eqx.filter_value_and_grad(lambda m: xent(jax.vmap(m)(x), y))(model)
            params = eqx.filter(model, eqx.is_inexact_array)
            updates, opt_state = opt.update(grads, opt_state, params)
            return eqx.apply_updates(model, updates), opt_state, loss

        return c.chained(eqx.filter_jit(step), (model, opt_state), x, y)

    return make


# -- Flax NNX ---------------------------------------------------------------------------------


def _nnx_model(spec: MLPSpec) -> Any:
    from flax import nnx

    rngs = nnx.Rngs(0)
    layers: list[Any] = []
    for i, (a, b) in enumerate(pairwise(spec.sizes)):
        if i:
            layers.append(jax.nn.relu)
        layers.append(nnx.Linear(a, b, rngs=rngs))
    return nnx.Sequential(*layers)


def nnx_forward(spec: MLPSpec, *, cached: bool = False) -> Callable[[], Program]:
    from flax import nnx

    model, (x, _) = _nnx_model(spec), spec.data()

    def make() -> Program:
        jitted = nnx.jit(lambda model, x: model(x))
        if cached:
            partial = nnx.cached_partial(jitted, model)
            return Program(lambda: partial(x))
        return Program(lambda: jitted(model, x), lambda: jitted.lower(model, x))

    return make


def nnx_step(spec: MLPSpec, *, cached: bool = False) -> Callable[[], Program]:
    from flax import nnx

    model, (x, y) = _nnx_model(spec), spec.data()
    optimizer = nnx.Optimizer(model, optax.adam(c.LEARNING_RATE), wrt=nnx.Param)
    return lambda: nnx_program(model, optimizer, model_xent, x, y, cached=cached)


def nnx_program(
    model: Any,
    optimizer: Any,
    loss: Callable[[Any, Any, Any], jax.Array],
    x: Any,
    y: Any,
    *,
    cached: bool,
) -> Program:
    """A fresh `nnx.jit` step on `loss(model, x, y)` that updates `model` in place.

    With `cached`, the step goes through `nnx.cached_partial(step, model,
    optimizer)`, which skips re-walking the object graph on every call.
    """
    from flax import nnx

    def step(model, optimizer, x, y):
        value, grads = nnx.value_and_grad(lambda m: loss(m, x, y))(model)
        optimizer.update(model, grads)
        return value

    jitted = nnx.jit(step)
    if cached:
        partial = nnx.cached_partial(jitted, model, optimizer)
        return Program(lambda: partial(x, y))
    return Program(
        lambda: jitted(model, optimizer, x, y), lambda: jitted.lower(model, optimizer, x, y)
    )


# -- PyTorch ----------------------------------------------------------------------------------


def _torch_model(spec: MLPSpec) -> tuple[Any, Any, Any]:
    import torch

    torch.manual_seed(0)
    layers: list[Any] = []
    for i, (a, b) in enumerate(pairwise(spec.sizes)):
        if i:
            layers.append(torch.nn.ReLU())
        layers.append(torch.nn.Linear(a, b))
    x, y = c.classification_data(spec.batch, (spec.in_size,), spec.out_size)
    return torch.nn.Sequential(*layers), torch.from_numpy(x), torch.from_numpy(y).long()


def torch_forward(spec: MLPSpec) -> Callable[[], Program]:
    import torch

    model, x, _ = _torch_model(spec)

    def call() -> Any:
        with torch.no_grad():
            return model(x)

    return lambda: Program(call)


def torch_step(spec: MLPSpec) -> Callable[[], Program]:
    import torch

    model, x, y = _torch_model(spec)
    return lambda: torch_program(model, lambda m: torch.nn.functional.cross_entropy(m(x), y))


def torch_program(model: Any, loss: Callable[[Any], Any]) -> Program:
    """A PyTorch Adam step on `loss(model)`; a new optimiser, so its state starts empty."""
    import torch

    opt = torch.optim.Adam(model.parameters(), lr=c.LEARNING_RATE)

    def step() -> Any:
        opt.zero_grad(set_to_none=True)
        value = loss(model)
        value.backward()
        opt.step()
        return value.detach()

    return Program(step)


# -- the contender tables -----------------------------------------------------------------------

FORWARD = {
    c.RAW: Contender(c.RAW, raw_forward),
    c.RAW_EAGER: Contender(c.RAW_EAGER, raw_forward_eager),
    c.BLOX_EAGER: Contender(c.BLOX_EAGER, blox_forward_eager),
    c.BLOX_EAGER_NOCHECK: Contender(
        c.BLOX_EAGER_NOCHECK, lambda spec: blox_forward_eager(spec, typecheck=False)
    ),
    c.BLOX_FILTER_JIT: Contender(c.BLOX_FILTER_JIT, blox_forward_filter_jit),
    c.BLOX_EQX_JIT: Contender(c.BLOX_EQX_JIT, blox_forward_eqx),
    c.BLOX_CORE: Contender(c.BLOX_CORE, core_forward),
    c.EQX: Contender(c.EQX, eqx_forward),
    c.NNX: Contender(c.NNX, nnx_forward, requires=("flax",)),
    c.NNX_CACHED: Contender(
        c.NNX_CACHED, lambda spec: nnx_forward(spec, cached=True), requires=("flax",)
    ),
    c.TORCH: Contender(c.TORCH, torch_forward, requires=("torch",), note="torch.no_grad()"),
}

STEP = {
    c.RAW: Contender(c.RAW, raw_step),
    c.RAW_EQX: Contender(c.RAW_EQX, lambda spec: raw_step(spec, jit=eqx.filter_jit)),
    c.BLOX_FILTER_JIT: Contender(c.BLOX_FILTER_JIT, blox_step_filter_jit),
    c.BLOX_EQX_JIT: Contender(c.BLOX_EQX_JIT, blox_step_eqx),
    c.BLOX_CORE: Contender(c.BLOX_CORE, core_step),
    c.EQX: Contender(c.EQX, eqx_step),
    c.NNX: Contender(c.NNX, nnx_step, requires=("flax",)),
    c.NNX_CACHED: Contender(
        c.NNX_CACHED, lambda spec: nnx_step(spec, cached=True), requires=("flax",)
    ),
    c.TORCH: Contender(c.TORCH, torch_step, requires=("torch",)),
}


# -- building the model (the build group) ------------------------------------------------------


def _built(make_model: Callable[[MLPSpec], Any]) -> Callable[[MLPSpec], Callable[[], Program]]:
    """A contender whose one call builds the model from scratch and returns its arrays."""

    def build(spec: MLPSpec) -> Callable[[], Program]:
        return lambda: Program(lambda: jax.tree.leaves(make_model(spec)))

    return build


def _torch_built(spec: MLPSpec) -> Callable[[], Program]:
    return lambda: Program(lambda: _torch_model(spec)[0])


BUILD = {
    c.RAW: Contender(c.RAW, _built(lambda spec: _raw_params(spec.sizes))),
    c.BLOX_EAGER: Contender(c.BLOX_EAGER, _built(lambda spec: _blox_model(spec.sizes))),
    c.BLOX_CORE: Contender(c.BLOX_CORE, _built(_core_model)),
    c.EQX: Contender(c.EQX, _built(_eqx_model)),
    c.NNX: Contender(c.NNX, _built(_nnx_model), requires=("flax",)),
    c.TORCH: Contender(c.TORCH, _torch_built, requires=("torch",)),
}
