"""Serving on the Ray cluster: two vLLM CPU replicas as detached Ray actors on two nodes of
the suite's loopback cluster, found by an API node through their announcements, routed with
adapter affinity, through the official openai client."""

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import psutil
import pytest
from sqlalchemy import select

from storage.blob import LocalBlobStore, open_blob_store
from storage.db import Database
from storage.keys import adapter_prefix
from storage.models import FineTunedModel, Project, ServingReplica
from storage.settings import StorageSettings
from tests.support import postgres
from tests.support.chat import served_metric
from tests.support.ray_cluster import RayCluster, environment
from tests.support.server import TuneserveServer
from tests.support.training import BASE, sft_example

pytestmark = [pytest.mark.cluster, pytest.mark.server]

PROMPT = sft_example(3)["messages"][:-1]
NO_END = {"0": -100, "1": -100, "2": -100}
UNSERVED = "SmolLM2-135M-Instruct-unserved"


def _replicas(env: dict[str, str]) -> list[ServingReplica]:
    db = Database(env["TUNESERVE_DATABASE_URL"])
    try:
        with db.session() as s:
            rows = list(s.scalars(select(ServingReplica).order_by(ServingReplica.name)))
            s.expunge_all()
            return rows
    finally:
        db.dispose()


def _ready_replicas(server: TuneserveServer) -> int:
    health = httpx.get(server.base_url.removesuffix("/v1") + "/health", timeout=5).json()
    return int(health.get("replicas", 0))


def _wait_for_replicas(server: TuneserveServer, count: int, timeout: float = 420) -> None:
    deadline = time.monotonic() + timeout
    while _ready_replicas(server) < count:
        assert time.monotonic() < deadline, f"fewer than {count} replicas came up"
        time.sleep(1)


def _held_by(env: dict[str, str], served: str) -> set[str]:
    """The replicas whose vLLM has the adapter registered, asked with each one's key."""
    held = set()
    for row in _replicas(env):
        with httpx.Client(base_url=row.url, timeout=10,
                          headers={"Authorization": f"Bearer {row.api_key}"}) as http:
            if served in {m["id"] for m in http.get("/v1/models").json()["data"]}:
                held.add(row.name)
    return held


@pytest.fixture(scope="module")
def serving_storage(ray_storage: dict[str, str]) -> Iterator[dict[str, str]]:
    """The cluster's S3 and models, with a DB of its own (its project, its replicas)."""
    db_name, url = postgres.create_database()
    yield {**ray_storage, "TUNESERVE_DATABASE_URL": url}
    postgres.drop_database(db_name)


