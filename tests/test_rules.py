"""Rules: parsing and checking them, matching fields, and real clients of each protocol whose
matching requests alone misbehave."""

from __future__ import annotations

import smtplib
import socket
import threading
import time

import psycopg
import pymysql
import pytest
import redis
import requests

from control import ControlledProxy
from support import recv_exactly, wait_until
from vaurien import cli
from vaurien.errors import SpecError
from vaurien.mix import BehaviorMix
from vaurien.rules import Field, Rule, compile_rule, number_rules, statement_type

HTTP_FIELDS = {
    "method": Field("", ignore_case=True),
    "path": Field(""),
    "header.NAME": Field(""),
}


def matcher(text, fields=None):
    return compile_rule(Rule.parse(text, "r"), HTTP_FIELDS if fields is None else fields, "http")


# -- parsing and matching ----------------------------------------------------------------------


def test_a_rule_reads_its_match_its_mix_and_its_options():
    rule = Rule.parse(
        "payments: method=POST path=/api/payments/* => 50:error,10:delay delay.sleep=2"
    )
    assert rule.name == "payments"
    assert rule.match == "method=POST path=/api/payments/*"
    assert [(term.field, term.pattern) for term in rule.terms] == [
        ("method", "POST"),
        ("path", "/api/payments/*"),
    ]
    assert rule.behavior == BehaviorMix.parse("50:error,10:delay")
    assert rule.options == {"delay": {"sleep": "2"}}
    assert (
        str(rule)
        == "payments: method=POST path=/api/payments/* => 50:error,10:delay,40:dummy delay.sleep=2"
    )


def test_unnamed_rules_are_named_by_their_place():
    rules = number_rules([Rule.parse("path=/a => error"), Rule.parse("x: path=/b => error")])
    assert [rule.name for rule in rules] == ["rule1", "x"]
    with pytest.raises(SpecError, match="rule 'x': two rules have this name"):
        number_rules([Rule.parse("x: path=/a => error"), Rule.parse("x: path=/b => error")])


@pytest.mark.parametrize(
    "text, fields, holds",
    [
        ("method=POST", {"method": "POST"}, True),
        ("method=post", {"method": "POST"}, True),  # a method compares without case
        ("METHOD=PUT,POST", {"method": "POST"}, True),  # field names too
        ("method=PUT,PATCH", {"method": "POST"}, False),
        ("path=/api/*", {"path": "/api/payments/1"}, True),
        ("path=/API/*", {"path": "/api/payments/1"}, False),  # a path compares as it is
        ("path=/a?c", {"path": "/abc"}, True),
        ("path=~^/v[12]/", {"path": "/v2/x"}, True),
        ("path=~^/v[12]/", {"path": "/x/v2/"}, False),
        ("path=~pay", {"path": "/api/payments"}, True),  # searched anywhere
        ("path=~^/v\\d+/", {"path": "/v12/x"}, True),  # a backslash is kept as written
        ("path=~^/v\\d+/", {"path": "/vd/x"}, False),
        ('"path=~^/a b\\."', {"path": "/a b."}, True),
        ("method=POST path=/a", {"method": "POST", "path": "/b"}, False),  # all must hold
        ("header.x-test=yes", {"header.x-test": "yes"}, True),
        ("header.x-test=yes", {}, False),  # a field the request lacks never matches
        ("'path=/with space'", {"path": "/with space"}, True),
    ],
)
def test_matching(text, fields, holds):
    assert matcher(f"{text} => error").holds(fields) is holds


