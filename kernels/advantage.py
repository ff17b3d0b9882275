"""Group-normalised GRPO advantage (docs/spec.md §1) as Triton kernels, plus the host launcher.

Legend: N rewards = n_groups groups of G; a program owns a tile of BLOCK_GROUPS groups x BLOCK_G
columns, i.e. rewards viewed as [n_groups, G] with any strides (a transposed or sliced view is read
in place, never copied).

Maths, per group g with rewards r_0 .. r_{G-1}:
    d_j = r_j - r_0                      shift by the group's first reward: exact 0 for a group of
                                         equal rewards, and no cancellation for 1e4 + noise
    c_j = d_j - mean(d)                  = r_j - mean(r)                          (baseline "mean")
    rloo: r_j - (sum(r) - r_j)/(G-1)     = G/(G-1) * c_j                         (baseline "rloo")
    A_j = c_j / (std + eps)              std = sqrt(sum c^2 / (G-1))   (scale "group", Bessel)
          c_j / (std_all + eps)          std over all N rewards          (scale "batch")
          c_j                            (scale "none", Dr. GRPO)
The shift runs in float64 for float64 rewards and in float32 otherwise; everything after it is
float32 (the shifted values are small, so float32 sums lose nothing that matters: 1e-6 relative).
A denominator of exactly 0 (eps=0 and a constant group) gives A = 0, never NaN.

Launches and bytes (N float32 rewards): scale "group"/"none" is ONE launch that reads each reward
once (4N bytes; the group's first reward is re-read from L1/L2) and writes 4N bytes, two passes in
registers.  Scale "batch" needs the std of all N rewards before any output can be written:
  N <= SMALL_BATCH_N  one launch of a single program that computes the moments, then the tiles;
  larger N            two launches: `_batch_moments_kernel` (<= MAX_PARTIALS programs write partial
                      (count, mean, M2), Chan-combinable, deterministic), then the main kernel, whose
                      programs each combine the <= MAX_PARTIALS partials (a few KB from L2) first.
                      DRAM traffic 8N read + 4N write (the second read mostly hits L2 at 1M rewards).
Groups wider than MAX_BLOCK_G are walked in chunks of MAX_BLOCK_G (Chan's combination of chunk
moments, then a second pass that writes), so any G works.  When the finiteness check is on, a
non-finite reward sets a flag (a benign same-value race, no atomics); the host reads it.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

SCALE_IDS = {"group": 0, "batch": 1, "none": 2}
BASELINE_IDS = {"mean": 0, "rloo": 1}
TILE = 2048            # elements in one program's register tile
MAX_BLOCK_G = 4096     # widest group kept whole in registers; wider groups are walked in chunks
SMALL_BATCH_N = 16384  # scale="batch": up to this many rewards, one single-program launch
MAX_PARTIALS = 256     # scale="batch" above that: at most this many partial moments


# ---------------------------------------------------------------------------------------------
# device helpers
# ---------------------------------------------------------------------------------------------
@triton.jit
def _chan(n_a, mean_a, m2_a, n_b, mean_b, m2_b):
    """Chan et al.'s combination of two sets' (count, mean, M2); either count may be 0."""
    n = n_a + n_b
    delta = mean_b - mean_a
    w_b = n_b / tl.maximum(n, 1.0)
    return n, mean_a + delta * w_b, m2_a + m2_b + delta * delta * n_a * w_b


@triton.jit
def _load_shifted(r_ptr, rows, cols, ref, n_groups, G, stride_g, stride_j, SHIFT: tl.constexpr):
    """The tile rows x cols of rewards minus `ref` ([rows, 1] or scalar), float32, 0 where masked;
    plus the mask and where a reward is not finite."""
    mask = (rows[:, None] < n_groups) & (cols[None, :] < G)
    offs = rows.to(tl.int64)[:, None] * stride_g + cols.to(tl.int64)[None, :] * stride_j
    r = tl.load(r_ptr + offs, mask=mask, other=0.0).to(SHIFT)
    d = tl.where(mask, (r - ref).to(tl.float32), 0.0)
    bad = mask & ((r - r) != 0)  # inf - inf and nan - nan are nan; finite - itself is 0
    return d, mask, bad


@triton.jit
def _moments(r_ptr, ref, t_start, t_step, n_tiles, n_groups, G, stride_g, stride_j,
             SHIFT: tl.constexpr, BLOCK_GROUPS: tl.constexpr, BLOCK_G: tl.constexpr):
    """(count, mean, M2) of rewards - ref over tiles t_start, t_start + t_step, ... < n_tiles."""
    n = tl.zeros([BLOCK_GROUPS], tl.float32)  # the same scalar in every lane (kept as a vector
    mean = tl.zeros([BLOCK_GROUPS], tl.float32)  # so every loop-carried value has one type)
    m2 = tl.zeros([BLOCK_GROUPS], tl.float32)
    for t in range(t_start, n_tiles, t_step):
        rows = t * BLOCK_GROUPS + tl.arange(0, BLOCK_GROUPS)
        for col0 in range(0, G, BLOCK_G):
            cols = col0 + tl.arange(0, BLOCK_G)
            d, mask, _ = _load_shifted(r_ptr, rows, cols, ref, n_groups, G, stride_g, stride_j, SHIFT)
            n_b = tl.sum(tl.sum(mask.to(tl.float32), axis=1), axis=0)
            mean_b = tl.sum(tl.sum(d, axis=1), axis=0) / tl.maximum(n_b, 1.0)
            c = tl.where(mask, d - mean_b, 0.0)
            m2_b = tl.sum(tl.sum(c * c, axis=1), axis=0)
            n, mean, m2 = _chan(n, mean, m2, n_b, mean_b, m2_b)
    return tl.max(n, axis=0), tl.max(mean, axis=0), tl.max(m2, axis=0)


# ---------------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------------
@triton.jit
def _batch_moments_kernel(
    r_ptr,      # rewards [n_groups, G], strides (stride_g, stride_j), any float dtype
    part_ptr,   # float32 [3, n_partials]: count, mean, M2 of (rewards - rewards[0, 0]) per program
    n_groups, G, stride_g, stride_j, n_tiles, n_partials,
    SHIFT: tl.constexpr, BLOCK_GROUPS: tl.constexpr, BLOCK_G: tl.constexpr,
):
    pid = tl.program_id(0)
    ref = tl.load(r_ptr).to(SHIFT)
    n, mean, m2 = _moments(r_ptr, ref, pid, n_partials, n_tiles, n_groups, G, stride_g, stride_j,
                           SHIFT, BLOCK_GROUPS, BLOCK_G)
    tl.store(part_ptr + pid, n)
    tl.store(part_ptr + n_partials + pid, mean)
    tl.store(part_ptr + 2 * n_partials + pid, m2)


@triton.jit
def _advantage_kernel(
    r_ptr,      # rewards [n_groups, G], strides (stride_g, stride_j), fp16/bf16/fp32/fp64
    out_ptr,    # advantages [n_groups, G] float32, contiguous
    bad_ptr,    # int32 [1], set to 1 when a reward is not finite (only read when CHECK_FINITE)
    part_ptr,   # float32 [3, n_partials] batch moments from _batch_moments_kernel (BATCH_MODE 2)
    n_groups, G, stride_g, stride_j, n_tiles, n_partials, eps,
    SCALE: tl.constexpr,         # 0 group, 1 batch, 2 none
    BASELINE: tl.constexpr,      # 0 mean, 1 rloo
    BATCH_MODE: tl.constexpr,    # scale batch: 1 = this (single) program computes the moments, 2 = partials
    CHECK_FINITE: tl.constexpr,
    SHIFT: tl.constexpr,         # dtype of the shift: float64 for float64 rewards, else float32
    BLOCK_GROUPS: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_P: tl.constexpr,
    ONE_CHUNK: tl.constexpr,     # G <= BLOCK_G: the whole group lives in registers
):
    pid = tl.program_id(0)
    n_prog = tl.num_programs(0)
    gf = G * 1.0

    # scale "batch": one denominator for everybody, from the moments of all rewards
    den_batch = 1.0
    if SCALE == 1:
        if BATCH_MODE == 1:
            ref = tl.load(r_ptr).to(SHIFT)
            bn, bmean, bm2 = _moments(r_ptr, ref, 0, 1, n_tiles, n_groups, G, stride_g, stride_j,
                                      SHIFT, BLOCK_GROUPS, BLOCK_G)
        else:
            p = tl.arange(0, BLOCK_P)
            pm = p < n_partials
            n_p = tl.load(part_ptr + p, mask=pm, other=0.0)
            mean_p = tl.load(part_ptr + n_partials + p, mask=pm, other=0.0)
            m2_p = tl.load(part_ptr + 2 * n_partials + p, mask=pm, other=0.0)
            bn = tl.sum(n_p, axis=0)
            bmean = tl.sum(n_p * mean_p, axis=0) / bn
            bm2 = tl.sum(m2_p + n_p * (mean_p - bmean) * (mean_p - bmean), axis=0)
        den_batch = tl.sqrt(bm2 / (bn - 1.0)) + eps

    for t in range(pid, n_tiles, n_prog):
        rows = t * BLOCK_GROUPS + tl.arange(0, BLOCK_GROUPS)
        row_ok = rows < n_groups
        r0 = tl.load(r_ptr + rows.to(tl.int64) * stride_g, mask=row_ok, other=0.0).to(SHIFT)
        out_row = out_ptr + rows.to(tl.int64)[:, None] * G

        if ONE_CHUNK:
            cols = tl.arange(0, BLOCK_G)
            d, mask, bad = _load_shifted(r_ptr, rows, cols, r0[:, None], n_groups, G, stride_g, stride_j, SHIFT)
            mean = tl.sum(d, axis=1) / gf
            c = tl.where(mask, d - mean[:, None], 0.0)
            m2 = tl.sum(c * c, axis=1)
            nbad = tl.sum(tl.sum(bad.to(tl.int32), axis=1), axis=0)
        else:  # pass 1: Chan-combine the moments of each chunk of columns
            n = tl.zeros([BLOCK_GROUPS], tl.float32)
            mean = tl.zeros([BLOCK_GROUPS], tl.float32)
            m2 = tl.zeros([BLOCK_GROUPS], tl.float32)
            nbad = 0
            for col0 in range(0, G, BLOCK_G):
                cols = col0 + tl.arange(0, BLOCK_G)
                d, mask, bad = _load_shifted(r_ptr, rows, cols, r0[:, None], n_groups, G, stride_g, stride_j, SHIFT)
                n_b = tl.minimum(G - col0, BLOCK_G).to(tl.float32)
                mean_b = tl.sum(d, axis=1) / n_b
                cb = tl.where(mask, d - mean_b[:, None], 0.0)
                n, mean, m2 = _chan(n, mean, m2, n_b, mean_b, tl.sum(cb * cb, axis=1))
                nbad += tl.sum(tl.sum(bad.to(tl.int32), axis=1), axis=0)

        if CHECK_FINITE:
            tl.store(bad_ptr, 1, mask=nbad > 0)  # every writer writes 1: a benign race

        factor = 1.0
        if BASELINE == 1:
            factor = gf / (gf - 1.0)  # rloo: r - (sum - r)/(G-1) = G/(G-1) (r - mean)
        if SCALE == 0:
            den = tl.sqrt(m2 / (gf - 1.0)) + eps  # 0 only for a constant group with eps 0: A = 0
            inv = tl.where(den > 0, factor / tl.where(den > 0, den, 1.0), 0.0)
        elif SCALE == 1:
            inv = tl.where(den_batch > 0, factor / tl.where(den_batch > 0, den_batch, 1.0), 0.0)
            inv += tl.zeros([BLOCK_GROUPS], tl.float32)
        else:
            inv = factor + tl.zeros([BLOCK_GROUPS], tl.float32)

        if ONE_CHUNK:
            tl.store(out_row + cols[None, :], c * inv[:, None], mask=mask)
        else:  # pass 2: re-read (from L2), centre and write
            for col0 in range(0, G, BLOCK_G):
                cols = col0 + tl.arange(0, BLOCK_G)
                d, mask, _ = _load_shifted(r_ptr, rows, cols, r0[:, None], n_groups, G, stride_g, stride_j, SHIFT)
                tl.store(out_row + cols[None, :], (d - mean[:, None]) * inv[:, None], mask=mask)


# ---------------------------------------------------------------------------------------------
# host
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def launch_config(n_groups: int, G: int, device: torch.device, max_block_g: int = MAX_BLOCK_G) -> dict:
    """Tile shape and warps for [n_groups, G]: whole groups in a TILE-element register tile, fewer
    groups per program when that leaves the GPU under-filled, chunks of max_block_g for wide groups."""
    block_g = min(triton.next_power_of_2(G), max_block_g)
    one_chunk = G <= block_g
    block_groups = max(1, TILE // block_g) if one_chunk else 1
    if device.type == "cuda":  # at least two programs per SM where the groups allow it
        target = 2 * _sm_count(device.index if device.index is not None else torch.cuda.current_device())
        while block_groups > 1 and triton.cdiv(n_groups, block_groups) < target:
            block_groups //= 2
    elems = block_groups * block_g
    num_warps = 8 if elems >= 4096 else 4 if elems >= 1024 else 2 if elems >= 256 else 1
    return dict(BLOCK_GROUPS=block_groups, BLOCK_G=block_g, ONE_CHUNK=one_chunk, num_warps=num_warps)


def grpo_advantages(rewards_gG: torch.Tensor, *, scale: str = "group", baseline: str = "mean",
                    eps: float = 1e-6, check_finite: bool = True,
                    max_block_g: int = MAX_BLOCK_G, small_batch_n: int = SMALL_BATCH_N,
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Advantages [n_groups, G] float32 (contiguous) of rewards [n_groups, G] (any strides, float
    dtype, n_groups >= 1, G >= 2; validated by the caller), and the int32 [1] non-finite flag (None
    when check_finite is False; reading it is the caller's device sync).  max_block_g and
    small_batch_n override the module's MAX_BLOCK_G and SMALL_BATCH_N (tests reach every path with
    small inputs that way)."""
    n_groups, G = rewards_gG.shape
    assert n_groups >= 1 and G >= 2 and rewards_gG.is_floating_point()
    assert max_block_g >= 2 and max_block_g & (max_block_g - 1) == 0, "max_block_g must be a power of two"
    dev = rewards_gG.device
    out = torch.empty((n_groups, G), dtype=torch.float32, device=dev)
    bad = torch.zeros(1, dtype=torch.int32, device=dev) if check_finite else None
    cfg = launch_config(n_groups, G, dev, max_block_g)
    n_tiles = triton.cdiv(n_groups, cfg["BLOCK_GROUPS"])
    shift = tl.float64 if rewards_gG.dtype == torch.float64 else tl.float32
    s_g, s_j = rewards_gG.stride()

    batch_mode, n_partials, part, grid = 0, 1, out, (n_tiles,)
    if scale == "batch":
        if n_groups * G <= small_batch_n:
            batch_mode, grid = 1, (1,)
        else:
            batch_mode, n_partials = 2, min(MAX_PARTIALS, n_tiles)
            part = torch.empty(3 * n_partials, dtype=torch.float32, device=dev)
            _batch_moments_kernel[(n_partials,)](
                rewards_gG, part, n_groups, G, s_g, s_j, n_tiles, n_partials, SHIFT=shift,
                BLOCK_GROUPS=cfg["BLOCK_GROUPS"], BLOCK_G=cfg["BLOCK_G"], num_warps=cfg["num_warps"])
    _advantage_kernel[grid](
        rewards_gG, out, bad if bad is not None else out, part,
        n_groups, G, s_g, s_j, n_tiles, n_partials, float(eps),
        SCALE=SCALE_IDS[scale], BASELINE=BASELINE_IDS[baseline], BATCH_MODE=batch_mode,
        CHECK_FINITE=check_finite, SHIFT=shift, BLOCK_P=triton.next_power_of_2(n_partials), **cfg)
    return out, bad
