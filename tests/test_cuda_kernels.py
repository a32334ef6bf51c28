"""GPU kernels against the CPU runtime, on small shapes.

Without a GPU (CI) they run in numba's CUDA simulator, which this module switches on
before numba.cuda is imported; ``pytest --backend cuda`` runs them on the device.
Tolerances (measured in the simulator in brackets):
- dequantisation: bit-exact in the simulator; on a GPU within 1 ulp (FMA contraction);
- gemv / gemm: |y - W @ x| <= 2e-5 * (|W| @ |x|) per output, float32 accumulation in a
  different order than the float64 reference [<= 2e-6 relative to max |y|];
- norms, RoPE, GLU: 1e-5 relative; attention: 2e-5 of max |out| against
  ``layers.attention`` on the same f16-rounded keys and values [~1e-7].
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

BACKEND = os.environ.get("ABI_TEST_BACKEND", "cpu")
if BACKEND != "cuda":
    if "numba.cuda" in sys.modules and not sys.modules["numba.core.config"].ENABLE_CUDASIM:
        pytest.skip("numba.cuda was imported without the simulator before this module",
                    allow_module_level=True)
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    if "numba.core.config" in sys.modules:
        sys.modules["numba.core.config"].reload_config()
    import numba.cuda  # noqa: E402,F401  (now the simulator, for this whole process)

    del os.environ["NUMBA_ENABLE_CUDASIM"]  # but not for the subprocesses other tests start

from numba import cuda  # noqa: E402

from abi import _kernels  # noqa: E402
from abi._kernels.cuda import attention as A, layout, matmul as M, ops as O, sampling as S  # noqa: E402
from abi._kernels.cuda import device as dev, sampling_ref as R  # noqa: E402
from abi.gguf import GGMLType as T  # noqa: E402
from abi.llm import layers, sampling as host_sampling  # noqa: E402
from kernel_blocks import F16_FIELDS, IQ1_M_SCALE_BYTES, random_blocks  # noqa: E402

SIM = dev.SIM
TERNARY = (T.TQ1_0, T.TQ2_0, T.MXFP4)
LATTICE = (T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ3_XXS, T.IQ3_S, T.IQ1_S, T.IQ1_M)
NATIVE = (T.F32, T.F16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.IQ4_NL,
          T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.IQ4_XS) + TERNARY + LATTICE
# the types added last run smaller products (a few rows, 2 super-blocks): the file's time
LATER = (T.IQ4_NL, T.Q2_K, T.Q3_K, T.IQ4_XS)
# ... and the latest one super-block a row (their decoders have no per-super-block state
# beyond the block index, which the 2-block dequant_rows and pack tests cover)
LATEST = TERNARY + LATTICE


@pytest.fixture(autouse=True, scope="module")
def _fast_simulator():
    """The simulator's block manager polls its threads; a short switch interval lets the
    simulated threads through sooner (3-4x faster on 2 cores)."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(5e-4)
    yield
    sys.setswitchinterval(old)


