# Prompt (T > 1) products over tiles of R weight rows x N tokens, as inline C: each weight
# block is unpacked once per tile and each activation block loaded once per tile, where the
# T = 1 kernels (_qdot.pxd) redo both for every (row, token) pair.
#
# Bit for bit the T = 1 result: a (row, token) pair keeps the T = 1 kernel's float
# accumulators lane for lane (two 8-lane accumulators packed into one 16-lane register),
# adds the same exact integer block sums into them with the same scale products and the
# same fused multiply-adds, in block order, and reduces them the same way at the end. The
# integer sums may be formed differently (here 512-bit VNNI, with the signed weights
# offset to unsigned and the offset taken back out through the activation's sums, or their
# signs moved onto the activation): they are exact, so every lane holds the same integer.
# Where the T = 1 kernel sums scalars in an expression the compiler contracts (the m_w s_x
# terms of Q4_1 and Q5_1), the tile spells out the same fused multiply-add;
# tests/test_kernels_matmul.py checks every tile against the T = 1 kernel bit for bit, so a
# compiler that contracts otherwise is caught there.
#
#   abi_tile_<w>(w, rb, nr, x, xs, nt, nb, y, ys): y[t * ys + r] = row r . token t for
#   r < nr (rows rb bytes apart from w), t < nt (activation rows xs bytes apart from x),
#   nb blocks per row. Present where ABI_QTILE is 1 (AVX-512 F/BW/VL + VNNI); those of
#   TQ1_0, IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS and IQ3_S where ABI_QTILE_IQ is 1
#   too (they unpack blocks with their T = 1 kernels' 512-bit code: VBMI, BITALG, BMI2).
from libc.stdint cimport uint8_t

from abi._kernels._qdot cimport QDOT_SIMD   # its C (abi_f16t, abi_hsum8, abi_nibbles32) first
from abi._kernels._qdot_iq cimport QDOT_IQ_SIMD   # its C (abi_e8m0_half, the IQ block unpacking, abi_iq_wdot) too
from abi._kernels._qtile_avx2 cimport QTILE2   # its C (ABI_TILE_STUB, abi_tile_scratch, the AVX2 tiles) too

