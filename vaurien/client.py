"""A Python client of the control API (``vaurien --http``), on ``requests``.

::

    from vaurien import Client

    client = Client()                       # http://localhost:8080
    with client.with_behavior("blackout"):
        ...                                 # every call through the proxy fails here
    # the previous behavior, with its options, is back
    with client.with_rules(["method=POST path=/api/payments/* => 100:error"]):
        ...                                 # only those requests fail
    with client.scenario("5s 100:dummy; 5s 100:error"):
        ...                                 # 5 seconds of calm, then errors

    cache = Client(proxy="cache")           # the proxy named cache of the same process
    guarded = Client(token="...")           # an API started with --http-token

Install it with ``pip install 'vaurien[client]'``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import requests

from vaurien.network import Address


class Client:
    """Drives one proxy through its control API.

    ``proxy`` names the proxy of the process to drive (``Client(port=8080, proxy="cache")``);
    without it, the command line's proxy. ``token`` is the API's ``http_token``, sent with
    every request. A request the proxy refuses (an unknown behavior, a bad option, a proxy name
    it does not know) raises :class:`ValueError` with the proxy's description, a change without
    the right token :class:`PermissionError`; an unreachable proxy raises
    ``requests.ConnectionError``.
    """

    def __init__(
        self,
        host: str = "localhost",
        port: int | str = 8080,
        scheme: str = "http",
        timeout: float = 10.0,
        proxy: str | None = None,
        token: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.scheme = scheme
        self.timeout = timeout
        self.proxy = proxy
        self.token = token
        self.root_url = f"{scheme}://{Address(host, int(port))}"
        self.proxy_url = self.root_url + (f"/proxies/{proxy}" if proxy is not None else "")
        self.behavior_url = self.proxy_url + "/behavior"
        self.list_behaviors_url = self.proxy_url + "/behaviors"

    def __repr__(self) -> str:
        return f"<Client {self.proxy_url}>"

    def _call(
        self, method: str, path: str, payload: dict[str, Any] | None = None, root: bool = False
    ) -> Any:
        url = (self.root_url if root else self.proxy_url) + path
        headers = {"Authorization": f"Bearer {self.token}"} if self.token is not None else {}
        response = requests.request(
            method, url, json=payload, headers=headers, timeout=self.timeout
        )
        refused = response.status_code in (400, 401, 403, 409) or _unknown_proxy(response)
        if refused:
            try:
                errors = response.json()["errors"]
                message = "; ".join(error["description"] for error in errors)
            except (ValueError, KeyError, TypeError):
                message = response.text
            raise (PermissionError if response.status_code in (401, 403) else ValueError)(message)
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

    # -- rules -------------------------------------------------------------------------------

    def get_rules(self) -> list[dict[str, Any]]:
        """The rules in force, in order: ``name``, ``match``, ``behavior`` and ``options`` each."""
        return self._call("GET", "/rules")["rules"]

    def set_rules(self, rules: Sequence[str | dict[str, Any]]) -> None:
        """Put ``rules`` in force, in order, in place of those there were: each a string in
        the ``--rule`` form (``"method=POST path=/pay/* => 50:error"``) or a dict with
        ``match``, ``behavior`` and optionally ``name`` and ``options``."""
        if isinstance(rules, (str, dict)):
            rules = [rules]
        self._call("PUT", "/rules", {"rules": list(rules)})

    def clear_rules(self) -> None:
        """Remove every rule."""
        self._call("DELETE", "/rules")

    @contextlib.contextmanager
    def with_rules(self, rules: Sequence[str | dict[str, Any]]) -> Iterator[None]:
        """Put ``rules`` in force for the ``with`` block, then put back those there were."""
        previous = self.get_rules()
        self.set_rules(rules)
        try:
            yield
        finally:
            self.set_rules(previous)

    # -- scenarios ---------------------------------------------------------------------------

    def get_scenario(self) -> dict[str, Any]:
        """The running scenario (``scenario`` None when there is none): ``step`` (from 1),
        ``steps``, ``behavior``, what is ``left`` of the step in ``unit``, ``loop``."""
        return self._call("GET", "/scenario")

    def set_scenario(self, scenario: str, /, **options: Any) -> None:
        """Start ``scenario`` (``"30s 100:dummy; 10s 50:error; repeat"``) from its first
        step. ``options`` map behavior names to option values for every step
        (``delay={"sleep": 2}``)."""
        payload: dict[str, Any] = {"scenario": scenario}
        if options:
            payload["options"] = options
        self._call("PUT", "/scenario", payload)

    def end_scenario(self) -> None:
        """End the running scenario: the proxy's behavior mix is back."""
        self._call("DELETE", "/scenario")

    @contextlib.contextmanager
    def scenario(self, scenario: str, /, **options: Any) -> Iterator[None]:
        """Run ``scenario`` for the ``with`` block, then end it (also when the block raises):
        the proxy's behavior mix is back."""
        self.set_scenario(scenario, **options)
        try:
            yield
        finally:
            self.end_scenario()

    # -- the backend -----------------------------------------------------------------------

    def get_backend(self) -> str:
        """Where new connections go, as ``host:port``."""
        return self._call("GET", "/backend")["backend"]

    def set_backend(self, address: str) -> None:
        """Send new connections to ``address`` (``host:port``)."""
        self._call("PUT", "/backend", {"backend": address})

    # -- up or down -------------------------------------------------------------------------

    def is_enabled(self) -> bool:
        """Whether the proxy is up (listening)."""
        return self._call("GET", "/enabled")["enabled"]

    def set_enabled(self, enabled: bool) -> None:
        """Take the proxy down (its connections are closed, new ones refused) or up again."""
        self._call("PUT", "/enabled", {"enabled": enabled})

    # -- counters --------------------------------------------------------------------------

    def get_stats(self) -> dict[str, Any]:
        """The proxy's counters: connections, bytes and events each way, behaviors applied,
        picks per rule (``rules``) and per scenario step (``steps``)."""
        return self._call("GET", "/stats")

    # -- the process's proxies -------------------------------------------------------------

    def list_proxies(self) -> dict[str, dict[str, Any]]:
        """Every proxy of the process, by name: where it listens and forwards, its protocol,
        its mix, whether it is enabled."""
        return self._call("GET", "/proxies", root=True)["proxies"]

    def for_proxy(self, name: str) -> Client:
        """A client of the same API driving the proxy called ``name``."""
        return Client(self.host, self.port, self.scheme, self.timeout, name, self.token)


def _unknown_proxy(response: requests.Response) -> bool:
    """Whether ``response`` says that the proxy named in the path does not exist."""
    if response.status_code != 404:
        return False
    try:
        return response.json()["errors"][0]["name"] == "proxy"
    except (ValueError, KeyError, IndexError, TypeError):
        return False
