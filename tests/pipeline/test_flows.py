"""The Prefect flows under a temporary Prefect server (prefect_test_harness).

Flow tests train for real on a tiny Fashion-MNIST configuration with tracking disabled.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Prefect reads these when it is imported: keep its home and server quiet and out of ~/.prefect.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="fcdd-prefect-home-"))
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402

from fcdd.config import load_config  # noqa: E402

prefect = pytest.importorskip("prefect")
from prefect.client.orchestration import get_client  # noqa: E402
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate  # noqa: E402
from prefect.testing.utilities import prefect_test_harness  # noqa: E402
from shared_fixtures import TINY_RUN  # noqa: E402

from pipelines import flows, gpu_slots, results  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PARAMS = str(REPO / "params.yaml")
FMNIST = REPO / "data" / "fashion-mnist"
SHARED_OE = REPO.parent / "shared" / "data" / "imagenet1k_samples"


def tiny_overrides(output_dir: Path, classes: str = "['0']", epochs: int = 1) -> list[str]:
    return [
        f"train.epochs={epochs}",
        *TINY_RUN,
        "orchestration.retries=0",
        "orchestration.retry_delay_s=0",
        f"data.classes={classes}",
        f"train.output_dir={output_dir}",
        f"data.cache_dir={output_dir / 'cache'}",
        f"data.root={FMNIST}",
        f"anomalies.oe_source={SHARED_OE}",
    ]


needs_data = pytest.mark.skipif(
    not (any(FMNIST.glob("*ubyte*")) and SHARED_OE.is_dir()),
    reason="needs data/fashion-mnist and ../shared/data/imagenet1k_samples",
)


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


# ------------------------------------------------------------ no server needed


def test_dataset_override_swaps_the_dataset_preset():
    overrides = flows.dataset_overrides(PARAMS, "cifar10")
    cfg = load_config(PARAMS, overrides)
    assert cfg.data.dataset == "cifar10"
    assert "cifar10" in cfg.preset and "fmnist" not in cfg.preset
    assert cfg.model.net == "cnn32"  # from the cifar10 preset
    assert "cpu" in cfg.preset  # presets that are not datasets stay
    assert flows.dataset_overrides(PARAMS, None) == []


def test_classes_get_the_dataset_names_and_unknown_ones_stay_as_given():
    cfg = load_config(PARAMS)
    assert flows.canonical_class(cfg, "0") == "t-shirt-top"
    assert flows.canonical_class(cfg, "Trouser") == "trouser"
    assert flows.canonical_class(cfg, "no-such-class") == "no-such-class"


def test_results_frame_puts_the_known_columns_first_and_keeps_failures():
    rows = [
        {"dataset": "fmnist", "class": "0", "seed": 0, "status": "completed", "image_auc": 0.9, "n_test": 5},
        {"dataset": "fmnist", "class": "1", "seed": 0, "status": "failed", "error": "DataError: boom"},
    ]
    frame = results.results_frame(rows)
    assert list(frame.columns[: len(results.RESULT_COLUMNS)]) == results.RESULT_COLUMNS
    assert frame.columns[-1] == "n_test"
    assert frame.loc[1, "status"] == "failed" and frame.loc[1, "error"] == "DataError: boom"
    assert pd.isna(frame.loc[1, "image_auc"])


def test_write_results_keeps_run_specific_columns_beside_the_dataset_folder(tmp_path):
    """results.csv lies in the train stage's DVC output: ids, versions and retries go next to it."""
    from prefect.logging import disable_run_logger

    cfg = load_config(PARAMS, [f"train.output_dir={tmp_path}", "tracking.enabled=false"])
    row = {"dataset": "fmnist", "class": "trouser", "seed": 0, "status": "completed", "image_auc": 0.9}
    row.update(mlflow_run_id="0123abcd", model_name="fcdd-fmnist-trouser", model_version="3", champion=True)
    row.update(attempts=2, first_epoch=2, n_test=5)
    with disable_run_logger():
        path = results.write_results(cfg, [row])
    written = pd.read_csv(path)
    assert path == tmp_path / "fmnist" / "results.csv"
    assert not set(results.TRACKING_COLUMNS) & set(written.columns)
    assert written.loc[0, "image_auc"] == 0.9 and written.loc[0, "n_test"] == 5
    tracking = pd.read_csv(tmp_path / "fmnist-tracking.csv", dtype={"model_version": str})
    assert list(tracking.columns) == ["class", "seed", *results.TRACKING_COLUMNS]
    assert tracking.loc[0, "mlflow_run_id"] == "0123abcd" and tracking.loc[0, "model_version"] == "3"
    assert tracking.loc[0, "attempts"] == 2 and tracking.loc[0, "first_epoch"] == 2


