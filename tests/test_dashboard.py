"""The dashboard at `/`, end to end in a real browser (Debian's Chromium, headless, driven by
Playwright): sign in, upload, train, watch the curves grow live, then chat with the new model
beside its base; a reinforcement job with its grader tried on a sample, webhook endpoints
and their deliveries, sharing a checkpoint with another project, and the project's API keys.
An error the API answers is shown in the API's words. `TUNESERVE_DASHBOARD_SCREENSHOTS=DIR`
also saves the screenshots the docs show."""

import contextlib
import json
import os
import re
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from types import TracebackType

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Locator,
    Page,
    Response,
    expect,
    sync_playwright,
)

from tests.support.chat import wait_for_engine
from tests.support.server import TuneserveServer
from tests.support.training import (
    BASE,
    TERMINAL,
    dpo_example,
    jsonl,
    sft_example,
    upload,
    wait_for,
    wait_for_evaluation,
)

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = os.environ.get("TUNESERVE_DASHBOARD_SCREENSHOTS")
# 24 examples, batch 8, 2 epochs: 6 steps, a few minutes of CPU training on a busy machine.
EPOCHS, BATCH_SIZE, STEPS = 2, 8, 6
TRAINING_TIMEOUT_S = 600
MS = 1000
SAYS_YES = {"type": "string_check", "name": "says_yes", "operation": "ilike",
            "input": "{{sample.output_text}}", "reference": "{{item.answer}}"}
# Ten rows: the fewest a training file may hold, so the job passes validation and is
# cancelled for the reason the test gives, not failed for its file.
RFT_ROWS = [{"messages": [{"role": "user", "content": f"{q} Answer yes or no."}], "answer": "yes"}
            for q in ("Is the sky blue?", "Is fire hot?", "Is ice cold?", "Do fish swim?",
                      "Do birds fly?", "Is snow white?", "Is grass green?", "Is salt salty?",
                      "Do dogs bark?", "Is the sun bright?")]
SUCCEEDED, FAILED, CANCELLED = ("fine_tuning.job.succeeded", "fine_tuning.job.failed",
                                "fine_tuning.job.cancelled")
# A public name that resolves nowhere: saved (each delivery checks it again), never reached.
UNREACHABLE_HOOK = "https://hooks.tuneserve.invalid/dashboard"

pytestmark = [pytest.mark.browser, pytest.mark.training]

needs_browser = pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("TUNESERVE_REQUIRE_BROWSER"),
    reason="no /usr/bin/chromium (`make chromium` installs Debian's; set "
           "TUNESERVE_REQUIRE_BROWSER=1 to fail instead of skipping)")


def _root(server: TuneserveServer) -> str:
    return server.base_url.removesuffix("/v1")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking"])
        yield browser
        browser.close()


class Dashboard:
    """One browser tab on the dashboard. As a context manager it saves a screenshot when the
    test fails, and fails it when the page had script errors (a CSP refusal, an Alpine
    expression that does not evaluate) even if every step passed."""

    def __init__(self, browser: Browser, server: TuneserveServer, tmp_path: Path) -> None:
        self.server, self.tmp_path = server, tmp_path
        self.context = browser.new_context(viewport={"width": 1440, "height": 900})
        self.page: Page = self.context.new_page()
        self.page.set_default_timeout(30 * MS)
        self.problems: list[str] = []
        self.page.on("pageerror", lambda err: self.problems.append(f"page error: {err}"))
        self.page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        text = message.text
        if "Content Security Policy" in text or "Alpine" in text or (
                message.type == "error" and "Failed to load resource" not in text):
            self.problems.append(f"console {message.type}: {text}")

    def __enter__(self) -> "Dashboard":
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if kind is not None:
                path = self.tmp_path / "dashboard-failure.png"
                with contextlib.suppress(Exception):
                    self.page.screenshot(path=path, full_page=True)
                    print(f"screenshot of the page when the test failed: {path}")
                print("script errors on the page:", *self.problems or ["none"], sep="\n  ")
            else:
                assert not self.problems, "script errors on the page:\n" + "\n".join(self.problems)
        finally:
            self.context.close()

    def open(self) -> None:
        self.page.goto(_root(self.server) + "/")

    def sign_in(self, key: str) -> None:
        self.page.get_by_test_id("api-key-input").fill(key)
        self.page.get_by_test_id("sign-in").click()

    def enter(self) -> None:
        """Opens the dashboard signed in with the server's key."""
        self.open()
        self.sign_in(self.server.api_key)
        expect(self.page.get_by_test_id("app")).to_be_visible()

    def api_error(self, path_end: str, click: Locator) -> str:
        """Clicks, and returns the message of the API's error answer to the request it made to
        a URL ending in `path_end`."""
        with self.page.expect_response(lambda r: r.url.endswith(path_end)) as answer:
            click.click()
        return _error_message(answer.value)

    def upload(self, name: str, records: list) -> str:  # type: ignore[type-arg]
        """Uploads through the file input; returns the new file's id from the list."""
        page = self.page
        page.get_by_test_id("file-input").set_input_files(
            {"name": name, "mimeType": "application/jsonl", "buffer": jsonl(records)})
        page.get_by_test_id("upload-button").click()
        expect(page.get_by_test_id("upload-done")).to_contain_text(name)
        expect(page.get_by_test_id("upload-progress")).to_have_attribute("data-value", "100")
        row = page.get_by_test_id("file-row").filter(has_text=name)
        expect(row).to_have_count(1)
        return row.get_attribute("data-id") or ""

    def save(self, name: str, *, full_page: bool = False) -> None:
        if SCREENSHOTS:
            Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=Path(SCREENSHOTS) / name, full_page=full_page)


