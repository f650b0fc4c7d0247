"""The Tinker API (`/api/v1`) through the official `tinker` SDK 0.38, as its users call it:
keys, sessions and the server's capabilities so far (issue 27 builds the rest on these)."""

from pathlib import Path

import httpx
import pytest
import tinker

from tests.support.server import TuneserveServer
from tests.support.tinker_data import datum, tinker_key, tinker_root
from tests.support.training import BASE, worker_processes

pytestmark = pytest.mark.server


@pytest.fixture(autouse=True)
def _no_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINKER_TELEMETRY", "0")


def _heartbeat(server: TuneserveServer, key: str, session_id: str) -> httpx.Response:
    return httpx.post(tinker_root(server) + "/api/v1/session_heartbeat", timeout=10,
                      headers={"X-API-Key": key}, json={"session_id": session_id})


def test_a_tinker_key_connects_the_sdk_which_sees_the_served_bases(
    local_server: TuneserveServer
) -> None:
    rest = tinker.RestClient(base_url=tinker_root(local_server),
                             api_key=tinker_key(local_server, "tinker-a"))
    models = {m.model_name: (m.trainable, m.sampleable)
              for m in rest.get_server_capabilities().result().supported_models}
    # The bases /v1/models lists: the served one trains and samples (this server may also
    # train bases it does not serve).
    bases = {m.id for m in local_server.client().models.list() if not m.id.startswith("ft:")}
    assert set(models) == bases and models[BASE] == (True, True)


def test_a_session_is_its_project_s_and_ends_when_the_client_closes(
    local_server: TuneserveServer
) -> None:
    key = tinker_key(local_server, "tinker-b")
    assert key.startswith("tml-")
    client = tinker.ServiceClient(base_url=tinker_root(local_server), api_key=key)
    session_id = client.holder.get_session_id()
    assert _heartbeat(local_server, key, session_id).status_code == 200
    # Another project's key does not find it.
    other = tinker_key(local_server, "tinker-c")
    refused = _heartbeat(local_server, other, session_id)
    assert refused.status_code == 404 and refused.json()["error"]["param"] == "session_id"
    client.close("success", detail="done").result()
    # Finished: its heartbeats are answered 410, which stops the SDK's loop.
    assert _heartbeat(local_server, key, session_id).status_code == 410


def test_no_key_or_a_wrong_one_is_refused(local_server: TuneserveServer) -> None:
    root = tinker_root(local_server)
    missing = httpx.get(root + "/api/v1/get_server_capabilities", timeout=10)
    assert missing.status_code == 401 and "X-API-Key" in missing.json()["error"]["message"]
    with pytest.raises(tinker.AuthenticationError):
        tinker.RestClient(base_url=root, api_key="tml-not-a-key").get_server_capabilities(
        ).result()


def test_a_lora_training_client_is_created_and_its_run_is_its_project_s(
    local_server: TuneserveServer
) -> None:
    root, key = tinker_root(local_server), tinker_key(local_server, "tinker-d")
    client = tinker.ServiceClient(base_url=root, api_key=key)
    session_id = client.holder.get_session_id()
    training = client.create_lora_training_client(base_model=BASE, rank=8,
                                                  train_unembed=False).result()
    info = training.get_info()
    assert info.model_id.startswith(f"{session_id}:train:")
    assert (info.is_lora, info.lora_rank, info.model_data.model_name) == (True, 8, BASE)
    assert info.model_data.arch == "LlamaForCausalLM"

    def ask(path: str, body: dict[str, object], as_key: str = key) -> httpx.Response:
        return httpx.post(root + path, json=body, headers={"X-API-Key": as_key}, timeout=30)

    other = tinker_key(local_server, "tinker-e")
    refused = ask("/api/v1/get_info", {"model_id": info.model_id}, other)
    assert refused.status_code == 404 and refused.json()["error"]["param"] == "model_id"
    # What the SDK would send for a base this server does not train: a 400 naming it.
    unknown = ask("/api/v1/create_model", {
        "session_id": session_id, "model_seq_id": 99, "base_model": "Qwen/Qwen3-8B",
        "lora_config": {"rank": 8}})
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "base_model"
    # The same session and sequence number (a retried request) answer the same run; its
    # future is the project's own.
    again = ask("/api/v1/create_model", {
        "session_id": session_id, "model_seq_id": int(info.model_id.rsplit(":", 1)[1]),
        "base_model": BASE, "lora_config": {"rank": 8}}).json()
    assert again["model_id"] == info.model_id
    done = ask("/api/v1/retrieve_future", {"request_id": again["request_id"]}).json()
    assert done == {"type": "create_model", "model_id": info.model_id}
    assert ask("/api/v1/retrieve_future", {"request_id": again["request_id"]},
               other).status_code == 404
    client.close("success").result()
    # A finished session creates nothing more.
    ended = ask("/api/v1/create_model", {
        "session_id": session_id, "model_seq_id": 100, "base_model": BASE,
        "lora_config": {"rank": 8}})
    assert ended.status_code == 410