def test_summary_markdown_reports_means_and_failures():
    cfg = load_config(PARAMS, ["tracking.enabled=false"])
    rows = [
        {"class": "0", "seed": 0, "status": "completed", "image_auc": 0.8, "pixel_auc": None},
        {"class": "1", "seed": 0, "status": "completed", "image_auc": 0.6, "pixel_auc": None},
        {"class": "2", "seed": 0, "status": "failed", "error": "RuntimeError: out of memory"},
    ]
    text = results.summary_markdown(cfg, rows)
    assert "2 of 3 class runs completed" in text
    assert "mean image auc: **0.7000**" in text
    assert "pixel auc: **" not in text  # no pixel metric on a dataset without masks
    assert "failed: RuntimeError: out of memory" in text


def test_gpu_claims_are_exclusive_per_index():
    with gpu_slots.claim_gpu(2) as first, gpu_slots.claim_gpu(2) as second:
        assert {first, second} == {0, 1}
    with gpu_slots.claim_gpu(1) as again:  # released on exit
        assert again == 0


def test_prefect_yaml_matches_params():
    """The deployments in prefect.yaml name the pool and flows the configuration names (no drift)."""
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    cfg = load_config(PARAMS)
    deployments = {d["name"]: d for d in spec["deployments"]}
    flow_name, deployment_name = cfg.orchestration.deployment.split("/")
    assert deployments[deployment_name]["entrypoint"] == "pipelines/flows.py:train_class"
    assert flows.train_class.name == flow_name
    assert deployments["fcdd-train"]["entrypoint"] == "pipelines/flows.py:train_dataset"
    for d in deployments.values():
        assert d["work_pool"]["name"] == cfg.orchestration.work_pool
        # settings live in params.yaml; where runs go and whether they restart are the run's own
        assert set(d.get("parameters", {})) <= {"params", "overrides", "output_dir", "restart"}


# ------------------------------------------------------------ under a Prefect server


@pytest.mark.slow
def test_missing_concurrency_limit_is_skipped_and_an_existing_one_is_held(harness):
    cfg = load_config(PARAMS, ["orchestration.concurrency_limit=fcdd-test-gpu"])

    @prefect.flow
    def hold() -> int | None:
        with gpu_slots.training_slot(cfg), get_client(sync_client=True) as client:
            try:
                return client.read_global_concurrency_limit_by_name("fcdd-test-gpu").active_slots
            except prefect.exceptions.ObjectNotFound:
                return None

    with pytest.raises(prefect.exceptions.ObjectNotFound):
        with get_client(sync_client=True) as client:
            client.read_global_concurrency_limit_by_name("fcdd-test-gpu")
    assert hold() is None  # no limit: the training still runs, without one
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name="fcdd-test-gpu", limit=2))
    assert hold() == 1  # the slot is held while training
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name("fcdd-test-gpu").active_slots == 0


@needs_data
@pytest.mark.slow
def test_train_class_trains_evaluates_and_records_an_artifact(harness, tmp_path):
    row = flows.train_class(cls="0", seed=0, params=PARAMS, overrides=tiny_overrides(tmp_path))
    assert row["status"] == "completed" and row["attempts"] == 1
    assert 0.0 <= row["image_auc"] <= 1.0
    run_dir = Path(row["run_dir"])
    assert (run_dir / "model.pt").is_file() and (run_dir / "checkpoint.pt").is_file()
    with get_client(sync_client=True) as client:
        artifact = client.read_latest_artifacts()
    keys = {a.key for a in artifact}
    assert row["class"] == "t-shirt-top"  # '0' is Fashion-MNIST's first class
    assert results.result_artifact_key("fmnist", "t-shirt-top", 0) in keys


@needs_data
@pytest.mark.slow
def test_a_failed_class_run_retries_and_resumes_from_its_checkpoint(harness, tmp_path, monkeypatch):
    log_epoch = flows.EpochLog.on_epoch_end
    failures = []

    def fail_once_after_epoch_1(self, epoch, logs):  # the process dies mid-run, once
        log_epoch(self, epoch, logs)
        if epoch == 1 and not failures:
            failures.append(epoch)
            raise RuntimeError("injected failure after epoch 1")

    monkeypatch.setattr(flows.EpochLog, "on_epoch_end", fail_once_after_epoch_1)
    overrides = [*tiny_overrides(tmp_path, epochs=3), "orchestration.retries=1"]
    row = flows.train_class(cls="0", seed=0, params=PARAMS, overrides=overrides)
    assert row["status"] == "completed"
    assert row["attempts"] == 2  # the first attempt failed after epoch 1
    assert row["first_epoch"] == 2  # the retry went on from the checkpoint, not from the start
    assert row["epochs"] == 3


