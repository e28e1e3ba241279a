"""The README and docs/ hold together: every relative link and image resolves, to a heading that exists where it
names one, and every install hint names the distribution (pyproject.toml's name), never another project on PyPI."""

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from hrm_shared.core.errors import DISTRIBUTION

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _anchors(page: Path) -> Iterator[str]:
    """The anchors GitHub gives the headings of `page`: lower case, punctuation dropped, spaces as hyphens, a repeated
    heading numbered."""
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#+ (.+)$", FENCE.sub("", page.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        seen[slug] = seen.get(slug, -1) + 1
        yield slug if seen[slug] == 0 else f"{slug}-{seen[slug]}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_relative_links_and_images_resolve(page):
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: {target} does not exist"
        if anchor:
            assert anchor in set(_anchors(linked)), f"{page.name}: {target} names no heading of {linked.name}"


def test_the_readme_starts_fast_and_every_docs_page_is_linked_from_it():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    linked = {Path(target.partition("#")[0]).name for target in LINK.findall(readme) if target.startswith("docs/")}
    assert linked == {page.name for page in PAGES[1:]}


def test_install_hints_name_the_distribution():
    files = [path for folder in ("shared", "convert", "hrm_torch", "hrm_mlx", "scripts", "tests", "docs")
             for path in (ROOT / folder).rglob("*") if path.suffix in (".py", ".md", ".sh")]
    for path in [*files, ROOT / "README.md", ROOT / "pyproject.toml"]:
        for hint in re.findall(r"pip install ['\"]?([\w.-]+)\[", path.read_text()):
            assert hint == DISTRIBUTION, f"{path.relative_to(ROOT)}: pip install '{hint}[...]'"
    assert f'name = "{DISTRIBUTION}"' in (ROOT / "pyproject.toml").read_text()
