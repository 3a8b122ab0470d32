"""`fcdd init` and `fcdd config --explain`: a clean start for a user's own data, and where every value
came from. The README's walk-through is run literally."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest
import torch
import yaml

from fcdd.cli import main
from fcdd.config import explain_config, load_config, preset_definitions
from fcdd.init_params import default_presets

REPO = Path(__file__).resolve().parents[2]


def _readme_section() -> str:
    text = (REPO / "README.md").read_text()
    return text[text.index("## Your own images") :].split("\n## ", 1)[0]


def _readme_init_args(root: Path, out: Path) -> list[str]:
    """The README's `fcdd init` command, its placeholder root and output file replaced."""
    bash = re.search(r"```bash\n(.*?)```", _readme_section(), re.S).group(1).replace("\\\n", " ")
    line = next(ln for ln in bash.splitlines() if ln.strip().startswith("fcdd init"))
    args = shlex.split(line.split("#")[0])[1:]
    args[args.index("--root") + 1] = str(root)
    return [*args, "--out", str(out)] if "--out" not in args else args


def _make_named_folders(root: Path, args: list[str]) -> None:
    """The folders the command's --nominal/--anomalous/--masks name, under --root."""
    for option in ("--nominal", "--anomalous", "--masks"):
        if option in args:
            for name in args[args.index(option) + 1 :]:
                if name.startswith("--"):
                    break
                (root / name).mkdir(parents=True, exist_ok=True)


def _preset_value(names: list[str], section: str, key: str):
    """What the presets alone give (the last one naming the key wins): fcdd's, or params.yaml's own."""
    presets = preset_definitions(REPO / "params.yaml")
    value = None
    for name in names:
        value = presets[name].get(section, {}).get(key, value)
    return value


def test_readme_walkthrough_gives_the_presets_values(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the README runs in the project, beside its params.yaml
    root = tmp_path / "images"
    _images(root / "good", (64, 64))
    out = tmp_path / "my-part.yaml"
    args = _readme_init_args(root, out)
    _make_named_folders(root, args)  # init refuses folders that are not there
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(args) == 0
    cfg = load_config(out)
    chosen = cfg.preset
    assert chosen == default_presets("folder", cpu=not torch.cuda.is_available())
    for section, key in [
        ("evaluation", "quantile"),
        ("train", "epochs"),
        ("train", "lr"),
        ("train", "batch_size"),
        ("model", "net"),
        ("model", "sigma"),
        ("anomalies", "kind"),
    ]:
        want = _preset_value(chosen, section, key)
        assert want is not None, (section, key)
        assert getattr(getattr(cfg, section), key) == want, (section, key)
    assert cfg.quantile == _preset_value(chosen, "evaluation", "quantile")
    assert cfg.data.root == str(root) and cfg.data.classes == ["my-part"]

    # The README's yaml block is what the file says (the sections the user chose).
    shown = yaml.safe_load(re.search(r"```yaml\n(.*?)```", _readme_section(), re.S).group(1))
    written = yaml.safe_load(out.read_text())
    shown["data"]["root"] = str(root)
    assert {k: written[k] for k in shown} == shown
    assert set(written) == {"preset", "data", "presets"}  # nothing else set behind the user's back


def test_a_copied_params_yaml_would_have_beaten_the_preset():
    """Why init exists: the main job's sections beat the presets, and --explain says so."""
    rows = {k: (v, w) for k, v, w in explain_config(REPO / "params.yaml", [], ["folder", "cpu_mvtec"])}
    value, where = rows["train.epochs"]
    assert value != _preset_value(["folder", "cpu_mvtec"], "train", "epochs")
    assert "params.yaml (train)" in where and "over preset cpu_mvtec" in where
    value, where = rows["evaluation.quantile"]
    assert value is None and "over preset folder" in where and "null -> " in where


def test_explain_names_default_preset_section_and_override(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "preset": ["small"],
                "train": {"lr": 0.5},
                "presets": {
                    "small": {"train": {"epochs": 7, "lr": 0.1}, "data": {"folder": {"test_ratio": 0.3}}}
                },
            }
        )
    )
    rows = {k: (v, w) for k, v, w in explain_config(params, ["train.seeds=[3]"])}
    assert rows["train.epochs"] == (7, "preset small")
    assert rows["train.lr"] == (0.5, f"{params} (train), over preset small")
    assert rows["train.seeds"] == ([3], "override")
    assert rows["train.batch_size"][1] == "default"
    assert rows["data.folder.test_ratio"] == (0.3, "preset small")
    assert len(rows) == len(load_config(params).flat())

    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        assert main(["config", "--params", str(params), "--explain"]) == 0
    line = next(ln for ln in log.getvalue().splitlines() if ln.startswith("train.epochs "))
    assert line.split()[1:] == ["7", "preset", "small"]


