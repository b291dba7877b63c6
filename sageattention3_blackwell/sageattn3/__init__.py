"""SageAttention3: NVFP4 microscaling attention for Blackwell GPUs (package ``sageattn3``).

Only the dispatcher and the PyTorch reference exist in this build; see ``sageattn3_blackwell``.
"""

from .api import sageattn3_blackwell

__all__ = ["sageattn3_blackwell"]