def test_the_dashboard_is_served_beside_the_api(local_server: TuneserveServer) -> None:
    root = _root(local_server)
    page = httpx.get(root + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    script = httpx.get(root + "/js/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    # The API's own routes still answer as before, the mount at `/` comes after them.
    assert httpx.get(root + "/health").json()["status"] == "ok"
    assert httpx.get(root + "/openapi.json").json()["info"]["title"] == "tuneserve"
    assert httpx.get(root + "/docs").status_code == 200
    unauthorized = httpx.get(root + "/v1/models")
    assert unauthorized.status_code == 401 and unauthorized.json()["error"]["message"]
    missing = httpx.get(root + "/no-such-page")
    assert missing.status_code == 404 and missing.json()["error"]["code"]


@needs_browser
def test_a_wrong_key_is_refused(local_server: TuneserveServer, browser: Browser,
                                tmp_path: Path) -> None:
    with Dashboard(browser, local_server, tmp_path) as ui:
        api_calls: list[str] = []
        ui.page.on("request", lambda r: "/v1/" in r.url and api_calls.append(r.url))
        ui.open()
        ui.sign_in("sk-wrong-" + "0" * 32)
        expect(ui.page.get_by_test_id("sign-in-error")).to_have_text("Incorrect API key provided.")
        expect(ui.page.get_by_test_id("app")).to_be_hidden()
        assert ui.page.evaluate("sessionStorage.length") == 0
        assert api_calls == [local_server.base_url + "/models"]  # the check, nothing more


@needs_browser
def test_train_watch_and_chat_from_the_dashboard(local_server: TuneserveServer,
                                                 browser: Browser, tmp_path: Path) -> None:
    with Dashboard(browser, local_server, tmp_path) as ui:
        page = ui.page
        ui.open()
        ui.sign_in(local_server.api_key)
        expect(page.get_by_test_id("app")).to_be_visible()

        page.get_by_test_id("nav-files").click()
        training = ui.upload("dash-train.jsonl", [sft_example(i) for i in range(24)])
        validation = ui.upload("dash-valid.jsonl", [sft_example(i) for i in range(100, 104)])

        job_id = _create_job(page, training, validation)
        _watch_training(page)
        model = page.get_by_test_id("job-model-name").inner_text()
        assert model.startswith(f"ft:{BASE}:") and ":dash:" in model
        expect(page.get_by_test_id("loss-chart")).to_have_attribute("data-points", str(STEPS))
        expect(page.get_by_test_id("checkpoint-row")).not_to_have_count(0)
        expect(page.get_by_test_id("result-files").locator("tr")).not_to_have_count(0)
        expect(page.get_by_test_id("evaluation")).to_have_attribute(
            "data-status", "completed", timeout=300 * MS)
        expect(page.get_by_test_id("events-log")).to_contain_text("successfully completed")
        ui.save("dashboard-job.png", full_page=True)

        _chat_side_by_side(ui, model)
        page.get_by_test_id("nav-jobs").click()
        expect(page.locator(f'[data-testid="job-row"][data-id="{job_id}"]')).to_contain_text(
            "succeeded")
        _delete_model(page, model)

        page.get_by_test_id("sign-out").click()
        expect(page.get_by_test_id("sign-in-screen")).to_be_visible()
        assert page.evaluate("sessionStorage.length") == 0


def _create_job(page: Page, training: str, validation: str) -> str:
    page.get_by_test_id("nav-jobs").click()
    page.get_by_test_id("new-job").click()
    form = page.get_by_test_id("job-form")
    expect(form.locator(f'[data-testid="job-training-file"] option[value="{training}"]')
           ).to_have_count(1)
    form.get_by_test_id("job-method").select_option("supervised")
    form.get_by_test_id("job-model").select_option(BASE)
    form.get_by_test_id("job-training-file").select_option(training)
    form.get_by_test_id("job-validation-file").select_option(validation)
    form.get_by_test_id("job-suffix").fill("dash")
    form.get_by_test_id("job-epochs").fill(str(EPOCHS))
    form.get_by_test_id("job-batch-size").fill(str(BATCH_SIZE))
    form.get_by_test_id("create-job").click()
    expect(page.get_by_test_id("job-page")).to_be_visible()
    match = re.search(r"#/jobs/(ftjob-[\w-]+)", page.url)
    assert match, page.url
    return match.group(1)


def _watch_training(page: Page) -> None:
    """Follows the job page until the job ends: the loss chart must gain points while it
    trains (fewer, then more), from the live events stream."""
    status_badge = page.get_by_test_id("job-status")
    chart, cancel = page.get_by_test_id("loss-chart"), page.get_by_test_id("cancel-job")
    seen: list[tuple[str, int]] = []
    cancellable = False
    deadline = time.monotonic() + TRAINING_TIMEOUT_S
    while True:
        status = status_badge.get_attribute("data-status") or ""
        seen.append((status, int(chart.get_attribute("data-points") or 0)))
        cancellable |= status == "running" and cancel.is_visible()
        if status in TERMINAL:
            break
        assert time.monotonic() < deadline, f"still {status} after {TRAINING_TIMEOUT_S}s"
        page.wait_for_timeout(250)
    assert status == "succeeded", page.get_by_test_id("job-error").inner_text()
    while_training = [n for s, n in seen if s not in TERMINAL]
    assert any(0 < a < b for a, b in pairwise(while_training)), (
        f"the loss chart never gained a point while the job trained: {sorted(set(seen))}")
    assert cancellable, "no Cancel button while the job ran"
    expect(cancel).to_be_hidden()


def _chat_side_by_side(ui: Dashboard, model: str) -> None:
    page = ui.page
    wait_for_engine(ui.server)
    page.get_by_test_id("open-playground").click()
    base_pane, tuned_pane = page.get_by_test_id("pane-0"), page.get_by_test_id("pane-1")
    expect(base_pane.get_by_test_id("pane-model")).to_have_value(BASE)
    expect(tuned_pane.get_by_test_id("pane-model")).to_have_value(model)
    page.get_by_test_id("system").fill("You answer in JSON.")
    page.get_by_test_id("max-tokens").fill("48")
    page.get_by_test_id("prompt").fill("What is 7 plus 7?")
    page.get_by_test_id("send").click()
    for pane in (base_pane, tuned_pane):
        expect(pane).to_have_attribute("data-state", "done", timeout=180 * MS)
        expect(pane.get_by_test_id("answer")).not_to_have_text("")
    # Streamed: the trained answer (a small JSON object, many tokens) came in several deltas,
    # each drawn as it arrived. The base's sampled answer may be a single token.
    assert int(tuned_pane.get_attribute("data-chunks") or 0) > 1
    ui.save("dashboard-playground.png")


def _delete_model(page: Page, model: str) -> None:
    page.get_by_test_id("nav-models").click()
    row = page.locator(f'[data-testid="model-row"][data-id="{model}"]')
    expect(row).to_have_count(1)
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_test_id("delete-model").click()
    expect(row).to_have_count(0)


def _error_message(response: Response) -> str:
    assert response.status >= 400, f"{response.url} answered {response.status}"
    message = response.json()["error"]["message"]
    assert isinstance(message, str) and message
    return message


@needs_browser
def test_a_reinforcement_job_with_a_grader_tried_on_a_sample(
        local_server: TuneserveServer, browser: Browser, tmp_path: Path) -> None:
    client = local_server.client()
    with Dashboard(browser, local_server, tmp_path) as ui:
        page = ui.page
        ui.enter()
        page.get_by_test_id("nav-files").click()
        training = ui.upload("dash-rft.jsonl", RFT_ROWS)
        page.get_by_test_id("nav-jobs").click()
        page.get_by_test_id("new-job").click()
        form = page.get_by_test_id("job-form")
        expect(form.locator(f'[data-testid="job-training-file"] option[value="{training}"]')
               ).to_have_count(1)
        editor = form.get_by_test_id("grader-editor")
        expect(editor).to_be_hidden()
        form.get_by_test_id("job-method").select_option("reinforcement")
        expect(editor).to_be_visible()

        # A grader this server cannot run: the API's 400, in its words.
        editor.get_by_test_id("grader-json").fill(json.dumps({**SAYS_YES, "operation": "has"}))
        editor.get_by_test_id("grader-sample").fill("Yes")
        editor.get_by_test_id("grader-item").fill(json.dumps({"answer": "yes"}))
        refusal = ui.api_error("/graders/run", editor.get_by_test_id("preview-grader"))
        assert "operation" in refusal
        expect(editor.get_by_test_id("grader-error")).to_have_text(refusal)
        expect(editor.get_by_test_id("grader-result")).to_be_hidden()

        # The grader the job trains with, tried on an answer that earns the reward and one
        # that does not.
        editor.get_by_test_id("grader-json").fill(json.dumps(SAYS_YES, indent=2))
        result = editor.get_by_test_id("grader-result")
        score = editor.get_by_test_id("grader-score")
        for sample, reward in (("YES", "1"), ("No", "0")):
            editor.get_by_test_id("grader-sample").fill(sample)
            editor.get_by_test_id("preview-grader").click()
            expect(result).to_have_attribute("data-score", reward)
            expect(score).to_have_text(reward)
        expect(editor.get_by_test_id("grader-error")).to_be_hidden()
        ui.save("dashboard-grader.png", full_page=True)

        form.get_by_test_id("job-model").select_option(BASE)
        form.get_by_test_id("job-training-file").select_option(training)
        form.get_by_test_id("job-epochs").fill("1")
        form.get_by_test_id("job-generations").fill("2")
        form.get_by_test_id("job-completion-tokens").fill("4")
        form.get_by_test_id("create-job").click()
        expect(page.get_by_test_id("job-page")).to_be_visible()
        match = re.search(r"#/jobs/(ftjob-[\w-]+)", page.url)
        assert match, page.url
        job_id = match.group(1)
        expect(page.get_by_test_id("job-method-name")).to_have_text("Reinforcement (RFT)")
        expect(page.get_by_test_id("job-grader")).to_contain_text('"says_yes"')

        # Not trained here: cancelled as soon as it exists.
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_test_id("cancel-job").click()
        expect(page.get_by_test_id("job-status")).to_have_attribute("data-status", "cancelled")

        job = client.fine_tuning.jobs.retrieve(job_id)
        assert job.method is not None and job.method.reinforcement is not None
        assert job.method.type == "reinforcement"
        assert job.method.reinforcement.grader.model_dump(exclude_none=True) == SAYS_YES
        hyperparameters = job.method.model_dump()["reinforcement"]["hyperparameters"]
        assert (hyperparameters["n_epochs"], hyperparameters["num_generations"],
                hyperparameters["max_completion_tokens"]) == (1, 2, 4)
        page.get_by_test_id("nav-jobs").click()
        expect(page.locator(f'[data-testid="job-row"][data-id="{job_id}"]')).to_contain_text("RFT")


@needs_browser
def test_dpo_and_reinforcement_jobs_show_their_evaluations(
        local_server: TuneserveServer, browser: Browser, tmp_path: Path) -> None:
    # Each method's evaluation on its job page, as the API reports it: DPO by its
    # preferences, reinforcement by the job's own grader (one optimizer step each).
    client = local_server.client()
    dpo = client.fine_tuning.jobs.create(
        model=BASE, training_file=upload(client, [dpo_example(i) for i in range(10)]),
        validation_file=upload(client, [dpo_example(i) for i in range(60, 62)], "v.jsonl"),
        seed=3, method={"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 1,
                                                                   "batch_size": 10}}})
    rft = client.fine_tuning.jobs.create(
        model=BASE, training_file=upload(client, RFT_ROWS),
        validation_file=upload(client, RFT_ROWS[:2], "v.jsonl"), seed=3,
        method={"type": "reinforcement", "reinforcement": {  # type: ignore[typeddict-item]
            "grader": SAYS_YES, "hyperparameters": {
                "n_epochs": 1, "batch_size": 10, "num_generations": 2,
                "max_completion_tokens": 4}}})
    metrics = {dpo.id: {"preference_accuracy", "preference_margin", "exact_match"},
               rft.id: {"reward", "passed"}}
    evaluations = {}
    for job_id in metrics:
        done = wait_for(client, job_id, timeout=TRAINING_TIMEOUT_S)
        assert done.status == "succeeded", done.error
        evaluations[job_id] = wait_for_evaluation(client, job_id).model_extra["evaluation"]  # type: ignore[index]
        assert evaluations[job_id]["status"] == "completed", evaluations[job_id]
    with Dashboard(browser, local_server, tmp_path) as ui:
        page = ui.page
        ui.enter()
        for job_id, shown in metrics.items():
            page.goto(f"{_root(local_server)}/#/jobs/{job_id}")
            card = page.get_by_test_id("evaluation")
            expect(card).to_have_attribute("data-status", "completed")
            evaluation = evaluations[job_id]
            rows = card.get_by_test_id("evaluation-row")
            expect(rows).to_have_count(len(evaluation["fine_tuned"]))
            assert shown <= set(evaluation["fine_tuned"])
            for metric in shown:
                cells = rows.and_(page.locator(f'[data-grader="{metric}"]')).locator("td")
                expect(cells.first).to_have_text(metric.replace("_", " ").capitalize())
                base, tuned = (float(cells.nth(i).inner_text()) for i in (1, 2))
                assert (base, tuned) == pytest.approx(
                    (evaluation["base"][metric], evaluation["fine_tuned"][metric]), abs=1e-3)
            ui.save(f"dashboard-evaluation-{'dpo' if job_id == dpo.id else 'rft'}.png",
                    full_page=True)


