"""blox.eager.torch_nn: PyTorch's `torch.nn` names, signatures and state_dicts over blox."""

from ._attention import MultiheadAttention as MultiheadAttention
from ._rnn import LSTM as LSTM

__all__ = [
    "LSTM",
    "MultiheadAttention",
]
