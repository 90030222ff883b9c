"""smtp: command, reply and mail data framing on bytes; real aiosmtpd sessions through the
proxy, with smtplib."""

import logging
import shutil
import smtplib
import socket
import ssl
import subprocess
import time

import pytest

from protocol_support import error_on_calls, peeks, run
from servers import unavailable
from support import free_port, wait_until
from vaurien.errors import ProtocolError
from vaurien.protocols.smtp import CommandFramer, ReplyFramer

# -- framing ----------------------------------------------------------------------------------

MAIL = (
    b"Subject: framing\r\n\r\n"
    b"..a line that started with a dot\r\n"
    b"a line with . and .\r\n"
    b"\r\n"
    b"..\r\n"  # a line holding one (stuffed) dot
)
COMMANDS = (
    b"EHLO client.example\r\n"
    b"MAIL FROM:<a@example.org>\r\n"
    b"RCPT TO:<b@example.org>\r\n"
    b"DATA\r\n" + MAIL + b".\r\n"
    b"BDAT 5 LAST\r\nab\r\nc"
    b"RSET\r\n"
    b"QUIT\r\n"
)
REPLIES = (
    b"220 mail.example ESMTP\r\n"
    b"250-mail.example\r\n250-PIPELINING\r\n250 HELP\r\n"
    b"250 OK\r\n"
    b"354 End data with <CR><LF>.<CR><LF>\r\n"
    b"451 4.3.0 try again\r\n"
    b"250\r\n"
    b"221 Bye\r\n"
)


def accept_data(framer, event):
    """What the proxy does when the server answers DATA with 354."""
    if getattr(event, "name", None) == b"DATA":
        framer.expect_data()


def test_commands_and_the_mail_data_end_where_they_end():
    passed, ends = run(CommandFramer(), [COMMANDS], after=accept_data)
    assert passed == COMMANDS
    assert [event.name for _, event in ends] == [
        b"EHLO", b"MAIL", b"RCPT", b"DATA", b"<data>", b"BDAT", b"RSET", b"QUIT"
    ]  # fmt: skip
    data_end = COMMANDS.index(b"\r\n.\r\n") + 5
    assert ends[4][0] == data_end
    assert ends[5][0] == data_end + len(b"BDAT 5 LAST\r\nab\r\nc")


def test_replies_of_several_lines_are_one_reply():
    passed, ends = run(ReplyFramer(), [REPLIES], [None] * 7)
    assert passed == REPLIES
    assert [event.code for _, event in ends] == [220, 250, 250, 354, 451, 250, 221]


def test_a_big_mail_is_counted_through_not_kept():
    framer = CommandFramer()
    framer.feed(b"DATA\r\n", 0, 6)
    framer.expect_data()
    line = b"x" * 998 + b"\r\n"
    chunk = line * 64
    for _ in range(300):  # about 19 MB
        assert framer.feed(chunk, 0, len(chunk)) == (len(chunk), None)
        assert framer._lines.held == 0
    assert framer.feed(b".\r\n", 0, 3)[1].name == b"<data>"


def test_a_tls_client_hello_first_makes_it_a_stream():
    hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40)
    passed, ends = run(CommandFramer(), [hello])
    assert passed == hello and ends[0][1].name == b"<tls>"


@pytest.mark.parametrize("junk", [b"HTTP/1.1 200 OK\r\n", b"250-a\r\n251 b\r\n"])
def test_what_is_not_a_reply_is_a_protocol_error(junk):
    with pytest.raises(ProtocolError):
        run(ReplyFramer(), [junk], [None, None])


# -- sessions with aiosmtpd -------------------------------------------------------------------


def start(start_proxy, smtp_server, **settings):
    settings.setdefault("timeout", 30)
    return start_proxy(smtp_server.address, protocol="smtp", **settings)


def connect(address, timeout=10):
    return smtplib.SMTP(address[0], address[1], timeout=timeout)


def message(number: int) -> str:
    body = "".join(f".line {i} of message {number}\r\n" for i in range(2000))
    return f"Subject: message {number}\r\n\r\n.starts with a dot\r\n{body}..\r\n.\r\nend\r\n"


def realistic_session(address, number):
    client = connect(address)
    results = [client.ehlo()[0], client.noop(), client.help()[:3]]
    results.append(
        client.sendmail("a@example.org", ["b@example.org", "c@example.org"], message(number))
    )
    results.append(client.verify("b@example.org")[0])
    results.append(client.rset())
    results.append(client.docmd("BOGUS"))  # a real error from the server
    results.append(client.sendmail("d@example.org", "e@example.org", message(number + 1)))
    results.append(client.quit())
    return results


