"""Static sm_90 tier (no GPU): every Triton kernel, at the launch configs its op picks on a GPU
(bf16, Qwen/DeepSeek-sized strides), compiles for Hopper, and the SASS says what we meant:
  - tensor-core kernels use wgmma (HGMMA) where BLOCK_M >= 64 and mma.sync (HMMA) below: wgmma's
    smallest tile is 64 rows per warpgroup, so small expert loads (BLOCK_M 16/32, chosen to keep the
    per-expert padding small) run on mma.sync by design (docs/gpu.md);
  - no register spills: no stack frame, no LDL/STL (local memory) in any kernel;
  - no GPU-scope fences: float32 accumulation atomics are relaxed (acq_rel would put a
    MEMBAR.ALL.GPU around each);
  - the GRPO row kernels move logits 128 bits at a time.
Configs come from the kernels' own heuristics, so a retuned tile is checked as it ships."""
from __future__ import annotations

import pytest
import torch

from r1core._kernels import fused_linear as FL
from r1core._kernels import grpo_loss as GL
from r1core._kernels import moe_gemm as MG
from sm90_aot import AOTUnavailable, compile_reports

pytestmark = pytest.mark.sm90
CUDA = torch.device("cuda")  # only a label for the heuristics: nothing touches a device here
H, I, TOP_K = 2048, 768, 8   # Qwen3-30B-A3B expert shapes
V = 151936                   # Qwen vocabulary

_MOE_INTS = ("S", "H", "I", "K", "N", "M", "num_m")


def _moe_sig(ptrs: dict, ints: tuple) -> dict:
    return {**ptrs, **dict.fromkeys(ints, "i32")}


def _spec(label, file, kernel, signature, constexprs, cfg, div16=()):
    cfg = dict(cfg)
    return {"label": label, "file": file, "kernel": kernel, "signature": signature,
            "constexprs": {**constexprs, **{k: v for k, v in cfg.items() if k not in ("num_warps", "num_stages")}},
            "num_warps": cfg["num_warps"], "num_stages": cfg.get("num_stages", 3), "div16": list(div16)}


def moe_specs(kind: str) -> list[dict]:
    prec = dict(PRECISION="tf32", WIDEN=False)
    bf, i32, f32 = "*bf16", "*i32", "*fp32"
    out = []
    for BM in (16, 32, 64, 128):  # every align block block_m_for can choose
        lab = f"{kind} BM={BM}"
        if kind == "gate_up":
            sig = _moe_sig(dict(x_ptr=bf, w13_ptr=bf, sorted_ids_ptr=i32, block_expert_ptr=i32, act_ptr=bf, h_ptr=bf),
                           ("S", "H", "I", "num_m", "stride_xt", "stride_we", "stride_wn"))
            out.append(_spec(lab, "kernels/moe_gemm.py", "_gate_up_kernel", sig,
                             dict(TOP_K=TOP_K, SAVE_H=True, BLOCK_M=BM, **prec), MG._cfg(CUDA, BM, "gate_up"),
                             ("H", "I", "stride_xt", "stride_we", "stride_wn")))
        elif kind == "scatter":
            sig = _moe_sig(dict(a_ptr=bf, b_ptr=bf, sorted_ids_ptr=i32, block_expert_ptr=i32, weights_ptr=f32,
                                out_ptr=bf), ("S", "K", "N", "num_m", "stride_ap", "stride_be", "stride_bk", "stride_bn"))
            out.append(_spec(lab, "kernels/moe_gemm.py", "_gemm_scatter_kernel", sig,
                             dict(SCALE=True, BLOCK_M=BM, **prec), MG._cfg(CUDA, BM, "scatter"),
                             ("K", "N", "stride_ap", "stride_be", "stride_bk")))
        elif kind == "down_bwd":
            sig = _moe_sig(dict(dy_ptr=bf, w2_ptr=bf, h_ptr=bf, sorted_ids_ptr=i32, block_expert_ptr=i32,
                                weights_ptr=f32, dh_ptr=bf, dw_part_ptr=f32),
                           ("S", "H", "I", "num_m", "stride_dyt", "stride_we", "stride_wh"))
            out.append(_spec(lab, "kernels/moe_gemm.py", "_down_bwd_kernel", sig,
                             dict(TOP_K=TOP_K, BLOCK_M=BM, **prec), MG._cfg(CUDA, BM, "down_bwd"),
                             ("H", "I", "stride_dyt", "stride_we", "stride_wh")))
    if kind == "wgrad":  # one config (not BM-dependent); dw13 (dh permuted x x gathered), dw2 (scaled dy x act)
        sig = _moe_sig(dict(l_ptr=bf, r_ptr=bf, sorted_ids_ptr=i32, seg_start_ptr=i32, counts_ptr=i32,
                            weights_ptr=f32, out_ptr=bf), ("M", "N", "stride_l", "stride_r", "stride_oe", "stride_om"))
        for name, lg, rg, ls in (("dw13", False, True, False), ("dw2", True, False, True)):
            out.append(_spec(f"wgrad {name}", "kernels/moe_gemm.py", "_expert_wgrad_kernel", sig,
                             dict(TOP_K=TOP_K, L_GATHER=lg, R_GATHER=rg, L_SCALE=ls, **prec), MG._wgrad_cfg(CUDA),
                             ("M", "N", "stride_l", "stride_r", "stride_oe", "stride_om")))
    return out


