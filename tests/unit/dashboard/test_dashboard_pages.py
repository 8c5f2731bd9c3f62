"""The dashboard's pages over HTTP, without a browser or replicas: signing in and out, what a
session needs (a live, unrevoked key; this organization's objects only), the guard on forms, and
form fields refused in the API's own words. The browser drives the same pages against real
replicas in tests/integration/test_dashboard.py."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from enginehouse.core.ids import utcnow
from enginehouse.db.models import DashboardSessionModel
from enginehouse.services import orgs
from tests.unit.control.conftest import fake_lora_checkpoint
from tests.unit.dashboard.conftest import KEY, ORIGIN, errors_in, sign_in

def test_signed_out_pages_send_to_sign_in_and_back(client: TestClient) -> None:
    answer = client.get("/engines/new", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/login?next=%2Fengines%2Fnew"
    assert client.get("/engines.json").status_code == 401  # what the pages poll: no redirect
    refused = client.post("/login", data={"api_key": "eh-not-a-key"})
    assert refused.status_code == 401 and "not valid" in errors_in(refused)[0]
    back = client.post("/login", data={"api_key": KEY, "next": "/engines/new"}, follow_redirects=False)
    assert back.headers["location"] == "/engines/new"
    page = client.get("/engines/new")
    assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil.example"])
def test_signing_in_never_sends_to_another_site(client: TestClient, target: str) -> None:
    answer = client.post("/login", data={"api_key": KEY, "next": target}, follow_redirects=False)
    assert answer.headers["location"] == "/engines"


def test_signing_out_or_revoking_the_key_ends_the_session(client: TestClient) -> None:
    database = client.app.state.database  # type: ignore[attr-defined]
    with database.session() as session:
        other = orgs.create_api_key(session, "default").key
    csrf = sign_in(client, other)
    cookie = client.cookies.get("eh_session")
    assert client.get("/engines").status_code == 200
    with database.session() as session:
        orgs.revoke_api_key(session, other)
    assert client.get("/engines", follow_redirects=False).status_code == 303

    csrf = sign_in(client)
    cookie = client.cookies.get("eh_session")
    assert client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False).status_code == 303
    client.cookies.set("eh_session", str(cookie))  # the old cookie, kept by someone
    assert client.get("/engines", follow_redirects=False).status_code == 303


def test_an_expired_session_signs_nobody_in(client: TestClient) -> None:
    sign_in(client)
    with client.app.state.database.session() as session:  # type: ignore[attr-defined]
        for row in session.query(DashboardSessionModel):
            row.expires_at = utcnow() - timedelta(seconds=1)
    assert client.get("/engines", follow_redirects=False).status_code == 303


def test_forms_without_the_token_or_from_another_origin_change_nothing(client: TestClient) -> None:
    csrf = sign_in(client)
    body = {"engine_name": "sneaky", "task_type": "text-generation", "base_model": "/models/x"}
    for data, headers in [(body, {}), ({**body, "csrf_token": "guessed"}, {}),
                          ({**body, "csrf_token": csrf}, {"origin": "http://evil.example"}),
                          ({**body, "csrf_token": csrf}, {"origin": "null"})]:
        answer = client.post("/engines/new", data=data, headers=headers)
        assert answer.status_code == 403 and "nothing was changed" in answer.text
    assert client.get("/v1/engines", headers={"X-API-Key": KEY}).json()["data"] == []
    made = client.post("/engines/new", data={**body, "csrf_token": csrf}, headers={"origin": ORIGIN},
                       follow_redirects=False)
    assert made.status_code == 303 and made.headers["location"].startswith("/engines/engine-")


def test_a_refused_field_is_shown_beside_it_in_the_apis_words(client: TestClient) -> None:
    csrf = sign_in(client)
    base = {"csrf_token": csrf, "engine_name": "web", "task_type": "text-generation", "base_model": "/models/x"}
    cases = [
        ({"engine_name": "bad name!"}, "engine_name", "name"),
        ({"task_type": "painting"}, "task_type", "task_type"),
        ({"min_replicas": "3", "max_replicas": "2"}, "max_replicas", "max_replicas must be at least min_replicas"),
        ({"max_replicas": "lots"}, "max_replicas", "a number is needed"),
        ({"deployment_option": "gpu-h100-x99"}, "deployment_option", "unknown deployment_option"),
        ({"name": "web-ft", "training_id": "tr-missing", "checkpoint": "1"}, "source", "tr-missing"),
        # Fields the page has no error place of their own for: shown atop the form.
        ({"name": "web-ft", "training_id": "tr-x", "checkpoint": "abc"}, "form", "checkpoint: a number is needed"),
        ({"management": "always", "start_time": "08:00"}, "form", "start_time is set but 'Always on'"),
        ({"min_replicas": "few", "max_replicas": "2"}, "min_replicas", "min_replicas: a number is needed"),
    ]
    for fields, field, words in cases:
        answer = client.post("/engines/new", data={**base, **fields})
        assert answer.status_code in (400, 404, 422), (fields, answer.status_code)
        shown = re.search(rf'id="{field}-error"[^>]*>([^<]+)<', answer.text)
        assert shown and words in html.unescape(shown.group(1)), (fields, errors_in(answer))
        assert 'value="/models/x"' in answer.text  # what was typed stays in the form
    assert client.get("/v1/engines", headers={"X-API-Key": KEY}).json()["data"] == []


def test_another_organizations_engine_is_not_found(client: TestClient) -> None:
    csrf = sign_in(client)
    made = client.post("/engines/new", data={"csrf_token": csrf, "engine_name": "mine", "task_type": "text-generation",
                                             "base_model": "/models/x"}, follow_redirects=False)
    engine_path = made.headers["location"]
    with client.app.state.database.session() as session:  # type: ignore[attr-defined]
        orgs.create_organization(session, "elsewhere")
        other = orgs.create_api_key(session, "elsewhere").key
    client.cookies.clear()
    other_csrf = sign_in(client, other)
    assert "mine" not in client.get("/engines").text
    for path in (engine_path, f"{engine_path}/status.json", f"{engine_path}/parts.html", f"{engine_path}/deploy",
                 f"{engine_path}/confirm/delete"):
        assert client.get(path).status_code == 404, path
    refused = client.post(f"{engine_path}/delete", data={"csrf_token": other_csrf})
    assert refused.status_code == 404
    assert len(client.get("/v1/engines", headers={"X-API-Key": KEY}).json()["data"]) == 1


def test_try_it_needs_the_session_token_and_an_endpoint_of_the_task_type(client: TestClient, tmp_path: Path) -> None:
    csrf = sign_in(client)
    api = {"X-API-Key": KEY}
    job = client.post("/v1/training-jobs", headers=api, json={
        "name": "job", "task_type": "text-generation", "base_model": "/models/x",
        "checkpoints": [{"checkpoint": 1, "path": str(fake_lora_checkpoint(tmp_path / "adapter"))}]}).json()
    engine = client.post("/v1/engines", headers=api, json={
        "name": "web", "base_model": "/models/x", "task_type": "text-generation",
        "deployment_option": "gpu-h100-80gb"}).json()
    deployment = client.post(f"/v1/engines/{engine['id']}/deploy", headers=api,
                             json={"name": "web-ft", "training_id": job["id"], "checkpoint": 1}).json()
    page = client.get(f"/deployments/{deployment['id']}")
    shown = html.unescape(page.text)
    assert page.status_code == 200 and 'model="web-ft"' in shown and "/v1/chat/completions" in shown

    try_it = f"/deployments/{deployment['id']}/try?endpoint=/v1/chat/completions"
    body = {"messages": [{"role": "user", "content": "hi"}]}
    assert client.post(try_it, json=body).status_code == 403
    assert client.post(try_it, json=body, headers={"X-CSRF-Token": "guessed"}).status_code == 403
    wrong = client.post(try_it.replace("chat/completions", "embeddings"), json=body, headers={"X-CSRF-Token": csrf})
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "endpoint"
    bad = client.post(try_it, content=b"[1, 2]", headers={"X-CSRF-Token": csrf, "Content-Type": "application/json"})
    assert bad.status_code == 400 and "JSON object" in bad.json()["error"]["message"]
    assert client.post("/deployments/dp-missing/try?endpoint=/v1/chat/completions", json=body,
                       headers={"X-CSRF-Token": csrf}).status_code == 404
    assert client.get("/deployments/dp-missing").status_code == 404


def test_sizing_is_shown_before_anything_is_made_and_a_schedule_is_kept(client: TestClient, tiny_llama_dir: Path) -> None:
    csrf = sign_in(client)
    base = {"csrf_token": csrf, "engine_name": "web", "task_type": "text-generation", "base_model": str(tiny_llama_dir)}
    preview = client.post("/engines/new", data={**base, "preview": "1"})
    assert preview.status_code == 200 and 'id="sizing"' in preview.text
    assert re.search(r"Estimated \d+\.\d\d GiB per replica", preview.text)
    assert client.get("/v1/engines", headers={"X-API-Key": KEY}).json()["data"] == []

    ignored = client.post("/engines/new", data={**base, "management": "always", "inactive_duration": "60"})
    assert ignored.status_code == 400 and "Always on" in html.unescape(errors_in(ignored)[0])
    bad_time = client.post("/engines/new", data={**base, "management": "schedule", "start_time": "8am",
                                                 "end_time": "18:00"})
    shown = re.search(r'id="schedule-error"[^>]*>([^<]+)<', bad_time.text)
    assert bad_time.status_code == 400 and shown and "HH:MM" in shown.group(1)
    made = client.post("/engines/new", data={**base, "management": "schedule", "start_time": "08:00",
                                             "end_time": "18:00", "days": "monday, friday", "timezone": "Europe/Paris"},
                       follow_redirects=False)
    assert made.status_code == 303, errors_in(made)
    engine = client.get("/v1/engines", headers={"X-API-Key": KEY}).json()["data"][0]
    assert engine["resource_management_config"] == {"management_type": "schedule", "management_config": {
        "timezone": "Europe/Paris", "start_time": "08:00", "end_time": "18:00", "days": ["monday", "friday"]}}
