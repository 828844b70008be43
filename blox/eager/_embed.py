"""Eager `Embed`: builds `blox.core.Embed` and calls it."""

import functools
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from jaxtyping import Array, Float, Integer

from blox import core
from blox.core.internal import check_ids

from ._core_module import CoreModule
from ._errors import located
from ._seed import build_core, example_zeros, init_params
from ._typecheck import typecheck


class Embed(CoreModule):
    """A table `embedding` `(num_embeddings, embedding_size)` looked up by id.

    Args:
        num_embeddings: Vocabulary size.
        embedding_size: Vector size.
        seed: Int or key for this layer's init; default: the global stream.
        **options: Other `blox.core.Embed` options (`embedding_init`,
            `embedding_metadata`).

    Shapes:
        ids `(*batch,)` -> `(*batch, embedding_size)`; `attend`:
        `(*batch, embedding_size)` -> `(*batch, num_embeddings)`.

    Ids out of range: the ids are checked when they are concrete, that is
    when this layer is called directly (`emb(ids)` outside any transform) or
    runs op by op (under `jax.disable_jit()` or while a forward hook is
    registered): an id outside `[0, num_embeddings)` raises `ValueError`,
    before the compiled call. Traced ids are not checked (reading them would
    stall a compiled step): inside `nn.filter_jit` or `jax.jit`, and inside a
    model's own eager call (`model(ids)` compiles the whole model, so its
    embedding sees traced ids), an id in `[-num_embeddings, 0)` counts from
    the end and any other id out of range gives a row of NaN and no gradient
    (`blox.core.Embed`'s rule, flax.linen's).

    Raises:
        ValueError: If concrete ids are out of `[0, num_embeddings)`.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox import eager as nn
        >>> emb = nn.Embed(10, 4)
        >>> h = emb(jnp.array([[1, 2, 3]]))
        >>> h.shape, emb.attend(h).shape
        ((1, 3, 4), (1, 3, 10))
        >>> emb(jnp.array([3, 12]))
        Traceback (most recent call last):
        ValueError: nn.Embed(10, 4): expected ids in [0, 10), got ids from 3 to 12 (first bad id 12 at index (1,)). Fix: ...
    """

    _blox_compiled_methods = ("attend",)  # eager calls compile like __call__

    def __init__(
        self, num_embeddings: int, embedding_size: int, *, seed: Any = None, **options: Any
    ) -> None:
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_size = embedding_size
        self.options = tuple(sorted(options.items(), key=lambda kv: kv[0]))
        where = f"nn.Embed({num_embeddings}, {embedding_size})"
        layer, rng = build_core(where, core.Embed, (num_embeddings, embedding_size), options)
        params = init_params(
            where,
            rng,
            seed,
            lambda p: layer(p, example_zeros((1,), jnp.int32))[1],
            signature=(layer,),
        )
        self.adopt_core(layer, params, keep=lambda path: path[1] != "rng")

    @typecheck
    def __call__(
        self, ids: Integer[Array, "*batch"]
    ) -> Float[Array, "*batch {self.embedding_size}"]:
        """Looks up `ids` (concrete ids are checked first: see the class)."""
        return self.call_core(self.core_layer, ids)

    @typecheck
    def attend(
        self, h: Float[Array, "*batch {self.embedding_size}"]
    ) -> Float[Array, "*batch {self.num_embeddings}"]:
        """`h @ embedding.T`, the tied output projection.

        Example:
            >>> import jax.numpy as jnp
            >>> from blox import eager as nn
            >>> nn.Embed(5, 2).attend(jnp.ones((3, 2))).shape
            (3, 5)
        """
        return self.call_core(self.core_layer.attend, h)

    def extra_repr(self) -> str:
        shown = "".join(f", {k}={v!r}" for k, v in self.options if not k.endswith("_init"))
        return f"{self.num_embeddings}, {self.embedding_size}{shown}"


def _checked(call: Callable[..., Any]) -> Callable[..., Any]:
    """`call` (the compiled eager call) with concrete ids checked before dispatch.

    The compiled program sees traced ids, which cannot be checked without a
    device sync; the concrete ids are checked here, on the caller's side.
    Inside a transform the ids are traced and the check passes them.
    """

    @functools.wraps(call)
    def checked(self: Embed, ids: Any) -> Any:
        where = f"nn.Embed({self.num_embeddings}, {self.embedding_size})"
        try:
            check_ids(where, ids, self.num_embeddings)
        except ValueError as error:  # called by a model (op by op): name its path too
            raise ValueError(str(error).replace(where, located(self, where), 1)) from None
        return call(self, ids)

    checked._blox_compiled = True  # type: ignore[attr-defined]
    checked._blox_dispatcher = call._blox_dispatcher  # type: ignore[attr-defined]
    return checked


Embed.__call__ = _checked(Embed.__call__)  # type: ignore[method-assign]