@needs_data
@pytest.mark.slow
def test_train_dataset_with_a_failed_class_ends_failed_and_still_lists_every_run(harness, tmp_path):
    """Issue 22.1: a fan-out with a failed class is Failed (not Completed), with the reason as its
    state message; the other classes finish and the summary lists them; the table of a failed
    fan-out goes beside the dataset folder, never into it (a DVC output must stay a complete set)."""
    state = flows.train_dataset(
        params=PARAMS, classes=["0", "no-such-class"], overrides=tiny_overrides(tmp_path), return_state=True
    )
    assert state.is_failed()
    assert state.message.startswith("1 of 2 class runs failed; class no-such-class seed 0: ")
    assert "no-such-class" in state.message.split(":", 1)[1] and "\n" not in state.message
    with pytest.raises(flows.ClassRunsFailed) as raised:  # a direct call raises, with every row
        state.result()
    by_class = {r["class"]: r for r in raised.value.rows}
    assert by_class["t-shirt-top"]["status"] == "completed"
    assert by_class["no-such-class"]["status"] == "failed"
    assert "no-such-class" in by_class["no-such-class"]["error"]
    assert not (tmp_path / "fmnist" / "results.csv").exists()
    table = pd.read_csv(tmp_path / "fmnist-results-partial.csv", dtype={"class": str})
    assert list(table["class"]) == ["t-shirt-top", "no-such-class"]
    assert list(table["status"]) == ["completed", "failed"]
    with get_client(sync_client=True) as client:
        artifacts = {a.key: a for a in client.read_latest_artifacts()}
    assert {"fcdd-fmnist-aucs", "fcdd-fmnist-summary"} <= set(artifacts)
    summary = artifacts["fcdd-fmnist-summary"].data
    assert "1 of 2 class runs completed" in summary and "| t-shirt-top | 0 | completed |" in summary
    assert "failed: " + by_class["no-such-class"]["error"] in summary  # the same one-line reason


@needs_data
@pytest.mark.slow
def test_errors_that_cannot_heal_fail_at_once_and_crashes_are_retried(harness, tmp_path, monkeypatch):
    """Issue 22.2: an FCDDError (configuration, data, settings mismatch) is not retried; any other
    exception is, orchestration.retries times. Packs follow the same policy."""
    from fcdd.errors import DataError

    calls = []

    def fail_every_time(self, epoch, logs):
        calls.append(epoch)
        raise error

    monkeypatch.setattr(flows.EpochLog, "on_epoch_end", fail_every_time)
    overrides = [*tiny_overrides(tmp_path), "orchestration.retries=2", "orchestration.retry_delay_s=0"]
    error = DataError("data.root x: a bad image")
    state = flows.train_class(cls="0", seed=0, params=PARAMS, overrides=overrides, return_state=True)
    assert state.is_failed() and "a bad image" in state.message
    assert len(calls) == 1  # one attempt only
    calls.clear()
    error = RuntimeError("worker lost")
    overrides = [*tiny_overrides(tmp_path / "crash", epochs=3), "orchestration.retries=2"]
    state = flows.train_class(cls="0", seed=0, params=PARAMS, overrides=overrides, return_state=True)
    assert state.is_failed() and calls == [1, 2, 3]  # the first attempt and two retries, each resuming
    options = flows.retry_options(load_config(PARAMS, overrides))
    assert options["retry_condition_fn"] is flows.heals_on_retry and options["retries"] == 2


def test_an_output_dir_override_that_disagrees_with_the_output_dir_parameter_is_refused(harness, tmp_path):
    """A deployment always passes output_dir: a train.output_dir override naming another folder
    would lose silently, the runs landing where the user does not look."""
    same = flows.with_output_dir([f"train.output_dir={tmp_path / 'runs'}"], str(tmp_path / "runs"))
    assert same[-1] == f'train.output_dir="{tmp_path / "runs"}"'
    assert flows.with_output_dir(["train.epochs=1"], None) == ["train.epochs=1"]
    with pytest.raises(flows.ConfigError, match=r"train.output_dir given twice: override '.*mine'"):
        flows.with_output_dir([f"train.output_dir={tmp_path / 'mine'}"], "runs/deployments")
    state = flows.train_class(
        cls="0",
        params=PARAMS,
        overrides=[f"train.output_dir={tmp_path}"],
        output_dir="runs/x",
        return_state=True,
    )
    assert state.is_failed() and "given twice" in state.message


