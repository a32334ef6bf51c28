# Row dot products of a quantised weight row with a quantised (or float) activation row, as
# inline C: AVX2 intrinsics (VNNI when the compiler targets it) with a portable scalar
# fallback that computes the same integers. Emitted into every module that cimports this.
# Integer sums are exact; the float combination (scales, accumulation) rounds in float32.
#
#   dot_<w>_<x>(w, x, nb): w = nb weight blocks, x = nb activation blocks, returns sum.
#   Q4_0's and Q5_0's take xd = quad_x(x, 34, nb) before nb: the activation's scales, read
#   once for a sweep of rows.
#   Activation formats: Q8_0 (Q4_0, Q5_0, Q8_0, IQ4_NL weights), Q8_1 (Q4_1, Q5_1),
#   Q8_K (k-quants, IQ4_XS).
from libc.stdint cimport uint8_t

from abi._kernels._half cimport f16_to_f32

cdef extern from *:
    """
    #ifndef ABI_QDOT_H
    #define ABI_QDOT_H
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>

    /* ---------------------------------------------------------------- shared helpers */
    /* the 12-byte packing of 8 six-bit (scale, min) pairs of Q4_K / Q5_K, unpacked four
       bytes at a time into u: bytes 0-7 the scales, 8-15 the mins. Byte j < 4 of each word
       pair: sc[j] = s[j] & 63, mn[j] = s[j + 4] & 63, sc[j + 4] = (s[j + 8] & 15) |
       (s[j] >> 6) << 4, mn[j + 4] = (s[j + 8] >> 4) | (s[j + 4] >> 6) << 4. */
    static inline void abi_k4_words(const uint8_t* s, uint32_t* u) {
        const uint32_t k6 = 0x3f3f3f3fu, k4 = 0x0f0f0f0fu, k2 = 0x03030303u;
        uint32_t w[3];
        memcpy(w, s, 12);
        u[0] = w[0] & k6;
        u[1] = (w[2] & k4) | (((w[0] >> 6) & k2) << 4);
        u[2] = w[1] & k6;
        u[3] = ((w[2] >> 4) & k4) | (((w[1] >> 6) & k2) << 4);
    }
    static inline void abi_k4_scales(const uint8_t* s, uint8_t* sc, uint8_t* mn) {
        uint32_t u[4];
        abi_k4_words(s, u);
        memcpy(sc, u, 8);
        memcpy(mn, u + 2, 8);
    }

    #if defined(__AVX2__) && defined(__FMA__)
    #define ABI_QDOT_SIMD 1
    #include <immintrin.h>

    static inline float abi_hsum8(__m256 v) {
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        return _mm_cvtss_f32(s);
    }

    /* 8 int32 lanes whose total is sum(u[i] * s[i]); u unsigned bytes, s signed bytes.
       Pairs never saturate here: |u| <= 128 and |s| <= 127 give at most 32512. */
    static inline __m256i abi_dpbusd(__m256i u, __m256i s) {
    #if defined(__AVXVNNI__)
        return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s);
    #elif defined(__AVX512VNNI__) && defined(__AVX512VL__)
        return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
    #else
        return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
    #endif
    }

    /* signed x signed bytes, through |a| and sign(a) * b */
    static inline __m256i abi_dpbssd(__m256i a, __m256i b) {
        return abi_dpbusd(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
    }

    /* 16 packed bytes -> 32 values 0..15: low nibbles first (elements 0..15), then high.
       Broadcast from memory (no shuffle), the high lane alone shifted by a per-dword shift,
       a mask: two instructions (a shift and a blend before: Q4_0's product 17% faster) */
    static inline __m256i abi_nibbles32(const uint8_t* qs) {
        __m256i q = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)qs));
        return _mm256_and_si256(_mm256_srlv_epi32(q, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4)), _mm256_set1_epi8(15));
    }

    /* f16 -> f32 by table (filled when the module loads): a scale is then one load, or a
       broadcast straight from memory, instead of several shuffle-port conversions. */
    static float abi_f16_table[1 << 16];
    __attribute__((constructor)) static void abi_f16_table_init(void) {
        for (int i = 0; i < (1 << 16); ++i) abi_f16_table[i] = abi_f16_to_f32_soft((uint16_t)i);
    }
    static inline float abi_f16t(const uint8_t* p) { return abi_f16_table[abi_ld16(p)]; }
    static inline __m256 abi_f16t_bcast(const uint8_t* p) { return _mm256_broadcast_ss(&abi_f16_table[abi_ld16(p)]); }
    /* broadcast of d_w * d_x for one pair of blocks */
    static inline __m256 abi_scale2(const uint8_t* w, const uint8_t* x) {
        return _mm256_mul_ps(abi_f16t_bcast(w), abi_f16t_bcast(x));
    }

    /* Q4_0 and Q5_0 where the AVX-512 tiles (_qtile.pxd) are not built: their blocks in
       fours (i .. i + 3), int32 lane 4h + k holding the 16 products of block i + k's half h
       (its elements 16h .. 16h + 15), scaled by [d_i .. d_i+3 | d_i .. d_i+3] (blocks past
       the end: zeros, d = 0): a quarter of the float steps a block, which the AVX2 prompt
       tile (_qtile_avx2.pxd) pays for every (row, token) pair. Where those AVX-512 tiles
       are built, the T = 1 kernels keep the one-block chains they mirror. */
    #if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__)
    #define ABI_QUADS 0
    #else
    #define ABI_QUADS 1
    #endif
    #if defined(__AVXVNNI__) || (defined(__AVX512VNNI__) && defined(__AVX512VL__))
    #define ABI_QDOT_VNNI 1
    #else
    #define ABI_QDOT_VNNI 0
    #endif
    /* a quad's lanes from its blocks' int32 4-sums (VNNI) or int16 pair sums (small enough that
       sums of 8 products fit in int16) */
    static inline __m256i abi_quad(__m256i s0, __m256i s1, __m256i s2, __m256i s3) {
    #if ABI_QDOT_VNNI
        return _mm256_hadd_epi32(_mm256_hadd_epi32(s0, s1), _mm256_hadd_epi32(s2, s3));
    #else
        return _mm256_madd_epi16(_mm256_hadd_epi16(_mm256_hadd_epi16(s0, s1), _mm256_hadd_epi16(s2, s3)), _mm256_set1_epi16(1));
    #endif
    }
    /* the activation's scales for a sweep of rows, read from the f16 table once rather than
       once a row: d_x of block i at [i] (zeros at [nb, nb + 4), read by a last partial quad).
       Without VNNI, after them (abi_quad_xsum) the activation's half-block sums in the quads'
       lane order: quad q's lane 4h + k the sum of block 4q + k's half h (0 past nb), so the
       kernels multiply the unsigned weight values alone and take the offset back out once a
       quad. The calling thread's buffer, grown as needed. */
    #if ABI_QUADS
    static __thread float* abi_quad_buf = NULL;
    static __thread size_t abi_quad_cap = 0;
    static inline Py_ssize_t abi_quad_nd(Py_ssize_t nb) { return (nb + 4 + 7) / 8 * 8; }
    static inline const int32_t* abi_quad_xsum(const float* xd, Py_ssize_t nb) { return (const int32_t*)(xd + abi_quad_nd(nb)); }
    static const float* abi_quad_x(const uint8_t* x, Py_ssize_t xb, Py_ssize_t nb) {
        const size_t n = (size_t)abi_quad_nd(nb) + 2 * (size_t)(nb + 3) / 4 * 4;
        if (n > abi_quad_cap) {
            free(abi_quad_buf);
            abi_quad_buf = (float*)malloc(n * sizeof(float));
            abi_quad_cap = abi_quad_buf ? n : 0;
            if (!abi_quad_buf) { fputs("abi: out of memory for the activation's scales\\n", stderr); abort(); }
        }
        for (Py_ssize_t i = 0; i < nb; ++i) abi_quad_buf[i] = abi_f16t(x + i * xb);
        for (Py_ssize_t i = nb; i < nb + 4; ++i) abi_quad_buf[i] = 0.0f;
    #if !ABI_QDOT_VNNI
        int32_t* hs = (int32_t*)(abi_quad_buf + abi_quad_nd(nb));
        memset(hs, 0, (size_t)(nb + 3) / 4 * 8 * sizeof(int32_t));
        for (Py_ssize_t i = 0; i < nb; ++i) {
            /* the 32 bytes' sums of 8 (int32 lanes 0, 1 | 2, 3 the halves), then the halves */
            const __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), _mm256_loadu_si256((const __m256i*)(x + i * xb + 2))),
                                                _mm256_set1_epi16(1));
            int32_t v[8];
            _mm256_storeu_si256((__m256i*)v, s);
            hs[i / 4 * 8 + i % 4] = v[0] + v[1] + v[2] + v[3];
            hs[i / 4 * 8 + 4 + i % 4] = v[4] + v[5] + v[6] + v[7];
        }
    #endif
        return abi_quad_buf;
    }
    #else
    static inline const float* abi_quad_x(const uint8_t* x, Py_ssize_t xb, Py_ssize_t nb) { return NULL; }
    #endif
    /* the f16 scales of the n <= 4 blocks present, step bytes apart from p; 0 for the others */
    static inline __m128 abi_quad_f16(const uint8_t* p, Py_ssize_t step, Py_ssize_t n) {
        return _mm_setr_ps(abi_f16t(p), n > 1 ? abi_f16t(p + step) : 0.0f, n > 2 ? abi_f16t(p + 2 * step) : 0.0f,
                           n > 3 ? abi_f16t(p + 3 * step) : 0.0f);
    }
    /* [d_i .. d_i+3 | d_i .. d_i+3], d = d_w d_x, of the n <= 4 blocks present (wb bytes
       apart; xd: their d_x and zeros past nb), 0 for the others */
    static inline __m256 abi_quad_scales(const uint8_t* w, Py_ssize_t wb, const float* xd, Py_ssize_t n) {
        const __m128 d = _mm_mul_ps(abi_quad_f16(w, wb, n), _mm_loadu_ps(xd));
        return _mm256_set_m128(d, d);
    }
    /* the T = 1 kernel `name`(w, x, xd, nb) over blocks of wb bytes (activation blocks of xb)
       in fours, xd = abi_quad_x(x, xb, nb); sums(w, x): one block's sums for abi_quad; without
       VNNI those of the unsigned values u = q + off, and off times the activation's half-block
       sums (abi_quad_xsum) comes out of the quad's exact lanes (off = 1 << sh) */
    #if ABI_QDOT_VNNI
    #define ABI_QUAD_OFF(xs, i, sh) _mm256_setzero_si256()
    #else
    #define ABI_QUAD_OFF(xs, i, sh) _mm256_slli_epi32(_mm256_loadu_si256((const __m256i*)((xs) + 2 * (i))), sh)
    #endif
    #define ABI_QUAD_DOT(name, wb, xb, sums, sh)                                                   \\
    static inline float name(const uint8_t* w, const uint8_t* x, const float* xd, Py_ssize_t nb) {  \\
        const __m256i z = _mm256_setzero_si256();                                                   \\
        const int32_t* xs = abi_quad_xsum(xd, nb);                                                  \\
        __m256 acc = _mm256_setzero_ps();                                                           \\
        Py_ssize_t i = 0;                                                                           \\
        for (; i + 3 < nb; i += 4, w += 4 * (wb), x += 4 * (xb))                                    \\
            acc = _mm256_fmadd_ps(abi_quad_scales(w, wb, xd + i, 4), _mm256_cvtepi32_ps(_mm256_sub_epi32(abi_quad(sums(w, x), \\
                sums(w + (wb), x + (xb)), sums(w + 2 * (wb), x + 2 * (xb)), sums(w + 3 * (wb), x + 3 * (xb))), \\
                ABI_QUAD_OFF(xs, i, sh))), acc);                                                    \\
        if (i < nb) {                                                                               \\
            const Py_ssize_t n = nb - i;                                                            \\
            acc = _mm256_fmadd_ps(abi_quad_scales(w, wb, xd + i, n), _mm256_cvtepi32_ps(_mm256_sub_epi32(abi_quad(sums(w, x), \\
                n > 1 ? sums(w + (wb), x + (xb)) : z, n > 2 ? sums(w + 2 * (wb), x + 2 * (xb)) : z, z), \\
                ABI_QUAD_OFF(xs, i, sh))), acc);                                                    \\
        }                                                                                           \\
        return abi_hsum8(acc);                                                                      \\
    }

    /* bit i of a little-endian u32 -> byte i = 0xFF or 0x00 */
    static inline __m256i abi_bitmask32(const uint8_t* p) {   /* p: the little-endian u32 */
        const __m256i shuf = _mm256_setr_epi8(0,0,0,0,0,0,0,0, 1,1,1,1,1,1,1,1,
                                              2,2,2,2,2,2,2,2, 3,3,3,3,3,3,3,3);
        const __m256i sel = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
        __m256i v = _mm256_shuffle_epi8(_mm256_castps_si256(_mm256_broadcast_ss((const float*)p)), shuf);
        return _mm256_cmpeq_epi8(_mm256_and_si256(v, sel), sel);
    }
    /* abi_k4_scales in a vector (s: the 12 bytes, and 4 more that are read and ignored):
       bytes 0-7 the scales, 8-15 the mins, with no trip through memory */
    static inline __m128i abi_k4_scales_v(const uint8_t* s) {
        const __m128i v = _mm_loadu_si128((const __m128i*)s);
        const __m128i m4 = _mm_set1_epi8(15);
        const __m128i a = _mm_and_si128(v, _mm_set1_epi8(63));                 /* sc0-3 | mn0-3 */
        const __m128i t = _mm_srli_si128(v, 8);                                 /* s8-s11 */
        const __m128i b = _mm_unpacklo_epi32(_mm_and_si128(t, m4), _mm_and_si128(_mm_srli_epi16(t, 4), m4));
        /* | the top two bits of s0-s7, as bits 4-5 */
        const __m128i up = _mm_or_si128(b, _mm_and_si128(_mm_srli_epi16(v, 2), _mm_set1_epi8(0x30)));   /* sc4-7 | mn4-7 */
        return _mm_unpacklo_epi32(a, up);
    }
    /* the same steps for two rows at once: [row a's 8 scales, 8 mins | row b's] as bytes */
    static inline __m256i abi_k4_scales_v2(const uint8_t* sa, const uint8_t* sb) {
        const __m256i v = _mm256_loadu2_m128i((const __m128i*)sb, (const __m128i*)sa);
        const __m256i m4 = _mm256_set1_epi8(15);
        const __m256i a = _mm256_and_si256(v, _mm256_set1_epi8(63));
        const __m256i t = _mm256_srli_si256(v, 8);
        const __m256i b = _mm256_unpacklo_epi32(_mm256_and_si256(t, m4), _mm256_and_si256(_mm256_srli_epi16(t, 4), m4));
        const __m256i up = _mm256_or_si256(b, _mm256_and_si256(_mm256_srli_epi16(v, 2), _mm256_set1_epi8(0x30)));
        return _mm256_unpacklo_epi32(a, up);
    }
    /* [d, dmin, 0, 0]: a k-quant block's two leading f16 scales */
    static inline __m128 abi_k_dmin(const uint8_t* w) {
        return _mm_cvtph_ps(_mm_cvtsi32_si128((int)abi_ld32(w)));
    }
    /* int16 j of s8's lanes (8 int16 scales, alike in both) in all 16 int16 lanes: one
       shuffle, where _mm256_set1_epi16 of a scalar takes three instructions */
    static inline __m256i abi_bcast16(__m256i s8, int j) {
        return _mm256_shuffle_epi8(s8, _mm256_set1_epi16((short)(0x0100 + 0x0202 * j)));
    }
    /* s8: 8 int16 scales in both lanes -> scale 2p in every int16 of the low lane and 2p + 1
       in the high lane, for a vector that holds sub-block 2p in one lane and 2p + 1 in the other */
    static inline __m256i abi_pair_scales(__m256i s8, int p) {
        const __m256i idx = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1,
                                             2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3);
        return _mm256_shuffle_epi8(s8, _mm256_add_epi8(idx, _mm256_set1_epi8((char)(4 * p))));
    }
    /* Q3_K's elements 32k + 0..31 (k = 4h + s; q the 32 low-bit bytes of half h, hm the hmask)
       as q + 4 = low 2 bits | hmask bit k << 2, unsigned 0..7; masked before the 16-bit
       shifts, so no bit moves across a byte */
    static inline __m256i abi_q3_k_group(__m256i q, __m256i hm, int h, int s) {
        const int k = 4 * h + s;
        __m256i hb = _mm256_and_si256(hm, _mm256_set1_epi8((char)(1 << k)));
        hb = k < 2 ? _mm256_slli_epi16(hb, 2 - k) : _mm256_srli_epi16(hb, k - 2);
        return _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 2 * s), _mm256_set1_epi8(3)), hb);
    }
    /* Q6_K's half h as unsigned q + 32 (low nibbles | 2 high bits << 4): its 32-element group
       k (against activation bytes 128h + 32k), and all four (the loads they share are one
       where inlined) */
    static inline __m256i abi_q6_k_group(const uint8_t* w, int h, int k) {
        const __m256i m4 = _mm256_set1_epi8(15), m2 = _mm256_set1_epi8(3 << 4);
        const __m256i ql = _mm256_loadu_si256((const __m256i*)(w + 64 * h + 32 * (k & 1)));
        const __m256i qh = _mm256_loadu_si256((const __m256i*)(w + 128 + 32 * h));
        const __m256i lo = _mm256_and_si256(k < 2 ? ql : _mm256_srli_epi16(ql, 4), m4);
        const __m256i hb = k == 0 ? _mm256_slli_epi16(qh, 4) : k == 1 ? _mm256_slli_epi16(qh, 2)
                         : k == 2 ? qh : _mm256_srli_epi16(qh, 2);
        return _mm256_or_si256(lo, _mm256_and_si256(hb, m2));
    }
    static inline void abi_q6_k_groups(const uint8_t* w, int h, __m256i* g) {
        for (int k = 0; k < 4; ++k) g[k] = abi_q6_k_group(w, h, k);
    }
    #else
    #define ABI_QDOT_SIMD 0
    static inline const float* abi_quad_x(const uint8_t* x, Py_ssize_t xb, Py_ssize_t nb) { return NULL; }
    #endif

    /* ---------------------------------------------------------------- 32-element blocks */

    #if ABI_QDOT_SIMD
    static inline float abi_dot_q8_0_q8_0_simd(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) {
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
        Py_ssize_t i = 0;
        for (; i + 1 < nb; i += 2, w += 68, x += 68) {
            __m256i p0 = abi_dpbssd(_mm256_loadu_si256((const __m256i*)(w + 2)), _mm256_loadu_si256((const __m256i*)(x + 2)));
            __m256i p1 = abi_dpbssd(_mm256_loadu_si256((const __m256i*)(w + 36)), _mm256_loadu_si256((const __m256i*)(x + 36)));
            acc0 = _mm256_fmadd_ps(abi_scale2(w, x), _mm256_cvtepi32_ps(p0), acc0);
            acc1 = _mm256_fmadd_ps(abi_scale2(w + 34, x + 34), _mm256_cvtepi32_ps(p1), acc1);
        }
        if (i < nb) {
            __m256i p0 = abi_dpbssd(_mm256_loadu_si256((const __m256i*)(w + 2)), _mm256_loadu_si256((const __m256i*)(x + 2)));
            acc0 = _mm256_fmadd_ps(abi_scale2(w, x), _mm256_cvtepi32_ps(p0), acc0);
        }
        return abi_hsum8(_mm256_add_ps(acc0, acc1));
    }
    #endif
    static inline float abi_dot_q8_0_q8_0_scalar(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) {
        float acc = 0.0f;
        for (Py_ssize_t i = 0; i < nb; ++i, w += 34, x += 34) {
            const int8_t* a = (const int8_t*)(w + 2); const int8_t* b = (const int8_t*)(x + 2);
            int s = 0;
            for (int j = 0; j < 32; ++j) s += a[j] * b[j];
            acc += abi_f16_to_f32(abi_ld16(w)) * abi_f16_to_f32(abi_ld16(x)) * (float)s;
        }
        return acc;
    }

    #if ABI_QDOT_SIMD
    /* (q - 8) x: int32 4-sums with VNNI, else (in quads: no VNNI, no AVX-512 tiles) the int16
       pair sums of q x (a quad's sums of 8 within +-15360; the 8 x come out per quad) */
    static inline __m256i abi_q4_0_sums(const uint8_t* w, const uint8_t* x) {
        const __m256i xs = _mm256_loadu_si256((const __m256i*)(x + 2));
    #if ABI_QDOT_VNNI
        return abi_dpbssd(_mm256_sub_epi8(abi_nibbles32(w + 2), _mm256_set1_epi8(8)), xs);
    #else
        return _mm256_maddubs_epi16(abi_nibbles32(w + 2), xs);
    #endif
    }
    #if ABI_QUADS
    ABI_QUAD_DOT(abi_dot_q4_0_q8_0_simd, 18, 34, abi_q4_0_sums, 3)
    #else
    static inline float abi_dot_q4_0_q8_0_simd(const uint8_t* w, const uint8_t* x, const float* xd, Py_ssize_t nb) {   /* xd: unused here */
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
        Py_ssize_t i = 0;
        for (; i + 1 < nb; i += 2, w += 36, x += 68) {
            __m256i p0 = abi_q4_0_sums(w, x);
            __m256i p1 = abi_q4_0_sums(w + 18, x + 34);
            acc0 = _mm256_fmadd_ps(abi_scale2(w, x), _mm256_cvtepi32_ps(p0), acc0);
            acc1 = _mm256_fmadd_ps(abi_scale2(w + 18, x + 34), _mm256_cvtepi32_ps(p1), acc1);
        }
        if (i < nb) {
            __m256i p0 = abi_q4_0_sums(w, x);
            acc0 = _mm256_fmadd_ps(abi_scale2(w, x), _mm256_cvtepi32_ps(p0), acc0);
        }
        return abi_hsum8(_mm256_add_ps(acc0, acc1));
    }
    #endif
    #endif
    static inline float abi_dot_q4_0_q8_0_scalar(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) {
        float acc = 0.0f;
        for (Py_ssize_t i = 0; i < nb; ++i, w += 18, x += 34) {
            const int8_t* b = (const int8_t*)(x + 2);
            int s = 0;
            for (int j = 0; j < 16; ++j)
                s += ((w[2 + j] & 15) - 8) * b[j] + ((w[2 + j] >> 4) - 8) * b[j + 16];
            acc += abi_f16_to_f32(abi_ld16(w)) * abi_f16_to_f32(abi_ld16(x)) * (float)s;
        }
        return acc;
    }

    #if ABI_QDOT_SIMD && !ABI_QUADS
    static inline float abi_dot_q4_1_q8_1_simd(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) {
        /* sum d_w d_x sum(q_w q_x) + m_w s_x, with s_x = d_x sum(q_x) from the Q8_1 block */
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
        float accm = 0.0f;
        Py_ssize_t i = 0;
        for (; i + 1 < nb; i += 2, w += 40, x += 72) {
            __m256i p0 = abi_dpbusd(abi_nibbles32(w + 4), _mm256_loadu_si256((const __m256i*)(x + 4)));
            __m256i p1 = abi_dpbusd(abi_nibbles32(w + 24), _mm256_loadu_si256((const __m256i*)(x + 40)));
            acc0 = _mm256_fmadd_ps(abi_scale2(w, x), _mm256_cvtepi32_ps(p0), acc0);
            acc1 = _mm256_fmadd_ps(abi_scale2(w + 20, x + 36), _mm256_cvtepi32_ps(p1), acc1);
            accm += abi_f16t(w + 2) * abi_f16t(x + 2)
                  + abi_f16t(w + 22) * abi_f16t(x + 38);
        }
        if (i < nb) {
            __m256i p0 = abi_dpbusd(abi_nibbles32(w + 4), _mm256_loadu_si256((const __m256i*)(x + 4)));
            acc0 = _mm256_fmadd_ps(abi_scale2(w, x), _mm256_cvtepi32_ps(p0), acc0);
            accm += abi_f16t(w + 2) * abi_f16t(x + 2);
        }
        return abi_hsum8(_mm256_add_ps(acc0, acc1)) + accm;
    }
    #elif ABI_QDOT_SIMD
    /* Q4_1 where the AVX-512 tiles (_qtile.pxd) are not built: rows in fours. A vector holds
       8 weights of each of four rows ([a | b | c | d], 8 bytes each) against the same 8
       activation bytes in each quarter; a block is four such vectors (its elements 0..7,
       8..15 from the low nibbles of its bytes 0..7, 8..15, and 16..23, 24..31 from the high
       ones), whose maddubs add up in int16 (sums of 8 products, at most 8 x 15 x 128), and
       one madd leaves int32 lanes [a a b b | c c d d]: lane 2r + j of row r the products of
       its elements 4j..4j+3 of each eight. So one conversion and one fused multiply-add a
       block serve four rows: a quarter of the float steps of a block a row, and 1.25
       integer multiplies. The AVX2 tile (_qtile_avx2.pxd) takes the same steps for every
       token, so each gets these bits. */
    static inline void abi_q41_quad(const uint8_t* a, const uint8_t* b, const uint8_t* c, const uint8_t* d, __m256i* k) {
        /* [qa | qc] and [qb | qd] -> [qa 0-7, qb 0-7 | qc 0-7, qd 0-7] and bytes 8-15 alike */
        const __m256i ac = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i*)a)),
                                                   _mm_loadu_si128((const __m128i*)c), 1);
        const __m256i bd = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i*)b)),
                                                   _mm_loadu_si128((const __m128i*)d), 1);
        const __m256i q0 = _mm256_unpacklo_epi64(ac, bd), q1 = _mm256_unpackhi_epi64(ac, bd), m = _mm256_set1_epi8(15);
        k[0] = _mm256_and_si256(q0, m);
        k[1] = _mm256_and_si256(q1, m);
        k[2] = _mm256_and_si256(_mm256_srli_epi16(q0, 4), m);
        k[3] = _mm256_and_si256(_mm256_srli_epi16(q1, 4), m);
    }
    /* the int32 lanes [a a b b | c c d d] of a quad's block (k) against a token's 32 bytes x */
    static inline __m256i abi_q41_quad_dot(const __m256i* k, const uint8_t* x) {
        #define ABI_Q41_X(o) _mm256_broadcastq_epi64(_mm_loadl_epi64((const __m128i*)(x + (o))))
        const __m256i s = _mm256_add_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(k[0], ABI_Q41_X(0)), _mm256_maddubs_epi16(k[1], ABI_Q41_X(8))),
                                           _mm256_add_epi16(_mm256_maddubs_epi16(k[2], ABI_Q41_X(16)), _mm256_maddubs_epi16(k[3], ABI_Q41_X(24))));
        #undef ABI_Q41_X
        return _mm256_madd_epi16(s, _mm256_set1_epi16(1));
    }
    /* a quad's block scales [da da db db | dc dc dd dd] and offsets [ma mb mc md] (each
       block opens with its f16 d and m: one 4-byte load a row, one conversion) */
    static inline __m256 abi_q41_quad_dm(const uint8_t* a, const uint8_t* b, const uint8_t* c, const uint8_t* d, __m128* mv) {
        const __m256 f = _mm256_cvtph_ps(_mm_setr_epi32((int)abi_ld32(a), (int)abi_ld32(b), (int)abi_ld32(c), (int)abi_ld32(d)));
        *mv = _mm256_castps256_ps128(_mm256_permutevar8x32_ps(f, _mm256_setr_epi32(1, 3, 5, 7, 1, 3, 5, 7)));
        return _mm256_permutevar8x32_ps(f, _mm256_setr_epi32(0, 0, 2, 2, 4, 4, 6, 6));
    }
    /* [a a b b | c c d d] -> each row's two lanes summed, [a b c d] */
    static inline __m128 abi_q41_quad_rows(__m256 s) {
        const __m256 h = _mm256_hadd_ps(s, s);   /* [a b a b | c d c d] */
        return _mm_shuffle_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1), _MM_SHUFFLE(1, 0, 1, 0));
    }
    /* y[r] = row r . x for rows wa, wb, wc, wd (a row may repeat: fewer than four) */
    static inline void abi_dot4_q4_1_q8_1(const uint8_t* wa, const uint8_t* wb, const uint8_t* wc, const uint8_t* wd,
                                          const uint8_t* x, Py_ssize_t nb, float* y) {
        /* sum d_w d_x sum(q_w q_x) + m_w s_x, with s_x = d_x sum(q_x) from the Q8_1 block;
           the m_w s_x of a pair of blocks fused as m0 s0 + (m1 s1), lane r row r's */
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
        __m128 accm = _mm_setzero_ps(), m0, m1;
        __m256i k[4];
        Py_ssize_t i = 0;
        for (; i + 1 < nb; i += 2, wa += 40, wb += 40, wc += 40, wd += 40, x += 72) {
            const __m256 d0 = abi_q41_quad_dm(wa, wb, wc, wd, &m0), d1 = abi_q41_quad_dm(wa + 20, wb + 20, wc + 20, wd + 20, &m1);
            abi_q41_quad(wa + 4, wb + 4, wc + 4, wd + 4, k);
            acc0 = _mm256_fmadd_ps(_mm256_mul_ps(d0, abi_f16t_bcast(x)), _mm256_cvtepi32_ps(abi_q41_quad_dot(k, x + 4)), acc0);
            abi_q41_quad(wa + 24, wb + 24, wc + 24, wd + 24, k);
            acc1 = _mm256_fmadd_ps(_mm256_mul_ps(d1, abi_f16t_bcast(x + 36)), _mm256_cvtepi32_ps(abi_q41_quad_dot(k, x + 40)), acc1);
            accm = _mm_add_ps(accm, _mm_fmadd_ps(m0, _mm_set1_ps(abi_f16t(x + 2)), _mm_mul_ps(m1, _mm_set1_ps(abi_f16t(x + 38)))));
        }
        if (i < nb) {
            const __m256 d0 = abi_q41_quad_dm(wa, wb, wc, wd, &m0);
            abi_q41_quad(wa + 4, wb + 4, wc + 4, wd + 4, k);
            acc0 = _mm256_fmadd_ps(_mm256_mul_ps(d0, abi_f16t_bcast(x)), _mm256_cvtepi32_ps(abi_q41_quad_dot(k, x + 4)), acc0);
            accm = _mm_fmadd_ps(m0, _mm_set1_ps(abi_f16t(x + 2)), accm);
        }
        _mm_storeu_ps(y, _mm_add_ps(abi_q41_quad_rows(_mm256_add_ps(acc0, acc1)), accm));
    }
    #endif
    static inline float abi_dot_q4_1_q8_1_scalar(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) {
        /* sum d_w d_x sum(q_w q_x) + m_w s_x, with s_x = d_x sum(q_x) from the Q8_1 block */
        float acc = 0.0f;
        for (Py_ssize_t i = 0; i < nb; ++i, w += 20, x += 36) {
            const int8_t* b = (const int8_t*)(x + 4);
            int s = 0;
            for (int j = 0; j < 16; ++j) s += (w[4 + j] & 15) * b[j] + (w[4 + j] >> 4) * b[j + 16];
            acc += abi_f16_to_f32(abi_ld16(w)) * abi_f16_to_f32(abi_ld16(x)) * (float)s
                 + abi_f16_to_f32(abi_ld16(w + 2)) * abi_f16_to_f32(abi_ld16(x + 2));
        }
        return acc;
    }

    #if ABI_QDOT_SIMD
    /* (q - 16) x: int32 4-sums with VNNI (q - 16 in two's complement: nibble | 0xF0 where
       the fifth bit is clear), else (in quads) the int16 pair sums of q x, q = nibble | 16 b
       unsigned (a quad's sums of 8 within +-31744; the 16 x come out per quad) */
    static inline __m256i abi_q5_0_sums(const uint8_t* w, const uint8_t* x) {
        const __m256i xs = _mm256_loadu_si256((const __m256i*)(x + 2));
    #if ABI_QDOT_VNNI
        return abi_dpbssd(_mm256_or_si256(abi_nibbles32(w + 6), _mm256_andnot_si256(abi_bitmask32(w + 2), _mm256_set1_epi8((char)0xF0))), xs);
    #else
        return _mm256_maddubs_epi16(_mm256_or_si256(abi_nibbles32(w + 6), _mm256_and_si256(abi_bitmask32(w + 2), _mm256_set1_epi8(16))), xs);
    #endif
    }
    #if ABI_QUADS
    ABI_QUAD_DOT(abi_dot_q5_0_q8_0_simd, 22, 34, abi_q5_0_sums, 4)
    #else
    static inline float abi_dot_q5_0_q8_0_simd(const uint8_t* w, const uint8_t* x, const float* xd, Py_ssize_t nb) {   /* xd: unused here */
        __m256 acc = _mm256_setzero_ps();
        for (Py_ssize_t i = 0; i < nb; ++i, w += 22, x += 34)   /* VNNI here: int32 sums */
            acc = _mm256_fmadd_ps(abi_scale2(w, x), _mm256_cvtepi32_ps(abi_q5_0_sums(w, x)), acc);
        return abi_hsum8(acc);
    }
    #endif
    #endif
    static inline float abi_dot_q5_0_q8_0_scalar(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) {
        float acc = 0.0f;
        for (Py_ssize_t i = 0; i < nb; ++i, w += 22, x += 34) {
            const int8_t* b = (const int8_t*)(x + 2);
            uint32_t qh = abi_ld32(w + 2);
            int s = 0;
            for (int j = 0; j < 16; ++j)
                s += (int)(((w[6 + j] & 15) | (((qh >> j) & 1) << 4)) - 16) * b[j]
                   + (int)(((w[6 + j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - 16) * b[j + 16];
            acc += abi_f16_to_f32(abi_ld16(w)) * abi_f16_to_f32(abi_ld16(x)) * (float)s;
        }
        return acc;
    }

    #if ABI_QDOT_SIMD
    static inline float abi_dot_q5_1_q8_1_simd(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) {
        const __m256i b4 = _mm256_set1_epi8(16);
        __m256 acc = _mm256_setzero_ps();
        float accm = 0.0f;
        for (Py_ssize_t i = 0; i < nb; ++i, w += 24, x += 36) {
            __m256i q = _mm256_or_si256(abi_nibbles32(w + 8), _mm256_and_si256(abi_bitmask32(w + 4), b4));
            __m256i p = abi_dpbusd(q, _mm256_loadu_si256((const __m256i*)(x + 4)));
            acc = _mm256_fmadd_ps(abi_scale2(w, x), _mm256_cvtepi32_ps(p), acc);
            accm += abi_f16t(w + 2) * abi_f16t(x + 2);
        }
        return abi_hsum8(acc) + accm;
    }
    #endif
    static inline float abi_dot_q5_1_q8_1_scalar(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) {
        float acc = 0.0f;
        for (Py_ssize_t i = 0; i < nb; ++i, w += 24, x += 36) {
            const int8_t* b = (const int8_t*)(x + 4);
            uint32_t qh = abi_ld32(w + 4);
            int s = 0;
            for (int j = 0; j < 16; ++j)
                s += (int)((w[8 + j] & 15) | (((qh >> j) & 1) << 4)) * b[j]
                   + (int)((w[8 + j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) * b[j + 16];
            acc += abi_f16_to_f32(abi_ld16(w)) * abi_f16_to_f32(abi_ld16(x)) * (float)s
                 + abi_f16_to_f32(abi_ld16(w + 2)) * abi_f16_to_f32(abi_ld16(x + 2));
        }
        return acc;
    }

    /* ---------------------------------------------------------------- 256-element k-quants
       Q8_K activation block: [d:f32][q:256 int8][bsums:16 int16] */

    #if ABI_QDOT_SIMD
    static inline float abi_dot_q4_k_q8_k_simd(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) {
        /* a super-block's exact integer sums S = sum_j sc_j sum(q q_x) and M = sum_j m_j
           (bsum_2j + bsum_2j+1), then acc += (d_w d_x) S and accm += (dmin_w d_x) M, one fused
           multiply-add each (lanes 0 and 1 of acc2), y = acc - accm: the tiles
           (_qtile_avx2.pxd) keep a tile's pairs side by side in the lanes of one vector */
        const __m256i m4 = _mm256_set1_epi8(15);
        __m128 acc2 = _mm_setzero_ps();
        for (Py_ssize_t i = 0; i < nb; ++i, w += 144, x += 292) {
            const int8_t* q8 = (const int8_t*)(x + 4);
            const __m128i scm = abi_k4_scales_v(w + 4);
            const __m256i s8 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(scm));
            __m256i sumi = _mm256_setzero_si256();
            for (int c = 0; c < 4; ++c) {
                __m256i q = _mm256_loadu_si256((const __m256i*)(w + 16 + 32 * c));
                __m256i plo = _mm256_maddubs_epi16(_mm256_and_si256(q, m4), _mm256_loadu_si256((const __m256i*)(q8 + 64 * c)));
                __m256i phi = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4), _mm256_loadu_si256((const __m256i*)(q8 + 64 * c + 32)));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(plo, abi_bcast16(s8, 2 * c)));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(phi, abi_bcast16(s8, 2 * c + 1)));
            }
            const __m256i mins16 = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(scm, scm));  /* m0 m0 m1 m1 ... */
            /* [S M . .]: both totals in one reduction */
            const __m256i mm = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i*)(x + 260)), mins16);
            const __m256i v = _mm256_add_epi32(_mm256_unpacklo_epi32(sumi, mm), _mm256_unpackhi_epi32(sumi, mm));
            __m128i h = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
            h = _mm_add_epi32(h, _mm_unpackhi_epi64(h, h));
            const __m128 dd = _mm_mul_ps(abi_k_dmin(w), _mm_set1_ps(abi_ldf32(x)));   /* [d_w d_x, dmin_w d_x, 0, 0] */
            acc2 = _mm_fmadd_ps(dd, _mm_cvtepi32_ps(h), acc2);
        }
        return _mm_cvtss_f32(acc2) - _mm_cvtss_f32(_mm_movehdup_ps(acc2));
    }
    #endif
    static inline float abi_dot_q4_k_q8_k_scalar(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) {
        /* sum d_w d_x sum_j sc_j sum(q q_x) - dmin_w d_x sum_j m_j (bsum_2j + bsum_2j+1) */
        uint8_t sc[8], mn[8];
        float acc = 0.0f;
        for (Py_ssize_t i = 0; i < nb; ++i, w += 144, x += 292) {
            const float dx = abi_ldf32(x);
            const int8_t* q8 = (const int8_t*)(x + 4);
            abi_k4_scales(w + 4, sc, mn);
            int sumi = 0, summ = 0;
            for (int j = 0; j < 8; ++j) {
                const uint8_t* q = w + 16 + 32 * (j >> 1);
                int shift = 4 * (j & 1), s = 0;
                for (int k = 0; k < 32; ++k) s += ((q[k] >> shift) & 15) * q8[32 * j + k];
                sumi += sc[j] * s;
                summ += mn[j] * ((int)(int16_t)abi_ld16(x + 260 + 4 * j) + (int)(int16_t)abi_ld16(x + 262 + 4 * j));
            }
            acc += abi_f16_to_f32(abi_ld16(w)) * dx * (float)sumi - abi_f16_to_f32(abi_ld16(w + 2)) * dx * (float)summ;
        }
        return acc;
    }

    #if ABI_QDOT_SIMD
    static inline float abi_dot_q5_k_q8_k_simd(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) {
        uint8_t sc[8], mn[8];
        const __m256i m4 = _mm256_set1_epi8(15), b4 = _mm256_set1_epi8(16);
        __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
        for (Py_ssize_t i = 0; i < nb; ++i, w += 176, x += 292) {
            const float dx = abi_ldf32(x);
            const int8_t* q8 = (const int8_t*)(x + 4);
            abi_k4_scales(w + 4, sc, mn);
            const __m256i s8 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i*)sc)));
            __m256i hbits = _mm256_loadu_si256((const __m256i*)(w + 16));
            __m256i sumi = _mm256_setzero_si256();
            for (int c = 0; c < 4; ++c) {
                __m256i q = _mm256_loadu_si256((const __m256i*)(w + 48 + 32 * c));
                /* bit 2c of qh is bit 4 of sub-block 2c, bit 2c+1 of sub-block 2c+1 */
                __m256i lo = _mm256_or_si256(_mm256_and_si256(q, m4), _mm256_and_si256(_mm256_slli_epi16(hbits, 4), b4));
                __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4), _mm256_and_si256(_mm256_slli_epi16(hbits, 3), b4));
                hbits = _mm256_srli_epi16(hbits, 2);
                __m256i plo = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i*)(q8 + 64 * c)));
                __m256i phi = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i*)(q8 + 64 * c + 32)));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(plo, abi_bcast16(s8, 2 * c)));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(phi, abi_bcast16(s8, 2 * c + 1)));
            }
            __m128i mins = _mm_loadl_epi64((const __m128i*)mn);
            __m256i mins16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mins, mins));
            __m256i bs = _mm256_loadu_si256((const __m256i*)(x + 260));
            acc = _mm256_fmadd_ps(_mm256_set1_ps(abi_f16_to_f32(abi_ld16(w)) * dx), _mm256_cvtepi32_ps(sumi), acc);
            accm = _mm256_fmadd_ps(_mm256_set1_ps(abi_f16_to_f32(abi_ld16(w + 2)) * dx), _mm256_cvtepi32_ps(_mm256_madd_epi16(bs, mins16)), accm);
        }
        return abi_hsum8(acc) - abi_hsum8(accm);
    }
    #endif
    static inline float abi_dot_q5_k_q8_k_scalar(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) {
        uint8_t sc[8], mn[8];
        float acc = 0.0f;
        for (Py_ssize_t i = 0; i < nb; ++i, w += 176, x += 292) {
            const float dx = abi_ldf32(x);
            const int8_t* q8 = (const int8_t*)(x + 4);
            abi_k4_scales(w + 4, sc, mn);
            int sumi = 0, summ = 0;
            for (int j = 0; j < 8; ++j) {
                const uint8_t* q = w + 48 + 32 * (j >> 1);
                int shift = 4 * (j & 1), s = 0;
                for (int k = 0; k < 32; ++k)
                    s += (((q[k] >> shift) & 15) | (((w[16 + k] >> j) & 1) << 4)) * q8[32 * j + k];
                sumi += sc[j] * s;
                summ += mn[j] * ((int)(int16_t)abi_ld16(x + 260 + 4 * j) + (int)(int16_t)abi_ld16(x + 262 + 4 * j));
            }
            acc += abi_f16_to_f32(abi_ld16(w)) * dx * (float)sumi - abi_f16_to_f32(abi_ld16(w + 2)) * dx * (float)summ;
        }
        return acc;
    }

    #if ABI_QDOT_SIMD
    static inline float abi_dot_q6_k_q8_k_simd(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) {
        /* sum d_w d_x (sum_j sc_j sum(q q_x) - 32 sum_j sc_j bsum_j), q in 0..63 */
        __m256 acc = _mm256_setzero_ps();
        for (Py_ssize_t i = 0; i < nb; ++i, w += 210, x += 292) {
            const int8_t* q8 = (const int8_t*)(x + 4);
            const int8_t* sc = (const int8_t*)(w + 192);
            const __m128i sc8 = _mm_loadu_si128((const __m128i*)sc);
            __m256i sumi = _mm256_setzero_si256();
            for (int h = 0; h < 2; ++h) {
                /* scales 8h..8h+7 as int16, in both lanes */
                const __m256i s8 = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(h ? _mm_srli_si128(sc8, 8) : sc8));
                __m256i g[4];
                abi_q6_k_groups(w, h, g);
                for (int k = 0; k < 4; ++k) {
                    __m256i p = _mm256_maddubs_epi16(g[k], _mm256_loadu_si256((const __m256i*)(q8 + 128 * h + 32 * k)));
                    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, abi_pair_scales(s8, k)));   /* [sc_8h+2k | sc_8h+2k+1] */
                }
            }
            __m256i corr = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i*)(x + 260)), _mm256_cvtepi8_epi16(sc8));
            sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(corr, 5));
            acc = _mm256_fmadd_ps(_mm256_set1_ps(abi_f16_to_f32(abi_ld16(w + 208)) * abi_ldf32(x)), _mm256_cvtepi32_ps(sumi), acc);
        }
        return abi_hsum8(acc);
    }
    #endif
    static inline float abi_dot_q6_k_q8_k_scalar(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) {
        /* sum d_w d_x (sum_j sc_j sum(q q_x) - 32 sum_j sc_j bsum_j), q in 0..63 */
        float acc = 0.0f;
        for (Py_ssize_t i = 0; i < nb; ++i, w += 210, x += 292) {
            const int8_t* q8 = (const int8_t*)(x + 4);
            const int8_t* sc = (const int8_t*)(w + 192);
            int sumi = 0;
            for (int j = 0; j < 16; ++j) {
                int s = 0;
                for (int k = 0; k < 16; ++k) {
                    int e = 16 * j + k, h = e >> 7, r = e & 127;
                    int q = ((w[64 * h + (r & 63)] >> (4 * (r >> 6))) & 15)
                          | (((w[128 + 32 * h + (r & 31)] >> (2 * (r >> 5))) & 3) << 4);
                    s += (q - 32) * q8[e];
                }
                sumi += sc[j] * s;
            }
            acc += abi_f16_to_f32(abi_ld16(w + 208)) * abi_ldf32(x) * (float)sumi;
        }
        return acc;
    }

    /* ---------------------------------------------------------------- 16-element sub-block k-quants
       and the IQ4 types (values from a 16-entry signed table) */

    static const int8_t abi_qdot_iq4nl[16] = {
        -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

    /* the 12-byte packing of the 16 six-bit Q3_K scales, unpacked 4 per u32 (byte j % 4 of
       word j / 4 is scale j, 0..63): low nibbles from bytes 0..7, top bits from bytes 8..11 */
    static inline void abi_q3_k_scales(const uint8_t* s, uint32_t* a) {
        const uint32_t a0 = abi_ld32(s), a1 = abi_ld32(s + 4), a2 = abi_ld32(s + 8);
        const uint32_t m4 = 0x0F0F0F0Fu, m2 = 0x03030303u;
        a[0] = (a0 & m4) | ((a2 & m2) << 4);
        a[1] = (a1 & m4) | (((a2 >> 2) & m2) << 4);
        a[2] = ((a0 >> 4) & m4) | (((a2 >> 4) & m2) << 4);
        a[3] = ((a1 >> 4) & m4) | (((a2 >> 6) & m2) << 4);
    }

    #if ABI_QDOT_SIMD
    /* acc + the pairwise int32 sums of int16 a * b (one instruction with VNNI) */
    static inline __m256i abi_dpwssd(__m256i acc, __m256i a, __m256i b) {
    #if defined(__AVXVNNI__)
        return _mm256_dpwssd_avx_epi32(acc, a, b);
    #elif defined(__AVX512VNNI__) && defined(__AVX512VL__)
        return _mm256_dpwssd_epi32(acc, a, b);
    #else
        return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
    #endif
    }

    /* the 16 IQ4 values in both lanes, for _mm256_shuffle_epi8 lookups */
    static inline __m256i abi_iq4nl_table(void) {
        return _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)abi_qdot_iq4nl));
    }
    #endif

    #if ABI_QDOT_SIMD
    static inline float abi_dot_q2_k_q8_k_simd(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) {
        /* sum d_w d_x sum_j sc_j sum(q q_x) - dmin_w d_x sum_j m_j bsum_j over 16 sub-blocks */
        const __m256i m3 = _mm256_set1_epi8(3);
        const __m128i m4 = _mm_set1_epi8(15);
        __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
        for (Py_ssize_t i = 0; i < nb; ++i, w += 84, x += 292) {
            const float dx = abi_ldf32(x);
            const int8_t* q8 = (const int8_t*)(x + 4);
            const __m128i sm = _mm_loadu_si128((const __m128i*)w);
            const __m128i sc = _mm_and_si128(sm, m4);
            const __m256i mn = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sm, 4), m4));
            __m256i summ = _mm256_madd_epi16(mn, _mm256_loadu_si256((const __m256i*)(x + 260)));
            __m256i sumi = _mm256_setzero_si256();
            for (int h = 0; h < 2; ++h) {
                const __m256i s8 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(h ? _mm_srli_si128(sc, 8) : sc));
                const __m256i q = _mm256_loadu_si256((const __m256i*)(w + 16 + 32 * h));
                for (int s = 0; s < 4; ++s) {
                    /* bits 2s..2s+1 of the 32 bytes: elements 128h + 32s + 0..31 */
                    __m256i v = _mm256_and_si256(_mm256_srli_epi16(q, 2 * s), m3);
                    __m256i p = _mm256_maddubs_epi16(v, _mm256_loadu_si256((const __m256i*)(q8 + 128 * h + 32 * s)));
                    sumi = abi_dpwssd(sumi, p, abi_pair_scales(s8, s));
                }
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(abi_f16t(w + 80) * dx), _mm256_cvtepi32_ps(sumi), acc);
            accm = _mm256_fmadd_ps(_mm256_set1_ps(abi_f16t(w + 82) * dx), _mm256_cvtepi32_ps(summ), accm);
        }
        return abi_hsum8(acc) - abi_hsum8(accm);
    }
    #endif
    static inline float abi_dot_q2_k_q8_k_scalar(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) {
        /* sum d_w d_x sum_j sc_j sum(q q_x) - dmin_w d_x sum_j m_j bsum_j over 16 sub-blocks */
        float acc = 0.0f;
        for (Py_ssize_t i = 0; i < nb; ++i, w += 84, x += 292) {
            const float dx = abi_ldf32(x);
            const int8_t* q8 = (const int8_t*)(x + 4);
            int sumi = 0, summ = 0;
            for (int j = 0; j < 16; ++j) {
                /* e = 16j + k = 128h + 32s + i: bits 2s of qs[32h + i] */
                const uint8_t* q = w + 16 + 32 * (j >> 3) + 16 * (j & 1);
                int shift = 2 * ((j >> 1) & 3), s = 0;
                for (int k = 0; k < 16; ++k) s += ((q[k] >> shift) & 3) * q8[16 * j + k];
                sumi += (w[j] & 15) * s;
                summ += (w[j] >> 4) * (int)(int16_t)abi_ld16(x + 260 + 2 * j);
            }
            acc += abi_f16_to_f32(abi_ld16(w + 80)) * dx * (float)sumi - abi_f16_to_f32(abi_ld16(w + 82)) * dx * (float)summ;
        }
        return acc;
    }

    #if ABI_QDOT_SIMD
    static inline float abi_dot_q3_k_q8_k_simd(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) {
        /* sum d_w d_x sum_j sc_j (sum((q + 4) q_x) - 4 bsum_j): q + 4 = low 2 bits | hmask bit << 2
           is unsigned 0..7 for maddubs (abi_q3_k_group), and the bsums take the 4 back out */
        uint32_t a[4];
        __m256 acc = _mm256_setzero_ps();
        for (Py_ssize_t i = 0; i < nb; ++i, w += 110, x += 292) {
            const int8_t* q8 = (const int8_t*)(x + 4);
            abi_q3_k_scales(w + 96, a);
            const __m128i sc = _mm_sub_epi8(_mm_setr_epi32((int)a[0], (int)a[1], (int)a[2], (int)a[3]), _mm_set1_epi8(32));
            const __m256i corr = _mm256_madd_epi16(_mm256_cvtepi8_epi16(sc), _mm256_loadu_si256((const __m256i*)(x + 260)));
            const __m256i hm = _mm256_loadu_si256((const __m256i*)w);
            __m256i sumi = _mm256_setzero_si256();
            for (int h = 0; h < 2; ++h) {
                const __m256i s8 = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(h ? _mm_srli_si128(sc, 8) : sc));
                const __m256i q = _mm256_loadu_si256((const __m256i*)(w + 32 + 32 * h));
                for (int s = 0; s < 4; ++s) {
                    __m256i p = _mm256_maddubs_epi16(abi_q3_k_group(q, hm, h, s), _mm256_loadu_si256((const __m256i*)(q8 + 128 * h + 32 * s)));
                    sumi = abi_dpwssd(sumi, p, abi_pair_scales(s8, s));
                }
            }
            sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(corr, 2));
            acc = _mm256_fmadd_ps(_mm256_set1_ps(abi_f16t(w + 108) * abi_ldf32(x)), _mm256_cvtepi32_ps(sumi), acc);
        }
        return abi_hsum8(acc);
    }
    #endif
    static inline float abi_dot_q3_k_q8_k_scalar(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) {
        /* sum d_w d_x sum_j (sc_j - 32) sum(q q_x), q = low 2 bits - 4 where the hmask bit is clear */
        uint32_t a[4];
        float acc = 0.0f;
        for (Py_ssize_t i = 0; i < nb; ++i, w += 110, x += 292) {
            const int8_t* q8 = (const int8_t*)(x + 4);
            abi_q3_k_scales(w + 96, a);
            int sumi = 0;
            for (int j = 0; j < 16; ++j) {
                int s = 0;
                for (int k = 0; k < 16; ++k) {
                    /* e = 128h + 32s + i = 32k' + i: qs[32h + i] >> 2s, hmask[i] >> k' */
                    int e = 16 * j + k, h = e >> 7, sh = (e >> 5) & 3, ii = e & 31;
                    int q = ((w[32 + 32 * h + ii] >> (2 * sh)) & 3) - ((w[ii] >> (e >> 5)) & 1 ? 0 : 4);
                    s += q * q8[e];
                }
                sumi += ((int)((a[j >> 2] >> (8 * (j & 3))) & 0xFF) - 32) * s;
            }
            acc += abi_f16_to_f32(abi_ld16(w + 108)) * abi_ldf32(x) * (float)sumi;
        }
        return acc;
    }

    #if ABI_QDOT_SIMD
    static inline float abi_dot_iq4_nl_q8_0_simd(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) {
        const __m256i tbl = abi_iq4nl_table();
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
        Py_ssize_t i = 0;
        for (; i + 1 < nb; i += 2, w += 36, x += 68) {
            __m256i v0 = _mm256_shuffle_epi8(tbl, abi_nibbles32(w + 2));
            __m256i v1 = _mm256_shuffle_epi8(tbl, abi_nibbles32(w + 20));
            __m256i p0 = abi_dpbssd(v0, _mm256_loadu_si256((const __m256i*)(x + 2)));
            __m256i p1 = abi_dpbssd(v1, _mm256_loadu_si256((const __m256i*)(x + 36)));
            acc0 = _mm256_fmadd_ps(abi_scale2(w, x), _mm256_cvtepi32_ps(p0), acc0);
            acc1 = _mm256_fmadd_ps(abi_scale2(w + 18, x + 34), _mm256_cvtepi32_ps(p1), acc1);
        }
        if (i < nb) {
            __m256i p0 = abi_dpbssd(_mm256_shuffle_epi8(tbl, abi_nibbles32(w + 2)), _mm256_loadu_si256((const __m256i*)(x + 2)));
            acc0 = _mm256_fmadd_ps(abi_scale2(w, x), _mm256_cvtepi32_ps(p0), acc0);
        }
        return abi_hsum8(_mm256_add_ps(acc0, acc1));
    }
    #endif
    static inline float abi_dot_iq4_nl_q8_0_scalar(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) {
        float acc = 0.0f;
        for (Py_ssize_t i = 0; i < nb; ++i, w += 18, x += 34) {
            const int8_t* b = (const int8_t*)(x + 2);
            int s = 0;
            for (int j = 0; j < 16; ++j)
                s += abi_qdot_iq4nl[w[2 + j] & 15] * b[j] + abi_qdot_iq4nl[w[2 + j] >> 4] * b[j + 16];
            acc += abi_f16_to_f32(abi_ld16(w)) * abi_f16_to_f32(abi_ld16(x)) * (float)s;
        }
        return acc;
    }

    #if ABI_QDOT_SIMD
    static inline float abi_dot_iq4_xs_q8_k_simd(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) {
        /* sum d_w d_x sum_j ls_j sum(v q_x), v = KVALUES[q], ls_j = 6-bit scale - 32 */
        const __m256i tbl = abi_iq4nl_table(), m4 = _mm256_set1_epi8(15);
        /* int16 lane j * 2^(14 - 2j), then >> 14: bits 2j, 2j + 1 of scales_h */
        const __m128i hmul = _mm_setr_epi16(1 << 14, 1 << 12, 1 << 10, 1 << 8, 1 << 6, 1 << 4, 1 << 2, 1);
        __m256 acc = _mm256_setzero_ps();
        for (Py_ssize_t i = 0; i < nb; ++i, w += 136, x += 292) {
            const int8_t* q8 = (const int8_t*)(x + 4);
            /* the 8 scales as int16, in both lanes: nibbles of scales_l, top bits of scales_h */
            const __m128i sl = _mm_cvtsi32_si128((int)abi_ld32(w + 4));
            const __m128i lo4 = _mm_unpacklo_epi8(_mm_and_si128(sl, _mm256_castsi256_si128(m4)),
                                                  _mm_and_si128(_mm_srli_epi16(sl, 4), _mm256_castsi256_si128(m4)));
            const __m128i hi2 = _mm_srli_epi16(_mm_mullo_epi16(_mm_set1_epi16((short)abi_ld16(w + 2)), hmul), 14);
            const __m256i ls = _mm256_broadcastsi128_si256(_mm_sub_epi16(
                _mm_or_si128(_mm_cvtepu8_epi16(lo4), _mm_slli_epi16(hi2, 4)), _mm_set1_epi16(32)));
            __m256i sumi = _mm256_setzero_si256();
            for (int c = 0; c < 4; ++c) {
                /* 32 bytes = sub-blocks 2c | 2c + 1; low nibbles are their elements 0..15, high
                   nibbles 16..31, so the activation halves are paired lane by lane to match */
                const __m256i q = _mm256_loadu_si256((const __m256i*)(w + 8 + 32 * c));
                const __m256i vlo = _mm256_shuffle_epi8(tbl, _mm256_and_si256(q, m4));
                const __m256i vhi = _mm256_shuffle_epi8(tbl, _mm256_and_si256(_mm256_srli_epi16(q, 4), m4));
                const __m256i ylo = _mm256_loadu2_m128i((const __m128i*)(q8 + 64 * c + 32), (const __m128i*)(q8 + 64 * c));
                const __m256i yhi = _mm256_loadu2_m128i((const __m128i*)(q8 + 64 * c + 48), (const __m128i*)(q8 + 64 * c + 16));
                /* |v|, |q_x| <= 127: a pair of products stays below 2^15, no saturation */
                const __m256i plo = _mm256_maddubs_epi16(_mm256_sign_epi8(vlo, vlo), _mm256_sign_epi8(ylo, vlo));
                const __m256i phi = _mm256_maddubs_epi16(_mm256_sign_epi8(vhi, vhi), _mm256_sign_epi8(yhi, vhi));
                const __m256i sc = abi_pair_scales(ls, c);
                sumi = abi_dpwssd(abi_dpwssd(sumi, plo, sc), phi, sc);
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(abi_f16t(w) * abi_ldf32(x)), _mm256_cvtepi32_ps(sumi), acc);
        }
        return abi_hsum8(acc);
    }
    #endif
    static inline float abi_dot_iq4_xs_q8_k_scalar(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) {
        /* sum d_w d_x sum_j ls_j sum(v q_x), v = KVALUES[q], ls_j = 6-bit scale - 32 */
        float acc = 0.0f;
        for (Py_ssize_t i = 0; i < nb; ++i, w += 136, x += 292) {
            const int8_t* q8 = (const int8_t*)(x + 4);
            const uint32_t sh = abi_ld16(w + 2);
            int sumi = 0;
            for (int j = 0; j < 8; ++j) {
                const int ls = (int)(((w[4 + (j >> 1)] >> (4 * (j & 1))) & 15) | (((sh >> (2 * j)) & 3) << 4)) - 32;
                const uint8_t* q = w + 8 + 16 * j;
                int s = 0;
                for (int k = 0; k < 16; ++k)
                    s += abi_qdot_iq4nl[q[k] & 15] * q8[32 * j + k] + abi_qdot_iq4nl[q[k] >> 4] * q8[32 * j + k + 16];
                sumi += ls * s;
            }
            acc += abi_f16_to_f32(abi_ld16(w)) * abi_ldf32(x) * (float)sumi;
        }
        return acc;
    }

    /* ---------------------------------------------------------------- float weights, float x
       The elements past the last whole chunk: one fmaf each, in order, spelled out, since
       gcc contracts some such loops and vectorises others into multiplies then in-order
       adds; the prompt tiles (_ftile.pxd) repeat it bit for bit. */

    #if ABI_QDOT_SIMD
    static inline float abi_dot_f32_simd(const uint8_t* w, const float* x, Py_ssize_t n) {
        const float* a = (const float*)w;   /* read with unaligned loads only */
        Py_ssize_t i = 0;
        float tail = 0.0f;
        __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
        for (; i + 32 <= n; i += 32) {
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(x + i), s0);
            s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(x + i + 8), s1);
            s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(x + i + 16), s2);
            s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(x + i + 24), s3);
        }
        tail = abi_hsum8(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
        for (; i < n; ++i) tail = fmaf(abi_ldf32(w + 4 * i), x[i], tail);
        return tail;
    }
    #endif
    static inline float abi_dot_f32_scalar(const uint8_t* w, const float* x, Py_ssize_t n) {
        Py_ssize_t i = 0;
        float tail = 0.0f;
        for (; i < n; ++i) tail += abi_ldf32(w + 4 * i) * x[i];
        return tail;
    }

    #if ABI_QDOT_SIMD
    static inline float abi_dot_f16_simd(const uint8_t* w, const float* x, Py_ssize_t n) {
        Py_ssize_t i = 0;
        float tail = 0.0f;
        __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
        for (; i + 32 <= n; i += 32) {
            const __m128i* p = (const __m128i*)(w + 2 * i);
            s0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128(p)), _mm256_loadu_ps(x + i), s0);
            s1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128(p + 1)), _mm256_loadu_ps(x + i + 8), s1);
            s2 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128(p + 2)), _mm256_loadu_ps(x + i + 16), s2);
            s3 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128(p + 3)), _mm256_loadu_ps(x + i + 24), s3);
        }
        tail = abi_hsum8(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
        for (; i < n; ++i) tail = fmaf(abi_f16_to_f32(abi_ld16(w + 2 * i)), x[i], tail);
        return tail;
    }
    #endif
    static inline float abi_dot_f16_scalar(const uint8_t* w, const float* x, Py_ssize_t n) {
        Py_ssize_t i = 0;
        float tail = 0.0f;
        for (; i < n; ++i) tail += abi_f16_to_f32(abi_ld16(w + 2 * i)) * x[i];
        return tail;
    }

    #if ABI_QDOT_SIMD
    static inline float abi_dot_bf16_simd(const uint8_t* w, const float* x, Py_ssize_t n) {
        Py_ssize_t i = 0;
        float tail = 0.0f;
        __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
        for (; i + 16 <= n; i += 16) {
            const __m128i* p = (const __m128i*)(w + 2 * i);
            __m256 a0 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(p)), 16));
            __m256 a1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(p + 1)), 16));
            s0 = _mm256_fmadd_ps(a0, _mm256_loadu_ps(x + i), s0);
            s1 = _mm256_fmadd_ps(a1, _mm256_loadu_ps(x + i + 8), s1);
        }
        tail = abi_hsum8(_mm256_add_ps(s0, s1));
        for (; i < n; ++i) tail = fmaf(abi_bf16_to_f32(abi_ld16(w + 2 * i)), x[i], tail);
        return tail;
    }
    #endif
    static inline float abi_dot_bf16_scalar(const uint8_t* w, const float* x, Py_ssize_t n) {
        Py_ssize_t i = 0;
        float tail = 0.0f;
        for (; i < n; ++i) tail += abi_bf16_to_f32(abi_ld16(w + 2 * i)) * x[i];
        return tail;
    }

    /* the fast path where the compiler targets AVX2 + FMA, else the portable one */
    #if ABI_QDOT_SIMD
    #define abi_dot_q8_0_q8_0 abi_dot_q8_0_q8_0_simd
    #define abi_dot_q4_0_q8_0 abi_dot_q4_0_q8_0_simd
    #define abi_dot_q5_0_q8_0 abi_dot_q5_0_q8_0_simd
    #define abi_dot_q5_1_q8_1 abi_dot_q5_1_q8_1_simd
    #define abi_dot_q4_k_q8_k abi_dot_q4_k_q8_k_simd
    #define abi_dot_q5_k_q8_k abi_dot_q5_k_q8_k_simd
    #define abi_dot_q6_k_q8_k abi_dot_q6_k_q8_k_simd
    #define abi_dot_q2_k_q8_k abi_dot_q2_k_q8_k_simd
    #define abi_dot_q3_k_q8_k abi_dot_q3_k_q8_k_simd
    #define abi_dot_iq4_nl_q8_0 abi_dot_iq4_nl_q8_0_simd
    #define abi_dot_iq4_xs_q8_k abi_dot_iq4_xs_q8_k_simd
    #define abi_dot_f32 abi_dot_f32_simd
    #define abi_dot_f16 abi_dot_f16_simd
    #define abi_dot_bf16 abi_dot_bf16_simd
    #else
    #define abi_dot_q8_0_q8_0 abi_dot_q8_0_q8_0_scalar
    #define abi_dot_q4_0_q8_0(w, x, xd, nb) abi_dot_q4_0_q8_0_scalar(w, x, nb)
    #define abi_dot_q5_0_q8_0(w, x, xd, nb) abi_dot_q5_0_q8_0_scalar(w, x, nb)
    #define abi_dot_q5_1_q8_1 abi_dot_q5_1_q8_1_scalar
    #define abi_dot_q4_k_q8_k abi_dot_q4_k_q8_k_scalar
    #define abi_dot_q5_k_q8_k abi_dot_q5_k_q8_k_scalar
    #define abi_dot_q6_k_q8_k abi_dot_q6_k_q8_k_scalar
    #define abi_dot_q2_k_q8_k abi_dot_q2_k_q8_k_scalar
    #define abi_dot_q3_k_q8_k abi_dot_q3_k_q8_k_scalar
    #define abi_dot_iq4_nl_q8_0 abi_dot_iq4_nl_q8_0_scalar
    #define abi_dot_iq4_xs_q8_k abi_dot_iq4_xs_q8_k_scalar
    #define abi_dot_f32 abi_dot_f32_scalar
    #define abi_dot_f16 abi_dot_f16_scalar
    #define abi_dot_bf16 abi_dot_bf16_scalar
    #endif

    #if !ABI_QDOT_SIMD || !ABI_QUADS   /* Q4_1 without its row quads: four one-row products */
    #if ABI_QDOT_SIMD
    #define ABI_Q41_ONE abi_dot_q4_1_q8_1_simd
    #else
    #define ABI_Q41_ONE abi_dot_q4_1_q8_1_scalar
    #endif
    static inline void abi_dot4_q4_1_q8_1(const uint8_t* wa, const uint8_t* wb, const uint8_t* wc, const uint8_t* wd,
                                          const uint8_t* x, Py_ssize_t nb, float* y) {
        y[0] = ABI_Q41_ONE(wa, x, nb);
        y[1] = ABI_Q41_ONE(wb, x, nb);
        y[2] = ABI_Q41_ONE(wc, x, nb);
        y[3] = ABI_Q41_ONE(wd, x, nb);
    }
    #undef ABI_Q41_ONE
    #endif

    #endif /* ABI_QDOT_H */
    """
    bint QDOT_SIMD "ABI_QDOT_SIMD"
    # the activation's scales for Q4_0 and Q5_0's kernels (their xd), once a sweep of rows
    const float* quad_x "abi_quad_x"(const uint8_t* x, Py_ssize_t xb, Py_ssize_t nb) noexcept nogil
    float dot_q8_0_q8_0 "abi_dot_q8_0_q8_0"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_q4_0_q8_0 "abi_dot_q4_0_q8_0"(const uint8_t* w, const uint8_t* x, const float* xd, Py_ssize_t nb) noexcept nogil
    # rows wa, wb, wc, wd (one may repeat) into y[0..3]: the one-row product's bits
    void dot4_q4_1_q8_1 "abi_dot4_q4_1_q8_1"(const uint8_t* wa, const uint8_t* wb, const uint8_t* wc, const uint8_t* wd,
                                             const uint8_t* x, Py_ssize_t nb, float* y) noexcept nogil
    float dot_q5_0_q8_0 "abi_dot_q5_0_q8_0"(const uint8_t* w, const uint8_t* x, const float* xd, Py_ssize_t nb) noexcept nogil
    float dot_q5_1_q8_1 "abi_dot_q5_1_q8_1"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_q4_k_q8_k "abi_dot_q4_k_q8_k"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_q5_k_q8_k "abi_dot_q5_k_q8_k"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_q6_k_q8_k "abi_dot_q6_k_q8_k"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_q2_k_q8_k "abi_dot_q2_k_q8_k"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_q3_k_q8_k "abi_dot_q3_k_q8_k"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_iq4_nl_q8_0 "abi_dot_iq4_nl_q8_0"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_iq4_xs_q8_k "abi_dot_iq4_xs_q8_k"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_f32 "abi_dot_f32"(const uint8_t* w, const float* x, Py_ssize_t n) noexcept nogil
    float dot_f16 "abi_dot_f16"(const uint8_t* w, const float* x, Py_ssize_t n) noexcept nogil
    float dot_bf16 "abi_dot_bf16"(const uint8_t* w, const float* x, Py_ssize_t n) noexcept nogil
    # the portable versions, always compiled (tests check them against the fast ones)
    float dot_q8_0_q8_0_scalar "abi_dot_q8_0_q8_0_scalar"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_q4_0_q8_0_scalar "abi_dot_q4_0_q8_0_scalar"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_q4_1_q8_1_scalar "abi_dot_q4_1_q8_1_scalar"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_q5_0_q8_0_scalar "abi_dot_q5_0_q8_0_scalar"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_q5_1_q8_1_scalar "abi_dot_q5_1_q8_1_scalar"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_q4_k_q8_k_scalar "abi_dot_q4_k_q8_k_scalar"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_q5_k_q8_k_scalar "abi_dot_q5_k_q8_k_scalar"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_q6_k_q8_k_scalar "abi_dot_q6_k_q8_k_scalar"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_q2_k_q8_k_scalar "abi_dot_q2_k_q8_k_scalar"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_q3_k_q8_k_scalar "abi_dot_q3_k_q8_k_scalar"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_iq4_nl_q8_0_scalar "abi_dot_iq4_nl_q8_0_scalar"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_iq4_xs_q8_k_scalar "abi_dot_iq4_xs_q8_k_scalar"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_f32_scalar "abi_dot_f32_scalar"(const uint8_t* w, const float* x, Py_ssize_t n) noexcept nogil
    float dot_f16_scalar "abi_dot_f16_scalar"(const uint8_t* w, const float* x, Py_ssize_t n) noexcept nogil
    float dot_bf16_scalar "abi_dot_bf16_scalar"(const uint8_t* w, const float* x, Py_ssize_t n) noexcept nogil
