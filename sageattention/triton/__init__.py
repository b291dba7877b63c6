"""Triton kernels: quantizers (``quant_*``) and attention (``attn_*``), one file per op.

Nothing is imported here, so ``import sageattention.triton`` costs nothing and does not need
triton until a kernel module is imported.
"""
