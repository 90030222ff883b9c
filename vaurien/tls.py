"""TLS on either side of the proxy: contexts, certificates, and a :class:`TLSEndpoint`.

With ``--tls-cert`` (or ``--tls-self-signed``) the proxy terminates its clients' TLS; with
``--backend-tls`` it speaks TLS to the backend. Either way the protocols see clear text.

TLS runs sans-IO: an :class:`ssl.SSLObject` between two :class:`ssl.MemoryBIO`, fed from and
drained into the endpoint's own non-blocking socket, so a TLS endpoint waits on the same gevent
watchers as a plain one and ``write`` still never waits (it encrypts and queues). A proxy
without TLS never builds any of this: its sessions use :class:`~vaurien.endpoint.Endpoint`.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import ipaddress
import logging
import os
import re
import socket
import ssl
import tempfile
from collections.abc import Sequence
from typing import Any

import gevent

from vaurien.endpoint import _READ, EOF, Endpoint
from vaurien.errors import ConfigError
from vaurien.proxy_config import ProxyConfig

log = logging.getLogger(__name__)

#: Bytes of ciphertext taken from the socket at once (several TLS records).
RECEIVE_SIZE = 65536
_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL
)
#: Listen hosts that mean "every address": a self-signed certificate names localhost instead.
_ANY_HOST = frozenset({"", "0.0.0.0", "::"})
#: OpenSSL's verification codes (X509_V_ERR_*) in users' words.
_VERIFY_PROBLEMS = {
    2: "unknown issuer",
    9: "not yet valid",
    10: "expired",
    18: "self-signed",
    19: "self-signed issuer in the chain",
    20: "unknown issuer",
    21: "unknown issuer",
}
#: OpenSSL's reasons for a failed handshake, in users' words; the side is added to them.
_REASONS = {
    "HTTP_REQUEST": "sent plain HTTP, no TLS",
    "WRONG_VERSION_NUMBER": "sent no TLS",
    "UNSUPPORTED_PROTOCOL": "offered no TLS version the proxy accepts",
    "NO_SHARED_CIPHER": "shares no cipher with the proxy",
    "TLSV1_ALERT_UNKNOWN_CA": "rejected the proxy's certificate (unknown CA)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "rejected the proxy's certificate",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "rejected the proxy's certificate",
    "TLSV1_ALERT_PROTOCOL_VERSION": "accepts no TLS version the proxy offers",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "refused the handshake",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "requires a client certificate",
}


class TLSEndpoint(Endpoint):
    """An :class:`~vaurien.endpoint.Endpoint` whose bytes are encrypted on the wire.

    Reads return clear text; ``write`` encrypts everything at once and queues the records,
    ``drain`` sends them. Clear text already decrypted (or records already received) makes the
    side readable without waiting on the socket. Closing sends ``close_notify``. A TLS side
    cannot splice (``can_splice`` is false): its bytes must pass through the proxy.
    """

    __slots__ = ("_tls", "_incoming", "_outgoing", "_established", "_notified")

    can_splice = False

    def __init__(
        self,
        sock: Any,
        role: str,
        session: Any,
        context: ssl.SSLContext,
        server_hostname: str | None = None,
    ) -> None:
        super().__init__(sock, role, session)
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(
            self._incoming,
            self._outgoing,
            server_side=role == "client",
            server_hostname=server_hostname,
        )
        self._established = False
        self._notified = False

    def __repr__(self) -> str:
        return f"<TLSEndpoint {self.role} fd={self._fd}>"

    def handshake(self) -> None:
        """Complete the TLS handshake, waiting on the socket as needed; raises
        :class:`ssl.SSLError` (or another :class:`OSError`) when it fails."""
        tls = self._tls
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._send_records()
                self.drain()
                self._receive(wait=True)
        self._send_records()
        self.drain()
        self._established = True

    # -- readiness -------------------------------------------------------------------------------

    def wait_readable(self) -> None:
        if self._tls.pending() or self._incoming.pending:
            return
        super().wait_readable()

    def readable_now(self) -> bool:
        return bool(self._tls.pending() or self._incoming.pending) or super().readable_now()

    # -- reading ---------------------------------------------------------------------------------

    def recv_into(self, buffer: Any, nbytes: int = 0) -> int:
        if self._pending:
            return self._take_pending_into(buffer, nbytes)
        if self.eof:
            return 0
        size = nbytes or len(buffer)
        count = self._decrypt(size, buffer, wait=True)
        if not count:
            self.eof = True
            return 0
        # One record per decryption: take the others already received in the same event.
        if count < size and (self._tls.pending() or self._incoming.pending):
            view = memoryview(buffer)
            while count < size:
                more = self._decrypt(size - count, view[count:size], wait=False)
                if not more:
                    self.eof = more == 0
                    break
                count += more
        self.bytes_received += count
        self._after_read(count, size)
        return count

    def recv(self, size: int = 65536) -> bytes:
        if self._pending or self.eof:
            return super().recv(size)
        data = self._decrypt(size, None, wait=True)
        if not data:
            self.eof = True
            return EOF
        self.bytes_received += len(data)
        return data

    def read(self, size: int = 65536) -> bytes:
        data = self.recv(size)
        if not data or len(data) >= size:
            return data
        chunks = [data]
        received = len(data)
        while received < size and not self.eof:
            more = self._decrypt(size - received, None, wait=False)
            if more is None:
                break
            if not more:
                self.eof = True
                break
            self.bytes_received += len(more)
            chunks.append(more)
            received += len(more)
        return b"".join(chunks)

    def splice_to(self, dest: Endpoint, pipes: Any, size: int) -> int:
        raise NotImplementedError("a TLS connection cannot splice: its bytes are encrypted")

    def _decrypt(self, size: int, buffer: Any, wait: bool) -> Any:
        """Decrypt at most ``size`` bytes: into ``buffer`` (the count) or as bytes. The end of
        the stream gives 0 or ``b""``; ``None`` when nothing is there and ``wait`` is false."""
        tls = self._tls
        while True:
            try:
                result = tls.read(size, buffer) if buffer is not None else tls.read(size)
            except ssl.SSLWantReadError:
                if self._outgoing.pending:  # a post-handshake message asked for an answer
                    self._send_records()
                if not self._receive(wait):
                    return None
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                # close_notify, or a peer that just closed its socket (many do): the end.
                result = 0 if buffer is not None else b""
            if self._outgoing.pending:
                self._send_records()
            return result

    def _receive(self, wait: bool) -> bool:
        """Move what the socket has into the TLS object; false if nothing and not ``wait``."""
        while True:
            try:
                data = self._raw.recv(RECEIVE_SIZE)
            except (BlockingIOError, InterruptedError):
                if not wait:
                    return False
                self._wait(_READ)
                continue
            if data:
                self._incoming.write(data)
            else:
                self._incoming.write_eof()
            return True

    # -- writing ---------------------------------------------------------------------------------

    def send(self, data: Any) -> int:
        self.sendall(data)
        return len(data)

    def write(self, data: Any) -> None:
        if len(data):
            self._tls.write(data)
            self._send_records()

    def _send_records(self) -> None:
        records = self._outgoing.read()
        if records:
            super().write(records)

    # -- closing ---------------------------------------------------------------------------------

    def shutdown(self, how: int = socket.SHUT_WR) -> None:
        if how != socket.SHUT_RD:
            self._close_notify()
            try:
                self.drain()
            except OSError:
                pass
        super().shutdown(how)

    def really_close(self, reset: bool = False) -> None:
        if not reset:
            try:
                self._close_notify()
            except OSError:
                pass
        super().really_close(reset)

    def _close_notify(self) -> None:
        """Queue a ``close_notify`` once; the peer's own is not awaited."""
        if not self._established or self._notified:
            return
        self._notified = True
        try:
            self._tls.unwrap()
        except ssl.SSLError:  # SSLWantReadError: sent, the peer's not yet received
            pass
        self._send_records()


