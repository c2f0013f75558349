"""Small real-socket clients for the tests."""

from __future__ import annotations

import asyncio
from xml.sax.saxutils import escape, quoteattr

TIMEOUT_S = 10.0


def xml_packet(command: str, variables: dict[str, str] | None = None,
               doc_variables: dict[str, str] | None = None) -> bytes:
    """A plain, namespace-free command packet, built by hand."""

    def section(tag: str, values: dict[str, str]) -> str:
        items = "".join(f"<var name={quoteattr(k)}>{escape(v)}</var>" for k, v in values.items())
        return f"<{tag}>{items}</{tag}>"

    body = section("job_variables", variables or {})
    if doc_variables is not None:
        body += section("doc_variables", doc_variables)
    return (f'<?xml version="1.0"?>\n<job_command name={quoteattr(command)}>{body}'
            '</job_command>\n').encode()


def submit(project: str, monitor: bool = True, **variables: str) -> bytes:
    values = {"ProjectName": project, **variables}
    if monitor:
        values["_sys_ClientJobMonitor"] = "true"
    return xml_packet("SubmitJob", values)


async def exchange(port: int, data: bytes, *, host: str = "127.0.0.1", shut_wr: bool = False,
                   chunk: int | None = None, source: str | None = None) -> list[str]:
    """Send ``data`` (optionally in ``chunk``-byte pieces), read to EOF, return the lines.
    ``source`` is the local address to connect from (any of 127.0.0.0/8 on Linux)."""
    reader, writer = await asyncio.open_connection(
        host, port, local_addr=(source, 0) if source else None)
    try:
        if chunk:
            for start in range(0, len(data), chunk):
                writer.write(data[start:start + chunk])
                await writer.drain()
        else:
            writer.write(data)
        if shut_wr:
            writer.write_eof()
        raw = await asyncio.wait_for(reader.read(), TIMEOUT_S)
    finally:
        writer.close()
        await writer.wait_closed()
    return split_lines(raw)


def split_lines(raw: bytes) -> list[str]:
    """Split wire bytes into lines, checking every line ends with CRLF."""
    text = raw.decode("utf-8")
    assert text == "" or text.endswith("\r\n"), f"stream does not end with CRLF: {text[-80:]!r}"
    return text.split("\r\n")[:-1]


class Session:
    """An open connection: send a packet, then read lines one at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, data: bytes, host: str = "127.0.0.1") -> Session:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(data)
        return cls(reader, writer)

    async def line(self) -> str:
        raw = await asyncio.wait_for(self.reader.readline(), TIMEOUT_S)
        assert raw.endswith(b"\r\n"), f"incomplete line {raw!r}"
        return raw[:-2].decode()

    async def rest(self) -> list[str]:
        return split_lines(await asyncio.wait_for(self.reader.read(), TIMEOUT_S))

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()
