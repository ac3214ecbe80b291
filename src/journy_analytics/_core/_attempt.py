"""Deliver one batch: build the request, make one attempt, ask the policy what next.

One attempt and nothing else: the sender pool parks a batch between attempts, and
``_retry.RetryPolicy.decide`` makes every retry decision. Clock, wall clock and random
draws are injected, so tests drive it with a scripted transport and a fake clock.
"""

from __future__ import annotations

import base64
import random
import re
import time
import zlib
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Union
from urllib.parse import urljoin, urlsplit

import orjson

from journy_analytics._core._network import NameResolutionError
from journy_analytics._core._retry import Outcome, RetryPolicy
from journy_analytics._core._transport import USER_AGENT, HttpClient, Response, explain_failure
from journy_analytics._handlers import Emitter
from journy_analytics._message import now_iso
from journy_analytics._types import Cause

__all__ = ["Attempted", "BatchResult", "BatchSender", "RetryLater", "RetryState", "Split"]

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
class Split:
    """The server refused the request as too large (413): the batch is to be split in two
    halves, each sent on its own (``bytes_sent``: the size of the refused request)."""

    bytes_sent: int


@dataclass
class Attempted:
    """What one attempt did, for the live counters: it went out (``bytes_sent``), was it a
    retry, did it get an answer it could use, the failure in words, and ``next``: what
    happens to the batch now ("" when this was its last attempt: the batch's settlement
    reports it, once)."""

    bytes_sent: int
    is_retry: bool
    ok: bool
    outage: bool
    failure: str
    next: str = ""


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
        # Named in failure messages: the host, never the URL's credentials if it had any.
        self._server = urlsplit(url).hostname or url
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

    def start(self, events: List[bytes], started: Optional[float] = None) -> RetryState:
        """The state of a new batch; ``started``: a half of a split batch keeps the
        whole batch's start, so the retry deadline still bounds every event."""
        return RetryState(
            b",".join(events), len(events), self._clock() if started is None else started
        )

    def recut(self, state: RetryState, events: List[bytes]) -> RetryState:
        """The state of a parked batch after an erase took some of its events out: the
        same retry progress and deadline, a body without them."""
        recut = RetryState(b",".join(events), len(events), state.started)
        recut.retries = state.retries
        recut.answered_failures = state.answered_failures
        recut.status = state.status
        recut.reason = state.reason
        return recut

    def closed(self, state: RetryState, why: str) -> BatchResult:
        reason = f"{state.reason}; {why}" if state.reason else why
        return BatchResult(Cause.CLOSED, state.status, reason, state.retries)

    def attempt(self, state: RetryState) -> Union[BatchResult, RetryLater, Split]:
        """One request. Returns how the batch ended, how long it waits for the next, or
        that it must be split (413)."""
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
        outage = False
        failure = ""
        if not ok:
            if response is None:
                assert error is not None
                explained = explain_failure(error, self._server)
                outage = explained.outage
                failure = self.redact(explained.text)
            else:
                failure = self.redact(self._describe(response))
        if ok:
            self._observe(Attempted(len(body), retries > 0, True, False, "", ""))
            return BatchResult(None, status, "", retries)
        state.reason = failure
        if not outage:
            state.answered_failures += 1
        if status == 413:
            # Too large for this server: smaller requests may pass. A single event cannot
            # be made smaller, and goes no further.
            if state.count > 1:
                self._observe(
                    Attempted(
                        len(body),
                        retries > 0,
                        False,
                        False,
                        failure,
                        f"the batch of {state.count} events is split in two and sent again",
                    )
                )
                return Split(len(body))
            reason = (
                f"{failure}; the event is too large for this server (a request of "
                f"{len(body)} bytes with this event alone was refused); not retryable"
            )
            self._observe(Attempted(len(body), retries > 0, False, False, failure, ""))
            return BatchResult(Cause.REJECTED, status, reason, retries)
        if self._aborted():
            self._observe(Attempted(len(body), retries > 0, False, outage, failure, ""))
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
            looks_down = outage and (error is None or not _is_lookup(error))
            then = "the batch is kept and retried" + (
                " (the server looks down)" if looks_down else ""
            )
            self._observe(Attempted(len(body), retries > 0, False, outage, failure, then))
            return RetryLater(decision.delay, decision.server_asked, outage)
        # The last attempt: the settle report says what became of the batch, once.
        self._observe(Attempted(len(body), retries > 0, False, outage, failure, ""))
        return BatchResult(decision.cause, status, f"{failure}; {decision.why}", retries)

    def _describe(self, response: Response) -> str:
        status = response.status
        text = _short(response.body.decode("utf-8", "replace")) if response.body else ""
        if response.proxy is not None:
            if status in (401, 407):  # tinyproxy answers a CONNECT with bad credentials 401
                return (
                    f"the proxy {response.proxy} refused the request ({status}: it needs a "
                    "user and password, or refused them): check the user and password of "
                    "the proxy setting (proxy=, or the HTTPS_PROXY / HTTP_PROXY variable)"
                )
            return f"the proxy {response.proxy} refused to connect to {self._server} ({status})" + (
                f": {text}" if text else ""
            )
        if 300 <= status < 400:
            location = response.header("Location")
            if not location:
                return f"the server answered {status} (a redirect) without a Location"
            target = urljoin(self._url, location)
            parts = urlsplit(target)
            return (
                f"the server answered {status}, a redirect to {target}: redirects are not "
                "followed (the write key must not go to another server); if that is the "
                f"right server, set host='{parts.scheme}://{parts.netloc}'"
            )
        return f"the server answered {status}" + (f": {text}" if text else "")


def _is_lookup(error: BaseException) -> bool:
    return isinstance(error, NameResolutionError) or isinstance(
        error.__cause__, NameResolutionError
    )


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