def fused_linear_specs() -> list[dict]:
    bf, f32 = "*bf16", "*fp32"
    cfg = FL._tiles(H, CUDA)
    prec = dict(DOT_PREC="tf32", DOT_F32=False)  # bf16 operands (DOT_PREC only concerns float32 ones)
    fwd = dict(h_ptr=bf, stride_hn="i32", w_ptr=bf, stride_wv="i32", b_ptr=bf, tgt_ptr="*i64", m_ptr=f32, s_ptr=f32,
               xt_ptr=f32, t_ptr=f32, N="i32", V="i32", H="i32", v_per_slice="i32", scale2="fp32")
    bwd = dict(h_ptr=bf, stride_hn="i32", w_ptr=bf, stride_wv="i32", b_ptr=bf, tgt_ptr="*i64", lse2_ptr=f32,
               g_ptr=f32, ent_ptr=f32, gh_ptr=f32, dh_ptr=f32, dw_ptr=f32, db_ptr=f32, N="i32", V="i32", H="i32",
               scale2="fp32")
    div = ("stride_hn", "stride_wv", "H", "v_per_slice")
    out = []
    for ent in (False, True):  # the entropy variants: one more running sum / the entropy gradient term
        tag = " +entropy" if ent else ""
        out += [
            _spec("lse_fwd" + tag, "kernels/fused_linear.py", "_lse_fwd_kernel", fwd,
                  dict(HAS_BIAS=False, ENTROPY=ent, **prec), FL._tiles(H, CUDA, ent), div),
            _spec("grad_bwd dh+dW+db" + tag, "kernels/fused_linear.py", "_grad_bwd_kernel", bwd,
                  dict(HAS_BIAS=True, NEED_DH=True, NEED_DW=True, NEED_DB=True, GROUP_N=8, HAS_DENT=ent, **prec),
                  cfg, div),
        ]
    return out


