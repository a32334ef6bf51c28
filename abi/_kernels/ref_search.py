"""Numpy references of llama.cpp's quantisation searches (the ``quantize_row_*_ref`` /
``*_impl`` family of ggml-quants.c), re-derived from their published behaviour.

These are what ``python -m abi quantize`` and ``abi._kernels.quantize`` write for the
k-quants: for each group of 16 or 32 values they try a small set of candidate scales and
keep the one with the least (weighted) squared error. With an importance matrix (``qw``,
one weight per column) the error of each column is weighted by ``qw * sqrt(sigma2 + x^2)``
as llama.cpp does.

Arrays are ``(m, n)``: m independent groups of n values. Every sum runs left to right in
float32 (``_acc``) and every product in the same order as the Cython twin in quant.pyx,
so both agree bit for bit; ``nearest`` is round-half-even (ggml's ``nearest_int``).
"""
from __future__ import annotations

import numpy as np

from .ref_kquants import pack_scale_min_k4

F = np.float32
EPS = F(1e-15)          # a group whose largest |x| is below this is all zero


def _acc(terms: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """Left-to-right float32 sum over axis 1 (numpy's pairwise sum would round differently)."""
    s = np.zeros(terms.shape[0], F) if start is None else start.astype(F, copy=True)
    for i in range(terms.shape[1]):
        s = s + terms[:, i]
    return s


def _rint(v: np.ndarray) -> np.ndarray:
    """Round half to even as float32; non-finite values (masked by the callers) become 0."""
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(v), np.rint(v), F(0)).astype(F)


