"""Quantisation from float32: the Cython twins of the quantisers in ``ref_*.py``.

Each function mirrors its numpy reference operation for operation in float32 (see there
for the algorithms and bit layouts), so the two agree bit for bit; for Q4_0 .. Q8_0 both
also agree with ``gguf.quants.quantize``. The k-quants (Q3_K .. Q6_K) are llama.cpp's
searches (twins of ``ref_search.py``), with an imatrix for ``quantize_rows_into``.
"""
from libc.math cimport fabsf, truncf, roundf, rintf, sqrtf
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
    /* max |x| over n floats (n a multiple of 8), as the integer max of the bit patterns:
       it orders finite |x| as floats do and ranks Inf and NaN above them, so a non-finite
       input gives a non-finite scale instead of vanishing (a float max drops NaN lanes) */
    static inline float abi_absmax_simd(const float* x, int n) {
        const __m256i mag = _mm256_set1_epi32(0x7fffffff);
        __m256i m = _mm256_setzero_si256();
        for (int j = 0; j < n; j += 8)
            m = _mm256_max_epi32(m, _mm256_and_si256(mag, _mm256_castps_si256(_mm256_loadu_ps(x + j))));
        __m128i h = _mm_max_epi32(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
        h = _mm_max_epi32(h, _mm_shuffle_epi32(h, 0x4E));
        h = _mm_max_epi32(h, _mm_shuffle_epi32(h, 0xB1));
        return _mm_cvtss_f32(_mm_castsi128_ps(h));
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
    #include <math.h>
    #include <string.h>
    /* One Q8_K block as llama.cpp's quantize_row_q8_K makes it (the activations of its k-quant
       and IQ dot products): m = the first element of largest |x|, iscale = -127 / m,
       q = min(127, round-half-even(iscale * x)), d = 1 / iscale. The same integers as
       llama.cpp keep our products inside its noise on the low-bit types. */
    static inline void abi_q8_k_block(const float* x, int8_t* q, float* d_out) {
        float amax = 0.0f, m = 0.0f;
    #if ABI_Q8_SIMD
        /* the vector max, then the first lane holding it: the serial scan costs ~2x here */
        amax = abi_absmax_simd(x, 256);
        const __m256 sign = _mm256_set1_ps(-0.0f), va = _mm256_set1_ps(amax);
        for (int j = 0; amax > 0.0f && j < 256; j += 8) {
            int hit = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)), va, _CMP_EQ_OQ));
            if (hit) { m = x[j + __builtin_ctz(hit)]; break; }
        }
    #else
        for (int j = 0; j < 256; ++j) {
            float a = fabsf(x[j]);
            if (!(a <= amax)) { amax = a; m = x[j]; if (a != a) break; }  /* a NaN stops the scan */
        }
    #endif
        if (amax == 0.0f) { memset(q, 0, 256); *d_out = 0.0f; return; }
        if (!(amax <= 3.4028235e38f)) { memset(q, 0, 256); *d_out = NAN; return; }  /* NaN/Inf in: NaN out */
        const float iscale = -127.0f / m;
        for (int j = 0; j < 256; ++j) {
            float v = rintf(iscale * x[j]);
            q[j] = (int8_t)(v > 127.0f ? 127.0f : v);
        }
        *d_out = 1.0f / iscale;
    }
    """
    bint Q8_SIMD "ABI_Q8_SIMD"
    void _q8_k_block "abi_q8_k_block"(const float* x, int8_t* q, float* d_out) noexcept nogil
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
    """max |x|; NaN if any x is NaN (so the block's scale carries it to the product)."""
    cdef float amax = 0, a
    cdef int j
    for j in range(n):
        a = fabsf(x[j])
        amax = a if (a > amax or a != a) else amax
        if amax != amax:
            return amax
    return amax

cdef inline void _min_max(const float* x, int n, float* lo, float* hi) noexcept nogil:
    cdef float a = x[0], b = x[0]
    cdef int j
    for j in range(1, n):
        a = x[j] if x[j] < a else a
        b = x[j] if x[j] > b else b
    lo[0] = a
    hi[0] = b

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
    if Q8_SIMD:    # n is 32 here (Q8_0, Q8_1)
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
        _q8_k_block(x, q, &d)
        stf32(y, d)
        for j in range(16):
            s = 0
            for i in range(16):
                s += q[16 * j + i]
            st16(y + 260 + 2 * j, <uint16_t><int16_t>s)
        x += 256
        y += 292

# --- llama.cpp-family searches (twins of ref_search.py) --------------------------------
# Same float32 operations in the same order as the numpy reference (sums left to right,
# products left to right, fp-contract off): the two agree bit for bit.

cdef float GROUP_EPS = <float>1e-15     # a group whose largest |x| is below this is all zero

cdef inline float _rn(float v) noexcept nogil:
    """Round half to even (ggml's nearest_int) as a float."""
    return rintf(v)

cdef inline float _clampf(float v, float lo, float hi) noexcept nogil:
    return lo if v < lo else (hi if v > hi else v)

cdef float _make_qx(int n, int nmax, const float* x, uint8_t* L, const float* w) noexcept nogil:
    cdef float mx = 0, amax = 0, ax, iscale, sumlx, suml2, scale, best, l, fn = <float>nmax
    cdef float lo = <float>-nmax, hi = <float>(nmax - 1)
    cdef int i, k
    for i in range(n):
        ax = fabsf(x[i])
        if ax > amax:
            amax = ax
            mx = x[i]
    if amax < <float>GROUP_EPS:
        for i in range(n):
            L[i] = 0
        return 0
    iscale = -fn / mx
    sumlx = 0
    suml2 = 0
    for i in range(n):
        l = _clampf(_rn(iscale * x[i]), lo, hi)
        L[i] = <uint8_t>(<int>l + nmax)
        sumlx = sumlx + w[i] * x[i] * l
        suml2 = suml2 + w[i] * l * l
    scale = sumlx / suml2 if suml2 != 0 else <float>0
    best = scale * sumlx
    for k in range(-9, 10):
        if k == 0:
            continue
        iscale = -(fn + <float>0.1 * <float>k) / mx
        sumlx = 0
        suml2 = 0
        for i in range(n):
            l = _clampf(_rn(iscale * x[i]), lo, hi)
            sumlx = sumlx + w[i] * x[i] * l
            suml2 = suml2 + w[i] * l * l
        if suml2 > 0 and sumlx * sumlx > best * suml2:
            for i in range(n):
                L[i] = <uint8_t>(<int>_clampf(_rn(iscale * x[i]), lo, hi) + nmax)
            scale = sumlx / suml2
            best = scale * sumlx
    return scale

cdef float _make_q3(const float* x, uint8_t* L) noexcept nogil:
    """n = 16, nmax = 4, weights x^2, with the level-moving passes."""
    cdef float mx = 0, amax = 0, ax, iscale, sumlx = 0, suml2 = 0, w, slx, sl2, nl
    cdef float Lf[16]
    cdef int i, itry, changed
    for i in range(16):
        ax = fabsf(x[i])
        if ax > amax:
            amax = ax
            mx = x[i]
    if amax < <float>GROUP_EPS:
        for i in range(16):
            L[i] = 0
        return 0
    iscale = <float>-4 / mx
    for i in range(16):
        Lf[i] = _clampf(_rn(iscale * x[i]), -4, 3)
        w = x[i] * x[i]
        sumlx = sumlx + w * x[i] * Lf[i]
        suml2 = suml2 + w * Lf[i] * Lf[i]
    for itry in range(5):
        changed = 0
        for i in range(16):
            w = x[i] * x[i]
            slx = sumlx - w * x[i] * Lf[i]
            if slx > 0:
                sl2 = suml2 - w * Lf[i] * Lf[i]
                nl = _clampf(_rn(x[i] * sl2 / slx), -4, 3)
                if nl != Lf[i]:
                    slx = slx + w * x[i] * nl
                    sl2 = sl2 + w * nl * nl
                    if sl2 > 0 and slx * slx * suml2 > sumlx * sumlx * sl2:
                        Lf[i] = nl
                        sumlx = slx
                        suml2 = sl2
                        changed += 1
        if not changed:
            break
    for i in range(16):
        L[i] = <uint8_t>(<int>Lf[i] + 4)
    return sumlx / suml2 if suml2 > 0 else <float>0

cdef float _make_qkx(int n, int nmax, const float* x, const float* w, uint8_t* L, float* the_min,
                     float rmin, float rdelta, int nstep) noexcept nogil:
    cdef float mn = x[0], mx = x[0], sum_w = w[0], sum_x = w[0] * x[0], fn = <float>nmax
    cdef float iscale, scale, best, diff, l, sum_l, sum_l2, sum_xl, D, t_scale, t_min, cur
    cdef uint8_t La[32]
    cdef int i, k
    for i in range(1, n):
        mn = x[i] if x[i] < mn else mn
        mx = x[i] if x[i] > mx else mx
        sum_w = sum_w + w[i]
        sum_x = sum_x + w[i] * x[i]
    if mn > 0:
        mn = 0
    if mx <= mn:
        for i in range(n):
            L[i] = 0
        the_min[0] = -mn
        return 0
    iscale = fn / (mx - mn)
    scale = <float>1 / iscale
    best = 0
    for i in range(n):
        l = _clampf(_rn(iscale * (x[i] - mn)), 0, fn)
        L[i] = <uint8_t>l
        diff = scale * l + mn - x[i]
        best = best + w[i] * (diff * diff)
    for k in range(nstep + 1):
        iscale = (rmin + rdelta * <float>k + fn) / (mx - mn)
        sum_l = 0
        sum_l2 = 0
        sum_xl = 0
        for i in range(n):
            l = _clampf(_rn(iscale * (x[i] - mn)), 0, fn)
            La[i] = <uint8_t>l
            sum_l = sum_l + w[i] * l
            sum_l2 = sum_l2 + w[i] * l * l
            sum_xl = sum_xl + w[i] * l * x[i]
        D = sum_w * sum_l2 - sum_l * sum_l
        if D > 0:
            t_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            t_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            if t_min > 0:
                t_min = 0
                t_scale = sum_xl / sum_l2
            cur = 0
            for i in range(n):
                diff = t_scale * <float>La[i] + t_min - x[i]
                cur = cur + w[i] * (diff * diff)
            if cur < best:
                for i in range(n):
                    L[i] = La[i]
                best = cur
                scale = t_scale
                mn = t_min
    the_min[0] = -mn
    return scale

cdef float _make_qp(int n, int nmax, const float* x, uint8_t* L, const float* w) noexcept nogil:
    cdef float mx = 0, fn = <float>nmax, iscale, scale, best, diff, isk, sk, lk, mse
    cdef float sumlx, suml2, slx, sl2, nl, li
    cdef int i, k, itry, changed
    for i in range(n):
        mx = x[i] if x[i] > mx else mx
    if mx < <float>GROUP_EPS:
        for i in range(n):
            L[i] = 0
        return 0
    iscale = fn / mx
    for i in range(n):
        L[i] = <uint8_t>(<int>_rn(iscale * x[i]) & 255)
    scale = <float>1 / iscale
    best = 0
    for i in range(n):
        diff = x[i] - scale * <float>L[i]
        best = best + w[i] * diff * diff
    for k in range(-4, 5):
        if k == 0:
            continue
        isk = (<float>0.1 * <float>k + fn) / mx
        sk = <float>1 / isk
        mse = 0
        for i in range(n):
            lk = _rn(isk * x[i])
            lk = fn if lk > fn else lk
            diff = x[i] - sk * lk
            mse = mse + w[i] * diff * diff
        if mse < best:
            best = mse
            iscale = isk
    sumlx = 0
    suml2 = 0
    for i in range(n):
        lk = _rn(iscale * x[i])
        lk = fn if lk > fn else lk
        L[i] = <uint8_t>(<int>lk & 255)
        sumlx = sumlx + w[i] * x[i] * lk
        suml2 = suml2 + w[i] * lk * lk
    for itry in range(5):
        changed = 0
        for i in range(n):
            li = <float>L[i]
            slx = sumlx - w[i] * x[i] * li
            sl2 = suml2 - w[i] * li * li
            if slx > 0 and sl2 > 0:
                nl = _rn(x[i] * sl2 / slx)
                nl = fn if nl > fn else nl
                if nl != li:
                    slx = slx + w[i] * x[i] * nl
                    sl2 = sl2 + w[i] * nl * nl
                    if slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[i] = <uint8_t>(<int>nl & 255)
                        sumlx = slx
                        suml2 = sl2
                        changed += 1
        if not changed:
            break
    return sumlx / suml2 if suml2 > 0 else <float>0

cdef inline float _sigma2_k(const float* x) noexcept nogil:
    cdef float s = 0
    cdef int i
    for i in range(256):
        s = s + x[i] * x[i]
    return <float>2 * s / <float>256

cdef inline void _requant_group(const float* x, int n, float d, float dm, float lo, float hi,
                                int offset, uint8_t* L) noexcept nogil:
    cdef int i
    if d == 0:
        return
    for i in range(n):
        L[i] = <uint8_t>(<int>_clampf(_rn((x[i] + dm) / d), lo, hi) + offset)

cdef inline void _requant_sym(const float* x, int n, float d, float lo, float hi,
                              int offset, uint8_t* L) noexcept nogil:
    cdef int i
    if d == 0:
        return
    for i in range(n):
        L[i] = <uint8_t>(<int>_clampf(_rn(x[i] / d), lo, hi) + offset)

cdef void _s_q3_k(const float* x, uint8_t* y, Py_ssize_t nb, const float* qw) noexcept nogil:
    cdef Py_ssize_t b
    cdef int j, i, k
    cdef float scales[16]
    cdef float w[256]
    cdef float sw[16]
    cdef uint8_t L[256]
    cdef uint8_t Ls[16]
    cdef float ms, best, a, iscale, d, sigma2
    cdef uint16_t d_bits
    cdef uint8_t hi_bit
    for b in range(nb):
        if qw == NULL:
            best = 0
            ms = 0
            for j in range(16):
                scales[j] = _make_q3(x + 16 * j, L + 16 * j)
                a = fabsf(scales[j])
                if a > best:
                    best = a
                    ms = scales[j]
            if ms != 0:
                iscale = <float>-32 / ms
                for j in range(16):
                    Ls[j] = <uint8_t>(<int>_clampf(_rn(iscale * scales[j]), -32, 31) + 32)
                d = <float>1 / iscale
            else:
                for j in range(16):
                    Ls[j] = 0
                d = 0
        else:
            sigma2 = _sigma2_k(x)
            for i in range(256):
                w[i] = qw[i] * sqrtf(sigma2 + x[i] * x[i])
            for j in range(16):
                sw[j] = 0
                for i in range(16):
                    sw[j] = sw[j] + w[16 * j + i]
                scales[j] = _make_qx(16, 4, x + 16 * j, L + 16 * j, w + 16 * j)
            d = _make_qx(16, 32, scales, Ls, sw)
        d_bits = f32_to_f16(d)
        for j in range(16):
            _requant_sym(x + 16 * j, 16, f16_to_f32(d_bits) * <float>(<int>Ls[j] - 32), -4, 3, 4, L + 16 * j)
        memset(y, 0, 110)
        for j in range(256):
            if L[j] > 3:
                y[j % 32] |= <uint8_t>(1 << (j // 32))
                L[j] -= 4
        for k in range(2):
            for i in range(32):
                y[32 + 32 * k + i] = (L[128 * k + i] | (L[128 * k + i + 32] << 2)
                                      | (L[128 * k + i + 64] << 4) | (L[128 * k + i + 96] << 6))
        for j in range(16):
            if j < 8:
                y[96 + j] = Ls[j] & 15
            else:
                y[96 + j - 8] |= (Ls[j] & 15) << 4
            y[96 + 8 + j % 4] |= (Ls[j] >> 4) << (2 * (j // 4))
        st16(y + 108, d_bits)
        x += 256
        y += 110
        if qw != NULL:
            qw += 256

cdef void _s_k4(const float* x, uint8_t* y, Py_ssize_t nb, const float* qw, int nmax,
                float rmin, float rdelta, int nstep) noexcept nogil:
    """Q4_K (nmax 15) and Q5_K (nmax 31)."""
    cdef Py_ssize_t b
    cdef int j, i, k, l1, l2
    cdef float scales[8]
    cdef float mins[8]
    cdef float sw[8]
    cdef float w[256]
    cdef uint8_t L[256]
    cdef uint8_t sc[8]
    cdef uint8_t mc[8]
    cdef float s, av, ms, mm, inv_s, inv_m, d, dmin, sigma2
    cdef uint16_t d_bits, dmin_bits
    cdef bint five = nmax == 31
    cdef int tsize = 176 if five else 144
    for b in range(nb):
        if qw == NULL:
            for j in range(8):
                s = 0
                for i in range(32):
                    s = s + x[32 * j + i] * x[32 * j + i]
                av = sqrtf(s / <float>32)
                for i in range(32):
                    w[32 * j + i] = av + fabsf(x[32 * j + i])
                scales[j] = _make_qkx(32, nmax, x + 32 * j, w + 32 * j, L + 32 * j, &mins[j], rmin, rdelta, nstep)
            ms = 0
            mm = 0
            for j in range(8):
                ms = scales[j] if scales[j] > ms else ms
                mm = mins[j] if mins[j] > mm else mm
            inv_s = <float>63 / ms if ms > 0 else <float>0
            inv_m = <float>63 / mm if mm > 0 else <float>0
            for j in range(8):
                sc[j] = <uint8_t>(<int>_rn(inv_s * scales[j]) & 255)
                sc[j] = 63 if sc[j] > 63 else sc[j]
                mc[j] = <uint8_t>(<int>_rn(inv_m * mins[j]) & 255)
                mc[j] = 63 if mc[j] > 63 else mc[j]
            d = ms / <float>63
            dmin = mm / <float>63
        else:
            sigma2 = _sigma2_k(x)
            for i in range(256):
                w[i] = qw[i] * sqrtf(sigma2 + x[i] * x[i])
            for j in range(8):
                sw[j] = 0
                for i in range(32):
                    sw[j] = sw[j] + w[32 * j + i]
                scales[j] = _make_qkx(32, nmax, x + 32 * j, w + 32 * j, L + 32 * j, &mins[j], <float>-0.9, <float>0.05, 36)
            d = _make_qp(8, 63, scales, sc, sw)
            dmin = _make_qp(8, 63, mins, mc, sw)
            for j in range(8):
                sc[j] = 63 if sc[j] > 63 else sc[j]
                mc[j] = 63 if mc[j] > 63 else mc[j]
        d_bits = f32_to_f16(d)
        dmin_bits = f32_to_f16(dmin)
        for j in range(8):
            _requant_group(x + 32 * j, 32, f16_to_f32(d_bits) * <float>sc[j],
                           f16_to_f32(dmin_bits) * <float>mc[j], 0, <float>nmax, 0, L + 32 * j)
        st16(y, d_bits)
        st16(y + 2, dmin_bits)
        for j in range(4):
            y[4 + j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6)
            y[8 + j] = (mc[j] & 63) | ((mc[j + 4] >> 4) << 6)
            y[12 + j] = (sc[j + 4] & 15) | ((mc[j + 4] & 15) << 4)
        if five:
            memset(y + 16, 0, 32)
            for j in range(8):
                for i in range(32):
                    y[16 + i] |= (L[32 * j + i] >> 4) << j
            for k in range(4):
                for i in range(32):
                    y[48 + 32 * k + i] = (L[64 * k + i] & 15) | ((L[64 * k + 32 + i] & 15) << 4)
        else:
            for k in range(4):
                for i in range(32):
                    y[16 + 32 * k + i] = L[64 * k + i] | (L[64 * k + 32 + i] << 4)
        x += 256
        y += tsize
        if qw != NULL:
            qw += 256

cdef void _s_q6_k(const float* x, uint8_t* y, Py_ssize_t nb, const float* qw) noexcept nogil:
    cdef Py_ssize_t b
    cdef int j, i, h, r
    cdef float scales[16]
    cdef float w[256]
    cdef uint8_t L[256]
    cdef int8_t sc[16]
    cdef float best, ms, a, iscale, v
    cdef uint16_t d_bits
    for b in range(nb):
        for i in range(256):
            w[i] = x[i] * x[i] if qw == NULL else qw[i]
        best = 0
        ms = 0
        for j in range(16):
            scales[j] = _make_qx(16, 32, x + 16 * j, L + 16 * j, w + 16 * j)
            a = fabsf(scales[j])
            if a > best:
                best = a
                ms = scales[j]
        if best < <float>GROUP_EPS:
            memset(y, 0, 210)
        else:
            iscale = <float>-128 / ms
            d_bits = f32_to_f16(<float>1 / iscale)
            for j in range(16):
                v = _rn(iscale * scales[j])
                sc[j] = <int8_t>(<int>(<float>127 if v > 127 else v))
            for j in range(16):
                _requant_sym(x + 16 * j, 16, f16_to_f32(d_bits) * <float>sc[j], -32, 31, 32, L + 16 * j)
            memset(y + 128, 0, 64)
            for h in range(2):
                for r in range(64):
                    y[64 * h + r] = (L[128 * h + r] & 15) | ((L[128 * h + r + 64] & 15) << 4)
                for r in range(128):
                    y[128 + 32 * h + (r & 31)] |= (L[128 * h + r] >> 4) << (2 * (r >> 5))
            for j in range(16):
                y[192 + j] = <uint8_t>sc[j]
            st16(y + 208, d_bits)
        x += 256
        y += 210
        if qw != NULL:
            qw += 256

cdef void _s_legacy_row(int t, const float* x, uint8_t* y, Py_ssize_t n, const float* qw) noexcept nogil:
    """One row of Q4_0 / Q4_1 / Q5_0 / Q5_1 under an imatrix (sigma2 over the whole row)."""
    cdef float s = 0, sigma2, d, the_min
    cdef float w[32]
    cdef uint8_t L[32]
    cdef Py_ssize_t b, i
    cdef int j
    cdef uint32_t qh
    cdef bint five = t == T_Q5_0 or t == T_Q5_1
    cdef bint with_min = t == T_Q4_1 or t == T_Q5_1
    cdef int nmax = 16 if five else 8
    cdef uint8_t* o
    for i in range(n):
        s = s + x[i] * x[i]
    sigma2 = s / <float>n
    for b in range(n // 32):
        for j in range(32):
            w[j] = qw[j] * sqrtf(sigma2 + x[j] * x[j])
        o = y
        if with_min:
            d = _make_qkx(32, 2 * nmax - 1, x, w, L, &the_min, <float>-0.9, <float>0.05, 36)
            st16(o, f32_to_f16(d))
            st16(o + 2, f32_to_f16(-the_min))
            o += 4
        else:
            d = _make_qx(32, nmax, x, L, w)
            st16(o, f32_to_f16(d))
            o += 2
        if five:
            qh = 0
            for j in range(32):
                qh |= <uint32_t>(L[j] >> 4) << j
            for j in range(4):
                o[j] = (qh >> (8 * j)) & 255
            o += 4
        for j in range(16):
            o[j] = (L[j] & 15) | ((L[j + 16] & 15) << 4)
        x += 32
        qw += 32
        y = o + 16


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
    elif t == T_Q3_K:
        _s_q3_k(x, y, nb, NULL)
    elif t == T_Q4_K:
        _s_k4(x, y, nb, NULL, 15, <float>-1, <float>0.1, 20)
    elif t == T_Q5_K:
        _s_k4(x, y, nb, NULL, 31, <float>-0.5, <float>0.1, 15)
    elif t == T_Q6_K:
        _s_q6_k(x, y, nb, NULL)
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


cdef int quantize_row_search(int t, const float* x, uint8_t* y, Py_ssize_t n,
                             const float* qw) noexcept nogil:
    """One row of n values in llama.cpp's algorithm family (qw: n importance weights or NULL).
    Without qw the blocks are independent and this is quantize_blocks."""
    if qw == NULL:
        return quantize_blocks(t, x, y, n // block_size_of(t))
    if t == T_Q3_K:
        _s_q3_k(x, y, n // 256, qw)
    elif t == T_Q4_K:
        _s_k4(x, y, n // 256, qw, 15, <float>-1, <float>0.1, 20)
    elif t == T_Q5_K:
        _s_k4(x, y, n // 256, qw, 31, <float>-0.5, <float>0.1, 15)
    elif t == T_Q6_K:
        _s_q6_k(x, y, n // 256, qw)
    elif t == T_Q4_0 or t == T_Q4_1 or t == T_Q5_0 or t == T_Q5_1:
        _s_legacy_row(t, x, y, n, qw)
    else:
        return quantize_blocks(t, x, y, n // block_size_of(t))
    return 0


def quantize_rows_into(const float[:, ::1] x, int ggml_type, Py_ssize_t row_bytes, qw,
                       uint8_t[:, ::1] out, int n_threads=1):
    """Quantise each row of x into out (llama.cpp's algorithm family; qw: None or float32 of
    one weight per column). The caller (abi._kernels.quantize_rows) checks type and sizes."""
    cdef Py_ssize_t r, nrows = x.shape[0], n = x.shape[1]
    cdef const float[::1] w
    cdef const float* wp = NULL
    if quantize_row_search(ggml_type, NULL, NULL, 0, NULL) != 0:
        raise UnsupportedTensorType(f"no kernel for GGML type id {ggml_type}")
    if out.shape[0] != nrows or out.shape[1] != row_bytes:
        raise ValueError("quantize_rows_into: out does not match x")
    if qw is not None:
        w = qw
        if w.shape[0] != n:
            raise ValueError("quantize_rows_into: qw needs one weight per column")
        wp = &w[0]
    if nrows == 0 or n == 0:
        return
    with nogil:
        for r in prange(nrows, num_threads=max(1, n_threads), schedule="dynamic"):
            quantize_row_search(ggml_type, &x[r, 0], &out[r, 0], n, wp)
