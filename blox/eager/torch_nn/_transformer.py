"""PyTorch's Transformer blocks: encoder and decoder layers and their stacks.

These are compositions of `torch_nn` layers under PyTorch's attribute names
(`self_attn`, `linear1`, `dropout`, `linear2`, `norm1`, `dropout1`, ...), so
their `state_dict` keys are PyTorch's (`layers.0.self_attn.in_proj_weight`,
...) and a PyTorch checkpoint loads key for key. They hold no numerics of
their own beyond the residual additions; attention, projections,
normalisation and dropout are the `torch_nn` layers' (hence `blox.core`'s).
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from .._module import _Group
from ._activation import gelu, relu
from ._attention import MultiheadAttention
from ._dropout import Dropout
from ._linear import Linear
from ._module import Module, ModuleList
from ._norm import LayerNorm

__all__ = [
    "Transformer",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerEncoderLayer",
]


def _activation(where: str, activation: Any) -> Callable[[jax.Array], jax.Array]:
    if activation == "relu":
        return relu
    if activation == "gelu":
        return gelu
    if callable(activation) and not isinstance(activation, str):
        return activation
    raise ValueError(
        f"{where}: expected activation 'relu', 'gelu' or a callable, got {activation!r}. "
        "Fix: pass one of those, e.g. activation='gelu' or activation=F.silu."
    )


class _Block(Module):
    """What the encoder and decoder layers share: the feed-forward block."""

    def _setup_ff(
        self,
        d_model: int,
        dim_feedforward: int,
        dropout: float,
        activation: Any,
        bias: bool,
        dtype: Any,
        where: str,
    ) -> None:
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, dtype=dtype)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, dtype=dtype)
        self.activation = _activation(where, activation)

    def _ff_block(self, x: jax.Array, drop: Dropout) -> jax.Array:
        x = self.linear2(self.dropout(self.activation(self.linear1(x))))
        return drop(x)


class TransformerEncoderLayer(_Block):
    """PyTorch's `torch.nn.TransformerEncoderLayer`: self-attention and a feed-forward block.

    Post-norm (default): `x = norm1(x + dropout1(self_attn(x)))`,
    `x = norm2(x + dropout2(linear2(dropout(activation(linear1(x))))))`;
    with `norm_first`: `x = x + dropout1(self_attn(norm1(x)))`,
    `x = x + dropout2(ff(norm2(x)))`.

    Args:
        d_model: Features of the inputs and outputs.
        nhead: Attention heads.
        dim_feedforward: Width of the feed-forward block.
        dropout: Dropout probability everywhere (attention weights included).
        activation: `'relu'`, `'gelu'` or a callable.
        layer_norm_eps: LayerNorm epsilon.
        batch_first: Inputs and outputs are `(batch, seq, feature)`.
        norm_first: Pre-norm instead of post-norm.
        bias: Biases in the linear layers and LayerNorms.
        device: Only `None`.
        dtype: Parameter dtype.

    Raises:
        ValueError: On an unknown activation (and the sublayers' errors).

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager import torch_nn as nn
        >>> layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16).eval()
        >>> layer(jnp.ones((5, 3, 8))).shape, list(layer.state_dict())[:2]
        ((5, 3, 8), ['self_attn.in_proj_weight', 'self_attn.in_proj_bias'])
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: Any = "relu",
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        where = f"nn.TransformerEncoderLayer({d_model}, {nhead})"
        _activation(where, activation)
        self.self_attn = MultiheadAttention(
            d_model, nhead, dropout, bias=bias, batch_first=batch_first, device=device, dtype=dtype
        )
        self._setup_ff(d_model, dim_feedforward, dropout, activation, bias, dtype, where)
        self.norm_first = bool(norm_first)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)

    def forward(
        self,
        src: jax.Array,
        src_mask: Any = None,
        src_key_padding_mask: Any = None,
        is_causal: bool = False,
    ) -> jax.Array:
        """One layer over `src` `(S, N, E)` (`(N, S, E)` batch first).

        Args:
            src: The sequence.
            src_mask: `attn_mask` of the self-attention (see
                `MultiheadAttention`).
            src_key_padding_mask: `(N, S)`, `True` at padding.
            is_causal: Hint that `src_mask` is causal (it is then required).

        Returns:
            The same shape as `src`.
        """
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            x = x + self._ff_block(self.norm2(x), self.dropout2)
        else:
            x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
            x = self.norm2(x + self._ff_block(x, self.dropout2))
        return x

    def _sa_block(self, x: jax.Array, mask: Any, padding: Any, is_causal: bool) -> jax.Array:
        x = self.self_attn(
            x,
            x,
            x,
            attn_mask=mask,
            key_padding_mask=padding,
            need_weights=False,
            is_causal=is_causal,
        )[0]
        return self.dropout1(x)


