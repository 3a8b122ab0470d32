"""A fresh virtual environment outside the repository that has only what `pip install fcdd` needs.

Downloading PyTorch (gigabytes) for every test is out of the question, so the environment reuses the
installed packages without being able to see the rest: the distributions that fcdd's own
requirements need (pyproject.toml `dependencies`, followed transitively through the installed
metadata) are linked into one folder, and a `.pth` file puts that folder on the new environment's
path. pip sees exactly those distributions as installed: `pip install --no-index` of fcdd then
succeeds only if the declared requirements are enough, and `import mlflow` (an extra) fails there.
setuptools and wheel are added too, so that pip can build fcdd from a source folder offline
(PIP_NO_BUILD_ISOLATION, see `pip_env`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
BUILD_TOOLS = ("setuptools", "wheel")


def core_requirements() -> list[str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]


def closure(requirements: list[str]) -> list:
    """The installed distributions that ``requirements`` need, markers evaluated for the extras
    each requirement asks for (torch needs ``cuda-toolkit[cudart, ...]``)."""
    seen: dict[str, object] = {}
    done: set[tuple[str, frozenset]] = set()
    todo = [(Requirement(r), "") for r in requirements]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        if (name, frozenset(req.extras)) in done:
            continue
        done.add((name, frozenset(req.extras)))
        try:
            dist = seen.get(name) or distribution(req.name)
        except PackageNotFoundError:
            continue  # an optional platform package this interpreter does not have
        seen[name] = dist
        for wanted in ("", *req.extras):
            todo += [(Requirement(r), wanted) for r in dist.requires or []]
    return list(seen.values())


def link_site(target: Path, requirements: list[str]) -> Path:
    """A folder of symlinks to the top-level files of the distributions ``requirements`` need."""
    target.mkdir(parents=True, exist_ok=True)
    for dist in closure([*requirements, *BUILD_TOOLS]):
        site = Path(dist.locate_file(""))
        tops = {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            src, dst = site / top, target / top
            if top.endswith(".pth") or top == "__pycache__" or not src.exists() or dst.exists():
                continue
            dst.symlink_to(src)
    return target


def fresh_venv(path: Path, site: Path) -> Path:
    """A new venv at ``path`` (its base interpreter is the tests' own) with ``site`` on its path."""
    venv.EnvBuilder(with_pip=True, symlinks=True).create(path)
    adopt_site(path, site)
    return path / "bin"


def adopt_site(path: Path, site: Path) -> None:
    """Put ``site`` on the path of the venv at ``path``: its packages stand in for what pip would
    download. ensurepip's bundled setuptools (older than torch requires) would hide the linked one."""
    own = venv_site_packages(path)
    for bundled in [*own.glob("setuptools*"), *own.glob("pkg_resources"), *own.glob("_distutils_hack")]:
        shutil.rmtree(bundled)
    (own / "distutils-precedence.pth").unlink(missing_ok=True)
    (own / "core_packages.pth").write_text(f"{site}\n")


def venv_site_packages(path: Path) -> Path:
    return path / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def pip_env(bin_dir: Path, home: Path) -> dict[str, str]:
    """The environment of a user's shell with the venv activated, pip kept offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PIP_", "FCDD"))}
    env.update(
        PATH=f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}",
        VIRTUAL_ENV=str(bin_dir.parent),
        HOME=str(home),
        PIP_NO_INDEX="1",  # nothing is downloaded: every requirement must already be there
        PIP_NO_BUILD_ISOLATION="0",  # pip's inverted spelling of --no-build-isolation
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        MPLBACKEND="Agg",
    )
    return env


def run(cmd: str | list[str], cwd: Path, env: dict[str, str], timeout: float = 900) -> str:
    """Run a command (a string runs in bash); its output, or an AssertionError that shows it."""
    shell = isinstance(cmd, str)
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", cmd] if shell else cmd,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{cmd!r} exited {proc.returncode}:\n{out[-6000:]}"
    return out
