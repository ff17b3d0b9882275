"""Build r1core and its extension r1core._C.

The C++ CPU kernels are always built.  The CUDA kernels are added when the installed torch is a
CUDA build and nvcc is found, unless R1CORE_NO_CUDA=1.  Environment switches:

  R1CORE_NO_EXT=1      skip the extension entirely (pure Python + Triton install)
  R1CORE_NO_CUDA=1     build only the CPU kernels even where CUDA is available
  R1CORE_CUDA_ARCH     CUDA arch list, default "9.0" (Hopper: sm_90a features are opt-in per kernel)
  R1CORE_CPU_ARCH      value for -march, default "native" (the extension is built where it runs)

Build without build isolation so the extension is compiled against the torch you already have:
    pip install -e . --no-build-isolation
"""
import glob
import os

from setuptools import setup

PACKAGES = [
    "r1core",
    "r1core.ref",
    "r1core.ops",
    "r1core.models",
    "r1core.rollout",
    "r1core.rewards",
    "r1core.tasks",
    "r1core.train",
    "r1core.integrations",
    "r1core._kernels",
    "r1core.bench",
]


def _extensions():
    if os.environ.get("R1CORE_NO_EXT") == "1":
        return [], {}
    import torch
    from torch.utils import cpp_extension

    here = os.path.dirname(os.path.abspath(__file__))
    cpu_sources = sorted(glob.glob("csrc/**/*_cpu.cpp", recursive=True))
    sources = ["csrc/bindings.cpp"] + cpu_sources
    cxx = ["-O3", "-std=c++17", "-fopenmp", f"-march={os.environ.get('R1CORE_CPU_ARCH', 'native')}"]
    define_macros = []
    with_cuda = (
        os.environ.get("R1CORE_NO_CUDA") != "1"
        and torch.version.cuda is not None
        and cpp_extension.CUDA_HOME is not None
    )
    if with_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", os.environ.get("R1CORE_CUDA_ARCH", "9.0"))
        # *_cuda.cpp: torch-facing glue; *.cu: plain CUDA kernels with C launchers (no torch headers,
        # so the test suite can compile-check them with nvcc on machines with a CPU-only torch).
        sources += sorted(glob.glob("csrc/**/*_cuda.cpp", recursive=True))
        sources += sorted(glob.glob("csrc/**/*.cu", recursive=True))
        define_macros.append(("R1CORE_WITH_CUDA", "1"))
        ext_cls = cpp_extension.CUDAExtension
        extra = {"cxx": cxx, "nvcc": ["-O3", "-std=c++17", "--use_fast_math", "-lineinfo"]}
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


ext_modules, cmdclass = _extensions()

# kernels/ ships as r1core._kernels through the symlink r1core/_kernels -> ../kernels, so the source
# tree imports as-is (no install needed for tests) and nothing installs a top-level `kernels` module.
setup(
    packages=PACKAGES,
    package_data={"r1core.tasks": ["data/*.jsonl"]},  # the shipped word problems (tests, default run)
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
