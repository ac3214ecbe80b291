"""The default transport's HTTP/1.1 exchange against a real loopback socket that answers
with scripted bytes: every way an answer can be framed, what may and may not reuse the
connection, and what a broken answer raises."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from typing import List, Tuple, Union

import pytest

from journy_analytics._core import Response, StdlibHttpClient, explain_failure
from journy_analytics._exceptions import RequestTimeoutError


class ScriptedServer:
    """Accepts connections on 127.0.0.1; answers the n-th request (over all connections)
    with ``answers[n]`` (a tuple: parts sent 0.1 s apart), then closes the connection if
    ``n`` is in ``close_after``."""

    def __init__(
        self, answers: List[Union[bytes, Tuple[bytes, ...]]], close_after: Tuple[int, ...] = ()
    ) -> None:
        self.answers = answers
        self.close_after = close_after
        self.requests: List[bytes] = []
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/batch"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, rest = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(rest) < length:
                    rest += conn.recv(65536)
                buffer = rest[length:]
                with self._lock:
                    n = len(self.requests)
                    self.requests.append(head + b"\r\n\r\n" + rest[:length])
                if n >= len(self.answers):
                    return
                answer = self.answers[n]
                for i, part in enumerate(answer if isinstance(answer, tuple) else (answer,)):
                    if i:
                        time.sleep(0.1)
                    conn.sendall(part)
                if n in self.close_after:
                    return

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def client() -> StdlibHttpClient:
    return StdlibHttpClient()


def _send(
    client: StdlibHttpClient, server: ScriptedServer, body: bytes = b'{"batch":[]}'
) -> Response:
    return client.send(server.url, body, {"Content-Type": "application/json"}, 5.0)


OK = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n"
    b'{"success":true}'
)


def test_content_length_answers_reuse_one_connection(client: StdlibHttpClient) -> None:
    server = ScriptedServer([OK] * 3)
    for _ in range(3):
        response = _send(client, server)
        assert (response.status, response.body) == (200, b'{"success":true}')
        assert response.header("content-type") == "application/json"
    assert server.connections == 1
    request = server.requests[0]
    assert request.startswith(b"POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nContent-Length: 12\r\n" in request and request.endswith(b'{"batch":[]}')


def test_a_chunked_answer_is_read_whole_and_keeps_the_connection(
    client: StdlibHttpClient,
) -> None:
    chunked = (
        b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'7;ext=1\r\n{"error\r\n8\r\n":"bad"}\r\n0\r\nX-Trailer: 1\r\n\r\n'
    )
    server = ScriptedServer([chunked, OK])
    response = _send(client, server)
    assert (response.status, response.body) == (400, b'{"error":"bad"}')
    assert _send(client, server).status == 200
    assert server.connections == 1


def test_an_answer_without_length_is_read_to_the_close(client: StdlibHttpClient) -> None:
    server = ScriptedServer([b"HTTP/1.0 503 Busy\r\n\r\nslow down", OK], close_after=(0,))
    response = _send(client, server)
    assert (response.status, response.body) == (503, b"slow down")
    assert _send(client, server).status == 200
    assert server.connections == 2


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}",
        # A body where none may be (journy.io's document declares one for a 204), sent
        # in the same packet or after a pause: either way the connection is not reused.
        b"HTTP/1.1 204 No Content\r\n\r\n{}",
        (b"HTTP/1.1 204 No Content\r\n\r\n", b"{}"),
        # Bytes beyond the announced length would answer the next request.
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1 200 OK\r\n\r\n",
    ],
)
def test_answers_that_end_the_connection_are_not_reused(
    client: StdlibHttpClient, answer: Union[bytes, Tuple[bytes, ...]]
) -> None:
    server = ScriptedServer([answer, OK])
    assert _send(client, server).status in (200, 204)
    assert _send(client, server).status == 200
    assert server.connections == 2


def test_interim_answers_folded_headers_and_retry_after(client: StdlibHttpClient) -> None:
    answer = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nX-Note: first\r\n second\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    server = ScriptedServer([answer])
    response = _send(client, server)
    assert response.status == 429
    assert response.header("retry-after") == "7"
    assert response.header("x-note") == "first second"


def test_a_body_cut_short_still_gives_the_status(client: StdlibHttpClient) -> None:
    server = ScriptedServer(
        [b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 100\r\n\r\npart"],
        close_after=(0,),
    )
    response = _send(client, server)
    assert (response.status, response.body) == (407, b"part")


@pytest.mark.parametrize(
    "answer, error, meaning",
    [
        (b"", http.client.RemoteDisconnected, "the connection closed"),
        (b"\x15\x03\x01\x00\x02\x02\x46", http.client.BadStatusLine, "not HTTP"),
        (b"HTTP/1.1 2xx OK\r\n\r\n", http.client.BadStatusLine, "not HTTP"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", http.client.IncompleteRead, "the connection closed"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n{}", http.client.HTTPException, "not HTTP"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\n{}",
            http.client.HTTPException,
            "not HTTP",
        ),
    ],
)
def test_broken_answers_raise_what_http_client_raises(
    client: StdlibHttpClient, answer: bytes, error: type, meaning: str
) -> None:
    server = ScriptedServer([answer], close_after=(0,))
    with pytest.raises(error) as raised:
        _send(client, server)
    assert meaning in explain_failure(raised.value).text


@pytest.mark.parametrize("end", [b"\r\n\r\n", b""])
def test_a_header_block_past_the_limit_is_refused(client: StdlibHttpClient, end: bytes) -> None:
    # Ended past the limit, or never ended (the server then waits): refused at once, not
    # read on until the request's timeout.
    server = ScriptedServer([b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000 + end])
    with pytest.raises(http.client.LineTooLong):
        _send(client, server)


def test_a_header_with_a_line_break_is_refused_before_anything_is_sent(
    client: StdlibHttpClient,
) -> None:
    server = ScriptedServer([OK])
    with pytest.raises(ValueError, match="line break"):
        client.send(server.url, b"{}", {"X-Evil": "a\r\nInjected: yes"}, 5.0)
    assert server.requests == []


def test_an_answer_that_never_ends_times_out(client: StdlibHttpClient) -> None:
    # Headers promise 10 bytes; 2 come, then nothing: the deadline ends the request.
    server = ScriptedServer([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}"])
    with pytest.raises(RequestTimeoutError):
        client.send(server.url, b"{}", {}, 0.5)


def test_get_and_delete_send_no_length_and_a_bodiless_post_sends_zero(
    client: StdlibHttpClient,
) -> None:
    server = ScriptedServer([OK] * 3)
    client.request("GET", server.url + "?a=1", None, {}, 5.0)
    client.request("DELETE", server.url, None, {}, 5.0)
    client.request("POST", server.url, None, {}, 5.0)
    get, delete, post = server.requests
    assert get.startswith(b"GET /v1/batch?a=1 HTTP/1.1\r\n")
    assert b"Content-Length" not in get and b"Content-Length" not in delete
    assert b"\r\nContent-Length: 0\r\n" in post
