"""A deployment's page: what it is, a small form that calls it through the gateway, and the same
call as ``curl`` and ``openai`` snippets to copy.

The page's script posts to ``/deployments/{id}/try`` with the session's CSRF token in a header;
the call then goes through the gateway exactly as an API call would (same routing, wake-up,
limits and errors), on behalf of the signed-in organization, with ``model`` set to this
deployment's name. The browser never holds an API key.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from enginehouse.api.deps import SessionDep
from enginehouse.api.views import deployment_to_dict
from enginehouse.core.task_types import ENDPOINTS, TaskType
from enginehouse.dashboard.web import PageNotFound, UserDep, check_csrf, plain, render
from enginehouse.errors import BadRequestError, NotFoundError
from enginehouse.gateway.router import INFERENCE_ENDPOINTS
from enginehouse.services import deployments as deployment_service

router = APIRouter(include_in_schema=False)

# Which form the page shows, by task type.
TRY_FORMS: dict[TaskType, str] = {
    TaskType.TEXT_GENERATION: "chat",
    TaskType.VLM_GENERATION: "chat",
    TaskType.CLASSIFICATION: "classify",
    TaskType.REGRESSION: "classify",
    TaskType.VLM_CLASSIFICATION: "classify",
    TaskType.NER: "ner",
    TaskType.EMBEDDING: "similarity",
    TaskType.CLIP_EMBEDDING: "similarity",
    TaskType.IMAGE_DETECTION: "detect",
    TaskType.CLIP_CLASSIFICATION: "image-classify",
}
# The example body each form's snippets show (``model`` is added).
SNIPPET_BODIES: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 64}),
    "classify": ("/v1/classification", {"input": ["I was charged twice this month"]}),
    "ner": ("/v1/ner", {"input": "Ada Lovelace was born in London."}),
    "similarity": ("/v1/embeddings", {"input": ["a cat sits on the mat", "a kitten rests on a rug"]}),
    "detect": ("/v1/detections", {"image": "data:image/png;base64,…"}),
    "image-classify": ("/v1/image-classification", {"image": "data:image/png;base64,…", "labels": ["cat", "dog"]}),
}


@router.get("/deployments/{deployment_id}")
def deployment_page(deployment_id: str, request: Request, session: SessionDep, user: UserDep) -> HTMLResponse:
    try:
        deployment = plain(deployment_to_dict(deployment_service.read_deployment(
            session, user.organization_id, deployment_id)))
    except NotFoundError as error:
        raise PageNotFound(error.message) from None
    form = TRY_FORMS[TaskType(deployment["task_type"])]
    endpoint, example = SNIPPET_BODIES[form]
    body = {"model": deployment["name"], **example}
    base_url = str(request.base_url).rstrip("/")
    return render(request, "deployment.html", user, deployment=deployment, form=form,
                  curl=_curl(base_url, endpoint, body), python=_python(base_url, form, body))


@router.post("/deployments/{deployment_id}/try")
async def try_deployment(deployment_id: str, endpoint: str, request: Request, session: SessionDep,
                         user: UserDep) -> Response:
    check_csrf(request, user, request.headers.get("x-csrf-token", ""))
    row = deployment_service.read_deployment(session, user.organization_id, deployment_id)
    deployment = deployment_to_dict(row)
    fitting = ENDPOINTS[TaskType(deployment["task_type"])]
    if endpoint not in fitting:
        raise BadRequestError(f"endpoint must be one of {', '.join(fitting)} for this deployment", param="endpoint")
    # The session is done with: the call may stream for minutes and must not hold a connection.
    session.close()
    try:
        body = json.loads(await request.body())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadRequestError("the request body is not valid JSON", code="invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequestError("the request body must be a JSON object", code="invalid_json")
    raw = json.dumps({**body, "model": deployment["name"]}).encode()
    request_model, _ = INFERENCE_ENDPOINTS[endpoint]
    # Its errors are answered as the API answers them; the page shows their message.
    return await request.app.state.gateway.serve(request, user.organization_id, endpoint, raw, request_model)


def _curl(base_url: str, endpoint: str, body: dict[str, Any]) -> str:
    return (f"curl {base_url}{endpoint} \\\n  -H \"Authorization: Bearer $ENGINEHOUSE_API_KEY\" \\\n"
            f"  -H 'Content-Type: application/json' \\\n  -d '{json.dumps(body)}'")


def _python(base_url: str, form: str, body: dict[str, Any]) -> str:
    client = (f'from openai import OpenAI\n\nclient = OpenAI(base_url="{base_url}/v1", '
              'api_key=os.environ["ENGINEHOUSE_API_KEY"])\n')
    if form == "chat":
        call = (f'answer = client.chat.completions.create(\n    model="{body["model"]}",\n'
                f'    messages={body["messages"]!r},\n    max_tokens={body["max_tokens"]},\n)\n'
                "print(answer.choices[0].message.content)")
    elif form == "similarity":
        call = (f'answer = client.embeddings.create(model="{body["model"]}", input={body["input"]!r})\n'
                "print(len(answer.data[0].embedding))")
    else:
        # Endpoints beyond OpenAI's own: the client's generic post.
        path = SNIPPET_BODIES[form][0].removeprefix("/v1")
        call = (f'answer = client.post("{path}", body={body!r}, cast_to=httpx.Response)\n'
                "print(answer.json())")
        return f"import os\n\nimport httpx\n{client}\n{call}"
    return f"import os\n\n{client}\n{call}"
