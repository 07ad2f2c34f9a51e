"""The docs cite only files the repository holds, the ledger's rows cite files of their commits, and
the front door stays short."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LEDGER = ROOT / "docs" / "results.md"
README_MAX_LINES = 130
EXEMPT = ("runs/", "checkpoints_zoo/")  # made at run time (checkpoints_zoo/ holds only its README)

# A repository path: one of the top-level folders, then path characters; `<name>` and `*` are
# placeholders. It must start a token: not after a word character, '/', '.' or '-' (so /tmp/runs/x,
# .venv/bin/mole and mole.zoo.store are not paths), and a bare folder name without '/' is prose.
PATH = re.compile(r"(?<![\w/.\-])(?:mole|configs|docs|scripts|tests|checkpoints_zoo|runs|\.ci)/[\w.\-/<>*]*")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*```")
COMMIT = re.compile(r"\b[0-9a-f]{7,40}\b")


def clean(path: str) -> str:
    """A cited path without trailing punctuation (a sentence's full stop, `a.py:12`, `a.py::test`)."""
    path = re.split(r"::|:\d", path)[0]
    return path.rstrip(".,;:")


def citations(text: str, source: Path = ROOT / "README.md") -> list[tuple[int, str]]:
    """(line number, path) of every repository path cited in markdown: in code spans, fenced blocks and
    link targets (relative to the root; links resolve against `source`'s folder, and a link's #anchor
    stays on it). Web links and pure anchors are skipped."""
    out: list[tuple[int, str]] = []
    fenced = False
    for n, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        spans = [line] if fenced else CODE_SPAN.findall(line)
        out += [(n, clean(m)) for span in spans for m in PATH.findall(span)]
        if fenced:
            continue
        for target in LINK.findall(line):
            if not target or target.startswith("#") or "://" in target or target.startswith("mailto:"):
                continue
            file, _, anchor = target.partition("#")
            resolved = (source.parent / file).resolve()
            path = resolved.relative_to(ROOT).as_posix() if resolved.is_relative_to(ROOT) else file
            out.append((n, path + (f"#{anchor}" if anchor else "")))
    return [(n, p) for n, p in out if p]


def cited(text: str, source: Path = ROOT / "README.md") -> list[str]:
    return [p for _, p in citations(text, source)]


def slug(heading: str) -> str:
    """GitHub's anchor for a markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def exists(path: str) -> bool:
    path, _, anchor = path.partition("#")
    if anchor:
        target = ROOT / path
        headings = re.findall(r"^#+ (.+)$", target.read_text(), re.M) if target.is_file() else []
        return anchor in {slug(h) for h in headings}
    pattern = re.sub(r"<[^>]*>", "*", path).rstrip("/")
    if "*" in pattern:
        return any(ROOT.glob(pattern))
    target = ROOT / pattern
    return target.is_dir() if path.endswith("/") else target.exists()


def ledger_rows(text: str) -> list[tuple[int, str, str]]:
    """(line number, commit, row text) of every results.md table row whose commit cell names one."""
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 5 or set(cells[0]) <= {"-"} or cells[0] == "id":
            continue
        commits = COMMIT.findall(cells[3])
        if commits:
            rows.append((i, commits[-1], line))
    return rows


def git(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(ROOT), *args], input=stdin, capture_output=True, text=True)


def history_available() -> bool:
    if shutil.which("git") is None or git("rev-parse", "--git-dir").returncode != 0:
        return False
    return git("rev-parse", "--is-shallow-repository").stdout.strip() == "false"


# ---------------------------------------------------------------------------- the extractor
def test_paths_are_found_in_code_fences_and_links_but_not_in_prose(tmp_path):
    text = "\n".join(
        [
            "The mole/zoo package and docs/ in prose are not citations; neither is `mole zoo build`.",
            "See `mole/zoo/build.py`, `tests/zoo/test_build.py::test_kill`, `mole/pipeline.py:42`.",
            "Not paths: `.venv/bin/mole`, `/tmp/runs/x`, `mole.zoo.store`, `python -m mole`.",
            "A [link](design.md#benchmarks), a [web link](https://example.com/mole/x.py), [anchor](#a).",
            "```",
            "mole train configs/quickstart/weights.yaml --data.zoo checkpoints_zoo/quickstart",
            "```",
            "The recipe ends a sentence in `configs/quickstart/`.",
        ]
    )
    assert cited(text, source=ROOT / "docs" / "results.md") == [
        "mole/zoo/build.py",
        "tests/zoo/test_build.py",
        "mole/pipeline.py",
        "docs/design.md#benchmarks",
        "configs/quickstart/weights.yaml",
        "checkpoints_zoo/quickstart",
        "configs/quickstart/",
    ]


def test_placeholders_folders_and_anchors_are_checked_against_the_tree():
    assert exists("mole/zoo/variants/<name>.py") and exists("configs/zoo/*.yaml")
    assert exists("mole/zoo/") and not exists("mole/zoo.py/")
    assert not exists("mole/no_such_module.py") and not exists("mole/<name>/no_such_file.py")
    assert exists("docs/design.md#benchmarks") and not exists("docs/design.md#no-such-heading")


def test_ledger_rows_are_read_with_their_commit():
    text = "\n".join(
        [
            "| id | what changed | command | commit | figures |",
            "|---|---|---|---|---|",
            "| Z1 | a change | `mole zoo build configs/zoo/x.yaml` | 76aa0d9..8c1ef3f | 0.5 |",
            "| Z2 | no commit | `mole zoo build` | - | 0.5 |",
        ]
    )
    assert ledger_rows(text) == [(3, "8c1ef3f", text.splitlines()[2])]


# ---------------------------------------------------------------------------- the docs
@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_cited_paths_exist(doc):
    text = doc.read_text()
    ledger = {n for n, _, _ in ledger_rows(text)} if doc == LEDGER else set()  # checked at their commit
    missing = [
        f"{doc.relative_to(ROOT)}:{n}: {path}"
        for n, path in citations(text, source=doc)
        if n not in ledger and not path.startswith(EXEMPT) and not exists(path)
    ]
    assert not missing, "cited paths that the repository does not hold:\n" + "\n".join(missing)


@pytest.mark.skipif(not history_available(), reason="needs the repository's full git history")
def test_ledger_rows_cite_commits_and_files_of_those_commits():
    rows = ledger_rows(LEDGER.read_text())
    assert len(rows) >= 50  # the ledger is not silently emptied
    queries = []
    for n, commit, line in rows:
        queries.append((n, f"{commit}^{{commit}}"))
        queries += [
            (n, f"{commit}:{p.rstrip('/')}")
            for p in cited(line, LEDGER)
            if not p.startswith(EXEMPT) and not set("<*#") & set(p)
        ]
    out = git("cat-file", "--batch-check", stdin="\n".join(q for _, q in queries) + "\n").stdout.splitlines()
    assert len(out) == len(queries)
    missing = [f"results.md:{n}: {q}" for (n, q), answer in zip(queries, out) if answer.endswith("missing")]
    assert not missing, "ledger rows citing a commit or a file their commit does not hold:\n" + "\n".join(
        missing
    )


def test_ledger_ids_are_unique():
    """Notes and rows cite each other by id (R6, X1): two rows under one id make those citations ambiguous."""
    ids = re.findall(r"^\| ([A-Z]\d+) \|", LEDGER.read_text(), flags=re.M)
    assert len(ids) >= 50 and len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})


def test_readme_is_a_short_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; the rest belongs in docs/"
    assert lines[2:6] == [
        "```",
        "make demo   # creates .venv, installs mole, runs `mole quickstart` on digits, writes runs/quickstart/report.md",
        "make test   # creates .venv, installs mole[dev], runs the test suite",
        "```",
    ]
