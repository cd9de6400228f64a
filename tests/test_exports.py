"""Each package's public names stand once, in its ``__init__.pyi``; the run-time view cannot drift from it."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from cotscope._exports import attach_stub, read_stub

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ["cot", "resampling", "anchors", "metrics", "steganography", "organisms"]
# What `import PACKAGE` must leave unimported: these packages defer their heavy names to first use.
STAYS_OUT = {
    "cot": ["torch", "transformers"],
    "anchors": ["torch", "polars", "matplotlib", "networkx", "anchors._blackbox", "anchors._whitebox"],
    "steganography": ["torch", "matplotlib", "steganography._experiments", "organisms"],
}


def stub_names(stub_text: str) -> list[str]:
    """The names a stub exports, read by pattern (not by the code under test): `NAME as NAME` and `NEW = OLD`."""
    reexports = re.findall(r"\b(\w+) as \1\b", stub_text)
    renames = re.findall(r"^(\w+) = \w+$", stub_text, flags=re.MULTILINE)
    return reexports + renames


def _is_submodule(module: types.ModuleType, name: str) -> bool:
    value = vars(module).get(name)
    return isinstance(value, types.ModuleType) and value.__name__ == f"{module.__name__}.{name}"


def export_problems(package: str, root: Path = REPO) -> list[str]:
    """Every way the package's stub, ``__all__``, ``dir()`` and its importable names disagree."""
    module = importlib.import_module(package)
    listed = stub_names((root / package.replace(".", "/") / "__init__.pyi").read_text(encoding="utf-8"))
    problems = []
    if len(set(module.__all__)) != len(module.__all__):
        problems.append(f"__all__ repeats a name: {sorted(module.__all__)}")
    if sorted(listed) != sorted(module.__all__):
        problems.append(f"stub and __all__ differ: {sorted(set(listed) ^ set(module.__all__))}")
    for name in module.__all__:
        try:
            getattr(module, name)
        except Exception as error:  # an unresolvable name is the finding, whatever it raises
            problems.append(f"{name} does not resolve: {error}")
    # after every name resolved, what the package holds must be the list and nothing public besides
    public = {n for n in dir(module) if not n.startswith("_") and not _is_submodule(module, n)}
    if public != set(module.__all__):
        problems.append(f"dir() and __all__ differ: {sorted(public ^ set(module.__all__))}")
    return problems


@pytest.mark.parametrize("package", PACKAGES)
def test_stub_all_and_dir_agree_and_every_name_resolves(package):
    assert export_problems(package) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_names_are_the_objects_the_stub_names(package):
    module = importlib.import_module(package)
    table = read_stub(REPO / package / "__init__.pyi", package)
    assert sorted(table) == sorted(module.__all__)
    for name, (source, attribute) in table.items():
        assert getattr(module, name) is getattr(importlib.import_module(source), attribute), name


def test_renamed_names_keep_their_objects():
    import organisms
    from organisms import _cipher, _compare, _stego

    assert organisms.decode_cipher is _cipher.decode
    assert organisms.COMPARE_BIASED is _compare.BIASED
    assert organisms.STEGO_PARAPHRASES is _stego.PARAPHRASES


def test_unknown_name_is_an_attribute_error():
    import anchors

    with pytest.raises(AttributeError, match="'anchors' has no attribute 'importance_tabel'"):
        anchors.importance_tabel  # noqa: B018


def test_lazy_packages_stay_light_on_import():
    code = (
        "import importlib, json, sys\n"
        f"stays_out = {STAYS_OUT!r}\n"
        "found = {}\n"
        "for package, heavy in stays_out.items():\n"
        "    importlib.import_module(package)\n"
        "    dir(sys.modules[package])\n"
        "    found[package] = [m for m in heavy if m in sys.modules]\n"
        "print(json.dumps(found))\n"
    )
    assert json.loads(_fresh_python(code)) == {package: [] for package in STAYS_OUT}


def test_lazy_name_loads_its_module_on_first_use():
    code = (
        "import sys, steganography\n"
        "before = 'steganography._experiments' in sys.modules\n"
        "steganography.ExperimentResult\n"
        "print(before, 'steganography._experiments' in sys.modules)\n"
    )
    assert _fresh_python(code).split() == ["False", "True"]


