"""Asking a socket-activated helper unit (the capture helper, the hook runner): one request line, one answer.

The deadline is for the whole exchange, the helper's own start included: a helper that hangs costs its caller
`limit_s`, never more, and an answer past `max_answer` bytes is cut there (the caller's parse then refuses it).
"""

from __future__ import annotations

import socket
import time
from typing import List


def ask(path: str, request: bytes, limit_s: float, max_answer: int) -> bytes:
    """Send `request` and a newline to the helper at `path`; what it answered before closing. Raises OSError."""
    deadline = time.monotonic() + limit_s
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(limit_s)
        s.connect(path)
        s.sendall(request + b"\n")
        chunks: List[bytes] = []
        size = 0
        while size < max_answer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise OSError(f"no answer within {limit_s:g}s")
            s.settimeout(left)
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    return b"".join(chunks)