def test_unknown_fields_match_only_rules_on_the_client():
    assert not matcher("path=/a => error").holds(None)
    client_only = matcher("client=127.0.0.0/8 => error")
    assert client_only.holds(None)
    assert client_only.client("127.0.0.2") and not client_only.client("10.0.0.1")
    assert client_only.client("::ffff:127.0.0.1")  # a dual-stack socket's IPv4 client
    assert matcher("client=::1,10.1.2.3 => error").client("::1")
    assert matcher("client=~^10\\. => error").client("10.9.9.9")


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "path=/a 50:error",
            "rule 'path=/a 50:error': missing '=>' between the match and the behavior spec",
        ),
        ("path=/a =>", "rule 'path=/a =>': missing the behavior spec after '=>'"),
        ("=> 50:error", "rule '': empty match: expected FIELD=PATTERN terms"),
        ("x: path => 50:error", "rule 'x': 'path': expected FIELD=PATTERN"),
        ("x: path= => 50:error", "rule 'x': path: empty pattern"),
        (
            "x: path=~( => 50:error",
            "rule 'x': path: bad regular expression '(': missing ), unterminated subpattern at "
            "position 0",
        ),
        ("x: method=GET,,POST => 50:error", "rule 'x': method: empty alternative in 'GET,,POST'"),
        (
            "x: client=10.0.0.0/33 => 50:error",
            "rule 'x': client: '10.0.0.0/33' is not an IP address or network",
        ),
        ("x: path=/a => 150:error", "rule 'x': '150:error': percent 150 is over 100"),
        (
            "x: path=/a => error delay-sleep=2",
            "rule 'x': 'delay-sleep': a rule's option is written BEHAVIOR.OPTION=VALUE",
        ),
        ("x: path='/a => error", "rule 'x': No closing quotation in the match \"path='/a\""),
        (
            "bad name!: path=/a => error",
            "rule 'bad name!: path=/a': 'bad': expected FIELD=PATTERN",
        ),
    ],
)
def test_each_parse_error_names_its_rule(text, message):
    with pytest.raises(SpecError) as caught:
        Rule.parse(text)
    assert str(caught.value) == message


def test_a_field_the_protocol_does_not_declare_is_refused_by_name():
    with pytest.raises(SpecError) as caught:
        matcher("methd=POST => error")
    assert str(caught.value) == (
        "rule 'r': unknown field 'methd' for the http protocol "
        "(known: client, header.NAME, method, path)"
    )
    with pytest.raises(SpecError, match="unknown field 'header'"):
        matcher("header=x => error")


@pytest.mark.parametrize(
    "sql, statement",
    [
        ("INSERT INTO t VALUES (1)", "INSERT"),
        ("  -- a comment\n/* another */ (select 1)", "SELECT"),
        ("# mysql's comment\nupdate t set a = 1", "UPDATE"),
        ("", ""),
    ],
)
def test_statement_type_is_the_first_keyword(sql, statement):
    assert statement_type(sql) == statement


# -- the command line and the config file ---------------------------------------------------------


def run_cli(argv, capsys):
    code = cli.main(argv)
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--protocol", "http", "--rule", "pay: methd=POST => 50:error"],
            "vaurien: error: rule 'pay': unknown field 'methd' for the http protocol "
            "(known: client, header.NAME, host, method, path)",
        ),
        (
            ["--rule", "pay: path=/a => 50:error"],
            "vaurien: error: rule 'pay': unknown field 'path' for the tcp protocol (known: client)",
        ),
        (
            ["--protocol", "redis", "--rule", "key=~[ => 50:error"],
            "vaurien: error: argument --rule: rule 'key=~[': key: bad regular "
            "expression '[': unterminated character set at position 0",
        ),
        (
            ["--rule", "client=1.2.3.4 => 50:dlay"],
            "vaurien: error: rule 'rule1': unknown behavior 'dlay'",
        ),
        (
            ["--rule", "client=1.2.3.4 => 50:delay delay.slep=1"],
            "vaurien: error: rule 'rule1': delay.slep: unknown option (known: before, direction, ",
        ),
        (
            ["--rule", "client=1.2.3.4 => 50:delay delay.sleep=soon"],
            "vaurien: error: rule 'rule1': delay.sleep: expected float, got 'soon'",
        ),
        (
            ["--rule", "client=1.2.3.4 => 50:delay error.warmup=1"],
            "vaurien: error: rule 'rule1': options for 'error', which is not in the mix "
            "(delay, dummy)",
        ),
        (
            ["--scenario", "10s 100:dummy; 10x 100:error"],
            "vaurien: error: argument --scenario: scenario step 2 '10x 100:error': unknown unit "
            "'x' in '10x' (expected ms, s, m, req, conn, KiB or MiB)",
        ),
        (
            ["--scenario", "10s 100:dummy; 10s 100:dlay"],
            "vaurien: error: scenario step 2 '10s 100:dlay': unknown behavior 'dlay'",
        ),
    ],
)
def test_a_bad_rule_or_scenario_stops_the_proxy_with_one_line(argv, message, capsys):
    code, error = run_cli(["--backend", "127.0.0.1:9", "--proxy", "127.0.0.1:0", *argv], capsys)
    assert code == 2
    assert error.startswith(message), error
    assert "\n" not in error


