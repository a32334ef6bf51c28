"""Quantisation from float32: the Cython twins of the quantisers in ``ref_*.py``.

Each function mirrors its numpy reference operation for operation in float32 (see there
for the algorithms and bit layouts), so the two agree bit for bit; for Q4_0 .. Q8_0 both
also agree with ``gguf.quants.quantize``.
"""
from libc.math cimport fabsf, truncf, roundf, rintf, ceilf
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int8_t, int16_t, int32_t
from libc.string cimport memset
from cython.parallel cimport prange

from abi._kernels._half cimport (st16, stf32, f16_to_f32, f32_to_f16, f32_to_bf16,
                                 f16_to_f32_soft, f32_to_f16_soft)
from abi._kernels._types cimport *
from abi.errors import UnsupportedTensorType

cdef extern from *:
    """
    /* Keep x*a+b rounded twice, as numpy does (see dequant.pyx). */
    #if defined(__clang__)
    #pragma clang fp contract(off)
    #elif defined(__GNUC__)
    #pragma GCC optimize ("fp-contract=off")
    #endif
    """

cdef extern from *:
    """
    #if defined(__AVX2__)
    #include <immintrin.h>
    #define ABI_Q8_SIMD 1
    /* max |x| over n floats (n a multiple of 8) */
    static inline float abi_absmax_simd(const float* x, int n) {
        const __m256 sign = _mm256_set1_ps(-0.0f);
        __m256 m = _mm256_setzero_ps();
        for (int j = 0; j < n; j += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)));
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        return _mm_cvtss_f32(h);
    }
    /* q = roundf(x * inv) (ties away from zero, from exact trunc / subtract / compare);
       returns sum(q). Same bits as the scalar loop for finite x. */
    static inline int abi_q8_round_simd(const float* x, int n, float inv, int8_t* q) {
        const __m256 vinv = _mm256_set1_ps(inv), half = _mm256_set1_ps(0.5f);
        const __m256 sign = _mm256_set1_ps(-0.0f), one = _mm256_set1_ps(1.0f);
        __m256i sum = _mm256_setzero_si256();
        for (int j = 0; j < n; j += 8) {
            __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + j), vinv);
            __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            __m256 up = _mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_sub_ps(v, t)), half, _CMP_GE_OQ);
            __m256 away = _mm256_and_ps(up, _mm256_or_ps(_mm256_and_ps(v, sign), one));
            __m256i qi = _mm256_cvttps_epi32(_mm256_add_ps(t, away));
            sum = _mm256_add_epi32(sum, qi);
            __m128i p16 = _mm_packs_epi32(_mm256_castsi256_si128(qi), _mm256_extracti128_si256(qi, 1));
            _mm_storel_epi64((__m128i*)(q + j), _mm_packs_epi16(p16, p16));
        }
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
        return _mm_cvtsi128_si32(s4);
    }
    #else
    #define ABI_Q8_SIMD 0
    static inline float abi_absmax_simd(const float* x, int n) { return 0.0f; }
    static inline int abi_q8_round_simd(const float* x, int n, float inv, int8_t* q) { return 0; }
    #endif
    """
    bint Q8_SIMD "ABI_Q8_SIMD"
    float _absmax_simd "abi_absmax_simd"(const float* x, int n) noexcept nogil
    int _q8_round_simd "abi_q8_round_simd"(const float* x, int n, float inv, int8_t* q) noexcept nogil


cdef inline uint8_t _trunc_clip(float v, int top) noexcept nogil:
    """trunc(v) clipped to [0, top]; NaN -> 0."""
    if v >= <float>top:
        return <uint8_t>top
    if v > 0:
        return <uint8_t><int>v
    return 0

cdef inline float _inverse(float d) noexcept nogil:
    return <float>0 if d == 0 else <float>1 / d

cdef inline float _signed_absmax(const float* x, int n) noexcept nogil:
    cdef float amax = 0, mx = 0, a
    cdef int j
    for j in range(n):
        a = fabsf(x[j])
        if a > amax:
            amax = a
            mx = x[j]
    return mx

cdef inline float _absmax(const float* x, int n) noexcept nogil:
    cdef float amax = 0, a
    cdef int j
    for j in range(n):
        a = fabsf(x[j])
        amax = a if a > amax else amax
    return amax

cdef inline void _min_max(const float* x, int n, float* lo, float* hi) noexcept nogil:
    cdef float a = x[0], b = x[0]
    cdef int j
    for j in range(1, n):
        a = x[j] if x[j] < a else a
        b = x[j] if x[j] > b else b
    lo[0] = a
    hi[0] = b

