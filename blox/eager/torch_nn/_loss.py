"""Loss functions with PyTorch's arguments and reductions, and their modules.

The per-element losses are optax's (`softmax_cross_entropy*`,
`sigmoid_binary_cross_entropy`, `huber_loss`, `squared_error`) and `jax.nn`'s;
what is PyTorch's is in the arguments: the class axis is 1 (`(N, C, *)`),
`ignore_index` entries count for nothing, `weight` rescales classes and a
weighted `'mean'` divides by the total weight of the counted targets, as
PyTorch does.
"""

from typing import Any

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array

from ._module import Module

_REDUCTIONS = ("mean", "sum", "none")


def _check(
    where: str,
    reduction: str,
    size_average: Any = None,
    reduce: Any = None,
    allowed: tuple[str, ...] = _REDUCTIONS,
) -> None:
    if size_average is not None or reduce is not None:
        raise ValueError(
            f"{where}: expected size_average=None and reduce=None (deprecated in PyTorch), "
            f"got {size_average!r}, {reduce!r}. Fix: use reduction='mean'|'sum'|'none'."
        )
    if reduction not in allowed:
        raise ValueError(
            f"{where}: expected reduction in {list(allowed)}, got {reduction!r}. Fix: use "
            "one of those."
        )


def _reduce(loss: Array, reduction: str) -> Array:
    if reduction == "mean":
        return jnp.mean(loss)
    if reduction == "sum":
        return jnp.sum(loss)
    return loss


def _classes_last(input: Array) -> Array:
    return input if input.ndim == 1 else jnp.moveaxis(input, 1, -1)


def cross_entropy(
    input: Array,
    target: Array,
    weight: Array | None = None,
    size_average: Any = None,
    ignore_index: int = -100,
    reduce: Any = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Array:
    """`F.cross_entropy`: logits `(N, C, *)` (or `(C,)`) against class ids or probabilities.

    Args:
        input: Logits, classes on axis 1.
        target: Integer ids `(N, *)` or probabilities shaped like `input`.
        weight: Per-class weights `(C,)`.
        size_average: Only `None` (deprecated in PyTorch).
        ignore_index: Ids that count for nothing (integer targets).
        reduce: Only `None`.
        reduction: ``'mean'``, ``'sum'`` or ``'none'``.
        label_smoothing: Mix of the uniform distribution into the target.

    Raises:
        ValueError: On an unknown reduction or a deprecated argument.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> round(float(F.cross_entropy(jnp.zeros((2, 4)), jnp.array([1, 3]))), 4)
        1.3863
    """
    _check("cross_entropy", reduction, size_average, reduce)
    logits = _classes_last(input)
    classes = logits.shape[-1]
    log_p = jax.nn.log_softmax(logits, axis=-1)
    eps = label_smoothing
    if weight is not None:
        weight = jnp.asarray(weight)
        class_weight = weight.reshape((1,) * (log_p.ndim - 1) + (classes,))
    if jnp.issubdtype(jnp.asarray(target).dtype, jnp.floating):
        probs = _classes_last(target)
        if eps:
            probs = probs * (1 - eps) + eps / classes
        if weight is None:
            loss = optax.softmax_cross_entropy(logits, probs)
        else:
            loss = -jnp.sum(log_p * probs * class_weight, axis=-1)
        return _reduce(loss, reduction)
    valid = target != ignore_index
    ids = jnp.where(valid, target, 0)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, ids)
    w = jnp.where(valid, 1.0 if weight is None else jnp.asarray(weight)[ids], 0.0)
    loss = w * nll
    if eps:
        smooth = -jnp.sum(log_p if weight is None else log_p * class_weight, axis=-1)
        loss = (1 - eps) * loss + (eps / classes) * jnp.where(valid, smooth, 0.0)
    if reduction == "mean":
        return jnp.sum(loss) / jnp.sum(w)
    return _reduce(loss, reduction)


def nll_loss(
    input: Array,
    target: Array,
    weight: Array | None = None,
    size_average: Any = None,
    ignore_index: int = -100,
    reduce: Any = None,
    reduction: str = "mean",
) -> Array:
    """`F.nll_loss`: `-input[target]` for log-probabilities `(N, C, *)`.

    Raises:
        ValueError: On an unknown reduction or a deprecated argument.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> float(F.nll_loss(jnp.array([[-1.0, -2.0]]), jnp.array([1])))
        2.0
    """
    _check("nll_loss", reduction, size_average, reduce)
    log_p = _classes_last(input)
    valid = target != ignore_index
    ids = jnp.where(valid, target, 0)
    picked = -jnp.take_along_axis(log_p, ids[..., None], axis=-1)[..., 0]
    w = jnp.where(valid, 1.0 if weight is None else jnp.asarray(weight)[ids], 0.0)
    loss = w * picked
    if reduction == "mean":
        return jnp.sum(loss) / jnp.sum(w)
    return _reduce(loss, reduction)


