# Prompt (T > 1) products of float weights (F32, F16, BF16) with float activations over
# tiles of R weight rows x N tokens, as inline C: each 16-weight vector is loaded (and
# converted from F16 / BF16) once per tile and each 16-float activation vector once per
# tile, where the T = 1 kernels (abi_dot_f32 / _f16 / _bf16 in _qdot.pxd) redo both for
# every (row, token) pair.
#
# Bit for bit the T = 1 result: the T = 1 kernels keep 8-lane float accumulators over
# chunks of 32 elements (F32, F16: s0..s3, a lane each 8 elements apart) or 16 (BF16: s0,
# s1), each lane a chain of fused multiply-adds in element order. Here s0 and s1 share one
# 16-lane register, [s0 | s1] (and [s2 | s3] a second), which one 16-element load fills
# lane for lane; the reduction is the T = 1 one, (s0 + s1) + (s2 + s3) then abi_hsum8, and
# the elements past the last whole chunk are the same scalar loop. Only AVX-512 F is
# needed (no integer products), so these tiles have their own guard, ABI_FTILE.
#
#   abi_ftile_<w>(w, rb, nr, x, xs, nt, n, y, ys): y[t * ys + r] = row r . token t for
#   r < nr (rows rb bytes apart from w), t < nt (float32 activation rows xs bytes apart
#   from x), n elements per row. Present where ABI_FTILE is 1.
from libc.stdint cimport uint8_t

from abi._kernels._qdot cimport QDOT_SIMD   # its C (abi_hsum8, the T = 1 kernels) first

cdef extern from *:
    """
    #ifndef ABI_FTILE_H
    #define ABI_FTILE_H
    #if ABI_QDOT_SIMD && defined(__AVX512F__)
    #define ABI_FTILE 1
    #define ABI_FTILE_R 4     /* rows per tile, at most */
    #define ABI_FTILE_N 6     /* tokens per tile, at most */
    #define ABI_FAINL static inline __attribute__((always_inline))
    #define ABI_FUNROLL _Pragma("GCC unroll 16")
    enum { ABI_FK_F32, ABI_FK_F16, ABI_FK_BF16 };
    /* a loaded vector kept in a register: gcc would otherwise load it again for every
       multiply-add that uses it, two loads per multiply-add (as _vec.pxd's ABI_KEEP) */
    #ifndef ABI_KEEP
    #define ABI_KEEP(v) __asm__("" : "+v"(v))
    #endif

    /* 16 weights from p as float32 */
    ABI_FAINL __m512 abi_fw16(const uint8_t* p, const int K) {
        if (K == ABI_FK_F32) return _mm512_loadu_ps((const float*)p);
        const __m256i h = _mm256_loadu_si256((const __m256i*)p);
        if (K == ABI_FK_F16) return _mm512_cvtph_ps(h);
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    /* weight i of row w as float32, as the T = 1 kernels' tails read it */
    ABI_FAINL float abi_fw1(const uint8_t* w, Py_ssize_t i, const int K) {
        if (K == ABI_FK_F32) return abi_ldf32(w + 4 * i);
        if (K == ABI_FK_F16) return abi_f16_to_f32(abi_ld16(w + 2 * i));
        return abi_bf16_to_f32(abi_ld16(w + 2 * i));
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
    #define ABI_FTILE_STUB(name) static void abi_ftile_##name(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, \
        const uint8_t* x, Py_ssize_t xs, Py_ssize_t nt, Py_ssize_t n, float* y, Py_ssize_t ys) {}
    ABI_FTILE_STUB(f32)
    ABI_FTILE_STUB(f16)
    ABI_FTILE_STUB(bf16)
    #endif
    #endif /* ABI_FTILE_H */
    """
    bint FTILE "ABI_FTILE"
    void ftile_f32 "abi_ftile_f32"(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs,
                                   Py_ssize_t nt, Py_ssize_t n, float* y, Py_ssize_t ys) noexcept nogil
    void ftile_f16 "abi_ftile_f16"(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs,
                                   Py_ssize_t nt, Py_ssize_t n, float* y, Py_ssize_t ys) noexcept nogil
    void ftile_bf16 "abi_ftile_bf16"(const uint8_t* w, Py_ssize_t rb, Py_ssize_t nr, const uint8_t* x, Py_ssize_t xs,
                                     Py_ssize_t nt, Py_ssize_t n, float* y, Py_ssize_t ys) noexcept nogil
