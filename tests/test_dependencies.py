"""Declared dependencies and the clean-environment install: what the code imports, setup.py must declare.

Every third-party module imported anywhere under ``metarl/`` and ``envs/`` (module level or inside a function) must
be provided by a distribution named in setup.py's ``install_requires``: an import that only works because some other
package happened to pull it in breaks the day that package changes. Import names are resolved to distributions with
``importlib.metadata.packages_distributions()`` in the environment running the tests. Also checked: the README's
install and test commands are the ones ``.ci/run`` runs.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterable, Mapping
from importlib.metadata import packages_distributions
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
FIRST_PARTY = frozenset({"metarl", "metarl_envs"})
SOURCE_DIRS = ("metarl", "envs")
# An optional extra's modules may be imported only by the one module that guards the import (it raises an
# ImportError naming the install command): file -> (extra, modules). Everything else must use install_requires.
OPTIONAL = {"envs/meta_world.py": ("metaworld", {"metaworld"})}


def normalize(name: str) -> str:
    """A distribution name in PEP 503 normal form (``PyYAML`` -> ``pyyaml``, ``stable_baselines3`` -> ...-...)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """The distribution name of a requirement string: ``gymnasium[mujoco]>=1.0`` -> ``gymnasium``."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise ValueError(f"cannot read a distribution name from requirement {requirement!r}")
    return normalize(match.group(1))


def declared_extras(setup_py: Path) -> dict[str, set[str]]:
    """Normalized distribution names of each extra in the ``extras_require`` dict literal of ``setup(...)``."""
    for node in ast.walk(ast.parse(setup_py.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup":
            for keyword in node.keywords:
                if keyword.arg == "extras_require":
                    extras = ast.literal_eval(keyword.value)
                    return {name: {requirement_name(r) for r in reqs} for name, reqs in extras.items()}
    return {}


def declared_requirements(setup_py: Path) -> set[str]:
    """Normalized distribution names in the ``install_requires`` list literal of a ``setup(...)`` call."""
    for node in ast.walk(ast.parse(setup_py.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup":
            for keyword in node.keywords:
                if keyword.arg == "install_requires":
                    return {requirement_name(r) for r in ast.literal_eval(keyword.value)}
    raise ValueError(f"{setup_py}: no setup(install_requires=[...]) literal found")


def imported_top_level(source: str, filename: str = "<source>") -> set[str]:
    """Top-level names of every absolute import in ``source``, wherever it appears (functions, try blocks, ...)."""
    names = set()
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def undeclared_imports(
    files: Iterable[Path], declared: set[str], distributions: Mapping[str, list[str]]
) -> dict[str, str]:
    """``module -> why`` for each imported third-party module that no declared requirement provides."""
    problems: dict[str, str] = {}
    for path in files:
        for module in imported_top_level(path.read_text(encoding="utf-8"), str(path)):
            if module in sys.stdlib_module_names or module in FIRST_PARTY or module in problems:
                continue
            providers = {normalize(d) for d in distributions.get(module, [])}
            if not providers:
                problems[module] = f"imported by {path}, provided by no installed distribution"
            elif not providers & declared:
                problems[module] = f"imported by {path}, provided by {sorted(providers)}, none in install_requires"
    return problems


def source_files() -> list[Path]:
    return sorted(p for folder in SOURCE_DIRS for p in (REPO_ROOT / folder).rglob("*.py"))


def test_every_third_party_import_is_a_declared_requirement() -> None:
    files = source_files()
    assert len(files) > 40 and any(p.parent.name == "envs" for p in files)
    declared = declared_requirements(REPO_ROOT / "setup.py")
    guarded = [REPO_ROOT / name for name in OPTIONAL]
    problems = undeclared_imports([p for p in files if p not in guarded], declared, packages_distributions())
    assert not problems, "\n".join(f"{module}: {why}" for module, why in sorted(problems.items()))
    extras = declared_extras(REPO_ROOT / "setup.py")
    for name, (extra, modules) in OPTIONAL.items():
        path = REPO_ROOT / name
        # the guarded file imports only declared requirements besides the extra's own modules, which it names
        problems = undeclared_imports([path], declared | extras[extra], packages_distributions())
        assert set(problems) <= modules, problems
        assert modules <= imported_top_level(path.read_text(encoding="utf-8")) and extra in extras
        assert f'pip install -e ".[{extra}]"' in path.read_text(encoding="utf-8")


def test_checker_finds_undeclared_imports_anywhere_in_a_file(tmp_path: Path) -> None:
    source = tmp_path / "module.py"
    source.write_text(
        "from __future__ import annotations\n"
        "import os.path\n"
        "import numpy as np\n"
        "from metarl.config import Config\n"
        "from . import sibling\n"
        "def later():\n"
        "    import pytest  # installed here (dev extra), not in install_requires\n"
        "    try:\n"
        "        from surely_not_installed_xyz.sub import thing\n"
        "    except ImportError:\n"
        "        pass\n",
        encoding="utf-8",
    )
    declared = declared_requirements(REPO_ROOT / "setup.py")
    problems = undeclared_imports([source], declared, packages_distributions())
    assert set(problems) == {"pytest", "surely_not_installed_xyz"}
    assert "none in install_requires" in problems["pytest"]
    assert "no installed distribution" in problems["surely_not_installed_xyz"]
    # Declaring the distribution is what makes the import acceptable.
    assert set(undeclared_imports([source], declared | {"pytest"}, packages_distributions())) == {
        "surely_not_installed_xyz"
    }


def test_requirement_names_are_read_like_pip_reads_them(tmp_path: Path) -> None:
    setup_py = tmp_path / "setup.py"
    setup_py.write_text(
        "from setuptools import setup\n"
        "setup(name='x', install_requires=['gymnasium[mujoco]>=1.0', 'PyYAML>=6', 'stable_baselines3', 'a.b ; "
        'python_version>"3"\'])\n',
        encoding="utf-8",
    )
    assert declared_requirements(setup_py) == {"gymnasium", "pyyaml", "stable-baselines3", "a-b"}
    assert "scipy" in declared_requirements(REPO_ROOT / "setup.py")


# -- the README's two commands are what CI runs ---------------------------------------------------------------------
def readme_commands() -> tuple[str, str]:
    """The two ``bash`` blocks under the README's "Two commands": (install and train, test)."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)
    assert len(blocks) == 2, blocks
    return blocks[0].strip(), blocks[1].strip()


def test_ci_runs_the_readme_install_and_test_commands() -> None:
    first, test_command = readme_commands()
    install, separator, train = first.partition(" && metarl train ")
    assert separator, f"the README's first command should be INSTALL && metarl train CONFIG, got: {first}"
    assert (REPO_ROOT / train).is_file(), train
    ci_text = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    ci_lines = {line.split("  #")[0].strip().removesuffix(" || exit 1") for line in ci_text.splitlines()}
    assert install in ci_lines, f".ci/run does not run the README's install command: {install}"
    assert test_command in ci_lines, f".ci/run does not run the README's test command: {test_command}"
