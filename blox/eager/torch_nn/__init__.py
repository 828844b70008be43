"""`blox.eager.torch_nn`: PyTorch's `torch.nn` names, signatures, layouts and state_dicts.

``from blox.eager import torch_nn as nn`` and a PyTorch model ports by
changing its import (and `torch.optim` to optax): layers are channels first,
parameters and buffers carry PyTorch's names and shapes, and
`model.load_state_dict` takes a PyTorch state_dict or checkpoint file. The
numerics are `blox.core`'s; these classes only rename and move axes.
"""

from .._checkpoint import Checkpoint as Checkpoint
from .._checkpoint import load as load
from .._checkpoint import save as save
from .._module import trainable as trainable
from .._rng import Rng as Rng
from .._seed import manual_seed as manual_seed
from .._transforms import filter_grad as filter_grad
from .._transforms import filter_jit as filter_jit
from .._transforms import filter_value_and_grad as filter_value_and_grad
from . import functional as functional
from . import init as init
from ._activation import CELU as CELU
from ._activation import ELU as ELU
from ._activation import GELU as GELU
from ._activation import GLU as GLU
from ._activation import SELU as SELU
from ._activation import Hardsigmoid as Hardsigmoid
from ._activation import Hardswish as Hardswish
from ._activation import Hardtanh as Hardtanh
from ._activation import LeakyReLU as LeakyReLU
from ._activation import LogSigmoid as LogSigmoid
from ._activation import LogSoftmax as LogSoftmax
from ._activation import Mish as Mish
from ._activation import ReLU as ReLU
from ._activation import ReLU6 as ReLU6
from ._activation import Sigmoid as Sigmoid
from ._activation import SiLU as SiLU
from ._activation import Softmax as Softmax
from ._activation import Softplus as Softplus
from ._activation import Softsign as Softsign
from ._activation import Tanh as Tanh
from ._conv import Conv1d as Conv1d
from ._conv import Conv2d as Conv2d
from ._conv import Conv3d as Conv3d
from ._conv import ConvTranspose1d as ConvTranspose1d
from ._conv import ConvTranspose2d as ConvTranspose2d
from ._conv import ConvTranspose3d as ConvTranspose3d
from ._dropout import Dropout as Dropout
from ._dropout import Dropout1d as Dropout1d
from ._dropout import Dropout2d as Dropout2d
from ._dropout import Dropout3d as Dropout3d
from ._embed import Embedding as Embedding
from ._linear import Bilinear as Bilinear
from ._linear import Flatten as Flatten
from ._linear import Identity as Identity
from ._linear import Linear as Linear
from ._linear import Unflatten as Unflatten
from ._loss import BCELoss as BCELoss
from ._loss import BCEWithLogitsLoss as BCEWithLogitsLoss
from ._loss import CrossEntropyLoss as CrossEntropyLoss
from ._loss import HuberLoss as HuberLoss
from ._loss import KLDivLoss as KLDivLoss
from ._loss import L1Loss as L1Loss
from ._loss import MSELoss as MSELoss
from ._loss import NLLLoss as NLLLoss
from ._loss import SmoothL1Loss as SmoothL1Loss
from ._module import Module as Module
from ._module import ModuleDict as ModuleDict
from ._module import ModuleList as ModuleList
from ._module import Sequential as Sequential
from ._module import read_state_dict as read_state_dict
from ._norm import BatchNorm1d as BatchNorm1d
from ._norm import BatchNorm2d as BatchNorm2d
from ._norm import BatchNorm3d as BatchNorm3d
from ._norm import GroupNorm as GroupNorm
from ._norm import InstanceNorm1d as InstanceNorm1d
from ._norm import InstanceNorm2d as InstanceNorm2d
from ._norm import InstanceNorm3d as InstanceNorm3d
from ._norm import LayerNorm as LayerNorm
from ._pool import AdaptiveAvgPool1d as AdaptiveAvgPool1d
from ._pool import AdaptiveAvgPool2d as AdaptiveAvgPool2d
from ._pool import AdaptiveAvgPool3d as AdaptiveAvgPool3d
from ._pool import AdaptiveMaxPool1d as AdaptiveMaxPool1d
from ._pool import AdaptiveMaxPool2d as AdaptiveMaxPool2d
from ._pool import AvgPool1d as AvgPool1d
from ._pool import AvgPool2d as AvgPool2d
from ._pool import AvgPool3d as AvgPool3d
from ._pool import MaxPool1d as MaxPool1d
from ._pool import MaxPool2d as MaxPool2d
from ._pool import MaxPool3d as MaxPool3d
from ._pool import PixelShuffle as PixelShuffle
from ._pool import PixelUnshuffle as PixelUnshuffle
from ._pool import Upsample as Upsample
