"""fcdd installed as a user installs it: a wheel built from this checkout, pip-installed into a fresh
virtual environment outside the repository, used from an empty folder (no params.yaml, no
project files). The environment reuses the installed PyTorch and friends without downloading them:
tests/fresh_env.py links exactly the distributions fcdd's declared requirements need, so pip (kept
offline) succeeds only if those requirements are enough, and the pipelines extra (MLflow) is absent.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcdd import __version__
from tests.fresh_env import REPO, adopt_site, core_requirements, fresh_venv, link_site, pip_env, run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def _source_copy(dst: Path) -> Path:
    """The files git tracks (or would track), so building leaves nothing in the checkout."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for rel in listed:
        if (REPO / rel).is_file() and not rel.startswith(("data/", "tests/")):
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dst / rel)
    return dst


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(wheel, linked site folder, a folder outside the repository) for the tests of this module."""
    base = tmp_path_factory.mktemp("user")
    assert not base.is_relative_to(REPO)
    wheels = base / "wheels"
    source = _source_copy(base / "src")
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            ".",
        ],
        source,
        {"PATH": "/usr/bin:/bin", "HOME": str(base), "PIP_NO_INDEX": "1"},
    )
    (wheel,) = wheels.glob("fcdd-*.whl")
    return wheel, link_site(base / "core-site", core_requirements()), base


@pytest.fixture(scope="module")
def installed(built) -> tuple[Path, dict[str, str]]:
    """(bin folder, environment) of a fresh venv with fcdd's wheel installed; HOME is a new folder."""
    wheel, site, base = built
    bin_dir = fresh_venv(base / "venv", site)
    env = pip_env(bin_dir, base / "home")
    (base / "home").mkdir()
    run([str(bin_dir / "pip"), "install", "-q", str(wheel)], base, env)
    return bin_dir, env


def _textures(folder: Path, n: int, hw: tuple[int, int], seed: int, defect: bool = False) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = rng.integers(90, 140, (*hw, 3), dtype=np.uint8)
        if defect:
            img[4:16, 6:18] = [250, 30, 30]
        Image.fromarray(img).save(folder / f"{i:02d}.png")


def test_wheel_installs_and_runs_init_train_predict_from_an_empty_folder(installed, tmp_path):
    bin_dir, env = installed
    work = tmp_path / "my-project"
    work.mkdir()
    _textures(work / "images" / "good", 24, (40, 40), 0)
    _textures(work / "images" / "scratch", 6, (40, 40), 1, defect=True)
    _textures(work / "new", 3, (50, 70), 2)

    fcdd = str(bin_dir / "fcdd")
    assert run([fcdd, "--version"], work, env).startswith(f"fcdd {__version__} (torch ")
    # The package, not this checkout: imported from the venv; the pipelines extra is not installed.
    where = run([str(bin_dir / "python"), "-c", "import fcdd, sys; print(fcdd.__file__)"], work, env)
    assert "site-packages" in where and str(REPO) not in where
    assert (
        run(
            [str(bin_dir / "python"), "-c", "import importlib.util as u; print(u.find_spec('mlflow'))"],
            work,
            env,
        ).strip()
        == "None"
    )

    said = run(
        [
            fcdd,
            "init",
            "--dataset",
            "folder",
            "--root",
            "images",
            "--classes",
            "part",
            "--nominal",
            "good",
            "--anomalous",
            "scratch",
        ],
        work,
        env,
    )
    assert "wrote params.yaml" in said and "tracking.enabled: false, as MLflow is not installed" in said
    tiny = [
        "-o",
        "model={net: cnn32, input_size: 32, sigma: 4.0, pretrained: false, freeze: 0}",
        "-o",
        "train.epochs=1",
        "-o",
        "train.batch_size=8",
        "-o",
        "train.threads=1",
        "-o",
        "data.num_workers=0",
        "-o",
        "train.progress=false",
        "-o",
        "evaluation.heatmap_count=4",
    ]
    trained = run([fcdd, "train", *tiny], work, env)
    assert "part seed 0: image_auc " in trained, trained
    model = work / "runs" / "folder" / "part" / "seed0" / "model.pt"
    assert model.is_file()
    run([fcdd, "predict", "--model", str(model), "--out", "predictions", "new"], work, env)
    rows = (work / "predictions" / "scores.csv").read_text().splitlines()
    assert rows[0].startswith("path,score") and len(rows) == 4
    assert sorted(p.name for p in (work / "predictions").glob("*.png")) != []
    leftovers = {p.name for p in work.iterdir()}
    assert leftovers == {"images", "new", "params.yaml", "runs", "predictions"} | ({"cache"} & leftovers)


def _readme_block(title: str) -> str:
    """The first ```bash block of the README section ``title``."""
    text = (REPO / "README.md").read_text()
    section = text[text.index(f"\n## {title}\n") :].split("\n## ", 2)[1]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def test_readme_install_and_own_images_walk_run_as_written(built, tmp_path):
    """The README's Install block and its own-images walk, run in bash from an empty folder outside
    the repository. Two stand-ins, nothing else changed: the wheel for `path/to/fcdd`, and the
    linked packages (adopt_site) for the PyPI downloads that pip cannot make offline."""
    wheel, site, base = built
    install, walk = _readme_block("Install"), _readme_block("Your own images")
    assert "path/to/fcdd" in install and "fcdd init" in walk
    home = tmp_path / "home"
    home.mkdir()
    empty = tmp_path / "empty"
    empty.mkdir()
    env = pip_env(Path(sys.executable).parent, home)
    create, rest = install.split("\n", 1)
    assert create.startswith("python3 -m venv .venv") and "source .venv/bin/activate" in create
    run(create, empty, env)
    adopt_site(empty / ".venv", site)
    said = run(install.replace("path/to/fcdd", str(wheel)) + "\n", empty, env)
    assert f"fcdd {__version__} (torch " in said

    # the user's images, where the walk's comment asks for them (the walk makes the folder itself)
    images = empty / "my-part" / "images"
    _textures(images / "good", 24, (48, 48), 0)
    _textures(images / "defect", 6, (48, 48), 1, defect=True)
    (images / "masks").mkdir()
    for png in (images / "defect").iterdir():
        mask = np.zeros((48, 48), np.uint8)
        mask[4:16, 6:18] = 255
        Image.fromarray(mask).save(images / "masks" / f"{png.stem}_mask.png")
    said = run(f"source .venv/bin/activate\n{walk}", empty, env)
    part = empty / "my-part"
    assert "wrote params.yaml" in said and "train.epochs" in said  # init, then config --explain
    assert (part / "runs/folder/my-part/seed0/model.pt").is_file()
    scores = (part / "predictions/scores.csv").read_text().splitlines()
    assert scores[0].startswith("path,score") and len(scores) == 7
