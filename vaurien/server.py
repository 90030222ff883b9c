"""Every proxy of one process, by name: the :class:`Server`.

The command line's proxy is one of them (named ``default`` unless ``--name`` says otherwise),
the config file's ``[proxy:NAME]`` sections add more, and the Toxiproxy API
(:mod:`vaurien.toxiproxy_api`) creates, changes and deletes them while the process runs. Each
:class:`~vaurien.proxy.Proxy` is independent: its own listener, plugin registries, instances,
random source and counters. The control APIs change proxies through this object, one change at
a time (:attr:`Server.lock`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from gevent.lock import Semaphore

from vaurien.errors import VaurienError
from vaurien.proxy import Proxy
from vaurien.proxy_config import ProxyConfig, ServerConfig

log = logging.getLogger(__name__)


class Server:
    """The proxies of one process, by name, in the order they were made.

    ``config`` says what the process starts with (:class:`~vaurien.proxy_config.ServerConfig`);
    :meth:`start` starts those proxies, :meth:`add` and :meth:`remove` change the set later.
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.proxies: dict[str, Proxy] = {}
        #: Held while a control API changes proxies, so that two changes never interleave.
        self.lock = Semaphore()
        for proxy_config in config.proxies:
            if proxy_config.name in self.proxies:
                raise VaurienError(f"two proxies are named {proxy_config.name}")
            self.proxies[proxy_config.name] = Proxy(proxy_config)

    @classmethod
    def of(cls, config: ProxyConfig) -> Server:
        """A server of the one proxy ``config`` describes."""
        return cls(ServerConfig.single(config))

    def __iter__(self) -> Iterator[Proxy]:
        return iter(list(self.proxies.values()))

    def __len__(self) -> int:
        return len(self.proxies)

    def get(self, name: str) -> Proxy | None:
        """The proxy called ``name``, or None."""
        return self.proxies.get(name)

    @property
    def default(self) -> Proxy | None:
        """The command line's proxy (named by ``--name``, ``default`` unless told), which the
        control API's 1.x routes drive; None when there is none."""
        return self.proxies.get(self.config.name)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start every proxy; if one cannot listen, stop those started and raise."""
        started = []
        try:
            for proxy in self:
                proxy.start()
                started.append(proxy)
        except BaseException:
            for proxy in started:
                proxy.stop()
            raise

    def stop(self, timeout: float = 1.0) -> None:
        """Stop every proxy."""
        for proxy in self:
            proxy.stop(timeout)

    # -- changes ---------------------------------------------------------------------------

    def add(self, proxy: Proxy) -> Proxy:
        """Take ``proxy`` (already started or not) into the set under its name."""
        if proxy.name in self.proxies:
            raise VaurienError(f"a proxy is already named {proxy.name}")
        self.proxies[proxy.name] = proxy
        log.info("proxy %s added (backend %s)", proxy.name, proxy.backend)
        return proxy

    def remove(self, name: str, timeout: float = 1.0) -> Proxy:
        """Stop the proxy called ``name`` (its sessions are closed) and let it go."""
        proxy = self.proxies.pop(name)
        proxy.stop(timeout)
        log.info("proxy %s removed", name)
        return proxy

    def stats(self) -> dict[str, Any]:
        """Each proxy's counters, by name."""
        return {proxy.name: proxy.stats() for proxy in self}
