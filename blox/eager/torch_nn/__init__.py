"""blox.eager.torch_nn: PyTorch's `torch.nn` names, signatures and state_dicts over blox."""

from ._attention import MultiheadAttention as MultiheadAttention
from ._rnn import GRU as GRU
from ._rnn import LSTM as LSTM
from ._rnn import RNN as RNN
from ._rnn import GRUCell as GRUCell
from ._rnn import LSTMCell as LSTMCell
from ._rnn import RNNCell as RNNCell

__all__ = [
    "GRU",
    "GRUCell",
    "LSTM",
    "LSTMCell",
    "MultiheadAttention",
    "RNN",
    "RNNCell",
]
