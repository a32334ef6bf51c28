# Prompt (T > 1) products of float weights (F32, F16, BF16) with float activations over
# tiles of R weight rows x N tokens, as inline C: each weight vector is loaded (and
# converted from F16 / BF16) once per tile and each activation vector once per tile, where
# the T = 1 kernels (abi_dot_f32 / _f16 / _bf16 in _qdot.pxd) redo both for every (row,
# token) pair.
#
# Bit for bit the T = 1 result: the T = 1 kernels keep 8-lane float accumulators over
# chunks of 32 elements (F32, F16: s0..s3, a lane each 8 elements apart) or 16 (BF16: s0,
# s1), each lane a chain of fused multiply-adds in element order; the reduction is
# (s0 + s1) + (s2 + s3) then abi_hsum8, and the elements past the last whole chunk are a
# scalar loop. The tiles keep each chain lane for lane and end the same way. Two builds:
#   AVX-512 F (ABI_FTILE): s0 and s1 share one 16-lane register, [s0 | s1] (and [s2 | s3] a
#     second), which one 16-element load fills lane for lane.
#   AVX2 + FMA without AVX-512 F (ABI_FTILE2): 16 registers cannot hold four chains for
#     enough pairs, so a tile runs the chains one after another over a column block (the
#     block short enough to stay in L1 for the next chain) and keeps them in memory from one
#     block to the next.
# Only float multiply-adds are needed (no integer products), so these tiles have their own
# guards.
#
#   abi_ftile_<w>(w, rb, nr, x, xs, nt, n, y, ys): y[t * ys + r] = row r . token t for
#   r < nr (rows rb bytes apart from w), t < nt (float32 activation rows xs bytes apart
#   from x), n elements per row. Present where ABI_FTILE or ABI_FTILE2 is 1.
from libc.stdint cimport uint8_t

from abi._kernels._qdot cimport QDOT_SIMD   # its C (abi_hsum8, the T = 1 kernels) first

