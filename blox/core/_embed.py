"""`Embed`: a lookup table from integer ids to vectors, with tied `attend`."""

from typing import Any

import jax
import jax.numpy as jnp

from ._dtypes import promote_dtype
from ._graph import Graph
from ._module import Initializer, Module, _where
from ._params import Params

_DEFAULT_EMBEDDING_INIT = jax.nn.initializers.variance_scaling(1.0, "fan_in", "normal", out_axis=0)


class Embed(Module):
    """Maps integer ids to rows of `embedding` `(num_embeddings, embedding_size)`.

    `attend(params, h)` computes `h @ embedding.T`, the tied output layer of a
    language model.

    Args:
        graph: This module's node.
        num_embeddings: Vocabulary size.
        embedding_size: Vector size.
        rng: `Rng` for initialisation.
        embedding_init: Initialiser of the table.
        embedding_metadata: Metadata stored with the table.
        dtype: Dtype of the looked-up vectors and of `attend` (`None`: the
            table's; flax's rule).
        param_dtype: Dtype the table is created in.

    Shapes:
        ids `(*batch,)` integers -> `(*batch, embedding_size)`;
        `attend`: `(*batch, embedding_size)` -> `(*batch, num_embeddings)`.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> g = bx.Graph('lm')
        >>> rng = bx.Rng(g / 'rng')
        >>> emb = bx.Embed(g / 'emb', 10, 4, rng=rng)
        >>> params = rng.seed(bx.Params(), seed=0)
        >>> h, params = emb(params, jnp.array([[1, 2, 3]]))
        >>> logits, params = emb.attend(params, h)
        >>> h.shape, logits.shape
        ((1, 3, 4), (1, 3, 10))
    """

    def __init__(
        self,
        graph: Graph,
        num_embeddings: int,
        embedding_size: int,
        rng: Any = None,
        embedding_init: Initializer = _DEFAULT_EMBEDDING_INIT,
        embedding_metadata: dict[str, Any] | None = None,
        *,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
    ) -> None:
        super().__init__(graph)
        self.num_embeddings = num_embeddings
        self.embedding_size = embedding_size
        self.rng = rng
        self.embedding_init = embedding_init
        self.embedding_metadata = embedding_metadata
        self.dtype = dtype
        self.param_dtype = param_dtype

    def _table(self, params: Params) -> tuple[jax.Array, Params]:
        return self.get_param(
            params,
            "embedding",
            (self.num_embeddings, self.embedding_size),
            self.embedding_init,
            dtype=self.param_dtype,
            metadata=self.embedding_metadata,
            rng=self.rng,
        )

    def __call__(self, params: Params, indices: jax.Array) -> tuple[jax.Array, Params]:
        """Looks up `indices` (any integer array)."""
        dtype = getattr(indices, "dtype", None)
        if dtype is None or not jnp.issubdtype(dtype, jnp.integer):
            raise TypeError(
                f"{_where(self)}: expected integer indices, got "
                f"{dtype if dtype is not None else type(indices).__name__}. "
                "Fix: cast them, e.g. ids.astype(jnp.int32)."
            )
        table, params = self._table(params)
        (table,) = promote_dtype(table, dtype=self.dtype, inexact=False)
        return table[indices], params

    def attend(self, params: Params, inputs: jax.Array) -> tuple[jax.Array, Params]:
        """`inputs @ embedding.T`: `(*batch, embedding_size)` -> `(*batch, num)`.

        Example:
            >>> import jax.numpy as jnp
            >>> import blox as bx
            >>> emb = bx.Embed(bx.Graph('lm') / 'emb', 5, 2,
            ...                embedding_init=lambda k, s, d: jnp.ones(s, d))
            >>> logits, _ = emb.attend(bx.Params(), jnp.ones((3, 2)))
            >>> logits.shape
            (3, 5)
        """
        if jnp.ndim(inputs) == 0 or jnp.shape(inputs)[-1] != self.embedding_size:
            raise ValueError(
                f"{_where(self)}: expected inputs (*batch, {self.embedding_size}), got "
                f"shape {tuple(jnp.shape(inputs))}. Fix: project to the embedding "
                "size first."
            )
        table, params = self._table(params)
        inputs, table = promote_dtype(inputs, table, dtype=self.dtype)
        return jnp.dot(inputs, table.T), params
