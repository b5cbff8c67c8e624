#!/usr/bin/env python3
"""Opens N HTTP/1.1 keep-alive connections to ADDR, sends one GET TARGET on each, reads the
answers, prints "ready" and holds the connections open for at most HOLD seconds (bench/load.sh
kills it sooner, once it has read the gateway's RSS).

    idle_clients.py 127.0.0.1:8080 /v1/shelves/7/books 1000 120
"""

import socket
import sys
import time


def read_response(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response headers")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1]
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the end of the body")
        body += chunk
    return status


def main():
    addr, target, count, hold = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    host, port = addr.rsplit(":", 1)
    request = f"GET {target} HTTP/1.1\r\nHost: {addr}\r\n\r\n".encode()
    sockets = []
    for _ in range(count):
        sock = socket.create_connection((host, int(port)), timeout=30)
        sock.sendall(request)
        sockets.append(sock)
    statuses = [read_response(sock) for sock in sockets]
    bad = [s for s in statuses if s != b"200"]
    if bad:
        print(f"{len(bad)} of {count} requests failed: {bad[0]!r}", flush=True)
        sys.exit(1)
    print(f"ready {count}", flush=True)
    time.sleep(hold)


if __name__ == "__main__":
    main()
