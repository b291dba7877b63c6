"""SageAttention3: NVFP4 microscaling attention for Blackwell GPUs (package ``sageattn3``).

``sageattn3_blackwell`` dispatches to the compiled NVFP4 kernel (``sageattn3._C``: sm_120a/sm_121a
hardware block-scaled FP4 MMA, sm_100a/sm_103a software FP4 MMA; compiled, never executed on a
Blackwell GPU) or, on request, to the PyTorch reference of :mod:`sageattn3.reference`.
"""

from .api import sageattn3_blackwell

__all__ = ["sageattn3_blackwell"]