@needs_browser
def test_webhook_endpoints_from_the_dashboard(local_server: TuneserveServer, browser: Browser,
                                              tmp_path: Path) -> None:
    with Dashboard(browser, local_server, tmp_path) as ui, local_server.http() as http:
        page = ui.page
        ui.enter()
        page.get_by_test_id("nav-webhooks").click()
        page.get_by_test_id("new-webhook").click()
        form = page.get_by_test_id("webhook-form")
        boxes = form.get_by_test_id("webhook-event-type")
        expect(boxes).to_have_count(len(http.get("/webhook_event_types").json()["data"]))
        for box in boxes.all():  # every event to start with
            expect(box).to_be_checked()
        form.locator(f'[data-testid="webhook-event-type"][value="{SUCCEEDED}"]').uncheck()
        form.get_by_test_id("webhook-name").fill("dash-hook")

        # This server sends to public addresses only: the refusal in the API's words.
        form.get_by_test_id("webhook-url").fill("http://127.0.0.1:9/hook")
        refusal = ui.api_error("/webhook_endpoints", form.get_by_test_id("create-webhook"))
        assert "public addresses only" in refusal
        expect(form.get_by_test_id("webhook-form-error")).to_have_text(refusal)

        form.get_by_test_id("webhook-url").fill(UNREACHABLE_HOOK)
        form.get_by_test_id("create-webhook").click()
        secret_box = page.get_by_test_id("signing-secret-box")
        expect(secret_box).to_contain_text("dash-hook")
        secret = page.get_by_test_id("signing-secret").inner_text()
        assert secret.startswith("whsec_")
        row = page.get_by_test_id("webhook-row").filter(has_text="dash-hook")
        expect(row).to_have_count(1)
        endpoint_id = row.get_attribute("data-id")
        expect(row.get_by_test_id("webhook-secret-hint")).to_have_text(f"whsec_...{secret[-4:]}")
        saved = http.get(f"/webhook_endpoints/{endpoint_id}").json()
        assert (saved["url"], saved["event_types"]) == (UNREACHABLE_HOOK, [FAILED, CANCELLED])
        page.get_by_test_id("dismiss-secret").click()
        expect(secret_box).to_be_hidden()

        # A test event the endpoint cannot receive: a failed attempt, in the API's words.
        detail = page.get_by_test_id("webhook-detail")
        expect(detail).to_have_attribute("data-id", endpoint_id or "")
        detail.get_by_test_id("test-event-type").select_option(CANCELLED)
        with page.expect_response(lambda r: r.url.endswith("/test"), timeout=60 * MS) as answer:
            detail.get_by_test_id("send-test").click()
        attempt = detail.get_by_test_id("webhook-attempt")
        expect(attempt).to_have_count(1)
        expect(attempt).to_have_attribute("data-outcome", "failed")
        expect(attempt).to_contain_text(CANCELLED)
        expect(attempt.get_by_test_id("webhook-attempt-outcome")).to_have_text(
            _error_message(answer.value))

        # A job cancelled: its event is delivered (retried) for real, and listed with the
        # attempts the API recorded, without what the unreachable receiver said.
        client = local_server.client()
        training = client.files.create(file=("cancel-me.jsonl",
                                             jsonl([sft_example(i) for i in range(10)])),
                                       purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model=BASE, training_file=training.id)
        client.fine_tuning.jobs.cancel(job.id)
        delivery = detail.get_by_test_id("webhook-delivery")
        expect(delivery).to_have_count(1, timeout=60 * MS)
        expect(delivery.get_by_test_id("webhook-delivery-event-type")).to_have_text(CANCELLED)
        outcome = delivery.get_by_test_id("webhook-delivery-outcome")
        expect(outcome).to_contain_text("did not acknowledge", timeout=60 * MS)
        listed = http.get(f"/webhook_endpoints/{endpoint_id}/deliveries").json()["data"]
        assert [d["id"] for d in listed] == [delivery.get_attribute("data-id")]
        assert listed[0]["attempts"] and listed[0]["status"] == "pending", listed
        expect(delivery).to_contain_text(listed[0]["event_id"])
        expect(delivery).to_have_attribute("data-status", "pending")
        expect(delivery.get_by_test_id("webhook-delivery-next")).not_to_have_text("–")

        # A new secret, shown once; the old one kept signing for a day.
        detail.get_by_test_id("keep-old-secret").check()
        page.once("dialog", lambda dialog: dialog.accept())
        with page.expect_response(lambda r: r.url.endswith("/rotate_secret")) as rotated:
            detail.get_by_test_id("rotate-secret").click()
        assert rotated.value.request.post_data_json == {
            "keep_old_secret_active_for_24_hours": True}
        expect(page.get_by_test_id("signing-secret")).not_to_have_text(secret)
        new_secret = page.get_by_test_id("signing-secret").inner_text()
        assert new_secret.startswith("whsec_")
        hint = http.get(f"/webhook_endpoints/{endpoint_id}").json()["signing_secret_hint"]
        assert hint == f"whsec_...{new_secret[-4:]}"
        expect(row.get_by_test_id("webhook-secret-hint")).to_have_text(hint)
        ui.save("dashboard-webhooks.png", full_page=True)

        page.once("dialog", lambda dialog: dialog.accept())
        detail.get_by_test_id("delete-webhook").click()
        expect(row).to_have_count(0)
        expect(detail).to_have_count(0)
        assert http.get(f"/webhook_endpoints/{endpoint_id}").status_code == 404