def test_a_session_id_past_its_bound_is_a_400_naming_it(local_server: TuneserveServer) -> None:
    key = tinker_key(local_server, "tinker-f")
    answer = httpx.post(f"{tinker_root(local_server)}/api/v1/sessions/{'s' * 5000}/finish",
                        json={"reason": {"type": "success"}}, headers={"X-API-Key": key},
                        timeout=10)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "session_id"


@pytest.mark.training
def test_forward_backward_and_optim_step_train_the_run_in_order(
    local_server: TuneserveServer, sft_job: object
) -> None:
    root, key = tinker_root(local_server), tinker_key(local_server, "tinker-g")
    client = tinker.ServiceClient(base_url=root, api_key=key)
    training = client.create_lora_training_client(base_model=BASE, rank=8).result()
    # After the node's first job (`sft_job`), its trainer is forked from the launcher that
    # preloaded the jobs' imports, as a job's worker is: no cold start.
    trainer = worker_processes(training.model_id, "training.tinker.trainer")
    assert len(trainer) == 1 and "training.launcher" in trainer[0].parent().cmdline()
    data = [datum(list(range(200, 216))), datum(list(range(300, 312)))]
    adam = tinker.AdamParams(learning_rate=2e-3)
    losses = []
    for _ in range(4):
        # Submitted together, as the cookbook's loops do: executed in seq_id order.
        step = training.forward_backward(data, "cross_entropy")
        optim = training.optim_step(adam)
        out = step.result()
        optim.result()
        losses.append(out.metrics["loss:sum"])
        # A log-probability per target token, each datum's own, summing to minus the loss.
        assert [len(o["logprobs"].tolist()) for o in out.loss_fn_outputs] == [15, 11]
        total = sum(sum(o["logprobs"].tolist()) for o in out.loss_fn_outputs)
        assert total == pytest.approx(-out.metrics["loss:sum"], rel=1e-3)
    assert losses[-1] < 0.5 * losses[0], losses
    # forward() computes without training: asked twice, the same loss.
    seen = [training.forward(data, "cross_entropy").result().metrics["loss:sum"]
            for _ in range(2)]
    assert seen[0] == pytest.approx(seen[1], rel=1e-4) and seen[0] < losses[0]
    # A loss the SDK knows but this server does not train is the request's error, named.
    with pytest.raises(Exception, match="gspo"):
        training.forward_backward(data, "gspo").result()
    # A token outside the base's vocabulary is the tenant's error too.
    with pytest.raises(Exception, match="vocabulary"):
        training.forward_backward([datum([1, 2, 10**7])], "cross_entropy").result()
    # The training state, saved under its name; the name again is the tenant's error.
    saved = training.save_state("after-4").result().path
    assert saved == f"tinker://{training.model_id}/weights/after-4"
    with pytest.raises(Exception, match="exists"):
        training.save_state("after-4").result()
    # A new run made from the saved state (the SDK names it; the load is its first request)
    # computes what the run computed when it was saved.
    resumed = client.create_training_client_from_state_with_optimizer(saved).result()
    assert resumed.model_id != training.model_id
    assert resumed.get_info().lora_rank == 8
    loss = resumed.forward(data, "cross_entropy").result().metrics["loss:sum"]
    assert loss == pytest.approx(seen[0], rel=1e-3)
    # Loading into the run itself undoes the steps since.
    training.forward_backward(data, "cross_entropy")
    training.optim_step(tinker.AdamParams(learning_rate=1e-2)).result()
    moved = training.forward(data, "cross_entropy").result().metrics["loss:sum"]
    training.load_state(saved).result()
    back = training.forward(data, "cross_entropy").result().metrics["loss:sum"]
    assert back == pytest.approx(seen[0], rel=1e-3) != pytest.approx(moved, rel=1e-3)
    # Another project cannot train the run.
    other = httpx.post(root + "/api/v1/optim_step", timeout=10,
                       headers={"X-API-Key": tinker_key(local_server, "tinker-h")},
                       json={"model_id": training.model_id, "seq_id": 999,
                             "adam_params": {"learning_rate": 1e-4}})
    assert other.status_code == 404 and other.json()["error"]["param"] == "model_id"
    client.close("success").result()


