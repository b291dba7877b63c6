"""PyTorch emulation of what the quantized attention kernels compute, step by step.

Given the *quantized* inputs a kernel receives, these functions compute the same scheme in
PyTorch: INT32-exact Q·Kᵀ, dequantization by per-row/per-column scales, an online softmax in
fp32 with ``exp2`` over key blocks of ``block_n`` tokens (the same blocks the kernel walks, so P is
rounded at the same running maximum), P rounded to the P·V operand type (fp16/bf16, or e4m3
after scaling by 448), and the P·V accumulation of each variant. A kernel that disagrees with its
emulation by more than ``EMULATION_TOLERANCE`` has a bug; the emulation's own distance to the
float64 reference (``reference.attention_ref``) is the quantization error of the scheme.

Not emulated: the FP22 truncation inside one FP8 MMA block (§2.3.5 of the research notes) and the
order of additions inside an MMA; both stay within ``EMULATION_TOLERANCE``.
"""

from __future__ import annotations

import math

import torch

from .reference import (
    LOG2E,
    quant_per_block_int8_ref,
    quant_v_per_channel_fp8_ref,
    to_hnd,
)

#: log2(448): P scaled into the e4m3 range [0, 448] through the exponent (notes §2.3.4).
FP8_P_LOG2_SCALE = math.log2(448.0)

#: Kernel vs emulation: max |kernel - emulated| / max |emulated| over the output, and the same for
#: LSE in absolute log2 units (checked by ``emulation_error``). Why these values: with the same
#: blocks, the only differences are exp2 approximation (~2 ulp fp32), summation order inside MMAs,
#: and for the 16-bit-accumulate and FP8 modes the rounding of partial sums (fp16: 2^-11 relative
#: per block). The bounds are ~10x what the interpreter shows and far below quantization error
#: (cos 0.9998 means ~2e-2 relative error).
EMULATION_TOLERANCE = {
    "fp32": {"out": 2e-3, "lse": 1e-4},
    "fp16+fp32": {"out": 4e-3, "lse": 1e-4},
    "fp8": {"out": 1.5e-2, "lse": 1e-4},
    # Not emulated exactly, so looser (CUDA kernels only): "fp16" keeps O itself in fp16 across
    # all KV blocks (one fp16 rounding of the running sum per 64-key block: 2^-11 relative each,
    # ~L/64 of them); "fp8-fp22" is FP8 P·V accumulated over the whole KV loop by the MMA, whose
    # sum keeps ~13 mantissa bits and truncates (notes §2.3.5: up to 2^-13 per MMA, biased).
    # Bounds are estimates (never measured: no GPU where they were written).
    "fp16": {"out": 1e-2, "lse": 1e-4},
    "fp8-fp22": {"out": 3e-2, "lse": 1e-4},
}

#: e4m3 P (keys "fp8*"): a P value within a last-ulp difference of an e4m3 rounding tie rounds one
#: way in the kernel and the other in the emulation, and moves its whole output row by one e4m3 step
#: of that P (up to 2^-3 of it) times the V row. Harmless, but when it hits a row's largest P it
#: breaks the max-error bound above: on the H100 (session 5) 5 of ~300 FP8 cases did, at 1.8e-2 to
#: 3.8e-2 (outlier inputs: scores near 10^3 in log2 units, where one fp32 ulp is 10^-4, flip
#: often). So for e4m3 P the bound holds for all rows but the worst FP8_TIE_FLIP_ROWS share (at
#: least one row), and every row stays within one e4m3 step, E4M3_STEP of the output's maximum.
FP8_TIE_FLIP_ROWS = 0.01
E4M3_STEP = 2.0**-3


