# Row dot products of the lattice (IQ), ternary and MXFP4 weight types with a quantised
# activation row, as inline C in the style of _qdot.pxd: AVX2 with a portable scalar
# fallback. Both paths compute the same integer sum per block and fold it into float32 with
# the same expression (abi_iq_fold), so with contraction off they agree bit for bit.
#
#   dot_<w>_q8_k(w, x, nb): nb weight blocks of 256 against nb Q8_K blocks
#                           ([d:f32][q:256 int8][bsums:16 int16]); returns the sum.
#   dot_mxfp4_q8_0(w, x, nb): nb MXFP4 blocks of 32 against nb Q8_0 blocks ([d:f16][q:32]).
#
# The activation's q must lie in -127..127 (our quantisers' range): the SIMD path moves
# signs onto it with _mm256_sign_epi8, which cannot negate -128.
# Per block the integer sums stay far inside int32 (at most ~6e7, IQ3_XXS).
from libc.stdint cimport uint8_t

from abi._kernels._half cimport f16_to_f32

cdef extern from *:
    """
    #ifndef ABI_QDOT_IQ_H
    #define ABI_QDOT_IQ_H
    #include "iq_tables.h"

    /* element j of a packed grid row */
    #define ABI_GRID_U8(row, j) ((int)(uint8_t)((row) >> (8 * (j))))
    #define ABI_GRID_I8(row, j) ((int)(int8_t)(uint8_t)((row) >> (8 * (j))))

    /* the float step shared by both paths: scale_w * d_x * (integer block sum) */
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
    static inline int abi_iq2_rows8(uint64_t row, unsigned signs, const int8_t* q) {
        int s = 0;
        for (int j = 0; j < 8; ++j) {
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
                s += abi_iq2_rows8(abi_iq2xxs_grid[q[l]], abi_ksigns_iq2xs[(aux >> (7 * l)) & 127], q8 + 32 * g + 8 * l);
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
            sumi += (2 * ls + 1) * abi_iq2_rows8(abi_iq2xs_grid[q & 511], abi_ksigns_iq2xs[q >> 9], q8 + 8 * l);
        }
        return sumi;
    }

    static inline int abi_iqb_iq2_s_scalar(const uint8_t* w, const uint8_t* x) {
        const int8_t* q8 = (const int8_t*)(x + 4);
        int sumi = 0;
        for (int l = 0; l < 32; ++l) {
            int idx = w[2 + l] | (((w[66 + (l >> 2)] >> (2 * (l & 3))) & 3) << 8);
            int ls = (w[74 + (l >> 2)] >> (4 * ((l >> 1) & 1))) & 15;
            sumi += (2 * ls + 1) * abi_iq2_rows8(abi_iq2s_grid[idx], w[34 + l], q8 + 8 * l);
        }
        return sumi;
    }

    /* IQ3_XXS: x = d (2 ls + 1) / 4 * grid * sign; IQ3_S: x = d (2 ls + 1) * grid * sign */
    static inline int abi_iq3_rows4(uint32_t row, unsigned signs, const int8_t* q) {
        int s = 0;
        for (int j = 0; j < 4; ++j) {
            int v = ABI_GRID_U8(row, j) * q[j];
            s += (signs >> j) & 1 ? -v : v;
        }
        return s;
    }

    static inline int abi_iqb_iq3_xxs_scalar(const uint8_t* w, const uint8_t* x) {
        const int8_t* q8 = (const int8_t*)(x + 4);
        int sumi = 0;
        for (int g = 0; g < 8; ++g) {
            uint32_t aux = abi_ld32(w + 66 + 4 * g);
            int s = 0;
            for (int l = 0; l < 8; ++l) {
                unsigned sg = abi_ksigns_iq2xs[(aux >> (7 * (l >> 1))) & 127] >> (4 * (l & 1));
                s += abi_iq3_rows4(abi_iq3xxs_grid[w[2 + 8 * g + l]], sg, q8 + 32 * g + 4 * l);
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
                s += abi_iq3_rows4(abi_iq3s_grid[idx], sg, q8 + 32 * g + 4 * l);
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
        int s = 0;
        for (int h = 0; h < 2; ++h)
            for (int k = 0; k < 4; ++k)
                for (int i = 0; i < 32; ++i)
                    s += (((w[32 * h + i] >> (2 * k)) & 3) - 1) * q8[128 * h + 32 * k + i];
        return s;
    }

    /* MXFP4 x Q8_0: x = 2^(e-128) * kvalue (doubled E2M1) */
    static inline int abi_iqb_mxfp4_scalar(const uint8_t* w, const uint8_t* x) {
        const int8_t* q8 = (const int8_t*)(x + 2);
        int s = 0;
        for (int i = 0; i < 16; ++i)
            s += abi_kvalues_mxfp4[w[1 + i] & 15] * q8[i] + abi_kvalues_mxfp4[w[1 + i] >> 4] * q8[i + 16];
        return s;
    }

    /* ------------------------------------------------------------ AVX2 block sums */
    #if defined(__AVX2__)
    #define ABI_QDOT_IQ_SIMD 1
    #include <immintrin.h>

    static inline int abi_iq_hsum_i32(__m256i v) {
        __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
        return _mm_cvtsi128_si32(s);
    }

    /* bit e of a u32 -> byte e = -1 (set) or +1 */
    static inline __m256i abi_iq_signs32(uint32_t bits) {
        const __m256i shuf = _mm256_setr_epi8(0,0,0,0,0,0,0,0, 1,1,1,1,1,1,1,1,
                                              2,2,2,2,2,2,2,2, 3,3,3,3,3,3,3,3);
        const __m256i sel = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
        __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), shuf);
        return _mm256_or_si256(_mm256_cmpeq_epi8(_mm256_and_si256(v, sel), sel), _mm256_set1_epi8(1));
    }

    static inline __m256i abi_iq_q8(const int8_t* q) { return _mm256_loadu_si256((const __m256i*)q); }

    /* sum over pairs of u * (sign * q), weighted per 16 lanes of int16 by sc (int32 lanes) */
    static inline __m256i abi_iq_usdot(__m256i u, __m256i sign, const int8_t* q, __m256i sc) {
        return _mm256_madd_epi16(_mm256_maddubs_epi16(u, _mm256_sign_epi8(abi_iq_q8(q), sign)), sc);
    }

    static inline __m256i abi_iq_sc2(int lo, int hi) {     /* scale lo for elements 0..15, hi for 16..31 */
        return _mm256_set_m128i(_mm_set1_epi16((short)hi), _mm_set1_epi16((short)lo));
    }

    static inline uint32_t abi_iq_ks4(uint32_t aux) {      /* four 7-bit sign indices -> 32 sign bits */
        return (uint32_t)abi_ksigns_iq2xs[aux & 127] | ((uint32_t)abi_ksigns_iq2xs[(aux >> 7) & 127] << 8)
             | ((uint32_t)abi_ksigns_iq2xs[(aux >> 14) & 127] << 16) | ((uint32_t)abi_ksigns_iq2xs[(aux >> 21) & 127] << 24);
    }

    static inline int abi_iqb_iq2_xxs_simd(const uint8_t* w, const uint8_t* x) {
        const int8_t* q8 = (const int8_t*)(x + 4);
        __m256i acc = _mm256_setzero_si256();
        for (int g = 0; g < 8; ++g) {
            const uint8_t* q = w + 2 + 8 * g;
            uint32_t aux = abi_ld32(q + 4);
            __m256i grid = _mm256_set_epi64x((long long)abi_iq2xxs_grid[q[3]], (long long)abi_iq2xxs_grid[q[2]],
                                             (long long)abi_iq2xxs_grid[q[1]], (long long)abi_iq2xxs_grid[q[0]]);
            acc = _mm256_add_epi32(acc, abi_iq_usdot(grid, abi_iq_signs32(abi_iq_ks4(aux)), q8 + 32 * g,
                                                      _mm256_set1_epi16((short)(2 * (aux >> 28) + 1))));
        }
        return abi_iq_hsum_i32(acc);
    }

    static inline int abi_iqb_iq2_xs_simd(const uint8_t* w, const uint8_t* x) {
        const int8_t* q8 = (const int8_t*)(x + 4);
        __m256i acc = _mm256_setzero_si256();
        for (int g = 0; g < 8; ++g) {
            uint16_t q[4];
            for (int l = 0; l < 4; ++l) q[l] = abi_ld16(w + 2 + 8 * g + 2 * l);
            __m256i grid = _mm256_set_epi64x((long long)abi_iq2xs_grid[q[3] & 511], (long long)abi_iq2xs_grid[q[2] & 511],
                                             (long long)abi_iq2xs_grid[q[1] & 511], (long long)abi_iq2xs_grid[q[0] & 511]);
            uint32_t sg = (uint32_t)abi_ksigns_iq2xs[q[0] >> 9] | ((uint32_t)abi_ksigns_iq2xs[q[1] >> 9] << 8)
                        | ((uint32_t)abi_ksigns_iq2xs[q[2] >> 9] << 16) | ((uint32_t)abi_ksigns_iq2xs[q[3] >> 9] << 24);
            uint8_t sc = w[66 + g];
            acc = _mm256_add_epi32(acc, abi_iq_usdot(grid, abi_iq_signs32(sg), q8 + 32 * g,
                                                      abi_iq_sc2(2 * (sc & 15) + 1, 2 * (sc >> 4) + 1)));
        }
        return abi_iq_hsum_i32(acc);
    }

    static inline int abi_iqb_iq2_s_simd(const uint8_t* w, const uint8_t* x) {
        const int8_t* q8 = (const int8_t*)(x + 4);
        __m256i acc = _mm256_setzero_si256();
        for (int g = 0; g < 8; ++g) {
            const uint8_t* qs = w + 2 + 4 * g;
            uint8_t qh = w[66 + g], sc = w[74 + g];
            __m256i grid = _mm256_set_epi64x(
                (long long)abi_iq2s_grid[qs[3] | ((qh << 2) & 0x300)], (long long)abi_iq2s_grid[qs[2] | ((qh << 4) & 0x300)],
                (long long)abi_iq2s_grid[qs[1] | ((qh << 6) & 0x300)], (long long)abi_iq2s_grid[qs[0] | ((qh << 8) & 0x300)]);
            acc = _mm256_add_epi32(acc, abi_iq_usdot(grid, abi_iq_signs32(abi_ld32(w + 34 + 4 * g)), q8 + 32 * g,
                                                      abi_iq_sc2(2 * (sc & 15) + 1, 2 * (sc >> 4) + 1)));
        }
        return abi_iq_hsum_i32(acc);
    }

    static inline int abi_iqb_iq3_xxs_simd(const uint8_t* w, const uint8_t* x) {
        const int8_t* q8 = (const int8_t*)(x + 4);
        __m256i acc = _mm256_setzero_si256();
        for (int g = 0; g < 8; ++g) {
            const uint8_t* q = w + 2 + 8 * g;
            uint32_t aux = abi_ld32(w + 66 + 4 * g);
            __m256i grid = _mm256_set_epi32(
                (int)abi_iq3xxs_grid[q[7]], (int)abi_iq3xxs_grid[q[6]], (int)abi_iq3xxs_grid[q[5]], (int)abi_iq3xxs_grid[q[4]],
                (int)abi_iq3xxs_grid[q[3]], (int)abi_iq3xxs_grid[q[2]], (int)abi_iq3xxs_grid[q[1]], (int)abi_iq3xxs_grid[q[0]]);
            acc = _mm256_add_epi32(acc, abi_iq_usdot(grid, abi_iq_signs32(abi_iq_ks4(aux)), q8 + 32 * g,
                                                      _mm256_set1_epi16((short)(2 * (aux >> 28) + 1))));
        }
        return abi_iq_hsum_i32(acc);
    }

    static inline int abi_iqb_iq3_s_simd(const uint8_t* w, const uint8_t* x) {
        const int8_t* q8 = (const int8_t*)(x + 4);
        __m256i acc = _mm256_setzero_si256();
        for (int g = 0; g < 8; ++g) {
            const uint8_t* q = w + 2 + 8 * g;
            int qh = w[66 + g];
            __m256i grid = _mm256_set_epi32(
                (int)abi_iq3s_grid[q[7] | ((qh << 1) & 256)], (int)abi_iq3s_grid[q[6] | ((qh << 2) & 256)],
                (int)abi_iq3s_grid[q[5] | ((qh << 3) & 256)], (int)abi_iq3s_grid[q[4] | ((qh << 4) & 256)],
                (int)abi_iq3s_grid[q[3] | ((qh << 5) & 256)], (int)abi_iq3s_grid[q[2] | ((qh << 6) & 256)],
                (int)abi_iq3s_grid[q[1] | ((qh << 7) & 256)], (int)abi_iq3s_grid[q[0] | ((qh << 8) & 256)]);
            int ls = (w[106 + (g >> 1)] >> (4 * (g & 1))) & 15;
            acc = _mm256_add_epi32(acc, abi_iq_usdot(grid, abi_iq_signs32(abi_ld32(w + 74 + 4 * g)), q8 + 32 * g,
                                                      _mm256_set1_epi16((short)(2 * ls + 1))));
        }
        return abi_iq_hsum_i32(acc);
    }

    /* IQ1: v = 8 grid + ds (odd, never 0) as signed bytes; |v| q through sign(q, v) */
    static inline __m256i abi_iq1_v(uint64_t r0, uint64_t r1, uint64_t r2, uint64_t r3, __m256i ds) {
        __m256i g = _mm256_set_epi64x((long long)r3, (long long)r2, (long long)r1, (long long)r0);
        g = _mm256_add_epi8(g, g);
        g = _mm256_add_epi8(g, g);
        g = _mm256_add_epi8(g, g);
        return _mm256_add_epi8(g, ds);
    }

    static inline __m256i abi_iq1_dot(__m256i v, const int8_t* q, __m256i sc) {
        return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(v, v), _mm256_sign_epi8(abi_iq_q8(q), v)), sc);
    }

    static inline int abi_iqb_iq1_s_simd(const uint8_t* w, const uint8_t* x) {
        const int8_t* q8 = (const int8_t*)(x + 4);
        __m256i acc = _mm256_setzero_si256();
        for (int g = 0; g < 8; ++g) {
            const uint8_t* q = w + 2 + 4 * g;
            uint16_t qh = abi_ld16(w + 34 + 2 * g);
            __m256i v = abi_iq1_v(abi_iq1s_grid[q[0] | ((qh << 8) & 0x700)], abi_iq1s_grid[q[1] | ((qh << 5) & 0x700)],
                                  abi_iq1s_grid[q[2] | ((qh << 2) & 0x700)], abi_iq1s_grid[q[3] | ((qh >> 1) & 0x700)],
                                  _mm256_set1_epi8(qh & 0x8000 ? -1 : 1));
            acc = _mm256_add_epi32(acc, abi_iq1_dot(v, q8 + 32 * g, _mm256_set1_epi16((short)(2 * ((qh >> 12) & 7) + 1))));
        }
        return abi_iq_hsum_i32(acc);
    }

    static inline int abi_iqb_iq1_m_simd(const uint8_t* w, const uint8_t* x) {
        const int8_t* q8 = (const int8_t*)(x + 4);
        __m256i acc = _mm256_setzero_si256();
        for (int g = 0; g < 8; ++g) {
            const uint8_t* q = w + 4 * g;
            int h0 = w[32 + 2 * g], h1 = w[33 + 2 * g];     /* nibbles of rows 4g .. 4g + 3 */
            int sc = abi_ld16(w + 48 + 2 * (g >> 1)) >> (6 * (g & 1));
            __m256i ds = _mm256_set_epi64x(h1 & 0x80 ? -1LL : 0x0101010101010101LL, h1 & 0x08 ? -1LL : 0x0101010101010101LL,
                                           h0 & 0x80 ? -1LL : 0x0101010101010101LL, h0 & 0x08 ? -1LL : 0x0101010101010101LL);
            __m256i v = abi_iq1_v(abi_iq1s_grid[q[0] | ((h0 << 8) & 0x700)], abi_iq1s_grid[q[1] | ((h0 << 4) & 0x700)],
                                  abi_iq1s_grid[q[2] | ((h1 << 8) & 0x700)], abi_iq1s_grid[q[3] | ((h1 << 4) & 0x700)], ds);
            acc = _mm256_add_epi32(acc, abi_iq1_dot(v, q8 + 32 * g, abi_iq_sc2(2 * (sc & 7) + 1, 2 * ((sc >> 3) & 7) + 1)));
        }
        return abi_iq_hsum_i32(acc);
    }

    /* ternary: sum t q - sum q (the bsums), t decoded in 16-bit lanes */
    static inline __m256i abi_tq1_trits16(__m256i b, __m256i pow3) {
        __m256i q = _mm256_and_si256(_mm256_mullo_epi16(b, pow3), _mm256_set1_epi16(255));
        return _mm256_srli_epi16(_mm256_mullo_epi16(q, _mm256_set1_epi16(3)), 8);
    }

    static inline __m256i abi_q8x16(const int8_t* q) {
        return _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)q));
    }

    static inline int abi_iqb_tq1_0_simd(const uint8_t* w, const uint8_t* x) {
        static const short pow3[5] = {1, 3, 9, 27, 81};
        const int8_t* q8 = (const int8_t*)(x + 4);
        __m256i b0 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)w));
        __m256i b1 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)(w + 16)));
        __m256i b2 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)(w + 32)));
        __m256i acc = _mm256_setzero_si256();
        for (int n = 0; n < 5; ++n) {
            __m256i p = _mm256_set1_epi16(pow3[n]);
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(abi_tq1_trits16(b0, p), abi_q8x16(q8 + 32 * n)));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(abi_tq1_trits16(b1, p), abi_q8x16(q8 + 32 * n + 16)));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(abi_tq1_trits16(b2, p), abi_q8x16(q8 + 160 + 16 * n)));
        }
        int s = abi_iq_hsum_i32(acc);
        for (int n = 0; n < 4; ++n)     /* the last 16 elements, four digits of 4 bytes */
            for (int i = 0; i < 4; ++i) s += abi_tq1_trit(w[48 + i], n) * q8[240 + 4 * n + i];
        return s - abi_iq_bsum_total(x);
    }

    static inline int abi_iqb_tq2_0_simd(const uint8_t* w, const uint8_t* x) {
        const int8_t* q8 = (const int8_t*)(x + 4);
        const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi16(1);
        __m256i acc = _mm256_setzero_si256();
        for (int h = 0; h < 2; ++h) {
            __m256i b = _mm256_loadu_si256((const __m256i*)(w + 32 * h));
            for (int k = 0; k < 4; ++k) {
                __m256i t = _mm256_and_si256(_mm256_srl_epi16(b, _mm_cvtsi32_si128(2 * k)), m3);
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(t, abi_iq_q8(q8 + 128 * h + 32 * k)), one));
            }
        }
        return abi_iq_hsum_i32(acc) - abi_iq_bsum_total(x);
    }

    static inline int abi_iqb_mxfp4_simd(const uint8_t* w, const uint8_t* x) {
        const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)abi_kvalues_mxfp4));
        __m256i q = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)(w + 1)));
        __m256i nib = _mm256_and_si256(_mm256_blend_epi32(q, _mm256_srli_epi16(q, 4), 0xF0), _mm256_set1_epi8(15));
        __m256i v = _mm256_shuffle_epi8(table, nib);      /* 0 for the two zero codes: sign() keeps 0 */
        __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(v, v), _mm256_sign_epi8(abi_iq_q8((const int8_t*)(x + 2)), v));
        return abi_iq_hsum_i32(_mm256_madd_epi16(p, _mm256_set1_epi16(1)));
    }
    #else
    #define ABI_QDOT_IQ_SIMD 0
    #endif

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
    #if ABI_QDOT_IQ_SIMD
    ABI_IQ_ROWS(simd)
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
