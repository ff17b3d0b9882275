"""Optional dependencies, imported with one clear line when the environment is broken or partial.

A missing package, one of an unexpected version, or one that fails inside its own import (the classic:
Hugging Face's `kernels` shadowed by some folder of that name on sys.path, so transformers stops with
`cannot import name 'CUDAProperties' from 'kernels'`) all end as `MissingDependency`: an ImportError whose
message says what is wrong and the command that fixes it, raised `from None` so the user is not sent
into a traceback deep inside the dependency.  `r1core` on the command line prints that line alone.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from types import ModuleType

# import name -> (distribution name, the r1core extra that installs it)
KNOWN = {
    "trl": ("trl", "trl"),
    "transformers": ("transformers", "trl"),
    "datasets": ("datasets", "trl"),
    "accelerate": ("accelerate", "trl"),
    "triton": ("triton", "triton"),
    "matplotlib": ("matplotlib", "train"),
    "tensorboard": ("tensorboard", "train"),
    "math_verify": ("math-verify", "math"),
}
FIX_ALL = "in a checkout: bash scripts/bootstrap.sh"


class MissingDependency(ImportError):
    """An optional dependency is absent or broken; the message is one line with the fix."""


def version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _where(module: str) -> str:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return "?"
    if spec is None:
        return "nowhere"
    return spec.origin if spec.origin not in (None, "namespace") else \
        f"a folder without __init__.py at {list(spec.submodule_search_locations or [])}"


def explain(module: str, err: BaseException, purpose: str) -> str:
    """One line: what is missing or broken, and the command that fixes it."""
    dist, extra = KNOWN.get(module.split(".")[0], (module.split(".")[0], None))
    install = f"pip install 'r1core[{extra}]'" if extra else f"pip install {dist}"
    failed = getattr(err, "name", None) or ""
    if isinstance(err, ModuleNotFoundError) and failed.split(".")[0] == module.split(".")[0]:
        return f"{purpose} needs {dist}, which is not installed: {install} (or {FIX_ALL})"
    text = " ".join(str(err).split())[:240]
    if "kernels" in text or failed.split(".")[0] == "kernels":
        found = version("kernels")
        return (f"{purpose}: {dist} {version(dist) or ''} could not import Hugging Face's `kernels` package "
                f"(installed: {found or 'none'}; `import kernels` finds {_where('kernels')}): {text}. Fix: "
                "pip install --force-reinstall kernels (the version transformers asks for: `pip check` names it), "
                "and make sure no folder named `kernels` with an __init__.py is on sys.path")
    culprit = failed.split(".")[0] if failed else dist
    return (f"{purpose}: {dist} {version(dist) or ''} is installed but its import failed ({type(err).__name__}: "
            f"{text}); reinstall matching versions: pip install --force-reinstall {culprit} (or {FIX_ALL})")


def require(module: str, purpose: str, attr: str | None = None):
    """import `module` (and return its `attr`, which lazy packages such as trl import only on access), or
    MissingDependency with one line saying why not and how to fix it."""
    try:
        mod: ModuleType = importlib.import_module(module)
        return getattr(mod, attr) if attr else mod
    except ImportError as e:
        raise MissingDependency(explain(module, e, purpose)) from None
    except RuntimeError as e:   # transformers/trl lazy modules wrap the ImportError: "Failed to import …"
        cause = e.__cause__ or e.__context__
        if not isinstance(cause, ImportError):
            raise
        raise MissingDependency(explain(module, cause, purpose)) from None
