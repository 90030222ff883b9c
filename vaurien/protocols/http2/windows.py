"""The connection-level part of the relay: SETTINGS mirrored from one side to the other,
connection windows, and priorities (a mixin of :class:`~.relay.Relay`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from h2.events import PriorityUpdated, RemoteSettingsChanged, WindowUpdated
from h2.exceptions import H2Error
from h2.settings import SettingCodes

from vaurien.errors import ProtocolError
from vaurien.protocols.http2.streams import TO_BACKEND, TO_CLIENT, Side


class Windows:
    """Keeps each side's settings and windows in step with the other's."""

    client: Side
    backend: Side
    _client_settings: dict

    # The relay's own: sending what a leg holds, and a client stream's id on the backend.
    _flush: Callable[[Any], None]
    _back_id: Callable[[int], int]

    def _window(self, side: Side, event: WindowUpdated) -> None:
        if event.stream_id == 0:
            conn = side.conn
            window = conn.outbound_flow_control_window
            if window > side.peer_max:
                side.peer_max = window
                self._grow(self.client if side is self.backend else self.backend, window)
            for leg in list(side.stalled):
                self._flush(leg)
            return
        stream = side.streams.get(event.stream_id)
        if stream is not None:
            leg = stream.response if side is self.client else stream.request
            if leg.outbox:
                self._flush(leg)

    def _settings(self, side: Side, event: RemoteSettingsChanged) -> None:
        changed = {code: change.new_value for code, change in event.changed_settings.items()}
        if side is self.backend:
            self._mirror(self.client, changed, TO_CLIENT)
        else:
            self._mirror(self.backend, changed, TO_BACKEND)
        if SettingCodes.INITIAL_WINDOW_SIZE in changed:
            for leg in list(side.stalled):
                self._flush(leg)

    def _priority(self, side: Side, event: PriorityUpdated) -> None:
        if side is not self.client:
            return
        stream = side.streams.get(event.stream_id)
        if stream is None or event is stream.request.priority:
            return  # (h2 reports a HEADERS frame's priority twice: it went with the headers)
        if stream.back_id is None:
            stream.request.priority = event
            return
        if not stream.back_closed:
            depends_on = self._back_id(event.depends_on)
            try:
                self.backend.conn.prioritize(
                    stream.back_id, event.weight, depends_on, event.exclusive
                )
            except H2Error:
                pass  # priority is advice: one that no longer applies is dropped

    def _mirror(self, target: Side, changed: dict, codes: tuple) -> None:
        settings = {code: value for code, value in changed.items() if code in codes}
        if not settings:
            return
        if target.conn is None:
            self._client_settings.update(settings)
        else:
            self._apply(target, settings)

    def _apply(self, side: Side, settings: dict) -> None:
        local = side.conn.local_settings
        settings = {code: value for code, value in settings.items() if local.get(code) != value}
        if not settings:
            return
        frame = settings.get(SettingCodes.MAX_FRAME_SIZE, 0)
        if frame > side.scanner.limit:
            side.scanner.limit = frame  # the peer may use it once it has read the SETTINGS
        try:
            side.conn.update_settings(settings)
        except (H2Error, ValueError) as e:
            raise ProtocolError(f"{side.role}: cannot pass on the other side's SETTINGS: {e}")

    def _grow(self, side: Side, size: int) -> None:
        """Give ``side``'s peer a connection window of ``size`` bytes (if it is larger)."""
        if side.conn is not None and size > side.advertised:
            side.conn.increment_flow_control_window(size - side.advertised)
            side.advertised = size