def test_a_realistic_session_through_dummy_gets_the_direct_results(smtp_server, start_proxy):
    proxy = start(start_proxy, smtp_server)
    smtp_server.clear()
    expected = realistic_session((smtp_server.host, smtp_server.port), 0)
    direct_mail = smtp_server.messages()
    smtp_server.clear()
    assert realistic_session(proxy.address, 0) == expected
    assert smtp_server.messages() == direct_mail
    assert len(direct_mail) == 2


def test_pipelined_commands_get_their_replies_in_order(smtp_server, start_proxy):
    proxy = start(start_proxy, smtp_server)
    error_on_calls(proxy, "3")
    with proxy.connect() as sock:
        assert sock.recv(100).startswith(b"220 ")
        sock.sendall(b"HELO x\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@x.org>\r\nRCPT TO:<c@x.org>\r\n")
        replies = b""
        while replies.count(b"\r\n") < 4:
            replies += sock.recv(1000)
        codes = [line[:3] for line in replies.split(b"\r\n")[:4]]
        assert codes == [b"250", b"250", b"451", b"250"]


def test_error_refuses_the_sender_with_451(smtp_server, start_proxy):
    proxy = start(start_proxy, smtp_server)
    smtp_server.clear()
    client = connect(proxy.address)
    client.ehlo()
    proxy.call(proxy.proxy.set_behavior, "100:error")
    with pytest.raises(smtplib.SMTPResponseException) as error:
        client.sendmail("a@example.org", ["b@example.org"], "Subject: x\r\n\r\nhi\r\n")
    assert error.value.smtp_code == 451
    proxy.call(proxy.proxy.set_behavior, "100:dummy")
    assert client.noop()[0] == 250  # the same connection goes on
    client.quit()
    assert smtp_server.messages() == []


def test_an_error_on_the_mail_data_drops_the_mail_and_the_connection(smtp_server, start_proxy):
    proxy = start(start_proxy, smtp_server)
    smtp_server.clear()
    error_on_calls(proxy, "5")  # EHLO, MAIL, RCPT, DATA, then the data
    client = connect(proxy.address)
    with pytest.raises(smtplib.SMTPDataError) as error:
        client.sendmail("a@example.org", ["b@example.org"], "Subject: x\r\n\r\nhi\r\n")
    assert error.value.smtp_code == 451
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.noop()
    assert smtp_server.messages() == []


def test_delay_holds_each_command(smtp_server, start_proxy):
    proxy = start(start_proxy, smtp_server)
    client = connect(proxy.address)
    client.ehlo()
    proxy.call(proxy.proxy.set_behavior, "100:delay", {"delay": {"sleep": 0.5}})
    started = time.monotonic()
    client.noop()
    assert 0.45 < time.monotonic() - started < 10
    proxy.call(proxy.proxy.set_behavior, "100:dummy")
    started = time.monotonic()
    client.noop()
    assert time.monotonic() - started < 0.4
    client.quit()


def test_abort_on_the_data_delivers_the_mail_and_closes_before_the_reply(smtp_server, start_proxy):
    proxy = start(start_proxy, smtp_server)
    smtp_server.clear()
    error_on_calls(proxy, "5", verb="abort")
    client = connect(proxy.address)
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.sendmail("a@example.org", ["b@example.org"], "Subject: aborted\r\n\r\nhi\r\n")
    wait_until(lambda: len(smtp_server.messages()) == 1)


def test_blackout_closes_and_the_mail_never_arrives(smtp_server, start_proxy):
    proxy = start(start_proxy, smtp_server)
    smtp_server.clear()
    client = connect(proxy.address)
    client.ehlo()
    proxy.call(proxy.proxy.set_behavior, "100:blackout")
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.sendmail("a@example.org", ["b@example.org"], "Subject: x\r\n\r\nhi\r\n")
    assert smtp_server.messages() == []


def test_hang_leaves_the_client_waiting(smtp_server, start_proxy):
    proxy = start(start_proxy, smtp_server)
    client = connect(proxy.address, timeout=1)
    client.ehlo()
    proxy.call(proxy.proxy.set_behavior, "100:hang")
    started = time.monotonic()
    with pytest.raises((TimeoutError, smtplib.SMTPServerDisconnected)):
        client.noop()
    assert time.monotonic() - started > 0.9


