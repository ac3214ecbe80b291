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
from typing import Callable, Dict, List, Optional, Sequence, Union

import orjson

from journy_analytics._events import Emitter
from journy_analytics._messages import now_iso
from journy_analytics._retry import Outcome, RetryPolicy, classify
from journy_analytics._transport import USER_AGENT, HttpClient, Response

__all__ = ["BatchResult", "BatchSender", "RetryState", "build_body"]

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


class RetryState:
    """One batch's progress through the retry policy, carried between attempts."""

    __slots__ = (
        "answered_failures",
        "bytes_sent",
        "count",
        "joined",
        "outage",
        "reason",
        "requests",
        "retries",
        "started",
        "status",
    )

    def __init__(self, joined: bytes, count: int, started: float) -> None:
        self.joined = joined
        self.count = count
        self.started = started
        self.retries = 0
        self.requests = 0
        self.bytes_sent = 0
        self.answered_failures = 0
        self.status: Optional[int] = None
        self.reason = ""
        # The last attempt got no answer at all: the endpoint looks down.
        self.outage = False


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

    def start(self, events: List[bytes]) -> RetryState:
        return RetryState(b",".join(events), len(events), self._clock())

    def closed(self, state: RetryState, why: str) -> BatchResult:
        return BatchResult(
            "closed",
            state.status,
            f"{state.reason}; {why}",
            state.retries - 1 if state.retries else 0,
            state.requests,
            state.bytes_sent,
        )

    def attempt(self, state: RetryState) -> Union[BatchResult, float]:
        """One request. Returns how the batch ended, or the seconds to wait before the next
        attempt: the worker parks the batch meanwhile instead of holding a sender."""
        policy = self._policy
        retries = state.retries
        body = _envelope(state.joined, now_iso(), self._key_json)
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
                    "events": state.count,
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
        state.requests += 1
        state.bytes_sent += len(body)
        status = response.status if response is not None else None
        state.status = status
        if self._emitter.has("http_response"):
            self._emitter.emit(
                "http_response",
                {
                    "status": status,
                    "error": None if error is None else repr(error),
                    "events": state.count,
                    "retry_count": retries,
                    "elapsed": self._clock() - began,
                },
            )
        outcome = classify(status)
        if outcome is Outcome.DELIVERED:
            return BatchResult("delivered", status, "", retries, state.requests, state.bytes_sent)
        reason = state.reason = self._redact(_describe(status, response, error))
        if outcome is Outcome.DROP:
            return self._end(state, "rejected", f"{reason}; the batch was dropped (not retryable)")
        if self._aborted():
            return self._end(state, "closed", f"{reason}; the client closed")
        # Only failures the server answered count against max_retries. "No answer at all"
        # (refused, reset, timed out) is an outage, not this batch's fault: it is retried
        # with backoff until the policy's deadline, so an outage shorter than the deadline
        # loses nothing that fits in the queue.
        state.outage = response is None and _is_outage(error)
        if not state.outage:
            state.answered_failures += 1
            if state.answered_failures > policy.max_retries:
                return self._end(
                    state,
                    "retries_exhausted",
                    f"{reason}; gave up after {retries} retries "
                    f"(max_retries={policy.max_retries} for answered failures)",
                )
        retry_after = response.header("Retry-After") if response is not None else None
        delay = policy.delay(retries + 1, retry_after, self._wall_clock(), self._draw)
        if self._clock() + delay - state.started > policy.deadline:
            return self._end(
                state,
                "retries_exhausted",
                f"{reason}; the next retry would pass the {policy.deadline:g}s retry deadline",
            )
        state.retries = retries + 1
        return delay

    def _end(self, state: RetryState, outcome: str, reason: str) -> BatchResult:
        return BatchResult(
            outcome, state.status, reason, state.retries, state.requests, state.bytes_sent
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
