"""What a package registers in spaCy's registries, as the entry points that let spaCy find it without an import.

spaCy looks a registered name up among the installed packages' entry points (`spacy_architectures`,
`spacy_factories`, `spacy_callbacks`, ...: catalogue's registry namespace joined by "_") before the functions
registered in memory, so a pipeline that names a function loads wherever a package declaring it is installed.
`entry_points` finds them by importing the package in a fresh interpreter with every installed entry point
hidden (else spaCy would import other packages' copies of the same names first) and comparing catalogue's
registry before and after: scripts/package.py writes them into each wheel (whatever its `--code` files register),
and a test checks that pyproject.toml declares all of titlecat's.

Not shipped in the wheels; `python -m titlecat.registrations PACKAGE [--submodules] [--path FOLDER]` prints them
as JSON.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import inspect
import json
import pkgutil
import subprocess
import sys
from pathlib import Path


def entry_points(package: str, path: Path | str | None = None, submodules: bool = False) -> dict[str, dict[str, str]]:
    """{entry point group: {registered name: "module:attribute"}} of what importing `package` registers (and with
    `submodules`, importing each of its modules), found in a fresh interpreter; `path` is put first on its
    sys.path. ValueError naming the registry and the name where a registered object is no module-level name of
    the package (an entry point can only name one)."""
    command = [sys.executable, "-m", __name__, package] + (["--submodules"] if submodules else [])
    command += ["--path", str(path)] if path is not None else []
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise ValueError(f"{package}: finding what it registers failed: {result.stderr.strip()[-3000:]}")
    return json.loads(result.stdout)


def _owned_by(module: str, package: str) -> bool:
    return module == package or module.startswith(f"{package}.")


# spaCy keeps the factories of Language.factory in a registry of their own, which reads no entry points: every
# Language() imports all `spacy_factories` entry points instead, whose modules register their factories there.
FACTORY_NAMESPACE, FACTORY_GROUP = ("spacy", "internal_factories"), "spacy_factories"


def entry_point_groups(registry) -> dict[tuple[str, ...], str]:
    """The entry point group of each catalogue registry of spaCy's `registry` (thinc's and spacy-llm's included, as
    created so far) that reads entry points: its namespace joined by "_" (`spacy_architectures`, `thinc_layers`)."""
    import catalogue

    groups = {FACTORY_NAMESPACE: FACTORY_GROUP}
    for _, member in inspect.getmembers(registry, lambda member: isinstance(member, catalogue.Registry)):
        if member.entry_points:
            groups[tuple(member.namespace)] = member.entry_point_namespace
    return groups


def _find_registrations(package: str, submodules: bool) -> dict[str, dict[str, str]]:
    """In this interpreter, which must not have imported `package` or spaCy yet."""
    import catalogue

    # Other packages' entry points hidden: the names must be registered by importing `package`, not found elsewhere.
    catalogue.AVAILABLE_ENTRY_POINTS = importlib.metadata.EntryPoints(())
    from spacy.util import registry

    if hasattr(registry, "ensure_populated"):  # spaCy >= 3.8.3 registers its own functions lazily: all now
        registry.ensure_populated()
    before = set(catalogue.REGISTRY)
    modules_before = set(sys.modules)
    imported = importlib.import_module(package)
    if submodules:
        for module in pkgutil.walk_packages(imported.__path__, f"{package}."):
            if not module.name.endswith(".__main__"):  # a command line, which would run
                importlib.import_module(module.name)
    groups = entry_point_groups(registry)
    found: dict[str, dict[str, str]] = {}
    for key in sorted(set(catalogue.REGISTRY) - before):
        *namespace, name = key
        group = groups.get(tuple(namespace))
        if group is None:
            continue  # a registry that reads no entry points: only an import can fill it
        registered = catalogue.REGISTRY[key]
        module = getattr(registered, "__module__", None) or ""
        if module in sys.modules and module not in modules_before and not _owned_by(module, package):
            continue  # a dependency imported on the way registering its own functions (e.g. spacy.ml.models)
        attribute = (
            next((attr for attr, value in vars(sys.modules[module]).items() if value is registered), None)
            if _owned_by(module, package)
            else None
        )
        if attribute is None:
            raise ValueError(
                f"{group} {name!r}: registered while importing {package}, but not as a module-level function or "
                f"class of it ({registered!r}): an entry point cannot name it. Register a module-level function "
                "(e.g. @Language.factory on a function, not @Language.component)"
            )
        found.setdefault(group, {})[name] = f"{module}:{attribute}"
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package")
    parser.add_argument("--submodules", action="store_true", help="import each of its modules too")
    parser.add_argument("--path", help="a folder to put first on sys.path (where the package is)")
    args = parser.parse_args(argv)
    if args.path:
        sys.path.insert(0, args.path)
    try:
        found = _find_registrations(args.package, args.submodules)
    except ValueError as error:
        sys.exit(str(error))
    print(json.dumps(found, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
