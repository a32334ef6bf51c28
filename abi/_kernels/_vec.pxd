# Small float32 helpers as inline C, emitted into every module that cimports this: an
# OpenMP barrier, a dot product and y += a*x (AVX2 with a portable fallback; four-query
# by four-key dot products and four-query y += a*x for prompt attention), softmax's
# exponentials, and exact (erf) GELU as a loop gcc vectorises.

cdef extern from *:
    """
    #ifndef ABI_VEC_H
    #define ABI_VEC_H
    #include <math.h>
    #include <stdint.h>
    #include <string.h>

    static inline void abi_barrier(void) {
    #ifdef _OPENMP
        _Pragma("omp barrier")
    #endif
    }
    /* the next task of a shared counter (a dynamic schedule inside one parallel region) */
    static inline int abi_claim(int* counter) { return __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED); }
    /* attention's inner loops: a dot product with 8 partial sums, and y += a * x */
    #if defined(__AVX2__) && defined(__FMA__)
    #include <immintrin.h>
    /* a loaded vector kept in a register: gcc would otherwise fold its load into every
       multiply-add that uses it, loading it again each time */
    #define ABI_KEEP(v) __asm__("" : "+v"(v))
    static inline float abi_dot(const float* a, const float* b, int n) {
        __m256 acc = _mm256_setzero_ps();
        int i = 0;
        for (; i + 8 <= n; i += 8)
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        float r = _mm_cvtss_f32(s);
        for (; i < n; ++i) r += a[i] * b[i];
        return r;
    }
    static inline void abi_axpy(float* y, float a, const float* x, int n) {
        __m256 va = _mm256_set1_ps(a);
        int i = 0;
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
        for (; i < n; ++i) y[i] += a * x[i];
    }
    /* s[4 q + k] = abi_dot(a[q], b + k * ldb, n) for q, k < 4, bit for bit: sixteen chains of
       abi_dot's 8 lanes (two to a 512-bit register where there are such), each key row and
       each query loaded once for four of them, reduced four at a time (a 4 x 4 transpose
       puts each chain's lanes (x0, x1, x2, x3) in one column, then (x0 + x2) + (x1 + x3) as
       abi_dot adds them); n a multiple of 8 */
    static inline void abi_dot4x4(const float* const* a, const float* b, Py_ssize_t ldb, int n, float* s) {
        __m128 t[4][4];   /* [q][k]: a chain's low and high 4 lanes added */
    #if defined(__AVX512F__) && defined(__AVX512DQ__)
        __m512 acc[4][2];   /* [q][p]: [chain (q, 2p) | chain (q, 2p + 1)] */
        for (int q = 0; q < 4; ++q) acc[q][0] = acc[q][1] = _mm512_setzero_ps();
        for (int i = 0; i + 8 <= n; i += 8) {
            __m512 vb[2];
            for (int p = 0; p < 2; ++p)
                vb[p] = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(b + 2 * p * ldb + i)),
                                           _mm256_loadu_ps(b + (2 * p + 1) * ldb + i), 1);
            /* one load, used four times (gcc would fold it into each multiply-add) */
            __m512 va[4];
            for (int q = 0; q < 4; ++q) {
                va[q] = _mm512_broadcast_f32x8(_mm256_loadu_ps(a[q] + i));
                ABI_KEEP(va[q]);
            }
            for (int q = 0; q < 4; ++q)
                for (int p = 0; p < 2; ++p) acc[q][p] = _mm512_fmadd_ps(va[q], vb[p], acc[q][p]);
        }
        for (int q = 0; q < 4; ++q)
            for (int p = 0; p < 2; ++p) {
                t[q][2 * p] = _mm_add_ps(_mm512_extractf32x4_ps(acc[q][p], 0), _mm512_extractf32x4_ps(acc[q][p], 1));
                t[q][2 * p + 1] = _mm_add_ps(_mm512_extractf32x4_ps(acc[q][p], 2), _mm512_extractf32x4_ps(acc[q][p], 3));
            }
    #else
        /* two keys a pass: the sixteen chains of four would not fit the 16 registers */
        for (int k0 = 0; k0 < 4; k0 += 2) {
            __m256 acc[4][2];
            for (int q = 0; q < 4; ++q) acc[q][0] = acc[q][1] = _mm256_setzero_ps();
            for (int i = 0; i + 8 <= n; i += 8) {
                __m256 vb[2];
                for (int k = 0; k < 2; ++k) {
                    vb[k] = _mm256_loadu_ps(b + (k0 + k) * ldb + i);
                    ABI_KEEP(vb[k]);
                }
                for (int q = 0; q < 4; ++q) {
                    const __m256 va = _mm256_loadu_ps(a[q] + i);
                    for (int k = 0; k < 2; ++k) acc[q][k] = _mm256_fmadd_ps(va, vb[k], acc[q][k]);
                }
            }
            for (int q = 0; q < 4; ++q)
                for (int k = 0; k < 2; ++k)
                    t[q][k0 + k] = _mm_add_ps(_mm256_castps256_ps128(acc[q][k]), _mm256_extractf128_ps(acc[q][k], 1));
        }
    #endif
        for (int q = 0; q < 4; ++q) {
            _MM_TRANSPOSE4_PS(t[q][0], t[q][1], t[q][2], t[q][3]);
            _mm_storeu_ps(s + 4 * q, _mm_add_ps(_mm_add_ps(t[q][0], t[q][2]), _mm_add_ps(t[q][1], t[q][3])));
        }
    }
    /* abi_axpy(y[q], w[q][j], x + j * ldx, n) for j = ja .. jb - 1 in order, for q < 4, bit for
       bit (each lane its own chain of fused multiply-adds): 64 lanes at a time where there are
       512-bit registers, else 16, then 8, held in registers over all j, each row of x loaded
       once for the four */
    static inline void abi_axpy4_keys(float* const* y, const float* const* w, const float* x, Py_ssize_t ldx,
                                      int ja, int jb, int n) {
        int i = 0;
    #ifdef __AVX512F__
        for (; i + 64 <= n; i += 64) {
            __m512 acc[4][4];
            for (int q = 0; q < 4; ++q) for (int c = 0; c < 4; ++c) acc[q][c] = _mm512_loadu_ps(y[q] + i + 16 * c);
            for (int j = ja; j < jb; ++j) {
                const float* xj = x + (Py_ssize_t)j * ldx + i;
                __m512 v[4];
                for (int c = 0; c < 4; ++c) {
                    v[c] = _mm512_loadu_ps(xj + 16 * c);
                    ABI_KEEP(v[c]);
                }
                for (int q = 0; q < 4; ++q) {
                    const __m512 a = _mm512_set1_ps(w[q][j]);
                    for (int c = 0; c < 4; ++c) acc[q][c] = _mm512_fmadd_ps(a, v[c], acc[q][c]);
                }
            }
            for (int q = 0; q < 4; ++q) for (int c = 0; c < 4; ++c) _mm512_storeu_ps(y[q] + i + 16 * c, acc[q][c]);
        }
    #else
        /* 16 lanes a pass: each pass reads one whole cache line of every value row */
        for (; i + 16 <= n; i += 16) {
            __m256 acc[4][2];
            for (int q = 0; q < 4; ++q) for (int c = 0; c < 2; ++c) acc[q][c] = _mm256_loadu_ps(y[q] + i + 8 * c);
            for (int j = ja; j < jb; ++j) {
                const float* xj = x + (Py_ssize_t)j * ldx + i;
                __m256 v[2];
                for (int c = 0; c < 2; ++c) {
                    v[c] = _mm256_loadu_ps(xj + 8 * c);
                    ABI_KEEP(v[c]);
                }
                for (int q = 0; q < 4; ++q) {
                    const __m256 a = _mm256_broadcast_ss(&w[q][j]);
                    for (int c = 0; c < 2; ++c) acc[q][c] = _mm256_fmadd_ps(a, v[c], acc[q][c]);
                }
            }
            for (int q = 0; q < 4; ++q) for (int c = 0; c < 2; ++c) _mm256_storeu_ps(y[q] + i + 8 * c, acc[q][c]);
        }
    #endif
        for (; i + 8 <= n; i += 8) {
            __m256 acc[4];
            for (int q = 0; q < 4; ++q) acc[q] = _mm256_loadu_ps(y[q] + i);
            for (int j = ja; j < jb; ++j) {
                const __m256 v = _mm256_loadu_ps(x + (Py_ssize_t)j * ldx + i);
                for (int q = 0; q < 4; ++q) acc[q] = _mm256_fmadd_ps(_mm256_set1_ps(w[q][j]), v, acc[q]);
            }
            for (int q = 0; q < 4; ++q) _mm256_storeu_ps(y[q] + i, acc[q]);
        }
        for (int j = ja; j < jb; ++j)
            for (int q = 0; q < 4; ++q)
                for (int k = i; k < n; ++k) y[q][k] += w[q][j] * x[(Py_ssize_t)j * ldx + k];
    }
    /* the same over blocks of keys whose rows (16 KiB) stay in L1 while the passes over the
       lanes read them again (each lane's chain goes on from block to block in its output) */
    static inline void abi_axpy4(float* const* y, const float* const* w, const float* x, Py_ssize_t ldx,
                                 int ja, int jb, int n) {
        const int kb = n >= 512 ? 8 : 4096 / n;
        for (int a = ja; a < jb; a += kb) abi_axpy4_keys(y, w, x, ldx, a, a + kb < jb ? a + kb : jb, n);
    }
    #else
    static inline float abi_dot(const float* a, const float* b, int n) {
        float p[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int i = 0;
        for (; i + 8 <= n; i += 8)
            for (int j = 0; j < 8; ++j) p[j] += a[i + j] * b[i + j];
        float r = ((p[0] + p[4]) + (p[2] + p[6])) + ((p[1] + p[5]) + (p[3] + p[7]));
        for (; i < n; ++i) r += a[i] * b[i];
        return r;
    }
    static inline void abi_axpy(float* y, float a, const float* x, int n) {
        for (int i = 0; i < n; ++i) y[i] += a * x[i];
    }
    static inline void abi_dot4x4(const float* const* a, const float* b, Py_ssize_t ldb, int n, float* s) {
        for (int q = 0; q < 4; ++q) for (int k = 0; k < 4; ++k) s[4 * q + k] = abi_dot(a[q], b + k * ldb, n);
    }
    static inline void abi_axpy4(float* const* y, const float* const* w, const float* x, Py_ssize_t ldx,
                                 int ja, int jb, int n) {
        for (int j = ja; j < jb; ++j)
            for (int q = 0; q < 4; ++q) abi_axpy(y[q], w[q][j], x + (Py_ssize_t)j * ldx, n);
    }
    #endif

    /* Softmax's exponentials: s[j] = e^(s[j] - m) for j < n, returning their sum (16 partial
       sums, then a fixed tree). One function for prompt and decode attention, so both get
       the same bits; 16 lanes where there are 512-bit registers, 8 with AVX2 (a libm expf
       per key took a tenth of a long prompt's attention), each lane the scalar steps. e^x: n = round(x / ln 2), r = x - n ln 2 in
       two steps (Cephes' split), e^r by its Taylor series to r^7 (|r| <= ln 2 / 2: truncation
       5e-9), times 2^n; within 2 ulp of e^x for -87 <= x <= 0 (below, where e^x < 2^-125,
       0; a NaN stays NaN). */
    static inline float abi_exp1(float x) {
        const float n = nearbyintf(x * 1.44269504088896341f);
        float r = fmaf(-n, 0.693359375f, x);
        r = fmaf(-n, -2.12194440e-4f, r);
        float p = 1.0f / 5040;
        p = fmaf(p, r, 1.0f / 720);
        p = fmaf(p, r, 1.0f / 120);
        p = fmaf(p, r, 1.0f / 24);
        p = fmaf(p, r, 1.0f / 6);
        p = fmaf(p, r, 0.5f);
        p = fmaf(p, r, 1.0f);
        p = fmaf(p, r, 1.0f);
        if (x < -87.0f) return 0.0f;
        uint32_t b = (uint32_t)((int)n + 127) << 23;
        float two_n;
        memcpy(&two_n, &b, 4);
        return p * two_n;
    }
    #if defined(__AVX2__) && defined(__FMA__)
    #include <immintrin.h>
    static inline __m256 abi_exp8(__m256 x) {
        const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
        r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
        __m256 p = _mm256_set1_ps(1.0f / 5040);
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
        const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
        /* x < -87 (not NaN): 0 */
        return _mm256_and_ps(_mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_NLT_UQ), _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
    }
    #endif
    #if defined(__AVX512F__)
    static inline __m512 abi_exp16(__m512 x) {
        const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
        r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
        __m512 p = _mm512_set1_ps(1.0f / 5040);
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
        const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
        /* x < -87 (not NaN): 0 */
        return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_NLT_UQ),
                                   _mm512_mul_ps(p, _mm512_castsi512_ps(e)));
    }
    static inline float abi_softmax_exp(float* s, int n, float m) {
        const __m512 vm = _mm512_set1_ps(m);
        __m512 acc = _mm512_setzero_ps();
        int j = 0;
        for (; j + 16 <= n; j += 16) {
            const __m512 e = abi_exp16(_mm512_sub_ps(_mm512_loadu_ps(s + j), vm));
            _mm512_storeu_ps(s + j, e);
            acc = _mm512_add_ps(acc, e);
        }
        if (j < n) {
            const __mmask16 k = (__mmask16)((1u << (n - j)) - 1);
            const __m512 e = _mm512_maskz_mov_ps(k, abi_exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, s + j), vm)));
            _mm512_mask_storeu_ps(s + j, k, e);
            acc = _mm512_add_ps(acc, e);
        }
        float part[16];
        _mm512_storeu_ps(part, acc);
    #elif defined(__AVX2__) && defined(__FMA__)
    /* the same steps 8 lanes at a time (abi_exp8, above), and the 16 partial sums as two registers */
    static inline float abi_softmax_exp(float* s, int n, float m) {
        const __m256 vm = _mm256_set1_ps(m);
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();   /* part[0..7], part[8..15] */
        int j = 0;
        for (; j + 16 <= n; j += 16) {
            const __m256 e0 = abi_exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), vm));
            const __m256 e1 = abi_exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j + 8), vm));
            _mm256_storeu_ps(s + j, e0);
            _mm256_storeu_ps(s + j + 8, e1);
            acc0 = _mm256_add_ps(acc0, e0);
            acc1 = _mm256_add_ps(acc1, e1);
        }
        float part[16], tail[16] = {0};
        _mm256_storeu_ps(part, acc0);
        _mm256_storeu_ps(part + 8, acc1);
        if (j < n) {   /* the last, partial 16: lanes past n add nothing */
            memcpy(tail, s + j, (size_t)(n - j) * 4);
            for (int h = 0; h < 2; ++h) {
                const __m256 e = abi_exp8(_mm256_sub_ps(_mm256_loadu_ps(tail + 8 * h), vm));
                _mm256_storeu_ps(tail + 8 * h, e);
            }
            memcpy(s + j, tail, (size_t)(n - j) * 4);
            for (int i = 0; i < n - j; ++i) part[i] += tail[i];
        }
    #else
    static inline float abi_softmax_exp(float* s, int n, float m) {
        float part[16] = {0};
        for (int j = 0; j < n; ++j) {
            s[j] = abi_exp1(s[j] - m);
            part[j % 16] += s[j];
        }
    #endif
        float a8[8], a4[4];
        for (int i = 0; i < 8; ++i) a8[i] = part[i] + part[i + 8];
        for (int i = 0; i < 4; ++i) a4[i] = a8[i] + a8[i + 4];
        return (a4[0] + a4[2]) + (a4[1] + a4[3]);
    }

    /* g[i] = silu(g[i]) u[i] = g / (1 + e^-g) u for i < n (llama.cpp's form: measured closer
       to it than g sigmoid(g) from e^-|g|), e^-g by the exponential above, +inf past 88;
       8 lanes at a time and a last partial 8 through a padded copy, so every element takes
       the same steps wherever it sits (a thread's share, a batch); one scalar twin without
       AVX2. A libm expf an element was 5-8 % of a SwiGLU model's prompt. */
    #if defined(__AVX2__) && defined(__FMA__)
    static inline __m256 abi_silu8(__m256 g, __m256 u) {
        /* e^-g, +inf past 88 (where 2^n would leave the exponent's range) */
        const __m256 x = _mm256_sub_ps(_mm256_setzero_ps(), g);
        const __m256 big = _mm256_cmp_ps(x, _mm256_set1_ps(88.0f), _CMP_GT_OQ);
        const __m256 e = _mm256_blendv_ps(abi_exp8(_mm256_min_ps(x, _mm256_set1_ps(88.0f))), _mm256_set1_ps(INFINITY), big);
        return _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), u);
    }
    static inline void abi_silu_mul(float* g, const float* u, Py_ssize_t n) {
        Py_ssize_t i = 0;
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(g + i, abi_silu8(_mm256_loadu_ps(g + i), _mm256_loadu_ps(u + i)));
        if (i < n) {
            float gt[8] = {0}, ut[8] = {0};
            memcpy(gt, g + i, (size_t)(n - i) * 4);
            memcpy(ut, u + i, (size_t)(n - i) * 4);
            _mm256_storeu_ps(gt, abi_silu8(_mm256_loadu_ps(gt), _mm256_loadu_ps(ut)));
            memcpy(g + i, gt, (size_t)(n - i) * 4);
        }
    }
    #else
    static inline void abi_silu_mul(float* g, const float* u, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; ++i) {
            const float x = -g[i];
            const float e = x > 88.0f ? INFINITY : abi_exp1(fminf(x, 88.0f));
            g[i] = g[i] / (1.0f + e) * u[i];
        }
    }
    #endif

    /* rows of four scores (query i: d[4 i .. 4 i + 3], for four consecutive keys) times
       scale, stored at s + i * ld, and each row's running maxima in mx[4 i .. 4 i + 3]
       (four lanes a row; a NaN score leaves them, as the scalar comparison does) */
    #if defined(__SSE2__)
    #include <immintrin.h>
    #endif
    static inline void abi_scores4(const float* d, int n, float scale, float* s, Py_ssize_t ld, float* mx) {
    #if defined(__SSE2__)
        const __m128 sc = _mm_set1_ps(scale);
        for (int i = 0; i < n; ++i) {
            const __m128 v = _mm_mul_ps(_mm_loadu_ps(d + 4 * i), sc);
            _mm_storeu_ps(s + i * ld, v);
            _mm_storeu_ps(mx + 4 * i, _mm_max_ps(v, _mm_loadu_ps(mx + 4 * i)));
        }
    #else
        for (int i = 0; i < n; ++i)
            for (int k = 0; k < 4; ++k) {
                const float v = d[4 * i + k] * scale;
                s[i * ld + k] = v;
                if (v > mx[4 * i + k]) mx[4 * i + k] = v;
            }
    #endif
    }

    /* g[i] = GELU(g[i]) * u[i] as _decode's _gelu takes it (the table by f16 bits, rounded to
       nearest even; 0 at or below -10, g at or above 10), 8 at a time with AVX2 and F16C;
       returns how many it did (a multiple of 8): the caller does the rest */
    static inline Py_ssize_t abi_gelu_mul8(const float* table, float* g, const float* u, Py_ssize_t n) {
        Py_ssize_t i = 0;
    #if defined(__AVX2__) && defined(__F16C__)
        for (; i + 8 <= n; i += 8) {
            const __m256 x = _mm256_loadu_ps(g + i);
            const __m256i h = _mm256_cvtepu16_epi32(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
            __m256 v = _mm256_i32gather_ps(table, h, 4);
            v = _mm256_blendv_ps(v, x, _mm256_cmp_ps(x, _mm256_set1_ps(10.0f), _CMP_GE_OQ));
            v = _mm256_andnot_ps(_mm256_cmp_ps(x, _mm256_set1_ps(-10.0f), _CMP_LE_OQ), v);
            _mm256_storeu_ps(g + i, _mm256_mul_ps(v, _mm256_loadu_ps(u + i)));
        }
    #endif
        return i;
    }

    /* GELU with erf (Hugging Face's "gelu"): x * (1 + erf(x / sqrt 2)) / 2, erf from a
       float32 rational approximation on [-4, 4] (max error 5e-7), clamped outside it. */
    static void abi_gelu_erf(float* x, Py_ssize_t n) {
        const float p0 = -2.72614225801306e-10f, p1 = 2.77068142495902e-08f,
                    p2 = -2.10102402082508e-06f, p3 = -5.69250639462346e-05f,
                    p4 = -7.34990630326855e-04f, p5 = -2.95459980854025e-03f,
                    p6 = -1.60960333262415e-02f;
        const float q0 = -1.45660718464996e-05f, q1 = -2.13374055278905e-04f,
                    q2 = -1.68282697438203e-03f, q3 = -7.37332916720468e-03f,
                    q4 = -1.42647390514189e-02f;
        for (Py_ssize_t i = 0; i < n; ++i) {
            float v = x[i];
            float z = v * 0.70710678118654752f;
            z = z < -4.0f ? -4.0f : (z > 4.0f ? 4.0f : z);
            float z2 = z * z;
            float p = ((((((p0 * z2 + p1) * z2 + p2) * z2 + p3) * z2 + p4) * z2 + p5) * z2 + p6);
            float q = ((((q0 * z2 + q1) * z2 + q2) * z2 + q3) * z2 + q4);
            x[i] = 0.5f * v * (1.0f + z * p / q);
        }
    }
    #endif
    """
    void barrier "abi_barrier" () noexcept nogil
    int claim "abi_claim" (int* counter) noexcept nogil
    float dot "abi_dot" (const float* a, const float* b, int n) noexcept nogil
    void axpy "abi_axpy" (float* y, float a, const float* x, int n) noexcept nogil
    float softmax_exp "abi_softmax_exp" (float* s, int n, float m) noexcept nogil
    # four queries at once, each bit for bit as dot / axpy (attention over blocks of queries)
    void dot4x4 "abi_dot4x4" (const float** a, const float* b, Py_ssize_t ldb, int n, float* s) noexcept nogil
    void axpy4 "abi_axpy4" (float** y, const float** w, const float* x, Py_ssize_t ldx,
                            int ja, int jb, int n) noexcept nogil
    void gelu_erf "abi_gelu_erf" (float* x, Py_ssize_t n) noexcept nogil
    Py_ssize_t gelu_mul8 "abi_gelu_mul8" (const float* table, float* g, const float* u, Py_ssize_t n) noexcept nogil
    void silu_mul "abi_silu_mul" (float* g, const float* u, Py_ssize_t n) noexcept nogil
    void scores4 "abi_scores4" (const float* d, int n, float scale, float* s, Py_ssize_t ld, float* mx) noexcept nogil
