"""Benchmark 6: what SMTP PIPELINING (RFC 2920) would save per message at a given round trip (issue 17).

aiosmtplib (the client the sender uses) cannot pipeline: each command waits for its reply under a lock, and
its protocol drops a reply that arrives while another is waiting to be read. So a raw asyncio client sends the
same messages three ways over one warm connection, one message after another:

- lock-step, as aiosmtplib does: MAIL, RCPT, DATA, then the content, each waiting for its reply (4 round trips);
- pipelined: MAIL, RCPT and DATA in one write, their three replies read together, then the content (2);
- pipelined across messages: the content of one message and MAIL, RCPT, DATA of the next in one write, which
  RFC 2920 allows ("the actual transfer of message content is explicitly allowed to be the first command in a
  group"): 1 round trip a message in a steady stream.

The round trip is put on the wire: a proxy in front of an undelayed aiosmtpd sink holds every byte the server
sends for `--smtp-rtt-ms`, in order, without holding up what follows it. (bench.sink's own reply delay waits per
command, so replies to pipelined commands would still come one delay apart: it cannot show pipelining, and the
last row shows that.) aiosmtplib through the same proxy is measured beside them as a check of the model.

    python -m bench.pipelining [--quick] [--messages N] [--smtp-rtt-ms N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from email.message import EmailMessage
from typing import Any

from bench.report import emit, table
from bench.sink import counting_sink

HOST = "127.0.0.1"
SENDER = "noreply@acme.example"


@contextlib.asynccontextmanager
async def delaying_proxy(upstream_port: int, delay: float) -> AsyncIterator[int]:
    """A TCP proxy on loopback that delivers what the server sends `delay` seconds late: its port."""

    async def serve(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(HOST, upstream_port)
        late: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def upstream() -> None:
            while data := await client_reader.read(65536):
                server_writer.write(data)
            server_writer.close()

        async def downstream() -> None:
            while data := await server_reader.read(65536):
                late.put_nowait((time.perf_counter() + delay, data))
            late.put_nowait((time.perf_counter() + delay, b""))

        async def deliver() -> None:
            while True:
                due, data = await late.get()
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                if not data:
                    break
                client_writer.write(data)
            client_writer.close()

        with contextlib.suppress(ConnectionError):
            await asyncio.gather(upstream(), downstream(), deliver())

    server = await asyncio.start_server(serve, HOST, 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


class RawClient:
    """Just enough SMTP to send prepared messages, reading replies in order."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        """Connect, read the greeting, EHLO."""
        client = cls(*await asyncio.open_connection(HOST, port))
        await client.expect(220)
        client.writer.write(b"EHLO bench.local\r\n")
        await client.expect(250)
        return client

    async def expect(self, code: int) -> None:
        """Read one (possibly multi-line) reply and check its code."""
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError("the server closed the connection")
            if line[3:4] != b"-":
                break
        if int(line[:3]) != code:
            raise RuntimeError(f"expected {code}, got {line!r}")

    async def quit(self) -> None:
        """QUIT and close."""
        self.writer.write(b"QUIT\r\n")
        await self.expect(221)
        self.writer.close()


def _envelope(recipient: str) -> bytes:
    return f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{recipient}>\r\n".encode()


def _content(message: EmailMessage) -> bytes:
    raw = message.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    lines = [b"." + line if line.startswith(b".") else line for line in raw.split(b"\r\n")]
    return b"\r\n".join(lines).rstrip(b"\r\n") + b"\r\n.\r\n"


async def lock_step(client: RawClient, messages: list[tuple[str, bytes]]) -> None:
    """Every command waits for its reply, as aiosmtplib does."""
    for recipient, content in messages:
        client.writer.write(f"MAIL FROM:<{SENDER}>\r\n".encode())
        await client.expect(250)
        client.writer.write(f"RCPT TO:<{recipient}>\r\n".encode())
        await client.expect(250)
        client.writer.write(b"DATA\r\n")
        await client.expect(354)
        client.writer.write(content)
        await client.expect(250)


async def pipelined(client: RawClient, messages: list[tuple[str, bytes]]) -> None:
    """MAIL, RCPT and DATA in one group, then the content."""
    for recipient, content in messages:
        client.writer.write(_envelope(recipient) + b"DATA\r\n")
        await client.expect(250)
        await client.expect(250)
        await client.expect(354)
        client.writer.write(content)
        await client.expect(250)


async def pipelined_across(client: RawClient, messages: list[tuple[str, bytes]]) -> None:
    """One message's content and the next one's MAIL, RCPT, DATA in one group."""
    group = b""
    for recipient, content in messages:
        client.writer.write(group + _envelope(recipient) + b"DATA\r\n")
        if group:
            await client.expect(250)  # the previous message's content
        await client.expect(250)
        await client.expect(250)
        await client.expect(354)
        group = content
    client.writer.write(group)
    await client.expect(250)


async def _timed(port: int, send: Callable[[RawClient, list[tuple[str, bytes]]], Awaitable[None]], work: Any) -> float:
    client = await RawClient.connect(port)
    started = time.perf_counter()
    await send(client, work)
    elapsed = time.perf_counter() - started
    await client.quit()
    return elapsed


async def _aiosmtplib(port: int, messages: list[EmailMessage]) -> float:
    import aiosmtplib

    smtp = aiosmtplib.SMTP(hostname=HOST, port=port, start_tls=False)
    await smtp.connect()
    started = time.perf_counter()
    for message in messages:
        await smtp.send_message(message)
    elapsed = time.perf_counter() - started
    await smtp.quit()
    return elapsed


def _messages(count: int) -> list[EmailMessage]:
    out = []
    for n in range(count):
        message = EmailMessage()
        message["From"] = f"Acme <{SENDER}>"
        message["To"] = f"user{n}@example.net"
        message["Subject"] = f"Pipelining {n}"
        message["X-Genro-Mail-ID"] = f"pipe-{n}"
        message.set_content(("the order of your shipment " * 40 + "\n") * 1)
        out.append(message)
    return out


async def _measure(count: int, rtt_ms: float) -> dict[str, Any]:
    messages = _messages(count)
    work = [(str(m["To"]), _content(m)) for m in messages]
    ms: dict[str, float] = {}
    with counting_sink() as (sink_port, sink):
        async with delaying_proxy(sink_port, rtt_ms / 1000) as port:
            ms["aiosmtplib"] = 1000 * await _aiosmtplib(port, messages) / count
            ms["lock_step"] = 1000 * await _timed(port, lock_step, work) / count
            ms["pipelined"] = 1000 * await _timed(port, pipelined, work) / count
            ms["pipelined_across"] = 1000 * await _timed(port, pipelined_across, work) / count
        accepted = sink.accepted
    with counting_sink(reply_delay_ms=rtt_ms) as (delaying_port, delaying):
        ms["sink_delay_lock_step"] = 1000 * await _timed(delaying_port, lock_step, work) / count
        ms["sink_delay_pipelined"] = 1000 * await _timed(delaying_port, pipelined, work) / count
        accepted += delaying.accepted
    if accepted != 6 * count:  # aiosmtplib and three raw clients, then two on the delaying sink
        raise RuntimeError(f"the sinks accepted {accepted} of {6 * count} messages")
    return {"ms_per_message": ms, "accepted": accepted}


def main(argv: list[str] | None = None) -> int:
    """Run the pipelining measurement and print its table and JSON line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 messages, 5 ms: checks it runs")
    parser.add_argument("--messages", type=int, default=None)
    parser.add_argument("--smtp-rtt-ms", type=float, default=None, help="round trip to the server (default 50)")
    args = parser.parse_args(argv)
    count = args.messages or (5 if args.quick else 40)
    rtt = args.smtp_rtt_ms if args.smtp_rtt_ms is not None else (5.0 if args.quick else 50.0)
    result = asyncio.run(_measure(count, rtt))
    ms = result["ms_per_message"]
    labels = {
        "aiosmtplib": "aiosmtplib (lock-step), the sender's client",
        "lock_step": "raw client, lock-step: MAIL, RCPT, DATA, content",
        "pipelined": "raw client, pipelined: MAIL+RCPT+DATA, content",
        "pipelined_across": "raw client, pipelined across messages: content+MAIL+RCPT+DATA",
        "sink_delay_lock_step": "bench.sink's per-command delay, lock-step (3 delayed replies)",
        "sink_delay_pipelined": "bench.sink's per-command delay, pipelined (cannot show it)",
    }
    rows = [
        [labels[name], f"{value:.1f}", f"{value / rtt:.2f}" if rtt else "", f"{1000 / value:.1f}"]
        for name, value in ms.items()
    ]
    print(
        table(
            f"One connection, {count} messages one after another, a round trip of {rtt:g} ms on the wire",
            ["client", "ms per message", "round trips", "msg/s"],
            rows,
        )
    )
    saved = ms["lock_step"] - ms["pipelined"]
    print(f"PIPELINING saves {saved:.1f} ms a message ({saved / ms['lock_step']:.0%} of lock-step) at {rtt:g} ms.")
    emit(
        "pipelining", {"quick": args.quick, "messages": count, "smtp_rtt_ms": rtt, **result, "met": None}
    )  # no target: a measurement
    return 0


if __name__ == "__main__":
    sys.exit(main())