@dataclasses.dataclass(frozen=True)
class TLSSetup:
    """How one proxy speaks TLS: toward its clients (``client``, a server-side context) and
    toward its backend (``backend``, a client-side context), either or both.

    ``backend_sni`` names the backend in the handshake (its host by default); ``fingerprint``
    is the SHA-256 of the certificate shown to clients; ``timeout`` bounds the handshakes.
    """

    client: ssl.SSLContext | None
    backend: ssl.SSLContext | None
    backend_sni: str | None = None
    fingerprint: str | None = None
    timeout: float = 30.0

    @classmethod
    def from_config(cls, config: ProxyConfig, alpn: Sequence[str] = ()) -> TLSSetup | None:
        """The TLS of ``config``, its files read and checked now; ``None`` without TLS.
        ``alpn`` names the protocol spoken (the protocol's ``alpn``) on both sides.

        A file that cannot be read, a key that does not match its certificate or a CA file
        without certificates is a :class:`~vaurien.errors.ConfigError` naming the file.
        """
        client = fingerprint = None
        if config.tls_self_signed:
            certificate, key = self_signed(config.proxy.host)
            if config.tls_cert_out:
                _write(config.tls_cert_out, certificate)
            client = _server_context_from_memory(certificate, key)
            fingerprint = sha256_fingerprint(certificate)
        elif config.tls_cert:
            client = server_context(config.tls_cert, config.tls_key)
            fingerprint = sha256_fingerprint(_read(config.tls_cert, "tls_cert"))
        backend = None
        if config.backend_tls:
            backend = backend_context(config.backend_ca, config.backend_insecure)
        if client is None and backend is None:
            return None
        for context in (client, backend):
            if context is not None and alpn:
                context.set_alpn_protocols(list(alpn))
        return cls(client, backend, config.backend_sni, fingerprint, config.timeout)

    def endpoints(
        self, client_sock: Any, backend_sock: Any, session: Any
    ) -> tuple[Endpoint, Endpoint]:
        """The session's two endpoints, TLS on the sides that speak it."""
        if self.client is not None:
            client: Endpoint = TLSEndpoint(client_sock, "client", session, self.client)
        else:
            client = Endpoint(client_sock, "client", session)
        if self.backend is not None:
            name = self.backend_sni or session.proxy.backend.host
            backend: Endpoint = TLSEndpoint(backend_sock, "backend", session, self.backend, name)
        else:
            backend = Endpoint(backend_sock, "backend", session)
        return client, backend

    def handshake(self, session: Any) -> bool:
        """Run the session's handshakes, the client's first, within ``timeout`` seconds in
        all; on a failure log one line (side, peer, reason) and return false."""
        endpoint: Any = None
        timeout = gevent.Timeout(self.timeout)
        timeout.start()
        try:
            for endpoint in (session.client, session.backend):
                if isinstance(endpoint, TLSEndpoint):
                    endpoint.handshake()
            return True
        except gevent.Timeout as e:
            if e is not timeout:
                raise
            problem = f"no handshake within {self.timeout:g}s (handshake timed out)"
            quiet = False
        except OSError as e:
            problem = describe_handshake_error(e, endpoint.role)
            # A client hanging up (a port probe, a health check) is its own business.
            quiet = isinstance(e, ssl.SSLEOFError) and endpoint.role == "client"
        finally:
            timeout.close()
        peer = session.peer if endpoint.role == "client" else session.proxy.backend
        log.log(
            logging.INFO if quiet else logging.WARNING,
            "%s: TLS handshake with the %s %s failed: %s",
            session.peer,
            endpoint.role,
            peer,
            problem,
        )
        return False

    def describe(self) -> list[str]:
        """What the proxy's start-up log says of its TLS."""
        lines = []
        if self.client is not None:
            lines.append(f"clients speak TLS; certificate SHA-256 {self.fingerprint}")
        if self.backend is not None:
            verified = "not verified" if self.backend.verify_mode == ssl.CERT_NONE else "verified"
            sni = f", SNI {self.backend_sni}" if self.backend_sni else ""
            lines.append(f"backend speaks TLS; its certificate {verified}{sni}")
        return lines


