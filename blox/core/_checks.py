"""Argument checks shared by every layer constructor, in the house error form.

Each check takes `where` (the layer as the user wrote it: ``nn.Conv(3, 8,
kernel_size=(3,))`` for an eager layer, the graph path for a core one), the
argument's name and its value, and raises ``Where: expected X, got Y. Fix:
Z.``: `TypeError` for a wrong type (a float or a bool where an int belongs),
`ValueError` for a wrong value. `check_options` applies the checks by option
name, so a layer family gets them by naming its options the usual way.
"""

import numbers
from collections.abc import Sequence
from typing import Any


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_size(value: Any) -> bool:
    """True for an int or a non-empty sequence of ints (bools included, to be refused)."""
    if isinstance(value, numbers.Integral):
        return True
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) > 0
        and all(isinstance(v, numbers.Integral) for v in value)
    )


def positive_int(where: str, name: str, value: Any) -> None:
    """Raises unless `value` is an int >= 1 (a bool is not an int here).

    Example:
        >>> positive_int('nn.Linear(0, 2)', 'in_features', 0)
        Traceback (most recent call last):
        ValueError: nn.Linear(0, 2): expected in_features to be a positive int, got 0. Fix: pass a size of at least 1.
    """
    if not _is_int(value):
        raise TypeError(
            f"{where}: expected {name} to be a positive int, got "
            f"{type(value).__name__} {value!r}. Fix: pass an int such as {name}=4."
        )
    if value < 1:
        raise ValueError(
            f"{where}: expected {name} to be a positive int, got {value!r}. "
            "Fix: pass a size of at least 1."
        )


def positive_ints(where: str, name: str, value: Any) -> None:
    """`positive_int` for an int or each entry of a sequence of ints.

    Example:
        >>> positive_ints('nn.Conv(1, 1, kernel_size=(3,))', 'strides', (1, 2))
    """
    items = value if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    for item in items:
        positive_int(where, name, item)


def unit_rate(where: str, name: str, value: Any) -> None:
    """Raises unless `value` is a real number in ``[0, 1)``.

    Example:
        >>> unit_rate('nn.Dropout(1.0)', 'rate', 1.0)
        Traceback (most recent call last):
        ValueError: nn.Dropout(1.0): expected rate in [0, 1), got 1.0. Fix: pass a probability below 1, e.g. 0.1.
    """
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(
            f"{where}: expected {name} to be a float in [0, 1), got "
            f"{type(value).__name__}. Fix: pass e.g. {name}=0.1."
        )
    if not 0.0 <= value < 1.0:
        raise ValueError(
            f"{where}: expected {name} in [0, 1), got {value!r}. Fix: pass a "
            "probability below 1, e.g. 0.1."
        )


def positive_float(where: str, name: str, value: Any) -> None:
    """Raises unless `value` is a real number > 0 (epsilon and the like).

    Example:
        >>> positive_float('nn.LayerNorm(4)', 'epsilon', 0.0)
        Traceback (most recent call last):
        ValueError: nn.LayerNorm(4): expected epsilon > 0, got 0.0. Fix: pass a small positive number, e.g. epsilon=1e-5.
    """
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(
            f"{where}: expected {name} to be a positive float, got "
            f"{type(value).__name__}. Fix: pass e.g. {name}=1e-5."
        )
    if not value > 0:
        raise ValueError(
            f"{where}: expected {name} > 0, got {value!r}. Fix: pass a small "
            f"positive number, e.g. {name}=1e-5."
        )


def divides(where: str, name: str, groups: int, what: str, size: int) -> None:
    """Raises unless `groups` divides `size` (the `what` of the layer).

    Example:
        >>> divides('nn.Conv(4, 6, kernel_size=(3,))', 'feature_group_count', 4, 'out_channels', 6)
        Traceback (most recent call last):
        ValueError: nn.Conv(4, 6, kernel_size=(3,)): expected feature_group_count to divide out_channels 6, got 4. Fix: pick a feature_group_count that divides both channel counts.
    """
    if size % groups:
        raise ValueError(
            f"{where}: expected {name} to divide {what} {size}, got {groups}. Fix: "
            f"pick a {name} that divides both channel counts."
        )


def nonempty_batch(where: str, shape: Sequence[int]) -> None:
    """Raises if the axes statistics are taken over hold no element.

    Example:
        >>> nonempty_batch('net/bn', (0, 5))
        Traceback (most recent call last):
        ValueError: net/bn: expected a non-empty batch to take statistics over, got batch and spatial shape (0, 5). Fix: skip empty batches in training, or call it in eval mode.
    """
    if 0 in tuple(shape):
        raise ValueError(
            f"{where}: expected a non-empty batch to take statistics over, got batch "
            f"and spatial shape {tuple(shape)}. Fix: skip empty batches in training, "
            "or call it in eval mode."
        )


# Option name -> check, applied by `check_options` to whichever a layer takes.
BY_OPTION: dict[str, Any] = {
    "strides": positive_ints,
    "kernel_dilation": positive_ints,
    "input_dilation": positive_ints,
    "window_strides": positive_ints,
    "feature_group_count": positive_int,
    "num_heads": positive_int,
    "epsilon": positive_float,
    "rate": unit_rate,
    "dropout_rate": unit_rate,
}


def check_options(where: str, options: dict[str, Any]) -> None:
    """Runs the check for every option in `options` that has one (see `BY_OPTION`).

    Example:
        >>> check_options('nn.Conv(1, 1, kernel_size=(3,))', {'strides': 0})
        Traceback (most recent call last):
        ValueError: nn.Conv(1, 1, kernel_size=(3,)): expected strides to be a positive int, got 0. Fix: pass a size of at least 1.
    """
    for name, value in options.items():
        check = BY_OPTION.get(name)
        if check is not None and value is not None:
            check(where, name, value)
    # Padding is checked by the layer itself (every form flax and PyTorch need,
    # negative pads included), so no second list of padding words lives here.


def spatial_rank_fix(ndim: int, n: int, channels_first: bool = False) -> str:
    """The fix for inputs of rank `ndim` too short for `n` spatial dims and channels.

    One axis short, either the channel axis (a one-channel image) or the
    spatial dims may be missing; more, the spatial dims are.

    Example:
        >>> spatial_rank_fix(2, 2)
        'if the channel axis is missing (one channel), add it, e.g. x[..., None]; if the spatial dims are, reshape to (*batch, 2 spatial dims, channels)'
        >>> spatial_rank_fix(1, 2)
        'the inputs lack spatial dims: reshape them to (*batch, 2 spatial dims, channels), or use a Linear layer for features without spatial dims'
    """
    layout = f"channels, {n} spatial dims" if channels_first else f"{n} spatial dims, channels"
    if ndim == n:
        add = "x[..., None, :, :]" if channels_first else "x[..., None]"
        return (
            f"if the channel axis is missing (one channel), add it, e.g. {add}; "
            f"if the spatial dims are, reshape to (*batch, {layout})"
        )
    return (
        f"the inputs lack spatial dims: reshape them to (*batch, {layout}), "
        "or use a Linear layer for features without spatial dims"
    )
