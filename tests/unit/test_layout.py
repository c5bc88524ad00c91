"""The floor plan reads top-down: each layer imports only the layers below it.

Checked statically with `ast` over the source files, nothing is imported: every import
statement counts, at module level, inside functions and under `if TYPE_CHECKING:` (a
type-only import still ties the layers together for mypy and for the next refactor).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The folders the old top-level names came from, plus the code that used to import them.
OLD_NAMES = frozenset({"shared", "producer", "workers", "beat"})
SCANNED_FOR_OLD_NAMES = ("producer", "workers", "shared", "beat", "ops", "tests")
# Built from pieces so that this file does not itself contain the strings it bans.
OUTSIDE_REFERENCES = ("../" + "shared/", "DESIGN" + ".md", "STYLE" + ".md")


@dataclass(frozen=True)
class Import:
    """One import statement and the absolute dotted names of the modules it may load."""

    path: Path
    line: int
    statement: str
    modules: tuple[str, ...]
    level: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.statement}"


def folder_packages() -> dict[Path, str]:
    """The package-dir mapping of pyproject.toml, folder to dotted package name."""
    with (ROOT / "pyproject.toml").open("rb") as handle:
        mapping: dict[str, str] = tomllib.load(handle)["tool"]["setuptools"]["package-dir"]
    return {Path(folder): package for package, folder in mapping.items()}


FOLDER_PACKAGES = folder_packages()


def module_name(relative: Path) -> str:
    """The dotted name a source file imports as (the __init__ of a package: its package)."""
    parts = relative.with_suffix("").parts
    # The longest mapped folder wins: producer/root/ is `fleetline`, not fleetline.producer.
    for cut in range(len(parts), 0, -1):
        package = FOLDER_PACKAGES.get(Path(*parts[:cut]))
        if package is not None:
            parts = (*package.split("."), *parts[cut:])
            break
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def python_files(*folders: str) -> list[Path]:
    """Every .py file under the folders, relative to the repository root."""
    found = []
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            relative = path.relative_to(ROOT)
            if "__pycache__" not in relative.parts:
                found.append(relative)
    return sorted(found)


def imports(relative: Path) -> Iterator[Import]:
    """Every import statement of the file, wherever in the file it is."""
    source = (ROOT / relative).read_text()
    tree = ast.parse(source, filename=str(relative))
    name = module_name(relative)
    # A relative import counts from the file's package; an __init__ is its own package.
    package = name if relative.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = tuple(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from fleetline import producer` loads fleetline.producer, so each name counts
            # as a submodule; a name that is an attribute still lives in that module.
            modules = tuple(
                base if alias.name == "*" else f"{base}.{alias.name}" for alias in node.names
            )
        else:
            continue
        statement = " ".join((ast.get_source_segment(source, node) or "").split())
        yield Import(relative, node.lineno, statement, modules, getattr(node, "level", 0))


def within(module: str, package: str) -> bool:
    """Whether `module` is `package` or one of its submodules."""
    return module == package or module.startswith(package + ".")


def violations(files: list[Path], banned: Callable[[str], bool]) -> list[str]:
    """Each import in the files whose module `banned` rejects, as `path:line: imports X`."""
    return [
        str(found)
        for path in files
        for found in imports(path)
        if any(banned(module) for module in found.modules)
    ]


def shared_banned(module: str) -> bool:
    """shared/ is the bottom floor: of fleetline it may use only fleetline.shared."""
    # The root package is the public API, assembled from the floors above shared.
    return within(module, "fleetline") and not within(module, "fleetline.shared")


def test_shared_imports_only_shared() -> None:
    """shared/ imports nothing from producer, workers, beat or the root package's API."""
    found = violations(python_files("shared"), shared_banned)
    assert not found, "shared/ reaches up a floor:\n" + "\n".join(found)


def test_beat_imports_no_producer_or_workers() -> None:
    """beat/ imports nothing from fleetline.producer or fleetline.workers."""
    found = violations(
        python_files("beat"),
        lambda m: within(m, "fleetline.producer") or within(m, "fleetline.workers"),
    )
    assert not found, "beat/ reaches up a floor:\n" + "\n".join(found)


def test_producer_imports_no_workers_or_beat() -> None:
    """producer/ (not its root/ package) imports nothing from fleetline.workers or beat."""
    files = [p for p in python_files("producer") if p.parts[:2] != ("producer", "root")]
    found = violations(
        files, lambda m: within(m, "fleetline.workers") or within(m, "fleetline.beat")
    )
    assert not found, "producer/ reaches across to the fleet:\n" + "\n".join(found)


# The one module that wires the worker side together registers the scheduled-run task,
# whose body submits jobs through the producer, and the beat-scheduled housekeeping tasks.
WIRING = Path("workers/app.py")


def test_workers_import_no_producer_but_the_wiring_module() -> None:
    """workers/ imports nothing from fleetline.producer: workers run what producers submit."""
    files = [f for f in python_files("workers") if f != WIRING]
    found = violations(files, lambda m: within(m, "fleetline.producer"))
    assert not found, "workers/ reaches up to the producer:\n" + "\n".join(found)


@pytest.mark.parametrize("folder", SCANNED_FOR_OLD_NAMES)
def test_no_old_top_level_names(folder: str) -> None:
    """Nothing imports `shared`, `producer`, `workers` or `beat` as a top-level package."""
    # With the repository root on sys.path (pytest, `python -m ops.bench`) `import shared`
    # works, but loads a second copy of every module beside fleetline.shared: two settings
    # objects, two registries, isinstance failing across them. The lint rule bans it too.
    found = [
        str(found)
        for path in python_files(folder)
        for found in imports(path)
        if found.level == 0 and any(m.split(".")[0] in OLD_NAMES for m in found.modules)
    ]
    assert not found, "import these as fleetline.<name>:\n" + "\n".join(found)


def tracked_files() -> list[Path]:
    """The files git tracks, relative to the repository root."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listing = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60
    ).stdout.decode()
    return [Path(name) for name in listing.split("\0") if name]


def test_no_references_outside_the_repository() -> None:
    """No tracked text file points at the design folder that sits beside the checkout."""
    # Those files are not in the repository: a reader of the code, or of a released wheel,
    # cannot follow the pointer. The reason belongs in a comment where it is needed.
    found = []
    for relative in tracked_files():
        path = ROOT / relative
        if not path.is_file():
            continue  # deleted in the work tree but not yet in the index
        data = path.read_bytes()
        if b"\0" in data:
            continue  # binary, as git itself decides
        for number, line in enumerate(data.decode(errors="replace").splitlines(), 1):
            found += [f"{relative}:{number}: {ref}" for ref in OUTSIDE_REFERENCES if ref in line]
    assert not found, "references to files outside the repository:\n" + "\n".join(found)
