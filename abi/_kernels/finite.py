"""Which blocks of a stored tensor would dequantise to NaN or Inf, found without
dequantising: only the fields that scale a block can be non-finite (the quants are
integers), so a scan reads one or two scale fields per block (compiled, one pass over the
blocks split over threads, for the float16 fields most types have; vectorised otherwise).

Fields per type (byte offsets inside a block, from the layouts drawn in ref_legacy,
ref_kquants and ref_iquants):

    f16 d (and m)    Q4_0 Q5_0 Q8_0 IQ4_NL @0; Q4_1 Q5_1 @0,2; Q4_K Q5_K @0,2; Q2_K @80,82;
                     Q3_K @108; Q6_K @208; IQ2_* IQ3_* IQ1_S IQ4_XS @0; TQ1_0 @52; TQ2_0 @64
    f32 d            Q8_K @0
    f16 in nibbles   IQ1_M: the top nibble of each of the four u16 scale words @48
    e8m0 exponent    MXFP4 @0: 2^(e-128) times a code up to 12 overflows float32 from e = 253
    whole tensor     F32, F16, BF16, F64 (exponent bits all set)
"""
from __future__ import annotations

import numpy as np

from ..gguf.constants import GGMLType

_T = GGMLType
F16_SCALES: dict[GGMLType, tuple[int, ...]] = {
    _T.Q4_0: (0,), _T.Q5_0: (0,), _T.Q8_0: (0,), _T.IQ4_NL: (0,), _T.Q8_1: (0,),
    _T.Q4_1: (0, 2), _T.Q5_1: (0, 2), _T.Q4_K: (0, 2), _T.Q5_K: (0, 2),
    _T.Q2_K: (80, 82), _T.Q3_K: (108,), _T.Q6_K: (208,),
    _T.IQ2_XXS: (0,), _T.IQ2_XS: (0,), _T.IQ2_S: (0,), _T.IQ3_XXS: (0,), _T.IQ3_S: (0,),
    _T.IQ1_S: (0,), _T.IQ4_XS: (0,), _T.TQ1_0: (52,), _T.TQ2_0: (64,),
}
_FLOAT_EXPONENT = {_T.F16: (np.uint16, 0x7C00), _T.BF16: (np.uint16, 0x7F80),
                   _T.F32: (np.uint32, 0x7F800000), _T.F64: (np.uint64, 0x7FF0000000000000)}
MXFP4_MAX_EXPONENT = 252


def _f16_bad(bits: np.ndarray) -> np.ndarray:
    return (bits & np.uint16(0x7C00)) == np.uint16(0x7C00)


def _u16_at(blocks: np.ndarray, offset: int) -> np.ndarray:
    """The little-endian u16 at ``offset`` of every block (n,)."""
    return blocks[:, offset].astype(np.uint16) | (blocks[:, offset + 1].astype(np.uint16) << np.uint16(8))


def nonfinite_blocks(raw: np.ndarray, ggml_type: GGMLType, n_threads: int = 1) -> np.ndarray:
    """Indices of the blocks (elements, for float types) of ``raw`` (the tensor's bytes)
    that dequantise to a NaN or Inf. Types holding integers only return none."""
    t = GGMLType(ggml_type)
    raw = np.asarray(raw).reshape(-1).view(np.uint8)
    if t in _FLOAT_EXPONENT:
        dtype, mask = _FLOAT_EXPONENT[t]
        bits = raw.view(dtype)
        return np.flatnonzero((bits & dtype(mask)) == dtype(mask))
    if t.type_size == 0 or raw.size % t.type_size:
        raise ValueError(f"{raw.size} bytes are not whole {t.name} blocks")
    blocks = raw.reshape(-1, t.type_size)
    if t in F16_SCALES:
        from .dequant import f16_fields_nonfinite

        bad = np.empty(len(blocks), np.uint8)
        f16_fields_nonfinite(raw, t.type_size, F16_SCALES[t], bad, n_threads)
    elif t == _T.Q8_K:
        d = np.ascontiguousarray(blocks[:, 0:4]).view("<u4").reshape(-1)
        bad = (d & np.uint32(0x7F800000)) == np.uint32(0x7F800000)
    elif t == _T.IQ1_M:
        sc = [_u16_at(blocks, 48 + 2 * i) for i in range(4)]
        d = ((sc[0] >> np.uint16(12)) | ((sc[1] >> np.uint16(8)) & np.uint16(0x00F0))
             | ((sc[2] >> np.uint16(4)) & np.uint16(0x0F00)) | (sc[3] & np.uint16(0xF000)))
        bad = _f16_bad(d)
    elif t == _T.MXFP4:
        bad = blocks[:, 0] > MXFP4_MAX_EXPONENT
    else:  # integer tensors (I8 .. I64): nothing to scan
        return np.zeros(0, np.int64)
    return np.flatnonzero(bad)
