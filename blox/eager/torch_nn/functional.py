"""`torch.nn.functional` for blox: activations, losses, padding, resizing, attention.

Import it as PyTorch code does: ``from blox.eager.torch_nn import functional as F``.
Everything is a plain function of JAX arrays, channels first where PyTorch
is; the numerics come from `jax.nn`, optax and `blox.core`.
"""

from ._activation import celu as celu
from ._activation import elu as elu
from ._activation import gelu as gelu
from ._activation import glu as glu
from ._activation import hardsigmoid as hardsigmoid
from ._activation import hardswish as hardswish
from ._activation import hardtanh as hardtanh
from ._activation import leaky_relu as leaky_relu
from ._activation import log_softmax as log_softmax
from ._activation import logsigmoid as logsigmoid
from ._activation import mish as mish
from ._activation import relu as relu
from ._activation import relu6 as relu6
from ._activation import selu as selu
from ._activation import sigmoid as sigmoid
from ._activation import silu as silu
from ._activation import softmax as softmax
from ._activation import softplus as softplus
from ._activation import softsign as softsign
from ._activation import tanh as tanh
from ._linear import flatten as flatten
from ._loss import binary_cross_entropy as binary_cross_entropy
from ._loss import binary_cross_entropy_with_logits as binary_cross_entropy_with_logits
from ._loss import cross_entropy as cross_entropy
from ._loss import huber_loss as huber_loss
from ._loss import kl_div as kl_div
from ._loss import l1_loss as l1_loss
from ._loss import mse_loss as mse_loss
from ._loss import nll_loss as nll_loss
from ._loss import smooth_l1_loss as smooth_l1_loss
from ._ops import one_hot as one_hot
from ._ops import pad as pad
from ._ops import scaled_dot_product_attention as scaled_dot_product_attention
from ._pool import adaptive_avg_pool1d as adaptive_avg_pool1d
from ._pool import adaptive_avg_pool2d as adaptive_avg_pool2d
from ._pool import adaptive_avg_pool3d as adaptive_avg_pool3d
from ._pool import adaptive_max_pool1d as adaptive_max_pool1d
from ._pool import adaptive_max_pool2d as adaptive_max_pool2d
from ._pool import avg_pool1d as avg_pool1d
from ._pool import avg_pool2d as avg_pool2d
from ._pool import avg_pool3d as avg_pool3d
from ._pool import interpolate as interpolate
from ._pool import max_pool1d as max_pool1d
from ._pool import max_pool2d as max_pool2d
from ._pool import max_pool3d as max_pool3d
from ._pool import pixel_shuffle as pixel_shuffle
from ._pool import pixel_unshuffle as pixel_unshuffle