@needs_data
@pytest.mark.slow
def test_output_dir_and_restart_parameters(harness, tmp_path):
    """Issue 22.4: the flows take the output folder and --restart as parameters (a deployment
    cannot pass them any other way): a run folder of other settings is refused unless restarted."""
    out = tmp_path / "elsewhere"
    overrides = [o for o in tiny_overrides(tmp_path) if not o.startswith("train.output_dir")]
    row = flows.train_class(cls="1", seed=0, params=PARAMS, overrides=overrides, output_dir=str(out))
    assert Path(row["run_dir"]).resolve() == (out / "fmnist" / "trouser" / "seed0").resolve()
    changed = [*overrides, "train.lr=0.5"]
    state = flows.train_class(
        cls="1", seed=0, params=PARAMS, overrides=changed, output_dir=str(out), return_state=True
    )
    assert state.is_failed() and "--restart" in state.message  # other settings: refused, not retried
    row = flows.train_class(
        cls="1", seed=0, params=PARAMS, overrides=changed, output_dir=str(out), restart=True
    )
    assert row["status"] == "completed" and row["first_epoch"] == 1


@needs_data
@pytest.mark.slow
def test_local_mode_runs_classes_in_parallel_subflows(harness, tmp_path):
    overrides = [*tiny_overrides(tmp_path, classes="['0', '1']"), "orchestration.max_parallel=2"]
    rows = flows.train_dataset(params=PARAMS, overrides=overrides)
    assert sorted(r["class"] for r in rows) == ["t-shirt-top", "trouser"]
    assert all(r["status"] == "completed" for r in rows)
    assert len({r["run_dir"] for r in rows}) == 2


@pytest.mark.slow
def test_deploy_sets_up_the_pool_and_limit_named_in_params(harness):
    from pipelines.deploy import ensure_infrastructure

    cfg = load_config(
        PARAMS, ["orchestration.work_pool=fcdd-test-pool", "orchestration.concurrency_limit=fcdd-test-slots"]
    )
    ensure_infrastructure(cfg, gpus=2)
    ensure_infrastructure(cfg, gpus=3)  # again: the pool stays, the limit follows
    with get_client(sync_client=True) as client:
        assert client.read_work_pool("fcdd-test-pool").type == "process"
        assert client.read_global_concurrency_limit_by_name("fcdd-test-slots").limit == 3
    with pytest.raises(ValueError, match="gpus"):
        ensure_infrastructure(cfg, gpus=0)


@needs_data
@pytest.mark.slow
def test_train_dataset_with_mlflow_links_each_class_run(harness, tmp_path):
    pytest.importorskip("mlflow")
    overrides = [
        *tiny_overrides(tmp_path),
        "tracking.enabled=true",
        f"tracking.uri=sqlite:///{tmp_path / 'mlruns.db'}",
        f"tracking.artifact_location={tmp_path / 'mlartifacts'}",
        "tracking.register=false",
    ]
    rows = flows.train_dataset(params=PARAMS, overrides=overrides)
    (row,) = rows
    assert row["status"] == "completed" and row["mlflow_run_id"]
    cfg = load_config(PARAMS, overrides)
    markdown = results.summary_markdown(cfg, rows)
    assert f"/runs/{row['mlflow_run_id']})" in markdown  # a link to the class's MLflow run


@pytest.mark.slow
def test_gpu_pinning_gives_concurrent_runs_distinct_gpus_unless_the_worker_pinned_one(harness, monkeypatch):
    import torch

    # Two GPUs as torch would report them; the lock files and device strings are the real code.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    cfg = load_config(PARAMS, ["train.device=auto"])

    @prefect.flow
    def pin() -> list[str]:
        with gpu_slots.gpu_pinned(cfg) as first, gpu_slots.gpu_pinned(cfg) as second:
            return [first.train.device, second.train.device]

    assert sorted(pin()) == ["cuda:0", "cuda:1"]
    assert cfg.train.device == "auto"  # the caller's config is left alone (a retry claims afresh)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert pin() == ["auto", "auto"]  # the worker's pinning wins: torch sees one GPU, cuda:0


