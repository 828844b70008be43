"""blox.eager: the PyTorch-style object API over `blox.core`."""

from ._checkpoint import Checkpoint as Checkpoint
from ._checkpoint import load as load
from ._checkpoint import save as save
from ._combinators import EMA as EMA
from ._combinators import BatchApply as BatchApply
from ._combinators import Lambda as Lambda
from ._combinators import Parallel as Parallel
from ._conv import Conv as Conv
from ._conv import ConvTranspose as ConvTranspose
from ._dropout import Dropout as Dropout
from ._embed import Embed as Embed
from ._linear import Bias as Bias
from ._linear import DenseGeneral as DenseGeneral
from ._linear import Einsum as Einsum
from ._linear import Identity as Identity
from ._linear import Linear as Linear
from ._linear import Scaler as Scaler
from ._module import CoreModule as CoreModule
from ._module import LoadResult as LoadResult
from ._module import Module as Module
from ._module import from_core as from_core
from ._module import trainable as trainable
from ._norm import BatchNorm as BatchNorm
from ._norm import GroupNorm as GroupNorm
from ._norm import InstanceNorm as InstanceNorm
from ._norm import LayerNorm as LayerNorm
from ._norm import RMSNorm as RMSNorm
from ._pool import avg_pool as avg_pool
from ._pool import max_pool as max_pool
from ._pool import min_pool as min_pool
from ._recurrent import GRU as GRU
from ._recurrent import LSTM as LSTM
from ._recurrent import GRUState as GRUState
from ._recurrent import LSTMState as LSTMState
from ._reparam import SpectralNorm as SpectralNorm
from ._reparam import WeightNorm as WeightNorm
from ._seed import manual_seed as manual_seed
from ._sequential import Sequential as Sequential
from ._summary import Summary as Summary
from ._summary import summary as summary
from ._transforms import filter_grad as filter_grad
from ._transforms import filter_jit as filter_jit
from ._transforms import filter_value_and_grad as filter_value_and_grad
from ._typecheck import set_typechecking as set_typechecking
from ._typecheck import typecheck as typecheck
from ._typecheck import typechecking_enabled as typechecking_enabled

__all__ = [
    "GRU",
    "LSTM",
    "BatchApply",
    "BatchNorm",
    "Bias",
    "Checkpoint",
    "Conv",
    "ConvTranspose",
    "CoreModule",
    "DenseGeneral",
    "Dropout",
    "EMA",
    "Einsum",
    "Embed",
    "GRUState",
    "GroupNorm",
    "Identity",
    "InstanceNorm",
    "LSTMState",
    "Lambda",
    "LayerNorm",
    "Linear",
    "LoadResult",
    "Module",
    "Parallel",
    "RMSNorm",
    "Scaler",
    "Sequential",
    "SpectralNorm",
    "Summary",
    "WeightNorm",
    "avg_pool",
    "filter_grad",
    "filter_jit",
    "filter_value_and_grad",
    "from_core",
    "load",
    "manual_seed",
    "max_pool",
    "min_pool",
    "save",
    "set_typechecking",
    "summary",
    "trainable",
    "typecheck",
    "typechecking_enabled",
]
