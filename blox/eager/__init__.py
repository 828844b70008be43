"""blox.eager: the PyTorch-style object API over `blox.core`."""

from ._attention import MultiHeadAttention as MultiHeadAttention
from ._checkpoint import Checkpoint as Checkpoint
from ._checkpoint import load as load
from ._checkpoint import save as save
from ._conv import Conv as Conv
from ._conv import ConvTranspose as ConvTranspose
from ._dropout import Dropout as Dropout
from ._embed import Embed as Embed
from ._linear import Linear as Linear
from ._module import CoreModule as CoreModule
from ._module import LoadResult as LoadResult
from ._module import Module as Module
from ._module import from_core as from_core
from ._module import trainable as trainable
from ._norm import BatchNorm as BatchNorm
from ._norm import LayerNorm as LayerNorm
from ._norm import RMSNorm as RMSNorm
from ._pool import avg_pool as avg_pool
from ._pool import max_pool as max_pool
from ._pool import min_pool as min_pool
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
from ._rng import Rng as Rng
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
    "RNN",
    "BatchNorm",
    "Checkpoint",
    "Conv",
    "ConvTranspose",
    "CoreModule",
    "Dropout",
    "Embed",
    "GRUCell",
    "GRUState",
    "LSTMCell",
    "LSTMState",
    "LayerNorm",
    "Linear",
    "LoadResult",
    "MGUCell",
    "Module",
    "MultiHeadAttention",
    "OptimizedLSTMCell",
    "RMSNorm",
    "Rng",
    "Sequential",
    "SimpleCell",
    "Summary",
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
