"""PyTorch's `MultiheadAttention` over `blox.core.MultiHeadAttention`.

The shell keeps PyTorch's arrays: the packed `in_proj_weight` `(3 * embed,
embed)` (or `q_proj_weight`, `k_proj_weight`, `v_proj_weight` when `kdim` or
`vdim` differ from `embed_dim`), `in_proj_bias` `(3 * embed,)` and
`out_proj.weight` / `out_proj.bias`. Each call splits and reshapes them into
the core layer's `query`/`key`/`value` kernels `(in, heads, head_dim)` and
`out` kernel `(heads, head_dim, embed)`, turns PyTorch's masks (`True` =
masked out; floats added to the logits) into the core's `mask` (`True` =
attend) and `bias`, and lets the core layer compute everything else,
attention dropout included (one mask per weight, as in PyTorch).
"""

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from blox import core

from .._seed import _next_key, build_core, init_params
from ._linear import Linear
from ._shell import Shell, check_device

__all__ = ["MultiheadAttention"]


def uniform_arrays(
    key: jax.Array, specs: tuple[tuple[str, tuple[int, ...], float], ...], dtype: Any
) -> dict[str, jax.Array]:
    """`{name: U(-bound, bound) of shape}` for `(name, shape, bound)` specs, one key each.

    PyTorch's `uniform_` / `xavier_uniform_` / default Linear and RNN inits.
    Compiled once per configuration: op by op, every random draw of a new
    shape would compile on its own.
    """
    values = _uniform_program(specs, jnp.dtype(dtype))(key)
    return {name: value for (name, _, _), value in zip(specs, values)}


@functools.lru_cache(maxsize=256)
def _uniform_program(specs: tuple[Any, ...], dtype: Any) -> Any:
    def draw(key: jax.Array) -> list[jax.Array]:
        # A list, not a dict: a dict comes back in sorted key order.
        return [
            jax.random.uniform(
                jax.random.fold_in(key, i), shape, dtype=dtype, minval=-bound, maxval=bound
            )
            for i, (_, shape, bound) in enumerate(specs)
        ]

    return jax.jit(draw)


def _is_bool(mask: Any) -> bool:
    return jnp.issubdtype(jnp.result_type(mask), jnp.bool_)


