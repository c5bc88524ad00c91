"""The built wheel installs one `fleetline` package with every module and Lua script in it.

Slow-ish: it builds a real wheel (a few seconds, once for the module) with `pip wheel`, so
what is checked is what `pip install` would put in site-packages, not what the editable
install happens to link.
"""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

# Building the wheel takes longer than a unit test; the suite's default timeout is 120 s.
pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "pyproject.toml"
# The repository folders whose modules make up the installed package.
SOURCE_FOLDERS = ("producer", "workers", "shared", "beat")
MIN_SETUPTOOLS = (69,)
REQUIRED = (
    "fleetline/__init__.py",
    "fleetline/py.typed",
    "fleetline/producer/cli.py",
    "fleetline/workers/app.py",
    "fleetline/beat/app.py",
    "fleetline/examples/__init__.py",
)


@dataclass(frozen=True)
class Build:
    """A wheel built from the checkout, and what the build left behind in the checkout."""

    wheel: Path
    names: frozenset[str]
    left_in_repo: tuple[str, ...]

    def read(self, name: str) -> str:
        """The text of one file in the wheel."""
        with zipfile.ZipFile(self.wheel) as archive:
            return archive.read(name).decode()

    def dist_info(self, filename: str) -> str:
        """The wheel path of one `*.dist-info/` file; fails if it is missing."""
        found = [n for n in self.names if n.split("/")[0].endswith(".dist-info")]
        matches = [n for n in found if n.split("/", 1)[1] == filename]
        assert len(matches) == 1, f"no single *.dist-info/{filename} in the wheel: {sorted(found)}"
        return matches[0]


def setuptools_version() -> tuple[int, ...]:
    """The installed setuptools version as numbers (its leading numeric parts)."""
    numbers: list[int] = []
    for part in version("setuptools").split("."):
        if not part.isdigit():
            break
        numbers.append(int(part))
    return tuple(numbers)


def build_artifacts() -> dict[str, tuple[int, int]]:
    """Every file a wheel build could write into the checkout, with its mtime and size."""
    # build/__editable__*/ belongs to the editable install the venv runs from: not ours.
    candidates = [
        *(p for p in (ROOT / "build").glob("*") if not p.name.startswith("__editable__")),
        ROOT / "dist",
        *ROOT.glob("*.egg-info"),
    ]
    found: dict[str, tuple[int, int]] = {}
    for top in candidates:
        for path in [top, *top.rglob("*")] if top.is_dir() else [top]:
            if path.exists():
                stat = path.stat()
                found[path.relative_to(ROOT).as_posix()] = (stat.st_mtime_ns, stat.st_size)
    return found


def pyproject() -> dict[str, Any]:
    """pyproject.toml, parsed."""
    with PYPROJECT.open("rb") as handle:
        return tomllib.load(handle)