def test_init_refuses_bad_input_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    out = tmp_path / "p.yaml"
    assert main(["init", "--dataset", "folder", "--root", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "nope: no such folder" in capsys.readouterr().err
    args = ["init", "--dataset", "folder", "--root", str(tmp_path), "--out", str(out)]
    assert main([*args, "--preset", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "nosuch" in err and "known presets" in err and len(err.strip().splitlines()) == 1
    out.write_text("keep me")
    assert main(args) == 2
    assert "exists" in capsys.readouterr().err and out.read_text() == "keep me"


@pytest.mark.parametrize("dataset", ["folder", "mvtec"])
def test_init_default_presets_load(tmp_path, monkeypatch, dataset):
    monkeypatch.chdir(REPO)
    out = tmp_path / "p.yaml"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["init", "--dataset", dataset, "--root", str(tmp_path), "--out", str(out)]) == 0
    cfg = load_config(out)
    assert cfg.preset[0] == dataset and cfg.data.dataset == dataset
    assert cfg.quantile == _preset_value([dataset], "evaluation", "quantile")


def _images(folder: Path, hw: tuple[int, int], n: int = 3) -> Path:
    from PIL import Image

    folder.mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (hw[1], hw[0]), (i * 40, 90, 120)).save(folder / f"{i}.png")
    return folder


def test_init_outside_the_project_needs_no_params_yaml(tmp_path, monkeypatch, capsys):
    """fcdd's presets ship with the package: no --presets-from, no file to name wrongly."""
    monkeypatch.chdir(tmp_path)
    _images(tmp_path / "images" / "good", (64, 64))
    assert main(["init", "--dataset", "folder", "--root", "images", "--nominal", "good"]) == 0
    out = capsys.readouterr().out
    assert "wrote params.yaml" in out and "resize" not in out  # square images: nothing to choose
    cfg = load_config(tmp_path / "params.yaml")
    assert cfg.preset[0] == "folder" and cfg.data.resize == "fixed"
    assert "copied from fcdd's presets" in (tmp_path / "params.yaml").read_text()


def test_init_checks_the_folder_layout_as_training_does(tmp_path, monkeypatch, capsys):
    """Good images beside their masks (x.jpg, x.png) in the nominal folder: `fcdd init` says so in one
    line before writing anything; with the masks named by a pattern it writes the file."""
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    good = _images(tmp_path / "images" / "good", (64, 64))
    for i in range(3):
        Image.new("L", (64, 64)).save(good / f"{i}.jpg")  # the images are the .jpg, the .png their masks
    args = ["init", "--dataset", "folder", "--root", "images", "--nominal", "good"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "share a stem (3 such pairs)" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "params.yaml").exists()
    assert main([*args, "--masks", "good/*.png", "--mask-suffix", ""]) == 0
    assert load_config(tmp_path / "params.yaml").data.folder.masks == ["good/*.png"]


@pytest.mark.parametrize("hw", [(1250, 500), (500, 1250)])
def test_init_keeps_the_aspect_of_strips(tmp_path, monkeypatch, capsys, hw):
    """Strips 1250 tall and 500 wide become 560x224 (H×W) inputs, not squares, nor transposed."""
    monkeypatch.chdir(tmp_path)
    _images(tmp_path / "images" / "good", hw)
    args = ["init", "--dataset", "folder", "--root", "images", "--nominal", "good", "--preset", "folder"]
    assert main(args) == 0
    out = capsys.readouterr().out
    want = (560, 224) if hw[0] > hw[1] else (224, 560)
    assert f"{hw[0]}x{hw[1]} (H×W" in out and f"the net sees {want[0]}x{want[1]} (H×W)" in out
    cfg = load_config(tmp_path / "params.yaml")
    assert cfg.data.resize == "keep_aspect" and cfg.model.input_size == 224
    # what the loader then does with them: the note above is what training uses
    from fcdd.data.datasets import class_names, dataset_spec

    raw = dataset_spec("folder").load(cfg, class_names(cfg)[0], 0)
    assert tuple(raw.geometry["input_size"]) == want


def test_readme_rectangle_example_is_height_by_width():
    """The README's rectangle advice, read from the README: `[H, W]` for strips `H0` tall and `W0`
    wide, and what keep_aspect gives for them, agree with the code (the advice was transposed)."""
    from fcdd.data.geometry import keep_aspect_hw

    text = " ".join((REPO / "README.md").read_text().split())
    found = re.search(
        r"`model\.input_size: \[(\d+), (\d+)\]` \(H×W\) suits strips (\d+) tall and (\d+) wide, and "
        r"`data\.resize: keep_aspect` with `model\.input_size: (\d+)` gives the same (\d+)x(\d+) \(H×W\)",
        text,
    )
    assert found, "the README's rectangle example is missing or reworded"
    h, w, tall, wide, short, kh, kw = map(int, found.groups())
    assert tall > wide and h > w  # tall strips, a tall input
    assert keep_aspect_hw(short, [(tall, wide)]) == (kh, kw) == (h, w)
