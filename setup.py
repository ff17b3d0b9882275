"""Build r1core and its extension r1core._C.

The C++ CPU kernels are always built.  The CUDA kernels are added when the installed torch is a
CUDA build and nvcc is found, unless R1CORE_NO_CUDA=1.  Environment switches:

  R1CORE_NO_EXT=1      skip the extension entirely (pure Python + Triton install)
  R1CORE_NO_CUDA=1     build only the CPU kernels even where CUDA is available
  R1CORE_CUDA_ARCH     CUDA arch list, default "9.0" (Hopper: sm_90a features are opt-in per kernel)
  R1CORE_CPU_ARCH      value for -march, default "native" (the extension is built where it runs)
  R1CORE_REQUIRE_CUDA=1  fail (instead of building CPU-only) when torch has CUDA but no toolkit is found
  CUDA_HOME            the CUDA toolkit to use (else found as below)

Build without build isolation so the extension is compiled against the torch you already have:
    pip install -e . --no-build-isolation

Finding the CUDA toolkit (find_cuda_home): torch guesses CUDA_HOME as the folder above the `nvcc` on
PATH, which is wrong when that nvcc is a wrapper script (/usr/local/bin/nvcc -> exec the real one).
Here the order is: CUDA_HOME / CUDA_PATH (must be a toolkit, else an error), the real nvcc behind the
one on PATH (symlinks resolved, then nvcc's own `-dryrun` report of its install root), /usr/local/cuda,
/usr/local/cuda-* (newest first), /opt/cuda, and NVIDIA's pip layout (site-packages/nvidia/cu*/ with a
bin/nvcc).  A toolkit is a folder with bin/nvcc and include/cuda_runtime.h.  With a CUDA torch and no
toolkit the CPU kernels are built and a warning says what was looked at (R1CORE_REQUIRE_CUDA=1 makes
that an error); a toolkit whose major version differs from torch's CUDA is an error.
"""
import glob
import os
import re
import shutil
import site
import subprocess
import sys

from setuptools import setup

PACKAGES = [
    "r1core",
    "r1core.ref",
    "r1core.ops",
    "r1core.ops.grpo",
    "r1core.models",
    "r1core.rollout",
    "r1core.rewards",
    "r1core.tasks",
    "r1core.train",
    "r1core.integrations",
    "r1core._kernels",
    "r1core.bench",
]


def _is_toolkit(root: str | None) -> bool:
    return bool(root) and os.path.isfile(os.path.join(root, "include", "cuda_runtime.h")) and os.access(
        os.path.join(root, "bin", "nvcc"), os.X_OK)


def _version_key(path: str) -> tuple:
    return tuple(int(n) for n in re.findall(r"\d+", os.path.basename(path)))


