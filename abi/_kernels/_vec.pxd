# Small float32 helpers as inline C, emitted into every module that cimports this: an
# OpenMP barrier, a dot product and y += a*x (AVX2 with a portable fallback; four-query
# versions of both for prompt attention), and exact
# (erf) GELU as a loop gcc vectorises.

cdef extern from *:
    """
    #ifndef ABI_VEC_H
    #define ABI_VEC_H

    static inline void abi_barrier(void) {
    #ifdef _OPENMP
        _Pragma("omp barrier")
    #endif
    }
    /* attention's inner loops: a dot product with 8 partial sums, and y += a * x */
    #if defined(__AVX2__) && defined(__FMA__)
    #include <immintrin.h>
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
    /* s[q] = abi_dot(a[q], b, n) for q < 4, bit for bit (the same lanes, sum and tail),
       with the four chains interleaved and b loaded once */
    static inline void abi_dot4(const float* const* a, const float* b, int n, float* s) {
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        int i = 0;
        for (; i + 8 <= n; i += 8) {
            const __m256 vb = _mm256_loadu_ps(b + i);
            for (int q = 0; q < 4; ++q) acc[q] = _mm256_fmadd_ps(_mm256_loadu_ps(a[q] + i), vb, acc[q]);
        }
        for (int q = 0; q < 4; ++q) {
            __m128 t = _mm_add_ps(_mm256_castps256_ps128(acc[q]), _mm256_extractf128_ps(acc[q], 1));
            t = _mm_add_ps(t, _mm_movehl_ps(t, t));
            t = _mm_add_ss(t, _mm_movehdup_ps(t));
            float r = _mm_cvtss_f32(t);
            for (int k = i; k < n; ++k) r += a[q][k] * b[k];
            s[q] = r;
        }
    }
    /* abi_axpy(y[q], w[q][j], x + j * ldx, n) for j = ja .. jb - 1 in order, for q < 4, bit for
       bit, 8 lanes at a time held in registers over all j */
    static inline void abi_axpy4(float* const* y, const float* const* w, const float* x, Py_ssize_t ldx,
                                 int ja, int jb, int n) {
        int i = 0;
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
    static inline void abi_dot4(const float* const* a, const float* b, int n, float* s) {
        for (int q = 0; q < 4; ++q) s[q] = abi_dot(a[q], b, n);
    }
    static inline void abi_axpy4(float* const* y, const float* const* w, const float* x, Py_ssize_t ldx,
                                 int ja, int jb, int n) {
        for (int j = ja; j < jb; ++j)
            for (int q = 0; q < 4; ++q) abi_axpy(y[q], w[q][j], x + (Py_ssize_t)j * ldx, n);
    }
    #endif

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
    float dot "abi_dot" (const float* a, const float* b, int n) noexcept nogil
    void axpy "abi_axpy" (float* y, float a, const float* x, int n) noexcept nogil
    # four queries at once, each bit for bit as dot / axpy (attention over blocks of queries)
    void dot4 "abi_dot4" (const float** a, const float* b, int n, float* s) noexcept nogil
    void axpy4 "abi_axpy4" (float** y, const float** w, const float* x, Py_ssize_t ldx,
                            int ja, int jb, int n) noexcept nogil
    void gelu_erf "abi_gelu_erf" (float* x, Py_ssize_t n) noexcept nogil
