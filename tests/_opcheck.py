"""What ``torch.library.opcheck``'s test_schema checks, done on raw bytes.

test_schema compares every argument before and after the call with ``torch.allclose``, which has
no float8_e4m3fn kernel ("mul_cuda not implemented for 'Float8_e4m3fn'", torch 2.11, H100), so it
cannot run on ops with FP8 tensors. This checks the same contract byte for byte: arguments the
schema does not annotate as written stay unchanged, and every annotated output is written in full.
"""

from __future__ import annotations

import torch

#: An e4m3 NaN: a saturating (satfinite) conversion never produces it, so any byte still holding
#: it after the call was not written.
E4M3_NAN_BYTE = 0x7F
#: An int8 code the quantizers never write (they clamp to [-127, 127]).
INT8_UNWRITTEN = -128


def check_schema_by_bytes(op, args: list) -> None:
    """Call ``op(*args)`` after poisoning its outputs; assert inputs unchanged, outputs written."""
    arguments = op._schema.arguments
    written = {i for i, arg in enumerate(arguments) if arg.alias_info is not None and arg.alias_info.is_write}
    assert written, "the schema annotates no output as mutated"

    def raw(t):
        return t.view(torch.uint8) if t.dtype == torch.float8_e4m3fn else t

    before = {i: raw(a).clone() for i, a in enumerate(args) if isinstance(a, torch.Tensor) and i not in written}
    for i in written:
        if isinstance(args[i], torch.Tensor):
            if args[i].dtype == torch.float8_e4m3fn:
                args[i].view(torch.uint8).fill_(E4M3_NAN_BYTE)
            elif args[i].dtype == torch.int8:
                args[i].fill_(INT8_UNWRITTEN)
            else:
                args[i].fill_(float("nan"))
    op(*args)
    for i, old in before.items():
        assert torch.equal(raw(args[i]), old), f"input argument {arguments[i].name} was modified"
    for i in written:
        t = args[i]
        if not isinstance(t, torch.Tensor):
            continue
        if t.dtype == torch.float8_e4m3fn:
            assert (t.view(torch.uint8) != E4M3_NAN_BYTE).all(), f"output argument {arguments[i].name} not fully written"
        elif t.dtype == torch.int8:
            assert (t != INT8_UNWRITTEN).all(), f"output argument {arguments[i].name} not fully written"
        else:
            assert torch.isfinite(t).all(), f"output argument {arguments[i].name} not fully written"