@pytest.fixture(scope="module")
def serving_cluster(serving_storage: dict[str, str],
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    """A loopback Ray cluster of its own (the training tests' cluster counts every Ray job and
    needs the memory these replicas hold): a head and two replica nodes."""
    cluster = RayCluster(serving_storage, gpu_nodes=0).start()
    cluster.add_nodes(2, {"vllm_replica": 1}, {
        "TUNESERVE_DATA_DIR": str(tmp_path_factory.mktemp("replica-nodes"))})
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def ray_serving(serving_cluster: RayCluster, serving_storage: dict[str, str],
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[TuneserveServer]:
    """An API node serving from the replicas on that cluster."""
    server = TuneserveServer(tmp_path_factory.mktemp("ray-serving-api"), {
        **serving_storage, "TUNESERVE_SERVING_ENABLED": "true", "TUNESERVE_SERVING": "ray",
        "TUNESERVE_RAY_ADDRESS": serving_cluster.address,
        "TUNESERVE_SERVED_MODELS": json.dumps(
            [{"model": BASE, "min_replicas": 2, "max_replicas": 2}]),
        "TUNESERVE_RAY_GPUS_PER_REPLICA": "0",
        "TUNESERVE_RAY_REPLICA_RESOURCES": json.dumps({"vllm_replica": 1}),
        "TUNESERVE_RAY_SERVING_COMMAND": f"{sys.executable} -m serving.ray_replicas",
        "TUNESERVE_ROUTING_OVERLOAD_WAITING": "2",
        # A base the cluster does not serve: listed nowhere, trained by no job.
        "TUNESERVE_BASE_MODELS": json.dumps([{"name": UNSERVED, "path": str(
            Path(serving_storage["TUNESERVE_MODELS_DIR"]) / BASE)}]),
        "TUNESERVE_MAX_LOADED_ADAPTERS": "4",
    }).start()
    try:
        _wait_for_replicas(server, 2)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def cluster_model(sft_job, local_server: TuneserveServer, ray_serving: TuneserveServer,  # type: ignore[no-untyped-def]
                  serving_storage: dict[str, str]) -> str:
    """The shared run's adapter, copied to the cluster's storage as a model of the API
    node's project (training it again on the cluster would only cost time)."""
    local = Database(f"sqlite:///{local_server.data_dir / 'tuneserve.db'}")
    with local.session() as s:
        trained = s.scalar(select(FineTunedModel.adapter_prefix).where(
            FineTunedModel.id == sft_job.fine_tuned_model))
    local.dispose()
    assert trained is not None
    files = LocalBlobStore(local_server.data_dir / "blobs").download_prefix(
        trained, Path(ray_serving.data_dir) / "copied-adapter")
    assert any(f.name == "adapter_config.json" for f in files)
    model_key = sft_job.fine_tuned_model.split(":")[4]
    db = Database(serving_storage["TUNESERVE_DATABASE_URL"])
    with db.session() as s:
        project = s.scalar(select(Project).where(Project.name == "default"))
        assert project is not None
        project_id = project.id
    name = f"ft:{BASE}:default:cluster:{model_key}"
    prefix = adapter_prefix(project_id, "cluster-" + model_key)
    with environment(serving_storage):  # the S3 credentials
        store = open_blob_store(StorageSettings())
        for f in files:
            store.put(prefix + f.name, f.read_bytes())
    with db.session() as s:
        s.add(FineTunedModel(id=name, project_id=project_id, job_id=sft_job.id,
                             base_model=BASE, adapter_prefix=prefix,
                             created_at=int(time.time())))
        s.commit()
    db.dispose()
    return name


def test_replicas_run_on_the_cluster_s_nodes_and_serve_the_base(
    ray_serving: TuneserveServer, serving_storage: dict[str, str]
) -> None:
    rows = _replicas(serving_storage)
    assert len(rows) == 2 and len({r.url for r in rows}) == 2
    answer = ray_serving.client().chat.completions.create(
        model=BASE, messages=PROMPT, max_tokens=4)
    assert answer.model == BASE and answer.choices[0].message.content
    for row in rows:  # each replica wants its own key, on every route (see
        # tests/adversarial/test_replica_side_doors.py)
        assert httpx.get(row.url + "/v1/models", timeout=10).status_code == 401
        assert httpx.post(row.url + "/invocations", timeout=10, json={
            "model": BASE, "messages": PROMPT, "max_tokens": 4}).status_code == 401
        assert httpx.get(row.url + "/metrics", timeout=10).status_code == 401


def test_only_bases_the_cluster_serves_are_listed_and_trained(
    ray_serving: TuneserveServer
) -> None:
    client = ray_serving.client()
    listed = {m.id for m in client.models.list()}
    assert BASE in listed and UNSERVED not in listed
    training = client.files.create(file=("t.jsonl", b"{}\n"), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.jobs.create(model=UNSERVED, training_file=training.id)
    assert info.value.body["code"] == "model_not_served"
    assert info.value.body["param"] == "model"


def test_an_adapter_stays_on_one_replica_then_spreads_when_hot(
    ray_serving: TuneserveServer, cluster_model: str, serving_storage: dict[str, str]
) -> None:
    from serving.adapters import served_name

    client = ray_serving.client()
    for _ in range(3):
        answer = client.chat.completions.create(model=cluster_model, messages=PROMPT,
                                                max_tokens=12, temperature=0)
        assert answer.model == cluster_model and '"answer"' in answer.choices[0].message.content
    served = served_name(cluster_model)
    holders = _held_by(serving_storage, served)
    assert len(holders) == 1  # its requests stayed where it was loaded
    # The holder's next beats announce it registered and in its node's disk cache: the
    # router's host and disk tiers, for every API node.
    deadline = time.monotonic() + 30
    while not any(served in row.disk_adapters and served in row.host_adapters
                  for row in _replicas(serving_storage) if row.name in holders):
        assert time.monotonic() < deadline, "the replica never announced its disk cache"
        time.sleep(0.5)
    assert served_metric(ray_serving, "tuneserve_routing_decisions_total", 'action="hit"') >= 2

    # A burst of long answers for it: its replica's queue passes the threshold (2) and the
    # adapter is loaded on the other replica too.
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            client.chat.completions.create(model=cluster_model, messages=PROMPT,
                                           max_tokens=24, logit_bias=NO_END)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert len(_held_by(serving_storage, served)) == 2
    assert served_metric(ray_serving, "tuneserve_routing_decisions_total",
                         'action="spill"') >= 1


def _replica_processes(url: str) -> tuple[psutil.Process, psutil.Process]:
    """The vLLM server listening at `url` and the Ray actor process that runs it."""
    port = url.rsplit(":", 1)[1]
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "vllm.entrypoints.openai.api_server" in cmd and port in cmd:
            return proc, proc.parent()  # type: ignore[return-value]
    raise AssertionError(f"no vLLM at {url}")


def test_a_killed_replica_is_routed_around_and_ray_brings_it_back(
    ray_serving: TuneserveServer, cluster_model: str, serving_storage: dict[str, str]
) -> None:
    client = ray_serving.client().with_options(max_retries=0)
    stream = client.chat.completions.create(model=BASE, messages=PROMPT, max_tokens=600,
                                            logit_bias=NO_END, stream=True)
    next(iter(stream))
    # The stream's replica is the busy one.
    busy = max(_replicas(serving_storage), key=lambda r: _running(r))
    vllm, actor = _replica_processes(busy.url)
    # The node loses the replica's process and all of its vLLM (server, engine core, worker).
    actor.kill()
    os.killpg(os.getpgid(vllm.pid), signal.SIGKILL)
    with pytest.raises(openai.APIError) as cut:
        for _ in stream:
            pass
    assert "model server stopped" in cut.value.message
    for model in (BASE, cluster_model, BASE):  # the other replica answers at once, no 5xx
        started = time.monotonic()
        answer = client.chat.completions.create(model=model, messages=PROMPT, max_tokens=2)
        assert answer.choices[0].message.content is not None
        # Routed away at once (the failed replica is marked on the first error); the answer
        # itself, an adapter load included, takes seconds on this busy 2-core machine.
        assert time.monotonic() - started < 15
    # Ray restarts the actor; it announces a new start and is routed to again.
    deadline = time.monotonic() + 420
    while True:
        row = next((r for r in _replicas(serving_storage) if r.name == busy.name), None)
        if (row is not None and row.generation != busy.generation
                and _ready_replicas(ray_serving) == 2):
            break
        assert time.monotonic() < deadline, "Ray did not bring the replica back"
        time.sleep(1)
    assert row.url != busy.url or row.api_key != busy.api_key


def _running(row: ServingReplica) -> float:
    text = httpx.get(row.url + "/metrics", timeout=10,
                     headers={"Authorization": f"Bearer {row.api_key}"}).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("vllm:num_requests_running"))
