"""A small asyncio HTTP/1.1 client on h11 for the HTTP tests: requests over one
kept-alive connection, and server-sent events read as they come."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

import h11

TIMEOUT_S = 10.0


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


@dataclass
class Event:
    name: str
    data: str
    id: str | None = None


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@dataclass
class HttpClient:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    port: int
    default_headers: dict[str, str] = field(default_factory=dict)
    conn: h11.Connection = field(default_factory=lambda: h11.Connection(h11.CLIENT))
    _pending: bytes = b""

    @classmethod
    async def open(cls, port: int, *, ssl: Any = None, **headers: str) -> HttpClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ssl)
        return cls(reader, writer, port, dict(headers))

    async def close(self) -> None:
        self.writer.close()
        # (ssl.SSLError is an OSError: a TLS peer that closed without notice)
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _send(self, method: str, path: str, headers: dict[str, str] | None,
              body: bytes | None) -> None:
        if self.conn.our_state is h11.DONE:
            self.conn.start_next_cycle()
        fields = {"Host": f"127.0.0.1:{self.port}", **self.default_headers, **(headers or {})}
        if body is not None:
            fields["Content-Length"] = str(len(body))
        self.writer.write(self.conn.send(h11.Request(method=method, target=path,
                                                     headers=list(fields.items()))))
        if body:
            self.writer.write(self.conn.send(h11.Data(data=body)))
        self.writer.write(self.conn.send(h11.EndOfMessage()))

    async def _event(self) -> Any:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await asyncio.wait_for(self.reader.read(65536), TIMEOUT_S)
            self.conn.receive_data(data)

    async def request(self, method: str, path: str, *, headers: dict[str, str] | None = None,
                      json_body: Any = None, body: bytes | None = None) -> Answer:
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        self._send(method, path, headers, body)
        head = await self._event()
        while isinstance(head, h11.InformationalResponse):
            head = await self._event()
        assert isinstance(head, h11.Response), head
        chunks = []
        while True:
            event = await self._event()
            if isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
        names = {k.decode().lower(): v.decode() for k, v in head.headers}
        return Answer(head.status_code, names, b"".join(chunks))

    async def get(self, path: str, **kwargs: Any) -> Answer:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> Answer:
        return await self.request("POST", path, **kwargs)

    # -- server-sent events ----------------------------------------------------------------

    async def open_events(self, path: str, headers: dict[str, str] | None = None) -> Answer:
        """Send the request and read the head; then ``next_events`` reads the body."""
        self._send("GET", path, {"Accept": "text/event-stream", **(headers or {})}, None)
        head = await self._event()
        assert isinstance(head, h11.Response), head
        self._pending = b""
        names = {k.decode().lower(): v.decode() for k, v in head.headers}
        return Answer(head.status_code, names, b"")

    async def next_event(self) -> Event | None:
        """The next whole event (comments and retry fields skipped), or None at the end."""
        while True:
            if b"\n\n" in self._pending:
                raw, self._pending = self._pending.split(b"\n\n", 1)
                event = _parse_event(raw.decode())
                if event is not None:
                    return event
                continue
            message = await self._event()
            if isinstance(message, h11.EndOfMessage):
                return None
            if isinstance(message, h11.ConnectionClosed):
                raise ConnectionError("closed mid-stream")
            self._pending += bytes(message.data)


def _parse_event(raw: str) -> Event | None:
    name, data, event_id = "message", [], None
    for line in raw.split("\n"):
        if not line or line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if key == "event":
            name = value
        elif key == "data":
            data.append(value)
        elif key == "id":
            event_id = value
    if not data and event_id is None:
        return None
    return Event(name, "\n".join(data), event_id)
