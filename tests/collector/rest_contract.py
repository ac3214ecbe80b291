"""journy.io's OpenAPI document as the judge of the collector's REST answers.

Every answer ``RestHttp`` receives is validated by openapi-core against the document in
tests/data (never a hand-copied schema). One narrow exception, for a flaw of the
document: the 204 of ``POST /accounts/users/remove`` declares a JSON body, which HTTP
forbids (RFC 9110, 15.3.5); for a 204 the body must be empty and only the headers are
validated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import urllib3
import yaml
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from openapi_core.validation.response.validators import V30ResponseHeadersValidator

DOCUMENT_PATH = Path(__file__).resolve().parents[1] / "data" / "journy-io-openapi.yaml"
DOCUMENT: dict[str, Any] = yaml.safe_load(DOCUMENT_PATH.read_text(encoding="utf-8"))
SERVER = DOCUMENT["servers"][0]["url"]
_API = OpenAPI.from_dict(DOCUMENT)


def declared_headers(method: str, path: str, status: int) -> set[str]:
    response = DOCUMENT["paths"][path][method.lower()]["responses"][str(status)]
    return set(response.get("headers", {}))


def check_response(
    method: str,
    path: str,
    status: int,
    headers: dict[str, str],
    body: bytes,
    query: Optional[dict[str, str]] = None,
) -> None:
    """Raises unless the answer is one the document allows for this operation."""
    operation = DOCUMENT["paths"][path][method.lower()]
    assert str(status) in operation["responses"], (
        f"{method} {path} answered {status}, which the document does not list "
        f"({sorted(operation['responses'])})"
    )
    # The document declares both rate-limit headers on every response (not as required,
    # but "every response carries" them, says its text): they must be there.
    missing = {h.lower() for h in declared_headers(method, path, status)} - {
        h.lower() for h in headers
    }
    assert not missing, f"{method} {path} {status} lacks headers {missing}"
    request = MockRequest(SERVER, method.lower(), path, args=query or {})
    content_type = headers.get("Content-Type", "").split(";")[0] or None
    response = MockResponse(
        data=body, status_code=status, headers=headers, content_type=content_type
    )
    if status == 204:
        assert body == b"", "a 204 carries no body"
        V30ResponseHeadersValidator(_API.spec).validate(request, response)
    else:
        _API.validate_response(request, response)


def request_error(
    method: str, path: str, body: Any = None, query: Optional[dict[str, str]] = None
) -> Optional[Exception]:
    """Why the document refuses this request (openapi-core's error), or None if valid."""
    request = MockRequest(
        SERVER,
        method.lower(),
        path,
        args=query or {},
        data=None
        if body is None
        else bytes(body)
        if isinstance(body, (bytes, bytearray))
        else json.dumps(body).encode(),
        content_type="application/json",
    )
    try:
        _API.validate_request(request)
    except Exception as exc:  # openapi-core raises one of several validation errors
        return exc
    return None


class RestAnswer:
    def __init__(self, status: int, headers: dict[str, str], data: bytes) -> None:
        self.status = status
        self.headers = headers
        self.data = data

    def json(self) -> Any:
        return json.loads(self.data)

    @property
    def remaining(self) -> int:
        return int(self.headers["X-RateLimit-Remaining"])


class RestHttp:
    """Calls the collector's REST paths over loopback; checks every answer's contract."""

    def __init__(self, base_url: str, key: Optional[str] = "test-api-key") -> None:
        self.base_url = base_url
        self.key = key
        self.pool = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(10))

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: Any = "default",
        query: Optional[dict[str, str]] = None,
        raw: Optional[bytes] = None,
    ) -> RestAnswer:
        headers = {"Content-Type": "application/json"}
        key = self.key if key == "default" else key
        if key is not None:
            headers["X-Api-Key"] = key
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        r = self.pool.request(
            method, self.base_url + path, body=data, headers=headers, fields=query
        )
        answer = RestAnswer(r.status, dict(r.headers), r.data)
        check_response(method, path, r.status, answer.headers, r.data, query)
        return answer

    def post(self, path: str, body: Any = None, **kw: Any) -> RestAnswer:
        return self.call("POST", path, body, **kw)

    def get(self, path: str, **kw: Any) -> RestAnswer:
        return self.call("GET", path, **kw)

    def delete(self, path: str, body: Any = None, **kw: Any) -> RestAnswer:
        return self.call("DELETE", path, body, **kw)
