"""Plugins written the way the two "Extending Vaurien" pages show them (../shared/seeds/).

The page's own text is kept; the changes are the ones a Python 3 reader must make to a page
written for Python 2 and the lines the page lost (marked ``# lost from the page``).
"""

from vaurien.handlers import Handler
from vaurien.handlers.base import BaseHandler
from vaurien.protocols import Protocol
from vaurien.protocols.base import BaseProtocol


# Seed 001, "Writing Handlers".
class MySuperHandler(object):  # noqa: UP004 - written as the page shows it
    name = "super"
    options = {}

    def __call__(self, client_sock, backend_sock, to_backend):
        # do something here
        source, dest = (client_sock, backend_sock) if to_backend else (backend_sock, client_sock)
        data = source.recv(1024)
        if data:
            dest.sendall(data.upper())
        return True


Handler.register(MySuperHandler)


# Seed 001, "Full handler example" (the page names it "dummy", which the built-in owns).
class Dummy(BaseHandler):
    """Dummy handler.

    Every incoming data is passed to the backend with no alteration, and vice-versa.
    """

    name = "legacy_dummy"
    options = {
        "keep_alive": ("Keep-alive protocol", bool, False),
        "reuse_socket": ("If True, the socket is reused.", bool, False),
    }

    def __call__(self, client_sock, backend_sock, to_backend):
        data = self._get_data(client_sock, backend_sock, to_backend)
        if data:
            dest = to_backend and backend_sock or client_sock
            source = to_backend and client_sock or backend_sock
            dest.sendall(data)

            # If we are not keeping the connection alive
            # we can suck the answer back and close the socket
            if not self.option("keep_alive"):
                data = ""
                while True:
                    data = dest.recv(1024)
                    if data == "":
                        break
                    source.sendall(data)

                dest.close()
                dest._closed = True
        elif not to_backend:
            # We want to close the socket if the backend sock is empty
            if not self.option("reuse_socket"):
                backend_sock.close()
                backend_sock._closed = True

        return data != ""


# Seed 000, "Writing Protocols".
class TCP(BaseProtocol):
    name = "seed_tcp"
    options = {
        "reuse_socket": ("If True, the socket is reused.", bool, False),
        "buffer": ("Buffer size", int, 8124),
        "keep_alive": ("Keep the connection alive", bool, False),
    }

    def _handle(self, source, dest, to_backend):
        # default TCP behavior
        data = self._get_data(source)
        if data:
            dest.sendall(data)  # lost from the page
            if not self.option("keep_alive"):
                data = ""
                while True:
                    data = self._get_data(dest)
                    if data == "":
                        break  # lost from the page
                    source.sendall(data)  # lost from the page

                if not self.option("reuse_socket"):
                    dest._closed = True
                return False
        return data != ""


Protocol.register(TCP)