@needs_browser
def test_share_a_checkpoint_from_the_job_page(local_server: TuneserveServer, sft_job: object,
                                              browser: Browser, tmp_path: Path) -> None:
    client = local_server.client()
    job_id, final_model = sft_job.id, sft_job.fine_tuned_model  # type: ignore[attr-defined]
    # The newest checkpoint, which no other test deletes.
    checkpoint = client.fine_tuning.jobs.checkpoints.list(job_id).data[0]
    model = checkpoint.fine_tuned_model_checkpoint
    local_server.other_key()
    partner = next(row["project_id"] for row in local_server.api_keys()
                   if row["project"] == "other-team")

    def granted() -> list[str]:
        return [p.project_id
                for p in client.fine_tuning.checkpoints.permissions.retrieve(model).data]

    with Dashboard(browser, local_server, tmp_path) as ui:
        page = ui.page
        ui.enter()
        page.goto(f"{_root(local_server)}/#/jobs/{job_id}")
        sharing = page.get_by_test_id("sharing")
        choice = sharing.get_by_test_id("share-model")
        expect(choice).to_have_value(final_model)  # the job's own model first
        choice.select_option(model)
        rows = sharing.locator(f'[data-testid="grant-row"][data-project="{partner}"]')
        expect(rows).to_have_count(0)

        sharing.get_by_test_id("grant-project").fill("proj_nobody")
        refusal = ui.api_error("/permissions", sharing.get_by_test_id("grant"))
        assert "proj_nobody" in refusal
        expect(sharing.get_by_test_id("share-error")).to_have_text(refusal)

        try:
            sharing.get_by_test_id("grant-project").fill(partner)
            sharing.get_by_test_id("grant").click()
            expect(rows).to_have_count(1)
            expect(sharing.get_by_test_id("share-error")).to_be_hidden()
            assert partner in granted()
            ui.save("dashboard-sharing.png", full_page=True)

            page.once("dialog", lambda dialog: dialog.accept())
            rows.get_by_test_id("revoke-grant").click()
            expect(rows).to_have_count(0)
            assert partner not in granted()
        finally:  # other tests count this checkpoint's grants
            for permission in client.fine_tuning.checkpoints.permissions.retrieve(model).data:
                if permission.project_id == partner:
                    client.fine_tuning.checkpoints.permissions.delete(
                        permission.id, fine_tuned_model_checkpoint=model)


