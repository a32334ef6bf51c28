# Prompt (T > 1) products over tiles of weight rows x tokens for CPUs with AVX2 but without
# AVX-512 VNNI (Zen 2/3, Haswell to Alder Lake), as inline C. _qtile.pxd holds the AVX-512
# tiles; where those are built, this file builds nothing but the shared scratch and Q4_K's
# tile (built on every host with AVX2, its float steps a vector for all its pairs).
#
# The same promise as there: each (row, token) pair gets its T = 1 kernel's bits. With 16
# vector registers a tile cannot hold two accumulators per pair, so where the T = 1 kernel
# keeps two chains (even and odd blocks) the tile runs them as two passes over the row and
# adds them at the end as the T = 1 kernel does; the integer block sums are exact however
# they are formed, and the float steps (scale products, fused multiply-adds, the final
# reduction) are the T = 1 ones, lane for lane. tests/test_kernels_matmul.py checks every
# tile against its T = 1 kernel bit for bit.
#
# Both sides are prepared once per call and reused: a group of rows is unpacked to bytes
# once for all the tokens of a chunk, and each token's scales (and, for the types whose
# weights carry an offset, its 4-byte activation sums times the offset) once for all rows.
# A decode batch of a few tokens (the legacy and quad tiles: up to 8 and 4) reads its rows
# as stored instead, each block unpacked where it is used.
#
#   abi_tile_<w>(w, rb, nr, x, xs, nt, nb, y, ys): as in _qtile.pxd. Present where
#   ABI_QTILE2 is 1, for the types has_tile lists under it.
from libc.stdint cimport uint8_t

from abi._kernels._qdot cimport QDOT_SIMD   # its C (abi_f16t, abi_hsum8, abi_nibbles32) first
from abi._kernels._qdot_iq cimport QDOT_IQ_SIMD   # its C (abi_e8m0_half, abi_mxfp4_table) too