# -- contexts ------------------------------------------------------------------------------------


def server_context(cert_file: str, key_file: str | None = None) -> ssl.SSLContext:
    """A context presenting ``cert_file`` (with its chain) and the key in ``key_file``, or in
    ``cert_file`` itself when no key file is given."""
    for path, setting in ((cert_file, "tls_cert"), (key_file, "tls_key")):
        if path is not None:
            _read(path, setting)  # an unreadable file is named as such, not as bad PEM
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert_file, key_file, password=_no_password)
    except _EncryptedKey:
        raise ConfigError(
            f"tls_key {key_file or cert_file}: the key is encrypted; give an unencrypted key"
        ) from None
    except ssl.SSLError as e:
        if e.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(
                f"tls_key {key_file or cert_file}: does not match the certificate in {cert_file}"
            ) from None
        if e.library == "PEM" or e.reason in (None, "NO_START_LINE") or "PEM" in str(e):
            # OpenSSL does not say which file it choked on: say what each should hold.
            raise ConfigError(
                f"tls_cert {cert_file} / tls_key {key_file or cert_file}: expected a PEM "
                f"certificate and a PEM private key ({e.reason or e})"
            ) from None
        raise ConfigError(f"tls_cert {cert_file}: {e.reason or e}") from None
    return context


