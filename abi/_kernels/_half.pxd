# Half-precision (IEEE f16) and bfloat16 conversions as inline C, shared by every kernel
# module that cimports this file (the C is emitted into each, so calls inline).
# f16 -> f32 is exact; f32 -> f16 rounds to nearest even, like numpy's astype(float16).
# The *_soft versions are the portable bit-twiddling fallbacks, always compiled so tests
# can check them on machines that have F16C.
from libc.stdint cimport uint8_t, uint16_t, uint32_t

cdef extern from *:
    """
    #ifndef ABI_HALF_H
    #define ABI_HALF_H
    #include <stdint.h>
    #include <string.h>
    #include <math.h>
    #if defined(__F16C__) || defined(__AVX2__)
    #include <immintrin.h>
    #endif

    static inline uint16_t abi_ld16(const uint8_t* p) { uint16_t v; memcpy(&v, p, 2); return v; }
    static inline uint32_t abi_ld32(const uint8_t* p) { uint32_t v; memcpy(&v, p, 4); return v; }
    static inline float abi_ldf32(const uint8_t* p) { float v; memcpy(&v, p, 4); return v; }
    static inline void abi_st16(uint8_t* p, uint16_t v) { memcpy(p, &v, 2); }
    static inline void abi_stf32(uint8_t* p, float v) { memcpy(p, &v, 4); }

    static inline float abi_f16_to_f32_soft(uint16_t h) {
        uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, bits;
        float out;
        if (e == 0x1f) bits = sign | 0x7f800000u | (m << 13);        /* inf, nan */
        else if (e) bits = sign | ((e + 112u) << 23) | (m << 13);     /* normal: rebias 15 -> 127 */
        else {                                                        /* zero, subnormal: m * 2^-24 */
            out = (float)m * 5.9604644775390625e-08f;
            memcpy(&bits, &out, 4);
            bits |= sign;
        }
        memcpy(&out, &bits, 4);
        return out;
    }

    static inline uint16_t abi_f32_to_f16_soft(float f) {
        uint32_t x, ax, sign;
        memcpy(&x, &f, 4);
        sign = (x >> 16) & 0x8000u;
        ax = x & 0x7fffffffu;
        if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));  /* quiet nan */
        if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  /* >= 65520 (or inf) -> inf */
        if (ax < 0x38800000u) {                                    /* below 2^-14: subnormal or 0 */
            float a;
            memcpy(&a, &ax, 4);
            return (uint16_t)(sign | (uint32_t)rintf(a * 16777216.0f));  /* units of 2^-24, ties even */
        }
        ax += 0xfffu + ((ax >> 13) & 1u);                          /* round the 13 dropped bits, ties even */
        return (uint16_t)(sign | ((ax - (112u << 23)) >> 13));
    }

    #if defined(__F16C__)
    static inline float abi_f16_to_f32(uint16_t h) { return _cvtsh_ss(h); }
    static inline uint16_t abi_f32_to_f16(float f) { return (uint16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT); }
    #else
    #define abi_f16_to_f32 abi_f16_to_f32_soft
    #define abi_f32_to_f16 abi_f32_to_f16_soft
    #endif

    static inline float abi_bf16_to_f32(uint16_t h) {
        uint32_t bits = (uint32_t)h << 16; float out; memcpy(&out, &bits, 4); return out;
    }
    /* round to nearest even; nan stays nan (quiet bit set), as ggml does */
    static inline uint16_t abi_f32_to_bf16(float f) {
        uint32_t x; memcpy(&x, &f, 4);
        if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 64u);
        return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
    }
    #endif
    """
    uint16_t ld16 "abi_ld16"(const uint8_t* p) noexcept nogil
    uint32_t ld32 "abi_ld32"(const uint8_t* p) noexcept nogil
    float ldf32 "abi_ldf32"(const uint8_t* p) noexcept nogil
    void st16 "abi_st16"(uint8_t* p, uint16_t v) noexcept nogil
    void stf32 "abi_stf32"(uint8_t* p, float v) noexcept nogil
    float f16_to_f32 "abi_f16_to_f32"(uint16_t h) noexcept nogil
    uint16_t f32_to_f16 "abi_f32_to_f16"(float f) noexcept nogil
    float f16_to_f32_soft "abi_f16_to_f32_soft"(uint16_t h) noexcept nogil
    uint16_t f32_to_f16_soft "abi_f32_to_f16_soft"(float f) noexcept nogil
    float bf16_to_f32 "abi_bf16_to_f32"(uint16_t h) noexcept nogil
    uint16_t f32_to_bf16 "abi_f32_to_bf16"(float f) noexcept nogil
