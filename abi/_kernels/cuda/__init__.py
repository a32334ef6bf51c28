"""GPU kernels (numba CUDA): quantised products, norms, RoPE, attention and sampling.

Why numba-cuda rather than CuPy RawKernels: the kernels are Python, so the very same
source runs in numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) on machines without a
GPU -- CI checks every kernel, and a whole forward pass, against the CPU runtime there --
and numba is already a dependency. CUDA C would be checkable in CI only through a numpy
re-implementation of each kernel, a second copy that can drift from the first.

Importing this package imports numba.cuda; ``abi`` itself never does until the "cuda"
backend is chosen. ``layout`` (numpy only) packs GGUF weights for the device."""