def backend_context(ca_file: str | None = None, insecure: bool = False) -> ssl.SSLContext:
    """A client context for the backend: its certificate verified against ``ca_file``, else
    the system's trust store, and its name checked; with ``insecure`` nothing is checked."""
    if insecure:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if ca_file is None:
        return ssl.create_default_context()
    _read(ca_file, "backend_ca")
    try:
        return ssl.create_default_context(cafile=ca_file)
    except ssl.SSLError as e:
        raise ConfigError(
            f"backend_ca {ca_file}: no PEM certificate in it ({e.reason or e})"
        ) from None


class _EncryptedKey(Exception):
    pass


def _no_password() -> str:
    raise _EncryptedKey  # never prompt on the terminal for a key's pass phrase


def _server_context_from_memory(certificate: bytes, key: bytes) -> ssl.SSLContext:
    # load_cert_chain reads files only: the key lives a moment in a private directory.
    with tempfile.TemporaryDirectory(prefix="vaurien-tls-") as directory:
        path = os.path.join(directory, "proxy.pem")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
            f.write(key + certificate)
        return server_context(path)


def _read(path: str, setting: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"{setting} {path}: cannot read it: {e.strerror}") from None


def _write(path: str, data: bytes) -> None:
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as e:
        raise ConfigError(f"tls_cert_out {path}: cannot write it: {e.strerror}") from None


# -- certificates --------------------------------------------------------------------------------


def sha256_fingerprint(pem: bytes) -> str:
    """The SHA-256 fingerprint of the first certificate in ``pem``, as ``AB:CD:...``."""
    match = _PEM_CERTIFICATE.search(pem)
    if match is None:
        raise ConfigError("no PEM certificate found")
    der = ssl.PEM_cert_to_DER_cert(match.group().decode("ascii"))
    return hashlib.sha256(der).digest().hex(":").upper()  # as openssl x509 -fingerprint shows it


def self_signed(host: str, days: int = 365) -> tuple[bytes, bytes]:
    """A self-signed certificate for ``host`` (and localhost, 127.0.0.1, ::1) and its key, in
    PEM; it is its own trust anchor. Needs the ``cryptography`` package (``vaurien[tls]``)."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        raise ConfigError(
            "tls_self_signed needs the cryptography package: pip install 'vaurien[tls]'"
        ) from None
    names: list[x509.GeneralName] = []
    for name in dict.fromkeys(
        [h for h in (host,) if h not in _ANY_HOST] + ["localhost", "127.0.0.1", "::1"]
    ):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            names.append(x509.DNSName(name))
    common_name = host if host not in _ANY_HOST else "localhost"
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    public_key = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))  # clocks a little apart
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )
    return (
        certificate.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


# -- handshake failures ---------------------------------------------------------------------------


def describe_handshake_error(error: OSError, role: str) -> str:
    """A failed handshake in a user's words: ``backend certificate not trusted: self-signed``,
    ``client sent no TLS``, ``backend certificate not valid for 'x' (hostname mismatch)``."""
    if isinstance(error, ssl.SSLCertVerificationError):
        code, message = error.verify_code, (error.verify_message or "").rstrip(".")
        if code in (62, 64):  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
            # "Hostname mismatch, certificate is not valid for 'x'"
            return f"{role} certificate {message.partition(', certificate is ')[2]} (name mismatch)"
        what = _VERIFY_PROBLEMS.get(code, message or "unknown problem")
        return f"{role} certificate not trusted: {what}"
    if isinstance(error, ssl.SSLEOFError):
        return f"{role} closed the connection during the handshake"
    if isinstance(error, ssl.SSLError):
        reason = error.reason or ""
        if reason in _REASONS:
            return f"{role} {_REASONS[reason]}"
        return f"{role}: {reason.replace('_', ' ').lower() or error}"
    if isinstance(error, ConnectionResetError):
        return f"{role} reset the connection during the handshake"
    return f"{error.strerror or error}"