def _weights(t, rows, cols, rng, random_bits=False):
    """(raw bytes, float32 reference values) of a rows x cols matrix stored as t."""
    if random_bits:
        raw = random_blocks(t, rows * cols // t.block_size, rng).reshape(-1)
    else:
        x = rng.standard_normal((rows, cols)).astype(np.float32)
        if t == T.F32:
            raw = x.view(np.uint8).reshape(-1)
        elif t == T.F16:
            raw = x.astype(np.float16).view(np.uint8).reshape(-1)
        elif t not in _kernels.QUANTIZE_TYPES:  # no quantiser in abi: random blocks, tame scales
            raw = random_blocks(t, rows * cols // t.block_size, rng)
            if t == T.MXFP4:
                raw[:, 0] = 121                       # E8M0 exponent: values up to 2^-7 * 12
            elif t == T.IQ1_M:                        # d = 0.01 in the top nibbles of the scale words
                d = int(np.array([0.01], np.float16).view(np.uint16)[0])
                for k, off in enumerate(IQ1_M_SCALE_BYTES):
                    raw[:, off] = (raw[:, off] & 15) | (((d >> 4 * k) & 15) << 4)
            for off, val in zip(F16_FIELDS.get(t, ()), (0.01, 0.002)):  # d (, dmin)
                raw[:, off:off + 2] = np.array([val], np.float16).view(np.uint8)
            raw = raw.reshape(-1)
        else:
            raw = _kernels.quantize(x, t).reshape(-1)
    return raw, _kernels.dequantize_reference(raw, t, (rows, cols))


def _dev(pw):
    """(the type's kernels, the planes on the device)."""
    return M.typed(pw.ggml_type), [cuda.to_device(np.ascontiguousarray(a)) for a in (pw.qs, pw.aux, pw.dm, pw.fw)]


# --- layout (numpy) ---------------------------------------------------------------------------

@pytest.mark.parametrize("t", NATIVE + (T.BF16,), ids=lambda t: t.name)
def test_pack_is_lossless_for_every_bit_pattern(t):
    rng = np.random.default_rng(int(t))
    rows = 3
    # 2 and 3 super-blocks a row (IQ4_XS pads an odd count; MXFP4 25 blocks: 3 pad bytes)
    for cols in (512, 800 if t == T.MXFP4 else 768):
        raw = random_blocks(t, rows * cols // t.block_size, rng).reshape(-1)
        ref = _kernels.dequantize_reference(raw, t, (rows, cols))
        packed = layout.pack(raw, t, (rows, cols))
        with np.errstate(over="ignore"):  # MXFP4's largest exponents overflow to inf, as the reference
            np.testing.assert_array_equal(layout.decode_units_numpy(packed), ref)
        if t != T.BF16:  # the same bits, regrouped
            pad = {T.IQ4_XS: 2 * rows * (cols == 768), T.MXFP4: 3 * rows * (cols == 800),
                   T.IQ1_M: 2 * rows * cols // 256}.get(t, 0)   # IQ1_M: d gathered into dm
            assert packed.nbytes == raw.size + pad


def test_pack_widens_types_without_a_kernel(caplog):
    rng = np.random.default_rng(0)
    assert T.Q8_K not in layout.NATIVE and T.Q8_K in _kernels.DEQUANTIZE_TYPES
    raw = random_blocks(T.Q8_K, 4, rng)
    raw[:, 0:4] = np.array([0.01], np.float32).view(np.uint8)  # d: no f16 overflow in the widening
    raw = raw.reshape(-1)
    ref = _kernels.dequantize_reference(raw, T.Q8_K, (2, 512))
    with caplog.at_level("WARNING"):
        packed = layout.pack(raw, T.Q8_K, (2, 512))
    assert packed.ggml_type == T.F16 and packed.source_type == T.Q8_K and "Q8_K" in caplog.text
    np.testing.assert_array_equal(layout.decode_units_numpy(packed), ref.astype(np.float16).astype(np.float32))


def test_unit_columns_cover_each_row_once():
    assert set(NATIVE) == set(layout.NATIVE)
    for t in NATIVE:
        units = np.arange(512 // 8)
        c0, c1 = layout.unit_columns(t, units)
        cols = np.concatenate([c0[:, None] + np.arange(4), c1[:, None] + np.arange(4)], axis=1).ravel()
        assert sorted(cols.tolist()) == list(range(512)), t.name


# --- quantised products ------------------------------------------------------------------------

@pytest.mark.parametrize("t", NATIVE, ids=lambda t: t.name)
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # MXFP4's inf, as the reference
def test_dequant_rows_matches_reference_bits(t):
    rng = np.random.default_rng(1)
    rows, cols = 5, 512
    raw, ref = _weights(t, rows, cols, rng, random_bits=True)
    pw = layout.pack(raw, t, (rows, cols))
    pick = np.array([4, 0, 2], np.int32)
    out = cuda.to_device(np.zeros((3, cols), np.float32))
    k, planes = _dev(pw)
    k.dequant_rows[3, dev.NORM_THREADS](*planes, pw.units, cuda.to_device(pick), 3, np.float32(1.0), out)
    got = out.copy_to_host()
    if SIM:
        np.testing.assert_array_equal(got, ref[pick])
    else:  # FMA contraction: one rounding instead of two (absolute where d*q and m cancel)
        np.testing.assert_allclose(got, ref[pick], rtol=2.0 ** -22, atol=2.0 ** -22 * np.abs(ref).max())


def _gelu_f32(x):
    """GELU's tanh form in float32, as the device computes it (``layers.gelu_tanh`` reads
    llama.cpp's CPU f16 table instead: up to 2^-11 apart, within the forward's tolerance)."""
    c = np.float32(np.sqrt(2.0 / np.pi))
    return np.float32(0.5) * x * (np.float32(1.0) + np.tanh(c * (x + np.float32(0.044715) * x * x * x)))


_NO_SEL = cuda.to_device(np.zeros(1, np.int32))  # gemv's expert selection, unused (rstride 0)


def _bound(w, x):
    return 2e-5 * (np.abs(w).astype(np.float64) @ np.abs(x).astype(np.float64).T).T + 1e-30


@pytest.mark.parametrize("t", NATIVE, ids=lambda t: t.name)
def test_gemv_matches_dequantised_product(t):
    rng = np.random.default_rng(2)
    rows, cols = (9 if t in LATER + LATEST else 37), (256 if t in LATEST else 512)
    raw, w = _weights(t, rows, cols, rng)
    pw = layout.pack(raw, t, (rows, cols))
    x = rng.standard_normal((3, cols)).astype(np.float32)
    bias = rng.standard_normal(rows).astype(np.float32)
    y = cuda.to_device(np.full((2, rows + 5), 7.0, np.float32))
    grid, tpr, nrows = M.gemv_shape(rows, pw.units, n_sm=2)
    k, planes = _dev(pw)
    k.gemv[grid, M.GEMV_THREADS](*planes, rows, pw.units, cuda.to_device(x), 2, y, 1, 5,
                                cuda.to_device(bias), 1, M.MODE_PLAIN, tpr, nrows, np.float32(0.0), _NO_SEL, 0, 1)
    got = y.copy_to_host()
    want = w.astype(np.float64) @ x[2].astype(np.float64) + bias
    assert np.all(np.abs(got[1, 5:] - want) <= _bound(w, x[2:3])[0] + 1e-6 * np.abs(bias))
    assert np.all(got[0] == 7.0) and np.all(got[1, :5] == 7.0)  # nothing outside its slot


def _glu_ref(mode, g, u):
    return {M.MODE_SWIGLU: lambda: layers.silu(g) * u, M.MODE_GEGLU: lambda: _gelu_f32(g) * u,
            M.MODE_SWIGLU_OAI: lambda: layers.swiglu_oai(g, u)}[mode]()


@pytest.mark.parametrize("mode", [M.MODE_SWIGLU, M.MODE_GEGLU, M.MODE_SWIGLU_OAI])
def test_gemv_fuses_gated_units_and_softcap(mode):
    rng = np.random.default_rng(3)
    n_ff, cols = 40, 64
    raw, w = _weights(T.Q8_0, 2 * n_ff, cols, rng)
    pw = layout.pack(raw, T.Q8_0, (2 * n_ff, cols))
    # wide enough that gpt-oss's clamps at +-7 bite on some rows
    x = 3 * rng.standard_normal((1, cols)).astype(np.float32)
    y = cuda.to_device(np.zeros((1, n_ff), np.float32))
    grid, tpr, nrows = M.gemv_shape(n_ff, pw.units, n_sm=1)
    cap = np.float32(0.5)
    k, planes = _dev(pw)
    k.gemv[grid, M.GEMV_THREADS](*planes, n_ff, pw.units, cuda.to_device(x), 0, y, 0, 0,
                                cuda.to_device(np.zeros(1, np.float32)), 0, mode, tpr, nrows, cap, _NO_SEL, 0, 1)
    gu = (w @ x[0]).astype(np.float32)
    if mode == M.MODE_SWIGLU_OAI:
        assert (gu[:n_ff] > 7).any() and (np.abs(gu[n_ff:]) > 7).any()
    want = layers.softcap(_glu_ref(mode, gu[:n_ff], gu[n_ff:]), float(cap))
    np.testing.assert_allclose(y.copy_to_host()[0], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", [M.MODE_PLAIN, M.MODE_SWIGLU, M.MODE_SWIGLU_OAI])
def test_gemv_reads_the_selected_experts_rows(mode):
    """Expert products: pair p reads expert sel[p]'s rows of a stack (gate rows then up rows
    per expert where gated, with the up rows' bias), x row p // xdiv, and writes y row p."""
    rng = np.random.default_rng(13)
    n_exp, k, n_tok, n_out, cols = 3, 2, 2, 8, 64
    rows = n_out * (2 if mode else 1)           # one expert's rows
    raw, w = _weights(T.Q8_0, n_exp * rows, cols, rng)
    pw = layout.pack(raw, T.Q8_0, (n_exp * rows, cols))
    bias = rng.standard_normal(n_exp * rows).astype(np.float32)
    x = rng.standard_normal((n_tok, cols)).astype(np.float32)
    sel = np.array([2, 0, 1, 2], np.int32)      # token 0: experts 2, 0; token 1: 1, 2
    y = cuda.to_device(np.zeros((n_tok * k, n_out), np.float32))
    grid, tpr, nrows = M.gemv_shape(n_out, pw.units, n_sm=1)
    kern, planes = _dev(pw)
    kern.gemv[(grid, n_tok * k), M.GEMV_THREADS](*planes, n_out, pw.units, cuda.to_device(x), 0, y, 0, 0,
                                                cuda.to_device(bias), 1, mode, tpr, nrows, np.float32(0.0),
                                                cuda.to_device(sel), rows, k)
    got = y.copy_to_host()
    for p, e in enumerate(sel):
        out = w[e * rows:(e + 1) * rows] @ x[p // k] + bias[e * rows:(e + 1) * rows]
        want = _glu_ref(mode, out[:n_out], out[n_out:]) if mode else out
        np.testing.assert_allclose(got[p], want, rtol=1e-5, atol=1e-5)


def test_grouped_expert_gemm_reads_each_experts_pairs():
    """Prompt batches: ``moe_group`` lists the (token, expert) pairs by expert; the tiled
    product then runs per expert (block z) over its pairs: expert e's rows of the stack (and
    of its bias), x row p // xdiv, y row p -- as the per-pair gemv, within float32 rounding.
    An expert nobody chose (1) is skipped; more pairs than one tile of tokens (GEMM_TN)."""
    rng = np.random.default_rng(15)
    n_exp, k, rows, cols = 4, 2, 20, 64
    n_tok = dev.GEMM_TN + 3
    raw, w = _weights(T.Q8_0, n_exp * rows, cols, rng)
    pw = layout.pack(raw, T.Q8_0, (n_exp * rows, cols))
    bias = rng.standard_normal(n_exp * rows).astype(np.float32)
    x = rng.standard_normal((n_tok, cols)).astype(np.float32)
    sel = np.stack([rng.choice([0, 2, 3], 2, replace=False) for _ in range(n_tok)]).astype(np.int32).ravel()
    sel[1::2] = np.where(sel[::2] == 3, 0, 3)   # expert 3 in every token but those that start with it
    pairs = n_tok * k
    perm, offsets = cuda.to_device(np.zeros(pairs, np.int32)), cuda.to_device(np.zeros(n_exp + 1, np.int32))
    O.moe_group[1, dev.NORM_THREADS](cuda.to_device(sel), pairs, n_exp, offsets, perm)
    got_perm, got_off = perm.copy_to_host(), offsets.copy_to_host()
    want = [p for e in range(n_exp) for p in range(pairs) if sel[p] == e]
    np.testing.assert_array_equal(got_perm, want)
    np.testing.assert_array_equal(got_off, np.concatenate([[0], np.cumsum(np.bincount(sel, minlength=n_exp))]))
    y = cuda.to_device(np.full((pairs, rows + 2), 7.0, np.float32))
    kern, planes = _dev(pw)
    grid = (-(-rows // dev.GEMM_TM), -(-n_tok // dev.GEMM_TN), n_exp)
    kern.gemm[grid, (dev.GEMM_TX, dev.GEMM_TY)](*planes, rows, cols, cuda.to_device(x), 0, y, 2,
                                                cuda.to_device(bias), 1, np.float32(0.0), perm, offsets, rows, k)
    got = y.copy_to_host()
    for p, e in enumerate(sel):
        want_row = w[e * rows:(e + 1) * rows].astype(np.float64) @ x[p // k] + bias[e * rows:(e + 1) * rows]
        np.testing.assert_allclose(got[p, 2:], want_row, rtol=1e-5, atol=1e-5)
    assert np.all(got[:, :2] == 7.0)


@pytest.mark.parametrize("t", NATIVE, ids=lambda t: t.name)
def test_gemm_matches_dequantised_product(t):
    rng = np.random.default_rng(4)
    # neither a multiple of the tile
    rows, cols, n_tok = (20, 256, 5) if t in LATEST else (20, 512, 5) if t in LATER else (37, 512, 11)
    raw, w = _weights(t, rows, cols, rng)
    pw = layout.pack(raw, t, (rows, cols))
    x = rng.standard_normal((n_tok, cols)).astype(np.float32)
    y = cuda.to_device(np.zeros((n_tok, rows + 3), np.float32))
    grid = (-(-rows // dev.GEMM_TM), -(-n_tok // dev.GEMM_TN))
    k, planes = _dev(pw)
    k.gemm[grid, (dev.GEMM_TX, dev.GEMM_TY)](*planes, rows, cols, cuda.to_device(x), n_tok, y, 3,
                                            cuda.to_device(np.zeros(1, np.float32)), 0, np.float32(0.0),
                                            _NO_SEL, _NO_SEL, 0, 1)
    got = y.copy_to_host()
    want = x.astype(np.float64) @ w.astype(np.float64).T
    assert np.all(np.abs(got[:, 3:] - want) <= _bound(w, x))
    assert np.all(got[:, :3] == 0)


@pytest.mark.parametrize("mode", [M.MODE_GEGLU, M.MODE_SWIGLU_OAI])
def test_glu_kernel(mode):
    rng = np.random.default_rng(5)
    gu = rng.standard_normal((3, 2 * 24)).astype(np.float32)
    if mode == M.MODE_SWIGLU_OAI:  # past the clamps at +-7; a NaN stays NaN through them, as in numpy
        gu *= 6
        gu[0, :2], gu[0, 24:26] = np.nan, np.nan
    out = cuda.to_device(np.zeros((4, 24), np.float32))
    M.glu[3, dev.NORM_THREADS](cuda.to_device(gu), 3, 24, mode, out)
    np.testing.assert_allclose(out.copy_to_host()[:3], _glu_ref(mode, gu[:, :24], gu[:, 24:]), rtol=1e-5, atol=1e-6)


# --- norms and RoPE ------------------------------------------------------------------------------

@pytest.mark.parametrize("post,n_sel,res_scale,has_norm,hscale,shared", [
    (False, 0, 1.0, True, 1.0, False), (True, 0, 1.0, True, 1.0, False),
    (True, 2, 0.25, True, 3.0, False),  # experts' rows weighted, scaled residual, scaled output
    (False, 2, 1.0, True, 1.0, True),   # and a shared expert's row times its gate
    (True, 0, 1.0, False, 1.0, False)])  # no norm: h is x
def test_residual_norm(post, n_sel, res_scale, has_norm, hscale, shared):
    rng = np.random.default_rng(6)
    D = 48
    x = rng.standard_normal((3, D)).astype(np.float32)
    delta = rng.standard_normal((3 * max(1, n_sel), D)).astype(np.float32)
    selw = rng.random(3 * max(1, n_sel)).astype(np.float32)
    post_w = (1 + 0.1 * rng.standard_normal(D)).astype(np.float32)
    norm_w = (1 + 0.1 * rng.standard_normal(D)).astype(np.float32)
    shared_out = rng.standard_normal((3, D)).astype(np.float32)
    shw = rng.random(3).astype(np.float32)
    dx, dh = cuda.to_device(x), cuda.to_device(np.zeros((3, D), np.float32))
    O.residual_norm[2, dev.NORM_THREADS](dx, cuda.to_device(delta), 1, n_sel, cuda.to_device(selw),
                                         cuda.to_device(shared_out), int(shared), cuda.to_device(shw),
                                         np.float32(res_scale), cuda.to_device(post_w), int(post),
                                         cuda.to_device(norm_w), int(has_norm), np.float32(hscale), dh,
                                         np.float32(1e-6), D, 1)
    branch = delta if n_sel == 0 else (selw[:, None] * delta).reshape(3, n_sel, D).sum(1)
    if shared:
        branch = branch + shw[:, None] * shared_out
    want_x = x.copy()
    want_x[1:] += res_scale * (layers.rms_norm(branch[1:], post_w, 1e-6) if post else branch[1:])
    np.testing.assert_allclose(dx.copy_to_host(), want_x, rtol=1e-5, atol=1e-6)
    h = dh.copy_to_host()
    want_h = hscale * layers.rms_norm(want_x[1:], norm_w, 1e-6) if has_norm else want_x[1:]
    np.testing.assert_allclose(h[1:], want_h, rtol=1e-5, atol=1e-6)
    assert np.all(h[0] == 0)  # row0 = 1: row 0 untouched


@pytest.mark.parametrize("renorm,wscale,gating,biased", [
    (True, 0.0, "softmax", False), (False, 2.5, "softmax", False),
    (True, 2.5, "sigmoid", True), (False, 0.0, "sigmoid", False)])
def test_moe_route_matches_the_recipe(renorm, wscale, gating, biased):
    """Top-k of the router's softmax or sigmoid (plus a selection bias) as ``decoder.route``
    (ties to the lower expert), bit for bit on the experts and within 1e-6 on the weights
    (float32 exp and sums); the shared expert's gate, the sigmoid of the logit after the
    router's, within 1e-6."""
    from abi.llm.models.decoder import ModelArgs, route

    rng = np.random.default_rng(14)
    n_tok, n_exp, k = 5, 6, 3
    logits = rng.standard_normal((n_tok, n_exp + 1)).astype(np.float32)
    logits[1, [1, 4]] = logits[1].max() + 1.0   # a tie for the first place
    logits[2, :n_exp] = 0.5                      # all tied
    bias = (0.3 * rng.standard_normal(n_exp)).astype(np.float32)
    a = ModelArgs("t", 1, 1, 1, 1, 1, 1, 1, 1, 1e-6, 1e4, 1, n_expert=n_exp, n_expert_used=k,
                  expert_norm=renorm, expert_weights_scale=wscale, expert_gating=gating)
    want_w, want_e = route(logits[:, :n_exp], a, bias if biased else None)
    sel, selw = cuda.to_device(np.zeros(n_tok * k, np.int32)), cuda.to_device(np.zeros(n_tok * k, np.float32))
    shw = cuda.to_device(np.zeros(n_tok, np.float32))
    O.moe_route[1, dev.NORM_THREADS](cuda.to_device(logits), n_tok, n_exp, k, int(renorm), np.float32(wscale),
                                     int(gating == "sigmoid"), cuda.to_device(bias), int(biased), 1, shw,
                                     sel, selw)
    np.testing.assert_array_equal(sel.copy_to_host().reshape(n_tok, k), want_e)
    np.testing.assert_allclose(selw.copy_to_host().reshape(n_tok, k), want_w, rtol=1e-6, atol=0)
    np.testing.assert_allclose(shw.copy_to_host(), 1 / (1 + np.exp(-logits[:, n_exp].astype(np.float64))),
                               rtol=1e-6)


@pytest.mark.parametrize("neox,qk_norm,n_rot", [(False, False, 16), (True, True, 16), (True, False, 8)])
def test_qk_prep_rotates_and_fills_the_cache(neox, qk_norm, n_rot):
    rng = np.random.default_rng(7)
    n_head, n_kv, hd, n_tok, pos0 = 4, 2, 16, 3, 5
    qkv = rng.standard_normal((n_tok, (n_head + 2 * n_kv) * hd)).astype(np.float32)
    q_norm = (1 + 0.1 * rng.standard_normal(hd)).astype(np.float32)
    k_norm = (1 + 0.1 * rng.standard_normal(hd)).astype(np.float32)
    rope = layers.Rope(layers.RopeConfig(n_rot, 10000.0, neox))
    kc = cuda.to_device(np.zeros((2, n_kv, 16, hd), np.float16))
    vc = cuda.to_device(np.zeros((2, n_kv, 16, hd), np.float16))
    dq = cuda.to_device(qkv)
    O.qk_prep[(n_tok, n_head + n_kv), dev.NORM_THREADS](
        dq, n_head, n_kv, hd, cuda.to_device(q_norm), cuda.to_device(k_norm), int(qk_norm), np.float32(1e-6),
        cuda.to_device(rope.inv_freq), n_rot, int(neox), np.float64(rope.mscale), kc, vc, 1,
        cuda.to_device(np.array([pos0, n_tok], np.int32)))
    q = qkv[:, :n_head * hd].reshape(n_tok, n_head, hd).copy()
    k = qkv[:, n_head * hd:(n_head + n_kv) * hd].reshape(n_tok, n_kv, hd).copy()
    v = qkv[:, (n_head + n_kv) * hd:].reshape(n_tok, n_kv, hd)
    if qk_norm:
        q, k = layers.rms_norm(q, q_norm, 1e-6), layers.rms_norm(k, k_norm, 1e-6)
    rope(q, pos0)
    rope(k, pos0)
    got = dq.copy_to_host()
    np.testing.assert_allclose(got[:, :n_head * hd].reshape(q.shape), q, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got[:, n_head * hd:], qkv[:, n_head * hd:])  # k, v rows stay
    kk, vv = kc.copy_to_host(), vc.copy_to_host()
    want_k = k.transpose(1, 0, 2).astype(np.float16)
    if SIM:
        np.testing.assert_array_equal(kk[1, :, pos0:pos0 + n_tok], want_k)
    else:  # a last-bit float32 difference (FMA) can round to the neighbouring f16
        np.testing.assert_allclose(kk[1, :, pos0:pos0 + n_tok].astype(np.float32), want_k.astype(np.float32),
                                   rtol=2.0 ** -10, atol=1e-6)
    np.testing.assert_array_equal(vv[1, :, pos0:pos0 + n_tok], v.transpose(1, 0, 2).astype(np.float16))
    assert not kk[0].any() and not kk[1, :, :pos0].any()


# --- attention -----------------------------------------------------------------------------------

def _attention_case(rng, n_tok, pos0, hd=16, n_head=4, n_kv=2, cap=40):
    qkv = rng.standard_normal((n_tok, (n_head + 2 * n_kv) * hd)).astype(np.float32)
    kc = rng.standard_normal((2, n_kv, cap, hd)).astype(np.float16)
    vc = rng.standard_normal((2, n_kv, cap, hd)).astype(np.float16)
    q = qkv[:, :n_head * hd].reshape(n_tok, n_head, hd)
    k = kc[1, :, :pos0 + n_tok].astype(np.float32)
    v = vc[1, :, :pos0 + n_tok].astype(np.float32)
    state = cuda.to_device(np.array([pos0, n_tok], np.int32))
    return qkv, kc, vc, q, k, v, state


def _sinks(rng, with_sinks, n_head=4):
    """Per-head sinks (gpt-oss) from well below to well above the scores (-> (array, flag))."""
    if not with_sinks:
        return None, cuda.to_device(np.zeros(1, np.float32)), 0
    s = np.array([-4.0, 0.5, 3.0, 8.0], np.float32)[:n_head]
    return s, cuda.to_device(s), 1


@pytest.mark.parametrize("window,cap,with_sinks", [(0, 0.0, False), (4, 0.0, False), (0, 30.0, False),
                                                   (0, 0.0, True), (4, 0.0, True)])
def test_attention_prefill(window, cap, with_sinks):
    """Against layers.attention; sinks enter each query's softmax once (the tiles' online
    softmax starts from them), whatever the number of key tiles."""
    rng = np.random.default_rng(8)
    n_tok, pos0, hd, n_head = 7, 5, 16, 4
    qkv, kc, vc, q, k, v, state = _attention_case(rng, n_tok, pos0)
    sinks, d_sinks, has = _sinks(rng, with_sinks)
    out = cuda.to_device(np.zeros((n_tok, n_head * hd), np.float32))
    scale = np.float32(0.25)
    A.attn_prefill[(-(-n_tok // dev.ATT_BQ), n_head), dev.ATT_THREADS](
        cuda.to_device(qkv), n_tok, n_head, 2, hd, cuda.to_device(kc), cuda.to_device(vc), 1, state,
        scale, window, np.float32(cap), d_sinks, has, out)
    want = layers.attention(q.copy(), k, v, pos0, float(scale), window=window, softcap_value=cap, sinks=sinks)
    got = out.copy_to_host()
    assert np.abs(got - want).max() <= 2e-5 * np.abs(want).max()


@pytest.mark.parametrize("pos,window,n_split,with_sinks", [(0, 0, 3, False), (37, 0, 3, False), (37, 8, 2, False),
                                                            (20, 0, 7, False), (0, 0, 3, True), (37, 8, 3, True)])
def test_attention_decode_splits_and_combines(pos, window, n_split, with_sinks):
    """Split-K decode against layers.attention; a sink is added in the combine step, once
    (splits with no keys included: pos 0 leaves all but one empty)."""
    rng = np.random.default_rng(9)
    hd, n_head = 16, 4
    qkv, kc, vc, q, k, v, state = _attention_case(rng, 1, pos)
    sinks, d_sinks, has = _sinks(rng, with_sinks)
    pm = cuda.to_device(np.zeros((n_head, n_split), np.float32))
    pl = cuda.to_device(np.zeros((n_head, n_split), np.float32))
    po = cuda.to_device(np.zeros((n_head, n_split, hd), np.float32))
    out = cuda.to_device(np.zeros((1, n_head * hd), np.float32))
    scale = np.float32(0.25)
    A.attn_decode[(n_head, n_split), dev.DEC_THREADS](cuda.to_device(qkv), n_head, 2, hd, cuda.to_device(kc),
                                                      cuda.to_device(vc), 1, state, scale, window,
                                                      np.float32(0.0), pm, pl, po)
    A.attn_combine[n_head, 32](pm, pl, po, hd, d_sinks, has, out)
    want = layers.attention(q.copy(), k, v, pos, float(scale), window=window, sinks=sinks)
    got = out.copy_to_host()
    assert np.abs(got - want).max() <= 2e-5 * np.abs(want).max()


# --- sampling ------------------------------------------------------------------------------------

def _sample(logits, temp, top_k=0, top_p=1.0, min_p=0.0, seed=7, counter=0, hist=(), window=8):
    ip = np.zeros(R.N_IPARAMS, np.int32)
    fp = np.zeros(R.N_FPARAMS, np.float32)
    ip[R.IP_TOP_K], ip[R.IP_SEED], ip[R.IP_COUNTER], ip[R.IP_GREEDY] = top_k, seed, counter, temp == 0
    ip[R.IP_WINDOW], ip[R.IP_N_HIST], ip[R.IP_HEAD] = window, len(hist), len(hist) % window
    fp[R.FP_TEMP], fp[R.FP_TOP_P], fp[R.FP_MIN_P], fp[R.FP_REP] = temp, top_p, min_p, 1.0
    h = np.zeros(window, np.int32)
    h[:len(hist)] = hist
    d_ip, d_h = cuda.to_device(ip), cuda.to_device(h)
    state, tokens, out = (cuda.to_device(np.array([9, 3], np.int32)), cuda.to_device(np.zeros(2, np.int32)),
                          cuda.to_device(np.zeros(1, np.int32)))
    S.sample[1, dev.SAMPLE_THREADS](cuda.to_device(logits[None].astype(np.float32)), 0, d_ip, cuda.to_device(fp),
                                    d_h, state, tokens, out)
    tok = int(out.copy_to_host()[0])
    assert int(tokens.copy_to_host()[0]) == tok
    assert state.copy_to_host().tolist() == [12, 1]          # past the 3-token batch; decode next
    ip2 = d_ip.copy_to_host()
    assert ip2[R.IP_COUNTER] == counter + 1
    assert ip2[R.IP_N_HIST] == min(len(hist) + 1, window)
    assert d_h.copy_to_host()[len(hist) % window] == tok      # appended to the history ring
    return tok


def test_greedy_is_argmax_lowest_id_on_ties():
    rng = np.random.default_rng(10)
    logits = rng.standard_normal(300).astype(np.float32)
    logits[[17, 200]] = logits.max() + 1
    assert _sample(logits, 0.0) == 17


SMALL_K = min(20, dev.SAMPLE_THREADS)  # the sorted-candidates path


@pytest.mark.parametrize("temp,top_k,top_p,min_p", [
    (0.8, SMALL_K, 1.0, 0.0), (0.8, SMALL_K, 0.9, 0.0), (1.2, SMALL_K, 0.5, 0.05),
    (1.0, 0, 1.0, 0.1), (1.5, 0, 1.0, 0.0), (1.0, 0, 0.8, 0.0), (1e-30, 0, 1.0, 0.0)])
def test_draws_match_the_numpy_twin(temp, top_k, top_p, min_p):
    rng = np.random.default_rng(11)
    for trial in range(3):
        logits = (2 * rng.standard_normal(300)).astype(np.float32)
        if trial == 2 and top_k:  # ties inside the kept set (the bisection path, used without
            # top-k, keeps a tie group whole at the top-p boundary where the host splits it by id)
            logits[rng.integers(0, 300, 25)] = np.sort(logits)[-5]
        got = _sample(logits, temp, top_k, top_p, min_p, seed=123, counter=trial, hist=[1, 2, 3])
        assert got == R.draw(logits, temp, top_k, top_p, min_p, seed=123, counter=trial)


def test_top_k_beyond_the_candidate_path_uses_bisection():
    rng = np.random.default_rng(12)
    logits = (2 * rng.standard_normal(dev.SAMPLE_THREADS + 200)).astype(np.float32)
    k = dev.SAMPLE_THREADS + 10
    got = _sample(logits, 0.9, k, 0.95, 0.0, seed=5, counter=3)
    assert got == R.draw(logits, 0.9, k, 0.95, 0.0, seed=5, counter=3)


def test_kept_set_follows_the_host_filters():
    """The twin's kept set is what abi.llm.sampling's filters leave finite (no ties)."""
    rng = np.random.default_rng(13)
    for top_k, top_p, min_p in [(40, 1.0, 0.0), (40, 0.9, 0.0), (0, 0.7, 0.0), (25, 0.95, 0.05), (0, 1.0, 0.2)]:
        logits = (3 * rng.standard_normal(500)).astype(np.float32)
        x = host_sampling.top_k_filter(logits, top_k)
        x = host_sampling.top_p_filter(x, top_p)
        x = host_sampling.min_p_filter(x, min_p)
        assert set(np.flatnonzero(np.isfinite(x))) == set(R.kept_set(logits, top_k, top_p, min_p).tolist())


def test_gumbel_draws_follow_softmax():
    logits = np.array([2.0, 1.0, 0.5, 0.0, -1.0, -3.0], np.float32)
    n = 40000
    draws = np.array([R.draw(logits, 0.7, 0, 1.0, 0.0, seed=99, counter=c) for c in range(n)])
    p = host_sampling.softmax(logits.astype(np.float64) / 0.7)
    freq = np.bincount(draws, minlength=6) / n
    assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-4)


def test_penalties_match_the_host_processors():
    rng = np.random.default_rng(14)
    logits = rng.standard_normal(120).astype(np.float32)
    hist = np.array([5, 9, 5, 77, 9, 9, 3], np.int32)
    bias = {3: 2.5, 100: -1.0}
    procs = host_sampling.make_logits_processors(1.3, 7, 0.4, 0.25, bias)
    want = logits.copy()
    for proc in procs:
        want = proc(list(hist), want)
    ip = np.zeros(R.N_IPARAMS, np.int32)
    fp = np.zeros(R.N_FPARAMS, np.float32)
    ip[R.IP_N_HIST], ip[R.IP_N_BIAS] = len(hist), len(bias)
    fp[R.FP_REP], fp[R.FP_PRES], fp[R.FP_FREQ] = 1.3, 0.4, 0.25
    d = cuda.to_device(logits[None].copy())
    S.penalize[1, dev.SAMPLE_THREADS](d, 0, cuda.to_device(ip), cuda.to_device(fp), cuda.to_device(hist),
                                      cuda.to_device(np.array(list(bias), np.int32)),
                                      cuda.to_device(np.array(list(bias.values()), np.float32)))
    np.testing.assert_allclose(d.copy_to_host()[0], want, rtol=1e-6, atol=1e-6)
