"""The documentation stands on its own in a user's checkout.

- Nothing shipped (package, kernels, docs, README, benchmarks) points at the
  development-only ``shared/docs`` folder, which a user's checkout does not have.
- Every citation of a METHOD.md section in the code and the docs names a section
  that docs/METHOD.md has.
- Every relative Markdown link in docs/*.md and README.md resolves to a file.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
METHOD = ROOT / "docs" / "METHOD.md"

TEXT_SUFFIXES = {".py", ".pyi", ".md", ".rst", ".txt", ".cpp", ".cc", ".c", ".h", ".hpp", ".cu", ".cuh",
                 ".sh", ".yaml", ".yml", ".toml", ".cfg", ".ini", ".json", ".cmake"}
SKIP_DIRS = {"__pycache__", "build", ".git", ".venv"}


def text_files(*relative: str) -> list[Path]:
    """Text source files under the given folders (or the given files), sorted."""
    found: list[Path] = []
    for rel in relative:
        path = ROOT / rel
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(p for p in path.rglob("*")
                         if p.is_file() and p.suffix in TEXT_SUFFIXES
                         and not SKIP_DIRS.intersection(p.relative_to(ROOT).parts))
    return sorted(found)


def method_sections() -> set[int]:
    """Section numbers of docs/METHOD.md's level-2 headings ``## N. Title``."""
    text = METHOD.read_text(encoding="utf-8")
    return {int(n) for n in re.findall(r"^##\s+(\d+)\.\s", text, flags=re.MULTILINE)}


# "METHOD.md section 5", "docs/METHOD.md section 5", "METHOD.md sections 2 and 5",
# "METHOD.md §3", "METHOD §3", "[METHOD.md](METHOD.md) section 6", "METHOD.md, section 4"
# The gap may break across lines, also inside comments ("# ", "// ", " * ").
_GAP = r"(?:[\s#*]|//)*"
CITATION = re.compile(
    r"METHOD(?:\.md)?(?:\]\([^)]*\))?[,:]?" + _GAP + r"(?:sections?\s+|§\s*)"
    r"(\d+(?:\.\d+)*(?:\s*(?:,|and|&|-|to)\s*(?:§\s*)?\d+(?:\.\d+)*)*)",
    flags=re.IGNORECASE)


def citations(text: str) -> list[tuple[int, int]]:
    """(line number, top-level section) of every METHOD.md section cited in ``text``
    ("section 4.2" cites section 4)."""
    out: list[tuple[int, int]] = []
    for match in CITATION.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        out.extend((line, int(n.split(".")[0])) for n in re.findall(r"\d+(?:\.\d+)*", match.group(1)))
    return out


def cited_sections(text: str) -> list[int]:
    return [n for _, n in citations(text)]


def strip_code(markdown: str) -> str:
    """Markdown without fenced code blocks and inline code spans (links there are not links)."""
    markdown = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", markdown, flags=re.MULTILINE | re.DOTALL)
    return re.sub(r"`[^`\n]*`", "", markdown)


LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def relative_link_targets(markdown: str) -> list[str]:
    """Link targets that name a local file: no scheme, no bare anchor; anchors and queries dropped."""
    targets = []
    for target in LINK.findall(strip_code(markdown)):
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("#"):
            continue
        targets.append(re.split(r"[#?]", target, maxsplit=1)[0])
    return [t for t in targets if t]


# ---- the helpers themselves -------------------------------------------------------------------

def test_citation_pattern_reads_every_form():
    text = ("see METHOD.md section 5; docs/METHOD.md section 3 and METHOD.md sections 2 and 5, "
            "METHOD.md §6, METHOD §7, [METHOD.md](METHOD.md) section 4.2, METHOD.md's 1e-3, "
            "METHODS = ('random',), METHOD_THRESHOLD, (METHOD.md\n# section 1), METHOD.md\n// section 9")
    assert cited_sections(text) == [5, 3, 2, 5, 6, 7, 4, 1, 9]
    assert citations("a\nb METHOD.md section 2\n")[0] == (2, 2)


def test_link_reader_skips_code_urls_and_anchors():
    text = ("[a](ATTACK.md) [b](../README.md#top) [c](https://example.org) [d](#local) "
            "![e](img/x.png)\n```\n[f](nowhere.md)\n```\n`[g](nowhere.md)`\n")
    assert relative_link_targets(text) == ["ATTACK.md", "../README.md", "img/x.png"]


# ---- the checks -------------------------------------------------------------------------------

def test_method_doc_has_the_cited_section_numbers():
    assert METHOD.is_file(), "docs/METHOD.md is missing"
    assert set(range(1, 8)) <= method_sections(), f"docs/METHOD.md sections: {sorted(method_sections())}"


def test_nothing_shipped_points_at_shared_docs():
    offenders = []
    for path in text_files("fastfn", "csrc", "docs", "README.md", "benchmarks"):
        for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if "shared/docs" in line:
                offenders.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert not offenders, "a user's checkout has no shared/docs; cite docs/METHOD.md instead:\n" + "\n".join(offenders)


def test_method_citations_name_existing_sections():
    sections = method_sections()
    wrong, count = [], 0
    for path in text_files("fastfn", "csrc", "docs", "README.md"):
        text = path.read_text(encoding="utf-8", errors="replace")
        for lineno, n in citations(text):
            count += 1
            if n not in sections:
                wrong.append(f"{path.relative_to(ROOT)}:{lineno}: section {n}")
    assert count > 0, "no METHOD.md citations found: the citation pattern no longer matches the code"
    assert not wrong, f"docs/METHOD.md has sections {sorted(sections)}; these cite others:\n" + "\n".join(wrong)


@pytest.mark.parametrize("doc", sorted(p.relative_to(ROOT).as_posix()
                                       for p in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]))
def test_relative_links_resolve(doc):
    path = ROOT / doc
    missing = [t for t in relative_link_targets(path.read_text(encoding="utf-8"))
               if not (path.parent / t).exists()]
    assert not missing, f"{doc} links to files that do not exist: {missing}"