def _first_absmax(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(signed value, |value|) of the first element of largest magnitude per row."""
    ax = np.abs(x)
    idx = ax.argmax(axis=1)
    r = np.arange(x.shape[0])
    return x[r, idx], ax[r, idx]


def _safe(v: np.ndarray, bad: np.ndarray) -> np.ndarray:
    return np.where(bad, F(1), v).astype(F)


def make_qx(x: np.ndarray, nmax: int, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric levels l in [-nmax, nmax): start from the scale that maps the signed absmax to
    -nmax, try 18 nearby ones, keep the least-squares scale of the best. Returns (scale (m,),
    L = l + nmax as int32 (m, n)); an all-zero group gives scale 0 and L 0."""
    mx, amax = _first_absmax(x)
    zero = amax < EPS
    mx = _safe(mx, zero)
    fn = F(nmax)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        def levels(iscale):
            return np.clip(_rint(iscale[:, None] * x), F(-nmax), F(nmax - 1))

        lv = levels(-fn / mx)
        sumlx, suml2 = _acc(w * x * lv), _acc(w * lv * lv)
        scale = np.where(suml2 != 0, sumlx / _safe(suml2, suml2 == 0), F(0)).astype(F)
        best = scale * sumlx
        for k in range(-9, 10):
            if k == 0:
                continue
            l2 = levels(-(fn + F(0.1) * F(k)) / mx)
            slx, sl2 = _acc(w * x * l2), _acc(w * l2 * l2)
            take = (sl2 > 0) & (slx * slx > best * sl2)
            lv = np.where(take[:, None], l2, lv)
            scale = np.where(take, slx / _safe(sl2, sl2 == 0), scale).astype(F)
            best = np.where(take, scale * slx, best).astype(F)
    L = (lv + fn).astype(np.int32)
    L[zero] = 0
    return np.where(zero, F(0), scale).astype(F), L


def make_q3(x: np.ndarray, nmax: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Q3_K's search without an imatrix: levels from the absmax scale, then up to 5 passes
    that move single levels while the x^2-weighted fit improves. Returns (scale, L + nmax)."""
    mx, amax = _first_absmax(x)
    zero = amax < EPS
    mx = _safe(mx, zero)
    lo, hi = F(-nmax), F(nmax - 1)
    w = x * x
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        L = np.clip(_rint((F(-nmax) / mx)[:, None] * x), lo, hi)
        sumlx, suml2 = _acc(w * x * L), _acc(w * L * L)
        active = ~zero
        for _ in range(5):
            changed = np.zeros_like(active)
            for i in range(x.shape[1]):
                wi, xi, li = w[:, i], x[:, i], L[:, i]
                slx = sumlx - wi * xi * li
                ok = active & (slx > 0)
                sl2 = suml2 - wi * li * li
                new = np.clip(_rint(xi * sl2 / _safe(slx, ~ok)), lo, hi)
                ok &= new != li
                slx = slx + wi * xi * new
                sl2 = sl2 + wi * new * new
                ok &= (sl2 > 0) & (slx * slx * suml2 > sumlx * sumlx * sl2)
                L[:, i] = np.where(ok, new, li)
                sumlx = np.where(ok, slx, sumlx).astype(F)
                suml2 = np.where(ok, sl2, suml2).astype(F)
                changed |= ok
            active &= changed
        scale = np.where(suml2 > 0, sumlx / _safe(suml2, suml2 <= 0), F(0)).astype(F)
    Lq = (L + F(nmax)).astype(np.int32)
    Lq[zero] = 0
    return np.where(zero, F(0), scale).astype(F), Lq


def make_qkx(x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, rdelta: float,
             nstep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric levels 0..nmax with an offset: x ~ scale * l - the_min. Starts from
    (min(x, 0), max(x)), tries nstep + 1 widened/narrowed ranges, each refit by weighted
    least squares (scale, min), and keeps the least weighted squared error.
    Returns (scale (m,), the_min (m,) >= 0, L int32 (m, n))."""
    mn, mx = x.min(axis=1), x.max(axis=1)
    sum_w = _acc(w[:, 1:], w[:, 0])
    sum_x = _acc(w[:, 1:] * x[:, 1:], w[:, 0] * x[:, 0])
    mn = np.where(mn > 0, F(0), mn).astype(F)
    flat = mx <= mn
    fn = F(nmax)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        iscale = fn / _safe(mx - mn, flat)
        scale = F(1) / iscale
        L = np.clip(_rint(iscale[:, None] * (x - mn[:, None])), F(0), fn)
        diff = scale[:, None] * L + mn[:, None] - x
        best = _acc(w * (diff * diff))
        for k in range(nstep + 1):
            iscale = (F(rmin) + F(rdelta) * F(k) + fn) / _safe(mx - mn, flat)
            la = np.clip(_rint(iscale[:, None] * (x - mn[:, None])), F(0), fn)
            sum_l, sum_l2, sum_xl = _acc(w * la), _acc(w * la * la), _acc(w * la * x)
            D = sum_w * sum_l2 - sum_l * sum_l
            ok = D > 0
            Ds = _safe(D, ~ok)
            t_scale = (sum_w * sum_xl - sum_x * sum_l) / Ds
            t_min = (sum_l2 * sum_x - sum_l * sum_xl) / Ds
            pos = t_min > 0
            t_min = np.where(pos, F(0), t_min).astype(F)
            t_scale = np.where(pos, sum_xl / _safe(sum_l2, ~(ok & pos)), t_scale).astype(F)
            diff = t_scale[:, None] * la + t_min[:, None] - x
            cur = _acc(w * (diff * diff))
            take = ok & (cur < best) & ~flat
            L = np.where(take[:, None], la, L)
            best = np.where(take, cur, best).astype(F)
            scale = np.where(take, t_scale, scale).astype(F)
            mn = np.where(take, t_min, mn).astype(F)
    L = L.astype(np.int32)
    L[flat] = 0
    return np.where(flat, F(0), scale).astype(F), (-mn).astype(F), L


def make_qp(x: np.ndarray, nmax: int, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Levels 0..nmax for non-negative x (the sub-block scales and mins of Q4_K/Q5_K under an
    imatrix): best of 9 scales by weighted error, then single-level moves. Returns (scale, L)."""
    mx = np.zeros(x.shape[0], F)
    for i in range(x.shape[1]):
        mx = np.where(x[:, i] > mx, x[:, i], mx)     # MAX(max, x): NaN-free here
    zero = mx < EPS
    mx = _safe(mx, zero)
    fn = F(nmax)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        iscale = fn / mx
        L = _rint(iscale[:, None] * x)
        Lu = (L.astype(np.int64) & 255).astype(F)          # stored as uint8, as in C
        scale = F(1) / iscale
        diff = x - scale[:, None] * Lu
        best = _acc(w * diff * diff)
        for k in range(-4, 5):
            if k == 0:
                continue
            isk = (F(0.1) * F(k) + fn) / mx
            sk = F(1) / isk
            lk = np.minimum(_rint(isk[:, None] * x), fn)
            diff = x - sk[:, None] * lk
            mse = _acc(w * diff * diff)
            take = mse < best
            best = np.where(take, mse, best).astype(F)
            iscale = np.where(take, isk, iscale).astype(F)
        lv = np.minimum(_rint(iscale[:, None] * x), fn)
        sumlx, suml2 = _acc(w * x * lv), _acc(w * lv * lv)
        Lu = (lv.astype(np.int64) & 255).astype(F)
        active = ~zero
        for _ in range(5):
            changed = np.zeros_like(active)
            for i in range(x.shape[1]):
                wi, xi, li = w[:, i], x[:, i], Lu[:, i]
                slx = sumlx - wi * xi * li
                sl2 = suml2 - wi * li * li
                ok = active & (slx > 0) & (sl2 > 0)
                new = np.minimum(_rint(xi * sl2 / _safe(slx, ~ok)), fn)
                ok &= new != li
                slx = slx + wi * xi * new
                sl2 = sl2 + wi * new * new
                ok &= slx * slx * suml2 > sumlx * sumlx * sl2
                Lu[:, i] = np.where(ok, (new.astype(np.int64) & 255).astype(F), li)
                sumlx = np.where(ok, slx, sumlx).astype(F)
                suml2 = np.where(ok, sl2, suml2).astype(F)
                changed |= ok
            active &= changed
        scale = np.where(suml2 > 0, sumlx / _safe(suml2, suml2 <= 0), F(0)).astype(F)
    Lq = Lu.astype(np.int32)
    Lq[zero] = 0
    return np.where(zero, F(0), scale).astype(F), Lq


def imatrix_weights(x: np.ndarray, qw: np.ndarray, sigma2: np.ndarray) -> np.ndarray:
    """qw * sqrt(sigma2 + x^2) per element; sigma2 broadcast per group (m,)."""
    return (qw * np.sqrt(sigma2[:, None] + x * x)).astype(F)


# --- block quantisers ---------------------------------------------------------------------
# x: (nb, block) float32 blocks; qw: matching (nb, block) importance weights or None.
# Layouts as documented in ref_kquants.py / ref_legacy.py.

def _f16_bits(v: np.ndarray) -> np.ndarray:
    return v.astype(np.float16).view(np.uint16)


def _f16_val(bits: np.ndarray) -> np.ndarray:
    return bits.view(np.float16).astype(F)


def _u16(bits: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(bits.astype(np.uint16)).reshape(-1, 1).view(np.uint8)


def _running_max(v: np.ndarray) -> np.ndarray:
    """max(0, v_0, v_1, ...) by strict '>' from a +0 start, as the C loops do."""
    m = np.zeros(v.shape[0], F)
    for j in range(v.shape[1]):
        m = np.where(v[:, j] > m, v[:, j], m)
    return m


def _running_absmax(v: np.ndarray) -> np.ndarray:
    """The signed entry of largest |v| (first on ties), 0 if all are 0."""
    best, val = np.zeros(v.shape[0], F), np.zeros(v.shape[0], F)
    for j in range(v.shape[1]):
        a = np.abs(v[:, j])
        take = a > best
        best = np.where(take, a, best)
        val = np.where(take, v[:, j], val)
    return val


def _requant(x: np.ndarray, d: np.ndarray, L: np.ndarray, lo: int, hi: int, offset: int,
             dm: np.ndarray | None = None) -> np.ndarray:
    """Final levels against the stored (f16 * 6/8-bit) sub-block scales d (m,): where d is 0
    the search's levels L stay (as in llama.cpp)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        v = x if dm is None else x + dm[:, None]
        q = np.clip(_rint(v / _safe(d, d == 0)[:, None]), F(lo), F(hi)).astype(np.int32) + offset
    return np.where((d != 0)[:, None], q, L)


def _k_super_weights(x: np.ndarray, qw: np.ndarray | None, sub: int):
    """Per sub-block weights for Q4_K/Q5_K (sub = 32) and Q3_K (sub = 16) under an imatrix."""
    n = x.shape[0]
    sigma2 = (F(2) * _acc(x * x) / F(256)).astype(F)
    xs = x.reshape(-1, sub)
    return imatrix_weights(xs, qw.reshape(-1, sub), np.repeat(sigma2, 256 // sub)), n


def _pack_q3_k(Ls: np.ndarray, L: np.ndarray, d_bits: np.ndarray) -> np.ndarray:
    n = Ls.shape[0]
    sc = np.zeros((n, 12), np.uint8)
    lo = (Ls & 15).astype(np.uint8)
    sc[:, 0:8] = lo[:, 0:8] | (lo[:, 8:16] << 4)
    hi = (Ls >> 4).astype(np.uint8)
    for j in range(16):
        sc[:, 8 + j % 4] |= hi[:, j] << (2 * (j // 4))
    L = L.reshape(n, 256)
    high = (L > 3)
    Lq = np.where(high, L - 4, L).astype(np.uint8)
    hmask = np.zeros((n, 32), np.uint8)
    for k in range(8):
        hmask |= high[:, 32 * k:32 * k + 32].astype(np.uint8) << k
    q = Lq.reshape(n, 2, 4, 32)
    qs = (q[:, :, 0] | (q[:, :, 1] << 2) | (q[:, :, 2] << 4) | (q[:, :, 3] << 6)).reshape(n, 64)
    return np.concatenate([hmask, qs, sc, _u16(d_bits)], axis=1)


def quantize_q3_k(x: np.ndarray, qw: np.ndarray | None = None) -> np.ndarray:
    """Q3_K: per 16 values a signed 3-bit search (make_q3, or make_qx weighted by the imatrix),
    the 16 scales themselves quantised to 6 bits against one f16 d."""
    n = x.shape[0]
    xs = x.reshape(-1, 16)
    if qw is None:
        scales, L = make_q3(xs)
        scales = scales.reshape(n, 16)
        ms = _running_absmax(scales)
        nz = ms != 0
        with np.errstate(divide="ignore"):
            iscale = F(-32) / _safe(ms, ~nz)
            Ls = np.clip(_rint(iscale[:, None] * scales), F(-32), F(31)).astype(np.int32) + 32
            d = np.where(nz, F(1) / iscale, F(0)).astype(F)
        Ls = np.where(nz[:, None], Ls, 0)
    else:
        w, _ = _k_super_weights(x, qw, 16)
        sw = _acc(w).reshape(n, 16)
        scales, L = make_qx(xs, 4, w)
        d, Ls = make_qx(scales.reshape(n, 16), 32, sw)
    d_bits = _f16_bits(d)
    dl = (_f16_val(d_bits)[:, None] * (Ls - 32).astype(F)).reshape(-1)
    L = _requant(xs, dl, L, -4, 3, 4)
    return _pack_q3_k(Ls, L, d_bits)


def _k4_search(x: np.ndarray, qw: np.ndarray | None, nmax: int, rmin: float, rdelta: float,
               nstep: int):
    """Shared by Q4_K (nmax 15) and Q5_K (31): 8 sub-blocks of 32 with 6-bit scales and mins.
    Returns (d_bits, dmin_bits, sc, mn, L (nb*8, 32))."""
    n = x.shape[0]
    xs = x.reshape(-1, 32)
    if qw is None:
        av = np.sqrt(_acc(xs * xs) / F(32)).astype(F)
        w = (av[:, None] + np.abs(xs)).astype(F)
        scales, mins, L = make_qkx(xs, w, nmax, rmin, rdelta, nstep)
        scales, mins = scales.reshape(n, 8), mins.reshape(n, 8)
        ms, mm = _running_max(scales), _running_max(mins)
        with np.errstate(divide="ignore"):
            inv_s = np.where(ms > 0, F(63) / _safe(ms, ms <= 0), F(0)).astype(F)
            inv_m = np.where(mm > 0, F(63) / _safe(mm, mm <= 0), F(0)).astype(F)
        sc = np.minimum(_rint(inv_s[:, None] * scales).astype(np.int64) & 255, 63)
        mn = np.minimum(_rint(inv_m[:, None] * mins).astype(np.int64) & 255, 63)
        d, dmin = (ms / F(63)).astype(F), (mm / F(63)).astype(F)
    else:
        w, _ = _k_super_weights(x, qw, 32)
        sw = _acc(w).reshape(n, 8)
        scales, mins, L = make_qkx(xs, w, nmax, -0.9, 0.05, 36)
        d, sc = make_qp(scales.reshape(n, 8), 63, sw)
        dmin, mn = make_qp(mins.reshape(n, 8), 63, sw)
        sc, mn = np.minimum(sc, 63), np.minimum(mn, 63)
    d_bits, dmin_bits = _f16_bits(d), _f16_bits(dmin)
    dl = (_f16_val(d_bits)[:, None] * sc.astype(F)).reshape(-1)
    ml = (_f16_val(dmin_bits)[:, None] * mn.astype(F)).reshape(-1)
    L = _requant(xs, dl, L, 0, nmax, 0, dm=ml)
    return d_bits, dmin_bits, sc.astype(np.uint8), mn.astype(np.uint8), L


def quantize_q4_k(x: np.ndarray, qw: np.ndarray | None = None) -> np.ndarray:
    n = x.shape[0]
    d, dmin, sc, mn, L = _k4_search(x, qw, 15, -1.0, 0.1, 20)
    q = L.reshape(n, 4, 2, 32).astype(np.uint8)
    qs = (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(n, 128)
    return np.concatenate([_u16(d), _u16(dmin), pack_scale_min_k4(sc, mn), qs], axis=1)


def quantize_q5_k(x: np.ndarray, qw: np.ndarray | None = None) -> np.ndarray:
    n = x.shape[0]
    d, dmin, sc, mn, L = _k4_search(x, qw, 31, -0.5, 0.1, 15)
    q = L.reshape(n, 8, 32).astype(np.uint8)
    qh = np.zeros((n, 32), np.uint8)
    for j in range(8):
        qh |= (q[:, j] >> 4) << j
    q = (q & 15).reshape(n, 4, 2, 32)
    qs = (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(n, 128)
    return np.concatenate([_u16(d), _u16(dmin), pack_scale_min_k4(sc, mn), qh, qs], axis=1)


def quantize_q6_k(x: np.ndarray, qw: np.ndarray | None = None) -> np.ndarray:
    """Q6_K: make_qx per 16 values (weights x^2, or the imatrix as is), 8-bit scales."""
    n = x.shape[0]
    xs = x.reshape(-1, 16)
    scales, L = make_qx(xs, 32, xs * xs if qw is None else qw.reshape(-1, 16).astype(F))
    scales = scales.reshape(n, 16)
    ms = _running_absmax(scales)
    zero = np.abs(ms) < EPS
    with np.errstate(divide="ignore"):
        iscale = F(-128) / _safe(ms, zero)
        sc = np.minimum(_rint(iscale[:, None] * scales), F(127)).astype(np.int32)
        d_bits = _f16_bits(F(1) / iscale)
    sc = np.where(zero[:, None], 0, sc)
    d_bits = np.where(zero, np.uint16(0), d_bits)
    dl = (_f16_val(d_bits)[:, None] * sc.astype(F)).reshape(-1)
    L = _requant(xs, dl, L, -32, 31, 32).reshape(n, 256)
    L = np.where(zero[:, None], 0, L)
    q = L.astype(np.uint8).reshape(n, 2, 128)
    ql = (q[:, :, 0:64] & 15) | ((q[:, :, 64:128] & 15) << 4)
    hi = q >> 4
    qh = hi[:, :, 0:32] | (hi[:, :, 32:64] << 2) | (hi[:, :, 64:96] << 4) | (hi[:, :, 96:128] << 6)
    return np.concatenate([ql.reshape(n, 128), qh.reshape(n, 64), sc.astype(np.int8).view(np.uint8),
                           _u16(d_bits)], axis=1)


def _pack_legacy(L: np.ndarray, five: bool) -> list[np.ndarray]:
    q = L.astype(np.uint8)
    out = []
    if five:
        out.append(np.packbits(q >> 4, axis=1, bitorder="little"))
    out.append((q[:, :16] & 15) | ((q[:, 16:] & 15) << 4))
    return out


def quantize_legacy_weighted(rows: np.ndarray, t: str, qw: np.ndarray) -> np.ndarray:
    """Q4_0 / Q4_1 / Q5_0 / Q5_1 under an imatrix: sigma2 over the whole row, then make_qx
    (symmetric types) or make_qkx (types with a min) per block of 32. rows (r, n), qw (n,)."""
    r, n = rows.shape
    sigma2 = (_acc(rows * rows) / F(n)).astype(F)
    xb = rows.reshape(-1, 32)
    w = imatrix_weights(xb, np.tile(qw.reshape(-1, 32), (r, 1)), np.repeat(sigma2, n // 32))
    five = t in ("Q5_0", "Q5_1")
    nmax = 16 if five else 8
    if t in ("Q4_0", "Q5_0"):
        d, L = make_qx(xb, nmax, w)
        parts = [_u16(_f16_bits(d))]
    else:
        d, the_min, L = make_qkx(xb, w, 2 * nmax - 1, -0.9, 0.05, 36)
        parts = [_u16(_f16_bits(d)), _u16(_f16_bits(-the_min))]
    return np.concatenate(parts + _pack_legacy(L, five), axis=1).reshape(r, -1)


def quantize_rows(rows: np.ndarray, t, qw: np.ndarray | None = None) -> np.ndarray:
    """The reference of ``abi._kernels.quantize_rows``: rows (r, n) float32 -> (r, row_bytes)
    uint8 in llama.cpp's algorithm family for type ``t`` (a GGMLType); qw (n,) or None."""
    from ..gguf.constants import GGMLType
    from .registry import KERNELS
    t = GGMLType(int(t))
    rows = np.ascontiguousarray(rows, dtype=F)
    r, n = rows.shape
    k = {GGMLType.Q3_K: quantize_q3_k, GGMLType.Q4_K: quantize_q4_k,
         GGMLType.Q5_K: quantize_q5_k, GGMLType.Q6_K: quantize_q6_k}.get(t)
    if qw is not None and k is not None:
        w = np.tile(np.asarray(qw, F).reshape(-1, 256), (r, 1))
        return k(rows.reshape(-1, 256), w).reshape(r, -1)
    if qw is not None and t.name in ("Q4_0", "Q4_1", "Q5_0", "Q5_1"):
        return quantize_legacy_weighted(rows, t.name, np.asarray(qw, F))
    # without an imatrix the blocks are independent: the block quantiser (the same search)
    return KERNELS[t].quantize_ref(rows.reshape(-1, t.block_size)).reshape(r, -1)
