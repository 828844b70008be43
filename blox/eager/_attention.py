"""Eager `MultiHeadAttention`: builds `blox.core.MultiHeadAttention` and calls it.

The key/value cache of `decode=True` is three buffers (`cached_key`,
`cached_value`, `cache_index`) made by `init_cache`. Each call writes the new
positions into them, so the cache advances in place exactly as BatchNorm's
running statistics do: in eager calls, under `nn.filter_jit`, in the model a
plain `eqx.filter_jit` function returns, in `state_dict` and in checkpoints.
"""

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Shaped

from blox import core

from ._core_module import CoreModule
from ._seed import build_core, example_zeros, init_params
from ._typecheck import typecheck

_CACHE_NAMES = ("cached_key", "cached_value", "cache_index")


class MultiHeadAttention(CoreModule):
    """Multi-head dot-product attention with flax.linen's parameters.

    Parameters (flax.linen's names and shapes): `query`, `key`, `value`
    (`kernel` `(in, num_heads, head_dim)`, `bias` `(num_heads, head_dim)`),
    `out` (`kernel` `(num_heads, head_dim, out_features)`, `bias`), and
    `query_ln`/`key_ln` (`scale`) with `normalize_qk`.

    With `decode=True`, call `attn.init_cache(batch_size, max_length)` first;
    each call then appends its positions to the cache buffers and attends
    causally over everything cached. Calling `init_cache` again starts over.

    Args:
        embed_dim: Feature size of the queries (and default of the rest).
        num_heads: Number of heads; must divide `qkv_features`.
        qkv_features: Size of the projected queries/keys/values (default
            `embed_dim`).
        out_features: Output size (default `embed_dim`).
        dropout_rate: Dropout on the attention weights in training mode.
        use_bias: Biases in the projections.
        decode: Decode from a key/value cache.
        normalize_qk: LayerNorm the projected queries and keys.
        kdim: Feature size of the key inputs (default `embed_dim`).
        vdim: Feature size of the value inputs (default `kdim`).
        seed: Int or key for this layer's init (and dropout stream).
        **options: Other `blox.core.MultiHeadAttention` options
            (`broadcast_dropout`, `dtype`, `param_dtype`, `precision`, inits,
            metadata).

    Shapes:
        query `(*batch, q_len, embed_dim)`, key `(*batch, kv_len, kdim)`,
        value `(*batch, kv_len, vdim)` -> `(*batch, q_len, out_features)`;
        `mask` and `bias` broadcastable to `(*batch, num_heads, q_len, kv_len)`.

    Raises:
        ValueError: If `num_heads` does not divide `qkv_features`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> attn = nn.MultiHeadAttention(8, 2)
        >>> x = jnp.ones((3, 5, 8))
        >>> attn(x).shape, attn.query.kernel.shape, attn.out.kernel.shape
        ((3, 5, 8), (8, 2, 4), (2, 4, 8))
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        qkv_features: int | None = None,
        out_features: int | None = None,
        dropout_rate: float = 0.0,
        use_bias: bool = True,
        decode: bool = False,
        normalize_qk: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        seed: Any = None,
        **options: Any,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.kdim = kdim or embed_dim
        self.vdim = vdim or self.kdim
        self.out_features = out_features or embed_dim
        self.decode = decode
        options = {
            "qkv_features": qkv_features or embed_dim,
            "out_features": self.out_features,
            "dropout_rate": dropout_rate,
            "use_bias": use_bias,
            "decode": decode,
            "normalize_qk": normalize_qk,
            **options,
        }
        self.options = tuple(sorted(options.items(), key=lambda kv: kv[0]))
        where = f"nn.MultiHeadAttention({embed_dim}, {num_heads})"
        features = options["qkv_features"]
        if isinstance(num_heads, int) and num_heads > 0 and features % num_heads:
            raise ValueError(
                f"{where}: expected qkv_features (default embed_dim) divisible by "
                f"num_heads={num_heads}, got {features}. Fix: pick num_heads dividing "
                "the feature size, or pass qkv_features= a multiple of num_heads."
            )
        layer, rng = build_core(where, core.MultiHeadAttention, (num_heads,), options)
        shapes = (self.embed_dim, self.kdim, self.vdim)

        def create(params: Any) -> Any:
            if decode:
                params = layer.init_cache(params, (1,), 1)
            q, k, v = (example_zeros((1, 1, n), jnp.float32) for n in shapes)
            return layer(params, q, k, v)[1]

        params = init_params(where, rng, seed, create, signature=(layer, shapes))
        # The init stream is kept only where dropout draws from it; the cache
        # made for creation is dropped until init_cache makes the real one.
        self.adopt_core(
            layer,
            params,
            keep=lambda path: (
                path[-1] not in _CACHE_NAMES and (path[1] != "rng" or dropout_rate > 0)
            ),
        )

    def init_cache(self, batch_size: int | tuple[int, ...], max_length: int) -> None:
        """Creates (or resets) the key/value cache buffers for `decode=True`.

        Args:
            batch_size: The batch size (or batch shape) of the decoded inputs.
            max_length: Positions the cache holds.

        Raises:
            ValueError: If the layer was built without `decode=True`, or
                `max_length < 1`.

        Example:
            >>> import jax.numpy as jnp
            >>> from blox import eager as nn
            >>> attn = nn.MultiHeadAttention(8, 2, decode=True)
            >>> attn.init_cache(3, 10)
            >>> attn(jnp.ones((3, 1, 8))).shape, int(attn.cache_index)
            ((3, 1, 8), 1)
            >>> attn.cached_key.shape
            (3, 10, 2, 4)
        """
        batch_shape = (batch_size,) if isinstance(batch_size, int) else tuple(batch_size)
        params = self.core_layer.init_cache(self.core_params().unlocked(), batch_shape, max_length)
        for name in _CACHE_NAMES:  # a new shape replaces the old buffers
            if name in self.__dict__:
                delattr(self, name)
        self.adopt_core(self.core_layer, params, keep=lambda path: True)

    # The public call checks the cache's room in Python (one scalar read, only
    # when decoding and only outside traces), then runs the compiled `_attend`:
    # inside the compiled call the index is traced and could not raise.
    _blox_compiled_methods = ("_attend",)

    def __call__(
        self,
        query: Any,
        key: Any = None,
        value: Any = None,
        *,
        mask: Any = None,
        bias: Any = None,
        return_weights: bool = False,
    ) -> Any:
        """Attends from `query` to `key` (default `query`) and `value` (default `key`).

        `mask` is `True`/nonzero where attending is allowed; `bias` is added
        to the logits. With `return_weights` returns `(outputs, weights)`,
        the weights `(*batch, num_heads, q_len, kv_len)` after dropout.

        Raises:
            ValueError: When decoding past `max_length` (outside transforms;
                inside `nn.filter_jit` such a call returns NaN), or without a
                cache.
        """
        if self.decode:
            self._check_room(query)
        return self._attend(query, key, value, mask=mask, bias=bias, return_weights=return_weights)

    __call__._blox_compiled = True  # type: ignore[attr-defined]

    def _check_room(self, query: Any) -> None:
        index = self.__dict__.get("cache_index")
        if index is None or isinstance(index, jax.core.Tracer):
            return
        max_length = self.__dict__["cached_key"].shape[-3]
        length = jnp.shape(query)[-2] if jnp.ndim(query) >= 2 else 1
        if int(index) + length > max_length:
            raise ValueError(
                f"nn.MultiHeadAttention({self.embed_dim}, {self.num_heads}): expected at "
                f"most {max_length} cached positions, got {int(index)} + {length}. Fix: "
                "call init_cache with a larger max_length (or again, to start over)."
            )

    @typecheck
    def _attend(
        self,
        query: Float[Array, "*batch q_len {self.embed_dim}"],
        key: Float[Array, "*batch kv_len {self.kdim}"] | None = None,
        value: Float[Array, "*batch kv_len {self.vdim}"] | None = None,
        *,
        mask: Shaped[Array, "..."] | None = None,
        bias: Float[Array, "..."] | None = None,
        return_weights: bool = False,
    ) -> Any:
        return self.call_core(
            self.core_layer,
            query,
            key,
            value,
            mask=mask,
            bias=bias,
            is_training=self.training,
            return_weights=return_weights,
        )

    def extra_repr(self) -> str:
        shown = "".join(
            f", {k}={v!r}"
            for k, v in self.options
            if not k.endswith("_init") and k not in ("qkv_features", "out_features")
        )
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}{shown}"