@needs_browser
def test_project_keys_from_the_dashboard(local_server: TuneserveServer, browser: Browser,
                                         tmp_path: Path) -> None:
    with Dashboard(browser, local_server, tmp_path) as ui, local_server.http() as http:
        page = ui.page
        ui.enter()
        page.get_by_test_id("nav-keys").click()
        project_id = http.get("/me").json()["id"]
        expect(page.get_by_test_id("project-id")).to_have_text(project_id)
        mine = page.get_by_test_id("key-row").filter(has=page.get_by_test_id("session-key"))
        key = local_server.api_key
        expect(mine.get_by_test_id("key-redacted")).to_have_text(f"{key[:8]}...{key[-4:]}")

        page.get_by_test_id("create-key").click()
        new_key = page.get_by_test_id("new-key")
        expect(new_key).to_have_text(re.compile(r"^sk-proj-"))
        secret = new_key.inner_text()
        assert httpx.get(local_server.base_url + "/me", headers={
            "Authorization": f"Bearer {secret}"}).json()["id"] == project_id
        row = page.get_by_test_id("key-row").filter(has_text=f"{secret[:8]}...{secret[-4:]}")
        expect(row).to_have_count(1)
        key_id = row.get_attribute("data-id")
        expect(row.get_by_test_id("session-key")).to_be_hidden()
        page.get_by_test_id("dismiss-key").click()
        expect(page.get_by_test_id("new-key-box")).to_be_hidden()
        ui.save("dashboard-keys.png", full_page=True)

        # Revoking asks first: dismissed, nothing happens; accepted, the key stops working.
        page.once("dialog", lambda dialog: dialog.dismiss())
        row.get_by_test_id("revoke-key").click()
        expect(row).to_have_count(1)
        page.once("dialog", lambda dialog: dialog.accept())
        with page.expect_response(lambda r: r.request.method == "DELETE"):
            row.get_by_test_id("revoke-key").click()
        expect(row).to_have_count(0)
        assert httpx.get(local_server.base_url + "/me", headers={
            "Authorization": f"Bearer {secret}"}).status_code == 401
        keys = http.get(f"/organization/projects/{project_id}/api_keys").json()["data"]
        assert key_id not in [k["id"] for k in keys]


@needs_browser
def test_tinker_training_runs_are_listed_beside_jobs(local_server: TuneserveServer,
                                                      browser: Browser, tmp_path: Path) -> None:
    import tinker

    # A run made through the Tinker SDK with a tml- key of the dashboard's project.
    project = httpx.get(local_server.base_url + "/me", headers={
        "Authorization": f"Bearer {local_server.api_key}"}).json()["name"]
    key = local_server.cli("keys", "create", "--project", project, "--tinker").strip()
    client = tinker.ServiceClient(base_url=_root(local_server), api_key=key)
    run = client.create_lora_training_client(base_model=BASE, rank=4).result()
    with Dashboard(browser, local_server, tmp_path) as ui:
        ui.enter()
        ui.page.get_by_test_id("nav-jobs").click()
        row = ui.page.locator(f'[data-testid="tinker-run-row"][data-id="{run.model_id}"]')
        expect(row).to_contain_text(BASE)
        expect(row).to_contain_text("4")
    client.close("success").result()
