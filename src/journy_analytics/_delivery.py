"""Deliver one batch: build the request, send it, retry it by the policy, say how it ended.

This is the whole retry loop and nothing else. Clock, sleep and random draws are
injected, so tests drive it with a scripted transport and a fake clock, no sleeping.
"""

from __future__ import annotations

import base64
import random
import ssl
import time
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import orjson

from journy_analytics._events import Emitter
from journy_analytics._messages import now_iso
from journy_analytics._retry import Outcome, RetryPolicy, classify
from journy_analytics._transport import USER_AGENT, HttpClient, Response

__all__ = ["BatchResult", "BatchSender", "build_body"]

_BATCH_OPEN = b'{"batch":['


def build_body(events: Sequence[bytes], sent_at: str, write_key_json: bytes) -> bytes:
    """Join already-encoded events into the batch envelope, without decoding them."""
    return _envelope(b",".join(events), sent_at, write_key_json)


def _envelope(joined: bytes, sent_at: str, write_key_json: bytes) -> bytes:
    return b"".join(
        (
            _BATCH_OPEN,
            joined,
            b'],"sentAt":"',
            sent_at.encode("ascii"),
            b'","writeKey":',
            write_key_json,
            b"}",
        )
    )


@dataclass
class BatchResult:
    """``outcome`` is delivered, rejected, retries_exhausted or closed."""

    outcome: str
    status: Optional[int]
    reason: str
    retries: int
    requests: int
    bytes_sent: int


class BatchSender:
    def __init__(
        self,
        *,
        url: str,
        write_key: str,
        policy: RetryPolicy,
        timeout: float,
        gzip: bool,
        emitter: Emitter,
        transport: Callable[[], HttpClient],
        wait: Callable[[float], bool],
        aborted: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self._url = url
        self._key_json = orjson.dumps(write_key)
        self._policy = policy
        self._timeout = timeout
        self._gzip = gzip
        self._emitter = emitter
        self._transport = transport
        # wait(seconds) sleeps and returns True when the sleep was cut short by close.
        self._wait = wait
        self._aborted = aborted
        self._clock = clock
        self._wall_clock = wall_clock
        self._draw = draw
        token = base64.b64encode(f"{write_key}:".encode()).decode("ascii")
        # Longest first, so the Basic token is not half-redacted by the key inside it.
        self._secrets = sorted({token, write_key, token.rstrip("=")}, key=len, reverse=True)
        self._headers = {
            "Content-Type": "application/json",
            "Authorization": f"Basic {token}",
            "User-Agent": USER_AGENT,
        }
        if gzip:
            self._headers["Content-Encoding"] = "gzip"

    def _redact(self, text: str) -> str:
        """A server or proxy may echo the key back in its error text; logs must not show it."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "[REDACTED]")
        return text

    def redacted_headers(self, retry_count: int) -> Dict[str, str]:
        headers = {**self._headers, "Authorization": "Basic [REDACTED]"}
        if retry_count:
            headers["X-Retry-Count"] = str(retry_count)
        return headers

    def send(self, events: List[bytes]) -> BatchResult:
        policy = self._policy
        started = self._clock()
        joined = b",".join(events)
        retries = requests = sent = 0
        # Only failures the server answered count against max_retries. "No answer at all"
        # (refused, reset, timed out) is an outage, not this batch's fault: it is retried
        # with backoff until the policy's deadline, so an outage shorter than the deadline
        # loses nothing that fits in the queue.
        answered_failures = 0
        while True:
            body = _envelope(joined, now_iso(), self._key_json)
            if self._gzip:
                packer = zlib.compressobj(6, zlib.DEFLATED, 31)
                body = packer.compress(body) + packer.flush()
            headers = self._headers
            if retries:
                headers = {**headers, "X-Retry-Count": str(retries)}
            if self._emitter.has("http_request"):
                self._emitter.emit(
                    "http_request",
                    {
                        "method": "POST",
                        "url": self._url,
                        "headers": self.redacted_headers(retries),
                        "body_bytes": len(body),
                        "events": len(events),
                        "retry_count": retries,
                    },
                )
            response: Optional[Response] = None
            error: Optional[BaseException] = None
            began = self._clock()
            try:
                response = self._transport().send(self._url, body, headers, self._timeout)
            except Exception as exc:  # any failure to get an answer is retryable
                error = exc
            requests += 1
            sent += len(body)
            status = response.status if response is not None else None
            if self._emitter.has("http_response"):
                self._emitter.emit(
                    "http_response",
                    {
                        "status": status,
                        "error": None if error is None else repr(error),
                        "events": len(events),
                        "retry_count": retries,
                        "elapsed": self._clock() - began,
                    },
                )
            outcome = classify(status)
            if outcome is Outcome.DELIVERED:
                return BatchResult("delivered", status, "", retries, requests, sent)
            reason = self._redact(_describe(status, response, error))
            if outcome is Outcome.DROP:
                return BatchResult(
                    "rejected",
                    status,
                    f"{reason}; the batch was dropped (not retryable)",
                    retries,
                    requests,
                    sent,
                )
            if self._aborted():
                return BatchResult(
                    "closed", status, f"{reason}; the client closed", retries, requests, sent
                )
            counted = response is not None or not _is_outage(error)
            if counted:
                answered_failures += 1
            if counted and answered_failures > policy.max_retries:
                return BatchResult(
                    "retries_exhausted",
                    status,
                    f"{reason}; gave up after {retries} retries "
                    f"(max_retries={policy.max_retries} for answered failures)",
                    retries,
                    requests,
                    sent,
                )
            retries += 1
            retry_after = response.header("Retry-After") if response is not None else None
            delay = policy.delay(retries, retry_after, self._wall_clock(), self._draw)
            if self._clock() + delay - started > policy.deadline:
                return BatchResult(
                    "retries_exhausted",
                    status,
                    f"{reason}; the next retry would pass the {policy.deadline:g}s retry deadline",
                    retries - 1,
                    requests,
                    sent,
                )
            if self._wait(delay):
                return BatchResult(
                    "closed",
                    status,
                    f"{reason}; the client closed while waiting to retry",
                    retries - 1,
                    requests,
                    sent,
                )


def _is_outage(error: Optional[BaseException]) -> bool:
    """No answer because the server is down or unreachable (refused, reset, timed out), as
    opposed to a TLS failure, which is a configuration problem and will not pass by itself."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, ssl.SSLError) or type(error).__name__ in (
            "SSLError",
            "CertificateError",
        ):
            return False
        reason = getattr(error, "reason", None)
        error = (
            reason if isinstance(reason, BaseException) else (error.__cause__ or error.__context__)
        )
    return True


def _describe(
    status: Optional[int], response: Optional[Response], error: Optional[BaseException]
) -> str:
    if response is None:
        kind = type(error).__name__ if error is not None else "no answer"
        return f"no answer from the server ({kind}: {_short(str(error))})"
    text = _short(response.body.decode("utf-8", "replace")) if response.body else ""
    return f"the server answered {status}" + (f": {text}" if text else "")


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def decode_events(items: Sequence[bytes]) -> List[Dict[str, Any]]:
    return [orjson.loads(data) for data in items]
