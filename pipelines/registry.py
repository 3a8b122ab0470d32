"""MLflow model registry: one registered model per (dataset, class), aliases instead of stages.

Every trained run adds a version; ``challenger`` always points at the newest version and
``champion`` moves only when the new version beats the current champion on the *same* test
protocol (pixel AUC where masks exist, else image AUC).

Concurrency: two runs finishing at once are serialised, and the champion is re-read inside the
guard right before it is moved. A local store (SQLite file or file store) is guarded by an
``fcntl`` file lock beside it. A remote tracking server (workers on several hosts) is guarded by
the Prefect global concurrency limit ``fcdd-registry`` with one slot, created on first use; its
slot is a lease, so a worker killed while promoting frees it when the lease runs out.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from fcdd.config import Config
from fcdd.data.training_set import slug as path_slug

CHAMPION = "champion"
CHALLENGER = "challenger"
TAG_PROTOCOL = "fcdd.protocol"
TAG_METRIC = "fcdd.selection_metric"
TAG_SCORE = "fcdd.selection_score"
TAG_COMPARISON = "fcdd.champion_comparison"
TAG_CALIBRATION = "fcdd.calibration"
TAG_OBJECTIVE = "fcdd.objective"  # fcdd | hsc | ae, on registered models, their versions and runs
OBJECTIVE_TITLES = {"fcdd": "FCDD", "hsc": "HSC (baseline)", "ae": "Autoencoder (baseline)"}
TAG_GATE = "fcdd.quality_gate"  # why a version may not become champion (registry.min_*_auc)
DETECTOR_ARTIFACT = "detector"  # key of the Detector file in the pyfunc's artifacts
ONNX_ARTIFACT = "onnx"  # key of the ONNX export folder (pyfunc.log_detector_model(onnx=True))


def slugify(text: str) -> str:
    """'T-shirt/top' -> 't-shirt-top': safe inside a registered-model name and a models:/ URI."""
    slug = path_slug(str(text))
    if not slug:
        raise ValueError(f"class name {text!r}: nothing left to name a model with after slugifying")
    return slug


def registered_model_name(cfg: Config, cls: str) -> str:
    """cfg.tracking.model_name with {dataset}, {cls} and {objective} filled in, e.g.
    'fcdd-mvtec-grid'. A baseline objective's models never share FCDD's registered model (its
    champion would be compared across methods): a template without {objective} gets
    '-<objective>' appended for them ('fcdd-mvtec-grid-hsc')."""
    objective = getattr(cfg.train, "objective", "fcdd")
    template = cfg.tracking.model_name
    if objective != "fcdd" and "{objective}" not in template:
        template += "-{objective}"
    try:
        return template.format(dataset=slugify(cfg.data.dataset), cls=slugify(cls), objective=objective)
    except (KeyError, IndexError) as e:
        raise ValueError(
            f"tracking.model_name {cfg.tracking.model_name!r}: only {{dataset}}, {{cls}} and {{objective}} may be used"
        ) from e


def selection_metric(metrics: dict[str, Any]) -> tuple[str, float]:
    """The metric champions are chosen by: pixel AUC where masks exist, else image AUC."""
    for name in ("pixel_auc", "image_auc"):
        value = metrics.get(name)
        if value is not None:
            return name, float(value)
    raise ValueError(f"metrics {sorted(metrics)}: neither pixel_auc nor image_auc is set")


def local_store_path(tracking_uri: str) -> Path | None:
    """The file or folder of a local SQLite / file store; None for remote servers."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "sqlite":
        path = unquote(tracking_uri[len("sqlite:///") :]) if tracking_uri.startswith("sqlite:///") else ""
        return Path(path).resolve() if path and path != ":memory:" else None
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path) if parsed.scheme else tracking_uri).resolve()
    return None


PROMOTION_LIMIT = "fcdd-registry"  # Prefect global concurrency limit: one promotion at a time
PROMOTION_LEASE_S = 60.0  # a holder that dies frees the slot after this long


