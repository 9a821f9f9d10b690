"""
Peer: asyncio streams; each "go" runs the blocking read with
loop.run_in_executor on a ThreadPoolExecutor of the default size
(min(32, cpus + 4) workers), one executor job per request.
Usage: python asyncio_server.py --port 0 --latency 0.05
"""

from __future__ import annotations

import asyncio
import signal
from concurrent.futures import ThreadPoolExecutor

from common import SimulatedButton, announce, answer, parse_args, report_counters


async def main() -> None:
    args = parse_args(__doc__)
    button = SimulatedButton(args.latency)
    executor = ThreadPoolExecutor()
    loop = asyncio.get_running_loop()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    message = await reader.readuntil(b"\0")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                reply = answer(message[:-1], None)
                if reply is None:
                    continue
                if reply == "":  # go: the read runs in the executor
                    reply = await loop.run_in_executor(executor, button.read)
                writer.write(reply.encode("utf-8") + b"\0")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", args.port, limit=16 * 1024)
    loop.add_signal_handler(signal.SIGUSR2, report_counters, button)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    announce(server.sockets[0].getsockname()[1])
    async with server:
        await stop.wait()
    executor.shutdown(wait=False, cancel_futures=True)


if __name__ == "__main__":
    asyncio.run(main())