def test_rule_sections_come_in_file_order_and_the_command_line_replaces_them(tmp_path):
    ini = tmp_path / "rules.ini"
    ini.write_text(
        "[vaurien]\nbackend = 127.0.0.1:9\nprotocol = http\n"
        "scenario = 5req 100:dummy; 100:error\n\n"
        "[rule:payments]\nmatch = method=POST path=/api/payments/*\nbehavior = 50:error\n"
        "error.warmup = 3\n\n"
        "[rule:slow]\nmatch = path=/slow/*\nbehavior = delay\ndelay.sleep = 2.5\n"
    )
    config, _ = cli.parse_config(["--config", str(ini)])
    assert [rule.name for rule in config.rules] == ["payments", "slow"]
    assert config.rules[0].options == {"error": {"warmup": 3}}
    assert config.rules[1].options == {"delay": {"sleep": 2.5}}
    assert str(config.scenario) == "5req 100:dummy; 100:error"
    config, _ = cli.parse_config(["--config", str(ini), "--rule", "path=/other => error"])
    assert [(rule.name, rule.match) for rule in config.rules] == [("rule1", "path=/other")]


@pytest.mark.parametrize(
    "section, message",
    [
        ("[rule:x]\nbehavior = error\n", "[rule:x] has no 'match' key"),
        ("[rule:x]\nmatch = path=/a\n", "[rule:x] has no 'behavior' key"),
        (
            "[rule:x]\nmatch = path=/a\nbehavior = error\nsleep = 1\n",
            "[rule:x] unknown key 'sleep'",
        ),
        ("[rule:x]\nmatch = pth=/a\nbehavior = error\n", "rule 'x': unknown field 'pth'"),
    ],
)
def test_a_bad_rule_section_is_named(tmp_path, capsys, section, message):
    ini = tmp_path / "bad.ini"
    ini.write_text(f"[vaurien]\nbackend = 127.0.0.1:9\nprotocol = http\n\n{section}")
    code, error = run_cli(["--config", str(ini)], capsys)
    assert code == 2
    assert message in error and "\n" not in error


# -- every protocol, with its real clients ------------------------------------------------------


def http_url(proxy, path="/"):
    return f"http://127.0.0.1:{proxy.address[1]}{path}"


def test_http_only_the_matched_requests_fail(http_server, start_proxy):
    proxy = start_proxy(
        http_server.address,
        protocol="http",
        rules=(Rule.parse("pay: method=POST path=/echo => 100:error"),),
    )
    failed = {"GET /": 0, "POST /echo": 0, "GET /status/200": 0}
    with requests.Session() as session:
        for i in range(500):
            if i % 5 == 0:
                response = session.post(http_url(proxy, "/echo"), data=b"pay", timeout=10)
                key = "POST /echo"
            elif i % 2:
                response = session.get(http_url(proxy), timeout=10)
                key = "GET /"
            else:
                response = session.get(http_url(proxy, "/status/200"), timeout=10)
                key = "GET /status/200"
            if response.status_code >= 500:
                failed[key] += 1
            else:
                assert response.status_code == 200
    assert failed == {"GET /": 0, "POST /echo": 100, "GET /status/200": 0}
    stats = proxy.call(proxy.proxy.stats)
    assert stats["rules"] == {"pay": 100}
    assert stats["behaviors"] == {"dummy": 400, "error": 100}


def test_http_rules_see_headers_and_heads_cut_anywhere(http_server, start_proxy):
    proxy = start_proxy(
        http_server.address,
        protocol="http",
        rules=(Rule.parse("header.x-chaos=on host=example.* => 100:error"),),
    )
    head = b"GET / HTTP/1.1\r\nHost: EXAMPLE.org\r\nX-Chaos: on\r\n\r\n"
    plain = b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n"
    with proxy.connect() as client:
        client.sendall(plain + head[:7])  # the second request's head comes in pieces
        assert recv_exactly(client, 15) == b"HTTP/1.1 200 OK"
        client.sendall(head[7:30])
        client.sendall(head[30:] + plain)
        rest = b""
        while rest.count(b"test backend.\n") < 2:
            more = client.recv(65536)
            assert more, rest  # the error keeps the connection: the next request is answered
            rest += more
    assert b"HTTP/1.1 50" in rest and rest.count(b"HTTP/1.1 200 OK") == 1
    assert proxy.call(proxy.proxy.stats)["rules"] == {"rule1": 1}