def grpo_loss_specs() -> list[dict]:
    f32 = "*fp32"
    block, warps = GL._config(V, torch.bfloat16, CUDA)
    fwd = dict(logits_ptr="*bf16", stride_b="i64", stride_t="i64", targets_ptr="*i64", adv_ptr=f32, mask_ptr=f32,
               w_ptr=f32, old_ptr=f32, ref_ptr=f32, logp_ptr=f32, lse_ptr=f32, dlogp_ptr=f32, terms_ptr=f32,
               ent_ptr=f32, N="i32", T="i32", V="i32", inv_temp="fp32", beta="fp32", eps_low="fp32", eps_high="fp32")
    bwd = dict(logits_ptr="*bf16", stride_b="i64", stride_t="i64", dlogits_ptr="*bf16", dstride_b="i64",
               dstride_t="i64", targets_ptr="*i64", lse_ptr=f32, dlogp_ptr=f32, grad_ptr=f32, ent_ptr=f32,
               dent_ptr=f32, T="i32", V="i32", inv_temp="fp32")
    # what the JIT specialises on launch when pointers, strides and V are multiples of 16
    div = ("stride_b", "stride_t", "dstride_b", "dstride_t", "V")
    cfg = dict(num_warps=warps, num_stages=3)
    out = []
    for ent in (False, True):  # the entropy variants: one more running sum / the entropy gradient term
        tag = " +entropy" if ent else ""
        out += [
            _spec("grpo_fwd" + tag, "kernels/grpo_loss.py", "_grpo_fwd_kernel", fwd,
                  dict(LOSS=True, HAS_OLD=True, HAS_REF=True, BLOCK_V=block, ENTROPY=ent), cfg, div),
            _spec("grpo_bwd" + tag, "kernels/grpo_loss.py", "_grpo_bwd_kernel", bwd,
                  dict(BLOCK_V=block, HAS_DENT=ent), cfg, div),
        ]
    return out


def advantage_specs() -> list[dict]:
    ints = dict.fromkeys(["n_groups", "G", "stride_g", "stride_j", "n_tiles", "n_partials"], "i32")
    main = {"r_ptr": "*fp32", "out_ptr": "*fp32", "bad_ptr": "*i32", "part_ptr": "*fp32", **ints, "eps": "fp32"}
    f32, f64 = {"tl": "float32"}, {"tl": "float64"}
    out = [_spec("batch_moments", "kernels/advantage.py", "_batch_moments_kernel",
                 {"r_ptr": "*bf16", "part_ptr": "*fp32", **ints}, dict(SHIFT=f32, BLOCK_GROUPS=1, BLOCK_G=4096),
                 dict(num_warps=8))]
    for scale, mode, one, shift in ((0, 0, True, f32), (1, 2, False, f64)):
        out.append(_spec(f"advantage scale={scale} mode={mode}", "kernels/advantage.py", "_advantage_kernel", main,
                         dict(SCALE=scale, BASELINE=1, BATCH_MODE=mode, CHECK_FINITE=True, SHIFT=shift,
                              BLOCK_GROUPS=128 if one else 1, BLOCK_G=16 if one else 4096, BLOCK_P=256,
                              ONE_CHUNK=one), dict(num_warps=8)))
    return out


def moe_route_specs() -> list[dict]:
    E = 128  # Qwen3-30B-A3B router: BLOCK_E = 128, BLOCK_T = 4096 // 128 = 32, 4 warps (the launcher's rule)
    sig = dict(logits_ptr="*bf16", bias_ptr="*fp32", weights_ptr="*fp32", ids_ptr="*i64", T="i32", E="i32",
               stride_lt="i32", routed_scale="fp32")
    return [_spec("moe_route softmax", "kernels/moe_route.py", "_moe_route_kernel", sig,
                  dict(TOP_K=8, N_GROUP=1, TOPK_GROUP=1, SCORING=0, HAS_BIAS=False, NORM=True, REPLAY=False,
                       BLOCK_T=32, BLOCK_E=E, BLOCK_G=1, BLOCK_K=8), dict(num_warps=4), ("E", "stride_lt"))]


FAMILIES = {
    "moe gate_up": (lambda: moe_specs("gate_up"), True),
    "moe scatter": (lambda: moe_specs("scatter"), True),
    "moe down_bwd": (lambda: moe_specs("down_bwd"), True),
    "moe wgrad": (lambda: moe_specs("wgrad"), True),
    "fused_linear": (fused_linear_specs, True),
    "grpo_loss": (grpo_loss_specs, False),
    "advantage": (advantage_specs, False),
    "moe_route": (moe_route_specs, False),
}


