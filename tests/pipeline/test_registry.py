"""Registry aliases: challenger always moves, champion only on a better score, same protocol."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("mlflow")

from mlflow import MlflowClient  # noqa: E402

from fcdd.config import load_config  # noqa: E402
from pipelines import registry  # noqa: E402


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    return uri, MlflowClient(tracking_uri=uri, registry_uri=uri)


def _register(store, tmp_path, metrics, protocol="mvtec/grid"):
    uri, client = store
    source = (tmp_path / "model").as_uri()
    return registry.register_version(client, uri, "fcdd-mvtec-grid", source, metrics, protocol)


def test_slugify_and_model_name():
    assert registry.slugify("T-shirt/top") == "t-shirt-top"
    assert registry.slugify("metal_nut") == "metal-nut"
    cfg = load_config(None, overrides=["data.dataset=mvtec"])
    assert registry.registered_model_name(cfg, "metal_nut") == "fcdd-mvtec-metal-nut"
    with pytest.raises(ValueError, match="class name"):
        registry.slugify("//")
    cfg.tracking.model_name = "fcdd-{version}"
    with pytest.raises(ValueError, match="tracking.model_name"):
        registry.registered_model_name(cfg, "grid")


def test_selection_metric_prefers_pixel_auc():
    assert registry.selection_metric({"image_auc": 0.9, "pixel_auc": 0.8}) == ("pixel_auc", 0.8)
    assert registry.selection_metric({"image_auc": 0.9, "pixel_auc": None}) == ("image_auc", 0.9)
    with pytest.raises(ValueError, match="neither"):
        registry.selection_metric({"aupro": 0.5})


@pytest.mark.slow
def test_champion_moves_only_when_better(store, tmp_path):
    _, client = store
    v1, champ1 = _register(store, tmp_path, {"image_auc": 0.9, "pixel_auc": 0.80})
    assert champ1
    v2, champ2 = _register(store, tmp_path, {"image_auc": 0.99, "pixel_auc": 0.70})  # worse pixel AUC
    assert not champ2
    assert str(client.get_model_version_by_alias("fcdd-mvtec-grid", "champion").version) == v1
    assert str(client.get_model_version_by_alias("fcdd-mvtec-grid", "challenger").version) == v2
    assert "does not beat" in client.get_model_version("fcdd-mvtec-grid", v2).tags[registry.TAG_COMPARISON]
    v3, champ3 = _register(store, tmp_path, {"image_auc": 0.5, "pixel_auc": 0.85})
    assert champ3
    assert str(client.get_model_version_by_alias("fcdd-mvtec-grid", "champion").version) == v3
    version = client.get_model_version("fcdd-mvtec-grid", v3)
    assert version.tags["metric.pixel_auc"] == "0.85"
    assert "pixel_auc 0.8500" in version.description


@pytest.mark.slow
def test_different_protocol_is_not_compared(store, tmp_path):
    _, client = store
    v1, _ = _register(store, tmp_path, {"image_auc": 0.7}, protocol="mvtec/grid/a")
    v2, champ = _register(store, tmp_path, {"image_auc": 0.99}, protocol="mvtec/grid/b")
    assert not champ
    assert str(client.get_model_version_by_alias("fcdd-mvtec-grid", "champion").version) == v1
    tag = client.get_model_version("fcdd-mvtec-grid", v2).tags[registry.TAG_COMPARISON]
    assert tag.startswith("not compared: protocol")


@pytest.mark.slow
def test_concurrent_registrations_leave_best_champion(store, tmp_path):
    _, client = store
    _register(store, tmp_path, {"image_auc": 0.5})  # creates the model and the schema first
    scores = [0.6, 0.9, 0.7, 0.8]
    errors: list[Exception] = []

    def work(score):
        try:
            _register(store, tmp_path, {"image_auc": score})
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in scores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    champion = client.get_model_version_by_alias("fcdd-mvtec-grid", "champion")
    assert float(champion.tags[registry.TAG_SCORE]) == 0.9


def test_local_store_path():
    assert registry.local_store_path("sqlite:////tmp/x/mlruns.db").as_posix() == "/tmp/x/mlruns.db"
    assert registry.local_store_path("http://127.0.0.1:5000") is None
    assert registry.local_store_path("file:///tmp/mlruns").as_posix() == "/tmp/mlruns"


def test_a_version_below_the_quality_gate_stays_challenger_even_when_first(store, tmp_path):
    """Issue 22.5: a first version with image AUC 0.000 became champion ("a first version always
    wins"). Below registry.min_image_auc / min_pixel_auc it stays challenger, the reason as a tag."""
    uri, client = store
    gate = registry.gate_of(load_config(None))
    assert gate == {"image_auc": 0.6, "pixel_auc": 0.6}  # the defaults: better than chance by a margin
    source = (tmp_path / "model").as_uri()
    inverted = {"image_auc": 0.0, "pixel_auc": 0.30}
    version, champion = registry.register_version(client, uri, "m", source, inverted, "p", gate=gate)
    assert not champion
    assert str(client.get_model_version_by_alias("m", "challenger").version) == version
    with pytest.raises(Exception, match="champion"):
        client.get_model_version_by_alias("m", "champion")
    tags = client.get_model_version("m", version).tags
    assert tags[registry.TAG_GATE] == (
        "quality gate: image_auc 0.0000 < registry.min_image_auc 0.6, pixel_auc 0.3000 < registry.min_pixel_auc 0.6"
    )
    assert tags[registry.TAG_COMPARISON].startswith("stays challenger: quality gate")
    # image AUC only (no masks: pixel AUC None is not judged); above the gate: champion
    good, champion = registry.register_version(client, uri, "m", source, {"image_auc": 0.9}, "p", gate=gate)
    assert champion and str(client.get_model_version_by_alias("m", "champion").version) == good
    # better than the champion is not enough below the gate
    _, champion = registry.register_version(
        client, uri, "m", source, {"image_auc": 0.95, "pixel_auc": 0.55}, "p", gate=gate
    )
    assert not champion and str(client.get_model_version_by_alias("m", "champion").version) == good
    assert registry.quality_gate({"image_auc": None, "pixel_auc": None}, gate) is None
