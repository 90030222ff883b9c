"""Echo backend for the benchmarks: every byte a client sends comes back.

``python -m benchmarks.echo`` listens on 127.0.0.1 (a free port unless ``--port`` is given),
prints the port on one line and serves until it is killed. One thread drives non-blocking
sockets through a level-triggered epoll, so thousands of connections cost one file descriptor
each and a round trip costs one ``recv`` and one ``send``.
"""

from __future__ import annotations

import argparse
import select
import socket

from benchmarks.limits import raise_open_files_limit

CHUNK = 65536  # bytes read per recv


def serve(listener: socket.socket) -> None:
    """Echo on every connection accepted by ``listener`` until the process is killed."""
    listener.setblocking(False)
    poller = select.epoll()
    poller.register(listener.fileno(), select.EPOLLIN)
    sockets: dict[int, socket.socket] = {}
    unsent: dict[int, bytes] = {}  # data a full send buffer refused; reading pauses until it drains
    listen_fd = listener.fileno()
    while True:
        for fd, events in poller.poll():
            if fd == listen_fd:
                _accept_all(listener, poller, sockets)
                continue
            sock = sockets[fd]
            try:
                if fd in unsent:
                    data = unsent.pop(fd)
                else:
                    data = sock.recv(CHUNK)
                    if not data:
                        raise ConnectionResetError
                sent = sock.send(data)
            except BlockingIOError:
                continue
            except OSError:
                poller.unregister(fd)
                del sockets[fd]
                unsent.pop(fd, None)
                sock.close()
                continue
            if sent < len(data):
                if fd not in unsent:
                    poller.modify(fd, select.EPOLLOUT)
                unsent[fd] = data[sent:]
            elif events & select.EPOLLOUT:
                poller.modify(fd, select.EPOLLIN)


def _accept_all(
    listener: socket.socket, poller: select.epoll, sockets: dict[int, socket.socket]
) -> None:
    while True:
        try:
            sock, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # EMFILE and friends: leave the rest in the backlog
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sockets[sock.fileno()] = sock
        poller.register(sock.fileno(), select.EPOLLIN)


def main(argv: list[str] | None = None) -> int:
    """Listen, print the port, echo forever."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.echo", description=__doc__)
    parser.add_argument(
        "--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)"
    )
    args = parser.parse_args(argv)
    raise_open_files_limit()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(socket.SOMAXCONN)
    print(listener.getsockname()[1], flush=True)
    try:
        serve(listener)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
