"""Links into ``docs/results/`` from README.md and docs/**/*.md point at files that exist.

A results path (``docs/results/fewshot/...``, or ``fewshot/...`` / ``maml_trpo/...`` / ``reptile/...`` / ``rl2/...``
/ ``metaworld/...`` inside ``docs/results/``) must exist in the checkout, or else its passage (the line, in a code
block; the paragraph or table, in prose) must name a commit that holds it, as in "in git history (commit 8d255f6)";
where the checkout has its git history, the test checks that the named commit really holds the path.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "docs" / "results"
PATH = re.compile(
    r"(?<![\w./{-])((?:docs/results/)?(?:fewshot|maml_trpo|reptile|rl2|navigation_diagnosis|metaworld)/[\w.\-/{},<>]*)"
)
COMMIT = re.compile(r"(?<![\w/.-])([0-9a-f]{7,40})(?![\w/.-])")


def passages(text: str) -> Iterator[str]:
    """Units of a Markdown text that a path and its commit must share: lines in code blocks, paragraphs elsewhere."""
    paragraph: list[str] = []
    in_code = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
            if paragraph:
                yield "\n".join(paragraph)
            paragraph = []
        elif in_code:
            yield line
        elif line.strip():
            paragraph.append(line)
        else:
            if paragraph:
                yield "\n".join(paragraph)
            paragraph = []
    if paragraph:
        yield "\n".join(paragraph)


def expand(path: str) -> list[str]:
    """``a/{b,c}/d`` -> ``[a/b/d, a/c/d]`` (one level of braces, as in the docs' shell commands)."""
    match = re.search(r"\{([^{}]*)\}", path)
    if match is None:
        return [path]
    return [path[: match.start()] + choice + path[match.end() :] for choice in match.group(1).split(",")]


def results_paths(passage: str) -> list[str]:
    """Repository-relative results paths mentioned in a passage (placeholders such as ``<run>`` skipped)."""
    found = []
    for raw in PATH.findall(passage):
        for path in expand(raw.rstrip(".,")):
            if "<" in path or "{" in path:
                continue
            path = path.rstrip("/")
            found.append(path if path.startswith("docs/results/") else f"docs/results/{path}")
    return found


def in_commit(commit: str, path: str) -> bool:
    result = subprocess.run(
        ["git", "cat-file", "-e", f"{commit}:{path}"], cwd=REPO_ROOT, capture_output=True, check=False
    )
    return result.returncode == 0


def broken_links(text: str, name: str, has_history: bool) -> list[str]:
    """``name: path`` per results path in ``text`` that neither exists nor is held by a commit its passage names."""
    problems = []
    for passage in passages(text):
        commits = COMMIT.findall(passage)
        for path in results_paths(passage):
            if (REPO_ROOT / path).exists():
                continue
            if commits and (not has_history or any(in_commit(c, path) for c in commits)):
                continue
            named = f" (not in commit {', '.join(commits)})" if commits else " (and no commit named beside it)"
            problems.append(f"{name}: {path} does not exist{named}")
    return problems


def documents() -> list[Path]:
    return [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").rglob("*.md"))]


def git_history() -> bool:
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        return False
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True).returncode == 0


def test_every_results_path_in_the_docs_exists_or_names_a_commit_that_holds_it() -> None:
    texts = {str(doc.relative_to(REPO_ROOT)): doc.read_text(encoding="utf-8") for doc in documents()}
    assert "docs/results/fewshot.md" in texts and "README.md" in texts
    assert sum(len(results_paths(p)) for text in texts.values() for p in passages(text)) > 30  # the pattern works
    has_history = git_history()
    problems = [problem for name, text in texts.items() for problem in broken_links(text, name, has_history)]
    assert not problems, "\n".join(problems)


FAKE_DOC = """Kept: `fewshot/sinusoid_maml/summary.json`; not results: `metarl/fewshot/train.py`, `fewshot/<run>/`.

Gone: `docs/results/fewshot/omniglot_nothing_1k/` and `fewshot/omniglot_{nothing_2k,sinusoid}/run`.

```
cp -r docs/results/fewshot/omniglot_nothing_3k/run runs/x   # the folder is in commit deadbeef
metarl plot runs/x -o docs/results/fewshot/sinusoid_maml/adaptation.png
```
"""


def test_the_link_check_catches_missing_folders() -> None:
    assert [p for passage in passages(FAKE_DOC) for p in results_paths(passage)] == [
        "docs/results/fewshot/sinusoid_maml/summary.json",
        "docs/results/fewshot/omniglot_nothing_1k",
        "docs/results/fewshot/omniglot_nothing_2k/run",
        "docs/results/fewshot/omniglot_sinusoid/run",
        "docs/results/fewshot/omniglot_nothing_3k/run",
        "docs/results/fewshot/sinusoid_maml/adaptation.png",
    ]
    problems = broken_links(FAKE_DOC, "fake.md", has_history=False)  # a named commit is taken on trust
    assert len(problems) == 3 and all("no commit named" in p for p in problems), problems
    if git_history():  # and checked where the history is there: deadbeef holds nothing
        problems = broken_links(FAKE_DOC, "fake.md", has_history=True)
        assert len(problems) == 4 and "omniglot_nothing_3k/run does not exist (not in commit deadbeef)" in problems[3]
