"""Each package's public names, listed once: in the package's ``__init__.pyi`` stub.

A package ``__init__.py`` ends with::

    __getattr__, __dir__, __all__ = attach_stub(__name__, __file__)

and its ``__init__.pyi`` holds one import line per public name, in the explicit re-export form type checkers read::

    from ._segment import Sentence as Sentence
    from ._cipher import decode          # not public by itself ...
    decode_cipher = decode               # ... public under another name

The same lines are, at run time, the import table, ``__all__`` and ``dir()``: a name added to the stub is public
everywhere at once, and there is no second list to forget. ``lazy`` defers imports to a name's first use: every
import (``True``) or those from the modules it names; the rest happen with the package's, as plain imports would.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

__all__ = ["attach_stub", "read_stub"]


def read_stub(stub: Path, package: str) -> dict[str, tuple[str, str]]:
    """Public name -> (absolute module, attribute in that module), read from the ``__init__.pyi`` of ``package``.

    Raises ValueError on any line that is not an import of the two forms in the module docstring, so the stub
    cannot hold a name the run time would not see.
    """
    if not stub.is_file():
        raise ValueError(f"{package}: the stub {stub} is missing; reinstall cotscope (it ships every *.pyi)")
    tree = ast.parse(stub.read_text(encoding="utf-8"), filename=str(stub))
    exports: dict[str, tuple[str, str]] = {}
    private: dict[str, tuple[str, str]] = {}

    def add(name: str, source: tuple[str, str], line: int) -> None:
        if name in exports:
            raise ValueError(f"{stub}:{line}: {name!r} is listed twice; keep one line")
        exports[name] = source

    for node in tree.body:
        if (
            isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            continue  # the docstring
        if isinstance(node, ast.ImportFrom) and node.module and all(a.name != "*" for a in node.names):
            module = importlib.util.resolve_name("." * node.level + node.module, package)
            for alias in node.names:
                if alias.asname is None:
                    private[alias.name] = (module, alias.name)
                elif alias.asname == alias.name:
                    add(alias.name, (module, alias.name), node.lineno)
                else:
                    raise ValueError(
                        f"{stub}:{node.lineno}: write 'from {node.module} import {alias.name}' and then "
                        f"'{alias.asname} = {alias.name}' (type checkers do not export '{alias.name} as {alias.asname}')"
                    )
            continue
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Name)
            and node.value.id in private
        ):
            add(node.targets[0].id, private.pop(node.value.id), node.lineno)
            continue
        raise ValueError(
            f"{stub}:{node.lineno}: only 'from MODULE import NAME as NAME' lines (and 'NEW = NAME' after a plain "
            "import) may stand in a package stub"
        )
    if private:
        unused = ", ".join(sorted(private))
        raise ValueError(
            f"{stub}: {unused} imported without 'as' and never renamed; write 'NAME as NAME' to export"
        )
    return exports


def attach_stub(
    package: str, init_file: str, lazy: bool | Collection[str] = False
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """The package's ``__getattr__``, ``__dir__`` and ``__all__``, all from its ``__init__.pyi``.

    ``lazy``: False imports every name now (as plain imports would), True imports each on first use, and a
    collection of module names (``{"steganography._experiments"}``) defers those modules only.
    """
    exports = read_stub(Path(init_file).with_name("__init__.pyi"), package)
    names = sorted(exports)
    namespace = vars(sys.modules[package])

    def __getattr__(name: str) -> Any:
        source = exports.get(name)
        if source is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        try:
            value = getattr(importlib.import_module(source[0]), source[1])
        except AttributeError:
            raise ImportError(
                f"cannot import name {source[1]!r} from {source[0]!r}, listed in the {package}/__init__.pyi stub"
            ) from None
        namespace[name] = value  # later look-ups are plain attribute reads
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names))

    if lazy is not True:
        deferred = set() if lazy is False else set(lazy)
        unknown = deferred - {module for module, _ in exports.values()}
        if unknown:
            raise ValueError(
                f"{package}: lazy names {sorted(unknown)}, which no line of its __init__.pyi imports from"
            )
        for name in names:
            if exports[name][0] not in deferred:
                __getattr__(name)
    return __getattr__, __dir__, names
