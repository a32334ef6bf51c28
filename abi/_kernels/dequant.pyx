"""Dequantisation to float32: the Cython twins of ``ref_float``, ``ref_legacy``, ``ref_kquants``.

Each ``_dq_<type>`` mirrors its numpy reference operation for operation in float32, which
makes the two bit-identical; see the references for the bit layouts.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int8_t, int16_t
from cython.parallel cimport prange

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