@contextlib.contextmanager
def registry_lock(tracking_uri: str) -> Iterator[None]:
    """Exclusive lock for registrations and alias updates: a file lock beside a local store, the
    Prefect global concurrency limit ``fcdd-registry`` (1 slot) for a remote tracking server."""
    store = local_store_path(tracking_uri)
    if store is None:
        with promotion_slot(tracking_uri):
            yield
        return
    lock_path = store.parent / f".{store.name}.registry.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def promotion_unavailable(tracking_uri: str) -> str | None:
    """Why no champion decision can be made against this store (None when one can): a remote
    tracking server's promotions are guarded by a Prefect limit, which needs a shared Prefect API.
    Known before training, so said before training (pipelines/tracking.py)."""
    from prefect.settings import PREFECT_API_URL

    if local_store_path(tracking_uri) is not None or PREFECT_API_URL.value():
        return None
    return (
        f"champion promotion against the tracking server {tracking_uri} needs a shared Prefect API to "
        "guard it (set PREFECT_API_URL)"
    )


@contextlib.contextmanager
def promotion_slot(tracking_uri: str, name: str = PROMOTION_LIMIT) -> Iterator[None]:
    """Hold the one slot of Prefect global concurrency limit ``name``; create it when missing.

    Needs a shared Prefect API (PREFECT_API_URL, set on every worker). Without one, each process
    would get its own ephemeral server and the guard would guard nothing: refuse with one line.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise RuntimeError(
            f"tracking server {tracking_uri}: champion promotion needs a shared Prefect API to guard it "
            "(set PREFECT_API_URL), or a local tracking store"
        )
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            except Exception:  # another worker created it first: 409, or 500 from a SQLite server
                client.read_global_concurrency_limit_by_name(name)
    with concurrency(name, occupy=1, strict=True, lease_duration=PROMOTION_LEASE_S):
        yield


def _alias_version(client: MlflowClient, name: str, alias: str):
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(e).lower():
            return None
        raise


def quality_gate(metrics: dict[str, Any], minimums: dict[str, float] | None) -> str | None:
    """Why a version with these test metrics may not become champion: an AUC (where the test set
    has the labels for it) below its minimum (``registry.min_image_auc`` / ``min_pixel_auc``);
    None when it passes. A model below chance by a margin detects nothing, first version or not."""
    failures = []
    for metric, minimum in (minimums or {}).items():
        value = metrics.get(metric)
        if value is not None and float(value) < minimum:
            failures.append(f"{metric} {float(value):.4f} < registry.min_{metric} {minimum:g}")
    return "quality gate: " + ", ".join(failures) if failures else None


def gate_of(cfg: Config) -> dict[str, float]:
    return {"image_auc": cfg.registry.min_image_auc, "pixel_auc": cfg.registry.min_pixel_auc}


def promote_if_better(client: MlflowClient, name: str, version: str, gate: str | None = None) -> bool:
    """Move ``champion`` to ``version`` when it passes the quality gate (``gate``: the reason it
    does not, from :func:`quality_gate`) and beats the current champion on the same protocol.

    Call under :func:`registry_lock`. Writes the outcome to the version's
    ``fcdd.champion_comparison`` tag and returns whether ``version`` is now the champion.
    """
    new = client.get_model_version(name, version)
    champion = _alias_version(client, name, CHAMPION)  # re-read right before deciding
    if gate is not None:
        client.set_model_version_tag(name, new.version, TAG_GATE, gate)
        client.set_model_version_tag(name, new.version, TAG_COMPARISON, f"stays challenger: {gate}")
        return False
    if champion is None:
        verdict, promote = "first version with a score: champion", True
    elif str(champion.version) == str(new.version):
        return True
    elif champion.tags.get(TAG_PROTOCOL) != new.tags.get(TAG_PROTOCOL):
        verdict = (
            f"not compared: protocol {new.tags.get(TAG_PROTOCOL)!r} differs from champion "
            f"v{champion.version}'s {champion.tags.get(TAG_PROTOCOL)!r}"
        )
        promote = False
    elif champion.tags.get(TAG_METRIC) != new.tags.get(TAG_METRIC):
        verdict = (
            f"not compared: selection metric {new.tags.get(TAG_METRIC)} differs from champion "
            f"v{champion.version}'s {champion.tags.get(TAG_METRIC)}"
        )
        promote = False
    else:
        metric = new.tags[TAG_METRIC]
        new_score, old_score = float(new.tags[TAG_SCORE]), float(champion.tags[TAG_SCORE])
        promote = new_score > old_score
        relation = "beats" if promote else "does not beat"
        verdict = f"{metric} {new_score:.4f} {relation} champion v{champion.version} ({old_score:.4f})"
    client.set_model_version_tag(name, new.version, TAG_COMPARISON, verdict)
    if promote:
        client.set_registered_model_alias(name, CHAMPION, new.version)
    return promote


def calibration_tag(metrics: dict[str, Any]) -> str:
    """What a version says about its conformal calibration (fcdd/calibration.py)."""
    n = int(metrics.get("calibration_n") or 0)
    if not n:
        return "none: p-values off, decide with a score threshold"
    far = metrics.get("a0.05_far")
    return f"n={n} held-out good images; alpha 0.05 test FAR {far:.4f}" if far is not None else f"n={n}"


def register_version(
    client: MlflowClient,
    tracking_uri: str,
    name: str,
    model_uri: str,
    metrics: dict[str, Any],
    protocol: str,
    run_id: str | None = None,
    card: Any = None,
    objective: str = "fcdd",
    gate: dict[str, float] | None = None,
) -> tuple[str, bool]:
    """Add a version of ``name`` from ``model_uri``; set ``challenger``; maybe move ``champion``
    (only when its metrics pass ``gate``, metric -> minimum: see :func:`quality_gate`).

    A logged model's URI (``models:/m-<id>``, what MLflow 3's log_model returns) registers through
    that logged model: the version names it, and the logged model lists the version. ``card``
    (pipelines.model_card.CardFacts) makes the version's description a model card.

    Returns (version, is_champion).
    """
    metric_name, score = selection_metric(metrics)
    tags = {f"metric.{k}": f"{metrics[k]:.6g}" for k in CARD_METRICS if _number(metrics.get(k))}
    tags.update({TAG_PROTOCOL: protocol, TAG_METRIC: metric_name, TAG_SCORE: repr(score)})
    tags[TAG_CALIBRATION] = calibration_tag(metrics)
    tags[TAG_OBJECTIVE] = objective
    title = OBJECTIVE_TITLES.get(objective, objective)
    description = f"{title} detector, {metric_name} {score:.4f}, protocol {protocol}"
    # Without a guard for the champion decision the version is still registered (the trained,
    # logged model is never thrown away): as challenger, saying why there is no decision.
    undecided = promotion_unavailable(tracking_uri)
    with contextlib.nullcontext() if undecided else registry_lock(tracking_uri):
        try:
            client.create_registered_model(
                name,
                tags={TAG_OBJECTIVE: objective},  # browse the registry by objective (docs/baselines.md)
                description=MODEL_DESCRIPTION.replace("FCDD", title, 1),
            )
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        model_id = model_uri[len("models:/") :] if model_uri.startswith("models:/m-") else None
        version = client.create_model_version(
            name, source=model_uri, run_id=run_id, tags=tags, description=description, model_id=model_id
        )
        if model_id:
            link_logged_model(client, model_id, name, str(version.version))
        if card is not None:
            from pipelines.model_card import model_card

            card.name, card.version = name, str(version.version)
            text = model_card(card, metrics)
            client.update_model_version(name, version.version, description=text)
            if model_id:  # the logged model's page says the same
                client.set_logged_model_tags(model_id, {"mlflow.note.content": text})
        client.set_registered_model_alias(name, CHALLENGER, version.version)
        if undecided:
            client.set_model_version_tag(
                name, version.version, TAG_COMPARISON, f"no champion decision: {undecided}"
            )
            return str(version.version), False
        champion = promote_if_better(client, name, version.version, quality_gate(metrics, gate))
    return str(version.version), champion


MODEL_DESCRIPTION = (
    "FCDD anomaly detector, one version per training run. `@champion`: the best version on its test "
    "protocol; `@challenger`: the newest. Each version's description says what it detects, how well, "
    "and how to predict with it and serve it."
)
CARD_METRICS = ("image_auc", "pixel_auc")  # the version tags the versions table and `fcdd app` show


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def link_logged_model(client: MlflowClient, model_id: str, name: str, version: str) -> None:
    """The logged model's page lists the versions registered from it (its ``mlflow.modelVersions``
    tag, as mlflow.register_model writes it; a tracking server writes it itself)."""
    import json

    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    listed = json.loads(client.get_logged_model(model_id).tags.get(MLFLOW_MODEL_VERSIONS) or "[]")
    if not any((str(e.get("name")), str(e.get("version"))) == (name, version) for e in listed):
        entry = {"name": name, "version": version}
        client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps([*listed, entry])})


def _download_artifact(model_uri: str, key: str, dst: str | Path) -> Path:
    """The pyfunc artifact ``key`` of a logged fcdd model, downloaded into ``dst``."""
    import mlflow
    import yaml

    try:
        mlmodel = Path(
            mlflow.artifacts.download_artifacts(f"{model_uri.rstrip('/')}/MLmodel", dst_path=str(dst))
        )
    except MlflowException as e:
        raise ValueError(f"{model_uri}: cannot fetch the model ({e.message})") from e
    flavor = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors", {}).get("python_function", {})
    entry = (flavor.get("artifacts") or {}).get(key)
    if not entry:
        raise ValueError(f"{model_uri}: not an fcdd model with a '{key}' artifact (see its MLmodel)")
    return Path(
        mlflow.artifacts.download_artifacts(f"{model_uri.rstrip('/')}/{entry['path']}", dst_path=str(dst))
    )


def load_detector(model_uri: str, device: str = "cpu"):
    """``models:/fcdd-mvtec-grid@champion`` (or ``runs:/<id>/model``) -> fcdd.detector.Detector.

    Only the Detector file is downloaded and read with ``torch.load(weights_only=True)``; the
    model's code is not executed.
    """
    from fcdd.detector import Detector

    with tempfile.TemporaryDirectory(prefix="fcdd-model-") as tmp:
        detector = Detector.load(_download_artifact(model_uri, DETECTOR_ARTIFACT, tmp), device=device)
    _locate_data_root(detector, model_uri)
    return detector


def _locate_data_root(detector, model_uri: str) -> None:
    """model.pt names a relative data root as seen from its run folder (its bytes must not depend on
    the clone's place); a downloaded copy lies elsewhere, so the absolute root is rebuilt from the
    source run's ``fcdd.run_dir`` tag, where ``fcdd evaluate`` looks for it. Best effort: without
    the run, ``--root`` still says where the data is."""
    rel = detector.meta.get("data_root_from_model")
    if not rel or detector.meta.get("data_root_resolved"):
        return
    from mlflow.models import get_model_info

    try:
        run_id = get_model_info(model_uri).run_id
        run_dir = MlflowClient().get_run(run_id).data.tags.get("fcdd.run_dir") if run_id else None
    except (MlflowException, OSError):
        return
    if run_dir:
        detector.meta["data_root_resolved"] = os.path.normpath(os.path.join(run_dir, rel))


def download_onnx(model_uri: str, dst: str | Path) -> Path:
    """The ONNX export a registry version carries (tracking.onnx) -> the folder under ``dst`` with
    model.onnx and fcdd_export.json, ready for ``fcdd predict --model`` or any ONNX runtime."""
    return _download_artifact(model_uri, ONNX_ARTIFACT, dst)
