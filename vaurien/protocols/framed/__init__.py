"""What the protocol-aware protocols share: framers, exchanges and the driver.

A protocol built on :class:`FramedProtocol` gives two *framers* per session, sans-IO (see
:mod:`vaurien.protocols.framed.framing`): one reads what the client sends (requests), the other
what the backend sends (answers). The driver (:mod:`vaurien.protocols.framed.driver`) forwards
requests as they are framed, pipelined, and matches each answer to its request in order
(:mod:`vaurien.protocols.framed.exchange`).

One request and its answer are one exchange, and a behavior acts once per exchange (where
``tcp`` has it act on each chunk, both ways): on the request, or, when its ``direction`` is
``to_client``, on the answer. Then the request passes untouched and the behavior gets the
answer before any of it reaches the client: ``delay`` holds it, ``hang`` swallows it,
``bandwidth``, ``slicer`` and ``corrupt`` read it with ``protocol.read`` (exactly that answer)
and pass it on themselves. No behavior is picked for an answer, a handshake, the rest of a
request or answer a behavior is moving, nor for the end of the client's stream.

* ``on_before_handle`` runs before the request is read, ``on_between_handle`` once it has reached
  the backend (its answer is not read before that hook returns), ``on_after_handle`` once its
  answer has reached the client (a ``delay`` with ``before = false`` holds what comes after).
* ``send_error`` (the ``error`` and ``transient`` behaviors) reads the request and answers it with
  the protocol's own error (:meth:`FramedProtocol.error_reply`) in its place among the answers,
  after the answers to earlier requests; with ``inject`` the request reaches the backend and its
  real answer is replaced by the error.
* ``abort`` forwards the request and closes the session when its answer starts to arrive.
* Data the backend sends on its own (a greeting, a pub/sub message) passes at once.

A protocol may switch a session to a plain stream (after an HTTP ``Upgrade``, SMTP
``STARTTLS``): both directions then pass bytes as the ``tcp`` protocol does, a behavior picked
for each chunk either way.

A protocol of your own gets all this by subclassing :class:`FramedProtocol`: it provides the
two framers and :meth:`FramedProtocol.error_reply`, its error form, and the hooks its messages
need, which return verdicts (:class:`RequestVerdict`, :class:`AnswerVerdict`).
"""

from vaurien.protocols.framed.driver import (
    BUFFER_OPTION,
    REUSE_SOCKET_OPTION,
    FramedProtocol,
    FramedState,
)
from vaurien.protocols.framed.exchange import (
    COMPLETE,
    NO_ANSWER,
    PARTIAL,
    PASS,
    UNSOLICITED,
    AnswerVerdict,
    ErrorReply,
    Exchange,
    Phase,
    RequestVerdict,
)
from vaurien.protocols.framed.framing import END, HOLD, End, Framer, Head, LineReader

__all__ = [
    "BUFFER_OPTION",
    "COMPLETE",
    "END",
    "HOLD",
    "NO_ANSWER",
    "PARTIAL",
    "PASS",
    "REUSE_SOCKET_OPTION",
    "UNSOLICITED",
    "AnswerVerdict",
    "End",
    "ErrorReply",
    "Exchange",
    "FramedProtocol",
    "FramedState",
    "Framer",
    "Head",
    "LineReader",
    "Phase",
    "RequestVerdict",
]