cdef inline uint16_t _f16_ceil(float v) noexcept nogil:
    """An f16 no smaller than v >= 0: nearest-even, stepped up one if it fell below."""
    cdef uint16_t h = f32_to_f16(v)
    if f16_to_f32(h) < v:
        h += 1
    return h


# --- 32-element blocks ------------------------------------------------------------------

cdef inline void _pack_nibbles(const uint8_t* q, uint8_t* out) noexcept nogil:
    cdef int j
    for j in range(16):
        out[j] = (q[j] & 15) | (q[j + 16] << 4)

cdef inline void _pack_fifth_bits(const uint8_t* q, uint8_t* out) noexcept nogil:
    cdef uint32_t qh = 0
    cdef int j
    for j in range(32):
        qh |= <uint32_t>(q[j] >> 4) << j
    for j in range(4):
        out[j] = (qh >> (8 * j)) & 255

cdef void _q_q4_0(const float* x, uint8_t* y, Py_ssize_t nb) noexcept nogil:
    cdef Py_ssize_t k
    cdef int j
    cdef float d, inv
    cdef uint8_t q[32]
    for k in range(nb):
        d = _signed_absmax(x, 32) / <float>-8
        inv = _inverse(d)
        for j in range(32):
            q[j] = _trunc_clip(x[j] * inv + <float>8.5, 15)
        st16(y, f32_to_f16(d))
        _pack_nibbles(q, y + 2)
        x += 32
        y += 18

cdef void _q_q4_1(const float* x, uint8_t* y, Py_ssize_t nb) noexcept nogil:
    cdef Py_ssize_t k
    cdef int j
    cdef float lo, hi, d, inv
    cdef uint8_t q[32]
    for k in range(nb):
        _min_max(x, 32, &lo, &hi)
        d = (hi - lo) / <float>15
        inv = _inverse(d)
        for j in range(32):
            q[j] = _trunc_clip((x[j] - lo) * inv + <float>0.5, 15)
        st16(y, f32_to_f16(d))
        st16(y + 2, f32_to_f16(lo))
        _pack_nibbles(q, y + 4)
        x += 32
        y += 20

cdef void _q_q5_0(const float* x, uint8_t* y, Py_ssize_t nb) noexcept nogil:
    cdef Py_ssize_t k
    cdef int j
    cdef float d, inv
    cdef uint8_t q[32]
    for k in range(nb):
        d = _signed_absmax(x, 32) / <float>-16
        inv = _inverse(d)
        for j in range(32):
            q[j] = _trunc_clip(x[j] * inv + <float>16.5, 31)
        st16(y, f32_to_f16(d))
        _pack_fifth_bits(q, y + 2)
        _pack_nibbles(q, y + 6)
        x += 32
        y += 22

cdef void _q_q5_1(const float* x, uint8_t* y, Py_ssize_t nb) noexcept nogil:
    cdef Py_ssize_t k
    cdef int j
    cdef float lo, hi, d, inv
    cdef uint8_t q[32]
    for k in range(nb):
        _min_max(x, 32, &lo, &hi)
        d = (hi - lo) / <float>31
        inv = _inverse(d)
        for j in range(32):
            q[j] = _trunc_clip((x[j] - lo) * inv + <float>0.5, 31)
        st16(y, f32_to_f16(d))
        st16(y + 2, f32_to_f16(lo))
        _pack_fifth_bits(q, y + 4)
        _pack_nibbles(q, y + 8)
        x += 32
        y += 24

cdef inline int _q8_block(const float* x, int n, int8_t* q, float* d_out) noexcept nogil:
    """d = absmax / 127, q = round(x / d) ties away from zero; returns sum(q)."""
    cdef float d
    if Q8_SIMD:    # n is 32 or 256 here
        d = _absmax_simd(x, n) / <float>127
        d_out[0] = d
        return _q8_round_simd(x, n, _inverse(d), q)
    return _q8_block_portable(x, n, q, d_out)

cdef int _q8_block_portable(const float* x, int n, int8_t* q, float* d_out) noexcept nogil:
    cdef float d = _absmax(x, n) / <float>127
    cdef float inv = _inverse(d)
    cdef int j, s = 0, v
    for j in range(n):
        v = <int>roundf(x[j] * inv)
        q[j] = <int8_t>v
        s += v
    d_out[0] = d
    return s

