"""Quantised kernels: T = 1 products (time and GB/s of weight read, next to the machine's
memory bandwidth), prefill products, prompt tiles, dequantisation and quantisation.
tools/bench_kernels.py prints the same figures as a table (or --json)."""
import numpy as np

from abi import _kernels
from abi._kernels import dequant, matmul
from abi.gguf.constants import GGMLType

from ._tools import load

_TOOL = load("bench_kernels")   # the test weights, the streamed product, the yardstick
DECODE_TYPES = [t.name for t in _kernels.MATMUL_TYPES]
SHAPES = ["1536x576", "576x1536", "49152x576", "16384x4096"]
_weight = _TOOL.random_weight


def _parse(type_name, shape):
    t = GGMLType[type_name]
    rows, cols = (int(s) for s in shape.split("x"))
    if cols % t.block_size:
        raise NotImplementedError(f"{cols} columns are not whole {t.name} blocks")   # asv: skipped
    return t, rows, cols


class MemoryBandwidth:
    """The yardstick: a numba prange float32 sum over 512 MB with the default thread count."""
    timeout = 120

    def track_read_gbs(self):
        return _TOOL.memory_bandwidth(_kernels.default_num_threads(), repeats=5)

    track_read_gbs.unit = "GB/s"


class DecodeProduct:
    """y = W @ x for one x row: activation quantisation plus the integer dot products."""
    params = (DECODE_TYPES, SHAPES)
    param_names = ["type", "rows_x_cols"]
    timeout = 300

    def setup(self, type_name, shape):
        self.t, self.rows, self.cols = _parse(type_name, shape)
        rng = np.random.default_rng(0)
        self.raw = _weight(self.t, self.rows, self.cols, rng)
        self.x = rng.standard_normal(self.cols, dtype=np.float32)
        self.n_threads = _kernels.default_num_threads()
        _kernels.qmatmul(self.raw, self.t, (self.rows, self.cols), self.x)   # OpenMP start-up

    def time_qmatmul(self, type_name, shape):
        _kernels.qmatmul(self.raw, self.t, (self.rows, self.cols), self.x)

    def track_stream_gbs(self, type_name, shape):
        """GB/s of weight read when each call reads a different copy (>= 512 MB in all)."""
        stream, n_copies = _TOOL.streamed(self.raw)
        seconds = _TOOL.time_gemv(stream, self.t, self.rows, self.cols, n_copies, self.n_threads,
                                  min_time=0.05)
        return self.raw.nbytes / seconds / 1e9

    track_stream_gbs.unit = "GB/s"


class PrefillProduct:
    """Y = X @ W.T for 64 x rows (dequantised tiles + BLAS sgemm)."""
    params = (["Q4_1", "Q8_0", "Q4_K", "F16"], ["1536x576", "576x1536"])
    param_names = ["type", "rows_x_cols"]

    def setup(self, type_name, shape):
        self.t, self.rows, self.cols = _parse(type_name, shape)
        rng = np.random.default_rng(0)
        self.raw = _weight(self.t, self.rows, self.cols, rng)
        self.x = rng.standard_normal((64, self.cols), dtype=np.float32)
        _kernels.qmatmul(self.raw, self.t, (self.rows, self.cols), self.x)   # BLAS start-up

    def time_qmatmul_t64(self, type_name, shape):
        _kernels.qmatmul(self.raw, self.t, (self.rows, self.cols), self.x)


class PromptTiles:
    """64 tokens through the compiled forward's prompt products, one thread: the register tiles
    against the T = 1 products (a block of 16 rows at a time for every token)."""
    params = (["F32", "F16", "BF16",
               "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
               "IQ4_NL", "IQ4_XS"], ["1536x1536"])
    param_names = ["type", "rows_x_cols"]

    def setup(self, type_name, shape):
        self.t, self.rows, self.cols = _parse(type_name, shape)
        if int(self.t) not in matmul.tiled_types():
            raise NotImplementedError(f"no {type_name} tiles on this build")   # asv: skipped
        rng = np.random.default_rng(0)
        self.raw = _weight(self.t, self.rows, self.cols, rng)
        self.x = rng.standard_normal((64, self.cols), dtype=np.float32)
        self.y = np.empty((64, self.rows), np.float32)

    def time_tiles_t64(self, type_name, shape):
        matmul._gemm_rows_into(self.raw, int(self.t), 0, self.rows, self.cols, self.x, self.y)

    def time_single_token_t64(self, type_name, shape):
        matmul._gemm_rows_into(self.raw, int(self.t), 0, self.rows, self.cols, self.x, self.y, False)


class Dequantize:
    """4 Mi elements of float32 output from random blocks."""
    params = [t.name for t in _kernels.DEQUANTIZE_TYPES]
    param_names = ["type"]

    def setup(self, type_name):
        self.t = GGMLType[type_name]
        self.raw, self.out = _TOOL.dequant_case(self.t, 1 << 22, np.random.default_rng(0))
        self.n_threads = _kernels.default_num_threads()

    def time_dequantize(self, type_name):
        dequant.dequantize_into(self.raw, int(self.t), self.t.block_size, self.t.type_size,
                                self.out, self.n_threads)


class Quantize:
    """1 Mi float32 values to each quantised type."""
    params = [t.name for t in _kernels.QUANTIZE_TYPES]
    param_names = ["type"]

    def setup(self, type_name):
        self.t = GGMLType[type_name]
        self.x = np.random.default_rng(0).standard_normal((1024, 1024), dtype=np.float32)

    def time_quantize(self, type_name):
        _kernels.quantize(self.x, self.t)
