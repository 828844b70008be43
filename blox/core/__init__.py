"""blox.core: the functional engine. Every call is `outputs, params = module(params, x)`."""

from ._attention import MultiHeadAttention as MultiHeadAttention
from ._attention import SelfAttention as SelfAttention
from ._attention import apply_rotary_embedding as apply_rotary_embedding
from ._attention import combine_masks as combine_masks
from ._attention import dot_product_attention as dot_product_attention
from ._attention import dot_product_attention_weights as dot_product_attention_weights
from ._attention import make_attention_mask as make_attention_mask
from ._attention import make_causal_mask as make_causal_mask
from ._checkpoint import load_params as load_params
from ._checkpoint import save_params as save_params
from ._combinators import EMA as EMA
from ._combinators import BatchApply as BatchApply
from ._combinators import Lambda as Lambda
from ._combinators import Parallel as Parallel
from ._conv import Conv as Conv
from ._conv import ConvLocal as ConvLocal
from ._conv import ConvTranspose as ConvTranspose
from ._display import display as display
from ._dropout import Dropout as Dropout
from ._embed import Embed as Embed
from ._graph import Graph as Graph
from ._linear import Bias as Bias
from ._linear import DenseGeneral as DenseGeneral
from ._linear import Einsum as Einsum
from ._linear import Identity as Identity
from ._linear import Linear as Linear
from ._linear import Scaler as Scaler
from ._module import Module as Module
from ._norm import BatchNorm as BatchNorm
from ._norm import GroupNorm as GroupNorm
from ._norm import InstanceNorm as InstanceNorm
from ._norm import LayerNorm as LayerNorm
from ._norm import RMSNorm as RMSNorm
from ._params import Param as Param
from ._params import Params as Params
from ._pool import avg_pool as avg_pool
from ._pool import max_pool as max_pool
from ._pool import min_pool as min_pool
from ._pool import pool as pool
from ._pool import sum_pool as sum_pool
from ._recurrent import GRU as GRU
from ._recurrent import LSTM as LSTM
from ._recurrent import RNN as RNN
from ._recurrent import Bidirectional as Bidirectional
from ._recurrent import ConvLSTMCell as ConvLSTMCell
from ._recurrent import GRUCell as GRUCell
from ._recurrent import GRUState as GRUState
from ._recurrent import LSTMCell as LSTMCell
from ._recurrent import LSTMState as LSTMState
from ._recurrent import MGUCell as MGUCell
from ._recurrent import OptimizedLSTMCell as OptimizedLSTMCell
from ._recurrent import RNNCellBase as RNNCellBase
from ._recurrent import SimpleCell as SimpleCell
from ._recurrent import StackedRNN as StackedRNN
from ._recurrent import VanillaRNN as VanillaRNN
from ._reparam import SpectralNorm as SpectralNorm
from ._reparam import WeightNorm as WeightNorm
from ._rng import Rng as Rng
from ._scan import RecurrenceBase as RecurrenceBase
from ._scan import SequenceBase as SequenceBase
from ._scan import dynamic_scan as dynamic_scan
from ._scan import flip_sequences as flip_sequences
from ._scan import scan_cell as scan_cell
from ._scan import static_scan as static_scan
from ._sequential import Sequential as Sequential
from ._sharding import shard as shard
from ._sharding import shardings as shardings

__all__ = [
    "BatchApply",
    "BatchNorm",
    "Bias",
    "Conv",
    "ConvLocal",
    "Bidirectional",
    "ConvLSTMCell",
    "ConvTranspose",
    "DenseGeneral",
    "Dropout",
    "EMA",
    "Einsum",
    "Embed",
    "GRU",
    "GRUCell",
    "GRUState",
    "Graph",
    "GroupNorm",
    "Identity",
    "InstanceNorm",
    "LSTM",
    "LSTMCell",
    "LSTMState",
    "Lambda",
    "LayerNorm",
    "Linear",
    "MGUCell",
    "Module",
    "Parallel",
    "MultiHeadAttention",
    "OptimizedLSTMCell",
    "Param",
    "Params",
    "RMSNorm",
    "RNN",
    "RNNCellBase",
    "RecurrenceBase",
    "Rng",
    "Scaler",
    "SelfAttention",
    "SequenceBase",
    "Sequential",
    "SpectralNorm",
    "WeightNorm",
    "apply_rotary_embedding",
    "SimpleCell",
    "StackedRNN",
    "VanillaRNN",
    "avg_pool",
    "combine_masks",
    "display",
    "dot_product_attention",
    "dot_product_attention_weights",
    "dynamic_scan",
    "flip_sequences",
    "load_params",
    "make_attention_mask",
    "make_causal_mask",
    "max_pool",
    "min_pool",
    "pool",
    "save_params",
    "shard",
    "shardings",
    "scan_cell",
    "static_scan",
    "sum_pool",
]