def redis_client(proxy):
    host, port = proxy.address
    return redis.Redis(host, port, protocol=2, socket_timeout=10, retry=None)


def timed(call):
    started = time.monotonic()
    call()
    return time.monotonic() - started


def test_redis_only_session_gets_are_slow(redis_server, start_proxy):
    proxy = start_proxy(
        redis_server.address,
        protocol="redis",
        rules=(Rule.parse("command=get key=session:* => 100:delay delay.sleep=0.4"),),
    )
    client = redis_client(proxy)
    client.set("session:1", "alice")
    client.set("user:1", "bob")
    assert timed(lambda: client.get("user:1")) < 0.3
    assert timed(lambda: client.set("session:2", "carol")) < 0.3
    assert timed(lambda: client.mget("session:1", "user:1")) < 0.3
    with client.pipeline(transaction=False) as pipe:  # pipelined: one slow command in three
        pipe.get("user:1").get("session:1").incr("counter")
        assert timed(pipe.execute) >= 0.4
    assert timed(lambda: client.get("session:1")) >= 0.4
    assert client.get("session:1") == b"alice"
    assert proxy.call(proxy.proxy.stats)["rules"] == {"rule1": 3}


def test_memcache_rules_see_the_command_and_the_first_key(memcached_server, start_proxy):
    proxy = start_proxy(
        memcached_server.address,
        protocol="memcache",
        rules=(Rule.parse("command=set key=cart:* => 100:error"),),
    )
    with proxy.connect() as client:
        client.sendall(b"set cart:1 0 0 2\r\nok\r\nset user:1 0 0 2\r\nok\r\nget cart:1 user:1\r\n")
        answer = recv_exactly(client, 70)
    assert answer.startswith(b"SERVER_ERROR error injected by vaurien\r\nSTORED\r\n")
    assert b"VALUE user:1" in answer and b"cart:1" not in answer.split(b"STORED")[1]


def test_mysql_only_inserts_fail(mariadb_server, start_proxy):
    proxy = start_proxy(
        mariadb_server.address,
        protocol="mysql",
        timeout=30,
        rules=(Rule.parse("writes: statement=INSERT => 100:error"),),
    )
    kwargs = mariadb_server.connect_kwargs()
    kwargs["host"], kwargs["port"] = proxy.address
    connection = pymysql.connect(**kwargs, autocommit=True, read_timeout=10)
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS ruled (k VARCHAR(40) PRIMARY KEY)")
        cursor.execute("DELETE FROM ruled")
        with pytest.raises(pymysql.err.OperationalError) as error:
            cursor.execute("INSERT INTO ruled VALUES ('a')")
        assert error.value.args == (1105, "Error injected by vaurien")
        cursor.execute("REPLACE INTO ruled VALUES ('b')")
        assert cursor.execute("UPDATE ruled SET k = 'c' WHERE k = 'b'") == 1
        cursor.execute("SELECT k FROM ruled")
        assert cursor.fetchall() == (("c",),)
    connection.close()
    assert proxy.call(proxy.proxy.stats)["rules"] == {"writes": 1}