def mse_loss(
    input: Array,
    target: Array,
    size_average: Any = None,
    reduce: Any = None,
    reduction: str = "mean",
) -> Array:
    """`F.mse_loss`: `(input - target) ** 2`, reduced.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> float(F.mse_loss(jnp.array([1.0, 3.0]), jnp.zeros(2)))
        5.0
    """
    _check("mse_loss", reduction, size_average, reduce)
    return _reduce(optax.squared_error(input, target), reduction)


def l1_loss(
    input: Array,
    target: Array,
    size_average: Any = None,
    reduce: Any = None,
    reduction: str = "mean",
) -> Array:
    """`F.l1_loss`: `|input - target|`, reduced.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> float(F.l1_loss(jnp.array([1.0, -3.0]), jnp.zeros(2)))
        2.0
    """
    _check("l1_loss", reduction, size_average, reduce)
    return _reduce(jnp.abs(input - target), reduction)


def smooth_l1_loss(
    input: Array,
    target: Array,
    size_average: Any = None,
    reduce: Any = None,
    reduction: str = "mean",
    beta: float = 1.0,
) -> Array:
    """`F.smooth_l1_loss`: quadratic below `beta`, linear above (`huber_loss / beta`).

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> F.smooth_l1_loss(jnp.array([0.5, 3.0]), jnp.zeros(2), reduction='none').tolist()
        [0.125, 2.5]
    """
    _check("smooth_l1_loss", reduction, size_average, reduce)
    if beta == 0.0:
        return _reduce(jnp.abs(input - target), reduction)
    return _reduce(optax.huber_loss(input, target, delta=beta) / beta, reduction)


def huber_loss(input: Array, target: Array, reduction: str = "mean", delta: float = 1.0) -> Array:
    """`F.huber_loss`: optax's Huber loss with `delta`, reduced.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> F.huber_loss(jnp.array([0.5, 3.0]), jnp.zeros(2), reduction='none').tolist()
        [0.125, 2.5]
    """
    _check("huber_loss", reduction)
    return _reduce(optax.huber_loss(input, target, delta=delta), reduction)


def binary_cross_entropy(
    input: Array,
    target: Array,
    weight: Array | None = None,
    size_average: Any = None,
    reduce: Any = None,
    reduction: str = "mean",
) -> Array:
    """`F.binary_cross_entropy` on probabilities; logs clamped at -100 as in PyTorch.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> round(float(F.binary_cross_entropy(jnp.array([0.5]), jnp.array([1.0]))), 4)
        0.6931
    """
    _check("binary_cross_entropy", reduction, size_average, reduce)
    log_p = jnp.maximum(jnp.log(input), -100.0)
    log_q = jnp.maximum(jnp.log1p(-input), -100.0)
    loss = -(target * log_p + (1 - target) * log_q)
    if weight is not None:
        loss = loss * jnp.broadcast_to(weight, loss.shape)
    return _reduce(loss, reduction)


def binary_cross_entropy_with_logits(
    input: Array,
    target: Array,
    weight: Array | None = None,
    size_average: Any = None,
    reduce: Any = None,
    reduction: str = "mean",
    pos_weight: Array | None = None,
) -> Array:
    """`F.binary_cross_entropy_with_logits`: optax's sigmoid cross-entropy; `pos_weight` scales positives.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> round(float(F.binary_cross_entropy_with_logits(jnp.zeros(2), jnp.ones(2))), 4)
        0.6931
    """
    _check("binary_cross_entropy_with_logits", reduction, size_average, reduce)
    if pos_weight is None:
        loss = optax.sigmoid_binary_cross_entropy(input, target)
    else:
        loss = -(
            jnp.broadcast_to(pos_weight, target.shape) * target * jax.nn.log_sigmoid(input)
            + (1 - target) * jax.nn.log_sigmoid(-input)
        )
    if weight is not None:
        loss = loss * jnp.broadcast_to(weight, loss.shape)
    return _reduce(loss, reduction)


def kl_div(
    input: Array,
    target: Array,
    size_average: Any = None,
    reduce: Any = None,
    reduction: str = "mean",
    log_target: bool = False,
) -> Array:
    """`F.kl_div`: `target * (log(target) - input)` for log-probabilities `input`.

    `reduction='batchmean'` divides the sum by the batch size (the KL
    divergence); `'mean'` averages over every element, as PyTorch does.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager.torch_nn import functional as F
        >>> float(F.kl_div(jnp.log(jnp.array([[0.5, 0.5]])), jnp.array([[0.5, 0.5]]), reduction='batchmean'))
        0.0
    """
    _check("kl_div", reduction, size_average, reduce, (*_REDUCTIONS, "batchmean"))
    if log_target:
        loss = jnp.exp(target) * (target - input)
    else:
        loss = jax.scipy.special.xlogy(target, target) - target * input
    if reduction == "batchmean":
        return jnp.sum(loss) / (input.shape[0] if input.ndim else 1)
    return _reduce(loss, reduction)


