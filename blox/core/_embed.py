"""`Embed`: a lookup table from integer ids to vectors, with tied `attend`."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._dtypes import promote_dtype
from ._graph import Graph
from ._initializers import VarianceScaling
from ._module import Initializer, Module, _where
from ._params import Params

_DEFAULT_EMBEDDING_INIT = VarianceScaling(1.0, "fan_in", "normal", out_axis=0)


def check_ids(where: str, ids: Any, num_embeddings: int) -> None:
    """Raises unless every id is in `[0, num_embeddings)`; traced ids pass unchecked.

    Only concrete ids are read (a NumPy array, or a JAX array outside any
    trace): reading them waits for them to be computed, which a compiled
    step must not do, so under `jax.jit` (and `nn.filter_jit`, and an eager
    call's own compiled program) the lookup's rule applies instead: see
    `Embed`.

    Args:
        where: The layer as the user wrote it, for the message.
        ids: The integer ids about to be looked up.
        num_embeddings: The table's row count.

    Raises:
        ValueError: If a concrete id is negative or at least `num_embeddings`.

    Example:
        >>> import jax.numpy as jnp
        >>> check_ids('nn.Embed(4, 2)', jnp.array([[0, 3], [4, 1]]), 4)
        Traceback (most recent call last):
        ValueError: nn.Embed(4, 2): expected ids in [0, 4), got ids from 0 to 4 (first bad id 4 at index (1, 0)). Fix: make the table larger (num_embeddings) or map unknown tokens to a reserved id.
    """
    dtype = getattr(ids, "dtype", None)
    if isinstance(ids, jax.core.Tracer) or dtype is None or np.size(ids) == 0:
        return
    if not jnp.issubdtype(dtype, jnp.integer):
        return  # the caller's type check names this one
    host = np.asarray(ids)
    low, high = host.min(), host.max()
    if low >= 0 and high < num_embeddings:
        return
    bad = np.argwhere((host < 0) | (host >= num_embeddings))[0]
    raise ValueError(
        f"{where}: expected ids in [0, {num_embeddings}), got ids from {low} to {high} "
        f"(first bad id {host[tuple(bad)]} at index {tuple(int(i) for i in bad)}). Fix: make "
        "the table larger (num_embeddings) or map unknown tokens to a reserved id."
    )


class Embed(Module):
    """Maps integer ids to rows of `embedding` `(num_embeddings, embedding_size)`.

    `attend(params, h)` computes `h @ embedding.T`, the tied output layer of a
    language model.

    Ids out of range: called with concrete ids (outside `jax.jit`), an id
    below 0 or at least `num_embeddings` raises `ValueError` (as PyTorch's
    `nn.Embedding` raises `IndexError`). Traced ids cannot be checked
    without a device sync, so inside `jax.jit` (and `nn.filter_jit`, and an
    eager call's compiled program) the lookup is `jnp.take(embedding, ids,
    axis=0, mode="fill")`, flax.linen.Embed's rule: an id in
    `[-num_embeddings, 0)` counts from the end, as in NumPy, and any id
    outside `[-num_embeddings, num_embeddings)` gives a row of NaN (the
    lowest value of a signed integer table) and no gradient, so the loss
    shows it rather than a clamped row training silently.

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

    Raises:
        TypeError: If the ids are not an integer array.
        ValueError: If concrete ids are out of range.

    Example:
        >>> import jax
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
        >>> emb(params, jnp.array([10]))
        Traceback (most recent call last):
        ValueError: Embed at 'lm/emb': expected ids in [0, 10), got ids from 10 to 10 (first bad id 10 at index (0,)). Fix: ...
        >>> h, _ = jax.jit(emb)(params.locked(), jnp.array([9, -1, 10]))  # traced: not checked
        >>> bool((h[0] == h[1]).all()), bool(jnp.isnan(h[2]).all())
        (True, True)
    """

    def __init__(
        self,
        graph: Graph,
        num_embeddings: int,
        embedding_size: int,
        rng: Any = None,
        embedding_init: Initializer = _DEFAULT_EMBEDDING_INIT,
        embedding_metadata: dict[str, Any] | None = None,
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
        """Looks up `indices` (any integer array; see the class on ids out of range)."""
        dtype = getattr(indices, "dtype", None)
        if dtype is None or not jnp.issubdtype(dtype, jnp.integer):
            raise TypeError(
                f"{_where(self)}: expected integer indices, got "
                f"{dtype if dtype is not None else type(indices).__name__}. "
                "Fix: cast them, e.g. ids.astype(jnp.int32)."
            )
        check_ids(_where(self), indices, self.num_embeddings)
        table, params = self._table(params)
        (table,) = promote_dtype(table, dtype=self.dtype, inexact=False)
        return jnp.take(table, indices, axis=0, mode="fill"), params

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
