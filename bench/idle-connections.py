#!/usr/bin/env python3
"""Opens COUNT keep-alive connections to 127.0.0.1:PORT, sends one GET PATH on each and reads
its answer, prints "ready N" once all are open and idle, and keeps them until stdin closes.

usage: idle-connections.py PORT PATH COUNT [HEADER ...]
"""
import asyncio
import sys


async def open_one(port, request):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
    await reader.readexactly(length)
    return writer


async def main():
    port, path, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    extra = "".join(f"{h}\r\n" for h in sys.argv[4:])
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n{extra}\r\n".encode()
    writers = []
    for start in range(0, count, 500):  # bounded bursts: the listen backlog is finite
        batch = [open_one(port, request) for _ in range(start, min(count, start + 500))]
        writers += await asyncio.gather(*batch)
    print(f"ready {len(writers)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for w in writers:
        w.close()


asyncio.run(main())
