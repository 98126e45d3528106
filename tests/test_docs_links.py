"""Every relative link in the README, docs/ and benchmarks/README.md reaches a file, and every
``#anchor`` a heading of the page it names (GitHub's heading slugs); the README names every
shipped model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import ROOT

PAGES = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "benchmarks" / "README.md",
]
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def heading_slugs(markdown: str) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped (word
    characters, hyphens and spaces kept), spaces as hyphens, repeats numbered -1, -2, ..."""
    out: set[str] = set()
    seen: dict[str, int] = {}
    for line in FENCE.sub("", markdown).splitlines():
        m = re.match(r"#{1,6} (.*)", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def broken_links(page: Path) -> list[str]:
    """The links of ``page`` (outside code blocks) whose file or anchor does not exist."""
    bad = []
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"[a-z]+://|mailto:", target):
            continue  # the web is not checked here (no network at test time)
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in heading_slugs(dest.read_text()):
            bad.append(f"{target}: no heading with that anchor in {dest.name}")
    return bad


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(page):
    assert not broken_links(page), broken_links(page)


def test_the_check_sees_a_missing_anchor_and_file(tmp_path):
    (tmp_path / "b.md").write_text("# Fitting: models, objectives (`fit.x`)\n\n## Step 2\n")
    page = tmp_path / "a.md"
    page.write_text(
        "[ok](b.md#fitting-models-objectives-fitx) [ok](b.md#step-2) [ok](#top)\n\n# Top\n"
        "[gone](b.md#step-3) [gone](c.md) [web](https://example.org/x#y)\n"
        "```\n[in code](nowhere.md)\n```\n"
    )
    assert broken_links(page) == [
        "b.md#step-3: no heading with that anchor in b.md",
        "c.md: no such file",
    ]


def test_readme_names_every_shipped_model():
    # the shipped ones: other tests register user models in the same registry
    from specfit.models import _SHIPPED

    text = (ROOT / "README.md").read_text()
    shipped = text[text.index("Shipped models (f in Hz):") :].split("\n\n", 1)[0]
    assert len(_SHIPPED) >= 8  # the eight of this writing; the check cannot pass on none
    assert set(re.findall(r"`([a-z_]+)`", shipped)) >= set(_SHIPPED)