def package_folders() -> dict[str, Path]:
    """Each package listed in pyproject.toml and its source folder, relative to the root."""
    config = pyproject()["tool"]["setuptools"]
    packages = config["packages"]
    if not isinstance(packages, list):
        pytest.fail("this test expects [tool.setuptools] packages to be an explicit list")
    mapping: dict[str, str] = config.get("package-dir", {})

    def folder(package: str) -> Path:
        # setuptools' rule: the longest dotted prefix listed in package-dir gives the
        # folder, the rest of the name is appended as subfolders; "" is the default root.
        parts = package.split(".")
        for cut in range(len(parts), 0, -1):
            prefix = ".".join(parts[:cut])
            if prefix in mapping:
                return Path(mapping[prefix], *parts[cut:])
        return Path(mapping.get("", "."), *parts)

    return {package: folder(package) for package in packages}


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    """The wheel, built once for this module into a temporary directory."""
    if setuptools_version() < MIN_SETUPTOOLS:
        pytest.fail(
            f"setuptools {version('setuptools')} is too old to build the wheel (needs >=69): "
            "install the dev extras, `make venv` or `.venv/bin/pip install -e '.[dev]'`"
        )
    tmp = tmp_path_factory.mktemp("wheel")
    # setuptools reads this extra config file last, so its folders win: the intermediate
    # build/lib, build/bdist.* and *.egg-info go to the temp dir, not into the checkout.
    extra = tmp / "extra.cfg"
    extra.write_text(
        f"[build]\nbuild_base = {tmp / 'build'}\n"
        f"[egg_info]\negg_base = {tmp}\n"
        f"[bdist_wheel]\nbdist_dir = {tmp / 'bdist'}\n"
    )
    dist = tmp / "dist"
    env = {**os.environ, "DIST_EXTRA_CONFIG": str(extra), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    before = build_artifacts()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            ".",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dist),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    after = build_artifacts()
    if result.returncode != 0:
        pytest.fail(f"pip wheel failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    wheels = sorted(dist.glob("*.whl"))
    assert len(wheels) == 1, f"expected one wheel in {dist}, found {wheels}"
    with zipfile.ZipFile(wheels[0]) as archive:
        names = frozenset(n for n in archive.namelist() if not n.endswith("/"))
    changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    return Build(wheels[0], names, tuple(changed))


def test_build_leaves_nothing_in_the_repo(build: Build) -> None:
    """The build writes only to its temporary directory, never build/, dist/ or *.egg-info."""
    assert not build.left_in_repo, f"the wheel build wrote into the checkout: {build.left_in_repo}"


def test_top_level_is_only_fleetline(build: Build) -> None:
    """top_level.txt names one importable package: fleetline."""
    top_level = build.read(build.dist_info("top_level.txt")).split()
    assert top_level == ["fleetline"]


def test_every_file_is_under_fleetline(build: Build) -> None:
    """Apart from the metadata, the wheel installs nothing outside fleetline/."""
    stray = sorted(
        n
        for n in build.names
        if not n.split("/")[0].endswith(".dist-info") and not n.startswith("fleetline/")
    )
    assert not stray, f"files outside fleetline/ in the wheel: {stray}"


@pytest.mark.parametrize("name", REQUIRED)
def test_contains(build: Build, name: str) -> None:
    """The entry points, the root package, its marker and the examples are installed."""
    assert name in build.names


def test_contains_every_lua_script(build: Build) -> None:
    """Every shared/lua/*.lua of the checkout is package data in fleetline/shared/lua/."""
    # The scripts are read with importlib.resources at run time: a missing one only fails
    # when its Redis call is first made.
    in_wheel = {
        n for n in build.names if n.startswith("fleetline/shared/lua/") and n.endswith(".lua")
    }
    assert in_wheel, "no fleetline/shared/lua/*.lua in the wheel"
    in_repo = {f"fleetline/shared/lua/{p.name}" for p in (ROOT / "shared" / "lua").glob("*.lua")}
    assert in_repo, "no shared/lua/*.lua in the checkout"
    assert sorted(in_repo - in_wheel) == []


def test_every_module_maps_to_one_wheel_path(build: Build) -> None:
    """Each source module is installed once, at the path its package-dir mapping gives."""
    # Packages are listed by hand, so a module in a folder missing from `packages` is
    # silently left out of the wheel; a folder listed twice would install it twice.
    owners: dict[Path, list[str]] = {}
    for package, package_folder in package_folders().items():
        owners.setdefault(package_folder, []).append(package)
    problems: list[str] = []
    expected: set[str] = set()
    for folder in SOURCE_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if "__pycache__" in relative.parts:
                continue
            packages = owners.get(relative.parent, [])
            if len(packages) != 1:
                problems.append(f"{relative}: folder is packaged as {packages or 'nothing'}")
                continue
            wheel_path = f"{packages[0].replace('.', '/')}/{path.name}"
            expected.add(wheel_path)
            if wheel_path not in build.names:
                problems.append(f"{relative}: {wheel_path} is not in the wheel")
    # The other way round: a .py in the wheel that no source module accounts for.
    extra = sorted(n for n in build.names if n.endswith(".py") and n not in expected)
    problems += [f"{name}: in the wheel but from no module of {SOURCE_FOLDERS}" for name in extra]
    assert not problems, "\n".join(problems)


def test_no_tests_or_ops_in_the_wheel(build: Build) -> None:
    """The test suite and the ops tooling stay in the repository."""
    leaked = sorted(n for n in build.names if {"tests", "ops"} & set(n.split("/")[:-1]))
    assert not leaked, f"tests/ or ops/ files in the wheel: {leaked}"


def test_console_script_points_into_fleetline(build: Build) -> None:
    """The `fleetline` command runs a fleetline.* module that the wheel installs."""
    entry_points = configparser.ConfigParser()
    entry_points.read_string(build.read(build.dist_info("entry_points.txt")))
    target = entry_points["console_scripts"]["fleetline"]
    module = target.split(":")[0].strip()
    assert module.startswith("fleetline."), target
    path = module.replace(".", "/")
    assert {f"{path}.py", f"{path}/__init__.py"} & build.names, f"{module} is not in the wheel"