cdef extern from *:
    """
    #ifndef ABI_QTILE_H
    #define ABI_QTILE_H
    #if ABI_QDOT_SIMD && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__)
    #define ABI_QTILE 1
    #define ABI_QTILE_IQ ABI_IQ_Z
    #define ABI_TILE_R 4     /* rows per tile, at most */
    #define ABI_TILE_N 8     /* tokens per tile, at most (Q5_0 packs two per register) */
    #define ABI_AINL static inline __attribute__((always_inline))
    /* the small loops over a tile's rows and tokens unrolled whole, so that its
       accumulators live in registers */
    #define ABI_UNROLL _Pragma("GCC unroll 16")
    /* abi_tile_<name>_rn, the R x N tile ABI_TILE_DRIVER runs: a family's tile with its type
       constant K */
    #define ABI_TILE_RN(name, family, K)                                                                \\
    ABI_AINL void abi_tile_##name##_rn(const uint8_t* w, Py_ssize_t rb, const uint8_t* x, Py_ssize_t xs,    \\
                                       Py_ssize_t nb, float* y, Py_ssize_t ys, const int R, const int N) { \\
        abi_tile_##family##_rn(w, rb, x, xs, nb, y, ys, R, N, K);                                       \\
    }
    /* m_w0 s_x0 + m_w1 s_x1 with the product gcc fuses in the T = 1 kernel's expression */
    #define ABI_Q41_PAIR m0, vs0, _mm_mul_ps(m1, vs1)

    /* [a | b]: two 256-bit halves */
    ABI_AINL __m512i abi_zi(__m256i a, __m256i b) { return _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1); }
    ABI_AINL __m512 abi_zf(__m256 a, __m256 b) {
        return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(a)), _mm256_castps_pd(b), 1));
    }
    ABI_AINL __m512i abi_zld(const uint8_t* a, const uint8_t* b) {
        return abi_zi(_mm256_loadu_si256((const __m256i*)a), _mm256_loadu_si256((const __m256i*)b));
    }
    /* [a x 8 | b x 8] */
    ABI_AINL __m512 abi_zf2(float a, float b) { return abi_zf(_mm256_set1_ps(a), _mm256_set1_ps(b)); }
    ABI_AINL __m256 abi_zlo(__m512 v) { return _mm512_castps512_ps256(v); }
    ABI_AINL __m256 abi_zhi(__m512 v) { return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)); }
    /* the 8-lane sum the T = 1 kernels reduce: acc0 + acc1 lane by lane, then abi_hsum8 */
    ABI_AINL float abi_zsum(__m512 v) { return abi_hsum8(_mm256_add_ps(abi_zlo(v), abi_zhi(v))); }
    /* int32 lane i of the low half plus lane i of the high half */
    ABI_AINL __m256i abi_zfold(__m512i v) {
        return _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
    }
    ABI_AINL __m512i abi_dpbusd_z(__m512i u, __m512i s) { return _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, s); }

    /* ------------------------------------------------------------------ Q4_1 x Q8_1
       T = 1: acc0 (even blocks), acc1 (odd), accm (scalar); here [acc0 | acc1] */
    ABI_AINL void abi_tile_q4_1_rn(const uint8_t* w, Py_ssize_t rb, const uint8_t* x, Py_ssize_t xs,
                                   Py_ssize_t nb, float* y, Py_ssize_t ys, const int R, const int N) {
        /* accm of the N (<= 4) tokens side by side, lane t: lane-wise the same mul, fma and
           add as the T = 1 kernel's scalar accm, whose expression gcc contracts the same way */
        __m512 acc[ABI_TILE_R][ABI_TILE_N];
        __m128 accm[ABI_TILE_R];
        float s0[4] = {0, 0, 0, 0}, s1[4] = {0, 0, 0, 0};
        ABI_UNROLL for (int r = 0; r < R; ++r) {
            accm[r] = _mm_setzero_ps();
            ABI_UNROLL for (int t = 0; t < N; ++t) acc[r][t] = _mm512_setzero_ps();
        }
        Py_ssize_t i = 0;
        for (; i + 1 < nb; i += 2) {
            __m512i u[ABI_TILE_R]; __m512 dw[ABI_TILE_R];
            ABI_UNROLL for (int r = 0; r < R; ++r) {
                const uint8_t* wr = w + r * rb + 20 * i;
                u[r] = abi_zi(abi_nibbles32(wr + 4), abi_nibbles32(wr + 24));
                dw[r] = abi_zf2(abi_f16t(wr), abi_f16t(wr + 20));
            }
            ABI_UNROLL for (int t = 0; t < N; ++t) {
                const uint8_t* xt = x + t * xs + 36 * i;
                const __m512i s = abi_zld(xt + 4, xt + 40);
                const __m512 dx = abi_zf2(abi_f16t(xt), abi_f16t(xt + 36));
                s0[t] = abi_f16t(xt + 2); s1[t] = abi_f16t(xt + 38);
                ABI_UNROLL for (int r = 0; r < R; ++r)
                    acc[r][t] = _mm512_fmadd_ps(_mm512_mul_ps(dw[r], dx), _mm512_cvtepi32_ps(abi_dpbusd_z(u[r], s)), acc[r][t]);
            }
            const __m128 vs0 = _mm_loadu_ps(s0), vs1 = _mm_loadu_ps(s1);
            ABI_UNROLL for (int r = 0; r < R; ++r) {
                const uint8_t* wr = w + r * rb + 20 * i;
                const __m128 m0 = _mm_set1_ps(abi_f16t(wr + 2)), m1 = _mm_set1_ps(abi_f16t(wr + 22));
                accm[r] = _mm_add_ps(accm[r], _mm_fmadd_ps(ABI_Q41_PAIR));
            }
        }
        if (i < nb) {   /* an odd last block goes to acc0 only */
            ABI_UNROLL for (int t = 0; t < N; ++t) s0[t] = abi_f16t(x + t * xs + 36 * i + 2);
            const __m128 vs0 = _mm_loadu_ps(s0);
            ABI_UNROLL for (int r = 0; r < R; ++r) {
                const uint8_t* wr = w + r * rb + 20 * i;
                const __m256i u0 = abi_nibbles32(wr + 4);
                ABI_UNROLL for (int t = 0; t < N; ++t) {
                    const uint8_t* xt = x + t * xs + 36 * i;
                    __m256i p0 = abi_dpbusd(u0, _mm256_loadu_si256((const __m256i*)(xt + 4)));
                    __m256 a0 = _mm256_fmadd_ps(abi_scale2(wr, xt), _mm256_cvtepi32_ps(p0), abi_zlo(acc[r][t]));
                    acc[r][t] = abi_zf(a0, abi_zhi(acc[r][t]));
                }
                accm[r] = _mm_fmadd_ps(_mm_set1_ps(abi_f16t(wr + 2)), vs0, accm[r]);
            }
        }
        ABI_UNROLL for (int r = 0; r < R; ++r) {
            float m[4];
            _mm_storeu_ps(m, accm[r]);
            ABI_UNROLL for (int t = 0; t < N; ++t) y[t * ys + r] = abi_zsum(acc[r][t]) + m[t];
        }
    }

    /* ------------------------------------------------------------------ Q8_0 x Q8_0
       T = 1: acc0 (even blocks), acc1 (odd); here [acc0 | acc1]. w + 128 is unsigned, and
       128 * (the activation's 4-byte sums) takes the offset back out. */
    ABI_AINL void abi_tile_q8_0_rn(const uint8_t* w, Py_ssize_t rb, const uint8_t* x, Py_ssize_t xs,
                                   Py_ssize_t nb, float* y, Py_ssize_t ys, const int R, const int N) {
        const __m512i off = _mm512_set1_epi8((char)0x80);
        __m512 acc[ABI_TILE_R][ABI_TILE_N];
        ABI_UNROLL for (int r = 0; r < R; ++r) ABI_UNROLL for (int t = 0; t < N; ++t) acc[r][t] = _mm512_setzero_ps();
        Py_ssize_t i = 0;
        for (; i + 1 < nb; i += 2) {
            __m512i u[ABI_TILE_R]; __m512 dw[ABI_TILE_R];
            ABI_UNROLL for (int r = 0; r < R; ++r) {
                const uint8_t* wr = w + r * rb + 34 * i;
                u[r] = _mm512_xor_si512(abi_zld(wr + 2, wr + 36), off);
                dw[r] = abi_zf2(abi_f16t(wr), abi_f16t(wr + 34));
            }
            ABI_UNROLL for (int t = 0; t < N; ++t) {
                const uint8_t* xt = x + t * xs + 34 * i;
                const __m512i s = abi_zld(xt + 2, xt + 36);
                const __m512i c = _mm512_sub_epi32(_mm512_setzero_si512(), abi_dpbusd_z(off, s));
                const __m512 dx = abi_zf2(abi_f16t(xt), abi_f16t(xt + 34));
                ABI_UNROLL for (int r = 0; r < R; ++r) {
                    const __m512i p = _mm512_dpbusd_epi32(c, u[r], s);   /* - 128 sums + (w + 128) x */
                    acc[r][t] = _mm512_fmadd_ps(_mm512_mul_ps(dw[r], dx), _mm512_cvtepi32_ps(p), acc[r][t]);
                }
            }
        }
        if (i < nb) {
            ABI_UNROLL for (int r = 0; r < R; ++r) {
                const uint8_t* wr = w + r * rb + 34 * i;
                const __m256i q = _mm256_loadu_si256((const __m256i*)(wr + 2));
                ABI_UNROLL for (int t = 0; t < N; ++t) {
                    const uint8_t* xt = x + t * xs + 34 * i;
                    __m256i p0 = abi_dpbssd(q, _mm256_loadu_si256((const __m256i*)(xt + 2)));
                    __m256 a0 = _mm256_fmadd_ps(abi_scale2(wr, xt), _mm256_cvtepi32_ps(p0), abi_zlo(acc[r][t]));
                    acc[r][t] = abi_zf(a0, abi_zhi(acc[r][t]));
                }
            }
        }
        ABI_UNROLL for (int r = 0; r < R; ++r) ABI_UNROLL for (int t = 0; t < N; ++t) y[t * ys + r] = abi_zsum(acc[r][t]);
    }

    /* ------------------------------------------------------------------ Q5_0 x Q8_0
       T = 1: one accumulator over the blocks in order; here two tokens side by side,
       [token 2j | token 2j + 1] (an odd last token is computed twice, stored once). The
       unsigned 5-bit q times x, less 16 * (the activation's 4-byte sums), is sum (q - 16) x.
       Both sides are prepared once and reused (the unpacking costs more than the products):
       a chunk of ABI_Q5_TC tokens' pairs for all of a thread's rows, and a tile's rows for
       all the chunk's tokens. */
    #define ABI_Q5_TC 64
    #define ABI_Q5_PAIR 192   /* a pair's block prepared: [s | c | dx], 64 bytes each */

    /* R rows (wu: 32 unpacked bytes a block, wd: the scales, nb blocks a row) x N tokens
       (xp: (N + 1) / 2 prepared pairs, xps bytes apart) */
    ABI_AINL void abi_tile_q5_0_rn(const uint8_t* wu, const float* wd, Py_ssize_t nb, const uint8_t* xp,
                                   Py_ssize_t xps, float* y, Py_ssize_t ys, const int R, const int N) {
        enum { P = (ABI_TILE_N + 1) / 2 };
        const int NP = (N + 1) / 2;
        __m512 acc[ABI_TILE_R][P];
        ABI_UNROLL for (int r = 0; r < R; ++r) ABI_UNROLL for (int j = 0; j < NP; ++j) acc[r][j] = _mm512_setzero_ps();
        for (Py_ssize_t i = 0; i < nb; ++i) {
            __m512i u[ABI_TILE_R]; __m512 dw[ABI_TILE_R];
            ABI_UNROLL for (int r = 0; r < R; ++r) {
                u[r] = _mm512_broadcast_i64x4(_mm256_load_si256((const __m256i*)(wu + 32 * (r * nb + i))));
                dw[r] = _mm512_set1_ps(wd[r * nb + i]);
            }
            ABI_UNROLL for (int j = 0; j < NP; ++j) {
                const uint8_t* pp = xp + j * xps + ABI_Q5_PAIR * i;
                const __m512i s = _mm512_load_si512((const void*)pp);
                const __m512i c = _mm512_load_si512((const void*)(pp + 64));
                const __m512 dx = _mm512_load_ps((const float*)(pp + 128));
                ABI_UNROLL for (int r = 0; r < R; ++r) {
                    const __m512i p = _mm512_dpbusd_epi32(c, u[r], s);   /* - 16 sums + q x */
                    acc[r][j] = _mm512_fmadd_ps(_mm512_mul_ps(dw[r], dx), _mm512_cvtepi32_ps(p), acc[r][j]);
                }
            }
        }
        ABI_UNROLL for (int r = 0; r < R; ++r)
            ABI_UNROLL for (int j = 0; j < NP; ++j) {
                y[(2 * j) * ys + r] = abi_hsum8(abi_zlo(acc[r][j]));
                if (2 * j + 1 < N) y[(2 * j + 1) * ys + r] = abi_hsum8(abi_zhi(acc[r][j]));
            }
    }

    /* R rows of a tile's prepared weights x the nc tokens of a chunk: 8 at a time, then pairs,
       then an odd last one */
    ABI_AINL void abi_tile_q5_0_rows(const uint8_t* wu, const float* wd, Py_ssize_t nb, const uint8_t* xp,
                                     Py_ssize_t xps, int nc, float* y, Py_ssize_t ys, const int R) {
        int t = 0;
        for (; t + 8 <= nc; t += 8) abi_tile_q5_0_rn(wu, wd, nb, xp + (t / 2) * xps, xps, y + t * ys, ys, R, 8);
        for (; t + 2 <= nc; t += 2) abi_tile_q5_0_rn(wu, wd, nb, xp + (t / 2) * xps, xps, y + t * ys, ys, R, 2);
        if (t < nc) abi_tile_q5_0_rn(wu, wd, nb, xp + (t / 2) * xps, xps, y + t * ys, ys, R, 1);
    }

    static void abi_tile_q5_0(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x,
                              Py_ssize_t xs, Py_ssize_t nt, Py_ssize_t nb, float* y, Py_ssize_t ys) {
        const Py_ssize_t xps = ABI_Q5_PAIR * nb;
        uint8_t* xp = abi_tile_scratch((size_t)(ABI_Q5_TC / 2) * xps + (size_t)ABI_TILE_R * nb * 36);
        uint8_t* wu = xp + (ABI_Q5_TC / 2) * xps;
        float* wd = (float*)(wu + ABI_TILE_R * nb * 32);
        const __m512i sixteen = _mm512_set1_epi8(16);
        const __m256i b4 = _mm256_set1_epi8(16);
        for (Py_ssize_t t0 = 0; t0 < nt; t0 += ABI_Q5_TC) {
            const int nc = nt - t0 < ABI_Q5_TC ? (int)(nt - t0) : ABI_Q5_TC;
            for (int j = 0; 2 * j < nc; ++j) {
                const uint8_t* xa = x + (t0 + 2 * j) * xs;
                const uint8_t* xb = 2 * j + 1 < nc ? xa + xs : xa;
                for (Py_ssize_t i = 0; i < nb; ++i) {
                    uint8_t* pp = xp + j * xps + ABI_Q5_PAIR * i;
                    const __m512i s = abi_zld(xa + 34 * i + 2, xb + 34 * i + 2);
                    _mm512_store_si512((void*)pp, s);
                    _mm512_store_si512((void*)(pp + 64), _mm512_sub_epi32(_mm512_setzero_si512(), abi_dpbusd_z(sixteen, s)));
                    _mm512_store_ps((float*)(pp + 128), abi_zf2(abi_f16t(xa + 34 * i), abi_f16t(xb + 34 * i)));
                }
            }
            for (Py_ssize_t r = 0; r < nr; r += ABI_TILE_R) {
                const int R = nr - r < ABI_TILE_R ? (int)(nr - r) : ABI_TILE_R;
                for (int k = 0; k < R; ++k)
                    for (Py_ssize_t i = 0; i < nb; ++i) {
                        const uint8_t* wr = w + (r + k) * rb + 22 * i;
                        _mm256_store_si256((__m256i*)(wu + 32 * (k * nb + i)),
                            _mm256_or_si256(abi_nibbles32(wr + 6), _mm256_and_si256(abi_bitmask32(wr + 2), b4)));
                        wd[k * nb + i] = abi_f16t(wr);
                    }
                float* yr = y + t0 * ys + r;
                if (R == ABI_TILE_R)
                    abi_tile_q5_0_rows(wu, wd, nb, xp, xps, nc, yr, ys, ABI_TILE_R);
                else
                    for (int k = 0; k < R; ++k) abi_tile_q5_0_rows(wu + 32 * k * nb, wd + k * nb, nb, xp, xps, nc, yr + k, ys, 1);
            }
        }
    }

    /* ------------------------------------------------------------------ Q5_K x Q8_K
       T = 1: acc (scales) and accm (mins), 8 lanes each; here [acc | accm]. The block's
       integer sum: [sub-block 2c | 2c + 1] per 64 activation bytes, lanes folded at the end.
       (Q4_K's tile, _qtile_avx2.pxd's, is built here too.) */
    ABI_AINL void abi_tile_q5_k_rn(const uint8_t* w, Py_ssize_t rb, const uint8_t* x, Py_ssize_t xs,
                                   Py_ssize_t nb, float* y, Py_ssize_t ys, const int R, const int N) {
        const Py_ssize_t bytes = 176;   /* d, dmin, the scales, qh, qs */
        const __m256i m4h = _mm256_set1_epi8(15), b4 = _mm256_set1_epi8(16);
        __m512 acc[ABI_TILE_R][ABI_TILE_N];
        ABI_UNROLL for (int r = 0; r < R; ++r) ABI_UNROLL for (int t = 0; t < N; ++t) acc[r][t] = _mm512_setzero_ps();
        for (Py_ssize_t i = 0; i < nb; ++i) {
            __m512i sum[ABI_TILE_R][ABI_TILE_N];
            __m512i sc16[ABI_TILE_R];    /* int16 lanes 0-7 the scales, 8-15 the mins */
            __m256i mins16[ABI_TILE_R];
            __m512 dd[ABI_TILE_R];       /* [d x 8 | dmin x 8] */
            ABI_UNROLL for (int r = 0; r < R; ++r) {
                const uint8_t* wr = w + r * rb + bytes * i;
                uint32_t k[4];
                abi_k4_words(wr + 4, k);
                const __m128i scm = _mm_setr_epi32((int)k[0], (int)k[1], (int)k[2], (int)k[3]);
                sc16[r] = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(scm));
                mins16[r] = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(scm, scm));   /* m0 m0 m1 m1 ... */
                dd[r] = abi_zf2(abi_f16_to_f32(abi_ld16(wr)), abi_f16_to_f32(abi_ld16(wr + 2)));
                ABI_UNROLL for (int t = 0; t < N; ++t) sum[r][t] = _mm512_setzero_si512();
            }
            ABI_UNROLL for (int c = 0; c < 4; ++c) {
                /* [scale 2c x 16 | scale 2c + 1 x 16] */
                const __m512i idx = abi_zi(_mm256_set1_epi16((short)(2 * c)), _mm256_set1_epi16((short)(2 * c + 1)));
                __m512i u[ABI_TILE_R], s16[ABI_TILE_R];
                ABI_UNROLL for (int r = 0; r < R; ++r) {
                    const uint8_t* wr = w + r * rb + bytes * i;
                    const __m256i q = _mm256_loadu_si256((const __m256i*)(wr + 48 + 32 * c));
                    /* bit 2c of qh is bit 4 of sub-block 2c, bit 2c + 1 of sub-block 2c + 1 */
                    const __m256i hb = _mm256_srli_epi16(_mm256_loadu_si256((const __m256i*)(wr + 16)), 2 * c);
                    u[r] = abi_zi(_mm256_or_si256(_mm256_and_si256(q, m4h), _mm256_and_si256(_mm256_slli_epi16(hb, 4), b4)),
                                  _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4h), _mm256_and_si256(_mm256_slli_epi16(hb, 3), b4)));
                    s16[r] = _mm512_permutexvar_epi16(idx, sc16[r]);
                }
                ABI_UNROLL for (int t = 0; t < N; ++t) {
                    const __m512i s = _mm512_loadu_si512((const void*)(x + t * xs + 292 * i + 4 + 64 * c));
                    ABI_UNROLL for (int r = 0; r < R; ++r)
                        sum[r][t] = _mm512_dpwssd_epi32(sum[r][t], _mm512_maddubs_epi16(u[r], s), s16[r]);
                }
            }
            ABI_UNROLL for (int t = 0; t < N; ++t) {
                const uint8_t* xt = x + t * xs + 292 * i;
                const __m512 dx = _mm512_set1_ps(abi_ldf32(xt));
                const __m256i bs = _mm256_loadu_si256((const __m256i*)(xt + 260));
                ABI_UNROLL for (int r = 0; r < R; ++r) {
                    const __m512i v = abi_zi(abi_zfold(sum[r][t]), _mm256_madd_epi16(bs, mins16[r]));
                    /* d dx and dmin dx, the products the T = 1 kernel rounds */
                    acc[r][t] = _mm512_fmadd_ps(_mm512_mul_ps(dd[r], dx), _mm512_cvtepi32_ps(v), acc[r][t]);
                }
            }
        }
        ABI_UNROLL for (int r = 0; r < R; ++r)
            ABI_UNROLL for (int t = 0; t < N; ++t) y[t * ys + r] = abi_hsum8(abi_zlo(acc[r][t])) - abi_hsum8(abi_zhi(acc[r][t]));
    }

    /* ------------------------------------------------------------------ Q6_K, Q3_K x Q8_K
       T = 1: one 8-lane accumulator; here two tokens side by side, [token 2j | 2j + 1]
       (an odd last token is computed twice, stored once). The block's integer sum is
       formed over pairs of 32-element groups (64 activation bytes at a time) and its lanes
       folded at the end, two tokens in one shuffle. */
    /* Q6_K's groups 2(g & 1), + 1 of half h as unsigned q + 32 (abi_q6_k_group, _qdot.pxd) */
    ABI_AINL __m512i abi_q6_k_pair(const uint8_t* wr, int h, int g) {
        return abi_zi(abi_q6_k_group(wr, h, 2 * (g & 1)), abi_q6_k_group(wr, h, 2 * (g & 1) + 1));
    }
    /* Q3_K's values (abi_q3_k_group, _qdot.pxd): 4 sum_j sc_j bsum_j is taken back out at the
       end of the block, as the T = 1 kernel does */
    /* the 16 scales - 32 as int16 */
    ABI_AINL __m256i abi_q3_k_scales16(const uint8_t* wr) {
        uint32_t a[4];
        abi_q3_k_scales(wr + 96, a);
        return _mm256_cvtepi8_epi16(_mm_sub_epi8(_mm_setr_epi32((int)a[0], (int)a[1], (int)a[2], (int)a[3]), _mm_set1_epi8(32)));
    }
    /* groups 2(g & 1), + 1 of half h as unsigned q + 4 */
    ABI_AINL __m512i abi_q3_k_pair(const uint8_t* wr, int h, int g) {
        const __m256i hm = _mm256_loadu_si256((const __m256i*)wr);
        const __m256i q = _mm256_loadu_si256((const __m256i*)(wr + 32 + 32 * h));
        return abi_zi(abi_q3_k_group(q, hm, h, 2 * (g & 1)), abi_q3_k_group(q, hm, h, 2 * (g & 1) + 1));
    }
    /* the shared tile: q3 (a constant where it is called, so inlined away) picks Q3_K's
       block bytes, scales, values and offset over Q6_K's */
    ABI_AINL void abi_tile_k16_rn(const uint8_t* w, Py_ssize_t rb, const uint8_t* x, Py_ssize_t xs,
                                  Py_ssize_t nb, float* y, Py_ssize_t ys, const int R, const int N, const int q3) {
        const int bytes = q3 ? 110 : 210, shift = q3 ? 2 : 5;   /* offset 4 (Q3_K) or 32 (Q6_K) */
        enum { P = (ABI_TILE_N + 1) / 2 };
        const int NP = (N + 1) / 2;
        __m512 acc[ABI_TILE_R][P];
        ABI_UNROLL for (int r = 0; r < R; ++r) ABI_UNROLL for (int j = 0; j < NP; ++j) acc[r][j] = _mm512_setzero_ps();
        for (Py_ssize_t i = 0; i < nb; ++i) {
            __m512i sum[ABI_TILE_R][ABI_TILE_N];
            __m512i sc16[ABI_TILE_R];   /* the 16 scales as int16, in both halves */
            __m512 d[ABI_TILE_R];
            ABI_UNROLL for (int r = 0; r < R; ++r) {
                const uint8_t* wr = w + r * rb + bytes * i;
                const __m256i s = q3 ? abi_q3_k_scales16(wr) : _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(wr + 192)));
                sc16[r] = abi_zi(s, s);
                d[r] = _mm512_set1_ps(q3 ? abi_f16t(wr + 108) : abi_f16_to_f32(abi_ld16(wr + 208)));
                ABI_UNROLL for (int t = 0; t < N; ++t) sum[r][t] = _mm512_setzero_si512();
            }
            ABI_UNROLL for (int g = 0; g < 4; ++g) {   /* groups k = 2(g & 1), + 1 of half h = g >> 1 */
                const int h = g >> 1;
                /* int16 lanes of 128-bit lane L: scale 8h + 4(g & 1) + L */
                const __m512i idx = _mm512_add_epi16(_mm512_set1_epi16((short)(8 * h + 4 * (g & 1))),
                    _mm512_set_epi16(3,3,3,3,3,3,3,3, 2,2,2,2,2,2,2,2, 1,1,1,1,1,1,1,1, 0,0,0,0,0,0,0,0));
                __m512i u[ABI_TILE_R], s16[ABI_TILE_R];
                ABI_UNROLL for (int r = 0; r < R; ++r) {
                    const uint8_t* wr = w + r * rb + bytes * i;
                    u[r] = q3 ? abi_q3_k_pair(wr, h, g) : abi_q6_k_pair(wr, h, g);
                    s16[r] = _mm512_permutexvar_epi16(idx, sc16[r]);
                }
                ABI_UNROLL for (int t = 0; t < N; ++t) {
                    const __m512i s = _mm512_loadu_si512((const void*)(x + t * xs + 292 * i + 4 + 128 * h + 64 * (g & 1)));
                    ABI_UNROLL for (int r = 0; r < R; ++r)
                        sum[r][t] = _mm512_dpwssd_epi32(sum[r][t], _mm512_maddubs_epi16(u[r], s), s16[r]);
                }
            }
            ABI_UNROLL for (int j = 0; j < NP; ++j) {
                const uint8_t* xa = x + (2 * j) * xs + 292 * i;
                const uint8_t* xb = 2 * j + 1 < N ? xa + xs : xa;
                const __m512 dx = abi_zf2(abi_ldf32(xa), abi_ldf32(xb));
                const __m512i bs = abi_zld(xa + 260, xb + 260);
                ABI_UNROLL for (int r = 0; r < R; ++r) {
                    const __m512i sa = sum[r][2 * j], sb = 2 * j + 1 < N ? sum[r][2 * j + 1] : sa;
                    /* [lo a + hi a | lo b + hi b]: each token's 8 lanes as the T = 1 kernel sums them */
                    const __m512i folded = _mm512_add_epi32(_mm512_shuffle_i64x2(sa, sb, 0x44), _mm512_shuffle_i64x2(sa, sb, 0xEE));
                    const __m512i corr = _mm512_madd_epi16(bs, sc16[r]);
                    const __m512i v = _mm512_sub_epi32(folded, _mm512_slli_epi32(corr, shift));
                    acc[r][j] = _mm512_fmadd_ps(_mm512_mul_ps(d[r], dx), _mm512_cvtepi32_ps(v), acc[r][j]);
                }
            }
        }
        ABI_UNROLL for (int r = 0; r < R; ++r)
            ABI_UNROLL for (int j = 0; j < NP; ++j) {
                y[(2 * j) * ys + r] = abi_hsum8(abi_zlo(acc[r][j]));
                if (2 * j + 1 < N) y[(2 * j + 1) * ys + r] = abi_hsum8(abi_zhi(acc[r][j]));
            }
    }
    ABI_TILE_RN(q6_k, k16, 0)
    ABI_TILE_RN(q3_k, k16, 1)

    /* ------------------------------------------------------------------ IQ4_NL, Q4_0, MXFP4 x Q8_0
       T = 1: acc0 (even blocks), acc1 (odd); here [acc0 | acc1]. The weights as unsigned
       bytes, v + off (IQ4_NL and MXFP4: the table's values + 128, one shuffle per 32 nibbles;
       Q4_0: the nibbles, q - 8 + 8), and off * (the activation's 4-byte sums) takes the offset
       back out. MXFP4's block is Q4_0's with a one-byte E8M0 scale for the f16 one. */
    enum { ABI_NIB_Q4_0, ABI_NIB_IQ4_NL, ABI_NIB_MXFP4 };
    ABI_AINL float abi_nib_d(const uint8_t* wr, const int kind) {
        return kind == ABI_NIB_MXFP4 ? abi_e8m0_half(wr[0]) : abi_f16t(wr);
    }
    ABI_AINL void abi_tile_nib_rn(const uint8_t* w, Py_ssize_t rb, const uint8_t* x, Py_ssize_t xs,
                                  Py_ssize_t nb, float* y, Py_ssize_t ys, const int R, const int N, const int kind) {
        const int mx = kind == ABI_NIB_MXFP4, bytes = mx ? 17 : 18, qo = mx ? 1 : 2;
        const __m512i off = _mm512_set1_epi8(kind != ABI_NIB_Q4_0 ? (char)0x80 : 8);
        const __m256i tbl = mx ? abi_mxfp4_table() : abi_iq4nl_table();
        const __m256i tblu = _mm256_xor_si256(tbl, _mm256_set1_epi8((char)0x80));
        __m512 acc[ABI_TILE_R][ABI_TILE_N];
        ABI_UNROLL for (int r = 0; r < R; ++r) ABI_UNROLL for (int t = 0; t < N; ++t) acc[r][t] = _mm512_setzero_ps();
        Py_ssize_t i = 0;
        for (; i + 1 < nb; i += 2) {
            __m512i u[ABI_TILE_R]; __m512 dw[ABI_TILE_R];
            ABI_UNROLL for (int r = 0; r < R; ++r) {
                const uint8_t* wr = w + r * rb + bytes * i;
                const __m256i n0 = abi_nibbles32(wr + qo), n1 = abi_nibbles32(wr + bytes + qo);
                u[r] = kind != ABI_NIB_Q4_0 ? abi_zi(_mm256_shuffle_epi8(tblu, n0), _mm256_shuffle_epi8(tblu, n1)) : abi_zi(n0, n1);
                dw[r] = abi_zf2(abi_nib_d(wr, kind), abi_nib_d(wr + bytes, kind));
            }
            ABI_UNROLL for (int t = 0; t < N; ++t) {
                const uint8_t* xt = x + t * xs + 34 * i;
                const __m512i s = abi_zld(xt + 2, xt + 36);
                const __m512i c = _mm512_sub_epi32(_mm512_setzero_si512(), abi_dpbusd_z(off, s));
                const __m512 dx = abi_zf2(abi_f16t(xt), abi_f16t(xt + 34));
                ABI_UNROLL for (int r = 0; r < R; ++r) {
                    const __m512i p = _mm512_dpbusd_epi32(c, u[r], s);   /* - off sums + (v + off) x */
                    acc[r][t] = _mm512_fmadd_ps(_mm512_mul_ps(dw[r], dx), _mm512_cvtepi32_ps(p), acc[r][t]);
                }
            }
        }
        if (i < nb) {
            ABI_UNROLL for (int r = 0; r < R; ++r) {
                const uint8_t* wr = w + r * rb + bytes * i;
                const __m256i n0 = abi_nibbles32(wr + qo);
                const __m256i v = kind != ABI_NIB_Q4_0 ? _mm256_shuffle_epi8(tbl, n0) : _mm256_sub_epi8(n0, _mm256_set1_epi8(8));
                ABI_UNROLL for (int t = 0; t < N; ++t) {
                    const uint8_t* xt = x + t * xs + 34 * i;
                    __m256i p0 = abi_dpbssd(v, _mm256_loadu_si256((const __m256i*)(xt + 2)));
                    const __m256 sc = mx ? _mm256_set1_ps(abi_nib_d(wr, kind) * abi_f16t(xt)) : abi_scale2(wr, xt);
                    __m256 a0 = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(p0), abi_zlo(acc[r][t]));
                    acc[r][t] = abi_zf(a0, abi_zhi(acc[r][t]));
                }
            }
        }
        ABI_UNROLL for (int r = 0; r < R; ++r) ABI_UNROLL for (int t = 0; t < N; ++t) y[t * ys + r] = abi_zsum(acc[r][t]);
    }
    ABI_TILE_RN(iq4_nl, nib, ABI_NIB_IQ4_NL)
    ABI_TILE_RN(q4_0, nib, ABI_NIB_Q4_0)
    ABI_TILE_RN(mxfp4, nib, ABI_NIB_MXFP4)

    /* ------------------------------------------------------------------ Q5_1 x Q8_1
       T = 1: one accumulator over the blocks in order and a scalar accm (m_w s_x, one fused
       multiply-add a block); here two tokens side by side, [token 2j | 2j + 1] (an odd last
       token computed twice, stored once), and the accm of the N tokens in lanes 0..N-1. */
    ABI_AINL void abi_tile_q5_1_rn(const uint8_t* w, Py_ssize_t rb, const uint8_t* x, Py_ssize_t xs,
                                   Py_ssize_t nb, float* y, Py_ssize_t ys, const int R, const int N) {
        enum { P = (ABI_TILE_N + 1) / 2 };
        const int NP = (N + 1) / 2;
        const __m256i b4 = _mm256_set1_epi8(16);
        __m512 acc[ABI_TILE_R][P];
        __m256 accm[ABI_TILE_R];
        float sx[ABI_TILE_N] = {0};
        ABI_UNROLL for (int r = 0; r < R; ++r) {
            accm[r] = _mm256_setzero_ps();
            ABI_UNROLL for (int j = 0; j < NP; ++j) acc[r][j] = _mm512_setzero_ps();
        }
        for (Py_ssize_t i = 0; i < nb; ++i) {
            __m512i u[ABI_TILE_R]; __m512 dw[ABI_TILE_R];
            ABI_UNROLL for (int r = 0; r < R; ++r) {
                const uint8_t* wr = w + r * rb + 24 * i;
                const __m256i q = _mm256_or_si256(abi_nibbles32(wr + 8), _mm256_and_si256(abi_bitmask32(wr + 4), b4));
                u[r] = abi_zi(q, q);
                dw[r] = _mm512_set1_ps(abi_f16t(wr));
            }
            ABI_UNROLL for (int j = 0; j < NP; ++j) {
                const uint8_t* xa = x + (2 * j) * xs + 36 * i;
                const uint8_t* xb = 2 * j + 1 < N ? xa + xs : xa;
                const __m512i s = abi_zld(xa + 4, xb + 4);
                const __m512 dx = abi_zf2(abi_f16t(xa), abi_f16t(xb));
                sx[2 * j] = abi_f16t(xa + 2);
                if (2 * j + 1 < N) sx[2 * j + 1] = abi_f16t(xb + 2);
                ABI_UNROLL for (int r = 0; r < R; ++r)
                    acc[r][j] = _mm512_fmadd_ps(_mm512_mul_ps(dw[r], dx), _mm512_cvtepi32_ps(abi_dpbusd_z(u[r], s)), acc[r][j]);
            }
            const __m256 vs = _mm256_loadu_ps(sx);
            ABI_UNROLL for (int r = 0; r < R; ++r)
                accm[r] = _mm256_fmadd_ps(_mm256_set1_ps(abi_f16t(w + r * rb + 24 * i + 2)), vs, accm[r]);
        }
        ABI_UNROLL for (int r = 0; r < R; ++r) {
            float m[ABI_TILE_N];
            _mm256_storeu_ps(m, accm[r]);
            ABI_UNROLL for (int j = 0; j < NP; ++j) {
                y[(2 * j) * ys + r] = abi_hsum8(abi_zlo(acc[r][j])) + m[2 * j];
                if (2 * j + 1 < N) y[(2 * j + 1) * ys + r] = abi_hsum8(abi_zhi(acc[r][j])) + m[2 * j + 1];
            }
        }
    }

    /* ------------------------------------------------------------------ Q2_K x Q8_K
       T = 1: acc (scales) and accm (mins); here [acc | accm] as the Q5_K tile, the block's
       integer sum over pairs of 32-element groups as the Q3_K tile (16 scales, low nibbles;
       the 16 mins, high nibbles, against the bsums). */
    ABI_AINL void abi_tile_q2_k_rn(const uint8_t* w, Py_ssize_t rb, const uint8_t* x, Py_ssize_t xs,
                                   Py_ssize_t nb, float* y, Py_ssize_t ys, const int R, const int N) {
        const __m256i m3 = _mm256_set1_epi8(3);
        const __m128i m4 = _mm_set1_epi8(15);
        __m512 acc[ABI_TILE_R][ABI_TILE_N];
        ABI_UNROLL for (int r = 0; r < R; ++r) ABI_UNROLL for (int t = 0; t < N; ++t) acc[r][t] = _mm512_setzero_ps();
        for (Py_ssize_t i = 0; i < nb; ++i) {
            __m512i sum[ABI_TILE_R][ABI_TILE_N];
            __m512i sc16[ABI_TILE_R];    /* the 16 scales as int16, in both halves */
            __m256i mn16[ABI_TILE_R];
            __m512 dd[ABI_TILE_R];       /* [d x 8 | dmin x 8] */
            ABI_UNROLL for (int r = 0; r < R; ++r) {
                const uint8_t* wr = w + r * rb + 84 * i;
                const __m128i sm = _mm_loadu_si128((const __m128i*)wr);
                const __m256i s = _mm256_cvtepu8_epi16(_mm_and_si128(sm, m4));
                sc16[r] = abi_zi(s, s);
                mn16[r] = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sm, 4), m4));
                dd[r] = abi_zf2(abi_f16t(wr + 80), abi_f16t(wr + 82));
                ABI_UNROLL for (int t = 0; t < N; ++t) sum[r][t] = _mm512_setzero_si512();
            }
            ABI_UNROLL for (int g = 0; g < 4; ++g) {   /* groups s = 2(g & 1), + 1 of half h = g >> 1 */
                const int h = g >> 1, s0 = 2 * (g & 1);
                const __m512i idx = _mm512_add_epi16(_mm512_set1_epi16((short)(8 * h + 4 * (g & 1))),
                    _mm512_set_epi16(3,3,3,3,3,3,3,3, 2,2,2,2,2,2,2,2, 1,1,1,1,1,1,1,1, 0,0,0,0,0,0,0,0));
                __m512i u[ABI_TILE_R], s16[ABI_TILE_R];
                ABI_UNROLL for (int r = 0; r < R; ++r) {
                    const __m256i q = _mm256_loadu_si256((const __m256i*)(w + r * rb + 84 * i + 16 + 32 * h));
                    u[r] = abi_zi(_mm256_and_si256(_mm256_srli_epi16(q, 2 * s0), m3), _mm256_and_si256(_mm256_srli_epi16(q, 2 * s0 + 2), m3));
                    s16[r] = _mm512_permutexvar_epi16(idx, sc16[r]);
                }
                ABI_UNROLL for (int t = 0; t < N; ++t) {
                    const __m512i s = _mm512_loadu_si512((const void*)(x + t * xs + 292 * i + 4 + 128 * h + 64 * (g & 1)));
                    ABI_UNROLL for (int r = 0; r < R; ++r)
                        sum[r][t] = _mm512_dpwssd_epi32(sum[r][t], _mm512_maddubs_epi16(u[r], s), s16[r]);
                }
            }
            ABI_UNROLL for (int t = 0; t < N; ++t) {
                const uint8_t* xt = x + t * xs + 292 * i;
                const __m512 dx = _mm512_set1_ps(abi_ldf32(xt));
                const __m256i bs = _mm256_loadu_si256((const __m256i*)(xt + 260));
                ABI_UNROLL for (int r = 0; r < R; ++r) {
                    const __m512i v = abi_zi(abi_zfold(sum[r][t]), _mm256_madd_epi16(mn16[r], bs));
                    acc[r][t] = _mm512_fmadd_ps(_mm512_mul_ps(dd[r], dx), _mm512_cvtepi32_ps(v), acc[r][t]);
                }
            }
        }
        ABI_UNROLL for (int r = 0; r < R; ++r)
            ABI_UNROLL for (int t = 0; t < N; ++t) y[t * ys + r] = abi_hsum8(abi_zlo(acc[r][t])) - abi_hsum8(abi_zhi(acc[r][t]));
    }

    /* ------------------------------------------------------------------ IQ4_XS x Q8_K
       T = 1: one 8-lane accumulator; here two tokens side by side, [token 2j | 2j + 1] (an
       odd last token is computed twice, stored once). 64 activation bytes at a time (sub-
       blocks 2c, 2c + 1) against the table values laid out to match; the sign of each value
       moves onto the activation (a masked negation per row and token) so that maddubs takes
       |v|, as the T = 1 kernel does. 128-bit lanes 0 + 1 of the sum are the T = 1 lanes 0-3,
       lanes 2 + 3 its lanes 4-7. */
    ABI_AINL void abi_tile_iq4_xs_rn(const uint8_t* w, Py_ssize_t rb, const uint8_t* x, Py_ssize_t xs,
                                     Py_ssize_t nb, float* y, Py_ssize_t ys, const int R, const int N) {
        enum { P = (ABI_TILE_N + 1) / 2 };
        const int NP = (N + 1) / 2;
        const __m512i m4 = _mm512_set1_epi8(15);
        const __m512i tbl = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i*)abi_qdot_iq4nl));
        const __m128i m4x = _mm_set1_epi8(15);
        const __m128i hmul = _mm_setr_epi16(1 << 14, 1 << 12, 1 << 10, 1 << 8, 1 << 6, 1 << 4, 1 << 2, 1);
        __m512 acc[ABI_TILE_R][P];
        ABI_UNROLL for (int r = 0; r < R; ++r) ABI_UNROLL for (int j = 0; j < NP; ++j) acc[r][j] = _mm512_setzero_ps();
        for (Py_ssize_t i = 0; i < nb; ++i) {
            __m512i sum[ABI_TILE_R][ABI_TILE_N];
            __m512i ls[ABI_TILE_R];    /* the 8 scales as int16, lanes 0-7 */
            __m512 d[ABI_TILE_R];
            ABI_UNROLL for (int r = 0; r < R; ++r) {
                const uint8_t* wr = w + r * rb + 136 * i;
                /* as the T = 1 kernel: nibbles of scales_l, top bits of scales_h, less 32 */
                const __m128i sl = _mm_cvtsi32_si128((int)abi_ld32(wr + 4));
                const __m128i lo4 = _mm_unpacklo_epi8(_mm_and_si128(sl, m4x), _mm_and_si128(_mm_srli_epi16(sl, 4), m4x));
                const __m128i hi2 = _mm_srli_epi16(_mm_mullo_epi16(_mm_set1_epi16((short)abi_ld16(wr + 2)), hmul), 14);
                ls[r] = _mm512_castsi128_si512(_mm_sub_epi16(_mm_or_si128(_mm_cvtepu8_epi16(lo4), _mm_slli_epi16(hi2, 4)), _mm_set1_epi16(32)));
                d[r] = _mm512_set1_ps(abi_f16t(wr));
                ABI_UNROLL for (int t = 0; t < N; ++t) sum[r][t] = _mm512_setzero_si512();
            }
            ABI_UNROLL for (int c = 0; c < 4; ++c) {
                /* [scale 2c x 16 | scale 2c + 1 x 16] */
                const __m512i idx = abi_zi(_mm256_set1_epi16((short)(2 * c)), _mm256_set1_epi16((short)(2 * c + 1)));
                __m512i u[ABI_TILE_R], s16[ABI_TILE_R];
                __mmask64 neg[ABI_TILE_R];
                ABI_UNROLL for (int r = 0; r < R; ++r) {
                    /* 128-bit lanes [bytes 0-15 | 0-15 | 16-31 | 16-31], nibbles low, high, low, high:
                       elements 0-15, 16-31 of sub-block 2c, then of 2c + 1 */
                    const __m512i q = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i*)(w + r * rb + 136 * i + 8 + 32 * c)));
                    const __m512i qq = _mm512_shuffle_i64x2(q, q, 0x50);
                    const __m512i v = _mm512_shuffle_epi8(tbl, _mm512_and_si512(_mm512_mask_srli_epi16(qq, (__mmask32)0xFF00FF00u, qq, 4), m4));
                    u[r] = _mm512_abs_epi8(v);
                    neg[r] = _mm512_movepi8_mask(v);
                    s16[r] = _mm512_permutexvar_epi16(idx, ls[r]);
                }
                ABI_UNROLL for (int t = 0; t < N; ++t) {
                    const __m512i s = _mm512_loadu_si512((const void*)(x + t * xs + 292 * i + 4 + 64 * c));
                    ABI_UNROLL for (int r = 0; r < R; ++r) {
                        /* |v|, |q_x| <= 127: a pair of products stays below 2^15 */
                        const __m512i sg = _mm512_mask_sub_epi8(s, neg[r], _mm512_setzero_si512(), s);
                        sum[r][t] = _mm512_dpwssd_epi32(sum[r][t], _mm512_maddubs_epi16(u[r], sg), s16[r]);
                    }
                }
            }
            ABI_UNROLL for (int j = 0; j < NP; ++j) {
                const uint8_t* xa = x + (2 * j) * xs + 292 * i;
                const uint8_t* xb = 2 * j + 1 < N ? xa + xs : xa;
                const __m512 dx = abi_zf2(abi_ldf32(xa), abi_ldf32(xb));
                ABI_UNROLL for (int r = 0; r < R; ++r) {
                    const __m512i sa = sum[r][2 * j], sb = 2 * j + 1 < N ? sum[r][2 * j + 1] : sa;
                    /* [a0 + a1, a2 + a3 | b0 + b1, b2 + b3] over 128-bit lanes */
                    const __m512i v = _mm512_add_epi32(_mm512_shuffle_i64x2(sa, sb, 0x88), _mm512_shuffle_i64x2(sa, sb, 0xDD));
                    acc[r][j] = _mm512_fmadd_ps(_mm512_mul_ps(d[r], dx), _mm512_cvtepi32_ps(v), acc[r][j]);
                }
            }
        }
        ABI_UNROLL for (int r = 0; r < R; ++r)
            ABI_UNROLL for (int j = 0; j < NP; ++j) {
                y[(2 * j) * ys + r] = abi_hsum8(abi_zlo(acc[r][j]));
                if (2 * j + 1 < N) y[(2 * j + 1) * ys + r] = abi_hsum8(abi_zhi(acc[r][j]));
            }
    }

    /* ------------------------------------------------------------------ TQ1_0, TQ2_0 x Q8_K
       T = 1: acc0 (even blocks), acc1 (odd), 8 lanes each; here [acc0 | acc1]. Its block
       lanes: lane k = sum t q over bytes 4k..4k+3 of every 32-byte group, less the bsums
       2k, 2k + 1. Here the same 4 steps of 64 activation bytes against the trits (unpacked once
       per tile in the T = 1 layout), started from [- bsums | 0]; a swap of the halves and an
       add put the lanes in both halves, and a masked FMA adds them into the block's half. */
    #if ABI_QTILE_IQ
    /* the 4 steps' trits of a TQ1_0 block: qs[0..31] twice per step, then qs[32..47] and qh */
    ABI_AINL void abi_tq1_unpack(const uint8_t* wr, __m512i* u) {
        const __m256i b0 = _mm256_loadu_si256((const __m256i*)wr);
        const __m256i b1 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)(wr + 32)));
        const __m256i b2 = _mm256_set_m128i(_mm_set1_epi32((int)abi_ld32(wr + 48)), _mm256_castsi256_si128(b1));
        const __m512i bb = abi_zi(b0, b0);
        u[0] = abi_tq1_trits512(bb, abi_pow3x4(1, 1, 3, 3));
        u[1] = abi_tq1_trits512(bb, abi_pow3x4(9, 9, 27, 27));
        u[2] = abi_tq1_trits512(abi_zi(b0, b1), abi_pow3x4(81, 81, 1, 3));
        u[3] = abi_tq1_trits512(abi_zi(b1, b2), abi_zi(_mm256_set_m128i(_mm_set1_epi16(27), _mm_set1_epi16(9)),
                                                      _mm256_setr_epi16(81, 81, 81, 81, 81, 81, 81, 81, 1, 1, 3, 3, 9, 9, 27, 27)));
    }
    #endif
    /* the 4 steps' 2-bit values of a TQ2_0 block: two planes a step */
    ABI_AINL void abi_tq2_unpack(const uint8_t* wr, __m512i* u) {
        const __m512i m3 = _mm512_set1_epi8(3);
        const __m256i b0 = _mm256_loadu_si256((const __m256i*)wr), b1 = _mm256_loadu_si256((const __m256i*)(wr + 32));
        const __m512i c0 = abi_zi(b0, _mm256_srli_epi16(b0, 2)), c1 = abi_zi(b1, _mm256_srli_epi16(b1, 2));
        u[0] = _mm512_and_si512(c0, m3);
        u[1] = _mm512_and_si512(_mm512_srli_epi16(c0, 4), m3);
        u[2] = _mm512_and_si512(c1, m3);
        u[3] = _mm512_and_si512(_mm512_srli_epi16(c1, 4), m3);
    }
    /* tq1 (a constant where it is called) picks TQ1_0's block over TQ2_0's */
    ABI_AINL void abi_tile_tq_rn(const uint8_t* w, Py_ssize_t rb, const uint8_t* x, Py_ssize_t xs,
                                 Py_ssize_t nb, float* y, Py_ssize_t ys, const int R, const int N, const int tq1) {
        const int bytes = tq1 ? 54 : 66;
        __m512 acc[ABI_TILE_R][ABI_TILE_N];
        ABI_UNROLL for (int r = 0; r < R; ++r) ABI_UNROLL for (int t = 0; t < N; ++t) acc[r][t] = _mm512_setzero_ps();
        for (Py_ssize_t i = 0; i < nb; ++i) {
            const __mmask16 half = (i & 1) ? 0xFF00 : 0x00FF;
            __m512i u[ABI_TILE_R][4]; __m512 dw[ABI_TILE_R];
            ABI_UNROLL for (int r = 0; r < R; ++r) {
                const uint8_t* wr = w + r * rb + bytes * i;
            #if ABI_QTILE_IQ
                if (tq1) abi_tq1_unpack(wr, u[r]); else
            #endif
                abi_tq2_unpack(wr, u[r]);   /* (tq1 is never set where TQ1_0 has no tile) */
                dw[r] = _mm512_set1_ps(abi_f16t(wr + bytes - 2));
            }
            ABI_UNROLL for (int t = 0; t < N; ++t) {
                const uint8_t* xt = x + t * xs + 292 * i;
                const __m512i c = _mm512_zextsi256_si512(_mm256_sub_epi32(_mm256_setzero_si256(),
                    _mm256_madd_epi16(_mm256_loadu_si256((const __m256i*)(xt + 260)), _mm256_set1_epi16(1))));
                const __m512 dx = _mm512_set1_ps(abi_ldf32(xt));
                ABI_UNROLL for (int r = 0; r < R; ++r) {
                    __m512i s = c;
                    ABI_UNROLL for (int k = 0; k < 4; ++k)
                        s = _mm512_dpbusd_epi32(s, u[r][k], _mm512_loadu_si512((const void*)(xt + 4 + 64 * k)));
                    s = _mm512_add_epi32(s, _mm512_shuffle_i64x2(s, s, 0x4E));
                    acc[r][t] = _mm512_mask3_fmadd_ps(_mm512_mul_ps(dw[r], dx), _mm512_cvtepi32_ps(s), acc[r][t], half);
                }
            }
        }
        ABI_UNROLL for (int r = 0; r < R; ++r) ABI_UNROLL for (int t = 0; t < N; ++t) y[t * ys + r] = abi_zsum(acc[r][t]);
    }
    #if ABI_QTILE_IQ
    ABI_TILE_RN(tq1_0, tq, 1)
    #endif
    ABI_TILE_RN(tq2_0, tq, 0)

    /* ------------------------------------------------------------------ IQ1_S, IQ1_M x Q8_K
       T = 1 (ABI_IQ_ROW_SIMD of _qdot_iq.pxd): acc0 (even blocks), acc1 (odd); here
       [acc0 | acc1]. A block is unpacked once per tile (abi_iq1s/m_unpack) and its 8 lanes
       per token are the T = 1 kernel's (abi_iq1_lanes), added into the block's half by a
       masked fused multiply-add. Needs the pdep/VBMI block code (ABI_IQ_Z). */
    #if ABI_QTILE_IQ
    ABI_AINL void abi_tile_iq1_rn(const uint8_t* w, Py_ssize_t rb, const uint8_t* x, Py_ssize_t xs,
                                  Py_ssize_t nb, float* y, Py_ssize_t ys, const int R, const int N, const int m) {
        const Py_ssize_t wsize = m ? 56 : 50;
        __m512 acc[ABI_TILE_R][ABI_TILE_N];
        ABI_UNROLL for (int r = 0; r < R; ++r) ABI_UNROLL for (int t = 0; t < N; ++t) acc[r][t] = _mm512_setzero_ps();
        for (Py_ssize_t i = 0; i < nb; ++i) {
            const __mmask16 half = i & 1 ? 0xFF00 : 0x00FF;
            __m512i u[ABI_TILE_R][4];
            __m256i cf[ABI_TILE_R];
            float dw[ABI_TILE_R];
            ABI_UNROLL for (int r = 0; r < R; ++r) {
                const uint8_t* wr = w + r * rb + wsize * i;
                cf[r] = m ? abi_iq1m_unpack(wr, u[r]) : abi_iq1s_unpack(wr, u[r]);
                dw[r] = m ? abi_iqs_iq1m(wr) : abi_iqt_iq2(wr);
            }
            ABI_UNROLL for (int t = 0; t < N; ++t) {
                const uint8_t* xt = x + t * xs + 292 * i;
                __m512i q[4];
                ABI_UNROLL for (int p = 0; p < 4; ++p) q[p] = _mm512_loadu_si512((const void*)(xt + 4 + 64 * p));
                const __m256i bs = _mm256_loadu_si256((const __m256i*)(xt + 260));
                const float dx = abi_ldf32(xt);
                ABI_UNROLL for (int r = 0; r < R; ++r) {
                    const __m256i v = abi_iq1_lanes(u[r], cf[r], q, bs, m ? ABI_IQ1M_SHIFT : ABI_IQ1S_SHIFT);
                    acc[r][t] = _mm512_mask3_fmadd_ps(_mm512_set1_ps(dw[r] * dx), _mm512_cvtepi32_ps(_mm512_broadcast_i64x4(v)),
                                                      acc[r][t], half);
                }
            }
        }
        ABI_UNROLL for (int r = 0; r < R; ++r) ABI_UNROLL for (int t = 0; t < N; ++t) y[t * ys + r] = abi_zsum(acc[r][t]);
    }
    ABI_TILE_RN(iq1_s, iq1, 0)
    ABI_TILE_RN(iq1_m, iq1, 1)
    #endif

    /* n (< TN) leftover tokens as one tile of that many: the rows are unpacked once for
       all of them, not once per token (a continuous batch of 2, 3, 5... sequences); a case
       k >= TN falls through to the full tile */
    #define ABI_TILE_TAIL(name, R, TN, k) \\
        case k: if (k < TN) { abi_tile_##name##_rn(w, rb, x, xs, nb, y, ys, R, (k < TN ? k : 1)); break; }
    #define ABI_TILE_N_OF(name, R, TN)                                                                  \\
    ABI_AINL void abi_tile_##name##_r##R(const uint8_t* w, Py_ssize_t rb, const uint8_t* x, Py_ssize_t xs, \\
                                         Py_ssize_t nb, float* y, Py_ssize_t ys, Py_ssize_t n) {   \\
        switch (n) {                                                                                \\
            ABI_TILE_TAIL(name, R, TN, 1) ABI_TILE_TAIL(name, R, TN, 2) ABI_TILE_TAIL(name, R, TN, 3) \\
            ABI_TILE_TAIL(name, R, TN, 4) ABI_TILE_TAIL(name, R, TN, 5) ABI_TILE_TAIL(name, R, TN, 6) \\
            ABI_TILE_TAIL(name, R, TN, 7)                                                           \\
            default: abi_tile_##name##_rn(w, rb, x, xs, nb, y, ys, R, TN);                          \\
        }                                                                                           \\
    }
    /* passes of TN tokens (the last one of what is left) over the rows: R x N tiles, then
       the leftover rows one at a time */
    #define ABI_TILE_DRIVER(name, TR, TN)                                                               \\
    ABI_TILE_N_OF(name, TR, TN)                                                                     \\
    ABI_TILE_N_OF(name, 1, TN)                                                                      \\
    static void abi_tile_##name(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x,   \\
                                Py_ssize_t xs, Py_ssize_t nt, Py_ssize_t nb, float* y, Py_ssize_t ys) { \\
        for (Py_ssize_t t = 0; t < nt; t += TN) {                                                   \\
            const Py_ssize_t n = nt - t < TN ? nt - t : TN;                                         \\
            Py_ssize_t r = 0;                                                                       \\
            for (; r + TR <= nr; r += TR)                                                           \\
                abi_tile_##name##_r##TR(w + r * rb, rb, x + t * xs, xs, nb, y + t * ys + r, ys, n); \\
            for (; r < nr; ++r)                                                                     \\
                abi_tile_##name##_r1(w + r * rb, rb, x + t * xs, xs, nb, y + t * ys + r, ys, n);   \\
        }                                                                                           \\
    }
    /* rows x tokens per tile: as many as keep the accumulators within the 32 registers, the
       shape measured fastest (Zen 4: 2 x 8 for the k-quants, whose unpacking is dear; Q5_0,
       4 x 8, has its own driver above) */
    ABI_TILE_DRIVER(q4_1, 4, 4)
    ABI_TILE_DRIVER(q8_0, 4, 4)
    ABI_TILE_DRIVER(q6_k, 2, 8)
    ABI_TILE_DRIVER(iq4_nl, 4, 4)
    ABI_TILE_DRIVER(iq4_xs, 2, 8)
    ABI_TILE_DRIVER(q5_k, 2, 8)
    ABI_TILE_DRIVER(q3_k, 2, 8)
    ABI_TILE_DRIVER(q4_0, 4, 4)
    ABI_TILE_DRIVER(q5_1, 4, 8)
    ABI_TILE_DRIVER(q2_k, 2, 8)
    ABI_TILE_DRIVER(mxfp4, 4, 4)
    #if ABI_QTILE_IQ
    ABI_TILE_DRIVER(tq1_0, 2, 8)
    #endif
    ABI_TILE_DRIVER(tq2_0, 2, 8)

    /* ================================================================== IQ2_XS, IQ2_S, IQ3_XXS x Q8_K
       Lattice weights: each element a grid byte (unsigned), a sign and a scale. T = 1
       (_qdot_iq.pxd's ABI_IQ_ROW_SIMD): acc0 (even blocks) and acc1 (odd), and a block's 8
       int32 lanes hold, lane L, its elements 32 g + 4 L .. 32 g + 4 L + 3 summed over the
       groups g (the grid byte times the signed activation, times the element's scale). Here
       [acc0 | acc1], and the two blocks of a pair are summed side by side in one register:
       step g takes [group g of block i | group g of block i + 1], so after the 8 groups the
       lanes are [block i's 8 | block i + 1's 8], the same integers. An odd last block pairs
       with itself and updates acc0 only. Unlike T = 1 the signs go onto the weights (signed
       bytes, |v| <= 62) and the activation is offset to unsigned, q + 128 (a pair of
       products stays below 2^15); 128 times the weights' scaled sums, a row's constant, is
       taken back out before the tokens are added. Needs the 512-bit lattice helpers of
       _qdot_iq.pxd (ABI_IQ_Z: VBMI, BITALG, BMI2). */
    #if ABI_QTILE_IQ
    enum { ABI_TIQ_IQ2_XS, ABI_TIQ_IQ2_S, ABI_TIQ_IQ3_XXS };

    /* one block unpacked as the T = 1 kernel does: g[p] the grid bytes of elements 64 p ..
       64 p + 63, sg[p] their sign bits, sc the int16 scale (2 ls + 1) of elements 16 k ..
       16 k + 15 in word k */
    ABI_AINL void abi_tiq_unpack(const int kind, const uint8_t* w, __m512i g[4], uint64_t sg[4], __m256i* sc) {
        if (kind == ABI_TIQ_IQ2_XS) {
            const __m512i qs = _mm512_loadu_si512((const void*)(w + 2));
            _mm256_storeu_si256((__m256i*)sg, abi_iq_ksbytes(_mm512_cvtepi16_epi8(_mm512_srli_epi16(qs, 9))));
            __m512i t[16];
            ABI_UNROLL for (int k = 0; k < 16; ++k) t[k] = _mm512_loadu_si512((const void*)(abi_iq2xs_code + 32 * k));
            const __m512i codes = abi_iq_code512(t, _mm512_and_si512(qs, _mm512_set1_epi16(511)));
            ABI_UNROLL for (int p = 0; p < 4; ++p) g[p] = abi_iq_expand8(codes, p, abi_iq_val3(8, 25, 43));
            *sc = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(abi_iq_nib_scales(abi_iq_ld64(w + 66))));
        } else if (kind == ABI_TIQ_IQ2_S) {
            ABI_UNROLL for (int p = 0; p < 4; ++p) {
                g[p] = abi_iq_rows8(abi_iq2s_grid, ABI_IQ2S_IX4(w, 2 * p), ABI_IQ2S_IX4(w, 2 * p + 1));
                sg[p] = abi_iq_ld64(w + 34 + 8 * p);
            }
            *sc = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(abi_iq_nib_scales(abi_iq_ld64(w + 74))));
        } else {
            const __m256i aux = _mm256_loadu_si256((const __m256i*)(w + 66));
            abi_iq_ks8(_mm512_cvtepu32_epi64(aux), 0, (uint32_t*)sg);
            __m512i t[8];
            ABI_UNROLL for (int k = 0; k < 8; ++k) t[k] = _mm512_loadu_si512((const void*)(abi_iq3xxs_code + 32 * k));
            ABI_UNROLL for (int h = 0; h < 2; ++h) {
                const __m512i codes = abi_iq_code256(t, _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i*)(w + 2 + 32 * h))));
                ABI_UNROLL for (int p = 0; p < 2; ++p) g[2 * h + p] = abi_iq_expand16x3(codes, p, _mm512_set1_epi64(0x3e342c241c140c04LL));
            }
            /* a scale per 32 elements: 2 (aux >> 28) + 1 of group k in words 2 k and 2 k + 1 */
            const __m256i s = _mm256_or_si256(_mm256_slli_epi32(_mm256_srli_epi32(aux, 28), 1), _mm256_set1_epi32(1));
            *sc = _mm256_or_si256(s, _mm256_slli_epi32(s, 16));
        }
    }

    /* The activations of a pass of n <= 16 tokens, prepared once for all the rows: for pair j
       (blocks 2 j and 2 j + 1, or the odd last block twice) at xp + 576 n j, 9 rows of n x 64
       bytes: group g's [q + 128 of block 2 j | of 2 j + 1] (row g < 8), [d of 2 j x 8 | of
       2 j + 1 x 8] (row 8). */
    #define ABI_TIQ_PAIR 576
    #define ABI_TIQ_N 16     /* tokens a pass: a row's unpacking is shared by all of them */
    static const uint8_t* abi_tiq_prep(const uint8_t* x, Py_ssize_t xs, int n, Py_ssize_t nb) {
        uint8_t* xp = abi_tile_scratch((size_t)ABI_TIQ_PAIR * n * ((nb + 1) / 2));
        const __m512i off = _mm512_set1_epi8((char)0x80);
        for (Py_ssize_t j = 0; 2 * j < nb; ++j) {
            const Py_ssize_t ia = 2 * j, ib = 2 * j + 1 < nb ? 2 * j + 1 : 2 * j;
            uint8_t* pp = xp + (size_t)ABI_TIQ_PAIR * n * j;
            for (int t = 0; t < n; ++t) {
                const uint8_t* xt = x + t * xs;
                for (int g = 0; g < 8; ++g)
                    _mm512_store_si512((void*)(pp + 64 * (g * n + t)),
                                       _mm512_xor_si512(abi_zld(xt + 292 * ia + 4 + 32 * g, xt + 292 * ib + 4 + 32 * g), off));
                _mm512_store_ps((float*)(pp + 64 * (8 * n + t)), abi_zf2(abi_ldf32(xt + 292 * ia), abi_ldf32(xt + 292 * ib)));
            }
        }
        return xp;
    }

    /* blocks i and ib (ib = i + 1, or i for an odd last block, then with lanes 0x00FF) of one
       row x N tokens (pp: tokens of their prepared pair, a pass of n) into acc */
    ABI_AINL void abi_tiq_pair(const int kind, const uint8_t* wa, const uint8_t* wb, const uint8_t* pp, int n,
                               __m512 acc[ABI_TIQ_N], const int N, const __mmask16 lanes) {
        const __m512i ones = _mm512_set1_epi8(1);
        __m512i wv[8], ws[8], sum[ABI_TIQ_N];
        __m512i ga[4], gb[4];
        uint64_t sa[4], sb[4];
        __m256i ca, cb;
        abi_tiq_unpack(kind, wa, ga, sa, &ca);
        abi_tiq_unpack(kind, wb, gb, sb, &cb);
        const __m512i sc = abi_zi(ca, cb);
        __m512i c = _mm512_setzero_si512();
        ABI_UNROLL for (int g = 0; g < 8; ++g) {
            const __m512i u = _mm512_shuffle_i64x2(ga[g >> 1], gb[g >> 1], g & 1 ? 0xEE : 0x44);
            const uint64_t m = (uint32_t)(sa[g >> 1] >> (32 * (g & 1))) | (sb[g >> 1] >> (32 * (g & 1))) << 32;
            wv[g] = _mm512_mask_sub_epi8(u, (__mmask64)m, _mm512_setzero_si512(), u);
            /* words [scale 2 g x 8 | 2 g + 1 x 8 | block ib's 2 g x 8 | 2 g + 1 x 8] */
            ws[g] = _mm512_permutexvar_epi16(_mm512_add_epi16(_mm512_set1_epi16((short)(2 * g)),
                _mm512_set_epi16(17,17,17,17,17,17,17,17, 16,16,16,16,16,16,16,16, 1,1,1,1,1,1,1,1, 0,0,0,0,0,0,0,0)), sc);
            c = _mm512_dpwssd_epi32(c, _mm512_maddubs_epi16(ones, wv[g]), ws[g]);
        }
        /* 128 times the row's scaled weight sums, lane by lane: the offset's part */
        c = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(c, 7));
        ABI_UNROLL for (int t = 0; t < N; ++t) sum[t] = c;
        ABI_UNROLL for (int g = 0; g < 8; ++g)
            ABI_UNROLL for (int t = 0; t < N; ++t)
                sum[t] = _mm512_dpwssd_epi32(sum[t], _mm512_maddubs_epi16(_mm512_load_si512((const void*)(pp + 64 * (g * n + t))), wv[g]), ws[g]);
        const __m512 dd = kind == ABI_TIQ_IQ3_XXS ? abi_zf2(abi_iqt_iq3xxs(wa), abi_iqt_iq3xxs(wb))
                                                  : abi_zf2(abi_iqt_iq2(wa), abi_iqt_iq2(wb));
        ABI_UNROLL for (int t = 0; t < N; ++t) {
            const __m512 d = _mm512_mul_ps(dd, _mm512_load_ps((const float*)(pp + 64 * (8 * n + t))));
            acc[t] = lanes == 0xFFFF ? _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sum[t]), acc[t])
                                     : _mm512_mask3_fmadd_ps(d, _mm512_cvtepi32_ps(sum[t]), acc[t], lanes);
        }
    }

    /* row w x N tokens of a pass of n prepared at xp */
    ABI_AINL void abi_tiq_rn(const int kind, const Py_ssize_t bs, const uint8_t* w, const uint8_t* xp, int n,
                             Py_ssize_t nb, float* y, Py_ssize_t ys, const int N) {
        __m512 acc[ABI_TIQ_N];
        ABI_UNROLL for (int t = 0; t < N; ++t) acc[t] = _mm512_setzero_ps();
        Py_ssize_t i = 0;
        for (; i + 1 < nb; i += 2)
            abi_tiq_pair(kind, w + bs * i, w + bs * (i + 1), xp + ABI_TIQ_PAIR * n * (i / 2), n, acc, N, 0xFFFF);
        if (i < nb) abi_tiq_pair(kind, w + bs * i, w + bs * i, xp + ABI_TIQ_PAIR * n * (i / 2), n, acc, N, 0x00FF);
        ABI_UNROLL for (int t = 0; t < N; ++t) y[t * ys] = abi_zsum(acc[t]);
    }
    /* passes of 16 tokens, each prepared once, over the rows one at a time (the unpacking
       costs more than the products); a pass of fewer in tiles of 8 and one of what is left */
    ABI_AINL void abi_tiq_tile(const int kind, const Py_ssize_t bs, const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr,
                             const uint8_t* x, Py_ssize_t xs, Py_ssize_t nt, Py_ssize_t nb, float* y, Py_ssize_t ys) {
        for (Py_ssize_t t = 0; t < nt; t += ABI_TIQ_N) {
            const int n = nt - t < ABI_TIQ_N ? (int)(nt - t) : ABI_TIQ_N;
            const uint8_t* xp = abi_tiq_prep(x + t * xs, xs, n, nb);
            for (Py_ssize_t r = 0; r < nr; ++r) {
                const uint8_t* wr = w + r * rb;
                float* yr = y + t * ys + r;
                if (n == ABI_TIQ_N) { abi_tiq_rn(kind, bs, wr, xp, n, nb, yr, ys, ABI_TIQ_N); continue; }
                int k = 0;
                for (; k + 8 <= n; k += 8) abi_tiq_rn(kind, bs, wr, xp + 64 * k, n, nb, yr + k * ys, ys, 8);
                switch (n - k) {
                    case 1: abi_tiq_rn(kind, bs, wr, xp + 64 * k, n, nb, yr + k * ys, ys, 1); break;
                    case 2: abi_tiq_rn(kind, bs, wr, xp + 64 * k, n, nb, yr + k * ys, ys, 2); break;
                    case 3: abi_tiq_rn(kind, bs, wr, xp + 64 * k, n, nb, yr + k * ys, ys, 3); break;
                    case 4: abi_tiq_rn(kind, bs, wr, xp + 64 * k, n, nb, yr + k * ys, ys, 4); break;
                    case 5: abi_tiq_rn(kind, bs, wr, xp + 64 * k, n, nb, yr + k * ys, ys, 5); break;
                    case 6: abi_tiq_rn(kind, bs, wr, xp + 64 * k, n, nb, yr + k * ys, ys, 6); break;
                    case 7: abi_tiq_rn(kind, bs, wr, xp + 64 * k, n, nb, yr + k * ys, ys, 7); break;
                }
            }
        }
    }
    static void abi_tile_iq2_xs(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x,
                                Py_ssize_t xs, Py_ssize_t nt, Py_ssize_t nb, float* y, Py_ssize_t ys) {
        abi_tiq_tile(ABI_TIQ_IQ2_XS, 74, w, rb, nr, x, xs, nt, nb, y, ys);
    }
    static void abi_tile_iq2_s(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x,
                               Py_ssize_t xs, Py_ssize_t nt, Py_ssize_t nb, float* y, Py_ssize_t ys) {
        abi_tiq_tile(ABI_TIQ_IQ2_S, 82, w, rb, nr, x, xs, nt, nb, y, ys);
    }
    static void abi_tile_iq3_xxs(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x,
                                 Py_ssize_t xs, Py_ssize_t nt, Py_ssize_t nb, float* y, Py_ssize_t ys) {
        abi_tiq_tile(ABI_TIQ_IQ3_XXS, 98, w, rb, nr, x, xs, nt, nb, y, ys);
    }
    #endif /* ABI_QTILE_IQ */

    #if ABI_QTILE_IQ
    ABI_TILE_DRIVER(iq1_s, 2, 8)
    ABI_TILE_DRIVER(iq1_m, 2, 8)
    #endif

    #else
    #define ABI_QTILE 0
    #define ABI_QTILE_IQ 0
    #if !ABI_QTILE2   /* no AVX2 either: these prompts take the T = 1 products */
    ABI_TILE_STUB(q4_1)
    ABI_TILE_STUB(q8_0)
    ABI_TILE_STUB(q5_0)
    ABI_TILE_STUB(q6_k)
    ABI_TILE_STUB(iq4_nl)
    ABI_TILE_STUB(iq4_xs)
    ABI_TILE_STUB(q5_k)
    ABI_TILE_STUB(q3_k)
    ABI_TILE_STUB(q4_0)
    ABI_TILE_STUB(q5_1)
    ABI_TILE_STUB(q2_k)
    ABI_TILE_STUB(mxfp4)
    ABI_TILE_STUB(tq2_0)
    #endif
    #endif

    /* ================================================================== IQ2_XXS, IQ3_S x Q8_K
       T = 1 (_qdot_iq.pxd, its 512-bit path): acc0 (even blocks), acc1 (odd); here [acc0 |
       acc1], a block's folded sum added into its half by a masked FMA. A row's block is
       unpacked (abi_iqw_*: the grid lookups, signs and scales, most of the T = 1 work) once
       for the N tokens, and each token's sum is the T = 1 kernel's (abi_iq_wdot16). 2 x 8
       measured fastest on Zen 5 (2 x 4: 15-20 % slower; 4 x 8 and 3 x 8 spill more). */
    #if ABI_QTILE_IQ
    enum { ABI_IQZ_IQ2_XXS, ABI_IQZ_IQ3_S };
    ABI_AINL void abi_tile_iqz_rn(const uint8_t* w, Py_ssize_t rb, const uint8_t* x, Py_ssize_t xs, Py_ssize_t nb,
                                  float* y, Py_ssize_t ys, const int R, const int N, const int type) {
        const Py_ssize_t bs = type == ABI_IQZ_IQ3_S ? 110 : 66;
        __m512 acc[ABI_TILE_R][ABI_TILE_N];
        ABI_UNROLL for (int r = 0; r < R; ++r) ABI_UNROLL for (int t = 0; t < N; ++t) acc[r][t] = _mm512_setzero_ps();
        for (Py_ssize_t i = 0; i < nb; ++i) {
            const __mmask16 half = i & 1 ? 0xFF00 : 0x00FF;
            abi_iq_wb b[ABI_TILE_R];
            float dw[ABI_TILE_R];
            ABI_UNROLL for (int r = 0; r < R; ++r) {
                const uint8_t* wr = w + r * rb + bs * i;
                if (type == ABI_IQZ_IQ3_S) { abi_iqw_iq3_s(wr, &b[r]); dw[r] = abi_iqt_d0(wr); }
                else { abi_iqw_iq2_xxs(wr, &b[r]); dw[r] = abi_iqt_iq2(wr); }
            }
            ABI_UNROLL for (int t = 0; t < N; ++t) {
                const uint8_t* xt = x + t * xs + 292 * i;
                const float dx = abi_ldf32(xt);
                ABI_UNROLL for (int r = 0; r < R; ++r) {
                    /* [fold | fold]: the T = 1 kernel's 8 lanes (abi_iq_wdot) in both halves */
                    const __m512i v = abi_iq_wdot16(&b[r], (const int8_t*)(xt + 4));
                    const __m512i f = _mm512_add_epi32(v, _mm512_shuffle_i64x2(v, v, 0x4E));
                    acc[r][t] = _mm512_mask3_fmadd_ps(_mm512_set1_ps(dw[r] * dx), _mm512_cvtepi32_ps(f), acc[r][t], half);
                }
            }
        }
        ABI_UNROLL for (int r = 0; r < R; ++r) ABI_UNROLL for (int t = 0; t < N; ++t) y[t * ys + r] = abi_zsum(acc[r][t]);
    }
    ABI_TILE_RN(iq2_xxs, iqz, ABI_IQZ_IQ2_XXS)
    ABI_TILE_RN(iq3_s, iqz, ABI_IQZ_IQ3_S)
    ABI_TILE_DRIVER(iq2_xxs, 2, 8)
    ABI_TILE_DRIVER(iq3_s, 2, 8)
    #endif
    #if !ABI_QTILE_IQ && !ABI_QTILE2_LAT   /* nor AVX2 ones (_qtile_avx2.pxd): these prompts take the T = 1 products */
    ABI_TILE_STUB(tq1_0)
    ABI_TILE_STUB(iq1_s)
    ABI_TILE_STUB(iq1_m)
    ABI_TILE_STUB(iq2_xs)
    ABI_TILE_STUB(iq2_s)
    ABI_TILE_STUB(iq3_xxs)
    ABI_TILE_STUB(iq2_xxs)
    ABI_TILE_STUB(iq3_s)
    #endif
    #endif /* ABI_QTILE_H */
    """
    bint QTILE "ABI_QTILE"
    bint QTILE_IQ "ABI_QTILE_IQ"   # the TQ1_0, IQ1 and IQ2/IQ3 tiles
    void tile_q4_1 "abi_tile_q4_1"(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs,
                                   Py_ssize_t nt, Py_ssize_t nb, float* y, Py_ssize_t ys) noexcept nogil
    void tile_q8_0 "abi_tile_q8_0"(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs,
                                   Py_ssize_t nt, Py_ssize_t nb, float* y, Py_ssize_t ys) noexcept nogil
    void tile_q5_0 "abi_tile_q5_0"(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs,
                                   Py_ssize_t nt, Py_ssize_t nb, float* y, Py_ssize_t ys) noexcept nogil
    void tile_q4_k "abi_tile_q4_k"(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs,
                                   Py_ssize_t nt, Py_ssize_t nb, float* y, Py_ssize_t ys) noexcept nogil
    void tile_q6_k "abi_tile_q6_k"(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs,
                                   Py_ssize_t nt, Py_ssize_t nb, float* y, Py_ssize_t ys) noexcept nogil
    void tile_iq4_nl "abi_tile_iq4_nl"(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs,
                                       Py_ssize_t nt, Py_ssize_t nb, float* y, Py_ssize_t ys) noexcept nogil
    void tile_iq4_xs "abi_tile_iq4_xs"(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs,
                                       Py_ssize_t nt, Py_ssize_t nb, float* y, Py_ssize_t ys) noexcept nogil
    void tile_q5_k "abi_tile_q5_k"(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs,
                                   Py_ssize_t nt, Py_ssize_t nb, float* y, Py_ssize_t ys) noexcept nogil
    void tile_q3_k "abi_tile_q3_k"(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs,
                                   Py_ssize_t nt, Py_ssize_t nb, float* y, Py_ssize_t ys) noexcept nogil
    void tile_q4_0 "abi_tile_q4_0"(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs,
                                   Py_ssize_t nt, Py_ssize_t nb, float* y, Py_ssize_t ys) noexcept nogil
    void tile_q5_1 "abi_tile_q5_1"(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs,
                                   Py_ssize_t nt, Py_ssize_t nb, float* y, Py_ssize_t ys) noexcept nogil
    void tile_q2_k "abi_tile_q2_k"(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs,
                                   Py_ssize_t nt, Py_ssize_t nb, float* y, Py_ssize_t ys) noexcept nogil
    void tile_mxfp4 "abi_tile_mxfp4"(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs,
                                     Py_ssize_t nt, Py_ssize_t nb, float* y, Py_ssize_t ys) noexcept nogil
    void tile_tq1_0 "abi_tile_tq1_0"(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs,
                                     Py_ssize_t nt, Py_ssize_t nb, float* y, Py_ssize_t ys) noexcept nogil
    void tile_tq2_0 "abi_tile_tq2_0"(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs,
                                     Py_ssize_t nt, Py_ssize_t nb, float* y, Py_ssize_t ys) noexcept nogil
    void tile_iq2_xs "abi_tile_iq2_xs"(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs,
                                       Py_ssize_t nt, Py_ssize_t nb, float* y, Py_ssize_t ys) noexcept nogil
    void tile_iq2_s "abi_tile_iq2_s"(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs,
                                     Py_ssize_t nt, Py_ssize_t nb, float* y, Py_ssize_t ys) noexcept nogil
    void tile_iq3_xxs "abi_tile_iq3_xxs"(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs,
                                         Py_ssize_t nt, Py_ssize_t nb, float* y, Py_ssize_t ys) noexcept nogil
    void tile_iq1_s "abi_tile_iq1_s"(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs,
                                     Py_ssize_t nt, Py_ssize_t nb, float* y, Py_ssize_t ys) noexcept nogil
    void tile_iq1_m "abi_tile_iq1_m"(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs,
                                     Py_ssize_t nt, Py_ssize_t nb, float* y, Py_ssize_t ys) noexcept nogil
    void tile_iq2_xxs "abi_tile_iq2_xxs"(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs,
                                         Py_ssize_t nt, Py_ssize_t nb, float* y, Py_ssize_t ys) noexcept nogil
    void tile_iq3_s "abi_tile_iq3_s"(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs,
                                     Py_ssize_t nt, Py_ssize_t nb, float* y, Py_ssize_t ys) noexcept nogil