class MultiheadAttention(Shell):
    """PyTorch's `torch.nn.MultiheadAttention`: attention from queries to keys and values.

    `attn_output = out_proj(concat_h(softmax(q_h k_h^T / sqrt(head_dim) +
    masks) v_h))` with `q = query @ W_q^T + b_q` (rows `0:E` of
    `in_proj_weight`), likewise `k`, `v`; dropout on the attention weights in
    training. Parameters as PyTorch's, initialised as PyTorch does
    (`in_proj_weight` Xavier-uniform, `out_proj` an `nn.Linear`, biases zero).

    Args:
        embed_dim: `E`, the query size and the output size.
        num_heads: Heads; must divide `embed_dim`.
        dropout: Dropout on the attention weights while training.
        bias: Biases in the input and output projections.
        add_bias_kv: Only `False` (not supported).
        add_zero_attn: Only `False` (not supported).
        kdim: Key size (default `embed_dim`).
        vdim: Value size (default `embed_dim`).
        batch_first: Inputs and outputs are `(batch, seq, feature)`.
        device: Only `None` (JAX places arrays).
        dtype: Parameter dtype (default float32).
        seed: Int or key for the init; default: the global stream.

    Returns (from a call):
        `(attn_output, attn_weights)`: `(L, N, E)` (`(N, L, E)` batch first)
        and, with `need_weights`, `(N, L, S)` averaged over heads or
        `(N, num_heads, L, S)` with `average_attn_weights=False` (else `None`).

    Raises:
        ValueError: If `num_heads` does not divide `embed_dim`, `dropout`
            is outside `[0, 1)`, an unsupported option is set, or inputs and
            masks have the wrong shapes.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager import torch_nn as nn
        >>> mha = nn.MultiheadAttention(8, 2)
        >>> x = jnp.ones((5, 3, 8))
        >>> out, weights = mha(x, x, x)
        >>> out.shape, weights.shape, mha.in_proj_weight.shape
        ((5, 3, 8), (3, 5, 5), (24, 8))
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        device: Any = None,
        dtype: Any = None,
        *,
        seed: Any = None,
    ) -> None:
        super().__init__()
        where = f"nn.MultiheadAttention({embed_dim}, {num_heads})"
        check_device(where, device)
        for name, size in (("embed_dim", embed_dim), ("num_heads", num_heads)):
            if not isinstance(size, int | np.integer) or isinstance(size, bool) or size < 1:
                raise ValueError(
                    f"{where}: expected {name} to be a positive int, got {size!r}. "
                    f"Fix: pass e.g. {name}=4."
                )
        if embed_dim % num_heads:
            raise ValueError(
                f"{where}: expected num_heads to divide embed_dim, got {embed_dim} % "
                f"{num_heads} = {embed_dim % num_heads}. Fix: pick num_heads among the "
                "divisors of embed_dim."
            )
        if (
            not isinstance(dropout, int | float)
            or isinstance(dropout, bool)
            or not 0 <= dropout < 1
        ):
            raise ValueError(
                f"{where}: expected dropout in [0, 1), got {dropout!r}. Fix: pass the "
                "probability of dropping an attention weight, e.g. dropout=0.1."
            )
        if add_bias_kv or add_zero_attn:
            raise ValueError(
                f"{where}: expected add_bias_kv=False and add_zero_attn=False, got "
                f"{add_bias_kv!r} and {add_zero_attn!r}: they are not supported yet. Fix: "
                "leave them at their defaults."
            )
        self.embed_dim = int(embed_dim)
        self.kdim = self.embed_dim if kdim is None else int(kdim)
        self.vdim = self.embed_dim if vdim is None else int(vdim)
        self._qkv_same_embed_dim = self.kdim == self.embed_dim and self.vdim == self.embed_dim
        self.num_heads = int(num_heads)
        self.dropout = float(dropout)
        self.batch_first = bool(batch_first)
        self.head_dim = self.embed_dim // self.num_heads
        param_dtype = jnp.float32 if dtype is None else dtype
        e = self.embed_dim
        key = _next_key(seed, where)
        # Xavier-uniform in-projections, as PyTorch's _reset_parameters.
        if self._qkv_same_embed_dim:
            specs = (("in_proj_weight", (3 * e, e), math.sqrt(6 / (4 * e))),)
        else:
            specs = tuple(
                (f"{name}_proj_weight", (e, width), math.sqrt(6 / (e + width)))
                for name, width in (("q", e), ("k", self.kdim), ("v", self.vdim))
            )
        for name, value in uniform_arrays(key, specs, param_dtype).items():
            setattr(self, name, value)
        if bias:
            self.in_proj_bias = jnp.zeros((3 * e,), param_dtype)
        # PyTorch's out_proj is a Linear (default init) whose bias is then zeroed.
        self.out_proj = Linear(e, e, bias=bool(bias), dtype=dtype, seed=jax.random.fold_in(key, 7))
        if bias:
            self.out_proj.bias = jnp.zeros((e,), param_dtype)
        options = {
            "qkv_features": e,
            "out_features": e,
            "dropout_rate": self.dropout,
            "broadcast_dropout": False,
            "use_bias": bool(bias),
        }
        layer, rng = build_core(where, core.MultiHeadAttention, (self.num_heads,), options)
        params = init_params(where, rng, seed, lambda p: p)
        self.adopt_core(layer, params, keep=lambda path: self.dropout > 0)

    def _core_weights(self) -> core.Params:
        """PyTorch's arrays as the core layer's query/key/value/out params."""
        e, heads, hd = self.embed_dim, self.num_heads, self.head_dim
        if self._qkv_same_embed_dim:
            w_q, w_k, w_v = jnp.split(self.in_proj_weight, 3, axis=0)
        else:
            w_q, w_k, w_v = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        base = self.core_layer.graph.path
        entries = {}
        for name, w in (("query", w_q), ("key", w_k), ("value", w_v)):
            entries[base + (name, "kernel")] = w.T.reshape((w.shape[1], heads, hd))
        entries[base + ("out", "kernel")] = self.out_proj.weight.T.reshape((heads, hd, e))
        bias = self.__dict__.get("in_proj_bias")
        if bias is not None:
            for name, b in zip(("query", "key", "value"), jnp.split(bias, 3)):
                entries[base + (name, "bias")] = b.reshape((heads, hd))
            entries[base + ("out", "bias")] = self.out_proj.bias
        return core.Params.from_dict(entries, locked=True)

    def forward(
        self,
        query: Any,
        key: Any,
        value: Any,
        key_padding_mask: Any = None,
        need_weights: bool = True,
        attn_mask: Any = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[jax.Array, jax.Array | None]:
        """Attends from `query` to `key`/`value`.

        Args:
            query: `(L, N, E)` (`(N, L, E)` batch first) or unbatched `(L, E)`.
            key: `(S, N, kdim)` likewise.
            value: `(S, N, vdim)` likewise.
            key_padding_mask: `(N, S)` (`(S,)` unbatched): boolean `True` for
                keys to ignore, or floats added to the logits.
            need_weights: Also return the attention weights (after dropout).
            attn_mask: `(L, S)` or `(N * num_heads, L, S)`: boolean `True`
                where attending is not allowed, or floats added to the logits.
            average_attn_weights: Average the returned weights over heads.
            is_causal: A hint that `attn_mask` is the causal mask; as in
                PyTorch, `attn_mask` is required with it (and is what is used).

        Returns:
            `(attn_output, attn_weights or None)`.
        """
        where = f"nn.MultiheadAttention({self.embed_dim}, {self.num_heads})"
        q, k, v = (jnp.asarray(a) for a in (query, key, value))
        batched = q.ndim == 3
        wants = (("query", q, self.embed_dim), ("key", k, self.kdim), ("value", v, self.vdim))
        for name, array, size in wants:
            if array.ndim != q.ndim or array.ndim not in (2, 3) or array.shape[-1] != size:
                layout = "(N, L, E)" if self.batch_first else "(L, N, E)"
                raise ValueError(
                    f"{where}: expected {name} of rank 2 or 3 ({layout}, or (L, E) "
                    f"unbatched) with {size} features, like the query, got shape "
                    f"{tuple(array.shape)}. Fix: pass query, key and value of one layout."
                )
        if is_causal and attn_mask is None:
            raise ValueError(
                f"{where}: expected an attn_mask with the is_causal hint, got "
                "attn_mask=None (PyTorch requires it too). Fix: pass attn_mask="
                "nn.Transformer.generate_square_subsequent_mask(L), or is_causal=False."
            )
        if not batched:
            q, k, v = q[None], k[None], v[None]
        elif not self.batch_first:
            q, k, v = (jnp.swapaxes(a, 0, 1) for a in (q, k, v))
        n, length, source = q.shape[0], q.shape[1], k.shape[1]
        if k.shape[:2] != v.shape[:2] or k.shape[0] != n:
            raise ValueError(
                f"{where}: expected key and value with the query's batch size and one "
                f"length, got query {tuple(query.shape)}, key {tuple(key.shape)}, value "
                f"{tuple(value.shape)}. Fix: keys and values come from the same positions."
            )
        mask, bias = None, None
        masks = []
        if key_padding_mask is not None:
            kpm = jnp.asarray(key_padding_mask)
            want = (n, source) if batched else (source,)
            if tuple(kpm.shape) != want:
                raise ValueError(
                    f"{where}: expected key_padding_mask of shape {want}, got "
                    f"{tuple(kpm.shape)}. Fix: one entry per batch row and key."
                )
            masks.append(kpm.reshape((n, 1, 1, source)))
        if attn_mask is not None:
            am = jnp.asarray(attn_mask)
            if am.shape == (length, source):
                masks.append(am[None, None])
            elif am.shape == (n * self.num_heads, length, source):
                masks.append(am.reshape((n, self.num_heads, length, source)))
            else:
                raise ValueError(
                    f"{where}: expected attn_mask of shape {(length, source)} or "
                    f"{(n * self.num_heads, length, source)}, got {tuple(am.shape)}. "
                    "Fix: pass an (L, S) mask, or one per batch row and head."
                )
        for m in masks:
            if _is_bool(m):
                allowed = jnp.logical_not(m)
                mask = allowed if mask is None else jnp.logical_and(mask, allowed)
            else:
                bias = m if bias is None else bias + m
        weights_params = self._core_weights()
        layer = self.core_layer
        training = self.training

        def run(params: core.Params, q: Any, k: Any, v: Any) -> tuple[Any, core.Params]:
            return layer(
                params.merge(weights_params),
                q,
                k,
                v,
                mask=mask,
                bias=bias,
                is_training=training,
                return_weights=bool(need_weights),
            )

        out = self.call_core(run, q, k, v)
        out, weights = out if need_weights else (out, None)
        if weights is not None and average_attn_weights:
            weights = jnp.mean(weights, axis=1)
        if not batched:
            out = out[0]
            weights = None if weights is None else weights[0]
        elif not self.batch_first:
            out = jnp.swapaxes(out, 0, 1)
        return out, weights

    def extra_repr(self) -> str:
        shown = f"embed_dim={self.embed_dim}, num_heads={self.num_heads}"
        if self.dropout:
            shown += f", dropout={self.dropout}"
        if self.batch_first:
            shown += ", batch_first=True"
        return shown
