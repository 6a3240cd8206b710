"""The design document lives in the repository: every `docs/design.md §N` citation in the code, the tests, the
C++ sources and the docs names a section that exists, and nothing cites a design document that is not here."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"
SUFFIXES = {".py", ".cpp", ".h", ".md", ".toml", ".txt", ".sh"}
CITATION = re.compile(r"docs/design\.md §(\d+)")
FOREIGN = re.compile(r"\bDESIGN §")                       # a design document that is not in the repository


def tracked_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    return [ROOT / name for name in listed if Path(name).suffix in SUFFIXES and (ROOT / name).is_file()]


def sections(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"^## (\d+)\. ", text, flags=re.MULTILINE)]


def broken_citations(files: dict[str, str], known: set[int]) -> list[str]:
    """'path: what is wrong' for every citation of a missing section and every foreign design citation."""
    problems = []
    for name, text in files.items():
        problems += [f"{name}: cites §{n}, which docs/design.md does not have" for n in map(int, CITATION.findall(text))
                     if n not in known]
        problems += [f"{name}: cites {m.group(0)!r} of a document that is not in the repository"
                     for m in FOREIGN.finditer(text)]
    return problems


def test_the_design_document_has_numbered_sections_in_order():
    assert DESIGN.is_file(), "docs/design.md is missing"
    numbers = sections(DESIGN.read_text())
    assert numbers and numbers == list(range(1, len(numbers) + 1))


def test_every_citation_names_a_section_that_exists():
    files = {str(p.relative_to(ROOT)): p.read_text(errors="replace") for p in tracked_files()
             if p.resolve() != Path(__file__).resolve()}
    cited = sum(len(CITATION.findall(text)) for text in files.values())
    assert cited >= 10                                         # the ops, samplers and C++ kernels cite it
    assert broken_citations(files, set(sections(DESIGN.read_text()))) == []


def test_the_checker_catches_a_missing_section_and_a_foreign_document():
    known = {1, 2, 3}
    assert broken_citations({"a.py": "see docs/design.md §3"}, known) == []
    assert broken_citations({"a.py": "see docs/design.md §9"}, known)
    assert broken_citations({"a.cpp": "// (DESIGN §4)"}, known)