cdef extern from *:
    """
    #ifndef ABI_QTILE2_H
    #define ABI_QTILE2_H
    #include <stdio.h>
    #include <stdlib.h>
    /* where a tile is not built: never called (has_tile is false), only linked */
    #define ABI_TILE_STUB(name) static void abi_tile_##name(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, \\
        const uint8_t* x, Py_ssize_t xs, Py_ssize_t nt, Py_ssize_t nb, float* y, Py_ssize_t ys) {}

    #if ABI_QDOT_SIMD
    /* the calling thread's scratch (the tiles' prepared rows and activations, here and in
       _qtile.pxd), grown as needed and kept for its next products */
    static __thread uint8_t* abi_tile_buf = NULL;
    static __thread size_t abi_tile_cap = 0;
    static uint8_t* abi_tile_scratch(size_t n) {
        if (n > abi_tile_cap) {
            free(abi_tile_buf);
            abi_tile_buf = (uint8_t*)aligned_alloc(64, (n + 63) / 64 * 64);
            abi_tile_cap = abi_tile_buf ? n : 0;
            if (!abi_tile_buf) { fputs("abi: out of memory for the prompt products' scratch\\n", stderr); abort(); }
        }
        return abi_tile_buf;
    }
    #define ABI_T2INL static inline __attribute__((always_inline))
    #define ABI_T2UNROLL _Pragma("GCC unroll 16")
    /* the rows the next group will prepare, requested while this group's are used: a decode
       batch reads each row from DRAM for only a few tokens, so the tiles of all its rows run
       in one call and hide that reading themselves */
    ABI_T2INL void abi_t2_prefetch(const uint8_t* p, const uint8_t* end, Py_ssize_t n) {
        for (const uint8_t* q = p; q < p + n && q < end; q += 64) _mm_prefetch((const char*)q, _MM_HINT_T0);
    }
    /* how many rows ahead a decode batch's tiles of R rows request theirs, super-block by
       super-block as they use their own: whole tiles, at least ABI_T2_LEAD row super-blocks
       of work ahead (the next tile of 4 rows of 6 super-blocks is too near: requesting 2
       tiles ahead took Qwen2.5's 1536-column Q4_K products at 4 tokens 0.90-0.95x the time;
       16 to 64 measured alike, 128 no better than 1 tile) */
    #define ABI_T2_LEAD 32
    ABI_T2INL Py_ssize_t abi_t2_ahead(Py_ssize_t nb, int R) {
        return (ABI_T2_LEAD + nb * R - 1) / (nb * R) * R;
    }

    /* ================================================================== Q4_K x Q8_K, built with AVX2 and AVX-512 alike
       T = 1 (_qdot.pxd): a super-block's exact integer sums, S (the scales') and M (the
       mins'), each reduced to one int; then acc += (d dx) S and accm += (dmin dx) M, one
       fused multiply-add each, y = acc - accm. Here two tiles with those sums and float
       steps, so each token keeps its single-token bits. Both read the rows as stored and
       unpack each group where it is used (preparing rows costs stores and loads a decode
       batch does not repay), and both add a 32-weight group's two 16-weight halves in int16
       before one madd with its scale (|v| <= 2 x 3840):
       - up to 4 tokens (decode steps): row pairs x 4 tokens, a register holding 16 weights
         of each row of a pair against 16 bytes of one token in both halves (abi_kp_rn);
       - more (prompts, bigger steps): 2 rows x 8 tokens, a register holding 16 bytes of
         each token of a pair against 16 weights in both halves (abi_kl_r2n8). */
    #define ABI_KL_R 4
    #define ABI_KL_N 4
    /* abi_kl_r2n8's prepared super-block of a group of ABI_KL_N tokens: for pair p, its 16 chunks of 16
       activation bytes [token 2p | token 2p + 1] at 512 p + 32 e; at 1024 + 32 p [the pair's
       B words | ...] (B_j = bsum_2j + bsum_2j+1, word q = (B_2q, B_2q+1)); at 1088 the dx of
       the output lanes, [dx0 dx2 dx0 dx2 | dx1 dx3 dx1 dx3] */
    #define ABI_KL_XP 1120
    static const uint8_t abi_kl_zero[292] __attribute__((aligned(32))) = {0};   /* a missing token */

    /* a token's B words (above) for its super-block at xt */
    ABI_T2INL __m128i abi_kl_bwords(const uint8_t* xt) {
        return _mm_hadd_epi16(_mm_loadu_si128((const __m128i*)(xt + 260)), _mm_loadu_si128((const __m128i*)(xt + 276)));
    }
    static void abi_kl_prep(uint8_t* xp, const uint8_t* x, Py_ssize_t xs, Py_ssize_t nt, Py_ssize_t nb) {
        const Py_ssize_t ng = (nt + ABI_KL_N - 1) / ABI_KL_N;
        for (Py_ssize_t g = 0; g < ng; ++g)
            for (Py_ssize_t i = 0; i < nb; ++i) {
                const uint8_t* xt[ABI_KL_N];
                for (int t = 0; t < ABI_KL_N; ++t)
                    xt[t] = g * ABI_KL_N + t < nt ? x + (g * ABI_KL_N + t) * xs + 292 * i : abi_kl_zero;
                uint8_t* o = xp + (g * nb + i) * ABI_KL_XP;
                for (int p = 0; p < 2; ++p) {
                    for (int e = 0; e < 16; ++e)
                        _mm256_store_si256((__m256i*)(o + 512 * p + 32 * e),
                                           _mm256_loadu2_m128i((const __m128i*)(xt[2 * p + 1] + 4 + 16 * e), (const __m128i*)(xt[2 * p] + 4 + 16 * e)));
                    _mm256_store_si256((__m256i*)(o + 1024 + 32 * p), _mm256_set_m128i(abi_kl_bwords(xt[2 * p + 1]), abi_kl_bwords(xt[2 * p])));
                }
                const float d0 = abi_ldf32(xt[0]), d1 = abi_ldf32(xt[1]), d2 = abi_ldf32(xt[2]), d3 = abi_ldf32(xt[3]);
                _mm256_store_ps((float*)(o + 1088), _mm256_setr_ps(d0, d2, d0, d2, d1, d3, d1, d3));
            }
    }

    /* per 128-bit half: [the totals of v0, v1, v2, v3's 4 lanes in that half] */
    ABI_T2INL __m256i abi_kl_totals4(const __m256i* v) {
        #define ABI_KL_PAIR32(a, b) _mm256_add_epi32(_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b))
        const __m256i x = ABI_KL_PAIR32(v[0], v[1]), y = ABI_KL_PAIR32(v[2], v[3]);
        #undef ABI_KL_PAIR32
        return _mm256_add_epi32(_mm256_unpacklo_epi64(x, y), _mm256_unpackhi_epi64(x, y));
    }

    /* super-block i of the R rows ahead (abi_t2_ahead) at wn, requested as this one's are used */
    ABI_T2INL void abi_kl_prefetch(const uint8_t* wn, Py_ssize_t rb, Py_ssize_t i, const int R) {
        ABI_T2UNROLL for (int r = 0; r < R; ++r)
            ABI_T2UNROLL for (int l = 0; l < 3; ++l) _mm_prefetch((const char*)(wn + r * rb + 144 * i + 64 * l), _MM_HINT_T0);
    }
    /* a pair's products with a 32-weight group: its halves ua and ub (16 weights in both lanes)
       against the pair's chunks at xe and xe + 32, added in int16 (|v| <= 2 x 3840), then
       times the group's scale sv */
    ABI_T2INL __m256i abi_kl_group(__m256i ua, __m256i ub, __m256i sv, const uint8_t* xe) {
        const __m256i v = _mm256_add_epi16(_mm256_maddubs_epi16(ua, _mm256_load_si256((const __m256i*)xe)),
                                           _mm256_maddubs_epi16(ub, _mm256_load_si256((const __m256i*)(xe + 32))));
        return _mm256_madd_epi16(v, sv);
    }

    /* 2 rows x up to 8 tokens (nt of them, the rest zero in xp's groups): four token pairs a
       row, so that a group's unpacked weights serve eight tokens (a step of 8 took two
       4-token passes, each unpacking the rows again). Row r's sums
       a[4 r + p] reduce to one vector, pair (r, t) in lane 4 (t & 1) + (t >> 1) of row r's
       accumulators; xp: the two 4-token groups' records, nb * ABI_KL_XP bytes apart */
    ABI_T2INL void abi_kl_r2n8(const uint8_t* w, Py_ssize_t rb, const uint8_t* xp, Py_ssize_t nb,
                               float* y, Py_ssize_t ys, const int R, const int N, const uint8_t* wn) {
        const __m256i m4 = _mm256_set1_epi8(15);
        __m256 acc[2], accm[2];
        ABI_T2UNROLL for (int r = 0; r < 2; ++r) acc[r] = accm[r] = _mm256_setzero_ps();
        for (Py_ssize_t i = 0; i < nb; ++i) {
            const uint8_t* xg[2] = {xp + i * ABI_KL_XP, xp + (nb + i) * ABI_KL_XP};
            if (wn) abi_kl_prefetch(wn, rb, i, R);
            __m256i a[8];
            __m128i scm[2];   /* the scales and the mins, as bytes */
            ABI_T2UNROLL for (int l = 0; l < 8; ++l) a[l] = _mm256_setzero_si256();
            ABI_T2UNROLL for (int r = 0; r < R; ++r) {
                const uint8_t* wr = w + r * rb + 144 * i;
                scm[r] = abi_k4_scales_v(wr + 4);
                const __m256i sc = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(scm[r]));
                ABI_T2UNROLL for (int c = 0; c < 4; ++c) {
                    const __m256i qa = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)(wr + 16 + 32 * c)));
                    const __m256i qb = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)(wr + 32 + 32 * c)));
                    ABI_T2UNROLL for (int hi = 0; hi < 2; ++hi) {
                        const __m256i ua = _mm256_and_si256(hi ? _mm256_srli_epi16(qa, 4) : qa, m4);
                        const __m256i ub = _mm256_and_si256(hi ? _mm256_srli_epi16(qb, 4) : qb, m4);
                        const __m256i sv = abi_bcast16(sc, 2 * c + hi);
                        ABI_T2UNROLL for (int p = 0; p < 4; ++p) {
                            a[4 * r + p] = _mm256_add_epi32(a[4 * r + p], abi_kl_group(ua, ub, sv, xg[p >> 1] + 512 * (p & 1) + 32 * (4 * c + 2 * hi)));
                            __asm__("" : "+x"(a[4 * r + p]));
                        }
                    }
                }
            }
            /* dx of lane 4 (t & 1) + (t >> 1): [dx0 dx2 dx4 dx6 | dx1 dx3 dx5 dx7] */
            const __m256 vdx = _mm256_shuffle_ps(_mm256_load_ps((const float*)(xg[0] + 1088)),
                                                 _mm256_load_ps((const float*)(xg[1] + 1088)), 0x44);
            ABI_T2UNROLL for (int r = 0; r < R; ++r) {
                const uint8_t* wr = w + r * rb + 144 * i;
                const __m256i mn = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_srli_si128(scm[r], 8)));
                __m256i m[4];
                ABI_T2UNROLL for (int p = 0; p < 4; ++p)
                    m[p] = _mm256_madd_epi16(mn, _mm256_load_si256((const __m256i*)(xg[p >> 1] + 1024 + 32 * (p & 1))));
                const __m256i S = abi_kl_totals4(a + 4 * r), M = abi_kl_totals4(m);
                const __m128 dd = abi_k_dmin(wr);
                acc[r] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_broadcastss_ps(dd), vdx), _mm256_cvtepi32_ps(S), acc[r]);
                accm[r] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_broadcastss_ps(_mm_movehdup_ps(dd)), vdx), _mm256_cvtepi32_ps(M), accm[r]);
            }
        }
        ABI_T2UNROLL for (int r = 0; r < R; ++r) {
            float out[8];
            _mm256_storeu_ps(out, _mm256_sub_ps(acc[r], accm[r]));
            ABI_T2UNROLL for (int t = 0; t < N; ++t) y[t * ys + r] = out[4 * (t & 1) + (t >> 1)];
        }
    }
    /* up to 4 tokens: 2 row pairs x 4 tokens, a register holding [16 weights of row 2h |
       of row 2h + 1] against 16 activation bytes of one token in both halves, so one
       unpacking, one decoding of the scales and one scale vector serve both rows of a pair
       (two rows' scales decoded at once, abi_k4_scales_v2; with rows in L2: 0.92-0.97x the
       time of the 4 x 4 token-pair tiles it replaced at 4 tokens, 0.84-0.86x at 2 and 3).
       A prepared super-block of up to 4 tokens: token t's 16 chunks [16 bytes | the same] at
       512 t + 32 e (chunk e: activation bytes 16 e..16 e + 15); at 2048 + 32 t [its B words |
       the same] (abi_kl_bwords); at 2176 [dx0 dx1 dx2 dx3 | dx0 dx1 dx2 dx3] */
    #define ABI_KP_XP 2208
    static void abi_kp_prep(uint8_t* xp, const uint8_t* x, Py_ssize_t xs, Py_ssize_t nt, Py_ssize_t nb) {
        for (Py_ssize_t i = 0; i < nb; ++i) {
            uint8_t* o = xp + i * ABI_KP_XP;
            float dx[4];
            for (int t = 0; t < ABI_KL_N; ++t) {
                const uint8_t* xt = t < nt ? x + t * xs + 292 * i : abi_kl_zero;
                for (int e = 0; e < 16; ++e)
                    _mm256_store_si256((__m256i*)(o + 512 * t + 32 * e), _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)(xt + 4 + 16 * e))));
                _mm256_store_si256((__m256i*)(o + 2048 + 32 * t), _mm256_broadcastsi128_si256(abi_kl_bwords(xt)));
                dx[t] = abi_ldf32(xt);
            }
            _mm256_store_ps((float*)(o + 2176), _mm256_setr_ps(dx[0], dx[1], dx[2], dx[3], dx[0], dx[1], dx[2], dx[3]));
        }
    }
    /* R rows (1-4) x N tokens (1-4), rows rb bytes apart; a missing row of a pair repeats
       its first (its sums are dropped). Sums a[4 h + t] of pair h and token t, reduced to
       [row 2h: tokens 0-3 | row 2h + 1] */
    ABI_T2INL void abi_kp_rn(const uint8_t* w, Py_ssize_t rb, const uint8_t* xp, Py_ssize_t nb,
                             float* y, Py_ssize_t ys, const int R, const int N, const uint8_t* wn) {
        const int H = (R + 1) / 2;
        const __m256i m4 = _mm256_set1_epi8(15);
        const uint8_t* w0[2] = {w, w + 2 * rb};
        const Py_ssize_t d1[2] = {R > 1 ? rb : 0, R > 3 ? rb : 0};   /* the pair's second row */
        __m256 acc[2], accm[2];
        ABI_T2UNROLL for (int h = 0; h < 2; ++h) acc[h] = accm[h] = _mm256_setzero_ps();
        for (Py_ssize_t i = 0; i < nb; ++i) {
            const uint8_t* xi = xp + i * ABI_KP_XP;
            if (wn) abi_kl_prefetch(wn, rb, i, ABI_KL_R);
            __m256i a[8], sc[2], scm[2];
            ABI_T2UNROLL for (int l = 0; l < 8; ++l) a[l] = _mm256_setzero_si256();
            ABI_T2UNROLL for (int h = 0; h < H; ++h) {   /* [row 2h's scales | row 2h + 1's] as int16 */
                const uint8_t* wa = w0[h] + 144 * i;
                scm[h] = abi_k4_scales_v2(wa + 4, wa + d1[h] + 4);
                sc[h] = _mm256_unpacklo_epi8(scm[h], _mm256_setzero_si256());
            }
            ABI_T2UNROLL for (int h = 0; h < H; ++h)
                ABI_T2UNROLL for (int c = 0; c < 4; ++c) {
                    const uint8_t* q = w0[h] + 144 * i + 16 + 32 * c;
                    const __m256i qa = _mm256_loadu2_m128i((const __m128i*)(q + d1[h]), (const __m128i*)q);
                    const __m256i qb = _mm256_loadu2_m128i((const __m128i*)(q + d1[h] + 16), (const __m128i*)(q + 16));
                    ABI_T2UNROLL for (int hi = 0; hi < 2; ++hi) {   /* group 2c: the low nibbles; 2c + 1: the high */
                        const __m256i ua = _mm256_and_si256(hi ? _mm256_srli_epi16(qa, 4) : qa, m4);
                        const __m256i ub = _mm256_and_si256(hi ? _mm256_srli_epi16(qb, 4) : qb, m4);
                        const __m256i sv = abi_bcast16(sc[h], 2 * c + hi);
                        const int e = 2 * (2 * c + hi);
                        ABI_T2UNROLL for (int t = 0; t < N; ++t) {
                            a[4 * h + t] = _mm256_add_epi32(a[4 * h + t], abi_kl_group(ua, ub, sv, xi + 512 * t + 32 * e));
                            __asm__("" : "+x"(a[4 * h + t]));   /* each sum kept in its register */
                        }
                    }
                }
            const __m256 vdx = _mm256_load_ps((const float*)(xi + 2176));
            ABI_T2UNROLL for (int h = 0; h < H; ++h) {
                const __m256i S = abi_kl_totals4(a + 4 * h);   /* [row 2h: tokens 0-3 | row 2h + 1] */
                const __m256i mn = _mm256_unpackhi_epi8(scm[h], _mm256_setzero_si256());
                __m256i m[4];
                ABI_T2UNROLL for (int t = 0; t < 4; ++t)
                    m[t] = t < N ? _mm256_madd_epi16(mn, _mm256_load_si256((const __m256i*)(xi + 2048 + 32 * t))) : _mm256_setzero_si256();
                const __m256i M = abi_kl_totals4(m);
                /* [d, dmin] of both rows, then d (dmin) of row 2h in the low half, 2h + 1 in the high */
                const __m256 dd = _mm256_castps128_ps256(_mm_cvtph_ps(_mm_insert_epi32(_mm_cvtsi32_si128((int)abi_ld32(w0[h] + 144 * i)),
                                                                                       (int)abi_ld32(w0[h] + d1[h] + 144 * i), 1)));
                const __m256 dv = _mm256_permutevar8x32_ps(dd, _mm256_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2));
                const __m256 mv = _mm256_permutevar8x32_ps(dd, _mm256_setr_epi32(1, 1, 1, 1, 3, 3, 3, 3));
                acc[h] = _mm256_fmadd_ps(_mm256_mul_ps(dv, vdx), _mm256_cvtepi32_ps(S), acc[h]);
                accm[h] = _mm256_fmadd_ps(_mm256_mul_ps(mv, vdx), _mm256_cvtepi32_ps(M), accm[h]);
            }
        }
        float out[16];
        ABI_T2UNROLL for (int h = 0; h < H; ++h) _mm256_storeu_ps(out + 8 * h, _mm256_sub_ps(acc[h], accm[h]));
        ABI_T2UNROLL for (int r = 0; r < R; ++r) ABI_T2UNROLL for (int t = 0; t < N; ++t)
            y[t * ys + r] = out[8 * (r >> 1) + 4 * (r & 1) + t];
    }
    #define ABI_KP_RN(R_) do { switch (n) {                                           \
        case 1: abi_kp_rn(wr, rb, xg, nb, yt, ys, R_, 1, wn); break;                  \
        case 2: abi_kp_rn(wr, rb, xg, nb, yt, ys, R_, 2, wn); break;                  \
        case 3: abi_kp_rn(wr, rb, xg, nb, yt, ys, R_, 3, wn); break;                  \
        default: abi_kp_rn(wr, rb, xg, nb, yt, ys, R_, ABI_KL_N, wn); } } while (0)
    /* at most 4 tokens: tiles of 2 row pairs x 4 tokens (each path its own function: while
       the 4-token and 8-token tiles shared one, gcc spilled twice as much in this loop) */
    static __attribute__((noinline)) void abi_kl_rows4(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* xp,
                                                       Py_ssize_t nt, Py_ssize_t nb, float* y, Py_ssize_t ys) {
        const Py_ssize_t ahead = abi_t2_ahead(nb, ABI_KL_R);
        for (Py_ssize_t r = 0; r < nr; r += ABI_KL_R) {
            const int R = nr - r < ABI_KL_R ? (int)(nr - r) : ABI_KL_R;
            const uint8_t* wr = w + r * rb, * xg = xp;
            const uint8_t* wn = r + ahead + ABI_KL_R <= nr ? w + (r + ahead) * rb : NULL;   /* a full group there */
            float* yt = y + r;
            const Py_ssize_t n = nt;
            switch (R) {
                case 1: ABI_KP_RN(1); break;
                case 2: ABI_KP_RN(2); break;
                case 3: ABI_KP_RN(3); break;
                default: ABI_KP_RN(ABI_KL_R);
            }
        }
    }
    /* more: row pairs x 8 tokens a pass (the rows stay in L1 from one pass to the next), nt
       tokens prepared in xp; then the nq after them (1 to 4, prepared in xq) by a row pair
       tile */
    static __attribute__((noinline)) void abi_kl_rows8(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* xp,
                                                       Py_ssize_t nt, const uint8_t* xq, Py_ssize_t nq, Py_ssize_t nb,
                                                       float* y, Py_ssize_t ys) {
        const Py_ssize_t ahead = abi_t2_ahead(nb, 2);
        for (Py_ssize_t r = 0; r < nr; r += 2) {
            const int R = nr - r < 2 ? 1 : 2;
            const uint8_t* wr = w + r * rb;
            for (Py_ssize_t t = 0; t < nt; t += 2 * ABI_KL_N) {
                /* the first pass over these rows requests those ahead, when a full pair is there */
                const uint8_t* wn = t == 0 && r + ahead + 2 <= nr ? w + (r + ahead) * rb : NULL;
                const uint8_t* xg = xp + (t / ABI_KL_N) * nb * ABI_KL_XP;
                float* yt = y + t * ys + r;
                const Py_ssize_t n = nt - t;
                #define ABI_KL_R2(R_, N_) abi_kl_r2n8(wr, rb, xg, nb, yt, ys, R_, N_, wn)
                if (R == 2)
                    switch (n) { case 5: ABI_KL_R2(2, 5); break; case 6: ABI_KL_R2(2, 6); break;
                                 case 7: ABI_KL_R2(2, 7); break; default: ABI_KL_R2(2, 8); }
                else ABI_KL_R2(1, n < 8 ? (int)n : 8);
                #undef ABI_KL_R2
            }
            if (nq) {
                const uint8_t* wn = NULL, * xg = xq;
                float* yt = y + nt * ys + r;
                const Py_ssize_t n = nq;
                if (R == 2) ABI_KP_RN(2);
                else ABI_KP_RN(1);
            }
        }
    }
    static void abi_tile_q4_k(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs,
                              Py_ssize_t nt, Py_ssize_t nb, float* y, Py_ssize_t ys) {
        if (nt <= ABI_KL_N) {
            uint8_t* xq = abi_tile_scratch((size_t)nb * ABI_KP_XP);
            abi_kp_prep(xq, x, xs, nt, nb);
            abi_kl_rows4(w, rb, nr, xq, nt, nb, y, ys);
            return;
        }
        /* 8 tokens a pass; a last pass of 5 to 7 too, but 1 to 4 left go by row pairs */
        const Py_ssize_t nq = nt % (2 * ABI_KL_N) <= ABI_KL_N ? nt % (2 * ABI_KL_N) : 0, n8 = nt - nq;
        const size_t b8 = (size_t)((n8 + ABI_KL_N - 1) / ABI_KL_N) * nb * ABI_KL_XP;
        uint8_t* xp = abi_tile_scratch(b8 + (nq ? (size_t)nb * ABI_KP_XP : 0));
        abi_kl_prep(xp, x, xs, n8, nb);
        if (nq) abi_kp_prep(xp + b8, x + n8 * xs, xs, nq, nb);
        abi_kl_rows8(w, rb, nr, xp, n8, xp + b8, nq, nb, y, ys);
    }
    #undef ABI_KP_RN
    #else
    ABI_TILE_STUB(q4_k)
    #endif

    #if ABI_QDOT_SIMD && !(defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__))
    #define ABI_QTILE2 1
    #define ABI_T2_TC 64     /* tokens prepared at a time */
    #define ABI_T2_TCP (ABI_T2_TC + 8)   /* a block's per-token floats: 8 read past the last */


    /* ================================================================== Q5_1, Q8_0, IQ4_NL, MXFP4
       T = 1 (_qdot.pxd, _qdot_iq.pxd): Q8_0, IQ4_NL and MXFP4 keep acc0 (even blocks) and
       acc1 (odd), Q5_1 one accumulator and a scalar accm of m_w s_x.
       Here the weights are unpacked to unsigned bytes (Q5_1) or, for the signed ones
       (Q8_0, IQ4_NL, MXFP4: too wide for an offset within maddubs' int16 pairs), to their
       signed values, whose signs move onto the activation; accm runs for all of a tile's
       tokens in one vector, lane t the T = 1 scalar chain of token t. */
    enum { ABI_L_Q4_0, ABI_L_Q5_0, ABI_L_Q5_1, ABI_L_Q8_0, ABI_L_IQ4_NL, ABI_L_MXFP4 };
    #define ABI_L_BYTES(k) ((k) == ABI_L_Q4_0 ? 18 : (k) == ABI_L_Q5_0 ? 22 : (k) == ABI_L_Q5_1 ? 24 \
                         : (k) == ABI_L_Q8_0 ? 34 : (k) == ABI_L_IQ4_NL ? 18 : 17)
    #define ABI_L_MIN(k) ((k) == ABI_L_Q5_1)    /* Q8_1 activations, an m_w s_x term */
    #define ABI_L_SGN(k) ((k) >= ABI_L_Q8_0)                          /* signed weight bytes */
    #define ABI_L_TWO(k) ABI_L_SGN(k)    /* two chains */
    #define ABI_L_R 3
    #define ABI_L_N 4
    #define ABI_L_XB 32                               /* a prepared token block */
    #define ABI_L_WB (32 * ABI_L_R + 32)              /* a prepared block of the rows: [u x R | dw x R, wm x R] */

    /* the bytes of one block: unsigned 0..15 (Q4_0) or 0..31 (Q5_0, Q5_1), or the
       signed values (Q8_0, IQ4_NL, MXFP4) */
    ABI_T2INL __m256i abi_l_unpack(const uint8_t* wr, const int k) {
        if (k == ABI_L_Q8_0) return _mm256_loadu_si256((const __m256i*)(wr + 2));
        if (k == ABI_L_IQ4_NL) return _mm256_shuffle_epi8(abi_iq4nl_table(), abi_nibbles32(wr + 2));
        if (k == ABI_L_MXFP4) return _mm256_shuffle_epi8(abi_mxfp4_table(), abi_nibbles32(wr + 1));
        if (k == ABI_L_Q4_0) return abi_nibbles32(wr + 2);
        const int h = k == ABI_L_Q5_0 ? 2 : 4;
        return _mm256_or_si256(abi_nibbles32(wr + h + 4), _mm256_and_si256(abi_bitmask32(wr + h), _mm256_set1_epi8(16)));
    }

    /* a block's scale d_w (MXFP4: its E8M0 exponent, halved) */
    ABI_T2INL float abi_l_scale(const uint8_t* wr, const int k) {
        return k == ABI_L_MXFP4 ? abi_e8m0_half(wr[0]) : abi_f16t(wr);
    }

    /* R prepared rows x N prepared tokens, laid out so that one pointer walks each side in
       order: tokens in groups of ABI_L_N, token t of block i at xp + ((t / ABI_L_N) * nb + i)
       * ABI_L_N * XB + (t % ABI_L_N) * XB (block-major over all tokens would put a tile's
       blocks 4 KiB apart, all in one L1 set), its dx and sx at [i * ABI_T2_TCP + t]; the
       rows' block i at wp + i * ABI_L_WB. raw: wp is instead the first of the R rows as stored
       (rb bytes apart), each block unpacked where it is used: a decode batch's few tokens do
       not repay preparing the rows (storing and reloading them was a third of its time) */
    ABI_T2INL void abi_l_rn(const uint8_t* xp, const float* dx, const float* sx, const uint8_t* wp, Py_ssize_t nb,
                            float* y, Py_ssize_t ys, const int R, const int N, const int k, const int raw, Py_ssize_t rb) {
        const Py_ssize_t XB = ABI_L_XB;
        const int step = ABI_L_TWO(k) ? 2 : 1;
        __m256 acc[ABI_L_R][ABI_L_N], acc0[ABI_L_R][ABI_L_N];
        #define ABI_L_RAW(r, i) (wp + (r) * rb + (i) * ABI_L_BYTES(k))
        for (int chain = 0; chain < step; ++chain) {
            ABI_T2UNROLL for (int r = 0; r < R; ++r) ABI_T2UNROLL for (int t = 0; t < N; ++t) acc[r][t] = _mm256_setzero_ps();
            for (Py_ssize_t i = chain; i < nb; i += step) {
                const uint8_t* xb = xp + i * ABI_L_N * XB;
                const uint8_t* wb = wp + i * ABI_L_WB;
                ABI_T2UNROLL for (int r = 0; r < R; ++r) {
                    const __m256i wv = raw ? abi_l_unpack(ABI_L_RAW(r, i), k) : _mm256_load_si256((const __m256i*)(wb + 32 * r));
                    const __m256i u = ABI_L_SGN(k) ? _mm256_abs_epi8(wv) : wv;   /* -128: 128 unsigned */
                    const __m256 dw = raw ? _mm256_set1_ps(abi_l_scale(ABI_L_RAW(r, i), k))
                                          : _mm256_broadcast_ss((const float*)(wb + 32 * ABI_L_R) + r);
                    ABI_T2UNROLL for (int t = 0; t < N; ++t) {
                        __m256i xv = _mm256_load_si256((const __m256i*)(xb + t * XB));
                        if (ABI_L_SGN(k)) xv = _mm256_sign_epi8(xv, wv);   /* |x| <= 127: a pair of products < 2^15 */
                        const __m256i v = abi_dpbusd(u, xv);
                        const __m256 d = _mm256_mul_ps(dw, _mm256_broadcast_ss(dx + i * ABI_T2_TCP + t));
                        acc[r][t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(v), acc[r][t]);
                    }
                }
            }
            if (step == 2 && chain == 0)
                ABI_T2UNROLL for (int r = 0; r < R; ++r) ABI_T2UNROLL for (int t = 0; t < N; ++t) acc0[r][t] = acc[r][t];
        }
        ABI_T2UNROLL for (int r = 0; r < R; ++r) {
            float m[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            if (ABI_L_MIN(k)) {   /* lane t: token t's accm */
                const float* wm = (const float*)(wp + 32 * ABI_L_R + 4 * ABI_L_R) + r;
                #define ABI_L_WM(i) (raw ? abi_f16t_bcast(ABI_L_RAW(r, i) + 2) : _mm256_broadcast_ss(wm + (i) * (ABI_L_WB / 4)))
                __m256 accm = _mm256_setzero_ps();
                for (Py_ssize_t i = 0; i < nb; ++i)
                    accm = _mm256_fmadd_ps(ABI_L_WM(i), _mm256_loadu_ps(sx + i * ABI_T2_TCP), accm);
                #undef ABI_L_WM
                _mm256_storeu_ps(m, accm);
            }
            ABI_T2UNROLL for (int t = 0; t < N; ++t) {
                const __m256 a = step == 2 ? _mm256_add_ps(acc0[r][t], acc[r][t]) : acc[r][t];
                y[t * ys + r] = ABI_L_MIN(k) ? abi_hsum8(a) + m[t] : abi_hsum8(a);
            }
        }
        #undef ABI_L_RAW
    }

    /* the nc tokens of a chunk over R prepared rows: ABI_L_N at a time, then the rest */
    ABI_T2INL void abi_l_rows(const uint8_t* xp, const float* dx, const float* sx, const uint8_t* wp, Py_ssize_t nb,
                              Py_ssize_t nc, float* y, Py_ssize_t ys, const int R, const int k, const int raw, Py_ssize_t rb) {
        for (Py_ssize_t t = 0; t < nc; t += ABI_L_N) {
            const uint8_t* xt = xp + t * nb * ABI_L_XB;
            float* yt = y + t * ys;
            switch (nc - t) {
                case 1: abi_l_rn(xt, dx + t, sx + t, wp, nb, yt, ys, R, 1, k, raw, rb); break;
                case 2: abi_l_rn(xt, dx + t, sx + t, wp, nb, yt, ys, R, 2, k, raw, rb); break;
                case 3: abi_l_rn(xt, dx + t, sx + t, wp, nb, yt, ys, R, 3, k, raw, rb); break;
                default: abi_l_rn(xt, dx + t, sx + t, wp, nb, yt, ys, R, ABI_L_N, k, raw, rb);
            }
        }
    }

    /* nc tokens' activation blocks (Q8_1 when q8_1, else Q8_0) prepared as the tiles read
       them: token t's block i at xp + ((t / ABI_L_N) * nb + i) * ABI_L_N * XB + (t % ABI_L_N)
       * XB, its dx (and Q8_1's sx) at [i * ABI_T2_TCP + t] */
    ABI_T2INL void abi_l_prep_x(const uint8_t* x, Py_ssize_t xs, Py_ssize_t nc, Py_ssize_t nb, const int q8_1,
                                uint8_t* xp, float* dx, float* sx) {
        const Py_ssize_t xb = q8_1 ? 36 : 34;
        for (Py_ssize_t t = 0; t < nc; ++t) {
            const uint8_t* xt = x + t * xs;
            for (Py_ssize_t i = 0; i < nb; ++i, xt += xb) {
                uint8_t* o = xp + ((t / ABI_L_N * nb + i) * ABI_L_N + t % ABI_L_N) * ABI_L_XB;
                _mm256_store_si256((__m256i*)o, _mm256_loadu_si256((const __m256i*)(xt + (xb - 32))));
                dx[i * ABI_T2_TCP + t] = abi_f16t(xt);
                if (q8_1) sx[i * ABI_T2_TCP + t] = abi_f16t(xt + 2);
            }
        }
    }

    ABI_T2INL void abi_l_tile_run(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs,
                                  Py_ssize_t nt, Py_ssize_t nb, float* y, Py_ssize_t ys, const int k) {
        const Py_ssize_t wb = ABI_L_BYTES(k), XB = ABI_L_XB;
        const size_t cb = (size_t)ABI_T2_TC * nb * XB, fb = (size_t)nb * ABI_T2_TCP * 4;
        uint8_t* xp = abi_tile_scratch(cb + 2 * fb + (size_t)nb * ABI_L_WB);
        float* dx = (float*)(xp + cb);
        float* sx = (float*)(xp + cb + fb);
        uint8_t* wp = xp + cb + 2 * fb;
        if (ABI_L_MIN(k)) memset(sx, 0, fb);   /* accm's lanes past a tile's last token read these */
        for (Py_ssize_t t0 = 0; t0 < nt; t0 += ABI_T2_TC) {
            const Py_ssize_t nc = nt - t0 < ABI_T2_TC ? nt - t0 : ABI_T2_TC;
            abi_l_prep_x(x + t0 * xs, xs, nc, nb, ABI_L_MIN(k), xp, dx, sx);
            /* a decode batch (up to two groups of tokens): its rows as stored, unpacked where used
               (measured faster up to 8 tokens, by a third at 2 and a fifth at 4 for Q4_1 when it
               took this tile) */
            const int raw = nc <= 2 * ABI_L_N;
            for (Py_ssize_t r = 0; r < nr; r += ABI_L_R) {
                const int R = nr - r < ABI_L_R ? (int)(nr - r) : ABI_L_R;
                abi_t2_prefetch(w + (r + R) * rb, w + nr * rb, ABI_L_R * rb);
                for (Py_ssize_t i = 0; i < nb && !raw; ++i) {
                    uint8_t* o = wp + i * ABI_L_WB;
                    float* f = (float*)(o + 32 * ABI_L_R);
                    for (int j = 0; j < R; ++j) {
                        const uint8_t* wr = w + (r + j) * rb + wb * i;
                        _mm256_store_si256((__m256i*)(o + 32 * j), abi_l_unpack(wr, k));
                        f[j] = abi_l_scale(wr, k);
                        if (ABI_L_MIN(k)) f[ABI_L_R + j] = abi_f16t(wr + 2);
                    }
                }
                float* yr = y + t0 * ys + r;
                #define ABI_L_ROWS(W, RAW) do { if (R == 3) abi_l_rows(xp, dx, sx, W, nb, nc, yr, ys, 3, k, RAW, rb);    \\
                    else if (R == 2) abi_l_rows(xp, dx, sx, W, nb, nc, yr, ys, 2, k, RAW, rb);                           \\
                    else abi_l_rows(xp, dx, sx, W, nb, nc, yr, ys, 1, k, RAW, rb); } while (0)
                if (raw) ABI_L_ROWS(w + r * rb, 1);   /* RAW a constant: no branch in the tile's loops */
                else ABI_L_ROWS(wp, 0);
                #undef ABI_L_ROWS
            }
        }
    }
    /* abi_tile_<name>: a family's runner with its type constant K */
    #define ABI_T2_TILE(name, run, K) \\
    static void abi_tile_##name(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs, \\
                                Py_ssize_t nt, Py_ssize_t nb, float* y, Py_ssize_t ys) {                \\
        run(w, rb, nr, x, xs, nt, nb, y, ys, K);                                                        \\
    }
    #define ABI_L_TILE(name, K) ABI_T2_TILE(name, abi_l_tile_run, K)
    ABI_L_TILE(q5_1, ABI_L_Q5_1)
    ABI_L_TILE(q8_0, ABI_L_Q8_0)
    ABI_L_TILE(iq4_nl, ABI_L_IQ4_NL)
    ABI_L_TILE(mxfp4, ABI_L_MXFP4)

    /* ================================================================== Q4_1 x Q8_1, rows in fours
       T = 1 (_qdot.pxd, abi_dot4_q4_1_q8_1): a vector holds 8 weights of each of four rows
       against one token's 8 bytes in each quarter; acc0 (even blocks), acc1 (odd), an accm
       of m_w s_x, lane r row r's. Here the same steps for up to ABI_Q_N tokens at a time, so
       that one unpacking and one set of scales serve them all; a row's accm runs for a
       group's tokens in one vector, lane t the T = 1 lane of token t. Rows as stored for
       every batch: a quad's block is two loads and eight instructions from its bytes. */
    #define ABI_Q_N 8

    /* rows w[0..3] (one may repeat: fewer than four rows, nr of them written) x N prepared
       tokens (xp, dx, sx as for the legacy tiles: token t of block i at xp + ((t / ABI_L_N) *
       nb + i) * ABI_L_N * XB + (t % ABI_L_N) * XB) */
    ABI_T2INL void abi_q_rn(const uint8_t* xp, const float* dx, const float* sx, const uint8_t* const* w, int nr,
                            Py_ssize_t nb, float* y, Py_ssize_t ys, const int N) {
        const Py_ssize_t XB = ABI_L_XB;
        __m256 acc[ABI_Q_N], acc0[ABI_Q_N];
        __m256i k[4];
        __m128 mv;
        for (int chain = 0; chain < 2; ++chain) {
            ABI_T2UNROLL for (int t = 0; t < N; ++t) acc[t] = _mm256_setzero_ps();
            for (Py_ssize_t i = chain; i < nb; i += 2) {
                const Py_ssize_t o = i * 20;
                const __m256 dw = abi_q41_quad_dm(w[0] + o, w[1] + o, w[2] + o, w[3] + o, &mv);
                abi_q41_quad(w[0] + o + 4, w[1] + o + 4, w[2] + o + 4, w[3] + o + 4, k);
                ABI_T2UNROLL for (int t = 0; t < N; ++t) {
                    const __m256i v = abi_q41_quad_dot(k, xp + ((t / ABI_L_N * nb + i) * ABI_L_N + t % ABI_L_N) * XB);
                    const __m256 d = _mm256_mul_ps(dw, _mm256_broadcast_ss(dx + i * ABI_T2_TCP + t));
                    acc[t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(v), acc[t]);
                }
            }
            if (chain == 0) ABI_T2UNROLL for (int t = 0; t < N; ++t) acc0[t] = acc[t];
        }
        /* lane t: token t's accm of each row (four chains side by side), m0 s0 + (m1 s1) */
        __m256 m[4];
        ABI_T2UNROLL for (int r = 0; r < 4; ++r) m[r] = _mm256_setzero_ps();
        Py_ssize_t i = 0;
        for (; i + 1 < nb; i += 2) {
            const __m256 s0 = _mm256_loadu_ps(sx + i * ABI_T2_TCP), s1 = _mm256_loadu_ps(sx + (i + 1) * ABI_T2_TCP);
            ABI_T2UNROLL for (int r = 0; r < 4; ++r)
                m[r] = _mm256_add_ps(m[r], _mm256_fmadd_ps(abi_f16t_bcast(w[r] + i * 20 + 2), s0,
                                                           _mm256_mul_ps(abi_f16t_bcast(w[r] + i * 20 + 22), s1)));
        }
        if (i < nb) {
            const __m256 s0 = _mm256_loadu_ps(sx + i * ABI_T2_TCP);
            ABI_T2UNROLL for (int r = 0; r < 4; ++r) m[r] = _mm256_fmadd_ps(abi_f16t_bcast(w[r] + i * 20 + 2), s0, m[r]);
        }
        float ms[4][8], rows[4];
        ABI_T2UNROLL for (int r = 0; r < 4; ++r) _mm256_storeu_ps(ms[r], m[r]);
        ABI_T2UNROLL for (int t = 0; t < N; ++t) {
            _mm_storeu_ps(rows, _mm_add_ps(abi_q41_quad_rows(_mm256_add_ps(acc0[t], acc[t])),
                                           _mm_setr_ps(ms[0][t], ms[1][t], ms[2][t], ms[3][t])));
            for (int r = 0; r < nr; ++r) y[t * ys + r] = rows[r];
        }
    }

    static void abi_tile_q4_1(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs,
                              Py_ssize_t nt, Py_ssize_t nb, float* y, Py_ssize_t ys) {
        const Py_ssize_t XB = ABI_L_XB;
        const size_t cb = (size_t)ABI_T2_TC * nb * XB, fb = (size_t)nb * ABI_T2_TCP * 4;
        uint8_t* xp = abi_tile_scratch(cb + 2 * fb);
        float* dx = (float*)(xp + cb);
        float* sx = (float*)(xp + cb + fb);
        memset(sx, 0, fb);   /* accm's lanes past a group's last token read these */
        for (Py_ssize_t t0 = 0; t0 < nt; t0 += ABI_T2_TC) {
            const Py_ssize_t nc = nt - t0 < ABI_T2_TC ? nt - t0 : ABI_T2_TC;
            abi_l_prep_x(x + t0 * xs, xs, nc, nb, 1, xp, dx, sx);
            for (Py_ssize_t r = 0; r < nr; r += 4) {
                const int n = nr - r < 4 ? (int)(nr - r) : 4;
                const uint8_t* rows[4];
                for (int j = 0; j < 4; ++j) rows[j] = w + (r + (j < n ? j : n - 1)) * rb;
                abi_t2_prefetch(w + (r + 4) * rb, w + nr * rb, 4 * rb);
                for (Py_ssize_t t = 0; t < nc; t += ABI_Q_N) {
                    const uint8_t* xt = xp + t * nb * XB;
                    float* yt = y + (t0 + t) * ys + r;
                    switch (nc - t) {
                        case 1: abi_q_rn(xt, dx + t, sx + t, rows, n, nb, yt, ys, 1); break;
                        case 2: abi_q_rn(xt, dx + t, sx + t, rows, n, nb, yt, ys, 2); break;
                        case 3: abi_q_rn(xt, dx + t, sx + t, rows, n, nb, yt, ys, 3); break;
                        case 4: abi_q_rn(xt, dx + t, sx + t, rows, n, nb, yt, ys, 4); break;
                        case 5: abi_q_rn(xt, dx + t, sx + t, rows, n, nb, yt, ys, 5); break;
                        case 6: abi_q_rn(xt, dx + t, sx + t, rows, n, nb, yt, ys, 6); break;
                        case 7: abi_q_rn(xt, dx + t, sx + t, rows, n, nb, yt, ys, 7); break;
                        default: abi_q_rn(xt, dx + t, sx + t, rows, n, nb, yt, ys, ABI_Q_N);
                    }
                }
            }
        }
    }

    /* ================================================================== Q4_0, Q5_0 x Q8_0, blocks in fours
       T = 1 (_qdot.pxd, ABI_QUADS): blocks i .. i + 3 summed into one vector, int32 lane 4h +
       k the 16 products of block i + k's half h, then acc += [d_i .. d_i+3 | d_i .. d_i+3] x
       that, y = hsum(acc). Here both sides of a quad are prepared as four vectors, vector m
       holding dword m of each block in half 0 and dword 4 + m in half 1 (a 4 x 4 transpose),
       so that lane 4h + k of the sum of their four products is that lane's 16 products: 4
       maddubs, 3 int16 adds and one madd for four blocks. q is unsigned, 0..15 or 0..31
       (int16 sums of 8 within 31496); the token's prepared c, -8 or -16 x (its lanes' sums),
       makes it q - 8 or q - 16. */
    #define ABI_QD_R 3
    #define ABI_QD_N 4
    #define ABI_QD_XB 192              /* a token's prepared quad: [v0 v1 v2 v3 | c | dx pattern] */
    #define ABI_QD_WB (160 * ABI_QD_R)  /* the rows' prepared quad: [v0 v1 v2 v3 x R | dw pattern x R] */

    /* the int32 lanes of c + sum over m of u_m x_m */
    ABI_T2INL __m256i abi_qd_dot(__m256i c, const __m256i* u, const uint8_t* x) {
        #define ABI_QD_X(m) _mm256_load_si256((const __m256i*)(x + 32 * (m)))
    #if defined(__AVXVNNI__)
        c = _mm256_dpbusd_avx_epi32(c, u[0], ABI_QD_X(0));
        c = _mm256_dpbusd_avx_epi32(c, u[1], ABI_QD_X(1));
        c = _mm256_dpbusd_avx_epi32(c, u[2], ABI_QD_X(2));
        return _mm256_dpbusd_avx_epi32(c, u[3], ABI_QD_X(3));
    #else
        const __m256i s = _mm256_add_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(u[0], ABI_QD_X(0)), _mm256_maddubs_epi16(u[1], ABI_QD_X(1))),
                                           _mm256_add_epi16(_mm256_maddubs_epi16(u[2], ABI_QD_X(2)), _mm256_maddubs_epi16(u[3], ABI_QD_X(3))));
        return _mm256_add_epi32(c, _mm256_madd_epi16(s, _mm256_set1_epi16(1)));
    #endif
        #undef ABI_QD_X
    }
    /* four blocks' bytes -> the four vectors u[0..3] */
    ABI_T2INL void abi_qd_split4(__m256i b0, __m256i b1, __m256i b2, __m256i b3, __m256i* u) {
        const __m256i t0 = _mm256_unpacklo_epi32(b0, b1), t1 = _mm256_unpackhi_epi32(b0, b1);
        const __m256i t2 = _mm256_unpacklo_epi32(b2, b3), t3 = _mm256_unpackhi_epi32(b2, b3);
        u[0] = _mm256_unpacklo_epi64(t0, t2);
        u[1] = _mm256_unpackhi_epi64(t0, t2);
        u[2] = _mm256_unpacklo_epi64(t1, t3);
        u[3] = _mm256_unpackhi_epi64(t1, t3);
    }
    /* ... stored m bytes apart from o */
    ABI_T2INL void abi_qd_split(__m256i b0, __m256i b1, __m256i b2, __m256i b3, uint8_t* o, Py_ssize_t m) {
        __m256i u[4];
        abi_qd_split4(b0, b1, b2, b3, u);
        for (int j = 0; j < 4; ++j) _mm256_store_si256((__m256i*)(o + j * m), u[j]);
    }
    /* [s_0 s_1 s_2 s_3 | s_0 s_1 s_2 s_3]: abi_quad_f16's scales in both halves */
    ABI_T2INL __m256 abi_qd_scales(const uint8_t* p, Py_ssize_t step, Py_ssize_t n) {
        const __m128 d = abi_quad_f16(p, step, n);
        return _mm256_set_m128(d, d);
    }
    /* a row's quad i as stored (wr: its first block, n of them present) -> u and the dw pattern */
    ABI_T2INL __m256 abi_qd_row(const uint8_t* wr, Py_ssize_t wb, Py_ssize_t n, __m256i* u, const int k) {
        const __m256i zero = _mm256_setzero_si256();
        abi_qd_split4(abi_l_unpack(wr, k), n > 1 ? abi_l_unpack(wr + wb, k) : zero, n > 2 ? abi_l_unpack(wr + 2 * wb, k) : zero,
                      n > 3 ? abi_l_unpack(wr + 3 * wb, k) : zero, u);
        return abi_qd_scales(wr, wb, n);
    }

    /* R prepared rows x N prepared tokens over nq quads, laid out as the legacy tile's blocks */
    ABI_T2INL void abi_qd_rn(const uint8_t* xp, const uint8_t* wp, Py_ssize_t nq, float* y, Py_ssize_t ys,
                             const int R, const int N, const int raw, Py_ssize_t rb, Py_ssize_t nb, const int k) {
        __m256 acc[ABI_QD_R][ABI_QD_N];
        ABI_T2UNROLL for (int r = 0; r < R; ++r) ABI_T2UNROLL for (int t = 0; t < N; ++t) acc[r][t] = _mm256_setzero_ps();
        for (Py_ssize_t i = 0; i < nq; ++i) {
            const uint8_t* xb = xp + i * ABI_QD_N * ABI_QD_XB;
            const uint8_t* wb = wp + i * ABI_QD_WB;
            ABI_T2UNROLL for (int r = 0; r < R; ++r) {
                __m256i u[4];
                __m256 dw;
                if (raw) {   /* wp: the first of the R rows as stored (the legacy tile's raw mode) */
                    dw = abi_qd_row(wp + r * rb + 4 * ABI_L_BYTES(k) * i, ABI_L_BYTES(k), nb - 4 * i, u, k);
                } else {
                    ABI_T2UNROLL for (int m = 0; m < 4; ++m) u[m] = _mm256_load_si256((const __m256i*)(wb + 32 * (m * ABI_QD_R + r)));
                    dw = _mm256_load_ps((const float*)(wb + 32 * (4 * ABI_QD_R + r)));
                }
                ABI_T2UNROLL for (int t = 0; t < N; ++t) {
                    const uint8_t* xt = xb + t * ABI_QD_XB;
                    const __m256i v = abi_qd_dot(_mm256_load_si256((const __m256i*)(xt + 128)), u, xt);
                    const __m256 d = _mm256_mul_ps(dw, _mm256_load_ps((const float*)(xt + 160)));
                    acc[r][t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(v), acc[r][t]);
                }
            }
        }
        ABI_T2UNROLL for (int r = 0; r < R; ++r) ABI_T2UNROLL for (int t = 0; t < N; ++t) y[t * ys + r] = abi_hsum8(acc[r][t]);
    }
    ABI_T2INL void abi_qd_rows(const uint8_t* xp, const uint8_t* wp, Py_ssize_t nq, Py_ssize_t nc, float* y, Py_ssize_t ys,
                               const int R, const int raw, Py_ssize_t rb, Py_ssize_t nb, const int k) {
        for (Py_ssize_t t = 0; t < nc; t += ABI_QD_N) {
            const uint8_t* xt = xp + t * nq * ABI_QD_XB;
            float* yt = y + t * ys;
            switch (nc - t) {
                case 1: abi_qd_rn(xt, wp, nq, yt, ys, R, 1, raw, rb, nb, k); break;
                case 2: abi_qd_rn(xt, wp, nq, yt, ys, R, 2, raw, rb, nb, k); break;
                case 3: abi_qd_rn(xt, wp, nq, yt, ys, R, 3, raw, rb, nb, k); break;
                default: abi_qd_rn(xt, wp, nq, yt, ys, R, ABI_QD_N, raw, rb, nb, k);
            }
        }
    }
    ABI_T2INL void abi_qd_tile_run(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs,
                                   Py_ssize_t nt, Py_ssize_t nb, float* y, Py_ssize_t ys, const int k) {
        const Py_ssize_t nq = (nb + 3) / 4, wb = ABI_L_BYTES(k), xb = 34;
        const size_t cb = (size_t)ABI_T2_TC * nq * ABI_QD_XB;
        uint8_t* xp = abi_tile_scratch(cb + (size_t)nq * ABI_QD_WB);
        uint8_t* wp = xp + cb;
        const __m256i off = _mm256_set1_epi8(k == ABI_L_Q4_0 ? 8 : 16), zero = _mm256_setzero_si256();
        const __m256i offs[4] = {off, off, off, off};
        for (Py_ssize_t t0 = 0; t0 < nt; t0 += ABI_T2_TC) {
            const Py_ssize_t nc = nt - t0 < ABI_T2_TC ? nt - t0 : ABI_T2_TC;
            for (Py_ssize_t t = 0; t < nc; ++t) {
                const uint8_t* xt = x + (t0 + t) * xs;
                for (Py_ssize_t i = 0; i < nq; ++i) {
                    uint8_t* o = xp + ((t / ABI_QD_N * nq + i) * ABI_QD_N + t % ABI_QD_N) * ABI_QD_XB;
                    const uint8_t* xi = xt + 4 * xb * i;
                    const Py_ssize_t n = nb - 4 * i;
                    #define ABI_QD_XQ(p) _mm256_loadu_si256((const __m256i*)((p) + 2))
                    abi_qd_split(ABI_QD_XQ(xi), n > 1 ? ABI_QD_XQ(xi + xb) : zero, n > 2 ? ABI_QD_XQ(xi + 2 * xb) : zero,
                                n > 3 ? ABI_QD_XQ(xi + 3 * xb) : zero, o, 32);
                    #undef ABI_QD_XQ
                    _mm256_store_si256((__m256i*)(o + 128), _mm256_sub_epi32(zero, abi_qd_dot(zero, offs, o)));
                    _mm256_store_ps((float*)(o + 160), abi_qd_scales(xi, xb, n));
                }
            }
            /* a decode batch of a group of tokens or fewer: its rows as stored (as the legacy tile;
               measured 14-15% faster at 4 tokens, slower past one group: the transposes redone) */
            const int raw = nc <= ABI_QD_N;
            for (Py_ssize_t r = 0; r < nr; r += ABI_QD_R) {
                const int R = nr - r < ABI_QD_R ? (int)(nr - r) : ABI_QD_R;
                abi_t2_prefetch(w + (r + R) * rb, w + nr * rb, ABI_QD_R * rb);
                for (Py_ssize_t i = 0; i < nq && !raw; ++i) {
                    uint8_t* o = wp + i * ABI_QD_WB;
                    const Py_ssize_t n = nb - 4 * i;
                    for (int j = 0; j < R; ++j) {
                        __m256i u[4];
                        _mm256_store_ps((float*)(o + 32 * (4 * ABI_QD_R + j)), abi_qd_row(w + (r + j) * rb + 4 * wb * i, wb, n, u, k));
                        for (int m = 0; m < 4; ++m) _mm256_store_si256((__m256i*)(o + 32 * (m * ABI_QD_R + j)), u[m]);
                    }
                }
                float* yr = y + t0 * ys + r;
                #define ABI_QD_ROWS(W, RAW) do { if (R == 3) abi_qd_rows(xp, W, nq, nc, yr, ys, 3, RAW, rb, nb, k);    \\
                    else if (R == 2) abi_qd_rows(xp, W, nq, nc, yr, ys, 2, RAW, rb, nb, k);                          \\
                    else abi_qd_rows(xp, W, nq, nc, yr, ys, 1, RAW, rb, nb, k); } while (0)
                if (raw) ABI_QD_ROWS(w + r * rb, 1);
                else ABI_QD_ROWS(wp, 0);
                #undef ABI_QD_ROWS
            }
        }
    }
    ABI_T2_TILE(q4_0, abi_qd_tile_run, ABI_L_Q4_0)
    ABI_T2_TILE(q5_0, abi_qd_tile_run, ABI_L_Q5_0)

    /* ================================================================== Q2_K, Q3_K, Q5_K, Q6_K, IQ4_XS, TQ2_0, lattice x Q8_K
       T = 1 (_qdot.pxd, _qdot_iq.pxd): a super-block's integer sum, 8 int32 lanes, is the
       sum over its 8 chunks of 32 elements of madd(maddubs(unsigned values, activation
       chunk), int16 scale vector) (IQ4_XS: its signed values, the signs moved onto the
       activation; TQ2_0: scales of 1); then either (Q2_K, Q5_K: "mins") acc += d dx
       sum and accm += dmin dx madd(bsums, m), y = hsum(acc) - hsum(accm), or (Q3_K, Q6_K,
       TQ2_0: an offset of 4, 32 or 1) acc += d dx (sum - madd(bsums, m) << shift), or
       (IQ4_XS) acc += d dx sum; y = hsum(acc); TQ2_0 keeps two chains (even and odd
       super-blocks), the others one. Here a row's super-block is prepared once as exactly
       those operands (values, scale vectors, m, d, dmin), so one kernel serves the seven
       types (and the lattice ones below) and a pair costs three instructions a chunk (IQ4_XS five: its activation's two
       halves and their signs; TQ2_0 two: its int16 sums added before one madd a
       super-block). */
    enum { ABI_K_Q2_K, ABI_K_Q3_K, ABI_K_Q5_K, ABI_K_Q6_K, ABI_K_IQ4_XS, ABI_K_TQ2_0,
           ABI_K_IQ2_XXS, ABI_K_IQ2_XS, ABI_K_IQ2_S, ABI_K_IQ3_XXS, ABI_K_IQ3_S, ABI_K_IQ1_S, ABI_K_IQ1_M, ABI_K_TQ1_0 };
    /* the lattice and ternary types (_qdot_iq.pxd's AVX2 kernels): a block's lanes are the sum
       over its 8 groups of 32 of madd(maddubs(values, activation), int16 scales), the float
       steps two chains (even and odd blocks) of acc += d_w d_x lanes, as TQ2_0's. IQ2 and IQ3
       (ABI_K_SLAT) take their signed values (|v| <= 62) against the activation biased to
       unsigned bytes (x + 128, prepared once a call: a pair of products stays below 2^15),
       the bias taken back out at the end of a block through c = 128 sum v (the lanes' weighted
       sums of the values, prepared with the row): no sign step a chunk; IQ1 and TQ1_0
       unsigned values less their offsets through the bsums, m (9 (2 s + 1) a scale group; 1),
       as Q3_K and Q6_K with a shift of 0 */
    #define ABI_K_LAT(k) ((k) >= ABI_K_IQ2_XXS)
    #define ABI_K_SLAT(k) ((k) >= ABI_K_IQ2_XXS && (k) <= ABI_K_IQ3_S)
    #define ABI_K_R 2     /* 2 x 4 measured 10-18 % faster than 3 x 4 here (Zen 3); the legacy tile, 3 x 4 */
    #define ABI_K_N 4
    /* a prepared super-block: values (chunk j against activation bytes 32j..32j+31; IQ4_XS:
       their magnitudes, s the signed values; IQ2, IQ3: s only), the int16 scale vector of
       each chunk, m (16 int16), c (IQ2, IQ3: the bias's lanes), d and dmin */
    typedef struct { __m256i u[8]; __m256i s[8]; __m256i sv[8]; __m256i m, c; float d, dmin; float pad[6]; } abi_k_sb;

    /* a group's 32 grid bytes with sign bit e negating byte e */
    ABI_T2INL void abi_k_signed32(int8_t* v, __m256i grid, uint32_t signs) {
        const __m256i m = abi_bitmask32((const uint8_t*)&signs);
        _mm256_storeu_si256((__m256i*)v, _mm256_sub_epi8(_mm256_xor_si256(grid, m), m));
    }
    #define ABI_K_KS4(a) ((uint32_t)abi_ksigns_iq2xs[(a) & 127] | (uint32_t)abi_ksigns_iq2xs[((a) >> 7) & 127] << 8 \
                          | (uint32_t)abi_ksigns_iq2xs[((a) >> 14) & 127] << 16 | (uint32_t)abi_ksigns_iq2xs[((a) >> 21) & 127] << 24)
    /* a lattice block's 256 signed values v and the scale (2 ls + 1) of each 16 elements sc, as
       the scalar twins in _qdot_iq.pxd read them, a group of 32 at a time; returns d_w as the
       AVX2 row takes it */
    ABI_T2INL float abi_k_lattice(const uint8_t* w, int8_t* v, int16_t* sc, const int k) {
        for (int g = 0; g < 8; ++g) {
            __m256i grid;
            uint32_t signs;
            if (k == ABI_K_IQ2_XXS) {
                const uint8_t* q = w + 2 + 8 * g;
                const uint32_t aux = abi_ld32(q + 4);
                grid = _mm256_setr_epi64x((long long)abi_iq2xxs_grid[q[0]], (long long)abi_iq2xxs_grid[q[1]],
                                          (long long)abi_iq2xxs_grid[q[2]], (long long)abi_iq2xxs_grid[q[3]]);
                signs = ABI_K_KS4(aux);
                sc[2 * g] = sc[2 * g + 1] = (int16_t)(2 * (aux >> 28) + 1);
            } else if (k == ABI_K_IQ2_XS) {
                uint16_t q[4];
                memcpy(q, w + 2 + 8 * g, 8);
                grid = _mm256_setr_epi64x((long long)abi_iq2xs_grid[q[0] & 511], (long long)abi_iq2xs_grid[q[1] & 511],
                                          (long long)abi_iq2xs_grid[q[2] & 511], (long long)abi_iq2xs_grid[q[3] & 511]);
                signs = (uint32_t)abi_ksigns_iq2xs[q[0] >> 9] | (uint32_t)abi_ksigns_iq2xs[q[1] >> 9] << 8
                      | (uint32_t)abi_ksigns_iq2xs[q[2] >> 9] << 16 | (uint32_t)abi_ksigns_iq2xs[q[3] >> 9] << 24;
            } else if (k == ABI_K_IQ2_S) {
                const uint8_t* q = w + 2 + 4 * g;
                const unsigned h = w[66 + g];
                grid = _mm256_setr_epi64x((long long)abi_iq2s_grid[q[0] | (h << 8 & 768)], (long long)abi_iq2s_grid[q[1] | (h << 6 & 768)],
                                          (long long)abi_iq2s_grid[q[2] | (h << 4 & 768)], (long long)abi_iq2s_grid[q[3] | (h << 2 & 768)]);
                signs = abi_ld32(w + 34 + 4 * g);
            } else if (k == ABI_K_IQ3_XXS) {
                const uint8_t* q = w + 2 + 8 * g;
                const uint32_t aux = abi_ld32(w + 66 + 4 * g);
                grid = _mm256_setr_epi32((int)abi_iq3xxs_grid[q[0]], (int)abi_iq3xxs_grid[q[1]], (int)abi_iq3xxs_grid[q[2]], (int)abi_iq3xxs_grid[q[3]],
                                         (int)abi_iq3xxs_grid[q[4]], (int)abi_iq3xxs_grid[q[5]], (int)abi_iq3xxs_grid[q[6]], (int)abi_iq3xxs_grid[q[7]]);
                signs = ABI_K_KS4(aux);
                sc[2 * g] = sc[2 * g + 1] = (int16_t)(2 * (aux >> 28) + 1);
            } else {   /* IQ3_S */
                const uint8_t* q = w + 2 + 8 * g;
                const unsigned h = w[66 + g];
                grid = _mm256_setr_epi32(
                    (int)abi_iq3s_grid[q[0] | (h << 8 & 256)], (int)abi_iq3s_grid[q[1] | (h << 7 & 256)],
                    (int)abi_iq3s_grid[q[2] | (h << 6 & 256)], (int)abi_iq3s_grid[q[3] | (h << 5 & 256)],
                    (int)abi_iq3s_grid[q[4] | (h << 4 & 256)], (int)abi_iq3s_grid[q[5] | (h << 3 & 256)],
                    (int)abi_iq3s_grid[q[6] | (h << 2 & 256)], (int)abi_iq3s_grid[q[7] | (h << 1 & 256)]);
                signs = abi_ld32(w + 74 + 4 * g);
                sc[2 * g] = sc[2 * g + 1] = (int16_t)(2 * ((w[106 + (g >> 1)] >> (4 * (g & 1))) & 15) + 1);
            }
            abi_k_signed32(v + 32 * g, grid, signs);
        }
        if (k == ABI_K_IQ2_XS || k == ABI_K_IQ2_S)   /* a nibble per 16 elements */
            for (int h = 0; h < 16; ++h)
                sc[h] = (int16_t)(2 * ((w[(k == ABI_K_IQ2_XS ? 66 : 74) + (h >> 1)] >> (4 * (h & 1))) & 15) + 1);
        return k == ABI_K_IQ3_XXS ? abi_iqt_iq3xxs(w) : k == ABI_K_IQ3_S ? abi_iqt_d0(w) : abi_iqt_iq2(w);
    }
    ABI_T2INL void abi_k_prep(const uint8_t* w, abi_k_sb* o, const int k) {
        const __m256i m4 = _mm256_set1_epi8(15), m3 = _mm256_set1_epi8(3);
        if (k == ABI_K_Q5_K) {
            uint8_t sc[8], mn[8];
            abi_k4_scales(w + 4, sc, mn);
            const __m256i hbits = _mm256_loadu_si256((const __m256i*)(w + 16));
            for (int c = 0; c < 4; ++c) {
                const __m256i q = _mm256_loadu_si256((const __m256i*)(w + 48 + 32 * c));
                __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                /* bit 2c of qh is bit 4 of chunk 2c, bit 2c + 1 of chunk 2c + 1 */
                const __m256i hb = _mm256_srli_epi16(hbits, 2 * c), b4 = _mm256_set1_epi8(16);
                lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16(hb, 4), b4));
                hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_slli_epi16(hb, 3), b4));
                o->u[2 * c] = lo; o->u[2 * c + 1] = hi;
            }
            const __m256i s8 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i*)sc)));
            for (int j = 0; j < 8; ++j) o->sv[j] = abi_bcast16(s8, j);
            const __m128i mins = _mm_loadl_epi64((const __m128i*)mn);
            o->m = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mins, mins));   /* m0 m0 m1 m1 ... */
            o->d = abi_f16t(w); o->dmin = abi_f16t(w + 2);
        } else if (k == ABI_K_Q6_K) {
            const __m128i sc8 = _mm_loadu_si128((const __m128i*)(w + 192));
            for (int h = 0; h < 2; ++h) {
                const __m256i s8 = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(h ? _mm_srli_si128(sc8, 8) : sc8));
                for (int kk = 0; kk < 4; ++kk) o->sv[4 * h + kk] = abi_pair_scales(s8, kk);   /* sub-blocks 8h + 2kk, + 1 */
                abi_q6_k_groups(w, h, o->u + 4 * h);
            }
            o->m = _mm256_cvtepi8_epi16(sc8);
            o->d = abi_f16t(w + 208); o->dmin = 0.0f;
        } else if (k == ABI_K_Q3_K) {
            uint32_t a[4];
            abi_q3_k_scales(w + 96, a);
            const __m128i sc = _mm_sub_epi8(_mm_setr_epi32((int)a[0], (int)a[1], (int)a[2], (int)a[3]), _mm_set1_epi8(32));
            const __m256i hm = _mm256_loadu_si256((const __m256i*)w);
            for (int h = 0; h < 2; ++h) {
                const __m256i s8 = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(h ? _mm_srli_si128(sc, 8) : sc));
                const __m256i q = _mm256_loadu_si256((const __m256i*)(w + 32 + 32 * h));
                for (int s = 0; s < 4; ++s) {
                    o->u[4 * h + s] = abi_q3_k_group(q, hm, h, s);
                    o->sv[4 * h + s] = abi_pair_scales(s8, s);
                }
            }
            o->m = _mm256_cvtepi8_epi16(sc);
            o->d = abi_f16t(w + 108); o->dmin = 0.0f;
        } else if (k == ABI_K_IQ4_XS) {   /* the T = 1 kernel's chunks (its pairing of the activation: abi_k_rn) */
            const __m256i tbl = abi_iq4nl_table();
            const uint32_t sh = abi_ld16(w + 2);
            int16_t ls[8];
            for (int j = 0; j < 8; ++j)
                ls[j] = (int16_t)((int)(((w[4 + (j >> 1)] >> (4 * (j & 1))) & 15) | (((sh >> (2 * j)) & 3) << 4)) - 32);
            for (int c = 0; c < 4; ++c) {   /* 32 bytes = sub-blocks 2c | 2c + 1: low nibbles, then high */
                const __m256i q = _mm256_loadu_si256((const __m256i*)(w + 8 + 32 * c));
                o->s[2 * c] = _mm256_shuffle_epi8(tbl, _mm256_and_si256(q, m4));
                o->s[2 * c + 1] = _mm256_shuffle_epi8(tbl, _mm256_and_si256(_mm256_srli_epi16(q, 4), m4));
                o->u[2 * c] = _mm256_abs_epi8(o->s[2 * c]);
                o->u[2 * c + 1] = _mm256_abs_epi8(o->s[2 * c + 1]);
                o->sv[2 * c] = o->sv[2 * c + 1] = _mm256_set_m128i(_mm_set1_epi16(ls[2 * c + 1]), _mm_set1_epi16(ls[2 * c]));
            }
            o->m = _mm256_setzero_si256();
            o->d = abi_f16t(w); o->dmin = 0.0f;
        } else if (k == ABI_K_TQ2_0) {   /* t in 0..2 for t - 1: bits 2s of 32 bytes, elements 128h + 32s + 0..31 */
            for (int h = 0; h < 2; ++h) {
                const __m256i q = _mm256_loadu_si256((const __m256i*)(w + 32 * h));
                for (int s = 0; s < 4; ++s) o->u[4 * h + s] = _mm256_and_si256(_mm256_srli_epi16(q, 2 * s), m3);
            }
            o->m = _mm256_set1_epi16(1);
            o->d = abi_f16t(w + 64); o->dmin = 0.0f;
        } else if (k == ABI_K_IQ1_S) {   /* _qdot_iq.pxd's abi_iqv_iq1_s, less the activation */
            const __m128i sc = abi_iq1s_sc(w);
            const __m256i scw = _mm256_broadcastsi128_si256(sc), dw = abi_iq1s_dw(w);
            for (int g = 0; g < 8; ++g) {
                o->u[g] = abi_iq1s_group(w, g, dw);
                o->sv[g] = _mm256_shuffle_epi8(scw, _mm256_set1_epi16((short)(0x0100 + 0x0202 * g)));
            }
            o->m = abi_iq1s_bw(sc, 9);
            o->d = abi_iqt_iq2(w); o->dmin = 0.0f;
        } else if (k == ABI_K_IQ1_M) {   /* abi_iqv_iq1_m's values and scales */
            const abi_iq1m_ops b = abi_iq1m_block(w);
            for (int g = 0; g < 8; ++g) {
                o->u[g] = abi_iq1m_group(w, g, &b);
                o->sv[g] = _mm256_shuffle_epi8(b.se, _mm256_set1_epi16((short)(0x0100 + 0x0202 * g)));
            }
            o->m = _mm256_mullo_epi16(b.s, _mm256_set1_epi16(9));
            o->d = abi_iqs_iq1m(w); o->dmin = 0.0f;
        } else if (k == ABI_K_TQ1_0) {   /* abi_iqv_tq1_0's trits, scales of 1 */
            abi_tq1_values(w, o->u);
            for (int j = 0; j < 8; ++j) o->sv[j] = _mm256_set1_epi16(1);
            o->m = _mm256_set1_epi16(1);
            o->d = abi_iqt_tq1(w); o->dmin = 0.0f;
        } else if (ABI_K_SLAT(k)) {
            int8_t v[256];
            int16_t sc[16];
            o->d = abi_k_lattice(w, v, sc, k);
            o->c = _mm256_setzero_si256();
            for (int j = 0; j < 8; ++j) {
                o->s[j] = _mm256_loadu_si256((const __m256i*)(v + 32 * j));
                o->sv[j] = _mm256_set_m128i(_mm_set1_epi16(sc[2 * j + 1]), _mm_set1_epi16(sc[2 * j]));
                o->c = _mm256_add_epi32(o->c, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8((char)0x80), o->s[j]), o->sv[j]));
            }
            o->m = _mm256_setzero_si256();
            o->dmin = 0.0f;
        } else {   /* Q2_K */
            const __m128i sm = _mm_loadu_si128((const __m128i*)w);
            const __m128i sc = _mm_and_si128(sm, _mm_set1_epi8(15));
            for (int h = 0; h < 2; ++h) {
                const __m256i s8 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(h ? _mm_srli_si128(sc, 8) : sc));
                const __m256i q = _mm256_loadu_si256((const __m256i*)(w + 16 + 32 * h));
                for (int s = 0; s < 4; ++s) {
                    o->u[4 * h + s] = _mm256_and_si256(_mm256_srli_epi16(q, 2 * s), m3);
                    o->sv[4 * h + s] = abi_pair_scales(s8, s);
                }
            }
            o->m = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sm, 4), _mm_set1_epi8(15)));
            o->d = abi_f16t(w + 80); o->dmin = abi_f16t(w + 82);
        }
    }

    /* R prepared rows (nb super-blocks each, consecutive) x N tokens */
    ABI_T2INL void abi_k_rn(const abi_k_sb* wp, Py_ssize_t nb, const uint8_t* x, Py_ssize_t xs,
                            float* y, Py_ssize_t ys, const int R, const int N, const int k) {
        const int mins = k == ABI_K_Q2_K || k == ABI_K_Q5_K;
        const int shift = k == ABI_K_Q6_K ? 5 : k == ABI_K_Q3_K ? 2 : 0;
        const int step = k == ABI_K_TQ2_0 || ABI_K_LAT(k) ? 2 : 1;   /* chains: two run as two passes */
        __m256 acc[ABI_K_R][ABI_K_N], accm[ABI_K_R][ABI_K_N], acc0[ABI_K_R][ABI_K_N];
        for (int chain = 0; chain < step; ++chain) {
            ABI_T2UNROLL for (int r = 0; r < R; ++r) ABI_T2UNROLL for (int t = 0; t < N; ++t)
                acc[r][t] = accm[r][t] = _mm256_setzero_ps();
            for (Py_ssize_t i = chain; i < nb; i += step) {
                __m256i sum[ABI_K_R][ABI_K_N];
                ABI_T2UNROLL for (int r = 0; r < R; ++r) ABI_T2UNROLL for (int t = 0; t < N; ++t) sum[r][t] = _mm256_setzero_si256();
                /* a rolled loop over the chunks: unrolled, gcc forms all the products first and
                   spills them before adding */
                _Pragma("GCC unroll 1") for (int j = 0; j < 8; ++j) {
                    /* IQ4_XS: chunk 2c + h is bytes 16h..16h + 15 of sub-blocks 2c | 2c + 1 */
                    const int xo = k == ABI_K_IQ4_XS ? 64 * (j >> 1) + 16 * (j & 1) : 32 * j;
                    ABI_T2UNROLL for (int r = 0; r < R; ++r) {
                        const abi_k_sb* b = wp + r * nb + i;
                        const __m256i u = _mm256_load_si256(&b->u[j]);
                        ABI_T2UNROLL for (int t = 0; t < N; ++t) {
                            const uint8_t* xj = x + t * xs + 292 * i + 4 + xo;
                            __m256i p;
                            if (ABI_K_SLAT(k))   /* x + 128 (abi_k_tile_run) against the signed values */
                                p = _mm256_maddubs_epi16(_mm256_loadu_si256((const __m256i*)xj), _mm256_load_si256(&b->s[j]));
                            else if (k == ABI_K_IQ4_XS)   /* |v|, |x| <= 127: a pair of products < 2^15 */
                                p = _mm256_maddubs_epi16(u, _mm256_sign_epi8(_mm256_loadu2_m128i((const __m128i*)(xj + 32), (const __m128i*)xj),
                                                                             _mm256_load_si256(&b->s[j])));
                            else
                                p = _mm256_maddubs_epi16(u, _mm256_loadu_si256((const __m256i*)xj));
                            sum[r][t] = k == ABI_K_TQ2_0 ? _mm256_add_epi16(sum[r][t], p)
                                                         : _mm256_add_epi32(sum[r][t], _mm256_madd_epi16(p, _mm256_load_si256(&b->sv[j])));
                            /* each sum kept in its register: else gcc forms the products of two
                               rows first and spills half the sums, a load and a store a chunk */
                            __asm__("" : "+x"(sum[r][t]));
                        }
                    }
                }
                if (k == ABI_K_TQ2_0)   /* scales of 1: the int16 pairs summed first (at most 8 * 508) */
                    ABI_T2UNROLL for (int r = 0; r < R; ++r) ABI_T2UNROLL for (int t = 0; t < N; ++t)
                        sum[r][t] = _mm256_madd_epi16(sum[r][t], _mm256_set1_epi16(1));
                ABI_T2UNROLL for (int t = 0; t < N; ++t) {
                    const uint8_t* xt = x + t * xs + 292 * i;
                    const float dx = abi_ldf32(xt);
                    const __m256i bs = _mm256_loadu_si256((const __m256i*)(xt + 260));
                    ABI_T2UNROLL for (int r = 0; r < R; ++r) {
                        const abi_k_sb* b = wp + r * nb + i;
                        const __m256i mb = _mm256_madd_epi16(bs, _mm256_load_si256(&b->m));
                        if (mins) {
                            acc[r][t] = _mm256_fmadd_ps(_mm256_set1_ps(b->d * dx), _mm256_cvtepi32_ps(sum[r][t]), acc[r][t]);
                            accm[r][t] = _mm256_fmadd_ps(_mm256_set1_ps(b->dmin * dx), _mm256_cvtepi32_ps(mb), accm[r][t]);
                        } else {
                            const __m256i s = k == ABI_K_IQ4_XS ? sum[r][t] : ABI_K_SLAT(k) ? _mm256_sub_epi32(sum[r][t], _mm256_load_si256(&b->c))
                                                                : _mm256_sub_epi32(sum[r][t], _mm256_slli_epi32(mb, shift));
                            acc[r][t] = _mm256_fmadd_ps(_mm256_set1_ps(b->d * dx), _mm256_cvtepi32_ps(s), acc[r][t]);
                        }
                    }
                }
            }
            if (step == 2 && chain == 0)
                ABI_T2UNROLL for (int r = 0; r < R; ++r) ABI_T2UNROLL for (int t = 0; t < N; ++t) acc0[r][t] = acc[r][t];
        }
        ABI_T2UNROLL for (int r = 0; r < R; ++r) ABI_T2UNROLL for (int t = 0; t < N; ++t)
            y[t * ys + r] = mins ? abi_hsum8(acc[r][t]) - abi_hsum8(accm[r][t])
                                 : abi_hsum8(step == 2 ? _mm256_add_ps(acc0[r][t], acc[r][t]) : acc[r][t]);
    }

    ABI_T2INL void abi_k_rows(const abi_k_sb* wp, Py_ssize_t nb, const uint8_t* x, Py_ssize_t xs, Py_ssize_t nt,
                              float* y, Py_ssize_t ys, const int R, const int k) {
        for (Py_ssize_t t = 0; t < nt; t += ABI_K_N) {
            const uint8_t* xt = x + t * xs;
            float* yt = y + t * ys;
            switch (nt - t) {
                case 1: abi_k_rn(wp, nb, xt, xs, yt, ys, R, 1, k); break;
                case 2: abi_k_rn(wp, nb, xt, xs, yt, ys, R, 2, k); break;
                case 3: abi_k_rn(wp, nb, xt, xs, yt, ys, R, 3, k); break;
                default: abi_k_rn(wp, nb, xt, xs, yt, ys, R, ABI_K_N, k);
            }
        }
    }

    /* Q6_K in a decode batch (at most ABI_K6_N tokens): one row as stored x all its tokens,
       each pair's sum in a register, each 32-element group unpacked once for all of them
       where it is used (preparing the rows, as for a prompt, costs stores and loads that a
       few tokens do not repay; a pass per 4 tokens unpacked the rows twice for 8) */
    #define ABI_K6_N 8
    ABI_T2INL void abi_k6_rn(const uint8_t* w, const uint8_t* x, Py_ssize_t xs, Py_ssize_t nb,
                             float* y, Py_ssize_t ys, const int N, const uint8_t* wn) {
        __m256 acc[ABI_K6_N];
        ABI_T2UNROLL for (int t = 0; t < N; ++t) acc[t] = _mm256_setzero_ps();
        for (Py_ssize_t i = 0; i < nb; ++i) {
            const uint8_t* wb = w + 210 * i;
            if (wn)   /* super-block i of the row ahead (abi_t2_ahead), requested as this one is used */
                ABI_T2UNROLL for (int l = 0; l < 4; ++l) _mm_prefetch((const char*)(wn + 210 * i + 64 * l), _MM_HINT_T0);
            const __m128i sc8 = _mm_loadu_si128((const __m128i*)(wb + 192));
            __m256i s[ABI_K6_N];
            ABI_T2UNROLL for (int t = 0; t < N; ++t) s[t] = _mm256_setzero_si256();
            ABI_T2UNROLL for (int h = 0; h < 2; ++h) {
                const __m256i s8 = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(h ? _mm_srli_si128(sc8, 8) : sc8));
                ABI_T2UNROLL for (int k = 0; k < 4; ++k) {
                    const __m256i g = abi_q6_k_group(wb, h, k);   /* unpacked where it is used */
                    const __m256i sv = abi_pair_scales(s8, k);   /* [sc_8h+2k | sc_8h+2k+1] */
                    ABI_T2UNROLL for (int t = 0; t < N; ++t) {
                        const __m256i xv = _mm256_loadu_si256((const __m256i*)(x + t * xs + 292 * i + 4 + 128 * h + 32 * k));
                        s[t] = _mm256_add_epi32(s[t], _mm256_madd_epi16(_mm256_maddubs_epi16(g, xv), sv));
                        __asm__("" : "+x"(s[t]));   /* each sum kept in its register */
                    }
                }
            }
            const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
            const float dw = abi_f16_to_f32(abi_ld16(wb + 208));
            ABI_T2UNROLL for (int t = 0; t < N; ++t) {   /* the T = 1 kernel's steps */
                const uint8_t* xt = x + t * xs + 292 * i;
                const __m256i corr = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i*)(xt + 260)), sc16);
                acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * abi_ldf32(xt)), _mm256_cvtepi32_ps(_mm256_sub_epi32(s[t], _mm256_slli_epi32(corr, 5))), acc[t]);
            }
        }
        ABI_T2UNROLL for (int t = 0; t < N; ++t) y[t * ys] = abi_hsum8(acc[t]);
    }
    static __attribute__((noinline)) void abi_k6_raw(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs,
                                                     Py_ssize_t nt, Py_ssize_t nb, float* y, Py_ssize_t ys) {
        const Py_ssize_t ahead = abi_t2_ahead(nb, 1);
        for (Py_ssize_t r = 0; r < nr; ++r) {
            const uint8_t* wr = w + r * rb, * wn = r + ahead < nr ? wr + ahead * rb : NULL;
            switch (nt) {
                case 1: abi_k6_rn(wr, x, xs, nb, y + r, ys, 1, wn); break;
                case 2: abi_k6_rn(wr, x, xs, nb, y + r, ys, 2, wn); break;
                case 3: abi_k6_rn(wr, x, xs, nb, y + r, ys, 3, wn); break;
                case 4: abi_k6_rn(wr, x, xs, nb, y + r, ys, 4, wn); break;
                case 5: abi_k6_rn(wr, x, xs, nb, y + r, ys, 5, wn); break;
                case 6: abi_k6_rn(wr, x, xs, nb, y + r, ys, 6, wn); break;
                case 7: abi_k6_rn(wr, x, xs, nb, y + r, ys, 7, wn); break;
                default: abi_k6_rn(wr, x, xs, nb, y + r, ys, 8, wn);
            }
        }
    }

    ABI_T2INL void abi_k_tile_run(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs,
                                  Py_ssize_t nt, Py_ssize_t nb, float* y, Py_ssize_t ys, const int k) {
        const Py_ssize_t wb = k == ABI_K_Q2_K ? 84 : k == ABI_K_Q3_K ? 110 : k == ABI_K_Q5_K ? 176
                              : k == ABI_K_Q6_K ? 210 : k == ABI_K_IQ4_XS ? 136 : k == ABI_K_IQ2_XS ? 74 : k == ABI_K_IQ2_S ? 82
                              : k == ABI_K_IQ3_XXS ? 98 : k == ABI_K_IQ3_S ? 110 : k == ABI_K_IQ1_S ? 50 : k == ABI_K_IQ1_M ? 56
                              : k == ABI_K_TQ1_0 ? 54 : 66;   /* TQ2_0, IQ2_XXS: 66 */
        if (k == ABI_K_Q6_K && nt <= ABI_K6_N) {
            abi_k6_raw(w, rb, nr, x, xs, nt, nb, y, ys);
            return;
        }
        const size_t wsz = (size_t)ABI_K_R * nb * sizeof(abi_k_sb);
        abi_k_sb* wp = (abi_k_sb*)abi_tile_scratch(wsz + (ABI_K_SLAT(k) ? (size_t)nt * xs : 0));
        if (ABI_K_SLAT(k)) {   /* the activation with its bytes biased to x + 128 */
            uint8_t* xb = (uint8_t*)wp + wsz;
            memcpy(xb, x, (size_t)nt * xs);
            for (Py_ssize_t t = 0; t < nt; ++t)
                for (Py_ssize_t i = 0; i < nb; ++i)
                    for (int j = 0; j < 8; ++j) {
                        __m256i* q = (__m256i*)(xb + t * xs + 292 * i + 4 + 32 * j);
                        _mm256_storeu_si256(q, _mm256_xor_si256(_mm256_loadu_si256(q), _mm256_set1_epi8((char)0x80)));
                    }
            x = xb;
        }
        for (Py_ssize_t r = 0; r < nr; r += ABI_K_R) {
            const int R = nr - r < ABI_K_R ? (int)(nr - r) : ABI_K_R;
            abi_t2_prefetch(w + (r + R) * rb, w + nr * rb, ABI_K_R * rb);
            for (int j = 0; j < R; ++j)
                for (Py_ssize_t i = 0; i < nb; ++i) abi_k_prep(w + (r + j) * rb + wb * i, wp + j * nb + i, k);
            if (R == 2) abi_k_rows(wp, nb, x, xs, nt, y + r, ys, 2, k);
            else abi_k_rows(wp, nb, x, xs, nt, y + r, ys, 1, k);
        }
    }
    #define ABI_K_TILE(name, K) ABI_T2_TILE(name, abi_k_tile_run, K)
    ABI_K_TILE(q2_k, ABI_K_Q2_K)
    ABI_K_TILE(q3_k, ABI_K_Q3_K)
    ABI_K_TILE(q5_k, ABI_K_Q5_K)
    ABI_K_TILE(q6_k, ABI_K_Q6_K)
    ABI_K_TILE(iq4_xs, ABI_K_IQ4_XS)
    ABI_K_TILE(tq2_0, ABI_K_TQ2_0)
    #if !ABI_IQ_Z   /* where the T = 1 lattice kernels take 512-bit steps, their lanes are others */
    #define ABI_QTILE2_LAT 1
    ABI_K_TILE(iq2_xxs, ABI_K_IQ2_XXS)
    ABI_K_TILE(iq2_xs, ABI_K_IQ2_XS)
    ABI_K_TILE(iq2_s, ABI_K_IQ2_S)
    ABI_K_TILE(iq3_xxs, ABI_K_IQ3_XXS)
    ABI_K_TILE(iq3_s, ABI_K_IQ3_S)
    ABI_K_TILE(iq1_s, ABI_K_IQ1_S)
    ABI_K_TILE(iq1_m, ABI_K_IQ1_M)
    ABI_K_TILE(tq1_0, ABI_K_TQ1_0)
    #endif

    #else
    #define ABI_QTILE2 0
    #endif
    #ifndef ABI_QTILE2_LAT
    #define ABI_QTILE2_LAT 0
    #endif
    #endif /* ABI_QTILE2_H */
    """
    bint QTILE2_LAT "ABI_QTILE2_LAT"   # among them, those of IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M and TQ1_0
    bint QTILE2 "ABI_QTILE2"   # the AVX2 tiles: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, MXFP4, Q2_K, Q3_K, Q5_K, Q6_K, IQ4_XS, TQ2_0 (and Q4_K with any SIMD)
