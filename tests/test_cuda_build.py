"""setup.py finds the CUDA toolkit the way a user's machine has it: behind an nvcc wrapper script or a
symlink, and says what is wrong with a CUDA_HOME that is not a toolkit.  Fake toolkits in tmp
folders: no CUDA needed, and the real /usr/local/cuda cannot make these pass (it is looked at last)."""
import importlib.util
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup_mod():
    spec = importlib.util.spec_from_file_location("r1core_setup", ROOT / "setup.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # setup() itself only runs as __main__
    return mod


def _toolkit(root: Path) -> Path:
    """A fake toolkit whose nvcc answers -dryrun with its install root, as the real one does."""
    (root / "bin").mkdir(parents=True)
    (root / "include").mkdir()
    (root / "include" / "cuda_runtime.h").write_text("")
    nvcc = root / "bin" / "nvcc"
    nvcc.write_text(f'#!/bin/sh\necho "#\\$ _HERE_={root}/bin" >&2\necho "#\\$ TOP={root}/bin/.." >&2\n'
                    'echo "Cuda compilation tools, release 13.0, V13.0.88"\n')
    nvcc.chmod(0o755)
    return root


def test_finds_the_toolkit_behind_a_wrapper_script(setup_mod, tmp_path):
    tk = _toolkit(tmp_path / "opt" / "toolkit-13.0")
    wrap = tmp_path / "wrap"
    wrap.mkdir()
    (wrap / "nvcc").write_text(f'#!/bin/sh\nexec {tk}/bin/nvcc "$@"\n')
    (wrap / "nvcc").chmod(0o755)
    root, tried = setup_mod.find_cuda_home({"PATH": f"{wrap}:/usr/bin:/bin"})
    assert root == str(tk)
    assert tried[0] == str(tmp_path)  # torch's guess (the folder above the wrapper's bin) was looked at first
    assert setup_mod.nvcc_version(root) == (13, 0)


def test_finds_the_toolkit_behind_a_symlink(setup_mod, tmp_path):
    tk = _toolkit(tmp_path / "cuda-x")
    link = tmp_path / "links"
    link.mkdir()
    os.symlink(tk / "bin" / "nvcc", link / "nvcc")
    root, _ = setup_mod.find_cuda_home({"PATH": str(link)})
    assert root == str(tk)


def test_cuda_home_that_is_not_a_toolkit_is_an_error(setup_mod, tmp_path):
    (tmp_path / "bin").mkdir()
    with pytest.raises(SystemExit, match=re.escape("include/cuda_runtime.h")):
        setup_mod.find_cuda_home({"CUDA_HOME": str(tmp_path), "PATH": ""})
    tk = _toolkit(tmp_path / "good")
    assert setup_mod.find_cuda_home({"CUDA_HOME": str(tk), "PATH": ""})[0] == str(tk)


def test_no_toolkit_anywhere_lists_where_it_looked(setup_mod, tmp_path, monkeypatch):
    monkeypatch.setattr(setup_mod.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(setup_mod, "_is_toolkit", lambda root: False)
    root, tried = setup_mod.find_cuda_home({"PATH": str(tmp_path)})
    assert root is None and "/usr/local/cuda" in tried


def test_cuda_glue_includes_no_cuda_library_headers():
    # ATen/cuda/CUDAContext.h pulls in cusparse.h/cublas headers that a plain toolkit need not ship
    for src in sorted((ROOT / "csrc").rglob("*_cuda.cpp")):
        includes = re.findall(r"#include\s*[<\"]([^>\"]+)", src.read_text())
        assert not [h for h in includes if h.startswith("ATen/cuda/")], f"{src.name} includes {includes}"