@needs_data
@pytest.mark.slow
def test_packed_class_runs_train_together_and_track_each_run(harness, tmp_path):
    """orchestration.pack: 3 -> one class run trains three classes as one packed model; each still
    gets its run folder, result row, MLflow run and registry version."""
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    overrides = [
        *tiny_overrides(tmp_path, classes="['0', '1', '2']"),
        "orchestration.pack=3",
        "tracking.enabled=true",
        f"tracking.uri={uri}",
        f"tracking.artifact_location={tmp_path / 'mlartifacts'}",
    ]
    rows = flows.train_dataset(params=PARAMS, overrides=overrides)
    assert sorted(r["class"] for r in rows) == ["pullover", "t-shirt-top", "trouser"]
    assert all(r["status"] == "completed" and r["packed"] == 3 for r in rows), rows
    assert len({r["mlflow_run_id"] for r in rows}) == 3
    table = pd.read_csv(tmp_path / "fmnist" / "results.csv", dtype={"class": str})
    assert sorted(table["class"]) == ["pullover", "t-shirt-top", "trouser"]
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    for cls in ("t-shirt-top", "trouser", "pullover"):
        found = client.search_model_versions(f"name='fcdd-fmnist-{cls}'")
        assert len(found) == 1, cls  # in this test's store, even after another test's run in this process
        (version,) = found
        assert (
            client.get_model_version_by_alias(f"fcdd-fmnist-{cls}", "challenger").version == version.version
        )


@needs_data
@pytest.mark.slow
def test_the_train_stage_fails_with_a_failed_class_and_keeps_the_partial_table_beside_its_output(
    harness, tmp_path, monkeypatch
):
    """Issue 22.1/22.3: `dvc repro`'s train stage exits 1 when a class failed; the partial table goes
    beside the stage's output (runs/<dataset>-results-partial.csv), never in it as results.csv."""
    from pipelines.stages import train as train_stage

    params = yaml.safe_load(open(PARAMS))
    cfg_overrides = dict(
        o.split("=", 1) for o in tiny_overrides(tmp_path / "runs", classes="['0', 'nosuch']")
    )
    for key, value in cfg_overrides.items():
        section, name = key.split(".")
        params.setdefault(section, {})[name] = yaml.safe_load(value)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    monkeypatch.setattr(train_stage, "PARAMS", str(path))
    monkeypatch.delenv("FCDD_STAGE", raising=False)
    assert train_stage.main() == 1
    partial = pd.read_csv(tmp_path / "runs" / "fmnist-results-partial.csv", dtype={"class": str})
    assert list(partial["class"]) == ["t-shirt-top", "nosuch"] and list(partial["status"]) == [
        "completed",
        "failed",
    ]
    assert not (tmp_path / "runs" / "fmnist" / "results.csv").exists()


def test_python_warnings_of_a_run_reach_its_prefect_log(harness):
    """A warning raised while a class trains (the quality gate's, a skipped file's) is in the run's
    log in the UI, once, beside a row note that repeats it; outside a run nothing is logged."""
    import asyncio
    import logging
    import time
    import warnings

    from prefect import flow as prefect_flow
    from prefect import get_run_logger, task
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    from pipelines.run_log import log_notes, warnings_in_run_log

    @task
    def warn_inside() -> None:
        with warnings_in_run_log() as logged:
            warnings.warn("fcdd-folder-tiles version 2 stays challenger: quality gate", stacklevel=1)
        log_notes(get_run_logger(), {"registry_note": "version 2 stays challenger: quality gate"}, logged)
        log_notes(get_run_logger(), {"warning": "test set has one label"}, logged)

    @prefect_flow
    def warns() -> str:
        warn_inside()
        from prefect.runtime import flow_run

        return flow_run.id

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        run_id = warns()
        with warnings_in_run_log():  # no run here: the terminal only
            warnings.warn("outside any run", stacklevel=1)

    async def messages() -> list[str]:
        async with get_client() as client:
            logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
            return [log.message for log in logs]

    from prefect.logging.handlers import APILogHandler

    for handler in logging.getLogger("prefect").handlers:  # logs go to the server in batches
        if isinstance(handler, APILogHandler):
            handler.flush()
    seen = asyncio.run(messages())
    for _ in range(20):
        if any("one label" in m for m in seen):
            break
        time.sleep(0.5)
        seen = asyncio.run(messages())
    # the warning itself, and once: the row note that repeats it is not logged again
    assert [m for m in seen if "stays challenger" in m] == [
        "fcdd-folder-tiles version 2 stays challenger: quality gate"
    ], seen
    assert "test set has one label" in seen and not any("outside any run" in m for m in seen)
