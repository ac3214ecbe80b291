"""Deliver one batch: build the request, make one attempt, ask the policy what next.

One attempt and nothing else: the sender pool parks a batch between attempts, and
``_retry.RetryPolicy.decide`` makes every retry decision. Clock, wall clock and random
draws are injected, so tests drive it with a scripted transport and a fake clock.
"""

from __future__ import annotations

import base64
import random
import re
import ssl
import time
import zlib
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Union

import orjson

from journy_analytics._events import Emitter
from journy_analytics._messages import now_iso
from journy_analytics._retry import Outcome, RetryPolicy
from journy_analytics._transport import USER_AGENT, HttpClient, Response
from journy_analytics._types import Cause

__all__ = ["Attempted", "BatchResult", "BatchSender", "RetryLater", "RetryState"]

_BATCH_OPEN = b'{"batch":['


@dataclass
class BatchResult:
    """How a batch ended: ``cause`` is None when delivered, else a :class:`Cause`."""

    cause: Optional[Cause]
    status: Optional[int]
    reason: str
    retries: int

    @property
    def delivered(self) -> bool:
        return self.cause is None

    @property
    def outcome(self) -> str:
        """``delivered``, or the cause's name."""
        return "delivered" if self.cause is None else self.cause.value


@dataclass
class RetryLater:
    """The batch waits ``delay`` seconds. ``server_asked``: a Retry-After said so, and new
    batches wait as well; ``outage``: no answer at all, new batches wait for a sign of life."""

    delay: float
    server_asked: bool
    outage: bool


@dataclass
class Attempted:
    """What one attempt did, for the live counters: it went out (``bytes_sent``), was it a
    retry, did it get an answer it could use, and the failure in words."""

    bytes_sent: int
    is_retry: bool
    ok: bool
    outage: bool
    failure: str


class RetryState:
    """One batch's progress through the retry policy, carried between attempts."""

    __slots__ = ("answered_failures", "count", "joined", "reason", "retries", "started", "status")

    def __init__(self, joined: bytes, count: int, started: float) -> None:
        self.joined = joined
        self.count = count
        self.started = started
        self.retries = 0
        self.answered_failures = 0
        self.status: Optional[int] = None
        self.reason = ""


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
        observe: Callable[[Attempted], None] = lambda attempted: None,
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
        self._observe = observe
        self._clock = clock
        self._wall_clock = wall_clock
        self._draw = draw
        token = base64.b64encode(f"{write_key}:".encode()).decode("ascii")
        # Whole tokens only: a short key must not cut words that merely contain it.
        secrets = sorted({token, token.rstrip("="), write_key}, key=len, reverse=True)
        self._secret = re.compile(
            r"(?<![A-Za-z0-9_\-+/=])(?:"
            + "|".join(re.escape(s) for s in secrets)
            + r")(?![A-Za-z0-9_\-+/=])"
        )
        self._headers = {
            "Content-Type": "application/json",
            "Authorization": f"Basic {token}",
            "User-Agent": USER_AGENT,
        }
        if gzip:
            self._headers["Content-Encoding"] = "gzip"

    def redact(self, text: str) -> str:
        """A server or proxy may echo the key back in its error text; logs must not show it."""
        return self._secret.sub("[REDACTED]", text)

    def redacted_headers(self, retry_count: int) -> Dict[str, str]:
        headers = {**self._headers, "Authorization": "Basic [REDACTED]"}
        if retry_count:
            headers["X-Retry-Count"] = str(retry_count)
        return headers

    def start(self, events: List[bytes]) -> RetryState:
        return RetryState(b",".join(events), len(events), self._clock())

    def closed(self, state: RetryState, why: str) -> BatchResult:
        reason = f"{state.reason}; {why}" if state.reason else why
        return BatchResult(Cause.CLOSED, state.status, reason, state.retries)

    def attempt(self, state: RetryState) -> Union[BatchResult, RetryLater]:
        """One request. Returns how the batch ended, or how long it waits for the next."""
        retries = state.retries
        body = b"".join(
            (
                _BATCH_OPEN,
                state.joined,
                b'],"sentAt":"',
                now_iso().encode("ascii"),
                b'","writeKey":',
                self._key_json,
                b"}",
            )
        )
        if self._gzip:
            packer = zlib.compressobj(6, zlib.DEFLATED, 31)
            body = packer.compress(body) + packer.flush()
        headers = self._headers
        if retries:
            headers = {**headers, "X-Retry-Count": str(retries)}
        emitter = self._emitter
        if emitter.has("http_request"):
            emitter.emit(
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
        status = response.status if response is not None else None
        state.status = status
        if emitter.has("http_response"):
            emitter.emit(
                "http_response",
                {
                    "status": status,
                    "error": None if error is None else self.redact(repr(error)),
                    "events": state.count,
                    "retry_count": retries,
                    "elapsed": self._clock() - began,
                },
            )
        policy = self._policy
        ok = policy.classify(status) is Outcome.DELIVERED
        outage = response is None and _is_outage(error)
        failure = "" if ok else self.redact(_describe(status, response, error))
        self._observe(Attempted(len(body), retries > 0, ok, outage, failure))
        if ok:
            return BatchResult(None, status, "", retries)
        state.reason = failure
        if not outage:
            state.answered_failures += 1
        if self._aborted():
            return BatchResult(Cause.CLOSED, status, f"{failure}; the client closed", retries)
        decision = policy.decide(
            status=status,
            outage=outage,
            answered_failures=state.answered_failures,
            retries=retries,
            elapsed=self._clock() - state.started,
            retry_after=response.header("Retry-After") if response is not None else None,
            wall_now=self._wall_clock(),
            draw=self._draw,
        )
        if decision.outcome is Outcome.RETRY:
            state.retries = retries + 1
            return RetryLater(decision.delay, decision.server_asked, outage)
        return BatchResult(decision.cause, status, f"{failure}; {decision.why}", retries)


def _is_outage(error: Optional[BaseException]) -> bool:
    """No answer because the server is down or unreachable (refused, reset, timed out), as
    opposed to a TLS failure, which is a configuration problem and will not pass by itself."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, ssl.SSLError) or type(error).__name__ in (
            "SSLError",
            "CertificateError",
            "SSLCertVerificationError",
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
