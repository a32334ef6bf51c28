"""Dequantisation to float32: the Cython twins of ``ref_float``, ``ref_legacy``, ``ref_kquants``,
``ref_iquants``.

Each ``_dq_<type>`` mirrors its numpy reference operation for operation in float32, which
makes the two bit-identical; see the references for the bit layouts.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int8_t, int16_t
from cython.parallel cimport prange
from libc.string cimport memcpy

from abi._kernels._half cimport ld16, ld32, ldf32, f16_to_f32, bf16_to_f32
from abi._kernels._types cimport *
from abi.errors import UnsupportedTensorType

cdef extern from *:
    """
    /* The references round a*b, then a*b+c. Their products are exact for normal values,
       but the bit-exactness should not rest on that: no fused multiply-add here. */
    #if defined(__clang__)
    #pragma clang fp contract(off)
    #elif defined(__GNUC__)
    #pragma GCC optimize ("fp-contract=off")
    #endif
    """

cdef extern from *:
    """
    static const int8_t abi_iq4nl_kvalues[16] = {
        -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
    """
    const int8_t IQ4NL_KVALUES "abi_iq4nl_kvalues"[16]

# generated from the gguf package by tools/make_iq_tables.py
cdef extern from "iq_tables.h":
    const uint64_t IQ2XXS_GRID "abi_iq2xxs_grid"[256]
    const uint64_t IQ2XS_GRID "abi_iq2xs_grid"[512]
    const uint64_t IQ2S_GRID "abi_iq2s_grid"[1024]
    const uint32_t IQ3XXS_GRID "abi_iq3xxs_grid"[256]
    const uint32_t IQ3S_GRID "abi_iq3s_grid"[512]
    const uint64_t IQ1S_GRID "abi_iq1s_grid"[2048]
    const uint8_t KSIGNS "abi_ksigns_iq2xs"[128]
    const int8_t KVALUES_MXFP4 "abi_kvalues_mxfp4"[16]
    const float IQ1S_DELTA "ABI_IQ1S_DELTA"


# --- float types ----------------------------------------------------------------------

cdef void _dq_f32(const uint8_t* s, float* y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        y[i] = ldf32(s + 4 * i)

cdef void _dq_f16(const uint8_t* s, float* y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        y[i] = f16_to_f32(ld16(s + 2 * i))

cdef void _dq_bf16(const uint8_t* s, float* y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        y[i] = bf16_to_f32(ld16(s + 2 * i))


# --- 32-element blocks ------------------------------------------------------------------

cdef void _dq_q4_0(const uint8_t* b, float* y, Py_ssize_t nb) noexcept nogil:
    cdef Py_ssize_t k
    cdef int j
    cdef float d
    for k in range(nb):
        d = f16_to_f32(ld16(b))
        for j in range(16):
            y[j] = d * <float>(<int>(b[2 + j] & 15) - 8)
            y[j + 16] = d * <float>(<int>(b[2 + j] >> 4) - 8)
        b += 18
        y += 32

cdef void _dq_q4_1(const uint8_t* b, float* y, Py_ssize_t nb) noexcept nogil:
    cdef Py_ssize_t k
    cdef int j
    cdef float d, m
    for k in range(nb):
        d = f16_to_f32(ld16(b))
        m = f16_to_f32(ld16(b + 2))
        for j in range(16):
            y[j] = d * <float>(b[4 + j] & 15) + m
            y[j + 16] = d * <float>(b[4 + j] >> 4) + m
        b += 20
        y += 32

cdef void _dq_q5_0(const uint8_t* b, float* y, Py_ssize_t nb) noexcept nogil:
    cdef Py_ssize_t k
    cdef int j
    cdef float d
    cdef uint32_t qh
    for k in range(nb):
        d = f16_to_f32(ld16(b))
        qh = ld32(b + 2)
        for j in range(16):
            y[j] = d * <float>(<int>((b[6 + j] & 15) | (((qh >> j) & 1) << 4)) - 16)
            y[j + 16] = d * <float>(<int>((b[6 + j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - 16)
        b += 22
        y += 32

cdef void _dq_q5_1(const uint8_t* b, float* y, Py_ssize_t nb) noexcept nogil:
    cdef Py_ssize_t k
    cdef int j
    cdef float d, m
    cdef uint32_t qh
    for k in range(nb):
        d = f16_to_f32(ld16(b))
        m = f16_to_f32(ld16(b + 2))
        qh = ld32(b + 4)
        for j in range(16):
            y[j] = d * <float>((b[8 + j] & 15) | (((qh >> j) & 1) << 4)) + m
            y[j + 16] = d * <float>((b[8 + j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) + m
        b += 24
        y += 32

cdef void _dq_q8_0(const uint8_t* b, float* y, Py_ssize_t nb) noexcept nogil:
    cdef Py_ssize_t k
    cdef int j
    cdef float d
    for k in range(nb):
        d = f16_to_f32(ld16(b))
        for j in range(32):
            y[j] = d * <float>(<const int8_t*>(b + 2))[j]
        b += 34
        y += 32

cdef void _dq_q8_1(const uint8_t* b, float* y, Py_ssize_t nb) noexcept nogil:
    cdef Py_ssize_t k
    cdef int j
    cdef float d
    for k in range(nb):
        d = f16_to_f32(ld16(b))
        for j in range(32):
            y[j] = d * <float>(<const int8_t*>(b + 4))[j]
        b += 36
        y += 32

cdef void _dq_iq4_nl(const uint8_t* b, float* y, Py_ssize_t nb) noexcept nogil:
    cdef Py_ssize_t k
    cdef int j
    cdef float d
    for k in range(nb):
        d = f16_to_f32(ld16(b))
        for j in range(16):
            y[j] = d * <float>IQ4NL_KVALUES[b[2 + j] & 15]
            y[j + 16] = d * <float>IQ4NL_KVALUES[b[2 + j] >> 4]
        b += 18
        y += 32


# --- 256-element super-blocks -----------------------------------------------------------

cdef inline void _scale_min_k4(const uint8_t* s, int j, uint8_t* sc, uint8_t* mn) noexcept nogil:
    if j < 4:
        sc[0] = s[j] & 63
        mn[0] = s[j + 4] & 63
    else:
        sc[0] = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4)
        mn[0] = (s[j + 4] >> 4) | ((s[j] >> 6) << 4)

cdef void _dq_q2_k(const uint8_t* b, float* y, Py_ssize_t nb) noexcept nogil:
    cdef Py_ssize_t k
    cdef int h, s, i, j, base
    cdef float d, dmin, dl, ml
    for k in range(nb):
        d = f16_to_f32(ld16(b + 80))
        dmin = f16_to_f32(ld16(b + 82))
        for h in range(2):
            for s in range(4):
                base = 128 * h + 32 * s
                for j in range(2):        # two sub-blocks of 16 share this 32-byte row of qs
                    dl = d * <float>(b[(base >> 4) + j] & 15)
                    ml = dmin * <float>(b[(base >> 4) + j] >> 4)
                    for i in range(16 * j, 16 * j + 16):
                        y[base + i] = dl * <float>((b[16 + 32 * h + i] >> (2 * s)) & 3) - ml
        b += 84
        y += 256


cdef void _dq_q3_k(const uint8_t* b, float* y, Py_ssize_t nb) noexcept nogil:
    cdef Py_ssize_t k
    cdef int h, s, i, j, e, lo, hi
    cdef float d
    cdef float dl[16]
    cdef const uint8_t* sc
    for k in range(nb):
        d = f16_to_f32(ld16(b + 108))
        sc = b + 96
        for j in range(16):
            lo = (sc[j] & 15) if j < 8 else (sc[j - 8] >> 4)
            hi = (sc[8 + (j & 3)] >> (2 * (j >> 2))) & 3
            dl[j] = d * <float>(<int>(lo | (hi << 4)) - 32)
        for h in range(2):
            for s in range(4):
                for i in range(32):
                    e = 128 * h + 32 * s + i
                    lo = (b[32 + 32 * h + i] >> (2 * s)) & 3
                    hi = (b[e & 31] >> (e >> 5)) & 1
                    y[e] = dl[e >> 4] * <float>(lo - 4 * (1 - hi))
        b += 110
        y += 256

cdef void _dq_q45_k(const uint8_t* b, float* y, Py_ssize_t nb, bint five) noexcept nogil:
    cdef Py_ssize_t k
    cdef int c, i, j, q
    cdef float d, dmin, dl, ml
    cdef uint8_t sc, mn
    cdef const uint8_t* qs
    cdef Py_ssize_t step = 176 if five else 144
    for k in range(nb):
        d = f16_to_f32(ld16(b))
        dmin = f16_to_f32(ld16(b + 2))
        qs = b + (48 if five else 16)
        for j in range(8):
            _scale_min_k4(b + 4, j, &sc, &mn)
            dl = d * <float>sc
            ml = dmin * <float>mn
            c = j >> 1
            for i in range(32):
                q = (qs[32 * c + i] >> (4 * (j & 1))) & 15
                if five:
                    q = q | (((b[16 + i] >> j) & 1) << 4)
                y[32 * j + i] = dl * <float>q - ml
        b += step
        y += 256

cdef void _dq_q6_k(const uint8_t* b, float* y, Py_ssize_t nb) noexcept nogil:
    cdef Py_ssize_t k
    cdef int h, r, q
    cdef float d
    cdef float dl[16]
    for k in range(nb):
        d = f16_to_f32(ld16(b + 208))
        for r in range(16):
            dl[r] = d * <float>(<const int8_t*>(b + 192))[r]
        for h in range(2):
            for r in range(128):
                q = ((b[64 * h + (r & 63)] >> (4 * (r >> 6))) & 15) \
                    | (((b[128 + 32 * h + (r & 31)] >> (2 * (r >> 5))) & 3) << 4)
                y[128 * h + r] = dl[(128 * h + r) >> 4] * <float>(q - 32)
        b += 210
        y += 256

cdef void _dq_q8_k(const uint8_t* b, float* y, Py_ssize_t nb) noexcept nogil:
    cdef Py_ssize_t k
    cdef int i
    cdef float d
    for k in range(nb):
        d = ldf32(b)
        for i in range(256):
            y[i] = d * <float>(<const int8_t*>(b + 4))[i]
        b += 292
        y += 256

cdef void _dq_iq4_xs(const uint8_t* b, float* y, Py_ssize_t nb) noexcept nogil:
    cdef Py_ssize_t k
    cdef int j, i, ls
    cdef float d, dl
    cdef uint16_t sh
    for k in range(nb):
        d = f16_to_f32(ld16(b))
        sh = ld16(b + 2)
        for j in range(8):
            ls = <int>(((b[4 + (j >> 1)] >> (4 * (j & 1))) & 15) | (((sh >> (2 * j)) & 3) << 4)) - 32
            dl = d * <float>ls
            for i in range(16):
                y[32 * j + i] = dl * <float>IQ4NL_KVALUES[b[8 + 16 * j + i] & 15]
                y[32 * j + i + 16] = dl * <float>IQ4NL_KVALUES[b[8 + 16 * j + i] >> 4]
        b += 136
        y += 256


# --- lattice (IQ) types, ternary types, MXFP4 -------------------------------------------------
# Grid rows are packed little-endian: element j of a row is (row >> 8 j) & 0xff.

cdef inline float _signed(float v, uint32_t bits, int j) noexcept nogil:
    return v * (<float>-1.0 if (bits >> j) & 1 else <float>1.0)

cdef inline void _iq2_row(float* y, float db, uint64_t row, uint32_t sbits) noexcept nogil:
    cdef int j
    for j in range(8):
        y[j] = _signed(db * <float>(<uint8_t>(row >> (8 * j))), sbits, j)

cdef void _dq_iq2_xxs(const uint8_t* b, float* y, Py_ssize_t nb) noexcept nogil:
    cdef Py_ssize_t k
    cdef int g, l
    cdef float d, db
    cdef uint32_t aux
    cdef const uint8_t* q
    for k in range(nb):
        d = f16_to_f32(ld16(b))
        for g in range(8):
            q = b + 2 + 8 * g
            aux = ld32(q + 4)
            db = d * (<float>0.5 + <float>(aux >> 28)) * <float>0.25
            for l in range(4):
                _iq2_row(y + 32 * g + 8 * l, db, IQ2XXS_GRID[q[l]], KSIGNS[(aux >> (7 * l)) & 127])
        b += 66
        y += 256

cdef void _dq_iq2_xs(const uint8_t* b, float* y, Py_ssize_t nb) noexcept nogil:
    cdef Py_ssize_t k
    cdef int l
    cdef float d, db
    cdef uint16_t q
    for k in range(nb):
        d = f16_to_f32(ld16(b))
        for l in range(32):
            q = ld16(b + 2 + 2 * l)
            db = d * (<float>0.5 + <float>((b[66 + (l >> 2)] >> (4 * ((l >> 1) & 1))) & 15)) * <float>0.25
            _iq2_row(y + 8 * l, db, IQ2XS_GRID[q & 511], KSIGNS[q >> 9])
        b += 74
        y += 256

cdef void _dq_iq2_s(const uint8_t* b, float* y, Py_ssize_t nb) noexcept nogil:
    cdef Py_ssize_t k
    cdef int l, idx
    cdef float d, db
    for k in range(nb):
        d = f16_to_f32(ld16(b))
        for l in range(32):
            idx = b[2 + l] | (((b[66 + (l >> 2)] >> (2 * (l & 3))) & 3) << 8)
            db = d * (<float>0.5 + <float>((b[74 + (l >> 2)] >> (4 * ((l >> 1) & 1))) & 15)) * <float>0.25
            _iq2_row(y + 8 * l, db, IQ2S_GRID[idx], b[34 + l])
        b += 82
        y += 256

cdef void _dq_iq3_xxs(const uint8_t* b, float* y, Py_ssize_t nb) noexcept nogil:
    cdef Py_ssize_t k
    cdef int g, l, j
    cdef float d, db
    cdef uint32_t aux, sbits, row
    for k in range(nb):
        d = f16_to_f32(ld16(b))
        for g in range(8):
            aux = ld32(b + 66 + 4 * g)
            db = d * (<float>0.5 + <float>(aux >> 28)) * <float>0.5
            for l in range(8):        # rows of 4; a sign byte covers two rows
                row = IQ3XXS_GRID[b[2 + 8 * g + l]]
                sbits = KSIGNS[(aux >> (7 * (l >> 1))) & 127] >> (4 * (l & 1))
                for j in range(4):
                    y[32 * g + 4 * l + j] = _signed(db * <float>(<uint8_t>(row >> (8 * j))), sbits, j)
        b += 98
        y += 256

cdef void _dq_iq3_s(const uint8_t* b, float* y, Py_ssize_t nb) noexcept nogil:
    cdef Py_ssize_t k
    cdef int g, l, j, idx
    cdef float d, db
    cdef uint32_t row
    for k in range(nb):
        d = f16_to_f32(ld16(b))
        for g in range(8):
            db = d * <float>(1 + 2 * ((b[106 + (g >> 1)] >> (4 * (g & 1))) & 15))
            for l in range(8):
                idx = b[2 + 8 * g + l] | (((b[66 + g] >> l) & 1) << 8)
                row = IQ3S_GRID[idx]
                for j in range(4):
                    y[32 * g + 4 * l + j] = _signed(db * <float>(<uint8_t>(row >> (8 * j))),
                                                    b[74 + 4 * g + (l >> 1)], 4 * (l & 1) + j)
        b += 110
        y += 256

cdef inline void _iq1_row(float* y, float dl, uint64_t row, float delta) noexcept nogil:
    cdef int j
    for j in range(8):
        y[j] = dl * (<float>(<int8_t>(<uint8_t>(row >> (8 * j)))) + delta)

cdef void _dq_iq1_s(const uint8_t* b, float* y, Py_ssize_t nb) noexcept nogil:
    cdef Py_ssize_t k
    cdef int g, l, idx
    cdef float d, dl, delta
    cdef uint16_t qh
    for k in range(nb):
        d = f16_to_f32(ld16(b))
        for g in range(8):
            qh = ld16(b + 34 + 2 * g)
            dl = d * <float>(2 * ((qh >> 12) & 7) + 1)
            delta = -IQ1S_DELTA if qh & 0x8000 else IQ1S_DELTA
            for l in range(4):
                idx = b[2 + 4 * g + l] | (((qh >> (3 * l)) & 7) << 8)
                _iq1_row(y + 32 * g + 8 * l, dl, IQ1S_GRID[idx], delta)
        b += 50
        y += 256

cdef void _dq_iq1_m(const uint8_t* b, float* y, Py_ssize_t nb) noexcept nogil:
    cdef Py_ssize_t k
    cdef int r, nib, idx, s
    cdef float d, dl, delta
    cdef uint16_t sc0, sc1, sc2, sc3, s16
    for k in range(nb):
        sc0 = ld16(b + 48)
        sc1 = ld16(b + 50)
        sc2 = ld16(b + 52)
        sc3 = ld16(b + 54)
        # the f16 scale is spread over the top nibbles of the four scale words
        d = f16_to_f32(<uint16_t>((sc0 >> 12) | ((sc1 >> 8) & 0x00F0) | ((sc2 >> 4) & 0x0F00) | (sc3 & 0xF000)))
        for r in range(32):
            s16 = ld16(b + 48 + 2 * (r >> 3))
            s = (s16 >> (3 * ((r >> 1) & 3))) & 7
            dl = d * <float>(2 * s + 1)
            nib = (b[32 + (r >> 1)] >> (4 * (r & 1))) & 15
            idx = b[r] | ((nib & 7) << 8)
            delta = -IQ1S_DELTA if nib & 8 else IQ1S_DELTA
            _iq1_row(y + 8 * r, dl, IQ1S_GRID[idx], delta)
        b += 56
        y += 256

cdef extern from *:
    """
    static const uint8_t abi_pow3[5] = {1, 3, 9, 27, 81};
    """
    const uint8_t POW3 "abi_pow3"[5]

cdef inline float _trit(uint8_t byte, int n) noexcept nogil:
    # digit n of a byte holding five base-3 digits as a fraction of 256: the product wraps
    cdef uint8_t q = <uint8_t>(byte * POW3[n])
    return <float>(<int>((<uint16_t>q * 3) >> 8) - 1)

cdef void _dq_tq1_0(const uint8_t* b, float* y, Py_ssize_t nb) noexcept nogil:
    cdef Py_ssize_t k
    cdef int n, i
    cdef float d
    for k in range(nb):
        d = f16_to_f32(ld16(b + 52))
        for n in range(5):
            for i in range(32):
                y[32 * n + i] = d * _trit(b[i], n)
            for i in range(16):
                y[160 + 16 * n + i] = d * _trit(b[32 + i], n)
        for n in range(4):
            for i in range(4):
                y[240 + 4 * n + i] = d * _trit(b[48 + i], n)
        b += 54
        y += 256

cdef void _dq_tq2_0(const uint8_t* b, float* y, Py_ssize_t nb) noexcept nogil:
    cdef Py_ssize_t k
    cdef int h, s, i
    cdef float d
    for k in range(nb):
        d = f16_to_f32(ld16(b + 64))
        for h in range(2):
            for s in range(4):
                for i in range(32):
                    y[128 * h + 32 * s + i] = d * <float>(<int>((b[32 * h + i] >> (2 * s)) & 3) - 1)
        b += 66
        y += 256

cdef inline float e8m0_half(uint8_t e) noexcept nogil:
    # 2^(e - 128): e = 0, 1 are subnormal (0x00200000 << e); never inf or nan
    cdef uint32_t bits = (<uint32_t>0x00200000 << e) if e < 2 else (<uint32_t>(e - 1) << 23)
    cdef float f
    memcpy(&f, &bits, 4)
    return f

cdef void _dq_mxfp4(const uint8_t* b, float* y, Py_ssize_t nb) noexcept nogil:
    cdef Py_ssize_t k
    cdef int i
    cdef float h
    for k in range(nb):
        h = e8m0_half(b[0])
        for i in range(16):
            y[i] = h * <float>KVALUES_MXFP4[b[1 + i] & 15]
            y[i + 16] = h * <float>KVALUES_MXFP4[b[1 + i] >> 4]
        b += 17
        y += 32


cdef int dequantize_blocks(int t, const uint8_t* src, float* dst, Py_ssize_t nb) noexcept nogil:
    if t == T_F32:
        _dq_f32(src, dst, nb)
    elif t == T_F16:
        _dq_f16(src, dst, nb)
    elif t == T_BF16:
        _dq_bf16(src, dst, nb)
    elif t == T_Q4_0:
        _dq_q4_0(src, dst, nb)
    elif t == T_Q4_1:
        _dq_q4_1(src, dst, nb)
    elif t == T_Q5_0:
        _dq_q5_0(src, dst, nb)
    elif t == T_Q5_1:
        _dq_q5_1(src, dst, nb)
    elif t == T_Q8_0:
        _dq_q8_0(src, dst, nb)
    elif t == T_Q8_1:
        _dq_q8_1(src, dst, nb)
    elif t == T_IQ4_NL:
        _dq_iq4_nl(src, dst, nb)
    elif t == T_Q2_K:
        _dq_q2_k(src, dst, nb)
    elif t == T_Q3_K:
        _dq_q3_k(src, dst, nb)
    elif t == T_Q4_K:
        _dq_q45_k(src, dst, nb, False)
    elif t == T_Q5_K:
        _dq_q45_k(src, dst, nb, True)
    elif t == T_Q6_K:
        _dq_q6_k(src, dst, nb)
    elif t == T_Q8_K:
        _dq_q8_k(src, dst, nb)
    elif t == T_IQ4_XS:
        _dq_iq4_xs(src, dst, nb)
    elif t == T_IQ2_XXS:
        _dq_iq2_xxs(src, dst, nb)
    elif t == T_IQ2_XS:
        _dq_iq2_xs(src, dst, nb)
    elif t == T_IQ2_S:
        _dq_iq2_s(src, dst, nb)
    elif t == T_IQ3_XXS:
        _dq_iq3_xxs(src, dst, nb)
    elif t == T_IQ3_S:
        _dq_iq3_s(src, dst, nb)
    elif t == T_IQ1_S:
        _dq_iq1_s(src, dst, nb)
    elif t == T_IQ1_M:
        _dq_iq1_m(src, dst, nb)
    elif t == T_TQ1_0:
        _dq_tq1_0(src, dst, nb)
    elif t == T_TQ2_0:
        _dq_tq2_0(src, dst, nb)
    elif t == T_MXFP4:
        _dq_mxfp4(src, dst, nb)
    else:
        return -1
    return 0


def dequantize_into(const uint8_t[::1] raw, int ggml_type, Py_ssize_t block_size,
                    Py_ssize_t type_size, float[::1] out, int n_threads=1):
    """Dequantise all of ``raw`` (whole blocks) into ``out``; sizes are checked by the caller
    (abi._kernels.dequantize). Large tensors are split in chunks of blocks over threads."""
    cdef Py_ssize_t nb = raw.shape[0] // type_size
    cdef Py_ssize_t chunk = max(1, (1 << 16) // block_size)   # 256 KiB of float32 per task
    cdef Py_ssize_t n_chunks = (nb + chunk - 1) // chunk
    cdef Py_ssize_t c, start, count
    if dequantize_blocks(ggml_type, NULL, NULL, 0) != 0:   # zero blocks: only the type is checked
        raise UnsupportedTensorType(f"no kernel for GGML type id {ggml_type}")
    if nb * type_size != raw.shape[0] or out.shape[0] != nb * block_size:
        raise ValueError("dequantize_into: raw/out sizes do not match whole blocks")
    if nb == 0:
        return
    if n_chunks == 1 or n_threads <= 1:
        with nogil:
            dequantize_blocks(ggml_type, &raw[0], &out[0], nb)
    else:
        for c in prange(n_chunks, nogil=True, num_threads=n_threads, schedule="static"):
            start = c * chunk
            count = min(chunk, nb - start)
            dequantize_blocks(ggml_type, &raw[0] + start * type_size, &out[0] + start * block_size, count)


def f16_fields_nonfinite(const uint8_t[::1] raw, Py_ssize_t type_size, tuple offsets,
                         uint8_t[::1] out, int n_threads=1):
    """out[i] = 1 where block i of ``raw`` (``type_size`` bytes each) has a float16 field
    at one of ``offsets`` (one or two byte offsets) whose exponent bits are all set (NaN or
    Inf), else 0: the scan of abi._kernels.finite in one pass, split over threads."""
    cdef Py_ssize_t nb = raw.shape[0] // type_size, i, o0, o1
    if not 1 <= len(offsets) <= 2:
        raise ValueError("f16_fields_nonfinite: one or two offsets")
    o0, o1 = offsets[0], offsets[len(offsets) - 1]
    if (nb * type_size != raw.shape[0] or out.shape[0] != nb
            or min(o0, o1) < 0 or max(o0, o1) + 2 > type_size):
        raise ValueError("f16_fields_nonfinite: sizes or offsets do not match whole blocks")
    if nb == 0:
        return
    cdef const uint8_t* b = &raw[0]
    cdef int nt = max(1, n_threads) if nb >= (1 << 16) else 1   # small tensors: no thread start-up
    for i in prange(nb, nogil=True, num_threads=nt, schedule="static"):
        out[i] = ((ld16(b + i * type_size + o0) & 0x7C00) == 0x7C00) | \
                 ((ld16(b + i * type_size + o1) & 0x7C00) == 0x7C00)
