"""PyTorch reference of SageAttention3 attention: the accuracy model of the Blackwell kernels.

Follows SageAttention3 (paper Alg. 1, §3.1-3.2) step by step, in float32:

1. **Smoothing** (inherited from SageAttention2): ``K_s = K - mean_tokens(K)`` per (batch, kv head,
   channel) — softmax is invariant to the per-row shift ``q·mean(K)``, which is added back to the
   LSE; ``Q_s = Q - q̄`` with ``q̄`` the mean of each block of ``Q_BLOCK`` = 128 query tokens
   (``per_block_mean=True``) or of all query tokens (``False``). The removed part returns exactly
   as ``ΔS = q̄ · K_sᵀ`` in float32.
2. **NVFP4 Q·Kᵀ**: ``S = sm_scale · (φ(Q_s) · φ(K_s)ᵀ + ΔS)`` with φ the NVFP4 quantizer of
   :mod:`sageattn3.nvfp4` (1×16 blocks along the head dim).
3. **Online softmax** over key tiles of ``KV_BLOCK`` = 128 tokens (the released kernel's
   ``KBLKSIZE``): running row max ``m``, ``P̃ = exp(S_tile - m)``, row sums from the unquantized
   ``P̃`` in float32.
4. **P quantization**, ``p_quant``:

   - ``"two_level"`` (paper Eq. 5): ``s_P1 = rowmax(P̃) / (448 · 6)`` per row and tile (float32),
     ``P̃₂ = P̃ / s_P1`` (each row now peaks at 2688, so the E4M3 block scales use their full range),
     then φ(P̃₂) with 1×16 blocks along the key dim and ``O += (φ(P̃₂) · φ(V)) · s_P1``;
   - ``"direct"``: φ(P̃) (block scales ≤ 1/6 land in the coarse low end of E4M3);
   - ``"none"``: P̃ unquantized (isolates the Q·Kᵀ error; not a kernel mode).

   V is quantized with 1×16 blocks along the token dim (the P·V reduction dim). ``rowmax(P̃)`` is
   the paper's formula; the released kernel derives it from the running max, which gives the same
   value whenever the tile holds the row's running maximum.
"""

from __future__ import annotations

import torch

from .nvfp4 import E2M1_MAX, E4M3_MAX, fake_quant_nvfp4

Q_BLOCK = 128
KV_BLOCK = 128
P_QUANT_MODES = ("two_level", "direct", "none")


