#!/usr/bin/env python3
"""A TCP proxy that delays every byte by a fixed time each way, to benchmark over a
network with round trips (this kernel has no netem). Chunks keep their order and are
not held back by one another: each leaves its fixed delay after it arrived.

    delay_proxy.py LISTEN_PORT TARGET_PORT ONE_WAY_DELAY_MS
"""
import asyncio
import socket
import sys
import time


def no_delay(writer):
    # Each delayed chunk leaves as it falls due, not held for the previous one's ACK.
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def pipe(reader, writer, delay):
    no_delay(writer)
    queue = asyncio.Queue()

    async def send():
        while True:
            due, chunk = await queue.get()
            if chunk is None:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(chunk)
            await writer.drain()
        writer.close()

    sender = asyncio.create_task(send())
    try:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            queue.put_nowait((time.monotonic() + delay, chunk))
    except ConnectionError:
        pass
    queue.put_nowait((0, None))
    await sender


async def main():
    listen_port, target_port, delay_ms = (int(arg) for arg in sys.argv[1:4])
    delay = delay_ms / 1000

    async def handle(client_reader, client_writer):
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            pipe(client_reader, server_writer, delay),
            pipe(server_reader, client_writer, delay),
            return_exceptions=True,
        )

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    async with server:
        await server.serve_forever()


asyncio.run(main())
