"""The contract lives in the repository: docs/spec.md.

(a) No file of the repository points outside it for the contract: no link into a sibling `shared/`
    folder, no citation of the retired upper-case contract name followed by "§n" (that file lived
    outside the repository, where a clone of r1core cannot read it).
(b) Every citation "spec.md §n" names a section heading that docs/spec.md has ("## n. ..."), and
    every markdown link to spec.md resolves (file and, when given, anchor).

Standard library only: it runs without torch, e.g. before the environment is built
(`python3 -m pytest --noconftest tests/test_spec_citations.py`: tests/conftest.py imports torch).
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "docs" / "spec.md"

# spelled in pieces so that this file does not match its own patterns
OLD_NAME = "SP" + "EC"
OUTSIDE_LINK = re.compile(re.escape("..") + r"/shared/")
OLD_CITATION = re.compile(r"\b" + OLD_NAME + r"\s*§")
CITATION = re.compile(r"spec\.md\s*§\s*(\d+[a-z]?)")
HEADING = re.compile(r"^##\s+(\d+[a-z]?)\.\s+(.*)$", re.MULTILINE)
MD_LINK = re.compile(r"\]\(([^)\s]*spec\.md)(#[^)\s]*)?\)")

SKIP_DIRS = {".git", ".venv", "build", "dist", "__pycache__", ".pytest_cache", "node_modules"}


def _repo_files() -> list[Path]:
    """Tracked files plus new, not-ignored ones (git ls-files); a plain walk when git is unavailable."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=ROOT, capture_output=True, check=True, timeout=60).stdout
        names = [n for n in out.decode("utf-8", "replace").split("\0") if n]
        return [ROOT / n for n in names]
    except (OSError, subprocess.SubprocessError):
        found = []
        for dirpath, dirnames, filenames in os.walk(ROOT):
            dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info")]
            found += [Path(dirpath) / f for f in filenames]
        return found


def _text_files() -> dict[Path, str]:
    texts = {}
    for p in _repo_files():
        if not p.is_file():          # deleted in the working tree, a submodule, ...
            continue
        data = p.read_bytes()
        if b"\0" in data[:8192]:     # binary
            continue
        texts[p] = data.decode("utf-8", "replace")
    return texts


def _where(text: str, at: int) -> int:
    return text.count("\n", 0, at) + 1


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def _sections() -> dict[str, str]:
    """Section number -> heading text of docs/spec.md."""
    return {m.group(1): m.group(2) for m in HEADING.finditer(SPEC.read_text(encoding="utf-8"))}


def test_spec_exists_with_the_numbered_sections():
    sections = _sections()
    for n in ("1", "2", "2b", "3", "4", "5", "6", "7", "8"):
        assert n in sections, f"docs/spec.md lacks a '## {n}. ...' section (has {sorted(sections)})"


def test_nothing_points_outside_the_repository():
    bad = []
    for path, text in _text_files().items():
        if path == SPEC:
            continue
        rel = path.relative_to(ROOT)
        for pattern, what in ((OUTSIDE_LINK, "link outside the repository"),
                              (OLD_CITATION, f"'{OLD_NAME} §' citation (use docs/spec.md §n)")):
            for m in pattern.finditer(text):
                bad.append(f"{rel}:{_where(text, m.start())}: {what}: {m.group(0)!r}")
    assert not bad, "\n".join(bad)


def test_every_spec_citation_names_an_existing_section():
    sections = _sections()
    anchors = {_slug(f"{n}. {h}") for n, h in sections.items()}
    bad, count = [], 0
    for path, text in _text_files().items():
        rel = path.relative_to(ROOT)
        for m in CITATION.finditer(text):
            count += 1
            if m.group(1) not in sections:
                bad.append(f"{rel}:{_where(text, m.start())}: {m.group(0)!r}: docs/spec.md has no section "
                           f"{m.group(1)} (has {sorted(sections)})")
        if path.suffix != ".md":
            continue
        for m in MD_LINK.finditer(text):
            target, anchor = m.group(1), m.group(2)
            if "://" in target:
                continue
            if (path.parent / target).resolve() != SPEC.resolve():
                bad.append(f"{rel}:{_where(text, m.start())}: link {target!r} does not resolve to docs/spec.md")
            elif anchor and anchor[1:] not in anchors:
                bad.append(f"{rel}:{_where(text, m.start())}: docs/spec.md has no anchor {anchor!r}")
    assert not bad, "\n".join(bad)
    assert count >= 50, f"only {count} 'spec.md §n' citations found: is the file list complete?"
