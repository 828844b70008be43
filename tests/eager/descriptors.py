"""The eager twin of every core descriptor that has one (`tests/core/descriptors.py`).

`EAGER[name]` builds the eager layer configured exactly like the core
descriptor `name` and says which mode to call it in, so the generic eager
suite runs over the same table, with the same inputs, as the core suites.
`EXEMPT_*` list the public layers that have no row, each with the reason;
`test_coverage.py` fails when a public layer is in neither.
"""

from collections.abc import Callable
from typing import Any

from blox import eager as nn

# core descriptor name -> (build the eager layer, training mode)
EAGER: dict[str, tuple[Callable[[], Any], bool]] = {
    "linear": (lambda: nn.Linear(3, 4, seed=0), True),
    "linear_no_bias_3d": (lambda: nn.Linear(4, 5, use_bias=False, seed=0), True),
    "embed": (lambda: nn.Embed(7, 3, seed=0), True),
    "conv1d": (lambda: nn.Conv(3, 4, 3, seed=0), True),
    "conv2d_groups": (lambda: nn.Conv(4, 6, (3, 3), feature_group_count=2, seed=0), True),
    "conv_transpose2d": (lambda: nn.ConvTranspose(3, 4, (3, 3), strides=2, seed=0), True),
    "dropout": (lambda: nn.Dropout(0.3, seed=0), True),
    "layer_norm": (lambda: nn.LayerNorm(5, seed=0), True),
    "rms_norm": (lambda: nn.RMSNorm(5, seed=0), True),
    "batch_norm_train": (lambda: nn.BatchNorm(3, seed=0), True),
    "batch_norm_eval": (lambda: nn.BatchNorm(3, seed=0), False),
    "lstm_apply": (lambda: nn.LSTM(3, 5, seed=0), True),
    "gru_apply": (lambda: nn.GRU(3, 5, seed=0), True),
}

EXEMPT_CORE: dict[str, str] = {
    "Module": "the base class every core layer subclasses",
    "Rng": "holds RNG state, not a layer; tests/core/test_rng.py covers it",
    "RecurrenceBase": "the base class of LSTM and GRU (both described)",
    "SequenceBase": "the base class of Sequential (described)",
    "RNNCellBase": "the base class of the flax-style cells (each described)",
    "VanillaRNN": "PAX's name for SimpleCell (described); tests/core/test_recurrent.py",
    # Combinators take other layers or trees whose shape the generic suites cannot
    # make up; each has its own reference test.
    "BatchApply": "wraps another layer; tests/core/test_combinators.py (against flax)",
    "EMA": "averages a tree, not an input batch; tests/core/test_combinators.py (PAX formula)",
    "Lambda": "wraps a user function; tests/core/test_combinators.py (mlax F/FRng, PAX Lambda)",
    "Parallel": "takes a tuple of inputs; tests/core/test_combinators.py (mlax formula)",
    "Bias": "tests/core/test_combinators.py::test_bias_and_scaler_follow_the_mlax_formulas",
    "Scaler": "tests/core/test_combinators.py::test_bias_and_scaler_follow_the_mlax_formulas",
    "Identity": "returns its input object; tests/core/test_combinators.py",
}

EXEMPT_EAGER: dict[str, str] = {
    "Module": "the base class of user models",
    "CoreModule": "the base class every eager layer subclasses",
    "Sequential": "a container of other layers; tests/eager/test_layers.py covers it",
    # Eager layers added this wave whose eager == core (bit for bit, both compiled)
    # test lives beside their reference tests; they get rows here next.
    "BatchApply": "tests/eager/test_combinators.py",
    "EMA": "tests/eager/test_combinators.py",
    "Lambda": "tests/eager/test_combinators.py",
    "Parallel": "tests/eager/test_combinators.py",
    "Bias": "tests/eager/test_layers.py (Case rows)",
    "Scaler": "tests/eager/test_layers.py (Case rows)",
    "Identity": "returns its input unchanged; its doctest in blox/eager/_linear.py",
    "DenseGeneral": "tests/eager/test_layers.py (Case rows)",
    "Einsum": "tests/eager/test_layers.py (Case rows)",
    "GroupNorm": "tests/eager/test_layers.py (Case rows)",
    "InstanceNorm": "tests/eager/test_layers.py (Case rows)",
    "ConvLocal": "tests/eager/test_conv_pool_options.py",
    "GRUCell": "tests/eager/test_recurrent_layers.py",
    "LSTMCell": "tests/eager/test_recurrent_layers.py",
    "MGUCell": "tests/eager/test_recurrent_layers.py",
    "OptimizedLSTMCell": "tests/eager/test_recurrent_layers.py",
    "SimpleCell": "tests/eager/test_recurrent_layers.py",
    "RNN": "tests/eager/test_recurrent_layers.py",
    "MultiHeadAttention": "tests/eager/test_attention.py",
    "SpectralNorm": "tests/eager/test_reparam.py",
    "WeightNorm": "tests/eager/test_reparam.py",
    "Rng": "a random stream, not a layer; tests/eager/test_torch_nn.py (fresh draws)",
}