def _nvcc_reported_root(nvcc: str) -> str | None:
    """The install root nvcc itself reports (`#$ TOP=<root>/bin/..` in a dry run), right even when the
    nvcc on PATH is a wrapper script that execs the real one."""
    try:
        out = subprocess.run([nvcc, "-dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"^#\$ TOP=(.+)$", out.stderr + out.stdout, re.MULTILINE)
    return os.path.normpath(m.group(1).strip()) if m else None


def find_cuda_home(env=None) -> tuple[str | None, list[str]]:
    """-> (CUDA toolkit root or None, the places looked at, for the error message)."""
    env = os.environ if env is None else env
    for var in ("CUDA_HOME", "CUDA_PATH"):
        root = env.get(var)
        if root:
            if not _is_toolkit(root):
                missing = [p for p in ("bin/nvcc", "include/cuda_runtime.h") if not os.path.exists(os.path.join(root, p))]
                raise SystemExit(f"r1core setup: {var}={root} is not a CUDA toolkit (missing {', '.join(missing)})")
            return root, [f"{var}={root}"]
    tried = []
    nvcc = shutil.which("nvcc", path=env.get("PATH"))
    if nvcc:
        real = os.path.realpath(nvcc)
        for root in (os.path.dirname(os.path.dirname(real)), _nvcc_reported_root(nvcc)):
            if root and root not in tried:
                tried.append(root)
                if _is_toolkit(root):
                    return root, tried
    candidates = ["/usr/local/cuda", *sorted(glob.glob("/usr/local/cuda-*"), key=_version_key, reverse=True),
                  "/opt/cuda"]
    site_dirs = [*getattr(site, "getsitepackages", lambda: [])(), site.getusersitepackages()]
    for sp in site_dirs:
        candidates += sorted(glob.glob(os.path.join(sp, "nvidia", "cu*")), key=_version_key, reverse=True)
    for root in candidates:
        tried.append(root)
        if _is_toolkit(root):
            return root, tried
    return None, tried


def nvcc_version(root: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([os.path.join(root, "bin", "nvcc"), "--version"], capture_output=True, text=True,
                             timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"release (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _cuda_toolkit_for(torch_cuda: str | None) -> str | None:
    """The toolkit to build with, or None for a CPU-only build; exits with a clear message when the
    build cannot be what was asked for.  Sets CUDA_HOME before torch.utils.cpp_extension reads it."""
    if os.environ.get("R1CORE_NO_CUDA") == "1" or torch_cuda is None:
        if os.environ.get("R1CORE_REQUIRE_CUDA") == "1":
            raise SystemExit("r1core setup: R1CORE_REQUIRE_CUDA=1 but "
                             + ("R1CORE_NO_CUDA=1" if torch_cuda else "the installed torch is a CPU build"))
        return None
    root, tried = find_cuda_home()
    if root is None:
        msg = (f"r1core setup: torch has CUDA {torch_cuda} but no CUDA toolkit (bin/nvcc and "
               f"include/cuda_runtime.h) was found; looked at: {', '.join(tried) or 'nothing (no nvcc on PATH)'}."
               " Set CUDA_HOME to the toolkit.")
        if os.environ.get("R1CORE_REQUIRE_CUDA") == "1":
            raise SystemExit(msg)
        print(msg + " Building the CPU kernels only.", file=sys.stderr)
        return None
    have = nvcc_version(root)
    want = tuple(int(x) for x in torch_cuda.split(".")[:2])
    if have is not None and have[0] != want[0]:
        raise SystemExit(f"r1core setup: the CUDA toolkit at {root} is {have[0]}.{have[1]} but torch was built "
                         f"with CUDA {torch_cuda}; set CUDA_HOME to a {want[0]}.x toolkit (or R1CORE_NO_CUDA=1)")
    os.environ["CUDA_HOME"] = root
    print(f"r1core setup: CUDA toolkit {root} (nvcc {'.'.join(map(str, have or ())) or '?'}), "
          f"torch CUDA {torch_cuda}, arch {os.environ.get('R1CORE_CUDA_ARCH', '9.0')}", file=sys.stderr)
    return root


def _extensions():
    if os.environ.get("R1CORE_NO_EXT") == "1":
        return [], {}
    import torch

    cuda_home = _cuda_toolkit_for(torch.version.cuda)
    from torch.utils import cpp_extension
    if cuda_home is not None:
        cpp_extension.CUDA_HOME = cuda_home  # read at import, possibly before CUDA_HOME was set above

    here = os.path.dirname(os.path.abspath(__file__))
    cpu_sources = sorted(glob.glob("csrc/**/*_cpu.cpp", recursive=True))
    sources = ["csrc/bindings.cpp"] + cpu_sources
    cxx = ["-O3", "-std=c++17", "-fopenmp", f"-march={os.environ.get('R1CORE_CPU_ARCH', 'native')}"]
    define_macros = []
    if cuda_home is not None:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", os.environ.get("R1CORE_CUDA_ARCH", "9.0"))
        # *_cuda.cpp: torch-facing glue; *.cu: plain CUDA kernels with C launchers (no torch headers,
        # so the test suite can compile-check them with nvcc on machines with a CPU-only torch).
        sources += sorted(glob.glob("csrc/**/*_cuda.cpp", recursive=True))
        sources += sorted(glob.glob("csrc/**/*.cu", recursive=True))
        define_macros.append(("R1CORE_WITH_CUDA", "1"))
        ext_cls = cpp_extension.CUDAExtension
        # -warn-spills: ptxas says so at build time if a kernel spills registers to local memory
        extra = {"cxx": cxx, "nvcc": ["-O3", "-std=c++17", "--use_fast_math", "-lineinfo", "-Xptxas=-warn-spills"]}
    else:
        ext_cls = cpp_extension.CppExtension
        extra = {"cxx": cxx}
    ext = ext_cls(
        name="r1core._C",
        sources=sources,
        include_dirs=[os.path.join(here, "csrc")],
        define_macros=define_macros,
        extra_compile_args=extra,
        extra_link_args=["-fopenmp"],
    )
    return [ext], {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)}


if __name__ == "__main__":  # `python setup.py …` and pip's build backend; tests import find_cuda_home
    ext_modules, cmdclass = _extensions()
    # kernels/ ships as r1core._kernels through the symlink r1core/_kernels -> ../kernels, so the source
    # tree imports as-is (no install needed for tests) and nothing installs a top-level `kernels` module.
    setup(
        packages=PACKAGES,
        # the shipped word problems (tests, default run); the bench case files, read through the symlink
        # r1core/bench/cases -> ../../benches, so `r1core bench` works from a wheel without a top-level `benches`
        package_data={"r1core.tasks": ["data/*.jsonl"], "r1core.bench": ["cases/bench_*.py", "cases/kinds_table.py"]},
        ext_modules=ext_modules,
        cmdclass=cmdclass,
    )
