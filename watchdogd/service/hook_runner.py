"""Running a hook's program: on the daemon's own thread where it may, else through the socket-activated runner.

The daemon's unit has no network (PrivateNetwork=yes, AF_UNIX only), and its children inherit that, so a hook
that tells the fleet's scheduler (nova's API, the Kubernetes API server) cannot run from it. Where systemd runs,
kvm-watchdog-hook@.service (one per connection on /run/kvm-watchdog-hook.sock, root's only) runs it instead, with
the network and nothing more of the daemon's rights. It reads the config itself and runs only a hook of that
config's, by name, and only if the daemon asked for the same program: what the daemon sends is never a command.
One request a connection, a JSON line of at most REQUEST_BYTES: {"hook", "run", "state", "fields"}; the answer
{"result", "detail"}. Without the socket (no systemd; the suite's session libvirt) the daemon runs it itself.
"""

from __future__ import annotations

import enum
import json
import os
import subprocess
import threading
from typing import BinaryIO, Dict, Mapping, Sequence, Tuple

from .. import children, helper_socket
from ..config import HookConfig

SOCKET = "/run/kvm-watchdog-hook.sock"
REQUEST_BYTES = 256 * 1024
ANSWER_BYTES = 64 * 1024
MARGIN_S = 15.0  # beyond the hook's own timeout: the runner's start and answer
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


class HookResult(enum.Enum):
    OK = "ok"
    FAILED = "failed"
    TIMEOUT = "timeout"


def run_hook(
    hook: HookConfig, state: str, fields: Mapping[str, str], cancel: threading.Event
) -> Tuple[HookResult, str]:
    """The hook's program, the event as JSON on its stdin, its whole group ended at its timeout (children.py)."""
    env = dict(ENV, KVMWD_STATE=state, KVMWD_ON=hook.on, KVMWD_SUBJECT=fields.get("KVMWD_SUBJECT", ""))
    payload = json.dumps(dict(fields), sort_keys=True).encode()
    try:
        done = children.run_with_timeout(hook.run, hook.timeout, cancel, input=payload, env=env)
    except subprocess.TimeoutExpired:
        return HookResult.TIMEOUT, f"ended at its timeout ({hook.timeout:g}s) with its process group"
    except children.Cancelled:
        return HookResult.FAILED, "ended: the watchdog is stopping"
    except OSError as exc:
        return HookResult.FAILED, f"cannot run {hook.run[0]}: {exc.strerror}"
    said = (done.stdout or b"").decode("utf-8", "replace").strip().splitlines()
    tail = said[-1][:300] if said else ""
    if done.returncode != 0:
        return HookResult.FAILED, f"exit {done.returncode}{': ' + tail if tail else ''}"
    return HookResult.OK, tail


def run(
    hook: HookConfig, state: str, fields: Mapping[str, str], cancel: threading.Event, socket_path: str = SOCKET
) -> Tuple[HookResult, str]:
    """Through the runner where its socket is, else here."""
    if not os.path.exists(socket_path):
        return run_hook(hook, state, fields, cancel)
    try:
        return _ask(socket_path, hook, state, fields)
    except (OSError, ValueError, KeyError) as exc:
        return HookResult.FAILED, f"the hook runner at {socket_path} did not answer: {exc}"


def _ask(socket_path: str, hook: HookConfig, state: str, fields: Mapping[str, str]) -> Tuple[HookResult, str]:
    request = {"hook": hook.name, "run": list(hook.run), "state": state, "fields": dict(fields)}
    line = json.dumps(request, sort_keys=True).encode()
    answer = json.loads(helper_socket.ask(socket_path, line, hook.timeout + MARGIN_S, ANSWER_BYTES).decode("utf-8"))
    return HookResult(answer["result"]), str(answer.get("detail", ""))[:300]


def serve(inp: BinaryIO, out: BinaryIO, hooks: Sequence[HookConfig]) -> int:
    """Answer one request with the config's own hook; 0, or 2 for a request that names none of them."""
    try:
        request = json.loads(inp.readline(REQUEST_BYTES).decode("utf-8"))
        name, argv, state = str(request["hook"]), [str(a) for a in request["run"]], str(request["state"])
        fields: Dict[str, str] = {str(k): str(v) for k, v in dict(request["fields"]).items()}
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return _answer(out, HookResult.FAILED, "not a hook request", 2)
    ours = [h for h in hooks if h.name == name]
    if not ours or list(ours[0].run) != argv or state not in ("open", "resolved"):
        why = f"no hook {name!r} running {argv!r} in the runner's config: the daemon and the runner read different ones"
        return _answer(out, HookResult.FAILED, why, 2)
    result, detail = run_hook(ours[0], state, fields, threading.Event())
    return _answer(out, result, detail, 0)


def _answer(out: BinaryIO, result: HookResult, detail: str, status: int) -> int:
    out.write(json.dumps({"result": result.value, "detail": detail}).encode() + b"\n")
    out.flush()
    return status
