"""http: request and response framing on bytes, and real HTTP sessions through the proxy, with
requests and raw sockets."""

import hashlib
import json
import logging
import socket
import threading
import time
from types import SimpleNamespace

import h11
import pytest
import requests

from protocol_support import error_on_calls, peeks, read_responses, run
from support import RecordingServer, recv_exactly, wait_until
from vaurien.errors import ProtocolError
from vaurien.protocols.http import HTTP
from vaurien.protocols.http.framing import HeadParser, RequestFramer, ResponseFramer
from vaurien.rules import Rule

# -- framing ----------------------------------------------------------------------------------

REQUESTS = (
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
    b"\r\n"  # a stray blank line between requests
    b"PUT /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n0\r\nX-Trailer: yes\r\n\r\n"
    b"HEAD /x HTTP/1.1\r\nhost: a\r\nExpect: 100-continue\r\n\r\n"
    b"GET /lf HTTP/1.0\nHost: a\n\n"
    b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n"
)

#: Responses and the request each answers.
RESPONSES = [
    (b"GET", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"),
    (b"HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 3000\r\n\r\n"),
    (b"GET", b"HTTP/1.1 204 No Content\r\n\r\n"),
    (b"GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n"),
    (b"POST", b"HTTP/1.1 100 Continue\r\n\r\n"),
    (b"POST", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: 1\r\n\r\n"),
    (b"GET", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    (b"GET", b"HTTP/1.0 200 OK\r\n\r\nuntil the connection ends"),
]  # fmt: skip
RESPONSE_BYTES = b"".join(response for _, response in RESPONSES)


class Asked:
    """What the response framer is told about a request (the request's end, whose ``info``
    has its method)."""

    def __init__(self, method):
        self.method = method
        self.info = self


def asked(methods):
    requests_ = []
    for method in methods:
        if method == b"POST" and requests_ and requests_[-1].method == b"POST":
            requests_.append(requests_[-1])  # the 100 Continue and the final answer
        else:
            requests_.append(Asked(method))
    return requests_


RESPONSE_REQUESTS = asked([method for method, _ in RESPONSES])


def test_requests_end_after_their_bodies():
    passed, ends = run(RequestFramer(HeadParser()), [REQUESTS])
    assert passed == REQUESTS
    offsets = [offset for offset, _ in ends]
    first = len(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert offsets[0] == first
    post = b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
    assert offsets[1] == first + len(post)
    assert REQUESTS[: offsets[2]].endswith(b"X-Trailer: yes\r\n\r\n")
    assert offsets[-1] == len(REQUESTS)
    assert len(ends) == 6
    infos = [event.info for _, event in ends]
    assert [i.method for i in infos] == [b"GET", b"POST", b"PUT", b"HEAD", b"GET", b"CONNECT"]
    assert infos[3].expect_continue and infos[5].upgrade
    assert not infos[4].keep_alive  # HTTP/1.0 without keep-alive


def test_responses_end_where_their_request_says():
    framer = ResponseFramer(HeadParser())
    passed, ends = run(framer, [RESPONSE_BYTES], RESPONSE_REQUESTS)
    assert passed == RESPONSE_BYTES
    offsets, total = [], 0
    for _, response in RESPONSES:
        total += len(response)
        offsets.append(total)
    assert [offset for offset, _ in ends] == offsets  # the last one at the end of the stream
    assert [event.info.status for _, event in ends] == [200, 200, 204, 304, 100, 200, 200, 200]


def test_a_big_chunked_body_is_counted_through_not_kept():
    framer = ResponseFramer(HeadParser())
    framer.begin(Asked(b"GET"))
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert framer.feed(head, 0, len(head))[1].info.status == 200
    chunk = b"10000\r\n" + bytes(0x10000) + b"\r\n"
    for _ in range(300):  # about 20 MB
        assert framer.feed(chunk, 0, len(chunk)) == (len(chunk), None)
        assert not framer._head and framer._chunked._lines.held == 0
    assert framer.feed(b"0\r\n\r\n", 0, 5)[1].info.status == 200


@pytest.mark.parametrize(
    "junk",
    [
        b"\x16\x03\x01\x00\x05hello\r\n\r\n",  # TLS to a plain HTTP port
        b"GET / HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"y" * 70000,
    ],
)
def test_what_is_not_an_http_request_is_a_protocol_error(junk):
    with pytest.raises(ProtocolError):
        run(RequestFramer(HeadParser()), [junk])


def test_equal_heads_are_parsed_once():
    parser = HeadParser()
    raw = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    assert parser.request(raw, 0) is parser.request(bytes(raw), 0)


# -- runs of plain messages framed in one go (skim) --------------------------------------------

PLAIN = (
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
)


def skimmer(**settings):
    """An http protocol as a proxy with the backend ``b:1`` has it, with ``settings``."""
    protocol = HTTP()
    protocol.settings = {"keep_alive": True, "overwrite_host_header": False, **settings}
    protocol.proxy = SimpleNamespace(backend="b:1")
    return protocol


def test_http_is_relayed_from_watcher_callbacks():
    assert HTTP.relay is not None  # it skims requests and answers, and reads the driver's way


@pytest.mark.parametrize(
    "after",
    [
        b"PUT /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
        b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n",
        b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # no Host: the general path ends the session
    ],
)
def test_a_skimmed_run_stops_before_what_the_general_path_must_see(after):
    protocol = skimmer()
    data = bytearray(PLAIN + after + PLAIN)
    newpos, count, first = protocol.skim(None, data, 0, len(data))
    assert (newpos, count, first.info.method) == (len(PLAIN), 2, b"GET")
    assert data == PLAIN + after + PLAIN


def test_a_skimmed_run_stops_before_an_unfinished_request():
    protocol = skimmer()
    get = PLAIN.index(b"POST")
    for cut in range(len(PLAIN)):  # the GET, then the POST's head and body, cut anywhere
        data = bytearray(PLAIN + PLAIN[:cut])
        expected = (len(PLAIN) + get, 3) if cut >= get else (len(PLAIN), 2)
        assert protocol.skim(None, data, 0, len(data))[:2] == expected
    assert skimmer(keep_alive=False).skim(None, bytearray(PLAIN), 0, len(PLAIN))[1] == 0


def test_a_skimmed_run_stops_at_the_most_asked_for():
    protocol = skimmer()
    data = bytearray(PLAIN * 2)  # GET, POST, GET, POST
    get = PLAIN.index(b"POST")
    assert protocol.skim(None, data, 0, len(data), most=1)[:2] == (get, 1)
    assert protocol.skim(None, data, 0, len(data), most=3)[:2] == (len(PLAIN) + get, 3)
    assert protocol.skim(None, data, 0, len(data), most=9)[:2] == (len(data), 4)


def test_a_skimmed_run_rewrites_host_in_place_only_at_the_same_length():
    same = PLAIN.replace(b"Host: a", b"Host: xyz")
    protocol = skimmer(overwrite_host_header=True)
    data = bytearray(same + PLAIN)
    assert protocol.skim(None, data, 0, len(data))[:2] == (len(same), 2)
    assert data == same.replace(b"Host: xyz", b"Host: b:1") + PLAIN  # the rest goes the usual way
    assert protocol.skim(None, same, 0, len(same))[1] == 0  # bytes pushed back: no edit there


def test_a_skimmed_run_stops_before_a_request_a_rule_takes():
    protocol = skimmer()
    data = bytearray(PLAIN * 2)
    seen = []

    def untaken(fields):
        seen.append((fields.get("method"), fields.get("path")))
        return fields.get("method") != "POST"

    assert protocol.skim(None, data, 0, len(data), untaken=untaken)[:2] == (PLAIN.index(b"POST"), 1)
    assert seen == [("GET", "/"), ("POST", "/echo")]


GOT = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"


@pytest.mark.parametrize(
    "after",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
        b"HTTP/1.0 200 OK\r\n\r\nuntil the end",
        b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",  # not HTTP: the general path says so
    ],
)
def test_skimmed_answers_stop_before_what_the_general_path_must_see(after):
    protocol = skimmer()
    data = GOT * 2 + after + GOT
    assert protocol.skim_answers(None, Asked(b"GET"), data, 0, len(data), 9) == (len(GOT) * 2, 2)
    assert protocol.skim_answers(None, Asked(b"GET"), data, 0, len(data), 1) == (len(GOT), 1)


def test_skimmed_answers_stop_before_an_unfinished_answer():
    protocol = skimmer()
    for cut in range(len(GOT)):
        data = GOT * 2 + GOT[:cut]
        assert protocol.skim_answers(None, Asked(b"GET"), data, 0, len(data), 9) == (
            len(GOT) * 2,
            2,
        )
    assert skimmer(keep_alive=False).skim_answers(None, Asked(b"GET"), GOT, 0, len(GOT), 9) == (
        0,
        0,
    )


def test_skimmed_answers_to_head_have_no_body():
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 3000\r\n\r\n"
    protocol = skimmer()
    assert protocol.skim_answers(None, Asked(b"HEAD"), head * 3, 0, len(head) * 3, 9) == (
        len(head) * 3,
        3,
    )
    assert protocol.skim_answers(None, Asked(b"GET"), head * 3, 0, len(head) * 3, 9) == (0, 0)


# -- sessions with a real HTTP server ---------------------------------------------------------


def start(start_proxy, backend, **settings):
    settings.setdefault("timeout", 30)
    return start_proxy(backend, protocol="http", **settings)


def options(**values):
    return {"plugin_options": {("protocol", "http"): values}}


def url(address, path="/"):
    return f"http://{address[0]}:{address[1]}{path}"


def realistic_session(address):
    """What a client sees of a few typical requests on one keep-alive connection."""
    session = requests.Session()
    results = []

    def keep(response):
        results.append(
            (
                response.status_code,
                hashlib.sha256(response.content).hexdigest(),
                response.headers.get("Content-Type"),
                response.headers.get("Content-Length"),
                response.headers.get("Transfer-Encoding"),
            )
        )

    keep(session.get(url(address)))
    keep(session.get(url(address, "/bytes/5000000")))
    keep(session.get(url(address, "/chunked?chunks=50&size=20000")))
    keep(session.post(url(address, "/echo"), data=b"\x00\xff" * 100_000))
    keep(session.put(url(address, "/echo"), data=iter([b"chunked ", b"upload"] * 1000)))
    keep(session.head(url(address, "/bytes/1234")))
    keep(session.get(url(address, "/status/204")))
    keep(session.get(url(address, "/status/304")))
    keep(session.get(url(address, "/status/503")))
    keep(session.get(url(address, "/missing")))
    headers = session.get(url(address, "/headers"), headers={"X-Test": "1"}).json()
    results.append(sorted((k, v) for k, v in headers.items() if k != "Host"))
    session.close()
    return results


def test_a_realistic_session_through_dummy_gets_the_direct_results(http_server, start_proxy):
    proxy = start(start_proxy, http_server.address)
    expected = realistic_session((http_server.host, http_server.port))
    assert realistic_session(proxy.address) == expected
    stats = proxy.call(proxy.proxy.stats)
    assert stats["total_connections"] == 1  # keep-alive all along


def test_overwrite_host_header_puts_the_backend_in_host(http_server, start_proxy):
    proxy = start(start_proxy, http_server.address)
    assert requests.get(url(proxy.address, "/headers")).json()["Host"] == http_server.address
    kept = start(start_proxy, http_server.address, **options(overwrite_host_header=False))
    host = requests.get(url(kept.address, "/headers")).json()["Host"]
    assert host == f"{kept.address[0]}:{kept.address[1]}"


def test_keep_alive_false_makes_each_request_the_last_of_its_connection(http_server, start_proxy):
    proxy = start(start_proxy, http_server.address, **options(keep_alive=False))
    session = requests.Session()
    for _ in range(3):
        response = session.get(url(proxy.address))
        assert response.status_code == 200
    wait_until(lambda: proxy.call(proxy.proxy.stats)["active_connections"] == 0)
    assert proxy.call(proxy.proxy.stats)["total_connections"] == 3


def test_pipelined_requests_get_their_responses_in_order(http_server, start_proxy):
    proxy = start(start_proxy, http_server.address)
    with proxy.connect() as sock:
        sock.sendall(
            b"GET /bytes/10 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /status/204 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /slow?s=0.3 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /bytes/3 HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        statuses = [(s, b) for s, _, b in read_responses(sock, 4)]
    assert statuses == [
        (200, bytes(range(10))),
        (204, b""),
        (200, b"slept 0.3\n"),
        (200, b"\x00\x01\x02"),
    ]


def test_plain_runs_skimmed_then_a_chunked_request_keep_their_order(http_server, start_proxy):
    """Pipelined plain requests (heads known from before) pass as runs, their Host rewritten;
    a chunked request after them, and the run after it, are framed as usual."""
    proxy = start(start_proxy, http_server.address)
    host = b"Host: " + b"x" * len(http_server.address)  # rewritten in place: the same length
    plain = (
        b"GET /headers HTTP/1.1\r\n%s\r\n\r\n"
        b"POST /echo HTTP/1.1\r\n%s\r\nContent-Length: 5\r\n\r\nhello"
        b"GET /bytes/10 HTTP/1.1\r\nHost: a\r\n\r\n" % (host, host)
    )
    chunked = b"PUT /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked += b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    with proxy.connect() as sock:
        for _ in range(3):  # the first round leaves the heads known
            sock.sendall(plain * 3 + chunked + plain)
            responses = read_responses(sock, 13)
            assert all(status == 200 for status, _, _ in responses)
            seen = [
                json.loads(body)["Host"] if body.startswith(b"{") else body
                for _, _, body in responses
            ]
            run_ = [http_server.address, b"hello", bytes(range(10))]
            assert seen == run_ * 3 + [b"abcde"] + run_
    wait_until(lambda: proxy.call(proxy.proxy.stats)["active_connections"] == 0)
    assert proxy.call(proxy.proxy.stats)["behaviors"] == {"dummy": 39}


def test_a_rule_takes_its_request_out_of_a_skimmed_run(http_server, start_proxy):
    proxy = start_proxy(
        http_server.address,
        protocol="http",
        rules=(Rule.parse("teapot: path=/status/418 => 100:error"),),
    )
    plain = b"GET /bytes/3 HTTP/1.1\r\nHost: a\r\n\r\n"
    taken = b"GET /status/418 HTTP/1.1\r\nHost: a\r\n\r\n"
    for _ in range(3):  # the first connection leaves the heads known
        with proxy.connect() as sock:
            sock.sendall(plain * 3 + taken + plain)
            responses = read_responses(sock, 5)
        bodies = [body for _, _, body in responses]
        assert bodies[:3] == [b"\x00\x01\x02"] * 3 and bodies[4] == b"\x00\x01\x02"
        assert responses[3][0] in (500, 501, 502, 503)  # the error keeps the connection
    wait_until(lambda: proxy.call(proxy.proxy.stats)["active_connections"] == 0)
    stats = proxy.call(proxy.proxy.stats)
    assert stats["rules"] == {"teapot": 3}
    assert stats["behaviors"] == {"dummy": 12, "error": 3}


def test_an_error_in_a_pipeline_comes_after_the_answers_before_it(http_server, start_proxy):
    proxy = start(start_proxy, http_server.address)
    error_on_calls(proxy, "2")
    with proxy.connect() as sock:
        sock.sendall(
            b"GET /slow?s=0.5 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /bytes/3 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /bytes/4 HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        responses = read_responses(sock, 3)
    assert responses[0][0] == 200 and responses[0][2] == b"slept 0.5\n"
    status, headers, body = responses[1]
    assert status in (500, 501, 502, 503)
    assert b"connection" not in headers and int(headers[b"content-length"]) == len(body)
    assert responses[2][0] == 200 and responses[2][2] == bytes(range(4))


@pytest.mark.parametrize(
    "request_, behavior_options, why",
    [
        (b"GET /bytes/3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", {}, "client"),
        (b"GET /bytes/3 HTTP/1.0\r\nHost: a\r\n\r\n", {}, "HTTP/1.0"),
        (b"GET /bytes/3 HTTP/1.1\r\nHost: a\r\n\r\n", {"inject": "true"}, "forwarded"),
        (
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
            {},
            "its body not sent yet",
        ),
    ],
)
def test_an_error_closes_the_connection_when_something_is_left_in_flight(
    http_server, start_proxy, request_, behavior_options, why
):
    proxy = start(start_proxy, http_server.address)
    proxy.call(proxy.proxy.set_behavior, "100:error", {"error": behavior_options})
    with proxy.connect() as sock:
        if b"100-continue" not in request_:  # else the client waits for a go
            request_ += b"GET /bytes/4 HTTP/1.1\r\nHost: a\r\n\r\n"
        sock.sendall(request_)
        responses = read_responses(sock, 2)
        assert sock.recv(10) == b"", why
    status, headers, _ = responses[0]
    assert status in (500, 501, 502, 503) and headers[b"connection"] == b"close"
    assert len(responses) == 1


def test_an_error_keeps_an_http_10_keep_alive_connection(http_server, start_proxy):
    proxy = start(start_proxy, http_server.address)
    error_on_calls(proxy, "1")
    with proxy.connect() as sock:
        sock.sendall(b"GET /bytes/3 HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
        sock.sendall(b"GET /bytes/4 HTTP/1.1\r\nHost: a\r\n\r\n")
        responses = read_responses(sock, 2)
    status, headers, _ = responses[0]
    assert status in (500, 501, 502, 503) and headers[b"connection"] == b"keep-alive"
    assert responses[1][0] == 200 and responses[1][2] == bytes(range(4))


@pytest.mark.parametrize("fault", ["error", "delay"])
def test_after_a_fault_the_session_is_relayed_from_callbacks_again(http_server, start_proxy, fault):
    proxy = start(start_proxy, http_server.address)
    proxy.call(proxy.proxy.set_behavior, f"100:{fault}", {"delay": {"sleep": "0.05"}})

    def greenlets():
        return proxy.call(lambda: [s.greenlets() for s in proxy.proxy.sessions])

    with proxy.connect() as sock:
        sock.sendall(b"GET /bytes/3 HTTP/1.1\r\nHost: a\r\n\r\n")
        assert read_responses(sock, 1)[0][0] in (200, 500, 501, 502, 503)
        proxy.call(proxy.proxy.set_behavior, "100:dummy")
        wait_until(lambda: greenlets() == [[]])  # no pump left: both directions relayed
        sock.sendall(b"GET /bytes/4 HTTP/1.1\r\nHost: a\r\n\r\n" * 2)
        assert [body for _, _, body in read_responses(sock, 2)] == [bytes(range(4))] * 2
        assert greenlets() == [[]]


def test_100_continue_reaches_the_client_before_the_body_is_sent(http_server, start_proxy):
    proxy = start(start_proxy, http_server.address)
    with proxy.connect() as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):
            interim += sock.recv(1)
        assert interim.startswith(b"HTTP/1.1 100")
        sock.sendall(b"body")
        response = b""
        while not response.endswith(b"body"):
            response += sock.recv(1000)
        assert response.startswith(b"HTTP/1.1 200")


def test_error_on_100_continue_answers_at_once(start_proxy):
    backend = RecordingServer(echo=False)
    proxy = start(start_proxy, backend.address, behavior="100:error")
    with proxy.connect() as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        response = b""
        while chunk := sock.recv(1000):
            response += chunk
    assert response.split(b" ")[1] in (b"500", b"501", b"502", b"503")
    assert all(not recording.chunks for recording in backend.connections)
    backend.close()


def test_error_answers_a_5xx_and_the_backend_never_sees_the_request(start_proxy):
    backend = RecordingServer(echo=False)
    proxy = start(start_proxy, backend.address, behavior="100:error", seed=1)
    statuses = set()
    for _ in range(12):
        response = requests.post(url(proxy.address, "/echo"), data=b"x" * 100_000)
        assert "Connection" not in response.headers  # the request was read whole: kept
        assert int(response.headers["Content-Length"]) == len(response.content)
        assert b"injected by vaurien" in response.content
        statuses.add(response.status_code)
    assert statuses <= {500, 501, 502, 503} and len(statuses) > 1
    assert all(not recording.chunks for recording in backend.connections)
    backend.close()


def test_error_statuses_follow_the_seed(start_proxy):
    backend = RecordingServer(echo=False)

    def statuses(seed):
        proxy = start(start_proxy, backend.address, behavior="100:error", seed=seed)
        return [requests.get(url(proxy.address)).status_code for _ in range(8)]

    assert statuses(7) == statuses(7)
    backend.close()


def test_delay_holds_each_request(http_server, start_proxy):
    proxy = start(start_proxy, http_server.address)
    session = requests.Session()
    session.get(url(proxy.address))
    proxy.call(proxy.proxy.set_behavior, "100:delay", {"delay": {"sleep": 0.5}})
    started = time.monotonic()
    assert session.get(url(proxy.address)).status_code == 200
    assert 0.45 < time.monotonic() - started < 10
    proxy.call(proxy.proxy.set_behavior, "100:dummy")
    started = time.monotonic()
    session.get(url(proxy.address))
    assert time.monotonic() - started < 0.4


def test_delay_after_answers_at_once_and_holds_the_next_answer(http_server, start_proxy):
    proxy = start(start_proxy, http_server.address)
    session = requests.Session()
    session.get(url(proxy.address))
    proxy.call(proxy.proxy.set_behavior, "100:delay", {"delay": {"sleep": 0.8, "before": False}})
    started = time.monotonic()
    session.get(url(proxy.address))
    assert time.monotonic() - started < 0.5
    started = time.monotonic()
    session.get(url(proxy.address))
    assert 0.3 < time.monotonic() - started < 10


def test_abort_forwards_the_request_and_closes_before_the_response(start_proxy):
    backend = RecordingServer(echo=True)  # its "response" is the request, echoed
    proxy = start(start_proxy, backend.address, behavior="100:abort")
    # The whole request in one write: sent as head then body, the echo of the head (the
    # "answer") could start before the body arrived, and abort closes as its answer starts.
    request = b"POST /work HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\npayload"
    with socket.create_connection(proxy.address, timeout=10) as client:
        client.sendall(request)
        assert client.recv(65536) == b""  # closed before any answer
    wait_until(
        lambda: any(b"payload" in b"".join(d for _, d in r.chunks) for r in backend.connections)
    )
    backend.close()


def test_blackout_closes_and_the_request_never_arrives(start_proxy):
    backend = RecordingServer(echo=True)
    proxy = start(start_proxy, backend.address, behavior="100:blackout")
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(url(proxy.address, "/work"), data=b"payload")
    assert all(not recording.chunks for recording in backend.connections)
    backend.close()


def test_hang_leaves_the_client_waiting(http_server, start_proxy):
    proxy = start(start_proxy, http_server.address, behavior="100:hang")
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(url(proxy.address), timeout=1)
    assert time.monotonic() - started > 0.9


def test_what_is_not_http_ends_the_session_with_one_line(http_server, start_proxy, caplog):
    proxy = start(start_proxy, http_server.address)
    caplog.set_level(logging.WARNING, logger="vaurien")
    with proxy.connect() as sock:
        sock.sendall(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n")
        assert sock.recv(100) == b""
    wait_until(lambda: any("not an HTTP request" in r.getMessage() for r in caplog.records))
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
    assert requests.get(url(proxy.address)).status_code == 200  # still serving


# -- Upgrade: after a 101 the connection is a plain stream -----------------------------------


class UpgradeServer:
    """An HTTP server (h11) that accepts any Upgrade with a 101, then echoes raw bytes."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        with conn:
            http = h11.Connection(h11.SERVER)
            while True:
                event = http.next_event()
                if event is h11.NEED_DATA:
                    http.receive_data(conn.recv(65536))
                    continue
                if isinstance(event, h11.Request):
                    upgrade = dict(event.headers).get(b"upgrade")
                    if upgrade:
                        conn.sendall(
                            http.send(
                                h11.InformationalResponse(
                                    status_code=101,
                                    headers=[("Upgrade", upgrade), ("Connection", "Upgrade")],
                                )
                            )
                        )
                        rest, _ = http.trailing_data
                        if rest:
                            conn.sendall(rest)
                        while data := conn.recv(65536):
                            conn.sendall(data)
                        return
                    body = b"no upgrade"
                    conn.sendall(
                        http.send(
                            h11.Response(
                                status_code=200, headers=[("Content-Length", str(len(body)))]
                            )
                        )
                        + http.send(h11.Data(data=body))
                        + http.send(h11.EndOfMessage())
                    )
                elif isinstance(event, h11.EndOfMessage):
                    http.start_next_cycle()
                else:
                    return

    def close(self):
        self.listener.close()


def test_after_an_upgrade_the_connection_is_a_plain_stream(start_proxy):
    backend = UpgradeServer()
    proxy = start(start_proxy, f"{backend.address[0]}:{backend.address[1]}")
    with proxy.connect() as sock:
        sock.sendall(b"GET /plain HTTP/1.1\r\nHost: a\r\n\r\n")
        plain = b""
        while not plain.endswith(b"no upgrade"):
            plain += sock.recv(100)
        sock.sendall(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        )
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101")
        frames = bytes(range(256)) * 400 + b"GET / HTTP/1.1\r\n\r\n not http at all"
        sock.sendall(frames)
        assert recv_exactly(sock, len(frames)) == frames
    backend.close()


def test_a_to_client_delay_holds_the_response_not_the_request(http_server, start_proxy):
    proxy = start(
        start_proxy,
        http_server.address,
        behavior="100:delay",
        plugin_options={("behavior", "delay"): {"sleep": 0.6, "direction": "to_client"}},
    )
    session = requests.Session()
    for _ in range(2):
        started = time.monotonic()
        assert session.get(url(proxy.address, "/bytes/100")).content == bytes(range(100))
        assert 0.55 < time.monotonic() - started < 1.1  # one delay, not one each way


def test_a_to_client_bandwidth_slows_downloads_and_keeps_them_whole(http_server, start_proxy):
    proxy = start(
        start_proxy,
        http_server.address,
        behavior="100:bandwidth",
        plugin_options={("behavior", "bandwidth"): {"rate": 500, "direction": "to_client"}},
    )
    session = requests.Session()
    started = time.monotonic()
    body = session.get(url(proxy.address, "/bytes/600000")).content
    assert time.monotonic() - started > 0.8  # about 1.2 s at 500 KiB/s
    assert body == http_server.pattern(600000)
    chunked = session.get(url(proxy.address, "/chunked?chunks=20&size=1000")).content
    assert chunked == http_server.pattern(20000)
    assert session.post(url(proxy.address, "/echo"), data=b"up fast").content == b"up fast"


# -- what rules see ------------------------------------------------------------------------------

HTTP_NAMES = ("method", "path", "host", "header.x-test", "header.content-length")


@pytest.mark.parametrize(
    "request_, fields",
    [
        (
            b"POST /api/pay?x=1 HTTP/1.1\r\nHost: shop\r\nX-Test: a\r\nx-test: b\r\n"
            b"Content-Length: 3\r\n\r\nabc",
            ("POST", "/api/pay", "shop", "a, b", "3"),
        ),
        (b"\r\nGET / HTTP/1.0\n\n", ("GET", "/", None, None, None)),
        (b"GET http://h:1/p/q?z HTTP/1.1\r\nHost: h:1\r\n\r\n", ("GET", "/p/q", "h:1", None, None)),
        (b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", ("OPTIONS", "*", "h", None, None)),
    ],
)
def test_rules_see_the_request_line_and_the_headers(request_, fields):
    from vaurien.protocols.http import HTTP

    assert tuple(peeks(HTTP(), None, request_, HTTP_NAMES).values()) == fields
