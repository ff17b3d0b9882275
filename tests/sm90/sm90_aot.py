"""Compile r1core's Triton kernels ahead of time for sm_90 (H100/H200) on a machine without a GPU,
and report what the compiler made of each: registers, stack frame (spills), shared memory, SASS
instruction counts (HGMMA = wgmma, HMMA = mma.sync, MEMBAR fences, LDL/STL local memory, atomics)
and the PTX's vector loads and atomic orderings.

One spec per compile, plain JSON:
    {"label": "down_bwd BM=128", "file": "kernels/moe_gemm.py", "kernel": "_down_bwd_kernel",
     "signature": {"dy_ptr": "*bf16", "S": "i32", ...},  # every runtime argument
     "constexprs": {"BLOCK_M": 128, "SHIFT": {"tl": "float32"}, ...},
     "div16": ["H", "stride_we"],   # ints the JIT would see as multiples of 16 (pointers always are)
     "num_warps": 8, "num_stages": 4}

`compile_reports(specs)` (tests/sm90/sm90_aot.py) runs the compiles in a fresh interpreter (the suite sets TRITON_INTERPRET=1,
under which @triton.jit builds interpreter functions) and returns one report per spec; the kernel
files are loaded by path, so nothing of r1core (or its extension) is imported there.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SASS_OPS = ("HGMMA", "HMMA", "MEMBAR", "LDL", "STL", "ATOM", "ATOMG", "RED", "REDG", "LDGSTS", "FFMA")


class AOTUnavailable(RuntimeError):
    """This Triton cannot compile for CUDA ahead of time (no CUDA backend or no AOT API)."""


def compile_reports(specs: list[dict], timeout: float = 900) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # what the JIT does by default (and no 3.9 warning)
    res = subprocess.run([sys.executable, __file__], input=json.dumps(specs), capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=timeout)
    if res.returncode == 3:
        raise AOTUnavailable(res.stderr.strip().splitlines()[-1])
    if res.returncode != 0:
        raise RuntimeError(f"AOT compile failed:\n{res.stderr[-4000:]}")
    return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]


# ---------------------------------------------------------------------------------------------
# the child: compile, disassemble, count
# ---------------------------------------------------------------------------------------------
def _tool(name: str) -> str:
    import shutil
    import triton
    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    return str(bundled) if bundled.exists() else (shutil.which(name) or name)


def _load(path: str, cache: dict):
    import importlib.util
    if path not in cache:
        spec = importlib.util.spec_from_file_location(f"_aot_{Path(path).stem}", ROOT / path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        cache[path] = mod
    return cache[path]


def _report(spec: dict, modules: dict, workdir: Path) -> dict:
    import re
    from collections import Counter

    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = getattr(_load(spec["file"], modules), spec["kernel"])
    consts = {k: getattr(tl, v["tl"]) if isinstance(v, dict) else v for k, v in spec["constexprs"].items()}
    sig = {}
    for name in fn.arg_names:  # the kernel's own argument order
        if name in consts:
            sig[name] = "constexpr"
        elif name in spec["signature"]:
            sig[name] = spec["signature"][name]
        else:
            raise KeyError(f"{spec['label']}: no type for argument {name!r} of {spec['kernel']}")
    div = set(spec.get("div16", ()))
    attrs = {(i,): [["tt.divisibility", 16]] for i, (n, t) in enumerate(sig.items()) if t.startswith("*") or n in div}
    src = ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs)
    k = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                       options={"num_warps": spec["num_warps"], "num_stages": spec.get("num_stages", 3)})
    cubin = workdir / "k.cubin"
    cubin.write_bytes(k.asm["cubin"])
    usage = subprocess.run([_tool("cuobjdump"), "--dump-resource-usage", str(cubin)], capture_output=True,
                           text=True, check=True).stdout
    sass = subprocess.run([_tool("cuobjdump"), "--dump-sass", str(cubin)], capture_output=True, text=True,
                          check=True).stdout
    res = dict(re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", usage))
    ops = Counter(re.findall(r"^\s+/\*[0-9a-f]{4}\*/\s+(?:@!?U?P[T\d]+\s+)?([A-Z][A-Z0-9_]*)", sass, re.M))
    fences = Counter(re.findall(r"\b(MEMBAR\.[A-Z.]+)", sass))
    ptx = k.asm["ptx"]
    return {
        "label": spec["label"], "kernel": spec["kernel"],
        "regs": int(res.get("REG", -1)), "stack": int(res.get("STACK", -1)), "local": int(res.get("LOCAL", -1)),
        "shared": int(getattr(k.metadata, "shared", -1)),
        "sass": {op: ops.get(op, 0) for op in SASS_OPS}, "fences": dict(fences),
        "ptx_v4_loads": len(re.findall(r"\bld\.global(?:\.\w+)*\.v4\b", ptx)),
        "ptx_v4_stores": len(re.findall(r"\bst\.global(?:\.\w+)*\.v4\b", ptx)),
        "ptx_wgmma": ptx.count("wgmma.mma_async"),
        "ptx_atomics": dict(Counter(re.findall(r"\b((?:atom|red)(?:\.\w+)*)", ptx))),
    }


def _main() -> int:
    import tempfile
    try:
        import triton  # noqa: F401
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.compiler import ASTSource  # noqa: F401
        import triton.backends.nvidia  # noqa: F401
    except ImportError as e:
        print(f"this Triton cannot compile for CUDA ahead of time: {e}", file=sys.stderr)
        return 3
    specs = json.loads(sys.stdin.read())
    modules: dict = {}
    with tempfile.TemporaryDirectory() as d:
        for spec in specs:
            print(json.dumps(_report(spec, modules, Path(d))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
