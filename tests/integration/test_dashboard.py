"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright) against a
real server with real replicas of the tiny Llama: sign in, create an engine with a deployment and
watch it reach Deployed without a reload, deploy a second checkpoint and call it from its page,
remove it, deactivate and reactivate the engine, start a fine-tune from an uploaded file and follow
it to its checkpoints, another organization sees none of it, a cross-site form post changes
nothing, and every page fits a laptop screen and works from the keyboard alone. Screenshots of the
main pages go to ``test-output/dashboard/``."""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from enginehouse.demo.tiny_encoders import build_tiny_bert
from tests.integration.harness import ServerProcess, free_port, wait_for
from tests.integration.test_orgs_and_restart import cli
from tests.integration.test_textgen import create_engine, register_job
from tests.training_data import keyword_rows, write_jsonl

pytestmark = pytest.mark.integration

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (make test installs it where apt-get can)",
                allow_module_level=True)

SHOTS = Path(os.environ.get("ENGINEHOUSE_TEST_OUTPUT", "test-output")) / "dashboard"
# Long enough for a replica of the tiny model to start and load its deployments on 2 cores.
DEPLOYED_MS = 180_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def served(start_server, tiny_llama_dir: Path, tiny_adapter_dirs: list[Path]) -> tuple[ServerProcess, dict[str, Any]]:  # type: ignore[no-untyped-def]
    server = start_server()
    return server, register_job(server.client(), tiny_llama_dir, tiny_adapter_dirs[:2], name="web-job")


def sign_in(browser: Any, server: ServerProcess, key: str) -> Any:
    page = browser.new_context(viewport={"width": 1280, "height": 860}).new_page()
    page.goto(f"{server.url}/engines")
    assert "/login" in page.url  # signed out: sent to sign in, and back after
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{server.url}/engines")
    return page


def status_of(page: Any, deployment: str) -> Any:
    return page.locator(f'tr[data-deployment="{deployment}"] .status')


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_an_engine_from_creation_to_reactivation_in_the_browser(
    browser: Any, served: tuple[ServerProcess, dict[str, Any]], tiny_llama_dir: Path
) -> None:
    server, job = served
    http = server.client()
    page = sign_in(browser, server, server.api_key)
    assert "No engines yet" in page.content()

    # A new engine with its first fine-tuned deployment; a bad field is refused beside it.
    page.get_by_role("link", name="New engine").first.click()
    page.get_by_label("Name", exact=True).fill("web")
    page.get_by_label("Task type").select_option("text-generation")
    page.get_by_label("Base model").fill(str(tiny_llama_dir))
    page.get_by_label("Maximum replicas").fill("many")
    page.get_by_label("Deployment name").fill("web-ft")
    page.get_by_label("Training job ID").fill(job["id"])
    page.get_by_label("Checkpoint").fill("1")
    page.get_by_role("button", name="Create").click()
    playwright_api.expect(page.locator(".error")).to_have_text("max_replicas: a number is needed")
    assert http.get("/v1/engines").json()["data"] == []  # nothing was created
    page.get_by_label("Maximum replicas").fill("")
    page.get_by_role("button", name="Create").click()
    page.wait_for_url(f"{server.url}/engines/engine-*")
    engine_id = page.url.rsplit("/", 1)[1]
    # Watched without a reload: a marker set now survives until the deployment is Deployed.
    page.evaluate("window.__sameDocument = true")
    playwright_api.expect(status_of(page, "web-ft")).to_have_text("Deployed", timeout=DEPLOYED_MS)
    playwright_api.expect(page.locator(f'[data-status-of="{engine_id}"]')).to_have_text("Active")
    assert page.evaluate("window.__sameDocument") is True
    shot(page, "engine")

    # A second checkpoint onto the same engine: only fitting jobs are offered, with their checkpoints.
    page.get_by_role("link", name="Deploy a checkpoint").click()
    page.get_by_label("Training job").select_option(job["id"])
    page.get_by_role("button", name="Show its checkpoints").click()
    page.get_by_label("checkpoint 2").check()
    page.get_by_label("Deployment name").fill("web-ft2")
    shot(page, "deploy")
    page.get_by_role("button", name="Deploy", exact=True).click()
    page.wait_for_url(f"{server.url}/engines/{engine_id}")
    playwright_api.expect(status_of(page, "web-ft2")).to_have_text("Deployed", timeout=DEPLOYED_MS)

    # Called from its own page: the answer streams in; the snippets carry its name.
    page.get_by_role("link", name="web-ft2", exact=True).click()
    page.wait_for_url(f"{server.url}/deployments/dp-*")
    assert '"model": "web-ft2"' in page.locator("#snippet-curl").inner_text()
    assert 'model="web-ft2"' in page.locator("#snippet-python").inner_text()
    page.get_by_label("Message").fill("Say something.")
    page.get_by_label("Max tokens").fill("8")
    page.get_by_role("button", name="Send").click()
    playwright_api.expect(page.get_by_text("(end of answer)")).to_be_visible(timeout=60_000)
    streamed = page.locator(".chat-answer").inner_text()
    assert streamed.strip(), "the streamed answer is empty"
    shot(page, "deployment")
    page.go_back()
    page.wait_for_url(f"{server.url}/engines/{engine_id}")
    page.reload()  # the traffic chart is drawn when the page loads: it now counts that call
    summary = page.locator('[data-chart="1"] p').inner_text()
    assert re.match(r"[1-9]\d* calls in the last 30 minutes, 0 answered with a server error", summary), summary

    # Removing it leaves the rest of the engine as it was.
    page.get_by_role("link", name="Remove web-ft2").click()
    playwright_api.expect(page.get_by_text("The engine and its other deployments are untouched")).to_be_visible()
    page.get_by_role("button", name="Remove").click()
    page.wait_for_url(f"{server.url}/engines/{engine_id}")
    assert status_of(page, "web-ft2").count() == 0
    assert http.post("/v1/completions", json={"model": "web-ft2", "prompt": "hi", "max_tokens": 2}).status_code == 404
    assert [d["status"] for d in http.get(f"/v1/engines/{engine_id}").json()["deployments"]
            if d["name"] == "web-ft"] == ["Deployed"]

    # Deactivate, then reactivate, each behind a confirmation that says what will happen.
    page.get_by_role("link", name="Deactivate").click()
    playwright_api.expect(page.get_by_text("Nothing is deleted")).to_be_visible()
    page.get_by_role("button", name="Deactivate").click()
    page.wait_for_url(f"{server.url}/engines/{engine_id}")
    playwright_api.expect(page.locator(f'[data-status-of="{engine_id}"]')).to_have_text("Inactive", timeout=60_000)
    page.get_by_role("link", name="Reactivate").click()
    page.get_by_role("button", name="Reactivate").click()
    page.wait_for_url(f"{server.url}/engines/{engine_id}")
    playwright_api.expect(status_of(page, "web-ft")).to_have_text("Deployed", timeout=DEPLOYED_MS)
    playwright_api.expect(page.locator(f'[data-status-of="{engine_id}"]')).to_have_text("Active")
    page.goto(f"{server.url}/engines")
    playwright_api.expect(page.locator(f'[data-status-of="{engine_id}"]')).to_have_text("Active")
    shot(page, "engines")


def test_another_organization_sees_nothing_and_cross_site_posts_change_nothing(
    browser: Any, served: tuple[ServerProcess, dict[str, Any]], tiny_llama_dir: Path
) -> None:
    server, _job = served
    http = server.client()
    engine = create_engine(http, "private", tiny_llama_dir)
    cli(server, "orgs", "create", "elsewhere")
    other_key = json.loads(cli(server, "keys", "create", "--org", "elsewhere", "--json"))["key"]
    other = sign_in(browser, server, other_key)
    playwright_api.expect(other.get_by_text("No engines yet")).to_be_visible()
    assert "private" not in other.content()
    other.goto(f"{server.url}/engines/{engine['id']}")
    playwright_api.expect(other.get_by_role("heading", name="Not found")).to_be_visible()
    assert "private" not in other.content()

    # A page on another origin posts a form to the dashboard of a signed-in user.
    page = sign_in(browser, server, server.api_key)
    target = f"{server.url}/engines/{engine['id']}/deactivate"
    with evil_site(target) as evil_url:
        page.goto(evil_url)
        playwright_api.expect(page.get_by_text("did not come from this dashboard")).to_be_visible()
    assert http.get(f"/v1/engines/{engine['id']}").json()["status"] != "Inactive"
    # Signing out ends the session: the old cookie opens nothing.
    page.goto(f"{server.url}/engines")
    cookies = page.context.cookies()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{server.url}/login")
    page.context.add_cookies(cookies)
    page.goto(f"{server.url}/engines")
    assert "/login" in page.url
    # A revoked key's session ends too.
    cli(server, "keys", "revoke", other_key)
    other.goto(f"{server.url}/engines")
    assert "/login" in other.url


class evil_site:
    """A page on another origin whose form posts itself to ``target`` as soon as it loads."""

    def __init__(self, target: str) -> None:
        html = (f'<form id="f" method="post" action="{target}"><input name="csrf_token" value="guessed"></form>'
                '<script>document.getElementById("f").submit()</script>').encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(html)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)

    def __enter__(self) -> str:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_port}/"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_fine_tune_started_from_an_uploaded_file_is_followed_to_its_checkpoints(
    browser: Any, served: tuple[ServerProcess, dict[str, Any]], tmp_path: Path
) -> None:
    server, _job = served
    base = build_tiny_bert(tmp_path / "tiny-bert", head="sequence-classification", labels=["neg", "pos"])
    data = write_jsonl(tmp_path / "keyword.jsonl", keyword_rows(40, seed=3))
    page = sign_in(browser, server, server.api_key)
    page.get_by_role("link", name="Training jobs").click()
    page.get_by_role("link", name="New fine-tune").click()
    page.get_by_label("Name", exact=True).fill("keyword-web")
    page.get_by_label("Task type").select_option("classification")
    page.get_by_label("Base model").fill(str(base))
    page.get_by_label("Training data (JSONL)").set_input_files(str(data))
    page.get_by_label("Epochs").fill("2")
    page.get_by_role("button", name="Start").click()
    page.wait_for_url(f"{server.url}/training-jobs/tr-*")
    page.evaluate("window.__sameDocument = true")
    # Followed without a reload: the status moves on and each epoch's checkpoint appears.
    live = page.locator("#job-live")
    playwright_api.expect(live.locator(".status")).to_have_text("Success", timeout=DEPLOYED_MS)
    playwright_api.expect(live.locator("tr[data-checkpoint]")).to_have_count(2)
    assert "accuracy" in live.locator('tr[data-checkpoint="2"]').inner_text()
    assert page.evaluate("window.__sameDocument") is True
    assert page.locator("#job-progress").get_attribute("value") == "100.0"
    shot(page, "training-job")


# Every element a keyboard user can reach, each given a key of its own; a group of radio buttons
# is one stop of the Tab key (the arrows move within it), so it shares one key.
_MARK_REACHABLE = """() => {
  const shown = e => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
  const all = [...document.querySelectorAll('a[href], button, input:not([type=hidden]), select, textarea')]
    .filter(e => !e.disabled && shown(e));
  all.forEach((e, i) => { e.dataset.tabKey = e.type === 'radio' ? 'radio:' + e.name : String(i); });
  return [...new Set(all.map(e => e.dataset.tabKey))];
}"""
_FOCUSED = """() => {
  const e = document.activeElement;
  if (!e || e === document.body) return null;
  const style = getComputedStyle(e);
  return {key: e.dataset.tabKey || null, what: e.outerHTML.slice(0, 100), outline: style.outlineStyle,
          outlineWidth: parseFloat(style.outlineWidth)};
}"""


def tab_through(page: Any) -> tuple[list[str], list[str]]:
    """(every element the page offers a keyboard, each stop the Tab key makes, in order) on the
    page as it is now; each stop is checked to show where the focus is."""
    reachable = page.evaluate(_MARK_REACHABLE)
    page.evaluate("document.activeElement && document.activeElement.blur()")
    stops: list[str] = []
    for _ in range(len(reachable) + 5):
        page.keyboard.press("Tab")
        focused = page.evaluate(_FOCUSED)
        if focused is None or (stops and focused["key"] == stops[0]):
            break  # past the last stop: the focus left the page, or came round again
        assert focused["outline"] != "none" and focused["outlineWidth"] >= 2, f"no visible focus on {focused}"
        stops.append(focused["key"])
    return reachable, stops


def test_every_page_works_from_the_keyboard_on_a_laptop_screen(
    browser: Any, served: tuple[ServerProcess, dict[str, Any]], tiny_llama_dir: Path
) -> None:
    server, job = served
    http = server.client()
    engine = create_engine(http, "keys-only", tiny_llama_dir)
    page = browser.new_context(viewport={"width": 1366, "height": 768}).new_page()

    # Signing in with the keyboard alone: the key field has the focus, Enter sends the form.
    page.goto(f"{server.url}/login")
    assert page.evaluate("document.activeElement.id") == "api_key"
    page.keyboard.type(server.api_key)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{server.url}/engines")

    pages = ["/engines", f"/engines/{engine['id']}", "/engines/new", f"/engines/{engine['id']}/deploy",
             "/training-jobs", "/training-jobs/new", f"/training-jobs/{job['id']}", "/experiments",
             "/experiments/new", "/api-keys"]
    for path in pages:
        page.goto(f"{server.url}{path}")
        # Fits the screen: nothing hides past its right edge.
        width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"{path} is {width[0]} px wide on a {width[1]} px screen"
        reachable, stops = tab_through(page)
        assert stops and None not in stops, f"{path}: the Tab key reached {stops}"
        assert sorted(stops) == sorted(reachable), f"{path}: Tab reached {stops} of {reachable}"
        # Readable without colour: every status is told in words.
        statuses = page.locator(".status").all_inner_texts()
        assert all(text.strip() for text in statuses), f"{path}: a status without words: {statuses}"

    # The first stop skips to the content; following a link and posting a form need no mouse.
    page.goto(f"{server.url}/engines")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent").strip().lower().startswith("skip")
    page.locator(f'a[href="/engines/{engine["id"]}"]').first.focus()
    page.keyboard.press("Enter")
    page.wait_for_url(f"{server.url}/engines/{engine['id']}")
    # (Deleted: an engine still starting can be deleted, not yet deactivated.)
    page.locator('a[href$="/confirm/delete"]').focus()
    page.keyboard.press("Enter")
    page.wait_for_url(f"{server.url}/engines/{engine['id']}/confirm/delete")
    page.get_by_role("button", name="Delete").focus()
    page.keyboard.press("Enter")
    page.wait_for_url(f"{server.url}/engines")
    wait_for(lambda: http.get(f"/v1/engines/{engine['id']}").status_code == 404, timeout=60,
             what="the engine to be deleted")
