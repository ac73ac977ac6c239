#!/usr/bin/env python3
"""Hold many idle keep-alive connections open to a server and read its RSS.

Opens COUNT connections to 127.0.0.1:PORT, sends one authenticated GET on
each and reads the whole response, so every connection is an established
HTTP/1.1 keep-alive connection the server has served once. With all of them
idle it reads VmRSS of PID (and its descendants), then sends a second GET on
each to prove the server kept them open, and prints one JSON line. It exits
1 when a request fails or a connection was closed. Standard library only;
it speaks just enough HTTP/1.1 for Content-Length responses.
"""

import argparse
import json
import os
import socket
import sys
import time

# How long each socket operation may take before the run fails, in seconds.
SOCKET_TIMEOUT_SECONDS = 10.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True, help="server process whose RSS is read")
    parser.add_argument("--count", type=int, required=True, help="connections to open")
    parser.add_argument("--path", required=True)
    parser.add_argument("--token", required=True, help="bearer token sent on every request")
    parser.add_argument("--settle-seconds", type=float, default=1.0, help="idle time before reading RSS")
    args = parser.parse_args()

    request = (
        f"GET {args.path} HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\n"
        f"Authorization: Bearer {args.token}\r\n\r\n"
    ).encode("ascii")
    rss_before = rss_kib(args.pid)

    connections = []
    try:
        for _ in range(args.count):
            connection = socket.create_connection(("127.0.0.1", args.port), timeout=SOCKET_TIMEOUT_SECONDS)
            connections.append(connection)
            exchange(connection, request)
        time.sleep(args.settle_seconds)
        rss_idle = rss_kib(args.pid)
        for connection in connections:
            exchange(connection, request)
    except (OSError, ValueError) as error:
        print(f"idle_connections.py: connection {len(connections)} of {args.count} failed: {error}", file=sys.stderr)
        return 1
    finally:
        for connection in connections:
            connection.close()

    print(json.dumps({"connections": args.count, "rss_before_kib": rss_before, "rss_idle_kib": rss_idle}))
    return 0


def exchange(connection: socket.socket, request: bytes) -> None:
    """Send one request and read one complete 2xx response from the connection."""
    connection.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        data += receive(connection)
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    if not 200 <= status < 300:
        raise ValueError(f"status {status}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" not in headers:
        raise ValueError("response has no Content-Length")
    length = int(headers["content-length"])
    while len(body) < length:
        body += receive(connection)
    if headers.get("connection", "").lower() == "close":
        raise ValueError("server closed the keep-alive connection")


def receive(connection: socket.socket) -> bytes:
    chunk = connection.recv(65536)
    if not chunk:
        raise ValueError("connection closed by the server")
    return chunk


def rss_kib(pid: int) -> int:
    """Return the summed VmRSS of pid and its descendants, in KiB."""
    total = 0
    for member in [pid, *descendants(pid)]:
        try:
            with open(f"/proc/{member}/status", encoding="ascii") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except FileNotFoundError:
            continue
    return total


def descendants(pid: int) -> list[int]:
    children = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as listing:
                children.extend(int(child) for child in listing.read().split())
        except FileNotFoundError:
            continue
    found = []
    for child in children:
        found.append(child)
        found.extend(descendants(child))
    return found


if __name__ == "__main__":
    sys.exit(main())