cdef void quantize_row_q8_0(const float* x, uint8_t* y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t k
    cdef float d
    for k in range(n // 32):
        _q8_block(x, 32, <int8_t*>(y + 2), &d)
        st16(y, f32_to_f16(d))
        x += 32
        y += 34

cdef void quantize_row_q8_1(const float* x, uint8_t* y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t k
    cdef float d
    cdef int s
    for k in range(n // 32):
        s = _q8_block(x, 32, <int8_t*>(y + 4), &d)
        st16(y, f32_to_f16(d))
        st16(y + 2, f32_to_f16(d * <float>s))
        x += 32
        y += 36


# --- 256-element super-blocks -----------------------------------------------------------

cdef void quantize_row_q8_k(const float* x, uint8_t* y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t k
    cdef float d
    cdef int j, i, s
    cdef int8_t* q
    for k in range(n // 256):
        q = <int8_t*>(y + 4)
        _q8_block(x, 256, q, &d)
        stf32(y, d)
        for j in range(16):
            s = 0
            for i in range(16):
                s += q[16 * j + i]
            st16(y + 260 + 2 * j, <uint16_t><int16_t>s)
        x += 256
        y += 292

cdef void _q_q4_k(const float* x, uint8_t* y, Py_ssize_t nb) noexcept nogil:
    cdef Py_ssize_t k
    cdef int j, i
    cdef float neg_min[8]
    cdef float offset[8]
    cdef float need[8]
    cdef uint8_t sc[8]
    cdef uint8_t mc[8]
    cdef uint8_t q[32]
    cdef float lo, hi, top, dmin, d, s, v
    cdef uint16_t d_bits, dmin_bits
    for k in range(nb):
        top = 0
        for j in range(8):
            lo = 0
            for i in range(32):
                lo = x[32 * j + i] if x[32 * j + i] < lo else lo
            neg_min[j] = <float>0 - lo
            top = neg_min[j] if neg_min[j] > top else top
        dmin_bits = _f16_ceil(top / <float>63)
        dmin = f16_to_f32(dmin_bits)
        top = 0
        for j in range(8):
            mc[j] = <uint8_t>min(rintf(neg_min[j] / dmin), <float>63) if dmin > 0 else 0
            offset[j] = dmin * <float>mc[j]
            hi = x[32 * j]
            for i in range(1, 32):
                hi = x[32 * j + i] if x[32 * j + i] > hi else hi
            v = (hi + offset[j]) / <float>15
            need[j] = v if v > 0 else <float>0
            top = need[j] if need[j] > top else top
        d_bits = _f16_ceil(top / <float>63)
        d = f16_to_f32(d_bits)
        st16(y, d_bits)
        st16(y + 2, dmin_bits)
        for j in range(8):
            sc[j] = <uint8_t>min(ceilf(need[j] / d), <float>63) if d > 0 else 0
            s = d * <float>sc[j]
            for i in range(32):
                if s > 0:
                    v = rintf((x[32 * j + i] + offset[j]) / s)
                    q[i] = 0 if v < 0 else (15 if v > 15 else <uint8_t>v)
                else:
                    q[i] = 0
            for i in range(32):   # sub-block 2c in the low nibbles, 2c + 1 in the high
                if j & 1:
                    y[16 + 32 * (j >> 1) + i] |= q[i] << 4
                else:
                    y[16 + 32 * (j >> 1) + i] = q[i]
        for j in range(4):
            y[4 + j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6)
            y[8 + j] = (mc[j] & 63) | ((mc[j + 4] >> 4) << 6)
            y[12 + j] = (sc[j + 4] & 15) | ((mc[j + 4] & 15) << 4)
        x += 256
        y += 144

cdef void _q_q6_k(const float* x, uint8_t* y, Py_ssize_t nb) noexcept nogil:
    cdef Py_ssize_t k
    cdef int j, i, h, r
    cdef float need[16]
    cdef int8_t sc[16]
    cdef uint8_t q[256]
    cdef float top, d, s, v
    cdef uint16_t d_bits
    for k in range(nb):
        top = 0
        for j in range(16):
            need[j] = _absmax(x + 16 * j, 16) / <float>31
            top = need[j] if need[j] > top else top
        d_bits = _f16_ceil(top / <float>127)
        d = f16_to_f32(d_bits)
        for j in range(16):
            sc[j] = <int8_t>min(ceilf(need[j] / d), <float>127) if d > 0 else 0
            s = d * <float>sc[j]
            for i in range(16):
                if s > 0:
                    v = rintf(x[16 * j + i] / s)
                    v = <float>-32 if v < -32 else (<float>31 if v > 31 else v)
                    q[16 * j + i] = <uint8_t>(<int>v + 32)
                else:
                    q[16 * j + i] = 32
        memset(y + 128, 0, 64)
        for h in range(2):
            for r in range(64):
                y[64 * h + r] = (q[128 * h + r] & 15) | ((q[128 * h + r + 64] & 15) << 4)
            for r in range(128):
                y[128 + 32 * h + (r & 31)] |= (q[128 * h + r] >> 4) << (2 * (r >> 5))
        for j in range(16):
            y[192 + j] = <uint8_t>sc[j]
        st16(y + 208, d_bits)
        x += 256
        y += 210


# --- float types ------------------------------------------------------------------------

cdef void _q_f32(const float* x, uint8_t* y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        stf32(y + 4 * i, x[i])

cdef void _q_f16(const float* x, uint8_t* y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        st16(y + 2 * i, f32_to_f16(x[i]))

cdef void _q_bf16(const float* x, uint8_t* y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        st16(y + 2 * i, f32_to_bf16(x[i]))


cdef int quantize_blocks(int t, const float* x, uint8_t* y, Py_ssize_t nb) noexcept nogil:
    if t == T_F32:
        _q_f32(x, y, nb)
    elif t == T_F16:
        _q_f16(x, y, nb)
    elif t == T_BF16:
        _q_bf16(x, y, nb)
    elif t == T_Q4_0:
        _q_q4_0(x, y, nb)
    elif t == T_Q4_1:
        _q_q4_1(x, y, nb)
    elif t == T_Q5_0:
        _q_q5_0(x, y, nb)
    elif t == T_Q5_1:
        _q_q5_1(x, y, nb)
    elif t == T_Q8_0:
        quantize_row_q8_0(x, y, 32 * nb)
    elif t == T_Q8_1:
        quantize_row_q8_1(x, y, 32 * nb)
    elif t == T_Q4_K:
        _q_q4_k(x, y, nb)
    elif t == T_Q6_K:
        _q_q6_k(x, y, nb)
    elif t == T_Q8_K:
        quantize_row_q8_k(x, y, 256 * nb)
    else:
        return -1
    return 0


def quantize_into(const float[::1] x, int ggml_type, Py_ssize_t block_size,
                  Py_ssize_t type_size, uint8_t[::1] out, int n_threads=1):
    """Quantise all of ``x`` (whole blocks) into ``out``; the caller (abi._kernels.quantize)
    checks the type and sizes. Large inputs are split in chunks of blocks over threads."""
    cdef Py_ssize_t nb = x.shape[0] // block_size
    cdef Py_ssize_t chunk = max(1, (1 << 14) // block_size)
    cdef Py_ssize_t n_chunks = (nb + chunk - 1) // chunk
    cdef Py_ssize_t c, start
    if quantize_blocks(ggml_type, NULL, NULL, 0) != 0:     # zero blocks: only the type is checked
        raise UnsupportedTensorType(f"no kernel for GGML type id {ggml_type}")
    if nb * block_size != x.shape[0] or out.shape[0] != nb * type_size:
        raise ValueError("quantize_into: x/out sizes do not match whole blocks")
    if nb == 0:
        return
    if n_chunks == 1 or n_threads <= 1:
        with nogil:
            quantize_blocks(ggml_type, &x[0], &out[0], nb)
    else:
        for c in prange(n_chunks, nogil=True, num_threads=n_threads, schedule="static"):
            start = c * chunk
            quantize_blocks(ggml_type, &x[0] + start * block_size, &out[0] + start * type_size,
                            min(chunk, nb - start))


def _f16_soft_encode(const float[::1] x, uint16_t[::1] out):
    """Test hook: the portable f32 -> f16 conversion (used where F16C is missing)."""
    cdef Py_ssize_t i
    for i in range(x.shape[0]):
        out[i] = f32_to_f16_soft(x[i])


def _f16_soft_decode(const uint16_t[::1] h, float[::1] out):
    """Test hook: the portable f16 -> f32 conversion."""
    cdef Py_ssize_t i
    for i in range(h.shape[0]):
        out[i] = f16_to_f32_soft(h[i])


def _q8_portable(const float[::1] x, int block, int8_t[::1] q, float[::1] d):
    """Test hook: the portable Q8 block quantiser (d per block, q, returns the sums)."""
    cdef Py_ssize_t k
    sums = []
    for k in range(x.shape[0] // block):
        sums.append(_q8_block_portable(&x[k * block], block, &q[k * block], &d[k]))
    return sums
