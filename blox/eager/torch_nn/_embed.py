"""`Embedding` with PyTorch's `weight`, `N(0, 1)` init and `padding_idx`."""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Integer

from blox import core
from blox.core.internal import check_ids

from .._errors import located
from .._seed import example_zeros
from .._typecheck import typecheck
from ._layout import Name, Normal
from ._shell import Shell, check_device


@dataclasses.dataclass(frozen=True)
class _PaddedTable:
    """The table with row `padding_idx` cut off from the gradient, as PyTorch does."""

    padding_idx: int

    def to_core(self, value: jax.Array) -> jax.Array:
        row = self.padding_idx
        return value.at[row].set(jax.lax.stop_gradient(value[row]))

    def from_core(self, value: jax.Array) -> jax.Array:
        return value


class Embedding(Shell):
    """A lookup table `weight` `(num_embeddings, embedding_dim)`, initialised `N(0, 1)`.

    With `padding_idx`, that row starts at zero and gets no gradient (so it
    stays as loaded). The numerics are `blox.core.Embed`'s.

    Args:
        num_embeddings: Vocabulary size.
        embedding_dim: Vector size.
        padding_idx: A row that starts at zero and is never trained.
        max_norm: Only `None`.
        norm_type: Accepted for PyTorch's signature.
        scale_grad_by_freq: Only `False`.
        sparse: Only `False`.
        device: Only `None`.
        dtype: Storage dtype of `weight`.
        seed: Int or key for this layer's init.

    Ids out of range (where PyTorch raises `IndexError`): concrete ids, in a
    direct call of this layer outside transforms or a call op by op, outside
    `[0, num_embeddings)` raise `ValueError`. Traced ids (inside
    `nn.filter_jit`, `jax.jit`, or a model's own compiled eager call) are not
    checked: an id in `[-num_embeddings, 0)` counts from the end and any
    other id out of range gives a NaN row (`blox.core.Embed`'s rule).

    Raises:
        ValueError: On an unsupported option, a `padding_idx` out of range, or
            concrete ids out of range.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager import torch_nn as nn
        >>> emb = nn.Embedding(10, 3, padding_idx=0)
        >>> emb(jnp.array([[0, 4]])).shape, emb.weight[0].tolist()
        ((1, 2, 3), [0.0, 0.0, 0.0])
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        sparse: bool = False,
        _weight: Any = None,
        _freeze: bool = False,
        device: Any = None,
        dtype: Any = None,
        *,
        seed: Any = None,
    ) -> None:
        super().__init__()
        where = f"nn.Embedding({num_embeddings}, {embedding_dim})"
        check_device(where, device)
        if max_norm is not None or scale_grad_by_freq or sparse or _weight is not None:
            raise ValueError(
                f"{where}: expected max_norm=None, scale_grad_by_freq=False, sparse=False "
                "and no _weight, got one of them set. Fix: drop it (not supported), and "
                "load weights with load_state_dict."
            )
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(
                    f"{where}: expected padding_idx in [-{num_embeddings}, {num_embeddings}), "
                    f"got {padding_idx}. Fix: pass a valid row."
                )
            padding_idx %= num_embeddings
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx = padding_idx
        layout = _PaddedTable(padding_idx) if padding_idx is not None else None
        name = Name("weight", "embedding", layout) if layout else Name("weight", "embedding")
        options = {"embedding_init": Normal()}
        example = example_zeros((1,), jnp.int32)
        self._adopt(
            where,
            core.Embed,
            (num_embeddings, embedding_dim),
            options,
            (name,),
            (example,),
            seed=seed,
            dtype=dtype,
        )
        if padding_idx is not None:
            self.weight = self.weight.at[padding_idx].set(0.0)
        if _freeze:
            self.freeze("weight")

    def __call__(self, input: Any) -> Any:
        # Concrete ids are checked here, before the compiled call traces them.
        where = f"nn.Embedding({self.num_embeddings}, {self.embedding_dim})"
        try:
            check_ids(where, input, self.num_embeddings)
        except ValueError as error:  # called by a model (op by op): name its path too
            raise ValueError(str(error).replace(where, located(self, where), 1)) from None
        return super().__call__(input)

    __call__._blox_compiled = True  # type: ignore[attr-defined]
    __call__._blox_dispatcher = Shell.__call__._blox_dispatcher  # type: ignore[attr-defined]

    @typecheck
    def forward(
        self, input: Integer[Array, "*batch"]
    ) -> Float[Array, "*batch {self.embedding_dim}"]:
        """Looks up the rows of `input`."""
        return self.call_core(self.core_layer, input)

    def extra_repr(self) -> str:
        extra = f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        return f"{self.num_embeddings}, {self.embedding_dim}{extra}"

    @classmethod
    def from_pretrained(
        cls, embeddings: Any, freeze: bool = True, padding_idx: int | None = None
    ) -> "Embedding":
        """An Embedding holding `embeddings` `(num, dim)`; frozen unless `freeze=False`.

        Example:
            >>> import jax.numpy as jnp
            >>> from blox.eager import torch_nn as nn
            >>> emb = nn.Embedding.from_pretrained(jnp.eye(3))
            >>> emb(jnp.array([1])).tolist(), len(list(emb.parameters(trainable_only=True)))
            ([[0.0, 1.0, 0.0]], 0)
        """
        table = jnp.asarray(embeddings)
        emb = cls(table.shape[0], table.shape[1], padding_idx=padding_idx, _freeze=freeze)
        emb.weight = table.astype(emb.weight.dtype)
        return emb