def _block_means(x: torch.Tensor, block: int) -> torch.Tensor:
    """Mean over each run of ``block`` tokens of ``x`` ``[B, H, L, D]``; the last run may be shorter.

    Returns ``[B, H, ceil(L / block), D]`` float32 (a partial block is averaged over its real tokens).
    """
    b, h, n, d = x.shape
    nblk = -(-n // block)
    padded = torch.nn.functional.pad(x, (0, 0, 0, nblk * block - n))
    sums = padded.reshape(b, h, nblk, block, d).sum(dim=3)
    counts = torch.full((nblk,), float(block), device=x.device)
    counts[-1] = n - (nblk - 1) * block
    return sums / counts[:, None]


def sageattn3_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    is_causal: bool = False,
    sm_scale: float | None = None,
    per_block_mean: bool = True,
    p_quant: str = "two_level",
    quantize_qk: bool = True,
    quantize_v: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Emulate SageAttention3 on ``[B, H, L, D]`` (HND) tensors; returns ``(out, lse)`` in float32.

    Parameters
    ----------
    q : torch.Tensor
        ``[B, H_q, L_q, D]``, any float dtype (computed in float32).
    k, v : torch.Tensor
        ``[B, H_kv, L_k, D]``; ``H_q`` a multiple of ``H_kv`` (GQA). Not modified.
    is_causal : bool
        Top-left aligned mask (query ``i`` sees keys ``0..i``), as ``attention_ref``.
    sm_scale : float, optional
        Softmax scale, default ``D ** -0.5``.
    per_block_mean : bool
        Q smoothing by 128-token block means (True) or by the mean over all query tokens.
    p_quant : {"two_level", "direct", "none"}
        How P̃ is quantized before P·V (module docstring).
    quantize_qk : bool
        NVFP4 for Q and K (True, what the kernel does); False keeps them in float32 so tests can
        measure the P·V quantization error alone. Smoothing and ΔS are applied either way.
    quantize_v : bool
        NVFP4 for V (True, what the kernel does); False keeps V in float32. With
        ``quantize_qk=False, quantize_v=False, p_quant="none"`` the result is exact attention, which
        is how tests check the tiling, masking, smoothing and LSE bookkeeping.

    Returns
    -------
    out : torch.Tensor
        ``[B, H_q, L_q, D]`` float32.
    lse : torch.Tensor
        ``[B, H_q, L_q]`` float32, natural-log logsumexp of ``sm_scale · Q Kᵀ`` (smoothing undone).
    """
    if p_quant not in P_QUANT_MODES:
        raise ValueError(f"p_quant must be one of {P_QUANT_MODES}, got {p_quant!r}")
    qf, kf, vf = (t.to(torch.float32) for t in (q, k, v))  # new tensors: inputs stay untouched
    b, hq, lq, d = qf.shape
    groups = hq // kf.shape[1]
    lk = kf.shape[2]
    if sm_scale is None:
        sm_scale = d ** -0.5

    k_mean = kf.mean(dim=2, keepdim=True)
    k_s = kf - k_mean
    q_means = _block_means(qf, Q_BLOCK if per_block_mean else lq)
    q_bar = q_means.repeat_interleave(Q_BLOCK if per_block_mean else lq, dim=2)[:, :, :lq]
    quant = fake_quant_nvfp4 if quantize_qk else (lambda x, dim: x)
    q_hat = quant(qf - q_bar, dim=-1)
    k_hat = quant(k_s, dim=-1).repeat_interleave(groups, dim=1)
    v_hat = (fake_quant_nvfp4(vf, dim=-2) if quantize_v else vf).repeat_interleave(groups, dim=1)
    k_s = k_s.repeat_interleave(groups, dim=1)

    m = torch.full((b, hq, lq), float("-inf"), device=qf.device)
    row_sum = torch.zeros(b, hq, lq, device=qf.device)
    acc = torch.zeros(b, hq, lq, d, device=qf.device)
    rows = torch.arange(lq, device=qf.device)[:, None]
    for start in range(0, lk, KV_BLOCK):
        stop = min(start + KV_BLOCK, lk)
        delta_s = torch.matmul(q_bar, k_s[:, :, start:stop].transpose(-1, -2))
        s = (torch.matmul(q_hat, k_hat[:, :, start:stop].transpose(-1, -2)) + delta_s) * sm_scale
        if is_causal:
            cols = torch.arange(start, stop, device=qf.device)[None, :]
            s = s.masked_fill(cols > rows, float("-inf"))
        m_new = torch.maximum(m, s.amax(dim=-1))
        # A row whose keys so far are all masked keeps m = -inf; use 0 so exp() gives 0, not NaN.
        m_safe = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
        p = torch.exp(s - m_safe[..., None])
        alpha = torch.exp(m - m_safe)
        row_sum = row_sum * alpha + p.sum(dim=-1)
        acc = acc * alpha[..., None] + _p_times_v(p, v_hat[:, :, start:stop], p_quant)
        m = m_new
    out = acc / row_sum[..., None]
    # S was computed from K_s = K - mean(K): add back sm_scale · q·mean(K) per row.
    lse = m + torch.log(row_sum) + sm_scale * torch.matmul(qf, k_mean.repeat_interleave(groups, dim=1).transpose(-1, -2))[..., 0]
    return out, lse


def _p_times_v(p: torch.Tensor, v_hat: torch.Tensor, p_quant: str) -> torch.Tensor:
    """``P̃ · V`` for one key tile with P̃ quantized as ``p_quant`` says; float32."""
    if p_quant == "none":
        return torch.matmul(p, v_hat)
    if p_quant == "direct":
        return torch.matmul(fake_quant_nvfp4(p, dim=-1), v_hat)
    s_p1 = p.amax(dim=-1, keepdim=True) / (E4M3_MAX * E2M1_MAX)
    p2 = p / torch.where(s_p1 > 0, s_p1, torch.ones_like(s_p1))
    return torch.matmul(fake_quant_nvfp4(p2, dim=-1), v_hat) * s_p1