def test_postgres_rules_see_queries_and_prepared_statements(postgres_server, start_proxy):
    proxy = start_proxy(
        postgres_server.address,
        protocol="postgres",
        timeout=30,
        rules=(Rule.parse("statement=insert => 100:error"),),
    )
    host, port = proxy.address
    with psycopg.connect(postgres_server.conninfo(host=host, port=port), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS ruled (k text)")
        for attempt in range(3):  # the third time, psycopg binds a prepared statement
            with pytest.raises(psycopg.errors.AdminShutdown):
                conn.execute("INSERT INTO ruled VALUES (%s)", ("x",), prepare=attempt > 0)
        assert conn.execute("SELECT count(*) FROM ruled").fetchone() == (0,)
    assert proxy.call(proxy.proxy.stats)["rules"] == {"rule1": 3}


def test_postgres_rules_see_the_sql_and_the_statement_type(postgres_server, start_proxy):
    proxy = start_proxy(
        postgres_server.address,
        protocol="postgres",
        timeout=30,
        rules=(Rule.parse("orders: statement=delete sql=~\\borders\\b => 100:error"),),
    )
    host, port = proxy.address
    with psycopg.connect(postgres_server.conninfo(host=host, port=port), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS orders (id int)")
        conn.execute("CREATE TABLE IF NOT EXISTS order_lines (id int)")
        conn.execute("TRUNCATE orders")
        conn.execute("INSERT INTO orders VALUES (1), (2)")
        for prepare in (False, True):  # a simple Query, then Parse/Bind/Execute
            with pytest.raises(psycopg.errors.AdminShutdown):
                conn.execute("DELETE FROM orders WHERE id = %s", (1,), prepare=prepare)
        with pytest.raises(psycopg.errors.AdminShutdown):  # past a comment, in any case
            conn.execute("/* purge */ delete from orders")
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (2,)
        assert conn.execute("DELETE FROM order_lines").rowcount == 0  # another table
        assert conn.execute("SELECT id FROM orders ORDER BY id").fetchall() == [(1,), (2,)]
    assert proxy.call(proxy.proxy.stats)["rules"] == {"orders": 3}


def test_smtp_rules_see_the_verb(smtp_server, start_proxy):
    proxy = start_proxy(
        smtp_server.address,
        protocol="smtp",
        rules=(Rule.parse("command=RCPT => 100:error"),),
    )
    with smtplib.SMTP(*proxy.address, timeout=10) as client:
        client.ehlo()
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("a@example.org", ["b@example.org"], "Subject: x\r\n\r\nbody\r\n")
        assert client.noop()[0] == 250


def test_tcp_a_client_rule_cuts_one_client_off(echo_backend, start_proxy):
    proxy = start_proxy(
        echo_backend.address, rules=(Rule.parse("cut: client=127.0.0.2 => 100:reset"),)
    )
    host, port = proxy.address
    for source, served in (("127.0.0.1", True), ("127.0.0.2", False), ("127.0.0.3", True)):
        with socket.create_connection((host, port), timeout=10, source_address=(source, 0)) as c:
            c.sendall(b"hello")
            try:
                assert (recv_exactly(c, 5) == b"hello") is served
            except ConnectionResetError:
                assert not served
    assert proxy.call(proxy.proxy.stats)["rules"] == {"cut": 1}


@pytest.mark.parametrize("scope", ["event", "connection"])
def test_tcp_a_client_rule_spares_one_client_and_its_bytes_stay_in_the_inline_relay(
    echo_backend, start_proxy, scope
):
    proxy = start_proxy(
        echo_backend.address,
        behavior="100:delay",
        scope=scope,
        plugin_options={("behavior", "delay"): {"sleep": 0.3}},
        rules=(Rule.parse("calm: client=127.0.0.1 => 100:dummy"),),
    )
    host, port = proxy.address

    def pumps():
        return [len(session.greenlets()) for session in proxy.proxy.sessions]

    with socket.create_connection((host, port), timeout=10, source_address=("127.0.0.1", 0)) as c:
        started = time.monotonic()
        for _ in range(20):
            c.sendall(b"hello")
            assert recv_exactly(c, 5) == b"hello"
        assert time.monotonic() - started < 0.3 * 2
        # The rule's dummy changes nothing: the session is relayed from the watchers'
        # callbacks, without a pump greenlet.
        assert proxy.call(pumps) == [0]
    with socket.create_connection((host, port), timeout=10, source_address=("127.0.0.2", 0)) as c:
        c.sendall(b"hello")
        assert timed(lambda: recv_exactly(c, 5)) >= 0.3 * 2  # delayed each way
    stats = proxy.call(proxy.proxy.stats)
    assert stats["rules"]["calm"] >= 1 and stats["behaviors"]["delay"] >= 1


def test_grpc_rules_see_the_method(start_proxy):
    grpc = pytest.importorskip("grpc")
    from grpc_support import SERVICE, Calls, GrpcBackend

    grpc_backend = GrpcBackend()
    proxy = start_proxy(
        grpc_backend.address,
        protocol="http2",
        rules=(Rule.parse(f"path=/{SERVICE}/Count => 100:error"),),
    )
    host, port = proxy.address
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        calls = Calls(channel)
        assert calls.reverse(b"abc", timeout=10) == b"cba"
        with pytest.raises(grpc.RpcError) as caught:
            list(calls.count(b"2,0", timeout=10))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    grpc_backend.close()
    assert proxy.call(proxy.proxy.stats)["rules"] == {"rule1": 1}


# -- live control ------------------------------------------------------------------------------


@pytest.fixture
def controlled(http_server, start_proxy):
    proxy = ControlledProxy(start_proxy(http_server.address, protocol="http"))
    yield proxy
    proxy.stop()


def test_put_get_and_delete_rules(controlled):
    client = controlled.client()
    assert client.get_rules() == []
    client.set_rules(
        [
            "pay: method=POST => 100:error",
            {"match": "path=/slow", "behavior": "100:delay", "options": {"delay": {"sleep": 2}}},
        ]
    )
    rules = client.get_rules()
    assert [(r["name"], r["match"], r["behavior"]) for r in rules] == [
        ("pay", "method=POST", "error"),
        ("rule2", "path=/slow", "delay"),
    ]
    assert rules[1]["options"]["delay"]["sleep"] == 2.0
    assert requests.post(http_url(controlled.thread, "/echo"), timeout=10).status_code >= 500
    assert requests.get(http_url(controlled.thread), timeout=10).status_code == 200
    client.clear_rules()
    assert client.get_rules() == []
    assert requests.post(http_url(controlled.thread, "/echo"), timeout=10).status_code == 200


def test_with_rules_puts_back_the_rules_there_were(controlled):
    client = controlled.client()
    client.set_rules(["keep: path=/keep => 100:delay delay.sleep=0.5"])
    with client.with_rules(["method=POST => error"]):
        assert [rule["name"] for rule in client.get_rules()] == ["rule1"]
    (rule,) = client.get_rules()
    assert (rule["name"], rule["options"]["delay"]["sleep"]) == ("keep", 0.5)


@pytest.mark.parametrize(
    "body, message",
    [
        (
            {"rules": ["x: methd=POST => error"]},
            "rule 'x': unknown field 'methd' for the http protocol",
        ),
        (
            {"rules": [{"match": "path=/a", "behavior": "50:nope"}]},
            "rule 'rule1': unknown behavior 'nope'",
        ),
        (
            {"rules": [{"match": "path=/a", "behavior": "50:error", "sleep": 1}]},
            "unknown field 'sleep' in a rule",
        ),
        ({"rules": [{"behavior": "50:error"}]}, "a rule needs 'match'"),
        ({"rules": "path=/a => error"}, '"rules" must be a list of rules'),
        ({"rules": [], "more": 1}, "unknown field 'more'"),
        (
            {"rules": ["a: path=/a => error", "a: path=/b => error"]},
            "rule 'a': two rules have this name",
        ),
        (
            {
                "rules": [
                    {"match": "path=/a", "behavior": "error", "options": {"error": {"warmup": -1}}}
                ]
            },
            "rule 'rule1': error.warmup: expected a whole number of at least 0",
        ),
        (
            {"rules": [{"match": "path=/a", "behavior": "pkg.mod.Class"}]},
            "rule 'rule1': unknown behavior 'pkg.mod.Class'",
        ),
    ],
)
def test_a_refused_rule_set_says_why_and_changes_nothing(controlled, body, message):
    controlled.client().set_rules(["kept: path=/kept => error"])
    response = requests.put(controlled.url + "/rules", json=body, timeout=10)
    assert response.status_code == 400
    assert response.json()["errors"][0]["description"].startswith(message)
    assert [rule["name"] for rule in controlled.client().get_rules()] == ["kept"]


def test_a_rule_set_put_under_traffic_is_never_half_applied(controlled):
    # In both sets / passes: in the first a dummy rule comes before the error rule, in the
    # second no rule matches /. Only a blend (the second's first rule with the first's second
    # rule) fails it.
    first = ["a: path=/ => 100:dummy", "b: path=/ => 100:error"]
    second = ["a: path=/nothing => 100:dummy", "b: path=/y => 100:error"]
    client = controlled.client()
    stop = threading.Event()
    statuses = []

    def traffic():
        with requests.Session() as session:
            while not stop.is_set():
                statuses.append(session.get(http_url(controlled.thread), timeout=10).status_code)

    workers = [threading.Thread(target=traffic) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        for i in range(60):
            client.set_rules(first if i % 2 else second)
        wait_until(lambda: len(statuses) > 100)
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
    assert set(statuses) == {200}
    client.set_rules(["b: path=/ => 100:error"])  # in force for the very next request
    assert requests.get(http_url(controlled.thread), timeout=10).status_code >= 500