@pytest.mark.training
def test_saved_weights_are_sampled_through_serving_at_once(chat_server: TuneserveServer,
                                                          models_dir: Path) -> None:
    root, key = tinker_root(chat_server), tinker_key(chat_server, "tinker-i")
    client = tinker.ServiceClient(base_url=root, api_key=key)
    training = client.create_lora_training_client(base_model=BASE, rank=8).result()
    sequence = list(range(400, 424))
    prompt = tinker.ModelInput.from_ints(sequence[:8])
    greedy = tinker.SamplingParams(max_tokens=6, temperature=0.0)
    base = client.create_sampling_client(base_model=BASE).result()
    before = base.sample(prompt, 1, greedy).result().sequences[0].tokens
    for _ in range(8):
        training.forward_backward([datum(sequence)], "cross_entropy")
        training.optim_step(tinker.AdamParams(learning_rate=3e-3)).result()
    # The weights as they are now, hot-loaded onto the engine that serves chat.
    sampler = training.save_weights_and_get_sampling_client().result()
    answer = sampler.sample(prompt, 2, greedy).result()
    assert [s.tokens for s in answer.sequences] == [sequence[8:14]] * 2 != [before]
    first = answer.sequences[0]
    assert len(first.logprobs or []) == 6 and all(lp <= 0 for lp in first.logprobs or [])
    assert len({s.sequence_id for s in answer.sequences}) == 2
    # Prompt log-probabilities (the cookbook's compute_logprobs): none for the first token.
    scored = sampler.compute_logprobs(tinker.ModelInput.from_ints(sequence[:8])).result()
    assert scored[0] is None and len(scored) == 8
    assert all(lp is not None and lp <= 0 for lp in scored[1:])
    # Named weights are a tinker:// path, which another project cannot sample.
    path = training.save_weights_for_sampler("step-8").result().path
    assert path == f"tinker://{training.model_id}/sampler_weights/step-8"
    named = client.create_sampling_client(model_path=path).result()
    assert named.sample(prompt, 1, greedy).result().sequences[0].tokens == sequence[8:14]
    # Promoted, the weights are an ft: model the openai client lists and completes with
    # (the tml- key is the project's key on /v1 too).
    promoted = httpx.post(
        f"{root}/api/v1/training_runs/{training.model_id}/checkpoints/sampler_weights/step-8"
        "/promote", json={"suffix": "tinker"}, headers={"X-API-Key": key}, timeout=30)
    model = promoted.json()["model"]
    assert model.startswith(f"ft:{BASE}:tinker-i:tinker:")
    openai_client = chat_server.client(api_key=key)
    assert model in {m.id for m in openai_client.models.list()}

    def complete(name: str) -> str:
        return openai_client.completions.create(model=name, prompt=sequence[:8], max_tokens=6,
                                                temperature=0).choices[0].text

    from transformers import AutoTokenizer

    decoded = AutoTokenizer.from_pretrained(str(models_dir / BASE)).decode(sequence[8:14])
    assert complete(model) == decoded != complete(BASE)
    other = tinker.ServiceClient(base_url=root, api_key=tinker_key(chat_server, "tinker-j"))
    with pytest.raises(tinker.NotFoundError):
        other.create_sampling_client(model_path=path).result()
    # The REST client lists the run and its checkpoints (the unnamed one too); another
    # project sees none of them.
    rest = tinker.RestClient(base_url=root, api_key=key)
    runs = rest.list_training_runs().result()
    assert training.model_id in {r.training_run_id for r in runs.training_runs}
    run = rest.get_training_run(training.model_id).result()
    assert run.lora_rank == 8 and run.last_sampler_checkpoint is not None
    assert run.last_sampler_checkpoint.tinker_path == path
    listed = rest.list_checkpoints(training.model_id).result().checkpoints
    assert [c.checkpoint_type for c in listed] == ["sampler", "sampler"]
    assert path in {c.tinker_path for c in listed} and all(c.size_bytes for c in listed)
    info = rest.get_weights_info_by_tinker_path(path).result()
    assert (info.base_model, info.lora_rank) == (BASE, 8)
    other_rest = tinker.RestClient(base_url=root, api_key=tinker_key(chat_server, "tinker-k"))
    assert training.model_id not in {
        r.training_run_id for r in other_rest.list_training_runs().result().training_runs}
    with pytest.raises(tinker.NotFoundError):
        other_rest.list_checkpoints(training.model_id).result()
    # Deleted: gone from the list and from serving.
    rest.delete_checkpoint_from_tinker_path(path).result()
    assert path not in {c.tinker_path
                        for c in rest.list_checkpoints(training.model_id).result().checkpoints}
    with pytest.raises(tinker.NotFoundError):
        client.create_sampling_client(model_path=path).result()
    other.close("success").result()
    client.close("success").result()


