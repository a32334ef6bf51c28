# GGML tensor type ids and block geometry, as in abi.gguf.constants.GGMLType, for nogil code.
cdef enum:
    T_F32 = 0
    T_F16 = 1
    T_Q4_0 = 2
    T_Q4_1 = 3
    T_Q5_0 = 6
    T_Q5_1 = 7
    T_Q8_0 = 8
    T_Q8_1 = 9
    T_Q2_K = 10
    T_Q3_K = 11
    T_Q4_K = 12
    T_Q5_K = 13
    T_Q6_K = 14
    T_Q8_K = 15
    T_IQ2_XXS = 16
    T_IQ2_XS = 17
    T_IQ3_XXS = 18
    T_IQ1_S = 19
    T_IQ4_NL = 20
    T_IQ3_S = 21
    T_IQ2_S = 22
    T_IQ4_XS = 23
    T_IQ1_M = 29
    T_BF16 = 30
    T_TQ1_0 = 34
    T_TQ2_0 = 35
    T_MXFP4 = 39


# Elements per block (1 for the float types).
cdef inline Py_ssize_t block_size_of(int t) noexcept nogil:
    if t == T_F32 or t == T_F16 or t == T_BF16:
        return 1
    if (t == T_Q2_K or t == T_Q3_K or t == T_Q4_K or t == T_Q5_K or t == T_Q6_K or t == T_Q8_K
            or t == T_IQ4_XS or t == T_IQ2_XXS or t == T_IQ2_XS or t == T_IQ2_S or t == T_IQ3_XXS
            or t == T_IQ3_S or t == T_IQ1_S or t == T_IQ1_M or t == T_TQ1_0 or t == T_TQ2_0):
        return 256
    return 32

# Bytes per block; 0 for a type the kernels do not know.
cdef inline Py_ssize_t type_size_of(int t) noexcept nogil:
    if t == T_F32: return 4
    if t == T_F16 or t == T_BF16: return 2
    if t == T_Q4_0 or t == T_IQ4_NL: return 18
    if t == T_Q4_1: return 20
    if t == T_Q5_0: return 22
    if t == T_Q5_1: return 24
    if t == T_Q8_0: return 34
    if t == T_Q8_1: return 36
    if t == T_Q2_K: return 84
    if t == T_Q3_K: return 110
    if t == T_Q4_K: return 144
    if t == T_Q5_K: return 176
    if t == T_Q6_K: return 210
    if t == T_Q8_K: return 292
    if t == T_IQ4_XS: return 136
    if t == T_IQ2_XXS or t == T_TQ2_0: return 66
    if t == T_IQ2_XS: return 74
    if t == T_IQ2_S: return 82
    if t == T_IQ3_XXS: return 98
    if t == T_IQ3_S: return 110
    if t == T_IQ1_S: return 50
    if t == T_IQ1_M: return 56
    if t == T_TQ1_0: return 54
    if t == T_MXFP4: return 17
    return 0
