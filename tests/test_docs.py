"""The README and the manual in docs/: every relative link leads somewhere, and the README stays a front door.

A link is checked the way GitHub renders it: the path relative to the page must be a file or folder
of the repository, and an `#anchor` must be the slug of a heading of the target page (lower case,
punctuation other than `-` and `_` dropped, spaces as `-`, `-1`, `-2` ... for repeated headings).
Links inside code (fenced blocks, `inline`) are text, not links, and web addresses are not followed.
"""
from __future__ import annotations

import re
from pathlib import Path

from tests.parity_utils import REPO_ROOT

README_MAX_LINES = 250

FENCE = re.compile(r"^(`{3,}|~{3,}).*?^\1[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^()\s<>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)


def without_code(text: str) -> str:
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: the rendered text (link targets, emphasis and code marks dropped), lower
    case, characters other than letters, digits, spaces, `-` and `_` removed, each space a `-`."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"(?<!\w)_+|_+(?!\w)", "", text)   # _emphasis_, not snake_case
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for m in HEADING.finditer(FENCE.sub("", page.read_text(encoding="utf-8"))):
        s = slug(m.group(1))
        n = seen.get(s, 0)
        seen[s] = n + 1
        out.add(s if n == 0 else f"{s}-{n}")
    return out


def broken_links(page: Path, root: Path = REPO_ROOT) -> list[str]:
    """'page: target (why)' for each relative link of a Markdown page that leads nowhere."""
    text = without_code(page.read_text(encoding="utf-8"))
    bad = []
    for target in [*LINK.findall(text), *REFERENCE.findall(text)]:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):   # https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        where = f"{page.relative_to(root)}: {target}"
        if not dest.exists():
            bad.append(f"{where} (no such file)")
        elif not dest.resolve().is_relative_to(root.resolve()):
            bad.append(f"{where} (outside the repository)")
        elif anchor and (dest.is_dir() or dest.suffix != ".md"):
            bad.append(f"{where} (an anchor into something that is not a Markdown page)")
        elif anchor and anchor not in anchors(dest):
            bad.append(f"{where} (no heading with that anchor)")
    return bad


def pages(root: Path = REPO_ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def test_every_relative_link_resolves():
    found = [b for page in pages() for b in broken_links(page)]
    assert not found, "links that lead nowhere:\n" + "\n".join(found)


def test_the_readme_is_a_front_door():
    lines = (REPO_ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) < README_MAX_LINES, (f"README.md has {len(lines)} lines; keep it under {README_MAX_LINES} "
                                           f"and move the detail into a page of docs/")
    text = "\n".join(lines)
    assert "bash run_inference.sh" in text and "bash run_tests.sh" in text   # the two commands


def test_every_docs_page_is_linked_from_the_readme():
    readme = without_code((REPO_ROOT / "README.md").read_text(encoding="utf-8"))
    linked = {(REPO_ROOT / t.partition("#")[0]).resolve() for t in LINK.findall(readme)}
    orphans = [p.relative_to(REPO_ROOT).as_posix() for p in sorted((REPO_ROOT / "docs").glob("*.md"))
               if p.resolve() not in linked]
    assert not orphans, f"docs pages the README does not link to: {orphans}"


def test_the_link_checker_finds_what_is_broken(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Page A\n\n## Segments and speakers\n\n## The `cpu` size\n\n"
                                            "## Notes\n\n## Notes\n\n```bash\n# not a heading\n```\n")
    page = tmp_path / "README.md"
    page.write_text("[ok](docs/a.md) [ok](docs/a.md#segments-and-speakers) [ok](docs/a.md#the-cpu-size) "
                    "[ok](docs/a.md#notes-1) [ok](#top) ![ok](docs) [web](https://example.com/x.md#nothing)\n"
                    "[gone](docs/b.md) [bad anchor](docs/a.md#segments) [fenced](docs/a.md#not-a-heading) "
                    "`[code](docs/c.md)`\n\n# Top\n\n[ref]: docs/d.md\n")
    assert broken_links(page, tmp_path) == [
        "README.md: docs/b.md (no such file)",
        "README.md: docs/a.md#segments (no heading with that anchor)",
        "README.md: docs/a.md#not-a-heading (no heading with that anchor)",
        "README.md: docs/d.md (no such file)",
    ]
    assert slug("Configuration (`configs/prep/default.yaml`, group `prep`)") == \
        "configuration-configsprepdefaultyaml-group-prep"
    assert slug("A long video, segment by segment") == "a-long-video-segment-by-segment"