def _reports(specs):
    try:
        return compile_reports(specs)
    except AOTUnavailable as e:
        pytest.skip(str(e))


def _block_m(spec) -> int:
    return spec["constexprs"].get("BLOCK_M", spec["constexprs"].get("BN", 0))


def problems(spec: dict, rep: dict, tensor_core: bool) -> list[str]:
    """What is wrong with one compiled kernel (empty: nothing)."""
    bad = []
    sass = rep["sass"]
    if rep["stack"] != 0 or rep["local"] != 0 or sass["LDL"] or sass["STL"]:
        bad.append(f"spills: stack {rep['stack']} B, local {rep['local']} B, {sass['LDL']} LDL / {sass['STL']} STL "
                   f"({rep['regs']} registers)")
    gpu_fences = {k: v for k, v in rep["fences"].items() if "GPU" in k or "SYS" in k}
    if gpu_fences:
        bad.append(f"GPU-scope fences {gpu_fences}; atomics in the PTX: {rep['ptx_atomics']}")
    if any("acq_rel" in a or "acquire" in a or "release" in a for a in rep["ptx_atomics"]):
        bad.append(f"atomics with acquire/release ordering: {rep['ptx_atomics']}")
    if tensor_core:
        bm = _block_m(spec)
        if bm >= 64 and not sass["HGMMA"]:
            bad.append(f"BLOCK_M={bm} but no wgmma (HGMMA {sass['HGMMA']}, HMMA {sass['HMMA']})")
        if bm < 64 and not (sass["HGMMA"] or sass["HMMA"]):
            bad.append(f"BLOCK_M={bm}: no tensor-core instruction at all")
    return bad


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_kernels_compile_clean_for_sm90(family):
    make, tensor_core = FAMILIES[family]
    specs = make()
    reports = _reports(specs)
    assert len(reports) == len(specs)
    found = {}
    for spec, rep in zip(specs, reports):
        bad = problems(spec, rep, tensor_core)
        if bad:
            found[spec["label"]] = bad
    assert not found, "\n".join(f"{k}: {'; '.join(v)}" for k, v in found.items())
    if family == "grpo_loss":  # the row kernels are bandwidth-bound: 128-bit loads and stores of logits
        for spec, rep in zip(specs, reports):
            assert rep["ptx_v4_loads"], f"{spec['label']}: logits rows are not loaded 128 bits at a time"
            if "bwd" in spec["label"]:
                assert rep["ptx_v4_stores"], f"{spec['label']}: rows are not stored 128 bits at a time"


def test_problems_catches_spills_fences_and_missing_wgmma():
    # the checker itself must be able to fail: feed it what the unfixed kernels compiled to
    spec = {"constexprs": {"BLOCK_M": 128}}
    clean = {"regs": 168, "stack": 0, "local": 0, "fences": {}, "ptx_atomics": {"red.global.gpu.relaxed.add.f32": 4},
             "sass": {"HGMMA": 4, "HMMA": 0, "LDL": 0, "STL": 0}}
    assert problems(spec, clean, True) == []
    spilled = {**clean, "regs": 255, "stack": 720, "sass": {**clean["sass"], "LDL": 194, "STL": 180}}
    assert "spills" in problems(spec, spilled, True)[0]
    fenced = {**clean, "fences": {"MEMBAR.ALL.GPU": 16}, "ptx_atomics": {"atom.global.gpu.acq_rel.add.f32": 16}}
    assert len(problems(spec, fenced, True)) == 2
    hmma = {**clean, "sass": {**clean["sass"], "HGMMA": 0, "HMMA": 32}}
    assert "no wgmma" in problems(spec, hmma, True)[0]
    assert problems({"constexprs": {"BLOCK_M": 32}}, hmma, True) == []
