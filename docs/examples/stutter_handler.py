"""stutter: a handler in the style of Vaurien's first releases.

It forwards the data one ``chunk`` of bytes at a time, waiting ``pause`` seconds between
chunks: the reader gets every byte, in many small, late reads.
"""

import gevent

from vaurien.handlers import Handler
from vaurien.handlers.base import BaseHandler


class Stutter(BaseHandler):
    """Forward the data in small chunks with a pause between them."""

    name = "stutter"
    options = {
        "chunk": ("Bytes sent at a time", int, 1),
        "pause": ("Seconds between two chunks", float, 0.01),
    }

    def __call__(self, client_sock, backend_sock, to_backend):
        data = self._get_data(client_sock, backend_sock, to_backend)
        if not data:
            return False  # the source closed: end the connection
        dest = backend_sock if to_backend else client_sock
        chunk = self.option("chunk")
        for start in range(0, len(data), chunk):
            if start:
                gevent.sleep(self.option("pause"))
            dest.sendall(data[start : start + chunk])
        return True


Handler.register(Stutter)
