"""A fake installed distribution (package folder + dist-info), as pip would leave one: the shadowing and
broken-environment tests put it on sys.path to stand in for Hugging Face's `kernels`."""
from pathlib import Path


def make_dist(site: Path, name: str, version: str, init: str) -> Path:
    (site / name).mkdir(parents=True)
    (site / name / "__init__.py").write_text(init)
    dist = site / f"{name}-{version}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (dist / "RECORD").write_text("")
    return site