def emulation_error(out: torch.Tensor, emulated: torch.Tensor, key: str) -> tuple[float, str | None]:
    """Compare a kernel's output with its emulation under ``EMULATION_TOLERANCE[key]["out"]``.

    ``out``, ``emulated``: same shape, channels last (any layout). Returns ``(error, failure)``:
    the error the bound was applied to (max relative error; for e4m3 P keys the largest after
    leaving out the worst ``FP8_TIE_FLIP_ROWS`` rows) and a message when the check fails, else None.
    The bound includes ``out``'s own rounding (``eps`` of its dtype).
    """
    bound = EMULATION_TOLERANCE[key]["out"] + torch.finfo(out.dtype).eps
    if not key.startswith("fp8"):
        err = relative_max_error(out, emulated)
        return err, None if err <= bound else f"kernel vs emulation ({key}): max rel err {err:.3e} > {bound:.1e}"
    x, ref = out.double(), emulated.double()
    denom = ref.abs().max().item() or 1.0
    row_err = ((x - ref).abs().amax(dim=-1) / denom).flatten()
    if row_err.numel() == 0:
        return 0.0, None
    worst = row_err.max().item()
    if worst > E4M3_STEP + torch.finfo(out.dtype).eps:
        return worst, f"kernel vs emulation ({key}): a row is off by {worst:.3e}, more than one e4m3 step ({E4M3_STEP})"
    skipped = max(1, int(FP8_TIE_FLIP_ROWS * row_err.numel()))
    ranked = torch.sort(row_err, descending=True).values
    err = ranked[skipped].item() if ranked.numel() > skipped else 0.0
    if err > bound:
        return err, (f"kernel vs emulation ({key}): max rel err {err:.3e} > {bound:.1e} after leaving out the "
                     f"{skipped} worst of {row_err.numel()} rows (rounding-tie flips of P)")
    return err, None


def _expand_scales(scale: torch.Tensor, length: int, group: int) -> torch.Tensor:
    """``[B, H, groups]`` → per-token ``[B, H, length]`` (token ``t`` uses group ``t // group``)."""
    index = torch.arange(length, device=scale.device) // group
    return scale[:, :, index]


def _emulate(
    q_int8, k_int8, v, q_scale, k_scale, v_scale, *, tensor_layout, is_causal, pv_mode, q_group,
    k_group, block_n,
):
    qh, kh, vh = (to_hnd(t, tensor_layout) for t in (q_int8, k_int8, v))
    b, hq, lq, d = qh.shape
    hkv, lk = kh.shape[1], kh.shape[2]
    rep = hq // hkv
    kh = kh.repeat_interleave(rep, dim=1)
    vh = vh.repeat_interleave(rep, dim=1)
    # |q·k| <= 127² · 256 < 2^53: float64 matmul is exact integer arithmetic.
    qk = torch.matmul(qh.double(), kh.double().transpose(-1, -2)).float()
    qs = _expand_scales(q_scale, lq, q_group)[..., :, None]
    ks = _expand_scales(k_scale, lk, k_group).repeat_interleave(rep, dim=1)[..., None, :]
    s = qk * ks * qs  # fp32, log2 domain
    if is_causal:
        row = torch.arange(lq, device=s.device)[:, None]
        col = torch.arange(lk, device=s.device)[None, :]
        s = s.masked_fill(col > row, float("-inf"))
    p_log2_scale = FP8_P_LOG2_SCALE if pv_mode == "fp8" else 0.0

    m = torch.full((b, hq, lq), float("-inf"), dtype=torch.float32, device=s.device)
    l = torch.zeros((b, hq, lq), dtype=torch.float32, device=s.device)
    acc = torch.zeros((b, hq, lq, d), dtype=torch.float32, device=s.device)
    for start in range(0, lk, block_n):
        sb = s[..., start : start + block_n]
        vb = vh[:, :, start : start + block_n]
        m_new = torch.maximum(m, sb.amax(dim=-1))
        m_use = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)
        p = torch.exp2(sb - (m_use - p_log2_scale)[..., None])
        alpha = torch.exp2(m - m_use)
        l = l * alpha + p.sum(dim=-1)
        if pv_mode == "fp8":
            pv = torch.matmul(p.to(torch.float8_e4m3fn).double(), vb.double()).float()
        elif pv_mode == "fp16+fp32":
            pv = torch.matmul(p.to(vb.dtype).double(), vb.double()).to(torch.float16).float()
        else:
            pv = torch.matmul(p.to(vb.dtype).double(), vb.double()).float()
        acc = acc * alpha[..., None] + pv
        m = m_new
    l_safe = torch.where(l > 0, l, torch.ones_like(l))
    out = acc / l_safe[..., None]
    if v_scale is not None:
        out = out * v_scale.repeat_interleave(rep, dim=1)[:, :, None, :]
    lse = torch.where(l > 0, m - p_log2_scale + torch.log2(l_safe), torch.full_like(l, float("-inf")))
    if tensor_layout == "NHD":
        out = out.transpose(1, 2)
    return out, lse