def _fresh_python(code: str) -> str:
    """Stdout of ``code`` run in a new interpreter (nothing imported yet) on this checkout."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=REPO
    )
    return run.stdout


# A throwaway package shows the check above catches a name added in one place only.
IMPL = "def a(): ...\ndef b(): ...\n"
INIT = "from cotscope._exports import attach_stub as _attach\n__getattr__, __dir__, __all__ = _attach(__name__, __file__)\n"


def _package(tmp_path, monkeypatch, name, stub, init=INIT):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "_impl.py").write_text(IMPL)
    (folder / "__init__.pyi").write_text(stub)
    (folder / "__init__.py").write_text(init)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


def test_check_passes_a_consistent_package(tmp_path, monkeypatch):
    name = _package(tmp_path, monkeypatch, "fine_pkg", "from ._impl import a as a, b as b\n")
    assert export_problems(name, tmp_path) == []


def test_check_catches_a_name_imported_in_init_only(tmp_path, monkeypatch):
    init = "from fine_extra._impl import b\n" + INIT
    name = _package(tmp_path, monkeypatch, "fine_extra", "from ._impl import a as a\n", init)
    assert export_problems(name, tmp_path) == ["dir() and __all__ differ: ['b']"]


def test_check_catches_a_name_added_to_all_only(tmp_path, monkeypatch):
    init = INIT + "__all__ = [*__all__, 'b']\nfrom drift_all._impl import b\n"
    name = _package(tmp_path, monkeypatch, "drift_all", "from ._impl import a as a\n", init)
    assert export_problems(name, tmp_path) == ["stub and __all__ differ: ['b']"]


def test_a_stub_name_that_does_not_exist_fails_on_import_or_in_the_check(tmp_path, monkeypatch):
    name = _package(tmp_path, monkeypatch, "drift_stub", "from ._impl import a as a, c as c\n")
    with pytest.raises(
        ImportError, match=r"cannot import name 'c' from 'drift_stub._impl', listed in the drift_stub"
    ):
        importlib.import_module(name)  # imported eagerly: fails at once, as a plain import would
    lazy_init = INIT.replace("__file__)", "__file__, lazy=True)")
    name = _package(tmp_path, monkeypatch, "drift_lazy", "from ._impl import a as a, c as c\n", lazy_init)
    problems = export_problems(name, tmp_path)
    assert len(problems) == 1 and problems[0].startswith("c does not resolve: cannot import name 'c'"), (
        problems
    )


@pytest.mark.parametrize(
    ("stub", "message"),
    [
        ("from ._impl import a as z\n", "type checkers do not export"),
        ("from ._impl import a\n", "imported without 'as' and never renamed"),
        ("from ._impl import a as a\nfrom ._impl import a as a\n", "listed twice"),
        ("from ._impl import a as a\nX = 1\n", "only 'from MODULE import NAME as NAME' lines"),
    ],
)
def test_a_stub_outside_the_two_forms_is_refused(tmp_path, stub, message):
    (tmp_path / "__init__.pyi").write_text(stub)
    with pytest.raises(ValueError, match=message):
        read_stub(tmp_path / "__init__.pyi", "somepkg")


def test_a_lazy_module_the_stub_never_names_is_refused(tmp_path, monkeypatch):
    name = _package(tmp_path, monkeypatch, "lazy_typo", "from ._impl import a as a\n", "")
    (tmp_path / name / "__init__.py").write_text(
        textwrap.dedent(
            """
            from cotscope._exports import attach_stub
            __getattr__, __dir__, __all__ = attach_stub(__name__, __file__, lazy={"lazy_typo._impll"})
            """
        )
    )
    with pytest.raises(ValueError, match=r"lazy names \['lazy_typo._impll'\]"):
        importlib.import_module(name)


def test_attach_stub_names_a_missing_stub(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "nostub", types.ModuleType("nostub"))
    with pytest.raises(ValueError, match=r"the stub .* is missing"):
        attach_stub("nostub", str(tmp_path / "__init__.py"))


def test_the_stubs_ship_in_the_wheel():
    # the run time reads each __init__.pyi: a wheel without them could not import any package
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert "*.pyi" in config["tool"]["setuptools"]["package-data"]["*"]


def private_imports_across_packages(root: Path = REPO) -> list[str]:
    """``from P._module import ...`` (or ``import P._module``) in a package other than P: a reach past P's public
    names. The CLI glue (``cotscope``) counts as a package too."""
    import ast

    found = []
    for package in [*PACKAGES, "cotscope"]:
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                for name in names:
                    top, _, rest = name.partition(".")
                    if top in PACKAGES and top != package and rest.startswith("_"):
                        found.append(f"{path.relative_to(root)}:{node.lineno}: {name}")
    return found


def test_no_package_imports_another_packages_private_modules(tmp_path):
    assert private_imports_across_packages() == []
    # the check sees such an import
    (tmp_path / "anchors").mkdir()
    (tmp_path / "anchors" / "x.py").write_text("def f():\n    from resampling._engine import Engine\n")
    for package in [*PACKAGES, "cotscope"]:
        (tmp_path / package).mkdir(exist_ok=True)
    assert private_imports_across_packages(tmp_path) == ["anchors/x.py:2: resampling._engine"]
