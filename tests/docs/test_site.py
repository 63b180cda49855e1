"""The documentation: README.md is a short landing page that says how to install, run and test on its first
screen; the pages in docs/ build into a site with `mkdocs build --strict`; every relative link in the README and
the pages reaches a file that exists, and every #anchor into a Markdown file a heading it has."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
FIRST_SCREEN = 60  # lines
INSTALL = 'pip install -e ".[test]"'
TEST = "python -m pytest -q -n 2 --dist loadfile --durations=25"


def test_the_site_builds_strictly(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"mkdocs build --strict exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    for page in PAGES:  # every page became a page of the site (the nav lists it: strict fails otherwise)
        built = tmp_path / "site" / ("index.html" if page.stem == "index" else f"{page.stem}/index.html")
        assert built.is_file(), f"docs/{page.name} was not built"
    api = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    assert "select_parameters" in api and "wilson" in api.lower(), "the API page has no docstrings in it"


def test_readme_is_a_short_landing_page_with_install_run_and_test_first():
    data = README.read_bytes()
    assert len(data) < 25_000, f"README.md is {len(data):,} bytes: move the detail into a page of docs/"
    first = data.decode("utf-8").splitlines()[:FIRST_SCREEN]
    headings = [line.lstrip("#").strip() for line in first if re.match(r"#{1,3} ", line)]
    for wanted in (("Install",), ("Run", "Quickstart"), ("Test",)):
        assert any(h.split()[0] in wanted for h in headings), f"no {' or '.join(wanted)} heading in {headings}"
    screen = "\n".join(first)
    assert INSTALL in screen and TEST in screen


def test_readme_says_what_ci_runs():
    """.ci/run installs and tests exactly as the README's first screen says."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert INSTALL in ci and TEST in ci


# ---------------------------------------------------------------- links

FENCE = re.compile(r"^(```|~~~).*?^\1\s*$", re.S | re.M)
CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _prose(text: str) -> str:
    """``text`` without code blocks and code spans, where a ``[x](y)`` is not a link."""
    return CODE.sub("", FENCE.sub("", text))


def github_slug(heading: str) -> str:
    """GitHub's anchor of a heading: lowercase, punctuation dropped (hyphens and spaces kept), spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = text.replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of ``path`` (a repeated heading gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"#{1,6} (.*?)#*\s*$", line)
        if m:
            slug = github_slug(m.group(1))
            n = seen.get(slug, 0)
            out.add(slug if n == 0 else f"{slug}-{n}")
            seen[slug] = n + 1
    return out


def test_github_slug_rule():
    assert github_slug("Several processes (`accelerate launch`)") == "several-processes-accelerate-launch"
    assert github_slug('The judge\'s "none of these"') == "the-judges-none-of-these"
    assert github_slug("Every method in one harness: ESD, UCE, FMN beside SalUn, RL and Retrain") == \
        "every-method-in-one-harness-esd-uce-fmn-beside-salun-rl-and-retrain"


@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_reaches_a_file_and_a_heading(path):
    bad = []
    for target in LINK.findall(_prose(path.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:: not relative
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            bad.append(f"{target}: no file {dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: {dest.name} has no heading with the anchor #{anchor}")
        elif file and ROOT not in dest.parents:
            bad.append(f"{target}: outside the repository")
    assert not bad, f"{path.relative_to(ROOT)}: broken links:\n" + "\n".join(bad)


def test_the_link_checker_finds_a_broken_link_and_a_broken_anchor(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n## A heading\n\n[ok](#a-heading) [bad](#no-heading) [gone](missing.md)\n"
                    "`[code](not-a-link.md)`\n", encoding="utf-8")
    links = LINK.findall(_prose(page.read_text(encoding="utf-8")))
    assert links == ["#a-heading", "#no-heading", "missing.md"]
    assert "a-heading" in anchors(page) and "no-heading" not in anchors(page)


def test_the_readme_links_into_the_site():
    """The landing page reaches the pages: a link to each one that a reader starts from."""
    text = _prose(README.read_text(encoding="utf-8"))
    linked = {t.partition("#")[0] for t in LINK.findall(text)}
    for page in PAGES:
        if page.stem.startswith("attack_"):  # generated attack reports, reached from the audits page
            continue
        if page.stem == "index":  # the site's home: the README is the repository's
            continue
        assert f"docs/{page.name}" in linked, f"README.md does not link docs/{page.name}"
