"""Triton kernels of r1core, installed as `r1core._kernels` (never as a top-level `kernels`: that
name is another PyPI package).  Each module holds @triton.jit kernels plus the host function that
allocates and launches them; nothing here imports r1core.  Import through
`r1core._backend.kernels(name)`, which switches the Triton interpreter on where there is no GPU.
"""