class TransformerDecoderLayer(_Block):
    """PyTorch's `torch.nn.TransformerDecoderLayer`: self-attention, cross-attention, feed-forward.

    Post-norm (default): `x = norm1(x + dropout1(self_attn(x)))`,
    `x = norm2(x + dropout2(multihead_attn(x, memory)))`,
    `x = norm3(x + dropout3(ff(x)))`; with `norm_first` each block reads
    `norm_k(x)` and adds to `x`.

    Args:
        d_model: Features of the inputs and outputs.
        nhead: Attention heads.
        dim_feedforward: Width of the feed-forward block.
        dropout: Dropout probability everywhere.
        activation: `'relu'`, `'gelu'` or a callable.
        layer_norm_eps: LayerNorm epsilon.
        batch_first: Inputs and outputs are `(batch, seq, feature)`.
        norm_first: Pre-norm instead of post-norm.
        bias: Biases in the linear layers and LayerNorms.
        device: Only `None`.
        dtype: Parameter dtype.

    Raises:
        ValueError: On an unknown activation (and the sublayers' errors).

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager import torch_nn as nn
        >>> layer = nn.TransformerDecoderLayer(8, 2, dim_feedforward=16).eval()
        >>> layer(jnp.ones((4, 3, 8)), jnp.ones((6, 3, 8))).shape
        (4, 3, 8)
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: Any = "relu",
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        where = f"nn.TransformerDecoderLayer({d_model}, {nhead})"
        _activation(where, activation)
        common = {"bias": bias, "batch_first": batch_first, "device": device, "dtype": dtype}
        self.self_attn = MultiheadAttention(d_model, nhead, dropout, **common)
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout, **common)
        self._setup_ff(d_model, dim_feedforward, dropout, activation, bias, dtype, where)
        self.norm_first = bool(norm_first)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm3 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.dropout3 = Dropout(dropout)

    def forward(
        self,
        tgt: jax.Array,
        memory: jax.Array,
        tgt_mask: Any = None,
        memory_mask: Any = None,
        tgt_key_padding_mask: Any = None,
        memory_key_padding_mask: Any = None,
        tgt_is_causal: bool = False,
        memory_is_causal: bool = False,
    ) -> jax.Array:
        """One layer over `tgt` `(T, N, E)` attending to `memory` `(S, N, E)`.

        Args:
            tgt: The target sequence.
            memory: The encoder's output.
            tgt_mask: `attn_mask` of the self-attention.
            memory_mask: `attn_mask` of the cross-attention.
            tgt_key_padding_mask: `(N, T)`, `True` at padding.
            memory_key_padding_mask: `(N, S)`, `True` at padding.
            tgt_is_causal: Hint that `tgt_mask` is causal.
            memory_is_causal: Hint that `memory_mask` is causal.

        Returns:
            The same shape as `tgt`.
        """
        x = tgt
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), tgt_mask, tgt_key_padding_mask, tgt_is_causal)
            x = x + self._mha_block(
                self.norm2(x), memory, memory_mask, memory_key_padding_mask, memory_is_causal
            )
            x = x + self._ff_block(self.norm3(x), self.dropout3)
        else:
            x = self.norm1(x + self._sa_block(x, tgt_mask, tgt_key_padding_mask, tgt_is_causal))
            x = self.norm2(
                x
                + self._mha_block(x, memory, memory_mask, memory_key_padding_mask, memory_is_causal)
            )
            x = self.norm3(x + self._ff_block(x, self.dropout3))
        return x

    def _sa_block(self, x: jax.Array, mask: Any, padding: Any, is_causal: bool) -> jax.Array:
        x = self.self_attn(
            x,
            x,
            x,
            attn_mask=mask,
            key_padding_mask=padding,
            need_weights=False,
            is_causal=is_causal,
        )[0]
        return self.dropout1(x)

    def _mha_block(
        self, x: jax.Array, memory: jax.Array, mask: Any, padding: Any, is_causal: bool
    ) -> jax.Array:
        x = self.multihead_attn(
            x,
            memory,
            memory,
            attn_mask=mask,
            key_padding_mask=padding,
            need_weights=False,
            is_causal=is_causal,
        )[0]
        return self.dropout2(x)


def _clones(where: str, layer: Module, num_layers: int, kind: type) -> ModuleList:
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(
            f"{where}: expected num_layers to be a positive int, got {num_layers!r}. "
            "Fix: pass e.g. num_layers=2."
        )
    if not isinstance(layer, kind):
        raise TypeError(
            f"{where}: expected a {kind.__name__}, got {type(layer).__name__}. Fix: pass "
            f"e.g. nn.{kind.__name__}(d_model, nhead)."
        )
    # As PyTorch's deepcopy: independent layers with the given layer's weights
    # (arrays are immutable, so copies may share them until one is replaced).
    # Each copy's random streams are re-seeded by index, as PyTorch's copies
    # draw different dropout masks from the one global generator.
    leaves, treedef = jax.tree.flatten(layer)
    copies = []
    for index in range(num_layers):
        clone = jax.tree.unflatten(treedef, leaves)
        for _, module in clone.named_modules():
            stream = module.__dict__.get("rng")
            seed = stream.__dict__.get("seed") if isinstance(stream, _Group) else None
            if seed is not None:
                key = jax.random.fold_in(jax.random.wrap_key_data(seed), index)
                stream.seed = jax.random.key_data(key)
        copies.append(clone)
    return ModuleList(copies)


class TransformerEncoder(Module):
    """PyTorch's `torch.nn.TransformerEncoder`: `num_layers` copies of a layer, then `norm`.

    Args:
        encoder_layer: A `TransformerEncoderLayer`, deep-copied `num_layers`
            times (so every layer starts from its weights, as in PyTorch).
        num_layers: Layers.
        norm: An optional final module (e.g. `nn.LayerNorm(d_model)`).
        enable_nested_tensor: Accepted for PyTorch compatibility (no effect:
            padded positions are computed, not skipped).
        mask_check: Accepted for PyTorch compatibility.

    Raises:
        TypeError: If `encoder_layer` is not a `TransformerEncoderLayer`.
        ValueError: If `num_layers` is not a positive int.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager import torch_nn as nn
        >>> layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16)
        >>> encoder = nn.TransformerEncoder(layer, num_layers=2).eval()
        >>> encoder(jnp.ones((5, 3, 8))).shape, list(encoder.state_dict())[0]
        ((5, 3, 8), 'layers.0.self_attn.in_proj_weight')
    """

    def __init__(
        self,
        encoder_layer: TransformerEncoderLayer,
        num_layers: int,
        norm: Module | None = None,
        enable_nested_tensor: bool = True,
        mask_check: bool = True,
    ) -> None:
        super().__init__()
        where = "nn.TransformerEncoder"
        self.layers = _clones(where, encoder_layer, num_layers, TransformerEncoderLayer)
        self.num_layers = num_layers
        if norm is not None:
            self.norm = norm
        self.enable_nested_tensor = bool(enable_nested_tensor)
        self.mask_check = bool(mask_check)

    def forward(
        self,
        src: jax.Array,
        mask: Any = None,
        src_key_padding_mask: Any = None,
        is_causal: bool | None = None,
    ) -> jax.Array:
        """Runs every layer, then `norm`.

        Args:
            src: `(S, N, E)` (`(N, S, E)` batch first).
            mask: `attn_mask` of every self-attention.
            src_key_padding_mask: `(N, S)`, `True` at padding.
            is_causal: Hint that `mask` is causal.

        Returns:
            The same shape as `src`.
        """
        x = src
        for layer in self.layers:
            x = layer(
                x,
                src_mask=mask,
                src_key_padding_mask=src_key_padding_mask,
                is_causal=bool(is_causal),
            )
        norm = self.__dict__.get("norm")
        return x if norm is None else norm(x)


class TransformerDecoder(Module):
    """PyTorch's `torch.nn.TransformerDecoder`: `num_layers` copies of a layer, then `norm`.

    Args:
        decoder_layer: A `TransformerDecoderLayer`, deep-copied `num_layers`
            times.
        num_layers: Layers.
        norm: An optional final module.

    Raises:
        TypeError: If `decoder_layer` is not a `TransformerDecoderLayer`.
        ValueError: If `num_layers` is not a positive int.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager import torch_nn as nn
        >>> layer = nn.TransformerDecoderLayer(8, 2, dim_feedforward=16)
        >>> decoder = nn.TransformerDecoder(layer, 2, norm=nn.LayerNorm(8)).eval()
        >>> decoder(jnp.ones((4, 3, 8)), jnp.ones((6, 3, 8))).shape
        (4, 3, 8)
    """

    def __init__(
        self, decoder_layer: TransformerDecoderLayer, num_layers: int, norm: Module | None = None
    ) -> None:
        super().__init__()
        where = "nn.TransformerDecoder"
        self.layers = _clones(where, decoder_layer, num_layers, TransformerDecoderLayer)
        self.num_layers = num_layers
        if norm is not None:
            self.norm = norm

    def forward(
        self,
        tgt: jax.Array,
        memory: jax.Array,
        tgt_mask: Any = None,
        memory_mask: Any = None,
        tgt_key_padding_mask: Any = None,
        memory_key_padding_mask: Any = None,
        tgt_is_causal: bool | None = None,
        memory_is_causal: bool = False,
    ) -> jax.Array:
        """Runs every layer on `tgt` with `memory`, then `norm` (arguments as the layer's).

        Returns:
            The same shape as `tgt`.
        """
        x = tgt
        for layer in self.layers:
            x = layer(
                x,
                memory,
                tgt_mask=tgt_mask,
                memory_mask=memory_mask,
                tgt_key_padding_mask=tgt_key_padding_mask,
                memory_key_padding_mask=memory_key_padding_mask,
                tgt_is_causal=bool(tgt_is_causal),
                memory_is_causal=memory_is_causal,
            )
        norm = self.__dict__.get("norm")
        return x if norm is None else norm(x)


class Transformer:
    """Only PyTorch's `nn.Transformer.generate_square_subsequent_mask` (the full model is not built).

    Example:
        >>> from blox.eager import torch_nn as nn
        >>> nn.Transformer.generate_square_subsequent_mask(3).tolist()
        [[0.0, -inf, -inf], [0.0, 0.0, -inf], [0.0, 0.0, 0.0]]
    """

    @staticmethod
    def generate_square_subsequent_mask(sz: int, device: Any = None, dtype: Any = None) -> Any:
        """The float causal mask `(sz, sz)`: `-inf` above the diagonal, `0` elsewhere.

        Example:
            >>> from blox.eager import torch_nn as nn
            >>> nn.Transformer.generate_square_subsequent_mask(2).shape
            (2, 2)
        """
        dtype = jnp.float32 if dtype is None else dtype
        upper = jnp.triu(jnp.ones((sz, sz), bool), k=1)
        return jnp.where(upper, -jnp.inf, 0.0).astype(dtype)