def test_a_backend_that_is_not_smtp_ends_the_session_with_one_line(
    http_server, start_proxy, caplog
):
    proxy = start_proxy(http_server.address, protocol="smtp")
    caplog.set_level(logging.WARNING, logger="vaurien")
    with proxy.connect() as sock:
        sock.sendall(b"EHLO me\r\n\r\n")
        while sock.recv(100):  # whatever passed before the proxy gave up
            pass
    wait_until(lambda: any("not an SMTP reply" in r.getMessage() for r in caplog.records))
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
    with socket.create_connection(proxy.address, timeout=10):
        pass


# -- TLS: STARTTLS and implicit TLS pass as an opaque stream ----------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    if shutil.which("openssl") is None:
        unavailable("openssl is not installed")
    directory = tmp_path_factory.mktemp("tls")
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


class Keep:
    """An aiosmtpd handler keeping the messages it accepts."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope.content)
        return "250 OK"


def tls_controller(tls_files, mode):
    """A started aiosmtpd server requiring STARTTLS (``mode="starttls"``) or speaking implicit
    TLS (``"implicit"``), and its handler."""
    from aiosmtpd.controller import Controller

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*tls_files)
    handler = Keep()
    where = {"hostname": "127.0.0.1", "port": free_port()}
    if mode == "starttls":
        controller = Controller(handler, **where, tls_context=context, require_starttls=True)
    else:
        controller = Controller(handler, **where, ssl_context=context)
    controller.start()
    return controller, handler


@pytest.fixture(params=["starttls", "implicit"])
def tls_smtp_server(request, tls_files):
    controller, handler = tls_controller(tls_files, request.param)
    yield request.param, controller, handler
    controller.stop()


def test_tls_passes_through_as_an_opaque_stream(tls_smtp_server, start_proxy):
    mode, controller, handler = tls_smtp_server
    address = f"{controller.hostname}:{controller.port}"
    proxy = start_proxy(address, protocol="smtp", timeout=30)
    context = ssl._create_unverified_context()
    if mode == "starttls":
        client = smtplib.SMTP(*proxy.address, timeout=10)
        client.ehlo()
        assert client.starttls(context=context)[0] == 220
    else:
        client = smtplib.SMTP_SSL(*proxy.address, timeout=10, context=context)
    client.ehlo()
    client.sendmail("a@example.org", ["b@example.org"], "Subject: secret\r\n\r\nover TLS\r\n")
    client.quit()
    wait_until(lambda: handler.messages)
    assert b"over TLS" in handler.messages[0]


def test_implicit_tls_terminated_on_both_sides_gets_per_command_errors(tls_files, start_proxy):
    """SMTPS (implicit TLS): the proxy terminates both sides' TLS, so the smtp protocol sees the
    commands and ``error`` answers them with 451, where a relayed TLS stream stays opaque."""
    controller, handler = tls_controller(tls_files, "implicit")
    try:
        proxy = start_proxy(
            f"127.0.0.1:{controller.port}",
            protocol="smtp",
            tls_self_signed=True,
            backend_tls=True,
            backend_insecure=True,  # the server's certificate is a throwaway
            timeout=30,
        )
        client = smtplib.SMTP_SSL(
            *proxy.address, timeout=10, context=ssl._create_unverified_context()
        )
        client.ehlo()
        proxy.call(proxy.proxy.set_behavior, "100:error")
        with pytest.raises(smtplib.SMTPResponseException) as error:
            client.sendmail("a@example.org", ["b@example.org"], "Subject: x\r\n\r\nhi\r\n")
        assert error.value.smtp_code == 451
        proxy.call(proxy.proxy.set_behavior, "100:dummy")
        client.sendmail("a@example.org", ["b@example.org"], "Subject: y\r\n\r\nover TLS\r\n")
        client.quit()
        wait_until(lambda: handler.messages)
        assert len(handler.messages) == 1 and b"over TLS" in handler.messages[0]
    finally:
        controller.stop()


# -- what rules see ------------------------------------------------------------------------------


def test_rules_see_the_verb_the_mail_data_and_a_tls_start():
    from vaurien.protocols.smtp import SMTP, SMTPState

    state = SMTPState()
    SMTP().framers(state)
    assert peeks(SMTP(), state, b"rcpt TO:<b@example.org>\r\n", ("command",)) == {"command": "RCPT"}
    state.commands.feed(b"EHLO x\r\n", 0, 8)  # the session has started: no TLS start now
    state.commands.expect_data()
    assert peeks(SMTP(), state, b"Subject: hi\r\n", ("command",)) == {"command": "<data>"}
    fresh = SMTPState()
    SMTP().framers(fresh)
    assert peeks(SMTP(), fresh, b"\x16\x03\x01", ("command",)) == {"command": "<tls>"}
