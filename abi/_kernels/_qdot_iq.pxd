# Row dot products of the lattice (IQ), ternary and MXFP4 weight types with a quantised
# activation row, as inline C in the style of _qdot.pxd: AVX2 (AVX-512 masks, VBMI and VNNI
# where the compiler targets them) with a portable scalar fallback. Both paths compute the
# same integer sum per block; the scalar path folds it with abi_iq_fold, the SIMD path
# keeps it in 8 int32 lanes and folds those by FMA into float lanes (another rounding order).
#
#   dot_<w>_q8_k(w, x, nb): nb weight blocks of 256 against nb Q8_K blocks
#                           ([d:f32][q:256 int8][bsums:16 int16]); returns the sum.
#   dot_mxfp4_q8_0(w, x, nb): nb MXFP4 blocks of 32 against nb Q8_0 blocks ([d:f16][q:32]).
#
# The activation's q must lie in -127..127 (our quantisers' range): the SIMD path negates
# q for the signs, which cannot negate -128; its IQ1 and ternary sums use the bsums.
# Per block the integer sums stay far inside int32 (at most ~6e7, IQ3_XXS).
from libc.stdint cimport uint8_t

from abi._kernels._half cimport f16_to_f32
from abi._kernels._qdot cimport QDOT_SIMD   # its C (abi_f16t, abi_dpwssd, abi_hsum8) first

