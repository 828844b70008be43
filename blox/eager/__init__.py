"""blox.eager: the PyTorch-style object API over `blox.core`."""

from ._attention import MultiHeadAttention as MultiHeadAttention
from ._checkpoint import Checkpoint as Checkpoint
from ._checkpoint import load as load
from ._checkpoint import save as save
from ._combinators import EMA as EMA
from ._combinators import BatchApply as BatchApply
from ._combinators import Lambda as Lambda
from ._combinators import Parallel as Parallel
from ._context import cache_sizes as cache_sizes
from ._context import clear_caches as clear_caches
from ._conv import Conv as Conv
from ._conv import ConvLocal as ConvLocal
from ._conv import ConvTranspose as ConvTranspose
from ._core_module import CoreModule as CoreModule
from ._core_module import from_core as from_core
from ._dispatch import CompileStats as CompileStats
from ._dispatch import compile_stats as compile_stats
from ._dropout import Dropout as Dropout
from ._embed import Embed as Embed
from ._hooks import RemovableHandle as RemovableHandle
from ._linear import Bias as Bias
from ._linear import DenseGeneral as DenseGeneral
from ._linear import Einsum as Einsum
from ._linear import Identity as Identity
from ._linear import Linear as Linear
from ._linear import Scaler as Scaler
from ._module import LoadResult as LoadResult
from ._module import Module as Module
from ._module import trainable as trainable
from ._norm import BatchNorm as BatchNorm
from ._norm import GroupNorm as GroupNorm
from ._norm import InstanceNorm as InstanceNorm
from ._norm import LayerNorm as LayerNorm
from ._norm import RMSNorm as RMSNorm
from ._pool import avg_pool as avg_pool
from ._pool import max_pool as max_pool
from ._pool import min_pool as min_pool
from ._pool import pool as pool
from ._pool import sum_pool as sum_pool
from ._recurrent import GRU as GRU
from ._recurrent import LSTM as LSTM
from ._recurrent import RNN as RNN
from ._recurrent import GRUCell as GRUCell
from ._recurrent import GRUState as GRUState
from ._recurrent import LSTMCell as LSTMCell
from ._recurrent import LSTMState as LSTMState
from ._recurrent import MGUCell as MGUCell
from ._recurrent import OptimizedLSTMCell as OptimizedLSTMCell
from ._recurrent import SimpleCell as SimpleCell
from ._reparam import SpectralNorm as SpectralNorm
from ._reparam import WeightNorm as WeightNorm
from ._rng import Rng as Rng
from ._seed import build_core as build_core
from ._seed import check_groups as check_groups
from ._seed import check_sizes as check_sizes
from ._seed import example_zeros as example_zeros
from ._seed import init_params as init_params
from ._seed import manual_seed as manual_seed
from ._sequential import Sequential as Sequential
from ._sharding import shard as shard
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
    "RNN",
    "BatchNorm",
    "Bias",
    "Checkpoint",
    "CompileStats",
    "Conv",
    "ConvLocal",
    "ConvTranspose",
    "CoreModule",
    "DenseGeneral",
    "Dropout",
    "EMA",
    "Einsum",
    "Embed",
    "GRUCell",
    "GRUState",
    "GroupNorm",
    "Identity",
    "InstanceNorm",
    "LSTMCell",
    "LSTMState",
    "Lambda",
    "LayerNorm",
    "Linear",
    "LoadResult",
    "MGUCell",
    "Module",
    "MultiHeadAttention",
    "Parallel",
    "OptimizedLSTMCell",
    "RMSNorm",
    "Scaler",
    "RemovableHandle",
    "Rng",
    "Sequential",
    "SpectralNorm",
    "SimpleCell",
    "Summary",
    "WeightNorm",
    "avg_pool",
    "build_core",
    "cache_sizes",
    "check_groups",
    "check_sizes",
    "clear_caches",
    "compile_stats",
    "example_zeros",
    "filter_grad",
    "filter_jit",
    "filter_value_and_grad",
    "from_core",
    "init_params",
    "load",
    "manual_seed",
    "max_pool",
    "min_pool",
    "pool",
    "save",
    "set_typechecking",
    "sum_pool",
    "shard",
    "summary",
    "trainable",
    "typecheck",
    "typechecking_enabled",
]
