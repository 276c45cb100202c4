"""A TCP relay that holds each direction's bytes for a fixed time: latency without netem (the
kernel here has none). `python _delay.py LISTEN_PORT TARGET_PORT ONE_WAY_MS` relays
127.0.0.1:LISTEN_PORT to 127.0.0.1:TARGET_PORT; a round trip through it takes 2 × ONE_WAY_MS more.
Each direction keeps reading while earlier bytes wait, so throughput is not capped by the delay,
and bytes leave in the order they came."""

from __future__ import annotations

import asyncio
import sys
import time


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def forward() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.create_task(forward())
    try:
        while data := await reader.read(1 << 16):
            queue.put_nowait((time.monotonic() + delay, data))
    except ConnectionError:
        pass
    queue.put_nowait((0.0, b""))
    await sender


async def main(listen: int, target: int, delay: float) -> None:
    async def serve(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", target)
        await asyncio.gather(pipe(client_r, up_w, delay), pipe(up_r, client_w, delay), return_exceptions=True)

    server = await asyncio.start_server(serve, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) / 1000))