cdef extern from *:
    """
    #ifndef ABI_QDOT_IQ_H
    #define ABI_QDOT_IQ_H
    #include "iq_tables.h"

    /* element j of a packed grid row */
    #define ABI_GRID_U8(row, j) ((int)(uint8_t)((row) >> (8 * (j))))
    #define ABI_GRID_I8(row, j) ((int)(int8_t)(uint8_t)((row) >> (8 * (j))))

    /* the scalar path's float step: scale_w * d_x * (integer block sum) */
    static inline float abi_iq_fold(float acc, float sw, float dx, int sumi) {
        return acc + sw * dx * (float)sumi;
    }

    static inline int abi_iq_bsum_total(const uint8_t* x) {   /* sum of the 256 q of a Q8_K block */
        int s = 0;
        for (int j = 0; j < 16; ++j) s += (int16_t)abi_ld16(x + 260 + 2 * j);
        return s;
    }

    static inline int abi_tq1_trit(uint8_t b, int n) {         /* base-3 digit n, 0..2 */
        static const uint8_t pow3[5] = {1, 3, 9, 27, 81};
        uint8_t q = (uint8_t)(b * pow3[n]);                     /* wraps mod 256 by design */
        return ((int)q * 3) >> 8;
    }

    static inline float abi_iq1m_d(const uint8_t* w) {          /* f16 spread over 4 nibbles */
        uint16_t s0 = abi_ld16(w + 48), s1 = abi_ld16(w + 50), s2 = abi_ld16(w + 52), s3 = abi_ld16(w + 54);
        return abi_f16_to_f32((uint16_t)((s0 >> 12) | ((s1 >> 8) & 0x00F0) | ((s2 >> 4) & 0x0F00) | (s3 & 0xF000)));
    }

    static inline float abi_e8m0_half(uint8_t e) {              /* 2^(e - 128), as the dequantiser */
        uint32_t bits = e < 2 ? (0x00200000u << e) : ((uint32_t)(e - 1) << 23);
        float f; memcpy(&f, &bits, 4); return f;
    }

    /* weight-side float factor of a block; the fractions of the IQ scales are folded in */
    static inline float abi_iqs_iq2(const uint8_t* w) { return 0.125f * abi_f16_to_f32(abi_ld16(w)); }
    static inline float abi_iqs_iq3xxs(const uint8_t* w) { return 0.25f * abi_f16_to_f32(abi_ld16(w)); }
    static inline float abi_iqs_d0(const uint8_t* w) { return abi_f16_to_f32(abi_ld16(w)); }
    static inline float abi_iqs_iq1m(const uint8_t* w) { return 0.125f * abi_iq1m_d(w); }
    static inline float abi_iqs_tq1(const uint8_t* w) { return abi_f16_to_f32(abi_ld16(w + 52)); }
    static inline float abi_iqs_tq2(const uint8_t* w) { return abi_f16_to_f32(abi_ld16(w + 64)); }
    static inline float abi_iqs_mxfp4(const uint8_t* w) { return abi_e8m0_half(w[0]); }

    /* ------------------------------------------------------------ scalar block sums
       Each returns the integer S with  sum_e w_e x_e = scale_w * d_x * S  for one block. */

    /* IQ2: x_e = d (2 ls + 1) / 8 * grid * sign, so S = sum over scale groups (2 ls + 1) * sum(grid * sign * q) */
    /* sum_j grid_j * sign_j * q_j over the n byte elements of a packed grid row */
    static inline int abi_grid_dot(uint64_t row, unsigned signs, const int8_t* q, int n) {
        int s = 0;
        for (int j = 0; j < n; ++j) {
            int v = ABI_GRID_U8(row, j) * q[j];
            s += (signs >> j) & 1 ? -v : v;
        }
        return s;
    }

    static inline int abi_iqb_iq2_xxs_scalar(const uint8_t* w, const uint8_t* x) {
        const int8_t* q8 = (const int8_t*)(x + 4);
        int sumi = 0;
        for (int g = 0; g < 8; ++g) {
            const uint8_t* q = w + 2 + 8 * g;
            uint32_t aux = abi_ld32(q + 4);
            int s = 0;
            for (int l = 0; l < 4; ++l)
                s += abi_grid_dot(abi_iq2xxs_grid[q[l]], abi_ksigns_iq2xs[(aux >> (7 * l)) & 127], q8 + 32 * g + 8 * l, 8);
            sumi += (2 * (int)(aux >> 28) + 1) * s;
        }
        return sumi;
    }

    static inline int abi_iqb_iq2_xs_scalar(const uint8_t* w, const uint8_t* x) {
        const int8_t* q8 = (const int8_t*)(x + 4);
        int sumi = 0;
        for (int l = 0; l < 32; ++l) {
            uint16_t q = abi_ld16(w + 2 + 2 * l);
            int ls = (w[66 + (l >> 2)] >> (4 * ((l >> 1) & 1))) & 15;
            sumi += (2 * ls + 1) * abi_grid_dot(abi_iq2xs_grid[q & 511], abi_ksigns_iq2xs[q >> 9], q8 + 8 * l, 8);
        }
        return sumi;
    }

    static inline int abi_iqb_iq2_s_scalar(const uint8_t* w, const uint8_t* x) {
        const int8_t* q8 = (const int8_t*)(x + 4);
        int sumi = 0;
        for (int l = 0; l < 32; ++l) {
            int idx = w[2 + l] | (((w[66 + (l >> 2)] >> (2 * (l & 3))) & 3) << 8);
            int ls = (w[74 + (l >> 2)] >> (4 * ((l >> 1) & 1))) & 15;
            sumi += (2 * ls + 1) * abi_grid_dot(abi_iq2s_grid[idx], w[34 + l], q8 + 8 * l, 8);
        }
        return sumi;
    }

    /* IQ3_XXS: x = d (2 ls + 1) / 4 * grid * sign; IQ3_S: x = d (2 ls + 1) * grid * sign */
    static inline int abi_iqb_iq3_xxs_scalar(const uint8_t* w, const uint8_t* x) {
        const int8_t* q8 = (const int8_t*)(x + 4);
        int sumi = 0;
        for (int g = 0; g < 8; ++g) {
            uint32_t aux = abi_ld32(w + 66 + 4 * g);
            int s = 0;
            for (int l = 0; l < 8; ++l) {
                unsigned sg = abi_ksigns_iq2xs[(aux >> (7 * (l >> 1))) & 127] >> (4 * (l & 1));
                s += abi_grid_dot(abi_iq3xxs_grid[w[2 + 8 * g + l]], sg, q8 + 32 * g + 4 * l, 4);
            }
            sumi += (2 * (int)(aux >> 28) + 1) * s;
        }
        return sumi;
    }

    static inline int abi_iqb_iq3_s_scalar(const uint8_t* w, const uint8_t* x) {
        const int8_t* q8 = (const int8_t*)(x + 4);
        int sumi = 0;
        for (int g = 0; g < 8; ++g) {
            int s = 0;
            for (int l = 0; l < 8; ++l) {
                int idx = w[2 + 8 * g + l] | (((w[66 + g] >> l) & 1) << 8);
                unsigned sg = w[74 + 4 * g + (l >> 1)] >> (4 * (l & 1));
                s += abi_grid_dot(abi_iq3s_grid[idx], sg, q8 + 32 * g + 4 * l, 4);
            }
            sumi += (2 * ((w[106 + (g >> 1)] >> (4 * (g & 1))) & 15) + 1) * s;
        }
        return sumi;
    }

    /* IQ1: x = d (2 s + 1) (grid +- 1/8) = d (2 s + 1) / 8 * (8 grid +- 1) */
    static inline int abi_iq1_rows8(uint64_t row, int ds, const int8_t* q) {
        int s = 0;
        for (int j = 0; j < 8; ++j) s += (8 * ABI_GRID_I8(row, j) + ds) * q[j];
        return s;
    }

    static inline int abi_iqb_iq1_s_scalar(const uint8_t* w, const uint8_t* x) {
        const int8_t* q8 = (const int8_t*)(x + 4);
        int sumi = 0;
        for (int g = 0; g < 8; ++g) {
            uint16_t qh = abi_ld16(w + 34 + 2 * g);
            int ds = qh & 0x8000 ? -1 : 1, s = 0;
            for (int l = 0; l < 4; ++l) {
                int idx = w[2 + 4 * g + l] | (((qh >> (3 * l)) & 7) << 8);
                s += abi_iq1_rows8(abi_iq1s_grid[idx], ds, q8 + 32 * g + 8 * l);
            }
            sumi += (2 * ((qh >> 12) & 7) + 1) * s;
        }
        return sumi;
    }

    static inline int abi_iqb_iq1_m_scalar(const uint8_t* w, const uint8_t* x) {
        const int8_t* q8 = (const int8_t*)(x + 4);
        int sumi = 0;
        for (int r = 0; r < 32; ++r) {
            int sc = (abi_ld16(w + 48 + 2 * (r >> 3)) >> (3 * ((r >> 1) & 3))) & 7;
            int nib = (w[32 + (r >> 1)] >> (4 * (r & 1))) & 15;
            int idx = w[r] | ((nib & 7) << 8);
            sumi += (2 * sc + 1) * abi_iq1_rows8(abi_iq1s_grid[idx], nib & 8 ? -1 : 1, q8 + 8 * r);
        }
        return sumi;
    }

    /* ternary: x = d (t - 1), t in 0..2 */
    static inline int abi_iqb_tq1_0_scalar(const uint8_t* w, const uint8_t* x) {
        const int8_t* q8 = (const int8_t*)(x + 4);
        int s = 0;
        for (int n = 0; n < 5; ++n) {
            for (int i = 0; i < 32; ++i) s += (abi_tq1_trit(w[i], n) - 1) * q8[32 * n + i];
            for (int i = 0; i < 16; ++i) s += (abi_tq1_trit(w[32 + i], n) - 1) * q8[160 + 16 * n + i];
        }
        for (int n = 0; n < 4; ++n)
            for (int i = 0; i < 4; ++i) s += (abi_tq1_trit(w[48 + i], n) - 1) * q8[240 + 4 * n + i];
        return s;
    }

    static inline int abi_iqb_tq2_0_scalar(const uint8_t* w, const uint8_t* x) {
        const int8_t* q8 = (const int8_t*)(x + 4);
        int s = 0, sq = 0;   /* sum t q - sum q: gcc 12 -O3 with AVX-512 miscompiled sum (t - 1) q */
        for (int h = 0; h < 2; ++h)
            for (int k = 0; k < 4; ++k)
                for (int i = 0; i < 32; ++i) {
                    s += ((w[32 * h + i] >> (2 * k)) & 3) * q8[128 * h + 32 * k + i];
                    sq += q8[128 * h + 32 * k + i];
                }
        return s - sq;
    }

    /* MXFP4 x Q8_0: x = 2^(e-128) * kvalue (doubled E2M1) */
    static inline int abi_iqb_mxfp4_scalar(const uint8_t* w, const uint8_t* x) {
        const int8_t* q8 = (const int8_t*)(x + 2);
        int s = 0;
        for (int i = 0; i < 16; ++i)
            s += abi_kvalues_mxfp4[w[1 + i] & 15] * q8[i] + abi_kvalues_mxfp4[w[1 + i] >> 4] * q8[i + 16];
        return s;
    }

    /* ------------------------------------------------------------ row functions */
    #define ABI_IQ_ROW(name, path, wsize, xsize, xscale, wscale)                                   \\
        static inline float abi_dot_##name##_##path(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) { \\
            float acc = 0.0f;                                                                      \\
            for (Py_ssize_t i = 0; i < nb; ++i, w += wsize, x += xsize)                            \\
                acc = abi_iq_fold(acc, wscale(w), xscale(x), abi_iqb_##name##_##path(w, x));        \\
            return acc;                                                                            \\
        }
    #define ABI_XS_Q8K(x) abi_ldf32(x)
    #define ABI_XS_Q80(x) abi_f16_to_f32(abi_ld16(x))
    #define ABI_IQ_ROWS(path)                                                   \\
        ABI_IQ_ROW(iq2_xxs, path, 66, 292, ABI_XS_Q8K, abi_iqs_iq2)             \\
        ABI_IQ_ROW(iq2_xs, path, 74, 292, ABI_XS_Q8K, abi_iqs_iq2)              \\
        ABI_IQ_ROW(iq2_s, path, 82, 292, ABI_XS_Q8K, abi_iqs_iq2)               \\
        ABI_IQ_ROW(iq3_xxs, path, 98, 292, ABI_XS_Q8K, abi_iqs_iq3xxs)          \\
        ABI_IQ_ROW(iq3_s, path, 110, 292, ABI_XS_Q8K, abi_iqs_d0)               \\
        ABI_IQ_ROW(iq1_s, path, 50, 292, ABI_XS_Q8K, abi_iqs_iq2)               \\
        ABI_IQ_ROW(iq1_m, path, 56, 292, ABI_XS_Q8K, abi_iqs_iq1m)              \\
        ABI_IQ_ROW(tq1_0, path, 54, 292, ABI_XS_Q8K, abi_iqs_tq1)               \\
        ABI_IQ_ROW(tq2_0, path, 66, 292, ABI_XS_Q8K, abi_iqs_tq2)               \\
        ABI_IQ_ROW(mxfp4, path, 17, 34, ABI_XS_Q80, abi_iqs_mxfp4)

    ABI_IQ_ROWS(scalar)

    /* ------------------------------------------------------------ SIMD block sums
       abi_iqv_<type>(w, x): 8 int32 lanes whose total is the block's S, the integer the
       scalar twin returns; the row folds them as floats, d_w d_x * lanes into an FMA. */
    #if ABI_QDOT_SIMD
    #define ABI_QDOT_IQ_SIMD 1
    #if defined(__AVX512BW__) && defined(__AVX512VL__)
    #define ABI_IQ_K 1          /* sign bits straight into a mask register */
    #else
    #define ABI_IQ_K 0
    #endif
    #if ABI_IQ_K && defined(__AVX512VBMI__) && defined(__AVX512BITALG__) && defined(__AVX512F__)
    #define ABI_IQ_VBMI 1       /* a block's sign indices and parities in a few vector steps */
    #else
    #define ABI_IQ_VBMI 0
    #endif

    /* gcc left the block sums out of line (a call per block, the lookup tables and constants
       reloaded each time); inlined into the row loop they stay in registers */
    #define ABI_IQ_BLOCK static inline __attribute__((always_inline))
    /* a block's 8 groups unrolled: gcc otherwise built each group's scale shuffle at run time */
    #define ABI_IQ_UNROLL _Pragma("GCC unroll 8")

    /* acc + 4-wide sums of u8 u * s8 s */
    static inline __m256i abi_iq_dpbusd(__m256i acc, __m256i u, __m256i s) {
    #if defined(__AVXVNNI__)
        return _mm256_dpbusd_avx_epi32(acc, u, s);
    #elif defined(__AVX512VNNI__) && defined(__AVX512VL__)
        return _mm256_dpbusd_epi32(acc, u, s);
    #else
        return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
    #endif
    }

    static inline uint64_t abi_iq_ld64(const uint8_t* p) { uint64_t v; memcpy(&v, p, 8); return v; }
    /* the low bits of v placed at the set bits of mask, in order (BMI2's pdep) */
    static inline uint64_t abi_iq_pdep(uint64_t v, uint64_t mask) {
    #if defined(__BMI2__)
        return _pdep_u64(v, mask);
    #else
        uint64_t r = 0;
        for (; mask; mask &= mask - 1, v >>= 1) r |= (v & 1) ? mask & -mask : 0;
        return r;
    #endif
    }
    /* 4 grid indices as 16-bit words: bytes q[0..3] low, the bits of hi placed by mask above */
    static inline uint64_t abi_iq_ix4(const uint8_t* q, uint64_t hi, uint64_t mask) {
        return abi_iq_pdep(abi_ld32(q), 0x00FF00FF00FF00FFULL) | abi_iq_pdep(hi, mask);
    }
    static inline __m256i abi_iq_q8(const int8_t* q) { return _mm256_loadu_si256((const __m256i*)q); }

    /* q with element e negated where bit e of bits is set (q is never -128) */
    static inline __m256i abi_iq_sgq(const int8_t* q, uint32_t bits) {
    #if ABI_IQ_K
        __m256i v = abi_iq_q8(q);
        return _mm256_mask_sub_epi8(v, (__mmask32)bits, _mm256_setzero_si256(), v);
    #else
        const __m256i shuf = _mm256_setr_epi8(0,0,0,0,0,0,0,0, 1,1,1,1,1,1,1,1,
                                              2,2,2,2,2,2,2,2, 3,3,3,3,3,3,3,3);
        const __m256i sel = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
        __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), shuf);
        __m256i m = _mm256_cmpeq_epi8(_mm256_and_si256(v, sel), sel);
        return _mm256_sub_epi8(_mm256_xor_si256(abi_iq_q8(q), m), m);
    #endif
    }

    /* acc + sum of u * sq, int16 pair sums weighted by sc (maddubs pairs stay < 2^15:
       grid bytes <= 62, |q| <= 127) */
    static inline __m256i abi_iq_gdot(__m256i acc, __m256i u, __m256i sq, __m256i sc) {
        return abi_dpwssd(acc, _mm256_maddubs_epi16(u, sq), sc);
    }

    /* 16 bytes of scales in both lanes -> int16 scale byte lo in the low lane, hi in the high */
    static inline __m256i abi_iq_sc16(__m256i b, int lo, int hi) {
        return _mm256_shuffle_epi8(b, _mm256_set_m128i(_mm_set1_epi16((short)(0x8000 | hi)), _mm_set1_epi16((short)(0x8000 | lo))));
    }
    /* 8 bytes (2 ls + 1) from 8 nibbles packed low first in 4 bytes or from 16 in 8 bytes */
    static inline __m256i abi_iq_nib_scales(uint64_t packed) {
        __m128i b = _mm_cvtsi64_si128((long long)packed), m = _mm_set1_epi8(15);
        __m128i s = _mm_unpacklo_epi8(_mm_and_si128(b, m), _mm_and_si128(_mm_srli_epi16(b, 4), m));
        return _mm256_broadcastsi128_si256(_mm_add_epi8(_mm_add_epi8(s, s), _mm_set1_epi8(1)));
    }

    /* q signed by four 7-bit sign indices (abi_iq_sgk4: from bits 0..27 of aux): with
       AVX-512 masks by their bits, else by vpsignb with the indices' +-1 bytes (4 loads
       instead of 4 byte lookups and a bit expansion) */
    static inline __m256i abi_iq_sgi4(const int8_t* q, unsigned i0, unsigned i1, unsigned i2, unsigned i3) {
    #if ABI_IQ_K
        return abi_iq_sgq(q, (uint32_t)abi_ksigns_iq2xs[i0] | ((uint32_t)abi_ksigns_iq2xs[i1] << 8)
                             | ((uint32_t)abi_ksigns_iq2xs[i2] << 16) | ((uint32_t)abi_ksigns_iq2xs[i3] << 24));
    #else
        const __m256i s = _mm256_set_epi64x((long long)abi_ksigns_iq2xs_pm1[i3], (long long)abi_ksigns_iq2xs_pm1[i2],
                                            (long long)abi_ksigns_iq2xs_pm1[i1], (long long)abi_ksigns_iq2xs_pm1[i0]);
        return _mm256_sign_epi8(abi_iq_q8(q), s);
    #endif
    }
    static inline __m256i abi_iq_sgk4(const int8_t* q, uint32_t aux) {
        return abi_iq_sgi4(q, aux & 127, (aux >> 7) & 127, (aux >> 14) & 127, (aux >> 21) & 127);
    }
    #if ABI_IQ_VBMI
    /* 7-bit indices in bytes -> ksigns bytes: the parity as bit 7 */
    static inline __m256i abi_iq_ksbytes(__m256i f) {
        return _mm256_ternarylogic_epi32(f, _mm256_slli_epi16(_mm256_popcnt_epi8(f), 7), _mm256_set1_epi8((char)0x80), 0xF8);
    }
    /* qword g holds four 7-bit indices from bit off: the 8 words of 32 sign bits */
    static inline void abi_iq_ks8(__m512i a, int off, uint32_t* sg) {
        const long long c = (long long)(off | (off + 7) << 8 | (off + 14) << 16 | (off + 21) << 24);
        __m512i f = _mm512_and_si512(_mm512_multishift_epi64_epi8(_mm512_set1_epi64(c), a), _mm512_set1_epi8(0x7f));
        _mm256_storeu_si256((__m256i*)sg, abi_iq_ksbytes(_mm512_castsi512_si256(_mm512_permutexvar_epi32(
            _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 0, 0, 0, 0, 0, 0, 0, 0), f))));
    }
    #endif

    #if ABI_IQ_VBMI && defined(__BMI2__)
    #define ABI_IQ_Z 1          /* 512-bit steps over two 32-element groups; pdep for grid indices */
    static inline __m512i abi_iq_dpwssd512(__m512i acc, __m512i a, __m512i b) {
    #if defined(__AVX512VNNI__)
        return _mm512_dpwssd_epi32(acc, a, b);
    #else
        return _mm512_add_epi32(acc, _mm512_madd_epi16(a, b));
    #endif
    }
    static inline __m512i abi_iq_dpbusd512(__m512i acc, __m512i u, __m512i s) {
    #if defined(__AVX512VNNI__)
        return _mm512_dpbusd_epi32(acc, u, s);
    #else
        return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1)));
    #endif
    }
    /* 16-bit codes of up to 256 rows (idx words 0..255) from a table held in 8 registers */
    static inline __m512i abi_iq_code256(const __m512i* t, __m512i idx) {
        const __mmask32 m6 = _mm512_test_epi16_mask(idx, _mm512_set1_epi16(64));
        const __mmask32 m7 = _mm512_test_epi16_mask(idx, _mm512_set1_epi16(128));
        __m512i r01 = _mm512_mask_blend_epi16(m6, _mm512_permutex2var_epi16(t[0], idx, t[1]), _mm512_permutex2var_epi16(t[2], idx, t[3]));
        __m512i r23 = _mm512_mask_blend_epi16(m6, _mm512_permutex2var_epi16(t[4], idx, t[5]), _mm512_permutex2var_epi16(t[6], idx, t[7]));
        return _mm512_mask_blend_epi16(m7, r01, r23);
    }
    /* the same for 512 rows from 16 registers */
    static inline __m512i abi_iq_code512(const __m512i* t, __m512i idx) {
        return _mm512_mask_blend_epi16(_mm512_test_epi16_mask(idx, _mm512_set1_epi16(256)), abi_iq_code256(t, idx), abi_iq_code256(t + 8, idx));
    }
    /* bytes of 64 rows (index bytes idx, bits 7 and 8 in the masks b7, b8) from a 256-byte
       table held in 4 registers, or a 512-byte one in 8 */
    static inline __m512i abi_iq_byte256(const __m512i* t, __m512i idx, __mmask64 b7) {
        return _mm512_mask_blend_epi8(b7, _mm512_permutex2var_epi8(t[0], idx, t[1]), _mm512_permutex2var_epi8(t[2], idx, t[3]));
    }
    static inline __m512i abi_iq_byte512(const __m512i* t, __m512i idx, __mmask64 b7, __mmask64 b8) {
        return _mm512_mask_blend_epi8(b8, abi_iq_byte256(t, idx, b7), abi_iq_byte256(t + 4, idx, b7));
    }
    /* rows 8 p .. 8 p + 7 of the 32 codes (2 bits an element) -> their 64 elements, each
       the byte val[code & 3] (val: a 64-byte table repeating every 4) */
    static inline __m512i abi_iq_expand8(__m512i codes, int p, __m512i val) {
        __m512i c = _mm512_permutexvar_epi16(_mm512_add_epi16(_mm512_set1_epi16((short)(8 * p)),
            _mm512_set_epi16(7,7,7,7, 6,6,6,6, 5,5,5,5, 4,4,4,4, 3,3,3,3, 2,2,2,2, 1,1,1,1, 0,0,0,0)), codes);
        c = _mm512_multishift_epi64_epi8(_mm512_set1_epi64(0x0e0c0a0806040200LL), c);
        return _mm512_permutexvar_epi8(c, val);         /* vpermb reads 6 index bits: val repeats */
    }
    /* rows 16 p .. 16 p + 15 of 32 codes (3 bits an element, 4 a row) -> their 64 elements,
       each the byte val[code & 7] (val: 8 bytes repeated) */
    static inline __m512i abi_iq_expand16x3(__m512i codes, int p, __m512i val) {
        __m512i c = _mm512_permutexvar_epi16(_mm512_add_epi16(_mm512_set1_epi16((short)(16 * p)),
            _mm512_set_epi16(15,14,15,14, 13,12,13,12, 11,10,11,10, 9,8,9,8, 7,6,7,6, 5,4,5,4, 3,2,3,2, 1,0,1,0)), codes);
        c = _mm512_multishift_epi64_epi8(_mm512_set1_epi64(0x1916131009060300LL), c);
        return _mm512_permutexvar_epi8(c, val);
    }
    /* 8 rows of an 8-byte grid, their indices 16 bits apart in a (rows 0-3) and b (rows
       4-7): each a plain 256-bit broadcast from memory, 4 merged by immediate blends. On
       this Zen 5 (2 vector loads a cycle) that beat, in ns a block of IQ1_S: masked 512-bit
       broadcasts (11.8 against 11.2), gathers (19), half the rows by scalar loads moved into
       vector registers (12), indices built by vector ops and read back from memory (18) */
    #define ABI_IQ_BC8(grid, v, j) _mm256_set1_epi64x((long long)(grid)[(uint16_t)((v) >> (16 * (j)))])
    static inline __m256i abi_iq_rows4(const uint64_t* grid, uint64_t a) {
        __m256i r = _mm256_blend_epi32(ABI_IQ_BC8(grid, a, 0), ABI_IQ_BC8(grid, a, 1), 0x0C);
        r = _mm256_blend_epi32(r, ABI_IQ_BC8(grid, a, 2), 0x30);
        return _mm256_blend_epi32(r, ABI_IQ_BC8(grid, a, 3), 0xC0);
    }
    static inline __m512i abi_iq_rows8(const uint64_t* grid, uint64_t a, uint64_t b) {
        return _mm512_inserti64x4(_mm512_castsi256_si512(abi_iq_rows4(grid, a)), abi_iq_rows4(grid, b), 1);
    }
    /* 64 activation bytes with the lanes set in ``signs`` negated */
    static inline __m512i abi_iq_sq512(const int8_t* q8, uint64_t signs) {
        __m512i q = _mm512_loadu_si512((const void*)q8);
        return _mm512_mask_sub_epi8(q, (__mmask64)signs, _mm512_setzero_si512(), q);
    }
    /* the 16 int32 lanes of a 512-bit block sum folded to the 8 the row loop takes */
    static inline __m256i abi_iq_fold512(__m512i acc) {
        return _mm256_add_epi32(_mm512_castsi512_si256(acc), _mm512_extracti64x4_epi64(acc, 1));
    }
    static inline __m512i abi_iq_val3(int a, int b, int c) {
        return _mm512_set1_epi32((int)((uint32_t)(uint8_t)a | (uint32_t)(uint8_t)b << 8 | (uint32_t)(uint8_t)c << 16));
    }
    #else
    #define ABI_IQ_Z 0
    #endif

    #if ABI_IQ_Z
    /* A block's weights unpacked for its dot with one activation block (the prompt tiles
       unpack a block once for many tokens): step p covers groups 2p, 2p + 1, i.e. the
       activation bytes 64 p .. 64 p + 63, as the grid magnitudes u, the sign bits sg (which
       negate the activation) and the int16 scales s (2 ls + 1) of the maddubs pairs. */
    typedef struct { __m512i u[4], s[4]; uint64_t sg[4]; } abi_iq_wb;
    /* the block sum of an unpacked block with q8 in 16 lanes; abi_iq_wdot folds them to the
       8 the row loop takes */
    ABI_IQ_BLOCK __m512i abi_iq_wdot16(const abi_iq_wb* b, const int8_t* q8) {
        __m512i acc = _mm512_setzero_si512();
        for (int p = 0; p < 4; ++p)
            acc = abi_iq_dpwssd512(acc, _mm512_maddubs_epi16(b->u[p], abi_iq_sq512(q8 + 64 * p, b->sg[p])), b->s[p]);
        return acc;
    }
    ABI_IQ_BLOCK __m256i abi_iq_wdot(const abi_iq_wb* b, const int8_t* q8) { return abi_iq_fold512(abi_iq_wdot16(b, q8)); }
    /* all 32 row codes looked up in registers (no scalar grid loads), their low and high
       bytes apart (byte permutes: every byte of the 64 read is looked up, the 32 that are
       indices used), and each step's 8 codes picked from the two at once */
    #define ABI_IQ2XXS_ROW(p, j) (long long)(((8ULL * (2 * (p) + (j) / 4) + (j) % 4) * 0x0101ULL + 0x4000ULL) * 0x0001000100010001ULL)
    ABI_IQ_BLOCK void abi_iqw_iq2_xxs(const uint8_t* w, abi_iq_wb* b) {
        const __m512i raw = _mm512_loadu_si512((const void*)(w + 2));
        abi_iq_ks8(raw, 32, (uint32_t*)b->sg);
        __m512i tl[4], th[4];
        for (int k = 0; k < 4; ++k) {
            tl[k] = _mm512_loadu_si512((const void*)(abi_iq2xxs_code_lo + 64 * k));
            th[k] = _mm512_loadu_si512((const void*)(abi_iq2xxs_code_hi + 64 * k));
        }
        const __mmask64 b7 = _mm512_movepi8_mask(raw);
        const __m512i lo = abi_iq_byte256(tl, raw, b7), hi = abi_iq_byte256(th, raw, b7);
        /* 2 ls + 1 of group g in word 4 g + 3 (top nibble of byte 8 g + 7) */
        const __m512i sc = _mm512_or_si512(_mm512_slli_epi16(_mm512_srli_epi16(raw, 12), 1), _mm512_set1_epi16(1));
        const __m512i val = abi_iq_val3(8, 25, 43);
        for (int p = 0; p < 4; ++p) {
            /* row j of step p (group 2 p + j / 4, index byte 8 (2 p + j / 4) + j % 4): its
               code 4 times in qword j, low byte from lo, high from hi; then 2 bits an element */
            const __m512i pick = _mm512_set_epi64(ABI_IQ2XXS_ROW(p, 7), ABI_IQ2XXS_ROW(p, 6), ABI_IQ2XXS_ROW(p, 5), ABI_IQ2XXS_ROW(p, 4),
                                                  ABI_IQ2XXS_ROW(p, 3), ABI_IQ2XXS_ROW(p, 2), ABI_IQ2XXS_ROW(p, 1), ABI_IQ2XXS_ROW(p, 0));
            const __m512i c = _mm512_multishift_epi64_epi8(_mm512_set1_epi64(0x0e0c0a0806040200LL), _mm512_permutex2var_epi8(lo, pick, hi));
            b->u[p] = _mm512_permutexvar_epi8(c, val);
            b->s[p] = _mm512_permutexvar_epi16(_mm512_set_epi16(
                8*p+7,8*p+7,8*p+7,8*p+7,8*p+7,8*p+7,8*p+7,8*p+7,8*p+7,8*p+7,8*p+7,8*p+7,8*p+7,8*p+7,8*p+7,8*p+7,
                8*p+3,8*p+3,8*p+3,8*p+3,8*p+3,8*p+3,8*p+3,8*p+3,8*p+3,8*p+3,8*p+3,8*p+3,8*p+3,8*p+3,8*p+3,8*p+3), sc);
        }
    }
    ABI_IQ_BLOCK __m256i abi_iqv_iq2_xxs(const uint8_t* w, const uint8_t* x) {
        abi_iq_wb b;
        abi_iqw_iq2_xxs(w, &b);
        return abi_iq_wdot(&b, (const int8_t*)(x + 4));
    }
    #else
    ABI_IQ_BLOCK __m256i abi_iqv_iq2_xxs(const uint8_t* w, const uint8_t* x) {
        const int8_t* q8 = (const int8_t*)(x + 4);
    #if ABI_IQ_VBMI
        uint32_t sg[8];
        abi_iq_ks8(_mm512_loadu_si512((const void*)(w + 2)), 32, sg);
    #endif
        /* 2 (aux >> 28) + 1 of group g in both words of dword g */
        const __m256i ix = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
        __m256i sd = _mm256_blend_epi32(_mm256_permutevar8x32_epi32(_mm256_srli_epi64(_mm256_loadu_si256((const __m256i*)(w + 2)), 60), ix),
                                        _mm256_permutevar8x32_epi32(_mm256_srli_epi64(_mm256_loadu_si256((const __m256i*)(w + 34)), 60), ix), 0xF0);
        sd = _mm256_or_si256(_mm256_add_epi32(sd, sd), _mm256_set1_epi32(1));
        sd = _mm256_or_si256(sd, _mm256_slli_epi32(sd, 16));
        __m256i acc = _mm256_setzero_si256();
        ABI_IQ_UNROLL
        for (int g = 0; g < 8; ++g) {
            const uint8_t* q = w + 2 + 8 * g;
            __m256i grid = _mm256_set_epi64x((long long)abi_iq2xxs_grid[q[3]], (long long)abi_iq2xxs_grid[q[2]],
                                             (long long)abi_iq2xxs_grid[q[1]], (long long)abi_iq2xxs_grid[q[0]]);
    #if ABI_IQ_VBMI
            const __m256i sq = abi_iq_sgq(q8 + 32 * g, sg[g]);
    #else
            const __m256i sq = abi_iq_sgk4(q8 + 32 * g, abi_ld32(q + 4));
    #endif
            acc = abi_iq_gdot(acc, grid, sq, _mm256_permutevar8x32_epi32(sd, _mm256_set1_epi32(g)));
        }
        return acc;
    }
    #endif

    #if ABI_IQ_Z
    /* the 32 row codes looked up in 16 registers, two groups a 512-bit step */
    ABI_IQ_BLOCK __m256i abi_iqv_iq2_xs(const uint8_t* w, const uint8_t* x) {
        const int8_t* q8 = (const int8_t*)(x + 4);
        uint64_t sg[4];
        const __m512i qs = _mm512_loadu_si512((const void*)(w + 2));
        _mm256_storeu_si256((__m256i*)sg, abi_iq_ksbytes(_mm512_cvtepi16_epi8(_mm512_srli_epi16(qs, 9))));
        __m512i t[16];
        for (int k = 0; k < 16; ++k) t[k] = _mm512_loadu_si512((const void*)(abi_iq2xs_code + 32 * k));
        const __m512i codes = abi_iq_code512(t, _mm512_and_si512(qs, _mm512_set1_epi16(511)));
        /* 2 ls + 1 per 16 elements as 16 words */
        uint64_t scp; memcpy(&scp, w + 66, 8);
        const __m512i sc = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(_mm256_castsi256_si128(abi_iq_nib_scales(scp))));
        const __m512i val = abi_iq_val3(8, 25, 43);
        __m512i acc = _mm512_setzero_si512();
        for (int p = 0; p < 4; ++p) {
            const __m512i q = abi_iq_sq512(q8 + 64 * p, sg[p]);
            __m512i s = _mm512_permutexvar_epi16(_mm512_add_epi16(_mm512_set1_epi16((short)(4 * p)),
                _mm512_set_epi16(3,3,3,3,3,3,3,3, 2,2,2,2,2,2,2,2, 1,1,1,1,1,1,1,1, 0,0,0,0,0,0,0,0)), sc);
            acc = abi_iq_dpwssd512(acc, _mm512_maddubs_epi16(abi_iq_expand8(codes, p, val), q), s);
        }
        return abi_iq_fold512(acc);
    }
    #else
    ABI_IQ_BLOCK __m256i abi_iqv_iq2_xs(const uint8_t* w, const uint8_t* x) {
        const int8_t* q8 = (const int8_t*)(x + 4);
    #if ABI_IQ_VBMI
        uint32_t sg[8];
        uint16_t gi[32];
        __m512i qs = _mm512_loadu_si512((const void*)(w + 2));
        _mm512_storeu_si512((void*)gi, _mm512_and_si512(qs, _mm512_set1_epi16(511)));
        _mm256_storeu_si256((__m256i*)sg, abi_iq_ksbytes(_mm512_cvtepi16_epi8(_mm512_srli_epi16(qs, 9))));
    #endif
        uint64_t scp; memcpy(&scp, w + 66, 8);
        const __m256i scb = abi_iq_nib_scales(scp);
        __m256i acc = _mm256_setzero_si256();
        ABI_IQ_UNROLL
        for (int g = 0; g < 8; ++g) {
    #if ABI_IQ_VBMI
            const uint16_t* i = gi + 4 * g;
            const __m256i sq = abi_iq_sgq(q8 + 32 * g, sg[g]);
    #else      /* a group's 4 words: 9-bit grid index, 7-bit sign index above it */
            const uint64_t v = abi_iq_ld64(w + 2 + 8 * g);
            const unsigned i[4] = {(unsigned)v & 511, (unsigned)(v >> 16) & 511, (unsigned)(v >> 32) & 511, (unsigned)(v >> 48) & 511};
            const __m256i sq = abi_iq_sgi4(q8 + 32 * g, (unsigned)(v >> 9) & 127, (unsigned)(v >> 25) & 127, (unsigned)(v >> 41) & 127, (unsigned)(v >> 57));
    #endif
            __m256i grid = _mm256_set_epi64x((long long)abi_iq2xs_grid[i[3]], (long long)abi_iq2xs_grid[i[2]],
                                             (long long)abi_iq2xs_grid[i[1]], (long long)abi_iq2xs_grid[i[0]]);
            acc = abi_iq_gdot(acc, grid, sq, abi_iq_sc16(scb, 2 * g, 2 * g + 1));
        }
        return acc;
    }
    #endif

    /* group k's 4 indices into the 1024-row grid: qs bytes low, qh's 2 bits above them */
    #define ABI_IQ2S_IX4(w, k) abi_iq_ix4((w) + 2 + 4 * (k), (w)[66 + (k)], 0x0300030003000300ULL)
    #if ABI_IQ_Z
    /* a grid row is 8 bytes of a 1024-row table: 4 indices a 64-bit word by two pdep, each
       row one load (abi_iq_rows8: faster here than the table in 32 registers, which the 256-
       and 512-row grids use), two groups a step */
    ABI_IQ_BLOCK __m256i abi_iqv_iq2_s(const uint8_t* w, const uint8_t* x) {
        const int8_t* q8 = (const int8_t*)(x + 4);
        const __m512i sc = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(_mm256_castsi256_si128(abi_iq_nib_scales(abi_iq_ld64(w + 74)))));
        __m512i acc = _mm512_setzero_si512();
        for (int p = 0; p < 4; ++p) {
            const __m512i g = abi_iq_rows8(abi_iq2s_grid, ABI_IQ2S_IX4(w, 2 * p), ABI_IQ2S_IX4(w, 2 * p + 1));
            const __m512i q = abi_iq_sq512(q8 + 64 * p, abi_iq_ld64(w + 34 + 8 * p));
            __m512i s = _mm512_permutexvar_epi16(_mm512_add_epi16(_mm512_set1_epi16((short)(4 * p)),
                _mm512_set_epi16(3,3,3,3,3,3,3,3, 2,2,2,2,2,2,2,2, 1,1,1,1,1,1,1,1, 0,0,0,0,0,0,0,0)), sc);
            acc = abi_iq_dpwssd512(acc, _mm512_maddubs_epi16(g, q), s);
        }
        return abi_iq_fold512(acc);
    }
    #else
    ABI_IQ_BLOCK __m256i abi_iqv_iq2_s(const uint8_t* w, const uint8_t* x) {
        const int8_t* q8 = (const int8_t*)(x + 4);
    #if ABI_IQ_VBMI
        uint16_t gi[32];
        /* index l: qs[l] | bits 2 (l % 4) of qh[l / 4] as bits 8, 9 */
        __m512i qh = _mm512_permutexvar_epi16(_mm512_srli_epi16(_mm512_set_epi16(31,30,29,28,27,26,25,24,23,22,21,20,19,18,17,16,
                                                                                  15,14,13,12,11,10,9,8,7,6,5,4,3,2,1,0), 2),
                                              _mm512_cvtepu8_epi16(_mm256_zextsi128_si256(_mm_loadl_epi64((const __m128i*)(w + 66)))));
        qh = _mm512_sllv_epi16(qh, _mm512_set4_epi64(0x0002000400060008LL, 0x0002000400060008LL, 0x0002000400060008LL, 0x0002000400060008LL));
        qh = _mm512_and_si512(qh, _mm512_set1_epi16(0x300));
        _mm512_storeu_si512((void*)gi, _mm512_or_si512(qh, _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i*)(w + 2)))));
    #endif
        uint64_t scp; memcpy(&scp, w + 74, 8);
        const __m256i scb = abi_iq_nib_scales(scp);
        __m256i acc = _mm256_setzero_si256();
        ABI_IQ_UNROLL
        for (int g = 0; g < 8; ++g) {
    #if ABI_IQ_VBMI
            const uint16_t* i = gi + 4 * g;
    #else      /* in a register: a stored index array was slow here */
            const uint64_t ix = ABI_IQ2S_IX4(w, g);
            const unsigned i[4] = {(uint16_t)ix, (uint16_t)(ix >> 16), (uint16_t)(ix >> 32), (unsigned)(ix >> 48)};
    #endif
            __m256i grid = _mm256_set_epi64x((long long)abi_iq2s_grid[i[3]], (long long)abi_iq2s_grid[i[2]],
                                             (long long)abi_iq2s_grid[i[1]], (long long)abi_iq2s_grid[i[0]]);
            acc = abi_iq_gdot(acc, grid, abi_iq_sgq(q8 + 32 * g, abi_ld32(w + 34 + 4 * g)), abi_iq_sc16(scb, 2 * g, 2 * g + 1));
        }
        return acc;
    }
    #endif

    #if ABI_IQ_Z
    /* the 64 row codes looked up in registers, two groups a 512-bit step */
    ABI_IQ_BLOCK __m256i abi_iqv_iq3_xxs(const uint8_t* w, const uint8_t* x) {
        const int8_t* q8 = (const int8_t*)(x + 4);
        uint64_t sg[4];
        const __m256i aux = _mm256_loadu_si256((const __m256i*)(w + 66));
        abi_iq_ks8(_mm512_cvtepu32_epi64(aux), 0, (uint32_t*)sg);
        /* 2 (aux >> 28) + 1 of group g in word 2 g */
        const __m512i sc = _mm512_castsi256_si512(_mm256_or_si256(_mm256_slli_epi32(_mm256_srli_epi32(aux, 28), 1), _mm256_set1_epi32(1)));
        __m512i t[8];
        for (int k = 0; k < 8; ++k) t[k] = _mm512_loadu_si512((const void*)(abi_iq3xxs_code + 32 * k));
        const __m512i codes[2] = {abi_iq_code256(t, _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i*)(w + 2)))),
                                  abi_iq_code256(t, _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i*)(w + 34))))};
        const __m512i val = _mm512_set1_epi64(0x3e342c241c140c04LL);     /* 4, 12, .., 52, 62 */
        __m512i acc = _mm512_setzero_si512();
        for (int p = 0; p < 4; ++p) {
            const __m512i q = abi_iq_sq512(q8 + 64 * p, sg[p]);
            __m512i s = _mm512_permutexvar_epi16(_mm512_mask_blend_epi16(0xFFFF0000u, _mm512_set1_epi16((short)(4 * p)),
                                                                         _mm512_set1_epi16((short)(4 * p + 2))), sc);
            acc = abi_iq_dpwssd512(acc, _mm512_maddubs_epi16(abi_iq_expand16x3(codes[p >> 1], p & 1, val), q), s);
        }
        return abi_iq_fold512(acc);
    }
    #else
    ABI_IQ_BLOCK __m256i abi_iqv_iq3_xxs(const uint8_t* w, const uint8_t* x) {
        const int8_t* q8 = (const int8_t*)(x + 4);
        const __m256i aux = _mm256_loadu_si256((const __m256i*)(w + 66));
    #if ABI_IQ_VBMI
        uint32_t sg[8];
        abi_iq_ks8(_mm512_cvtepu32_epi64(aux), 0, sg);
    #endif
        /* scale 2 (aux >> 28) + 1 of group g as int16 g, in both lanes */
        __m128i s = _mm_packus_epi32(_mm256_castsi256_si128(_mm256_srli_epi32(aux, 28)), _mm256_extracti128_si256(_mm256_srli_epi32(aux, 28), 1));
        s = _mm_add_epi16(_mm_add_epi16(s, s), _mm_set1_epi16(1));
        const __m256i scw = _mm256_broadcastsi128_si256(s);
        __m256i acc = _mm256_setzero_si256();
        ABI_IQ_UNROLL
        for (int g = 0; g < 8; ++g) {
            const uint8_t* q = w + 2 + 8 * g;      /* scalar loads: AVX2 gathers were slower here */
            __m256i grid = _mm256_set_epi32(
                (int)abi_iq3xxs_grid[q[7]], (int)abi_iq3xxs_grid[q[6]], (int)abi_iq3xxs_grid[q[5]], (int)abi_iq3xxs_grid[q[4]],
                (int)abi_iq3xxs_grid[q[3]], (int)abi_iq3xxs_grid[q[2]], (int)abi_iq3xxs_grid[q[1]], (int)abi_iq3xxs_grid[q[0]]);
    #if ABI_IQ_VBMI
            const __m256i sq = abi_iq_sgq(q8 + 32 * g, sg[g]);
    #else
            const __m256i sq = abi_iq_sgk4(q8 + 32 * g, abi_ld32(w + 66 + 4 * g));
    #endif
            acc = abi_iq_gdot(acc, grid, sq, _mm256_shuffle_epi8(scw, _mm256_set1_epi16((short)(0x0100 + 0x0202 * g))));
        }
        return acc;
    }
    #endif

    #if ABI_IQ_Z
    /* the 64 row codes looked up in 16 registers, their low and high bytes apart: a byte
       permute takes 128 rows and 64 indices, so 8 of them (and 6 blends on index bits 7
       and 8) replace 16 word permutes (and 14 blends) */
    ABI_IQ_BLOCK void abi_iqw_iq3_s(const uint8_t* w, abi_iq_wb* b) {
        /* index 8 g + l: qs | bit l of qh[g] as bit 8 */
        const __m512i qs = _mm512_loadu_si512((const void*)(w + 2));
        const __mmask64 b8 = (__mmask64)abi_iq_ld64(w + 66), b7 = _mm512_movepi8_mask(qs);
        __m512i tl[8], th[8];
        for (int k = 0; k < 8; ++k) {
            tl[k] = _mm512_loadu_si512((const void*)(abi_iq3s_code_lo + 64 * k));
            th[k] = _mm512_loadu_si512((const void*)(abi_iq3s_code_hi + 64 * k));
        }
        const __m512i lo = abi_iq_byte512(tl, qs, b7, b8), hi = abi_iq_byte512(th, qs, b7, b8);
        /* the 16-bit codes of rows 0-31 and 32-63: byte 2 k from lo, 2 k + 1 from hi */
        const __m512i codes[2] = {
            _mm512_permutex2var_epi8(lo, _mm512_set_epi8(
                95,31,94,30,93,29,92,28, 91,27,90,26,89,25,88,24, 87,23,86,22,85,21,84,20, 83,19,82,18,81,17,80,16,
                79,15,78,14,77,13,76,12, 75,11,74,10,73,9,72,8, 71,7,70,6,69,5,68,4, 67,3,66,2,65,1,64,0), hi),
            _mm512_permutex2var_epi8(lo, _mm512_set_epi8(
                127,63,126,62,125,61,124,60, 123,59,122,58,121,57,120,56, 119,55,118,54,117,53,116,52, 115,51,114,50,113,49,112,48,
                111,47,110,46,109,45,108,44, 107,43,106,42,105,41,104,40, 103,39,102,38,101,37,100,36, 99,35,98,34,97,33,96,32), hi)};
        const __m512i val = _mm512_set1_epi64(0x0f0d0b0907050301LL);     /* 1, 3, .., 15 */
        for (int p = 0; p < 4; ++p) {
            b->sg[p] = abi_iq_ld64(w + 74 + 8 * p);
            const int c = w[106 + p];
            b->s[p] = _mm512_mask_blend_epi16(0xFFFF0000u, _mm512_set1_epi16((short)(2 * (c & 15) + 1)), _mm512_set1_epi16((short)(2 * (c >> 4) + 1)));
            b->u[p] = abi_iq_expand16x3(codes[p >> 1], p & 1, val);
        }
    }
    ABI_IQ_BLOCK __m256i abi_iqv_iq3_s(const uint8_t* w, const uint8_t* x) {
        abi_iq_wb b;
        abi_iqw_iq3_s(w, &b);
        return abi_iq_wdot(&b, (const int8_t*)(x + 4));
    }
    #else
    ABI_IQ_BLOCK __m256i abi_iqv_iq3_s(const uint8_t* w, const uint8_t* x) {
        const int8_t* q8 = (const int8_t*)(x + 4);
        /* index 8 g + l: qs | bit l of qh[g] as bit 8 */
    #if ABI_IQ_K
        uint16_t gi[64];
        const uint64_t qh = (uint64_t)abi_ld32(w + 66) | ((uint64_t)abi_ld32(w + 70) << 32);
        const __m512i lo = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i*)(w + 2)));
        const __m512i hi = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i*)(w + 34)));
        _mm512_storeu_si512((void*)gi, _mm512_mask_add_epi16(lo, (__mmask32)qh, lo, _mm512_set1_epi16(256)));
        _mm512_storeu_si512((void*)(gi + 32), _mm512_mask_add_epi16(hi, (__mmask32)(qh >> 32), hi, _mm512_set1_epi16(256)));
    #endif
        const __m256i scb = abi_iq_nib_scales(abi_ld32(w + 106));
        __m256i acc = _mm256_setzero_si256();
        ABI_IQ_UNROLL
        for (int g = 0; g < 8; ++g) {
    #if ABI_IQ_K
            const uint16_t* i = gi + 8 * g;
    #else
            const uint64_t a = abi_iq_ix4(w + 2 + 8 * g, w[66 + g], 0x0100010001000100ULL);
            const uint64_t b = abi_iq_ix4(w + 6 + 8 * g, w[66 + g] >> 4, 0x0100010001000100ULL);
            const unsigned i[8] = {(uint16_t)a, (uint16_t)(a >> 16), (uint16_t)(a >> 32), (unsigned)(a >> 48),
                                   (uint16_t)b, (uint16_t)(b >> 16), (uint16_t)(b >> 32), (unsigned)(b >> 48)};
    #endif
            __m256i grid = _mm256_set_epi32(
                (int)abi_iq3s_grid[i[7]], (int)abi_iq3s_grid[i[6]], (int)abi_iq3s_grid[i[5]], (int)abi_iq3s_grid[i[4]],
                (int)abi_iq3s_grid[i[3]], (int)abi_iq3s_grid[i[2]], (int)abi_iq3s_grid[i[1]], (int)abi_iq3s_grid[i[0]]);
            acc = abi_iq_gdot(acc, grid, abi_iq_sgq(q8 + 32 * g, abi_ld32(w + 74 + 4 * g)), abi_iq_sc16(scb, g, g));
        }
        return acc;
    }
    #endif

    /* IQ1: 8 grid + ds = u - 9 with u = 8 (grid + 1) + (ds + 1) in 0..18, so per scale
       group of 16: (2 s + 1) (sum u q - 9 bsum); the bsums come with the Q8_K block. */
    static inline __m256i abi_iq1_u(uint64_t r0, uint64_t r1, uint64_t r2, uint64_t r3, __m256i dsp1) {
        __m256i g = _mm256_add_epi8(_mm256_set_epi64x((long long)r3, (long long)r2, (long long)r1, (long long)r0), _mm256_set1_epi8(1));
        return _mm256_add_epi8(_mm256_slli_epi16(g, 3), dsp1);       /* bytes stay < 32: no carry */
    }

    #if ABI_IQ_Z
    /* 4 indices of 11 bits a 64-bit word: qs bytes low, 3 bits of each qh word above them
       (IQ1_M: bits 0-2 of each nibble) */
    #define ABI_IQ1S_IX4(w, k) (_pdep_u64(abi_ld32((w) + 2 + 4 * (k)), 0x00FF00FF00FF00FFULL) | _pdep_u64(abi_ld16((w) + 34 + 2 * (k)), 0x0700070007000700ULL))
    #define ABI_IQ1M_IX4(w, k) (_pdep_u64(abi_ld32((w) + 4 * (k)), 0x00FF00FF00FF00FFULL) | \\
                                (_pdep_u64(abi_ld16((w) + 32 + 2 * (k)), 0x0F000F000F000F00ULL) & 0x0700070007000700ULL))
    /* An IQ1 block as 4 x 64 unsigned bytes u (elements 64 p .. 64 p + 63 in u[p]) and 16
       int16 weights cf of the activation's 16 bsums, such that its integer sum is
       S = (sum_e u_e q_e << shift) + sum_j cf_j bsum_j. u is a grid row's value times its
       scale, looked up per 128-bit lane with a shuffle: a dpbusd takes it as it is. The
       prompt tiles (_qtile.pxd) unpack a block once for many tokens and take the same
       lanes. The grid rows (2048, too many for registers) one load each by abi_iq_rows8.
       abi_iq1_lanes: the 8 int32 lanes of S from the unpacked block and the activation's
       4 x 64 q and bsums (dpbusd does not saturate; u <= 135). */
    ABI_IQ_BLOCK __m256i abi_iq1_lanes(const __m512i* u, __m256i cf, const __m512i* q, __m256i bsums, int shift) {
        __m512i acc = _mm512_setzero_si512();
        for (int p = 0; p < 4; ++p) acc = abi_iq_dpbusd512(acc, u[p], q[p]);
        return abi_dpwssd(_mm256_slli_epi32(abi_iq_fold512(acc), shift), bsums, cf);
    }
    ABI_IQ_BLOCK __m256i abi_iq1_dot(const __m512i* u, __m256i cf, const uint8_t* x, int shift) {
        __m512i q[4];
        for (int p = 0; p < 4; ++p) q[p] = _mm512_loadu_si512((const void*)(x + 4 + 64 * p));
        return abi_iq1_lanes(u, cf, q, _mm256_loadu_si256((const __m256i*)(x + 260)), shift);
    }
    /* IQ1_S: 8 grid + ds = 8 (grid + 1) + (ds - 8): per group of 32, (2 s + 1) (8 sum
       (grid + 1) q + (ds - 8) bsum); u = (2 s + 1) (grid + 1), shift 3 */
    #define ABI_IQ1S_SHIFT 3
    ABI_IQ_BLOCK __m256i abi_iq1s_unpack(const uint8_t* w, __m512i* u) {
        const __m128i qh = _mm_loadu_si128((const __m128i*)(w + 34));
        const __m128i sc = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(qh, 11), _mm_set1_epi16(14)), _mm_set1_epi16(1));
        const __m128i dm8 = _mm_sub_epi16(_mm_or_si128(_mm_srai_epi16(qh, 15), _mm_set1_epi16(1)), _mm_set1_epi16(8));
        const __m128i cf = _mm_mullo_epi16(sc, dm8);        /* word g: the weight of group g's two bsums */
        /* word g: bytes 2 s + 1 and 2 (2 s + 1), picked by grid bytes 0 and 1; -1 (0xFF) gives 0 */
        const __m512i st = _mm512_castsi128_si512(_mm_mullo_epi16(sc, _mm_set1_epi16(0x0201)));
        for (int p = 0; p < 4; ++p) {
            const __m512i g = abi_iq_rows8(abi_iq1s_grid, ABI_IQ1S_IX4(w, 2 * p), ABI_IQ1S_IX4(w, 2 * p + 1));
            const __m512i gp = _mm512_mask_blend_epi16(0xFFFF0000u, _mm512_set1_epi16((short)(2 * p)), _mm512_set1_epi16((short)(2 * p + 1)));
            u[p] = _mm512_shuffle_epi8(_mm512_permutexvar_epi16(gp, st), g);
        }
        return _mm256_set_m128i(_mm_unpackhi_epi16(cf, cf), _mm_unpacklo_epi16(cf, cf));
    }
    ABI_IQ_BLOCK __m256i abi_iqv_iq1_s(const uint8_t* w, const uint8_t* x) {
        __m512i u[4];
        const __m256i cf = abi_iq1s_unpack(w, u);
        return abi_iq1_dot(u, cf, x, ABI_IQ1S_SHIFT);
    }
    #else
    /* a block's operands: per group 2 s + 1 in word g (sc, both lanes in scw), ds + 1 in the
       bytes of word g (dw: 0 where qh's bit 15 is set, else 2); the bsums' weights are
       -9 sc, pairwise (abi_iq1s_bw); the prompt tiles (_qtile_avx2.pxd) take the same */
    ABI_IQ_BLOCK __m128i abi_iq1s_sc(const uint8_t* w) {
        return _mm_or_si128(_mm_and_si128(_mm_srli_epi16(_mm_loadu_si128((const __m128i*)(w + 34)), 11), _mm_set1_epi16(14)), _mm_set1_epi16(1));
    }
    ABI_IQ_BLOCK __m256i abi_iq1s_dw(const uint8_t* w) {
        return _mm256_broadcastsi128_si256(_mm_andnot_si128(_mm_srai_epi16(_mm_loadu_si128((const __m128i*)(w + 34)), 15), _mm_set1_epi8(2)));
    }
    ABI_IQ_BLOCK __m256i abi_iq1s_bw(__m128i sc, short f) {
        const __m128i cf = _mm_mullo_epi16(sc, _mm_set1_epi16(f));
        return _mm256_set_m128i(_mm_unpackhi_epi16(cf, cf), _mm_unpacklo_epi16(cf, cf));
    }
    /* group g's unsigned values (qh's low 12 bits, 3 a row, above the qs bytes) */
    ABI_IQ_BLOCK __m256i abi_iq1s_group(const uint8_t* w, int g, __m256i dw) {
        const uint64_t ix = abi_iq_ix4(w + 2 + 4 * g, abi_ld16(w + 34 + 2 * g), 0x0700070007000700ULL);
        return abi_iq1_u(abi_iq1s_grid[(uint16_t)ix], abi_iq1s_grid[(uint16_t)(ix >> 16)], abi_iq1s_grid[(uint16_t)(ix >> 32)],
                         abi_iq1s_grid[ix >> 48], _mm256_shuffle_epi8(dw, _mm256_set1_epi16((short)(0x0100 + 0x0202 * g))));
    }
    ABI_IQ_BLOCK __m256i abi_iqv_iq1_s(const uint8_t* w, const uint8_t* x) {
        const int8_t* q8 = (const int8_t*)(x + 4);
        const __m128i sc = abi_iq1s_sc(w);
        __m256i acc = abi_dpwssd(_mm256_setzero_si256(), _mm256_loadu_si256((const __m256i*)(x + 260)), abi_iq1s_bw(sc, -9));
        const __m256i scw = _mm256_broadcastsi128_si256(sc), dw = abi_iq1s_dw(w);
        ABI_IQ_UNROLL
        for (int g = 0; g < 8; ++g)
            acc = abi_iq_gdot(acc, abi_iq1s_group(w, g, dw), abi_iq_q8(q8 + 32 * g),
                              _mm256_shuffle_epi8(scw, _mm256_set1_epi16((short)(0x0100 + 0x0202 * g))));
        return acc;
    }
    #endif

    #if ABI_IQ_Z
    /* IQ1_M: a scale per 16 elements (a 128-bit lane), a delta sign per row: 8 grid + ds =
       2 v - 9 with v = 4 (grid + 1) + h, h = (ds + 1) / 2; u = (2 s + 1) v <= 135, shift 1,
       the bsums weighted -9 (2 s + 1). v by a shuffle of the lane's table (2 s + 1) *
       [0, 4, 8, 1, 5, 9] with index grid + 1 + 3 h. */
    #define ABI_IQ1M_SHIFT 1
    ABI_IQ_BLOCK __m256i abi_iq1m_unpack(const uint8_t* w, __m512i* u) {
        const __m256i sw = _mm256_permutevar8x32_epi32(_mm256_castsi128_si256(_mm_loadl_epi64((const __m128i*)(w + 48))),
                                                       _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
        __m256i s = _mm256_shuffle_epi8(sw, _mm256_setr_epi8(0,1,0,1,0,1,0,1, 2,3,2,3,2,3,2,3, 0,1,0,1,0,1,0,1, 2,3,2,3,2,3,2,3));
        s = _mm256_srli_epi16(_mm256_mullo_epi16(s, _mm256_setr_epi16(512, 64, 8, 1, 512, 64, 8, 1, 512, 64, 8, 1, 512, 64, 8, 1)), 9);
        s = _mm256_or_si256(_mm256_and_si256(_mm256_slli_epi16(s, 1), _mm256_set1_epi16(14)), _mm256_set1_epi16(1));
        const __m512i sz = _mm512_castsi256_si512(s);
        /* per lane words 0-2: bytes v = 0, 4, 8, 1, 5, 9, times 2 s + 1 (no word overflows) */
        const __m512i vt = _mm512_broadcast_i32x4(_mm_setr_epi16(4 << 8, 8 | 1 << 8, 5 | 9 << 8, 0, 0, 0, 0, 0));
        const __m512i one = _mm512_set1_epi8(1), four = _mm512_set1_epi8(4);
        const __m512i nbit = _mm512_set_epi64(1LL << 31, 1LL << 27, 1LL << 23, 1LL << 19, 1LL << 15, 1LL << 11, 1LL << 7, 1LL << 3);
        for (int p = 0; p < 4; ++p) {
            const uint8_t* h = w + 32 + 4 * p;     /* nibbles of rows 8 p .. 8 p + 7 */
            const __m512i g = abi_iq_rows8(abi_iq1s_grid, ABI_IQ1M_IX4(w, 2 * p), ABI_IQ1M_IX4(w, 2 * p + 1));
            /* grid + 1 + 3 h: h = 0 in the rows whose nibble has bit 3 (negative delta) */
            const __mmask8 neg = _mm512_test_epi64_mask(_mm512_set1_epi64((long long)abi_ld32(h)), nbit);
            const __m512i ix = _mm512_add_epi8(g, _mm512_mask_blend_epi64(neg, four, one));
            /* scale j covers elements 16 j .. 16 j + 15 */
            const __m512i sc = _mm512_permutexvar_epi16(_mm512_add_epi16(_mm512_set1_epi16((short)(4 * p)),
                _mm512_set_epi16(3,3,3,3,3,3,3,3, 2,2,2,2,2,2,2,2, 1,1,1,1,1,1,1,1, 0,0,0,0,0,0,0,0)), sz);
            u[p] = _mm512_shuffle_epi8(_mm512_mullo_epi16(sc, vt), ix);
        }
        return _mm256_mullo_epi16(s, _mm256_set1_epi16(-9));
    }
    ABI_IQ_BLOCK __m256i abi_iqv_iq1_m(const uint8_t* w, const uint8_t* x) {
        __m512i u[4];
        const __m256i cf = abi_iq1m_unpack(w, u);
        return abi_iq1_dot(u, cf, x, ABI_IQ1M_SHIFT);
    }
    #else
    /* a block's operands: its 16 scales 2 s_j + 1 (int16 j), ds + 1 per row a byte (rows
       0-15 in dl, 16-31 in dh, both lanes: 0 where the row's nibble has bit 3 set, else 2),
       the scales of the even 16 elements in se's low lane and the odd ones in its high (a
       group's two by one in-lane shuffle); the prompt tiles (_qtile_avx2.pxd) take the same */
    typedef struct { __m256i s, dl, dh, se; } abi_iq1m_ops;
    ABI_IQ_BLOCK abi_iq1m_ops abi_iq1m_block(const uint8_t* w) {
        abi_iq1m_ops o;
        /* 16 scales of 3 bits, 4 per u16 at w + 48 */
        const __m256i sw = _mm256_permutevar8x32_epi32(_mm256_castsi128_si256(_mm_loadl_epi64((const __m128i*)(w + 48))),
                                                       _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
        __m256i s = _mm256_shuffle_epi8(sw, _mm256_setr_epi8(0,1,0,1,0,1,0,1, 2,3,2,3,2,3,2,3, 0,1,0,1,0,1,0,1, 2,3,2,3,2,3,2,3));
        s = _mm256_srli_epi16(_mm256_mullo_epi16(s, _mm256_setr_epi16(512, 64, 8, 1, 512, 64, 8, 1, 512, 64, 8, 1, 512, 64, 8, 1)), 9);
        o.s = _mm256_or_si256(_mm256_and_si256(_mm256_slli_epi16(s, 1), _mm256_set1_epi16(14)), _mm256_set1_epi16(1));
        const __m128i t = _mm_xor_si128(_mm_loadu_si128((const __m128i*)(w + 32)), _mm_set1_epi8((char)0x88));
        const __m128i ev = _mm_and_si128(_mm_srli_epi16(t, 2), _mm_set1_epi8(2)), od = _mm_and_si128(_mm_srli_epi16(t, 6), _mm_set1_epi8(2));
        o.dl = _mm256_broadcastsi128_si256(_mm_unpacklo_epi8(ev, od));
        o.dh = _mm256_broadcastsi128_si256(_mm_unpackhi_epi8(ev, od));
        o.se = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(o.s, _mm256_setr_epi8(0,1,4,5,8,9,12,13, 2,3,6,7,10,11,14,15,
                                                                                  0,1,4,5,8,9,12,13, 2,3,6,7,10,11,14,15)), 0xD8);
        return o;
    }
    /* group g (rows 4g .. 4g + 3: qs bytes | bits 0-2 of their nibbles): its unsigned values */
    ABI_IQ_BLOCK __m256i abi_iq1m_group(const uint8_t* w, int g, const abi_iq1m_ops* o) {
        const uint64_t ix = abi_iq_ix4(w + 4 * g, abi_ld16(w + 32 + 2 * g) & 0x7777u, 0x0F000F000F000F00ULL);
        const __m256i d = _mm256_shuffle_epi8(g < 4 ? o->dl : o->dh, _mm256_add_epi8(_mm256_set1_epi8((char)(4 * (g & 3))),
            _mm256_setr_epi8(0,0,0,0,0,0,0,0, 1,1,1,1,1,1,1,1, 2,2,2,2,2,2,2,2, 3,3,3,3,3,3,3,3)));
        return abi_iq1_u(abi_iq1s_grid[(uint16_t)ix], abi_iq1s_grid[(uint16_t)(ix >> 16)],
                         abi_iq1s_grid[(uint16_t)(ix >> 32)], abi_iq1s_grid[ix >> 48], d);
    }
    ABI_IQ_BLOCK __m256i abi_iqv_iq1_m(const uint8_t* w, const uint8_t* x) {
        const int8_t* q8 = (const int8_t*)(x + 4);
        const abi_iq1m_ops o = abi_iq1m_block(w);
        __m256i acc = abi_dpwssd(_mm256_setzero_si256(), _mm256_loadu_si256((const __m256i*)(x + 260)),
                                 _mm256_mullo_epi16(o.s, _mm256_set1_epi16(-9)));
        ABI_IQ_UNROLL
        for (int g = 0; g < 8; ++g)
            acc = abi_iq_gdot(acc, abi_iq1m_group(w, g, &o), abi_iq_q8(q8 + 32 * g),
                              _mm256_shuffle_epi8(o.se, _mm256_set1_epi16((short)(0x0100 + 0x0202 * g))));
        return acc;
    }
    #endif

    /* ternary: sum t q - sum q. A trit n of byte b is ((b 3^n mod 256) 3) >> 8: with b in
       the high byte of an int16 lane, mullo gives the mod 256 and mulhi the rest exactly. */
    static inline __m256i abi_tq1_trits(__m256i ev, __m256i od, __m256i p) {
        const __m256i three = _mm256_set1_epi16(3);
        __m256i te = _mm256_mulhi_epu16(_mm256_mullo_epi16(ev, p), three);
        __m256i to = _mm256_mulhi_epu16(_mm256_mullo_epi16(od, p), three);
        return _mm256_or_si256(te, _mm256_slli_epi16(to, 8));
    }

    #if ABI_IQ_Z
    static inline __m512i abi_tq1_trits512(__m512i b, __m512i p) {
        const __m512i three = _mm512_set1_epi16(3);
        __m512i te = _mm512_mulhi_epu16(_mm512_mullo_epi16(_mm512_slli_epi16(b, 8), p), three);
        __m512i to = _mm512_mulhi_epu16(_mm512_mullo_epi16(_mm512_and_si512(b, _mm512_set1_epi16((short)0xFF00)), p), three);
        return _mm512_or_si512(te, _mm512_slli_epi16(to, 8));
    }
    static inline __m512i abi_pow3x4(int a, int b, int c, int d) {     /* int16 powers, 16 a quarter */
        return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set_m128i(_mm_set1_epi16((short)b), _mm_set1_epi16((short)a))),
                                  _mm256_set_m128i(_mm_set1_epi16((short)d), _mm_set1_epi16((short)c)), 1);
    }
    /* the 256 trits in 4 steps of 64: qs[0..31] twice per step, then qs[32..47] and qh */
    ABI_IQ_BLOCK __m256i abi_iqv_tq1_0(const uint8_t* w, const uint8_t* x) {
        const int8_t* q8 = (const int8_t*)(x + 4);
        const __m256i b0 = _mm256_loadu_si256((const __m256i*)w);
        const __m256i b1 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)(w + 32)));
        const __m256i b2 = _mm256_set_m128i(_mm_set1_epi32((int)abi_ld32(w + 48)), _mm256_castsi256_si128(b1));
        const __m512i bb = _mm512_inserti64x4(_mm512_castsi256_si512(b0), b0, 1);
        __m512i acc = abi_iq_dpbusd512(_mm512_setzero_si512(), abi_tq1_trits512(bb, abi_pow3x4(1, 1, 3, 3)), _mm512_loadu_si512((const void*)q8));
        acc = abi_iq_dpbusd512(acc, abi_tq1_trits512(bb, abi_pow3x4(9, 9, 27, 27)), _mm512_loadu_si512((const void*)(q8 + 64)));
        acc = abi_iq_dpbusd512(acc, abi_tq1_trits512(_mm512_inserti64x4(_mm512_castsi256_si512(b0), b1, 1), abi_pow3x4(81, 81, 1, 3)),
                               _mm512_loadu_si512((const void*)(q8 + 128)));
        const __m512i p3 = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set_m128i(_mm_set1_epi16(27), _mm_set1_epi16(9))),
                                              _mm256_setr_epi16(81, 81, 81, 81, 81, 81, 81, 81, 1, 1, 3, 3, 9, 9, 27, 27), 1);
        acc = abi_iq_dpbusd512(acc, abi_tq1_trits512(_mm512_inserti64x4(_mm512_castsi256_si512(b1), b2, 1), p3),
                               _mm512_loadu_si512((const void*)(q8 + 192)));
        /* minus the bsums: sum (t - 1) q */
        __m256i r = abi_iq_fold512(acc);
        return _mm256_sub_epi32(r, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i*)(x + 260)), _mm256_set1_epi16(1)));
    }
    #else
    /* the 256 trits (0..2) as 8 chunks of 32, chunk c against activation bytes 32c..:
       qs[0..31] (5 trits), qs[32..47] twice, qs[32..47] | qh x 4; the prompt tiles
       (_qtile_avx2.pxd) take the same */
    ABI_IQ_BLOCK void abi_tq1_values(const uint8_t* w, __m256i* u) {
        const __m256i hb = _mm256_set1_epi16((short)0xFF00);
        __m256i b = _mm256_loadu_si256((const __m256i*)w);
        __m256i ev = _mm256_slli_epi16(b, 8), od = _mm256_and_si256(b, hb);
        u[0] = abi_tq1_trits(ev, od, _mm256_set1_epi16(1));
        u[1] = abi_tq1_trits(ev, od, _mm256_set1_epi16(3));
        u[2] = abi_tq1_trits(ev, od, _mm256_set1_epi16(9));
        u[3] = abi_tq1_trits(ev, od, _mm256_set1_epi16(27));
        u[4] = abi_tq1_trits(ev, od, _mm256_set1_epi16(81));
        const __m128i b1 = _mm_loadu_si128((const __m128i*)(w + 32));
        b = _mm256_broadcastsi128_si256(b1);
        ev = _mm256_slli_epi16(b, 8); od = _mm256_and_si256(b, hb);
        u[5] = abi_tq1_trits(ev, od, _mm256_set_m128i(_mm_set1_epi16(3), _mm_set1_epi16(1)));
        u[6] = abi_tq1_trits(ev, od, _mm256_set_m128i(_mm_set1_epi16(27), _mm_set1_epi16(9)));
        b = _mm256_set_m128i(_mm_set1_epi32((int)abi_ld32(w + 48)), b1);
        ev = _mm256_slli_epi16(b, 8); od = _mm256_and_si256(b, hb);
        u[7] = abi_tq1_trits(ev, od, _mm256_setr_epi16(81, 81, 81, 81, 81, 81, 81, 81, 1, 1, 3, 3, 9, 9, 27, 27));
    }
    ABI_IQ_BLOCK __m256i abi_iqv_tq1_0(const uint8_t* w, const uint8_t* x) {
        const int8_t* q8 = (const int8_t*)(x + 4);
        __m256i u[8];
        abi_tq1_values(w, u);
        /* minus the bsums, then the chunks */
        __m256i acc = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_madd_epi16(_mm256_loadu_si256((const __m256i*)(x + 260)), _mm256_set1_epi16(1)));
        ABI_IQ_UNROLL
        for (int c = 0; c < 8; ++c) acc = abi_iq_dpbusd(acc, u[c], abi_iq_q8(q8 + 32 * c));
        return acc;
    }
    #endif

    #if ABI_IQ_Z
    /* two 2-bit planes a 512-bit step */
    ABI_IQ_BLOCK __m256i abi_iqv_tq2_0(const uint8_t* w, const uint8_t* x) {
        const int8_t* q8 = (const int8_t*)(x + 4);
        const __m512i m3 = _mm512_set1_epi8(3);
        const __m256i b0 = _mm256_loadu_si256((const __m256i*)w), b1 = _mm256_loadu_si256((const __m256i*)(w + 32));
        const __m512i c0 = _mm512_inserti64x4(_mm512_castsi256_si512(b0), _mm256_srli_epi16(b0, 2), 1);
        const __m512i c1 = _mm512_inserti64x4(_mm512_castsi256_si512(b1), _mm256_srli_epi16(b1, 2), 1);
        __m512i acc = abi_iq_dpbusd512(_mm512_setzero_si512(), _mm512_and_si512(c0, m3), _mm512_loadu_si512((const void*)q8));
        acc = abi_iq_dpbusd512(acc, _mm512_and_si512(_mm512_srli_epi16(c0, 4), m3), _mm512_loadu_si512((const void*)(q8 + 64)));
        acc = abi_iq_dpbusd512(acc, _mm512_and_si512(c1, m3), _mm512_loadu_si512((const void*)(q8 + 128)));
        acc = abi_iq_dpbusd512(acc, _mm512_and_si512(_mm512_srli_epi16(c1, 4), m3), _mm512_loadu_si512((const void*)(q8 + 192)));
        __m256i r = abi_iq_fold512(acc);
        return _mm256_sub_epi32(r, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i*)(x + 260)), _mm256_set1_epi16(1)));
    }
    #else
    ABI_IQ_BLOCK __m256i abi_iqv_tq2_0(const uint8_t* w, const uint8_t* x) {
        const int8_t* q8 = (const int8_t*)(x + 4);
        const __m256i m3 = _mm256_set1_epi8(3);
        /* int16 pair sums of 8 planes stay within 8 * 762 (t <= 3, |q| <= 127), minus the
           bsums within 2032: one widening at the end */
        const __m256i b0 = _mm256_loadu_si256((const __m256i*)w), b1 = _mm256_loadu_si256((const __m256i*)(w + 32));
        __m256i s0 = _mm256_maddubs_epi16(_mm256_and_si256(b0, m3), abi_iq_q8(q8));
        __m256i s1 = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(b0, 2), m3), abi_iq_q8(q8 + 32));
        s0 = _mm256_add_epi16(s0, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(b0, 4), m3), abi_iq_q8(q8 + 64)));
        s1 = _mm256_add_epi16(s1, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(b0, 6), m3), abi_iq_q8(q8 + 96)));
        s0 = _mm256_add_epi16(s0, _mm256_maddubs_epi16(_mm256_and_si256(b1, m3), abi_iq_q8(q8 + 128)));
        s1 = _mm256_add_epi16(s1, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(b1, 2), m3), abi_iq_q8(q8 + 160)));
        s0 = _mm256_add_epi16(s0, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(b1, 4), m3), abi_iq_q8(q8 + 192)));
        s1 = _mm256_add_epi16(s1, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(b1, 6), m3), abi_iq_q8(q8 + 224)));
        const __m256i s = _mm256_sub_epi16(_mm256_add_epi16(s0, s1), _mm256_loadu_si256((const __m256i*)(x + 260)));
        return _mm256_madd_epi16(s, _mm256_set1_epi16(1));
    }
    #endif

    /* the 16 MXFP4 values in both lanes, for _mm256_shuffle_epi8 lookups */
    static inline __m256i abi_mxfp4_table(void) {
        return _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)abi_kvalues_mxfp4));
    }
    ABI_IQ_BLOCK __m256i abi_iqv_mxfp4(const uint8_t* w, const uint8_t* x) {
        const __m256i table = abi_mxfp4_table();
        __m256i q = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)(w + 1)));
        __m256i nib = _mm256_and_si256(_mm256_blend_epi32(q, _mm256_srli_epi16(q, 4), 0xF0), _mm256_set1_epi8(15));
        __m256i v = _mm256_shuffle_epi8(table, nib);      /* 0 for the two zero codes: sign() keeps 0 */
        return abi_iq_dpbusd(_mm256_setzero_si256(), _mm256_sign_epi8(v, v), _mm256_sign_epi8(abi_iq_q8((const int8_t*)(x + 2)), v));
    }

    /* the row: two blocks per step, FMA of d_w d_x into two float accumulators */
    #define ABI_IQ_ROW_SIMD(name, wsize, xsize, xscale, wscale)                                      \\
        static inline float abi_dot_##name##_simd(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) { \\
            __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();                          \\
            Py_ssize_t i = 0;                                                                      \\
            for (; i + 1 < nb; i += 2, w += 2 * (wsize), x += 2 * (xsize)) {                       \\
                acc0 = _mm256_fmadd_ps(_mm256_set1_ps(wscale(w) * xscale(x)),                      \\
                                       _mm256_cvtepi32_ps(abi_iqv_##name(w, x)), acc0);             \\
                acc1 = _mm256_fmadd_ps(_mm256_set1_ps(wscale(w + (wsize)) * xscale(x + (xsize))),  \\
                                       _mm256_cvtepi32_ps(abi_iqv_##name(w + (wsize), x + (xsize))), acc1); \\
            }                                                                                      \\
            if (i < nb)                                                                            \\
                acc0 = _mm256_fmadd_ps(_mm256_set1_ps(wscale(w) * xscale(x)),                      \\
                                       _mm256_cvtepi32_ps(abi_iqv_##name(w, x)), acc0);             \\
            return abi_hsum8(_mm256_add_ps(acc0, acc1));                                           \\
        }
    /* the f16 scales by table here */
    static inline float abi_iqt_iq2(const uint8_t* w) { return 0.125f * abi_f16t(w); }
    static inline float abi_iqt_iq3xxs(const uint8_t* w) { return 0.25f * abi_f16t(w); }
    static inline float abi_iqt_d0(const uint8_t* w) { return abi_f16t(w); }
    static inline float abi_iqt_tq1(const uint8_t* w) { return abi_f16t(w + 52); }
    static inline float abi_iqt_tq2(const uint8_t* w) { return abi_f16t(w + 64); }
    #define ABI_XT_Q80(x) abi_f16t(x)
    ABI_IQ_ROW_SIMD(iq2_xxs, 66, 292, ABI_XS_Q8K, abi_iqt_iq2)
    ABI_IQ_ROW_SIMD(iq2_xs, 74, 292, ABI_XS_Q8K, abi_iqt_iq2)
    ABI_IQ_ROW_SIMD(iq2_s, 82, 292, ABI_XS_Q8K, abi_iqt_iq2)
    ABI_IQ_ROW_SIMD(iq3_xxs, 98, 292, ABI_XS_Q8K, abi_iqt_iq3xxs)
    ABI_IQ_ROW_SIMD(iq3_s, 110, 292, ABI_XS_Q8K, abi_iqt_d0)
    ABI_IQ_ROW_SIMD(iq1_s, 50, 292, ABI_XS_Q8K, abi_iqt_iq2)
    ABI_IQ_ROW_SIMD(iq1_m, 56, 292, ABI_XS_Q8K, abi_iqs_iq1m)
    ABI_IQ_ROW_SIMD(tq1_0, 54, 292, ABI_XS_Q8K, abi_iqt_tq1)
    ABI_IQ_ROW_SIMD(tq2_0, 66, 292, ABI_XS_Q8K, abi_iqt_tq2)
    ABI_IQ_ROW_SIMD(mxfp4, 17, 34, ABI_XT_Q80, abi_iqs_mxfp4)
    #else
    #define ABI_QDOT_IQ_SIMD 0
    #endif

    #if ABI_QDOT_IQ_SIMD
    #define ABI_IQ_BEST(name) abi_dot_##name##_simd
    #else
    #define ABI_IQ_BEST(name) abi_dot_##name##_scalar
    #endif

    #define abi_dot_iq2_xxs_q8_k ABI_IQ_BEST(iq2_xxs)
    #define abi_dot_iq2_xs_q8_k ABI_IQ_BEST(iq2_xs)
    #define abi_dot_iq2_s_q8_k ABI_IQ_BEST(iq2_s)
    #define abi_dot_iq3_xxs_q8_k ABI_IQ_BEST(iq3_xxs)
    #define abi_dot_iq3_s_q8_k ABI_IQ_BEST(iq3_s)
    #define abi_dot_iq1_s_q8_k ABI_IQ_BEST(iq1_s)
    #define abi_dot_iq1_m_q8_k ABI_IQ_BEST(iq1_m)
    #define abi_dot_tq1_0_q8_k ABI_IQ_BEST(tq1_0)
    #define abi_dot_tq2_0_q8_k ABI_IQ_BEST(tq2_0)
    #define abi_dot_mxfp4_q8_0 ABI_IQ_BEST(mxfp4)
    #define abi_dot_iq2_xxs_q8_k_scalar abi_dot_iq2_xxs_scalar
    #define abi_dot_iq2_xs_q8_k_scalar abi_dot_iq2_xs_scalar
    #define abi_dot_iq2_s_q8_k_scalar abi_dot_iq2_s_scalar
    #define abi_dot_iq3_xxs_q8_k_scalar abi_dot_iq3_xxs_scalar
    #define abi_dot_iq3_s_q8_k_scalar abi_dot_iq3_s_scalar
    #define abi_dot_iq1_s_q8_k_scalar abi_dot_iq1_s_scalar
    #define abi_dot_iq1_m_q8_k_scalar abi_dot_iq1_m_scalar
    #define abi_dot_tq1_0_q8_k_scalar abi_dot_tq1_0_scalar
    #define abi_dot_tq2_0_q8_k_scalar abi_dot_tq2_0_scalar
    #define abi_dot_mxfp4_q8_0_scalar abi_dot_mxfp4_scalar

    #endif /* ABI_QDOT_IQ_H */
    """
    bint QDOT_IQ_SIMD "ABI_QDOT_IQ_SIMD"
    float dot_iq2_xxs_q8_k "abi_dot_iq2_xxs_q8_k"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_iq2_xs_q8_k "abi_dot_iq2_xs_q8_k"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_iq2_s_q8_k "abi_dot_iq2_s_q8_k"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_iq3_xxs_q8_k "abi_dot_iq3_xxs_q8_k"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_iq3_s_q8_k "abi_dot_iq3_s_q8_k"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_iq1_s_q8_k "abi_dot_iq1_s_q8_k"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_iq1_m_q8_k "abi_dot_iq1_m_q8_k"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_tq1_0_q8_k "abi_dot_tq1_0_q8_k"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_tq2_0_q8_k "abi_dot_tq2_0_q8_k"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_mxfp4_q8_0 "abi_dot_mxfp4_q8_0"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil

    float dot_iq2_xxs_q8_k_scalar "abi_dot_iq2_xxs_q8_k_scalar"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_iq2_xs_q8_k_scalar "abi_dot_iq2_xs_q8_k_scalar"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_iq2_s_q8_k_scalar "abi_dot_iq2_s_q8_k_scalar"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_iq3_xxs_q8_k_scalar "abi_dot_iq3_xxs_q8_k_scalar"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_iq3_s_q8_k_scalar "abi_dot_iq3_s_q8_k_scalar"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_iq1_s_q8_k_scalar "abi_dot_iq1_s_q8_k_scalar"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_iq1_m_q8_k_scalar "abi_dot_iq1_m_q8_k_scalar"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_tq1_0_q8_k_scalar "abi_dot_tq1_0_q8_k_scalar"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_tq2_0_q8_k_scalar "abi_dot_tq2_0_q8_k_scalar"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
    float dot_mxfp4_q8_0_scalar "abi_dot_mxfp4_q8_0_scalar"(const uint8_t* w, const uint8_t* x, Py_ssize_t nb) noexcept nogil
