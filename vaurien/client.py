"""A Python client of the control API (``vaurien --http``), on ``requests``.

::

    from vaurien import Client

    client = Client()                       # http://localhost:8080
    with client.with_behavior("blackout"):
        ...                                 # every call through the proxy fails here
    # the previous behavior, with its options, is back

Install it with ``pip install 'vaurien[client]'``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import requests

from vaurien.network import Address


class Client:
    """Drives one proxy through its control API.

    A request the proxy refuses (an unknown behavior, a bad option) raises :class:`ValueError`
    with the proxy's description; an unreachable proxy raises ``requests.ConnectionError``.
    """

    def __init__(
        self,
        host: str = "localhost",
        port: int | str = 8080,
        scheme: str = "http",
        timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.scheme = scheme
        self.timeout = timeout
        self.root_url = f"{scheme}://{Address(host, int(port))}"
        self.behavior_url = self.root_url + "/behavior"
        self.list_behaviors_url = self.root_url + "/behaviors"

    def __repr__(self) -> str:
        return f"<Client {self.root_url}>"

    def _call(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        response = requests.request(
            method, self.root_url + path, json=payload, timeout=self.timeout
        )
        if response.status_code == 400:
            try:
                errors = response.json()["errors"]
                message = "; ".join(error["description"] for error in errors)
            except (ValueError, KeyError, TypeError):
                message = response.text
            raise ValueError(message)
        response.raise_for_status()
        return response.json()

    # -- the behavior ----------------------------------------------------------------------

    def set_behavior(self, behavior: str, /, **options: Any) -> None:
        """Put ``behavior`` (a name or a spec such as ``"20:delay,80:dummy"``) in force.

        ``options`` go to the behaviors that have them; the others keep the values of the
        proxy's command line or config file.
        """
        for reserved in ("name", "options"):
            if reserved in options:
                raise ValueError(f"{reserved!r} is a field of the API, not a behavior option")
        self._call("PUT", "/behavior", {**options, "name": behavior})

    def get_behavior(self) -> str:
        """The behavior in force: a name, or the spec when several behaviors share the events."""
        return self._call("GET", "/behavior")["behavior"]

    def get_behavior_options(self) -> dict[str, dict[str, Any]]:
        """The option values of each behavior in force, by behavior name."""
        return self._call("GET", "/behavior/options")["options"]

    def list_behaviors(self) -> list[str]:
        """The names of the behaviors the proxy knows, sorted."""
        return self._call("GET", "/behaviors")["behaviors"]

    def list_protocols(self) -> list[str]:
        """The names of the protocols the proxy knows, sorted."""
        return self._call("GET", "/protocols")["protocols"]

    @contextlib.contextmanager
    def with_behavior(self, behavior: str, /, **options: Any) -> Iterator[None]:
        """Put ``behavior`` in force for the ``with`` block, then put back what was there.

        The previous behavior comes back with the option values it had, also when the block
        raises.
        """
        previous = self._call("GET", "/behavior/options")
        self.set_behavior(behavior, **options)
        try:
            yield
        finally:
            self._call(
                "PUT", "/behavior", {"name": previous["behavior"], "options": previous["options"]}
            )

    # -- the backend -----------------------------------------------------------------------

    def get_backend(self) -> str:
        """Where new connections go, as ``host:port``."""
        return self._call("GET", "/backend")["backend"]

    def set_backend(self, address: str) -> None:
        """Send new connections to ``address`` (``host:port``)."""
        self._call("PUT", "/backend", {"backend": address})

    # -- counters --------------------------------------------------------------------------

    def get_stats(self) -> dict[str, Any]:
        """The proxy's counters: connections, bytes and events each way, behaviors applied."""
        return self._call("GET", "/stats")