class _Loss(Module):
    _fn: Any = None
    _args: tuple[str, ...] = ()
    _buffers: tuple[str, ...] = ()

    def forward(self, input: Array, target: Array) -> Array:
        """Computes the loss of `input` against `target`."""
        kwargs = {k: getattr(self, k) for k in self._args}
        kwargs.update({k: self.__dict__.get(k) for k in self._buffers})
        return type(self)._fn(input, target, **kwargs)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={getattr(self, k)!r}" for k in self._args)


def _loss_module(
    name: str, fn: Any, buffers: tuple[str, ...], example: str, out: str, **defaults: Any
) -> type:
    args = tuple(defaults)

    def __init__(
        self: Any, *values: Any, size_average: Any = None, reduce: Any = None, **given: Any
    ) -> None:
        _Loss.__init__(self)
        order = buffers + args
        if len(values) > len(order) or set(given) - set(order):
            raise TypeError(
                f"nn.{name}: expected arguments among {list(order)}, got {len(values)} "
                f"positional and {sorted(given)}. Fix: use PyTorch's argument names."
            )
        config = {**defaults, **dict(zip(order, values)), **given}
        _check(
            f"nn.{name}",
            config["reduction"],
            size_average,
            reduce,
            (*_REDUCTIONS, "batchmean") if name == "KLDivLoss" else _REDUCTIONS,
        )
        for key in args:
            setattr(self, key, config[key])
        for key in buffers:
            if config.get(key) is not None:
                self.register_buffer(key, jnp.asarray(config[key], jnp.float32))

    doc = f"""`torch.nn.{name}`: `functional.{fn.__name__}` with this module's options.

    Options (PyTorch's): {", ".join(buffers + args)}. Tensor options
    ({", ".join(buffers) or "none"}) are buffers, in the `state_dict` as in PyTorch.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager import torch_nn as nn
        >>> round(float(nn.{name}()({example})), 4)
        {out}
    """
    cls = type(
        name,
        (_Loss,),
        {
            "__init__": __init__,
            "_fn": staticmethod(fn),
            "_args": args,
            "_buffers": buffers,
            "__doc__": doc,
        },
    )
    cls.__module__, cls.__qualname__ = __name__, name
    return cls


_PROBS = "jnp.array([0.5, 0.5]), jnp.array([1.0, 0.0])"
CrossEntropyLoss = _loss_module(
    "CrossEntropyLoss",
    cross_entropy,
    ("weight",),
    "jnp.zeros((2, 4)), jnp.array([1, 3])",
    "1.3863",
    ignore_index=-100,
    reduction="mean",
    label_smoothing=0.0,
)
NLLLoss = _loss_module(
    "NLLLoss",
    nll_loss,
    ("weight",),
    "jnp.array([[-1.0, -2.0]]), jnp.array([1])",
    "2.0",
    ignore_index=-100,
    reduction="mean",
)
MSELoss = _loss_module(
    "MSELoss", mse_loss, (), "jnp.ones(2), jnp.zeros(2)", "1.0", reduction="mean"
)
L1Loss = _loss_module("L1Loss", l1_loss, (), "jnp.ones(2), jnp.zeros(2)", "1.0", reduction="mean")
BCELoss = _loss_module(
    "BCELoss", binary_cross_entropy, ("weight",), _PROBS, "0.6931", reduction="mean"
)
BCEWithLogitsLoss = _loss_module(
    "BCEWithLogitsLoss",
    binary_cross_entropy_with_logits,
    ("weight", "pos_weight"),
    "jnp.zeros(2), jnp.ones(2)",
    "0.6931",
    reduction="mean",
)
SmoothL1Loss = _loss_module(
    "SmoothL1Loss",
    smooth_l1_loss,
    (),
    "jnp.ones(2), jnp.zeros(2)",
    "0.5",
    reduction="mean",
    beta=1.0,
)
HuberLoss = _loss_module(
    "HuberLoss", huber_loss, (), "jnp.ones(2), jnp.zeros(2)", "0.5", reduction="mean", delta=1.0
)
KLDivLoss = _loss_module(
    "KLDivLoss", kl_div, (), "jnp.zeros(2), jnp.zeros(2)", "0.0", reduction="mean", log_target=False
)