def test_bad_requests_are_refused_naming_their_field(local_server: TuneserveServer) -> None:
    """No trainer starts: every one is refused before any work."""
    root, key = tinker_root(local_server), tinker_key(local_server, "tinker-l")
    client = tinker.ServiceClient(base_url=root, api_key=key)
    session_id = client.holder.get_session_id()

    def post(path: str, headers: dict[str, str] | None = None,
             **kwargs: object) -> httpx.Response:
        return httpx.post(root + "/api/v1/" + path, timeout=30,  # type: ignore[arg-type]
                          headers={"X-API-Key": key, **(headers or {})}, **kwargs)

    def refused(answer: httpx.Response, status: int, param: str | None) -> None:
        assert answer.status_code == status, answer.text
        assert answer.json()["error"]["param"] == param

    run = client.create_lora_training_client(base_model=BASE, rank=4).result().model_id
    refused(post("forward_backward", content=b"\xff\xff",
                 headers={"Content-Type": "application/x-protobuf"}), 400, None)
    refused(post("forward_backward", content=b"not zstd",
                 headers={"Content-Encoding": "zstd"}), 400, None)
    assert post("forward_backward", content=b"\0" * (9 * 1024 * 1024)).status_code == 413
    refused(post("save_weights_for_sampler", json={"model_id": run, "seq_id": 1, "path": "a",
                                                   "sampling_session_seq_id": 0}), 400, "path")
    refused(post("save_weights", json={"model_id": run, "seq_id": 1, "path": "../x"}), 400,
            "path")
    refused(post("create_sampling_session", json={"session_id": session_id,
                                                  "sampling_session_seq_id": 7}), 400,
            "base_model")
    refused(post("create_sampling_session", json={
        "session_id": session_id, "sampling_session_seq_id": 8, "base_model": "Qwen/Qwen3-8B"}),
        400, "base_model")
    refused(post("load_weights", json={"path": f"tinker://{run}/weights/none",
                                       "optimizer": False, "model_id": run, "seq_id": 1}),
            404, "path")
    refused(post("weights_info", json={"tinker_path": f"tinker://{run}/weights/none"}), 404,
            "tinker_path")
    refused(post(f"training_runs/{run}/checkpoints/sampler_weights/none/promote", json={}),
            404, "checkpoint_id")
    refused(httpx.delete(f"{root}/api/v1/training_runs/{run}/checkpoints/weights/none",
                         headers={"X-API-Key": key}, timeout=30), 404, "checkpoint_id")
    refused(httpx.get(f"{root}/api/v1/samplers/sampler-none", headers={"X-API-Key": key},
                      timeout=30), 404, "sampling_session_id")
    # Downloads: a recipient that is no age key, a TTL out of bounds, weights that are not
    # there, and a file URL this server did not sign (no key is needed to be refused).
    refused(post("save_weights_external", json={
        "model_id": run, "seq_id": 1, "path": "x",
        "age_encryption_recipients": ["age1notakey"]}), 400, "age_encryption_recipients")
    checkpoints = f"{root}/api/v1/training_runs/{run}/checkpoints"
    refused(httpx.put(f"{checkpoints}/weights/none/ttl", json={"ttl_seconds": 7200},
                      headers={"X-API-Key": key}, timeout=30), 404, "checkpoint_id")
    refused(httpx.put(f"{checkpoints}/weights/none/ttl", json={"ttl_seconds": 60},
                      headers={"X-API-Key": key}, timeout=30), 400, "ttl_seconds")
    refused(httpx.get(f"{checkpoints}/external_weights/none/external_weights_urls",
                      headers={"X-API-Key": key}, timeout=30), 404, "checkpoint_id")
    refused(httpx.get(f"{root}/api/v1/external_weights/ckpt-none/adapter_config.json",
                      params={"expires": 2**31, "signature": "0" * 64}, timeout=30),
            403, "signature")
    sampler = post("create_sampling_session", json={
        "session_id": session_id, "sampling_session_seq_id": 9, "base_model": BASE}).json()
    topk = post("asample", json={
        "sampling_session_id": sampler["sampling_session_id"], "seq_id": 0,
        "prompt": {"chunks": [{"type": "encoded_text", "tokens": [1, 2]}]},
        "sampling_params": {"max_tokens": 1}, "topk_sample_logprobs": 5})
    assert topk.status_code == 400 and "topk_sample_logprobs" in topk.json()["error"]["param"]
    client.close("success").result()