def attn_qk_int8_pv_fp16_emulated(
    q_int8, k_int8, v, q_scale, k_scale, *, tensor_layout="HND", is_causal=False,
    pv_accum_dtype="fp32", q_group=128, k_group=64, block_n=64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Emulate ``triton.attn_qk_int8_pv_fp16``: returns ``(out float32 in q's layout, lse2 [B,H_q,L_q])``.

    ``pv_accum_dtype`` "fp16"/"fp16+fp32" rounds each block's P·V partial to fp16 before the fp32
    add; ``block_n`` must be the kernel's BLOCK_N for a tight comparison.
    """
    mode = "fp16+fp32" if pv_accum_dtype in ("fp16", "fp16+fp32") else "fp32"
    return _emulate(
        q_int8, k_int8, v, q_scale, k_scale, None, tensor_layout=tensor_layout, is_causal=is_causal,
        pv_mode=mode, q_group=q_group, k_group=k_group, block_n=block_n,
    )


def attn_qk_int8_pv_fp8_emulated(
    q_int8, k_int8, v_fp8, q_scale, k_scale, v_scale, *, tensor_layout="HND", is_causal=False,
    q_group=128, k_group=64, block_n=64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Emulate ``triton.attn_qk_int8_pv_fp8``: P·448 rounded to e4m3, e4m3 V, per-block fp32 P·V
    (two-level accumulation), ``v_scale`` ``[B, H_kv, D]`` applied at the end."""
    return _emulate(
        q_int8, k_int8, v_fp8, q_scale, k_scale, v_scale, tensor_layout=tensor_layout,
        is_causal=is_causal, pv_mode="fp8", q_group=q_group, k_group=k_group, block_n=block_n,
    )


#: Geometry of the mma.sync CUDA kernels (csrc/qattn/qk_int8_attn.cuh): 16-row Q warp slabs in
#: 128-row CTAs, 64-key K blocks. Their scale arrays are indexed by these.
MMA_WARP_Q, MMA_BLOCK_Q, MMA_BLOCK_K = 16, 128, 64


def expand_mma_scales(q_scale, k_scale, lq: int, lk: int, qk_quant_gran: str):
    """Per-thread / per-warp scale arrays of the CUDA kernels -> per-token ``[B, H, L]`` scales.

    per_thread: Q token r uses group ``(r // 16) * 8 + r % 8``, K token r uses
    ``(r // 64) * 4 + (r % 8) // 2`` (SageAttention2 Eq. 8 with 16-row warp slabs); per_warp:
    ``r // 16`` and ``r // 64``.
    """
    rq = torch.arange(lq, device=q_scale.device)
    rk = torch.arange(lk, device=k_scale.device)
    if qk_quant_gran == "per_thread":
        qi = (rq // MMA_WARP_Q) * 8 + rq % 8
        ki = (rk // MMA_BLOCK_K) * 4 + (rk % 8) // 2
    elif qk_quant_gran == "per_warp":
        qi, ki = rq // MMA_WARP_Q, rk // MMA_BLOCK_K
    else:
        raise ValueError(f"qk_quant_gran must be 'per_thread' or 'per_warp', got {qk_quant_gran!r}")
    return q_scale[:, :, qi], k_scale[:, :, ki]


def attn_qk_int8_mma_emulated(
    q_int8, k_int8, v, q_scale, k_scale, v_scale=None, *, tensor_layout="HND", is_causal=False,
    qk_quant_gran="per_thread", pv_accum_dtype="fp32", block_k=None,
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Emulate ``sageattention::qk_int8_sv_f16_attn`` (``v_scale`` None, ``v`` fp16) or
    ``qk_int8_sv_f8_attn`` (``v`` e4m3 in v's layout, ``v_scale`` ``[B, H_kv, D]``).

    ``block_k``: keys per KV step of the kernel (default the mma.sync kernels' 64; the sm90 wgmma
    kernel takes 128): the running max, hence each P rounding, and the FP8 two-level blocks follow it.

    Returns ``(out float32 in q's layout, lse2, EMULATION_TOLERANCE key)``; the key names how
    closely the kernel must match (modes the emulation only approximates get looser bounds).
    """
    lq = to_hnd(q_int8, tensor_layout).shape[2]
    lk = to_hnd(k_int8, tensor_layout).shape[2]
    qs, ks = expand_mma_scales(q_scale, k_scale, lq, lk, qk_quant_gran)
    if v_scale is None:
        mode = {"fp32": "fp32", "fp16+fp32": "fp16+fp32", "fp16": "fp16+fp32"}[pv_accum_dtype]
        key = "fp16" if pv_accum_dtype == "fp16" else mode
    else:
        mode = "fp8"
        key = "fp8-fp22" if pv_accum_dtype == "fp32" else "fp8"
    out, lse = _emulate(
        q_int8, k_int8, v, qs, ks, v_scale, tensor_layout=tensor_layout, is_causal=is_causal, pv_mode=mode,
        q_group=1, k_group=1, block_n=MMA_BLOCK_K if block_k is None else block_k,
    )
    return out, lse, key


def quant_per_channel_fp8_ref(v: torch.Tensor, *, tensor_layout: str = "HND", scale_max: float = 448.0):
    """Per-channel e4m3 quantization of V: ``(v_fp8 in v's layout, v_scale float32 [B, H, D])``.

    ``v_scale = absmax over tokens · fl(1 / scale_max)`` per (batch, head, channel); a zero channel has
    scale 0 and quantizes to 0. A test helper so kernel tests do not depend on the Triton quantizer:
    :func:`~sageattention.testing.reference.quant_v_per_channel_fp8_ref` without V smoothing.
    """
    v8, scale, _ = quant_v_per_channel_fp8_ref(v, tensor_layout=tensor_layout, scale_max=scale_max)
    return v8, scale


def relative_max_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    """``max |x - ref| / max |ref|`` in float64 (0 when both are all zero)."""
    x, ref = x.double(), ref.double()
    denom = ref.abs().max().item()
    err = (x - ref).abs().max().item()
    return err / denom if denom > 0 else err


# Test-input helpers shared by the kernel tests.


def make_inputs(device, *, b=1, hq=2, hkv=2, lq=65, lk=65, d=64, layout="HND", dtype=torch.float16,
                k_bias=0.0, q_group=128, k_group=64):
    """Random q/k/v in ``layout`` plus their per-block INT8 quantization (reference quantizer)."""
    def shape(h, n):
        return (b, h, n, d) if layout == "HND" else (b, n, h, d)

    q = torch.randn(shape(hq, lq), device=device).to(dtype)
    k = torch.randn(shape(hkv, lk), device=device)
    if k_bias:
        # Channel-biased K (issue 4 item 6): a large per-channel offset shared by all tokens.
        bias = torch.randn(d, device=device) * k_bias
        k = k + bias
    k = k.to(dtype)
    v = torch.randn(shape(hkv, lk), device=device).to(dtype)
    qi, qs, ki, ks, km = quant_per_block_int8_ref(q, k, tensor_layout=layout, blkq=q_group, blkk=k_group)
    return q, k, v, qi, qs, ki, ks, km


def natural_lse(lse2, q, k_mean, layout):
    """Base-2 LSE of smoothed, log2-scaled scores → natural LSE of the original scores."""
    qh = q.float() if layout == "HND" else q.float().transpose(1, 2)
    groups = qh.shape[1] // k_mean.shape[1]
    km = k_mean.repeat_interleave(groups, dim=1)
    correction = (qh @ km.transpose(-1, -2)).squeeze(-1) * qh.shape[-1] ** -0.5
    return lse2.double() / LOG2E + correction.double()
