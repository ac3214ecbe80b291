"""journy.io's OpenAPI document as a validator (openapi-core), for every request a test
sends to a REST server.

The document is loaded from tests/data as it is, with two things added in code (never a
hand-copied schema):

* validators for its custom ``format`` values (``user-id``, ``top-level-domain``, ...),
  which journy.io enforces server-side and a stock validator ignores;
* ``/track``'s ``metadata`` values are an ``anyOf`` instead of a ``oneOf``: with the
  ``datetime`` format known, an ISO datetime string matches two branches, which a strict
  ``oneOf`` refuses (and with it unknown, *every* string does). ``test_document_flaws``
  shows the unpatched document refusing such a request.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any, Dict, Optional
from urllib.parse import parse_qsl

import yaml
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest

DOCUMENT = Path(__file__).resolve().parents[1] / "data" / "journy-io-openapi.yaml"

_DOMAIN = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}\Z")


def _datetime(value: Any) -> bool:
    if not isinstance(value, str):
        return True
    try:
        dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return "T" in value


def _non_empty(value: Any) -> bool:
    return not isinstance(value, str) or bool(value.strip())


def _domain(value: Any) -> bool:
    return not isinstance(value, str) or bool(_DOMAIN.match(value))


FORMATS = {
    "user-id": _non_empty,
    "account-id": _non_empty,
    "non-empty-string": _non_empty,
    "event-name": _non_empty,
    "top-level-domain": _domain,
    "domain": _domain,
    "datetime": _datetime,
}


def load_document(patch_flaws: bool = True) -> Dict[str, Any]:
    document: Dict[str, Any] = yaml.safe_load(DOCUMENT.read_text())
    if patch_flaws:
        track = document["paths"]["/track"]["post"]["requestBody"]["content"]["application/json"]
        values = track["schema"]["properties"]["metadata"]["additionalProperties"]
        values["anyOf"] = values.pop("oneOf")
    return document


def validator(patch_flaws: bool = True) -> OpenAPI:
    from openapi_core import Config

    return OpenAPI.from_dict(
        load_document(patch_flaws), config=Config(extra_format_validators=FORMATS)
    )


def request_problem(
    api: OpenAPI, method: str, path: str, query: str, body: Optional[bytes]
) -> Optional[str]:
    """None if the request conforms to the document, else what is wrong."""
    request = MockRequest(
        "https://api.journy.io",
        method.lower(),
        path,
        args=dict(parse_qsl(query)),
        data=body or None,
        content_type="application/json",
    )
    try:
        api.validate_request(request)
    except Exception as exc:
        cause = exc.__cause__
        return f"{type(exc).__name__}: {exc}" + (f" ({cause})" if cause else "")
    if body:
        json.loads(body)  # the document's bodies are all JSON
    return None


class CheckedTransport:
    """The default transport, with every request checked against the document first
    (``problems`` lists what did not conform); for tests against the real collector."""

    def __init__(self) -> None:
        import threading

        from journy_analytics._core._transport import StdlibHttpClient

        self._inner = StdlibHttpClient()
        self._api = validator()
        self._lock = threading.Lock()
        self.problems: list[str] = []
        self.sent = 0

    def request(
        self, method: str, url: str, body: Optional[bytes], headers: Any, timeout: float
    ) -> Any:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        problem = request_problem(self._api, method, parts.path, parts.query, body)
        if "X-Api-Key" not in headers:
            problem = "no X-Api-Key header (the document requires it in prose)"
        with self._lock:
            self.sent += 1
            if problem:
                self.problems.append(f"{method} {parts.path}: {problem}")
        return self._inner.request(method, url, body, headers, timeout)

    def close(self) -> None:
        self._inner.close()