cdef extern from *:
    """
    #ifndef ABI_FTILE_H
    #define ABI_FTILE_H
    #if ABI_QDOT_SIMD
    #define ABI_FAINL static inline __attribute__((always_inline))
    #define ABI_FUNROLL _Pragma("GCC unroll 16")
    enum { ABI_FK_F32, ABI_FK_F16, ABI_FK_BF16 };
    /* a loaded vector kept in a register: gcc would otherwise load it again for every
       multiply-add that uses it, two loads per multiply-add (as _vec.pxd's ABI_KEEP) */
    #ifndef ABI_KEEP
    #define ABI_KEEP(v) __asm__("" : "+v"(v))
    #endif
    /* weight i of row w as float32, as the T = 1 kernels' tails read it */
    ABI_FAINL float abi_fw1(const uint8_t* w, Py_ssize_t i, const int K) {
        if (K == ABI_FK_F32) return abi_ldf32(w + 4 * i);
        if (K == ABI_FK_F16) return abi_f16_to_f32(abi_ld16(w + 2 * i));
        return abi_bf16_to_f32(abi_ld16(w + 2 * i));
    }

    #if defined(__AVX512F__)
    #define ABI_FTILE 1
    #define ABI_FTILE2 0
    #define ABI_FTILE_R 4     /* rows per tile, at most */
    #define ABI_FTILE_N 6     /* tokens per tile, at most */
    /* 16 weights from p as float32 */
    ABI_FAINL __m512 abi_fw16(const uint8_t* p, const int K) {
        if (K == ABI_FK_F32) return _mm512_loadu_ps((const float*)p);
        const __m256i h = _mm256_loadu_si256((const __m256i*)p);
        if (K == ABI_FK_F16) return _mm512_cvtph_ps(h);
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    /* [a | b] -> a + b, lane by lane: two of the T = 1 kernel's accumulators added */
    ABI_FAINL __m256 abi_fpair(__m512 v) {
        return _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    }

    /* R rows x N tokens; H 16-lane registers per (row, token): 2 for F32 and F16 ([s0 | s1],
       [s2 | s3] over 32-element chunks), 1 for BF16 ([s0 | s1] over 16) */
    ABI_FAINL void abi_ftile_rn(const uint8_t* w, Py_ssize_t rb, const uint8_t* x, Py_ssize_t xs,
                                Py_ssize_t n, float* y, Py_ssize_t ys, const int K, const int R, const int N) {
        const int H = K == ABI_FK_BF16 ? 1 : 2, ES = K == ABI_FK_F32 ? 4 : 2;
        __m512 acc[2][ABI_FTILE_R][ABI_FTILE_N];
        ABI_FUNROLL for (int h = 0; h < H; ++h)
            ABI_FUNROLL for (int r = 0; r < R; ++r)
                ABI_FUNROLL for (int t = 0; t < N; ++t) acc[h][r][t] = _mm512_setzero_ps();
        Py_ssize_t i = 0;
        for (; i + 16 * H <= n; i += 16 * H) {
            ABI_FUNROLL for (int h = 0; h < H; ++h) {
                __m512 wv[ABI_FTILE_R];
                ABI_FUNROLL for (int r = 0; r < R; ++r) {
                    wv[r] = abi_fw16(w + r * rb + ES * (i + 16 * h), K);
                    ABI_KEEP(wv[r]);
                }
                ABI_FUNROLL for (int t = 0; t < N; ++t) {
                    __m512 xv = _mm512_loadu_ps((const float*)(x + t * xs) + i + 16 * h);
                    ABI_KEEP(xv);
                    ABI_FUNROLL for (int r = 0; r < R; ++r) acc[h][r][t] = _mm512_fmadd_ps(wv[r], xv, acc[h][r][t]);
                }
            }
        }
        ABI_FUNROLL for (int r = 0; r < R; ++r) {
            const uint8_t* wr = w + r * rb;
            ABI_FUNROLL for (int t = 0; t < N; ++t) {
                const float* xt = (const float*)(x + t * xs);
                const __m256 s01 = abi_fpair(acc[0][r][t]);
                float tail = abi_hsum8(H == 2 ? _mm256_add_ps(s01, abi_fpair(acc[1][r][t])) : s01);
                for (Py_ssize_t j = i; j < n; ++j) tail = fmaf(abi_fw1(wr, j, K), xt[j], tail);
                y[t * ys + r] = tail;
            }
        }
    }

    /* n (<= TN) tokens of a tile of R rows, N a constant so the tile's loops unroll */
    #define ABI_FTILE_CASE(K, R, TN, k) case k: if (k <= TN) { abi_ftile_rn(w, rb, x, xs, n, y, ys, K, R, k); break; }
    #define ABI_FTILE_N_OF(name, K, R, TN)                                                                 \
    ABI_FAINL void abi_ftile_##name##_r##R(const uint8_t* w, Py_ssize_t rb, const uint8_t* x, Py_ssize_t xs, \
                                           Py_ssize_t n, float* y, Py_ssize_t ys, Py_ssize_t nt) {     \
        switch (nt) {                                                                                  \
            ABI_FTILE_CASE(K, R, TN, 1) ABI_FTILE_CASE(K, R, TN, 2) ABI_FTILE_CASE(K, R, TN, 3)        \
            ABI_FTILE_CASE(K, R, TN, 4) ABI_FTILE_CASE(K, R, TN, 5) ABI_FTILE_CASE(K, R, TN, 6)        \
            default: break;                                                                            \
        }                                                                                              \
    }
    /* TR rows at a time (then the leftover rows one by one), each against all the tokens
       TN at a time: the rows stay in L1 / L2 while the tokens go by (float rows are 2-4
       bytes an element; the quantised tiles' tokens-outer order, which streams every row
       once per TN tokens, was 1.6x slower on F32 1536 x 1536 and 2.9x on 1536 x 8960) */
    #define ABI_FTILE_DRIVER(name, K, TR, TN)                                                              \
    ABI_FTILE_N_OF(name, K, TR, TN)                                                                    \
    ABI_FTILE_N_OF(name, K, 1, TN)                                                                     \
    static void abi_ftile_##name(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x,     \
                                 Py_ssize_t xs, Py_ssize_t nt, Py_ssize_t n, float* y, Py_ssize_t ys) { \
        Py_ssize_t r = 0;                                                                              \
        for (; r + TR <= nr; r += TR)                                                                  \
            for (Py_ssize_t t = 0; t < nt; t += TN)                                                    \
                abi_ftile_##name##_r##TR(w + r * rb, rb, x + t * xs, xs, n, y + t * ys + r, ys,        \
                                         nt - t < TN ? nt - t : TN);                                   \
        for (; r < nr; ++r)                                                                            \
            for (Py_ssize_t t = 0; t < nt; t += TN)                                                    \
                abi_ftile_##name##_r1(w + r * rb, rb, x + t * xs, xs, n, y + t * ys + r, ys,           \
                                      nt - t < TN ? nt - t : TN);                                      \
    }
    /* 24 accumulators of the 32 registers; the shapes that fit (4 x 3, 3 x 4, 4 x 4 and
       4 x 5 for BF16) measured within noise of each other on Zen 5, 2 x 6 slower */
    ABI_FTILE_DRIVER(f32, ABI_FK_F32, 4, 3)
    ABI_FTILE_DRIVER(f16, ABI_FK_F16, 4, 3)
    ABI_FTILE_DRIVER(bf16, ABI_FK_BF16, 4, 6)

    #else
    #define ABI_FTILE 0
    #define ABI_FTILE2 1
    #define ABI_FT2_R 4       /* rows per tile (gemm_rows hands small batches 4 rows at a time) */
    #define ABI_FT2_N 3       /* tokens per tile, at most: 12 accumulators, 3 tokens, 1 weight */
    #define ABI_FT2_TC 64     /* tokens whose chains are kept at a time */
    /* bytes of a column block's rows and tokens, leaving room in a 32 KB L1 (704 elements
       F32, 1024 F16 / BF16; 256, and 1536 F32 / 2048 F16, measured slower on Zen 3) */
    #define ABI_FT2_L1 20480
    /* a tile's chains, [chain][row][token], kept from one column block to the next */
    typedef __m256 abi_ft2_acc[4][ABI_FT2_R][ABI_FT2_N];

    /* 8 weights from p as float32, converted as the T = 1 kernels do */
    ABI_FAINL __m256 abi_fw8(const uint8_t* p, const int K) {
        if (K == ABI_FK_F32) return _mm256_loadu_ps((const float*)p);
        const __m128i h = _mm_loadu_si128((const __m128i*)p);
        if (K == ABI_FK_F16) return _mm256_cvtph_ps(h);
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }

    /* R rows x N tokens over the whole chunks of elements [b, e), the chains one after the
       other (from zero at the first block, else from s, and back to s); at the last block
       (e == m, every whole chunk done) y, the T = 1 reduction and then the elements from m */
    ABI_FAINL void abi_ft2_tile(const uint8_t* w, Py_ssize_t rb, const uint8_t* x, Py_ssize_t xs, Py_ssize_t b,
                                Py_ssize_t e, Py_ssize_t m, Py_ssize_t n, abi_ft2_acc s, float* y, Py_ssize_t ys,
                                const int K, const int R, const int N) {
        const int C = K == ABI_FK_BF16 ? 2 : 4, ES = K == ABI_FK_F32 ? 4 : 2;
        ABI_FUNROLL for (int c = 0; c < C; ++c) {
            __m256 acc[ABI_FT2_R][ABI_FT2_N];
            ABI_FUNROLL for (int r = 0; r < R; ++r)
                ABI_FUNROLL for (int t = 0; t < N; ++t) acc[r][t] = b ? s[c][r][t] : _mm256_setzero_ps();
            for (Py_ssize_t i = b + 8 * c; i < e; i += 8 * C) {
                __m256 xv[ABI_FT2_N];
                ABI_FUNROLL for (int t = 0; t < N; ++t) {
                    xv[t] = _mm256_loadu_ps((const float*)(x + t * xs) + i);
                    ABI_KEEP(xv[t]);
                }
                ABI_FUNROLL for (int r = 0; r < R; ++r) {
                    __m256 wv = abi_fw8(w + r * rb + ES * i, K);
                    ABI_KEEP(wv);
                    ABI_FUNROLL for (int t = 0; t < N; ++t) acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
                }
            }
            ABI_FUNROLL for (int r = 0; r < R; ++r)
                ABI_FUNROLL for (int t = 0; t < N; ++t) s[c][r][t] = acc[r][t];
        }
        if (e < m) return;
        ABI_FUNROLL for (int r = 0; r < R; ++r) {
            const uint8_t* wr = w + r * rb;
            ABI_FUNROLL for (int t = 0; t < N; ++t) {
                const float* xt = (const float*)(x + t * xs);
                const __m256 s01 = _mm256_add_ps(s[0][r][t], s[1][r][t]);
                float tail = abi_hsum8(C == 4 ? _mm256_add_ps(s01, _mm256_add_ps(s[2][r][t], s[3][r][t])) : s01);
                for (Py_ssize_t j = m; j < n; ++j) tail = fmaf(abi_fw1(wr, j, K), xt[j], tail);
                y[t * ys + r] = tail;
            }
        }
    }
    /* nt (<= ABI_FT2_N) tokens, N a constant so the tile's loops unroll */
    ABI_FAINL void abi_ft2_tile_n(const uint8_t* w, Py_ssize_t rb, const uint8_t* x, Py_ssize_t xs, Py_ssize_t b,
                                  Py_ssize_t e, Py_ssize_t m, Py_ssize_t n, abi_ft2_acc s, float* y, Py_ssize_t ys,
                                  const int K, const int R, Py_ssize_t nt) {
        if (nt == 3) abi_ft2_tile(w, rb, x, xs, b, e, m, n, s, y, ys, K, R, 3);
        else if (nt == 2) abi_ft2_tile(w, rb, x, xs, b, e, m, n, s, y, ys, K, R, 2);
        else abi_ft2_tile(w, rb, x, xs, b, e, m, n, s, y, ys, K, R, 1);
    }

    /* ABI_FT2_R rows at a time (then the leftover rows one by one) against ABI_FT2_TC tokens
       at a time, a column block for all of them before the next: the block's rows stay in
       L1 and its tokens in L2 while the tiles go by */
    ABI_FAINL void abi_ft2_rows(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs,
                                Py_ssize_t nt, Py_ssize_t n, float* y, Py_ssize_t ys, const int K) {
        const int ES = K == ABI_FK_F32 ? 4 : 2;
        const Py_ssize_t m = n - n % (K == ABI_FK_BF16 ? 16 : 32);
        const Py_ssize_t B = ABI_FT2_L1 / (ABI_FT2_R * ES + ABI_FT2_N * 4) / 32 * 32;
        abi_ft2_acc s[(ABI_FT2_TC + ABI_FT2_N - 1) / ABI_FT2_N];
        for (Py_ssize_t r = 0; r < nr;) {
            const int R = nr - r >= ABI_FT2_R ? ABI_FT2_R : 1;
            for (Py_ssize_t t0 = 0; t0 < nt; t0 += ABI_FT2_TC) {
                const Py_ssize_t tn = nt - t0 < ABI_FT2_TC ? nt - t0 : ABI_FT2_TC;
                Py_ssize_t b = 0, e;
                do {   /* once where there is no whole chunk */
                    e = m - b < B ? m : b + B;
                    for (Py_ssize_t t = 0; t < tn; t += ABI_FT2_N) {
                        const Py_ssize_t nn = tn - t < ABI_FT2_N ? tn - t : ABI_FT2_N;
                        const uint8_t* xt = x + (t0 + t) * xs;
                        float* yt = y + (t0 + t) * ys + r;
                        if (R == ABI_FT2_R)
                            abi_ft2_tile_n(w + r * rb, rb, xt, xs, b, e, m, n, s[t / ABI_FT2_N], yt, ys, K, ABI_FT2_R, nn);
                        else
                            abi_ft2_tile_n(w + r * rb, rb, xt, xs, b, e, m, n, s[t / ABI_FT2_N], yt, ys, K, 1, nn);
                    }
                    b = e;
                } while (b < m);
            }
            r += R;
        }
    }
    static void abi_ftile_f32(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs,
                              Py_ssize_t nt, Py_ssize_t n, float* y, Py_ssize_t ys) {
        abi_ft2_rows(w, rb, nr, x, xs, nt, n, y, ys, ABI_FK_F32);
    }
    static void abi_ftile_f16(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs,
                              Py_ssize_t nt, Py_ssize_t n, float* y, Py_ssize_t ys) {
        abi_ft2_rows(w, rb, nr, x, xs, nt, n, y, ys, ABI_FK_F16);
    }
    static void abi_ftile_bf16(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs,
                               Py_ssize_t nt, Py_ssize_t n, float* y, Py_ssize_t ys) {
        abi_ft2_rows(w, rb, nr, x, xs, nt, n, y, ys, ABI_FK_BF16);
    }
    #endif

    #else
    #define ABI_FTILE 0
    #define ABI_FTILE2 0
    #define ABI_FTILE_STUB(name) static void abi_ftile_##name(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, \
        const uint8_t* x, Py_ssize_t xs, Py_ssize_t nt, Py_ssize_t n, float* y, Py_ssize_t ys) {}
    ABI_FTILE_STUB(f32)
    ABI_FTILE_STUB(f16)
    ABI_FTILE_STUB(bf16)
    #endif
    #endif /* ABI_FTILE_H */
    """
    bint FTILE "ABI_FTILE"
    bint FTILE2 "ABI_FTILE2"
    void ftile_f32 "abi_ftile_f32"(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs,
                                   Py_ssize_t nt, Py_ssize_t n, float* y, Py_ssize_t ys) noexcept nogil
    void ftile_f16 "abi_ftile_f16"(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs,
                                   Py_ssize_t nt, Py_ssize_t n, float* y, Py_ssize_t ys) noexcept nogil
    void ftile_bf16 "abi_ftile_bf16"(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs,
                                     Py_ssize_t nt, Py_ssize_t n, float* y, Py_ssize_t ys) noexcept nogil
