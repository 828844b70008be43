"""A 2-block pre-norm Transformer and its Adam step, once per library.

Batch 16 sequences of 128 positions, width 128, 4 heads, MLP width 512 (GELU);
each block is `x + attn(ln(x))` with a causal mask, then `x + mlp(ln(x))`.
The loss is the mean squared error between the output and a fixed random
target, so no embedding or vocabulary enters the comparison. The baseline is
the same blocks written by hand on a dict of arrays, attention through
`jax.nn.dot_product_attention` with the same boolean mask. Equinox runs
`eqx.nn.MultiheadAttention` per example under `jax.vmap`; Flax NNX
`nnx.MultiHeadAttention`; PyTorch `torch.nn.MultiheadAttention`
(batch-first, boolean causal mask).
"""

from collections.abc import Callable
from dataclasses import dataclass
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
from ._mlp import blox_step_body, core_train_step, nnx_program, torch_program


@dataclass(frozen=True)
class TransformerSpec:
    """`batch` sequences of `length` positions of width `dim`; `depth` blocks."""

    batch: int = 16
    length: int = 128
    dim: int = 128
    heads: int = 4
    depth: int = 2

    def data(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(0)
        shape = (self.batch, self.length, self.dim)
        return rng.standard_normal(shape, dtype=np.float32), rng.standard_normal(
            shape, dtype=np.float32
        )

    def jax_data(self) -> tuple[jax.Array, jax.Array]:
        x, t = self.data()
        return jnp.asarray(x), jnp.asarray(t)

    def causal(self) -> jax.Array:
        return jnp.tril(jnp.ones((self.length, self.length), bool))[None, None]


def _mse(ys: jax.Array, target: jax.Array) -> jax.Array:
    return jnp.mean(jnp.square(ys - target))


# -- raw JAX ---------------------------------------------------------------------------------


def _raw_params(spec: TransformerSpec) -> list[dict[str, jax.Array]]:
    d, h = spec.dim, spec.heads
    keys = iter(jax.random.split(jax.random.key(0), 6 * spec.depth))

    def normal(shape, fan_in):
        return jax.random.normal(next(keys), shape) / np.sqrt(fan_in)

    blocks = []
    for _ in range(spec.depth):
        block = {f"w{n}": normal((d, h, d // h), d) for n in "qkv"}
        block |= {f"b{n}": jnp.zeros((h, d // h)) for n in "qkv"}
        block |= {"wo": normal((h, d // h, d), d), "bo": jnp.zeros(d)}
        block |= {"w1": normal((d, 4 * d), d), "b1": jnp.zeros(4 * d)}
        block |= {"w2": normal((4 * d, d), 4 * d), "b2": jnp.zeros(d)}
        for n in ("ln1", "ln2"):
            block |= {f"{n}_scale": jnp.ones(d), f"{n}_bias": jnp.zeros(d)}
        blocks.append(block)
    return blocks


def _layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array) -> jax.Array:
    mean = jnp.mean(x, -1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), -1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + 1e-5) * scale + bias


def _raw_forward(blocks: list[dict[str, jax.Array]], x: jax.Array, mask: jax.Array) -> jax.Array:
    for p in blocks:
        y = _layer_norm(x, p["ln1_scale"], p["ln1_bias"])
        q, k, v = (jnp.einsum("btd,dhk->bthk", y, p[f"w{n}"]) + p[f"b{n}"] for n in "qkv")
        a = jax.nn.dot_product_attention(q, k, v, mask=mask)
        x = x + jnp.einsum("bthk,hkd->btd", a, p["wo"]) + p["bo"]
        y = _layer_norm(x, p["ln2_scale"], p["ln2_bias"])
        x = x + jax.nn.gelu(y @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
    return x


def raw_step(spec: TransformerSpec) -> Callable[[], Program]:
    params, (x, t), mask = _raw_params(spec), spec.jax_data(), spec.causal()
    opt = optax.adam(c.LEARNING_RATE)
    opt_state = opt.init(params)

    def make() -> Program:
        def step(params, opt_state, x, t):
            loss, grads = jax.value_and_grad(lambda p: _mse(_raw_forward(p, x, mask), t))(params)
            updates, opt_state = opt.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        return c.chained(jax.jit(step), (params, opt_state), x, t)

    return make


# -- blox eager and core ----------------------------------------------------------------------


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = nn.MultiHeadAttention(dim, heads)
        self.ln2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        x = x + self.attn(self.ln1(x), mask=mask)
        return x + self.fc2(jax.nn.gelu(self.fc1(self.ln2(x))))


class _Blocks(nn.Module):
    def __init__(self, spec: TransformerSpec) -> None:
        super().__init__()
        self.blocks = [_Block(spec.dim, spec.heads) for _ in range(spec.depth)]

    def __call__(self, x: jax.Array) -> jax.Array:
        mask = jnp.tril(jnp.ones((x.shape[-2], x.shape[-2]), bool))[None, None]
        for block in self.blocks:
            x = block(x, mask)
        return x


def _blox_loss(model: Any, x: jax.Array, t: jax.Array) -> jax.Array:
    return _mse(model(x), t)


def blox_step(spec: TransformerSpec) -> Callable[[], Program]:
    nn.manual_seed(0)
    model, (x, t) = _Blocks(spec), spec.jax_data()
    opt = optax.adam(c.LEARNING_RATE)
    opt_state = opt.init(nn.trainable(model))
    return lambda: c.chained(
        nn.filter_jit(blox_step_body(opt, _blox_loss)), (model, opt_state), x, t
    )


def core_step(spec: TransformerSpec) -> Callable[[], Program]:
    graph = bx.Graph("net")
    rng = bx.Rng(graph / "rng")
    layers = []
    for i in range(spec.depth):
        node = graph / f"block{i}"
        layers.append(
            (
                bx.LayerNorm(node / "ln1"),
                bx.MultiHeadAttention(node / "attn", spec.heads, rng=rng),
                bx.LayerNorm(node / "ln2"),
                bx.Linear(node / "fc1", 4 * spec.dim, rng=rng),
                bx.Linear(node / "fc2", spec.dim, rng=rng),
            )
        )
    mask = spec.causal()

    def apply(params, x):
        for ln1, attn, ln2, fc1, fc2 in layers:
            y, params = ln1(params, x)
            y, params = attn(params, y, mask=mask)
            x = x + y
            y, params = ln2(params, x)
            y, params = fc1(params, y)
            y, params = fc2(params, jax.nn.gelu(y))
            x = x + y
        return x, params

    x, t = spec.jax_data()
    _, params = apply(rng.seed(bx.Params(), seed=0), x[:1])
    params = params.locked()
    opt = optax.adam(c.LEARNING_RATE)
    opt_state = opt.init(params.split()[0])

    def make() -> Program:
        return c.chained(jax.jit(core_train_step(apply, opt, _mse)), (params, opt_state), x, t)

    return make


# -- Equinox ---------------------------------------------------------------------------------


class _EqxBlock(eqx.Module):
    ln1: eqx.nn.LayerNorm
    attn: eqx.nn.MultiheadAttention
    ln2: eqx.nn.LayerNorm
    fc1: eqx.nn.Linear
    fc2: eqx.nn.Linear

    def __init__(self, dim: int, heads: int, key: jax.Array) -> None:
        k1, k2, k3 = jax.random.split(key, 3)
        self.ln1, self.ln2 = eqx.nn.LayerNorm(dim), eqx.nn.LayerNorm(dim)
        self.attn = eqx.nn.MultiheadAttention(
            heads,
            dim,
            use_query_bias=True,
            use_key_bias=True,
            use_value_bias=True,
            use_output_bias=True,
            key=k1,
        )
        self.fc1 = eqx.nn.Linear(dim, 4 * dim, key=k2)
        self.fc2 = eqx.nn.Linear(4 * dim, dim, key=k3)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """One sequence `(length, dim)`."""
        y = jax.vmap(self.ln1)(x)
        x = x + self.attn(y, y, y, mask=mask)
        y = jax.vmap(self.ln2)(x)
        return x + jax.vmap(lambda v: self.fc2(jax.nn.gelu(self.fc1(v))))(y)


def eqx_step(spec: TransformerSpec) -> Callable[[], Program]:
    keys = jax.random.split(jax.random.key(0), spec.depth)
    blocks = [_EqxBlock(spec.dim, spec.heads, k) for k in keys]
    x, t = spec.jax_data()
    mask = spec.causal()[0, 0]
    opt = optax.adam(c.LEARNING_RATE)
    opt_state = opt.init(eqx.filter(blocks, eqx.is_inexact_array))

    def forward(blocks, seq):
        for block in blocks:
            seq = block(seq, mask)
        return seq

    def make() -> Program:
        def step(blocks, opt_state, x, t):
            def loss_fn(blocks):
                return _mse(jax.vmap(forward, in_axes=(None, 0))(blocks, x), t)

            loss, grads = eqx.filter_value_and_grad(loss_fn)(blocks)
            params = eqx.filter(blocks, eqx.is_inexact_array)
            updates, opt_state = opt.update(grads, opt_state, params)
            return eqx.apply_updates(blocks, updates), opt_state, loss

        return c.chained(eqx.filter_jit(step), (blocks, opt_state), x, t)

    return make


# -- Flax NNX ---------------------------------------------------------------------------------


def nnx_step(spec: TransformerSpec, *, cached: bool = False) -> Callable[[], Program]:
    from flax import nnx

    class Block(nnx.Module):
        def __init__(self, dim, heads, rngs):
            self.ln1, self.ln2 = nnx.LayerNorm(dim, rngs=rngs), nnx.LayerNorm(dim, rngs=rngs)
            self.attn = nnx.MultiHeadAttention(heads, dim, decode=False, rngs=rngs)
            self.fc1 = nnx.Linear(dim, 4 * dim, rngs=rngs)
            self.fc2 = nnx.Linear(4 * dim, dim, rngs=rngs)

        def __call__(self, x, mask):
            x = x + self.attn(self.ln1(x), mask=mask)
            return x + self.fc2(jax.nn.gelu(self.fc1(self.ln2(x))))

    class Blocks(nnx.Module):
        def __init__(self, rngs):
            self.blocks = nnx.List([Block(spec.dim, spec.heads, rngs) for _ in range(spec.depth)])

        def __call__(self, x):
            for block in self.blocks:
                x = block(x, spec.causal())
            return x

    model = Blocks(nnx.Rngs(0))
    x, t = spec.jax_data()
    optimizer = nnx.Optimizer(model, optax.adam(c.LEARNING_RATE), wrt=nnx.Param)
    return lambda: nnx_program(model, optimizer, lambda m, x, t: _mse(m(x), t), x, t, cached=cached)


# -- PyTorch ----------------------------------------------------------------------------------


def torch_step(spec: TransformerSpec) -> Callable[[], Program]:
    import torch

    torch.manual_seed(0)

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = torch.nn.LayerNorm(spec.dim), torch.nn.LayerNorm(spec.dim)
            self.attn = torch.nn.MultiheadAttention(spec.dim, spec.heads, batch_first=True)
            self.fc1 = torch.nn.Linear(spec.dim, 4 * spec.dim)
            self.fc2 = torch.nn.Linear(4 * spec.dim, spec.dim)

        def forward(self, x, mask):
            y = self.ln1(x)
            x = x + self.attn(y, y, y, attn_mask=mask, need_weights=False)[0]
            return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.ln2(x))))

    blocks = torch.nn.ModuleList([Block() for _ in range(spec.depth)])
    x, t = (torch.from_numpy(a) for a in spec.data())
    # PyTorch's boolean attn_mask is True where attending is NOT allowed.
    mask = ~torch.tril(torch.ones(spec.length, spec.length, dtype=torch.bool))

    def loss(blocks):
        y = x
        for block in blocks:
            y = block(y, mask)
        return torch.mean(torch.square(y - t))

    return lambda: torch_program(blocks, loss)


STEP = {
    c.RAW: Contender(c.RAW, raw_step, note="hand-written, jax.nn.dot_product_attention"),
    c.BLOX_FILTER_JIT: Contender(c.BLOX_FILTER_JIT, blox_step),
    c.BLOX_CORE: Contender(c.BLOX_CORE, core_step),
    c.EQX: Contender(c.EQX, eqx_step, note="eqx.nn.MultiheadAttention, vmap"),
    c.NNX: Contender(c.NNX, nnx_step, requires=("flax",), note="nnx.MultiHeadAttention"),
    c.NNX_CACHED: Contender(
        c.NNX_CACHED, lambda spec: nnx_step(spec, cached=True), requires=("flax",)
    ),
    c.TORCH: Contender(
        c.TORCH, torch_step, requires=("torch",), note="torch.nn.MultiheadAttention"
    ),
}


# -- generation: one position per call, attending over a key/value cache ---------------------
#
# Batch 1, a cache of `length` positions per block. Each step feeds one new
# position `(1, 1, dim)` through both blocks and keeps the updated caches; when
# the caches are full the program swaps in fresh empty ones (untimed work of
# one assignment), so every timed step is a real decode step. Equinox and
# PyTorch ship no attention cache, so they have no contender here.


def _program(step, fresh, spec: TransformerSpec, renew=None) -> Program:
    """A decode loop; `renew(fresh)` gives a new start state (a donating step consumes it)."""
    x = jnp.ones((1, 1, spec.dim), jnp.float32)

    def start() -> Any:
        return fresh if renew is None else renew(fresh)

    box = {"state": start(), "count": 0}

    def run() -> Any:
        if box["count"] == spec.length:
            box["state"], box["count"] = start(), 0
        box["state"], out = step(box["state"], x)
        box["count"] += 1
        return out

    return Program(run)


def raw_decode(spec: TransformerSpec) -> Callable[[], Program]:
    blocks = _raw_params(spec)
    shape = (1, spec.length, spec.heads, spec.dim // spec.heads)
    fresh = [(jnp.zeros(shape), jnp.zeros(shape)) for _ in blocks], jnp.zeros((), jnp.int32)

    def step(blocks, state, x):
        caches, index = state
        new = []
        for p, (ck, cv) in zip(blocks, caches):
            y = _layer_norm(x, p["ln1_scale"], p["ln1_bias"])
            q, k, v = (jnp.einsum("btd,dhk->bthk", y, p[f"w{n}"]) + p[f"b{n}"] for n in "qkv")
            zero = jnp.zeros((), jnp.int32)
            ck = jax.lax.dynamic_update_slice(ck, k, (zero, index, zero, zero))
            cv = jax.lax.dynamic_update_slice(cv, v, (zero, index, zero, zero))
            mask = (jnp.arange(spec.length) <= index)[None, None, None]
            a = jax.nn.dot_product_attention(q, ck, cv, mask=mask)
            x = x + jnp.einsum("bthk,hkd->btd", a, p["wo"]) + p["bo"]
            y = _layer_norm(x, p["ln2_scale"], p["ln2_bias"])
            x = x + jax.nn.gelu(y @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
            new.append((ck, cv))
        return (new, index + 1), x

    # The weights are an argument, as blox passes them: closed over, they
    # would be baked into the program as constants, which a model whose
    # weights live in its parameters (and change between checkpoints) cannot do.
    jitted = jax.jit(step)
    return lambda: _program(lambda state, x: jitted(blocks, state, x), fresh, spec)


def core_decode(spec: TransformerSpec) -> Callable[[], Program]:
    graph = bx.Graph("net")
    rng = bx.Rng(graph / "rng")
    layers = []
    for i in range(spec.depth):
        node = graph / f"block{i}"
        attn = bx.MultiHeadAttention(
            node / "attn", spec.heads, qkv_features=spec.dim, decode=True, rng=rng
        )
        layers.append(
            (
                bx.LayerNorm(node / "ln1"),
                attn,
                bx.LayerNorm(node / "ln2"),
                bx.Linear(node / "fc1", 4 * spec.dim, rng=rng),
                bx.Linear(node / "fc2", spec.dim, rng=rng),
            )
        )

    def apply(params, x):
        for ln1, attn, ln2, fc1, fc2 in layers:
            y, params = ln1(params, x)
            y, params = attn(params, y)
            x = x + y
            y, params = ln2(params, x)
            y, params = fc1(params, y)
            y, params = fc2(params, jax.nn.gelu(y))
            x = x + y
        return params, x

    params = rng.seed(bx.Params(), seed=0)
    for _, attn, *_ in layers:
        params = attn.init_cache(params, (1,), spec.length)
    params, _ = apply(params, jnp.zeros((1, 1, spec.dim)))
    for _, attn, *_ in layers:
        params = attn.init_cache(params, (1,), spec.length)
    # As docs/attention.md advises: the weights go in as an argument and only
    # the state (the caches, the RNG) comes back, donated, so XLA neither
    # copies an unchanged weight into a new output (JAX issue #6284) nor
    # creates an output array per weight on every step.
    weights, fresh = params.locked().split()

    def step(weights, state, x):
        state_out, y = apply(weights.merge(state), x)
        return state_out.split()[1], y

    jitted = jax.jit(step, donate_argnums=1)
    return lambda: _program(lambda state, x: jitted(weights, state, x), fresh, spec, renew=_copy)


def _copy(tree: Any) -> Any:
    return jax.tree.map(jnp.copy, tree)


def blox_decode(spec: TransformerSpec) -> Callable[[], Program]:
    nn.manual_seed(0)
    blocks = [_Block(spec.dim, spec.heads) for _ in range(spec.depth)]
    for block in blocks:
        block.attn = nn.MultiHeadAttention(spec.dim, spec.heads, decode=True)
        block.attn.init_cache(1, spec.length)
    model = blocks

    @nn.filter_jit
    def step(model, x):
        for block in model:
            x = block(x, None)
        return x

    def make() -> Program:
        x = jnp.ones((1, 1, spec.dim), jnp.float32)
        count = [0]

        def run() -> Any:
            if count[0] == spec.length:
                for block in model:
                    block.attn.init_cache(1, spec.length)
                count[0] = 0
            count[0] += 1
            return step(model, x)

        return Program(run)

    return make


def nnx_decode(spec: TransformerSpec) -> Callable[[], Program]:
    from flax import nnx

    class Block(nnx.Module):
        def __init__(self, rngs):
            self.ln1, self.ln2 = (
                nnx.LayerNorm(spec.dim, rngs=rngs),
                nnx.LayerNorm(spec.dim, rngs=rngs),
            )
            self.attn = nnx.MultiHeadAttention(spec.heads, spec.dim, decode=True, rngs=rngs)
            self.fc1 = nnx.Linear(spec.dim, 4 * spec.dim, rngs=rngs)
            self.fc2 = nnx.Linear(4 * spec.dim, spec.dim, rngs=rngs)

        def __call__(self, x):
            x = x + self.attn(self.ln1(x))
            return x + self.fc2(jax.nn.gelu(self.fc1(self.ln2(x))))

    rngs = nnx.Rngs(0)
    model = nnx.List([Block(rngs) for _ in range(spec.depth)])

    def reset() -> None:
        for block in model:
            block.attn.init_cache((1, spec.length, spec.dim))

    reset()

    @nnx.jit
    def step(model, x):
        for block in model:
            x = block(x)
        return x

    def make() -> Program:
        x = jnp.ones((1, 1, spec.dim), jnp.float32)
        count = [0]

        def run() -> Any:
            if count[0] == spec.length:
                reset()
                count[0] = 0
            count[0] += 1
            return step(model, x)

        return Program(run)

    return make


DECODE = {
    c.RAW: Contender(c.RAW, raw_decode, note="hand-written cache"),
    c.BLOX_FILTER_JIT: Contender(c.BLOX_FILTER_JIT, blox_decode, note="decode=True buffers"),
    c.BLOX_CORE: Contender(c.BLOX_CORE, core_decode, note="cache in params, donated"),
    c.NNX: Contender(c.NNX, nnx_decode, requires=("flax",), note="decode=True, init_cache"),
}
