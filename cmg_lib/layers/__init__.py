"""Speed kernels with their own autograd, kept apart from the paper's concepts (see ``small_map_conv``)."""
from .small_map_conv import SmallMapConv

__all__ = ["SmallMapConv"]
