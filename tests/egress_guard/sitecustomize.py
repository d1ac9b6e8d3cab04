"""The egress guard: this machine behaves as an offline one, and every attempt to reach out is recorded.

Loaded into every Python process of a test session through ``PYTHONPATH`` (Python
imports ``sitecustomize`` at start-up), it is active when ``INFERBOOK_EGRESS_LOG``
names a file. It then refuses, as an offline machine would, and appends one JSON
line per attempt to that file:

- a DNS lookup of any name other than this host's own and ``localhost``;
- a TCP connect or UDP send to an address that is not loopback or this host's own;
- hosts named in ``INFERBOOK_EGRESS_ALLOW`` (comma-separated: the package registries, which a
  user's machine does reach, e.g. when an environment is built on first use) are let through and
  recorded with ``"allowed": true``;
- (with ``INFERBOOK_FORBIDDEN_PATHS``, folders separated by ``os.pathsep``) an ``open``
  or directory listing under one of those folders: the project must not read
  ``../shared``, which a user's clone does not have.

Each record names the process and the innermost frames that made the call, so a
report says who reached out, not only where to. ``guard.cjs`` beside this file
does the same for Node (``NODE_OPTIONS=--require``).
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import sys
import time
import traceback

_LOG = os.environ.get("INFERBOOK_EGRESS_LOG")
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback", ""}


def _record(what: str, target: str, allowed: bool = False) -> None:
    frames = [f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in traceback.extract_stack()[:-3]][-6:]
    line = json.dumps({"runtime": "python", "pid": os.getpid(), "argv": sys.argv[:3], "what": what,
                       "target": target, "allowed": allowed, "time": time.time(),
                       "frames": frames})
    try:
        with open(_LOG, "a", encoding="utf-8") as log:  # type: ignore[arg-type]
            log.write(line + "\n")
    except OSError:
        pass


def install() -> None:
    real_getaddrinfo = socket.getaddrinfo
    host = socket.gethostname()
    local_names = _LOCAL_NAMES | {host.lower(), host.split(".")[0].lower()}
    own: set[str] = set()
    try:
        own = {info[4][0] for info in real_getaddrinfo(host, None)}
    except OSError:
        pass

    def is_local_address(address: str) -> bool:
        address = address.split("%")[0]
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return address.lower() in local_names
        return ip.is_loopback or ip.is_unspecified or address in own

    allow = {h.strip().lower() for h in os.environ.get("INFERBOOK_EGRESS_ALLOW", "").split(",") if h.strip()}
    allowed_addresses: set[str] = set()  # resolved from an allowed name: a registry's servers

    def refuse_name(name: object) -> bool:
        """Raise for a name an offline machine could not resolve; True if it is an allowed registry."""
        text = name.decode() if isinstance(name, bytes) else ("" if name is None else str(name))
        try:
            ipaddress.ip_address(text.split("%")[0])
            return False  # an address literal needs no lookup; connect() judges it
        except ValueError:
            pass
        if text.lower() in allow:
            _record("dns", text, allowed=True)
            return True
        if not is_local_address(text):
            _record("dns", text)
            raise socket.gaierror(socket.EAI_NONAME, f"{text}: refused by the inferbook egress guard (offline)")
        return False

    def getaddrinfo(name, *args, **kwargs):  # type: ignore[no-untyped-def]
        registry = refuse_name(name)
        infos = real_getaddrinfo(name, *args, **kwargs)
        if registry:
            allowed_addresses.update(str(info[4][0]) for info in infos)
        return infos

    def by_name(real):  # type: ignore[no-untyped-def]
        def lookup(name, *args):  # type: ignore[no-untyped-def]
            refuse_name(name)
            return real(name, *args)
        return lookup

    socket.getaddrinfo = getaddrinfo
    socket.gethostbyname = by_name(socket.gethostbyname)
    socket.gethostbyname_ex = by_name(socket.gethostbyname_ex)

    def check(sock: socket.socket, address: object, what: str) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
            target = str(address[0])
            if not is_local_address(target) and target not in allowed_addresses:
                kind = "udp" if sock.type == socket.SOCK_DGRAM else "tcp"
                _record(f"{what}-{kind}", f"{target}:{address[1]}")
                raise OSError(101, f"Network is unreachable: {target}:{address[1]} "
                                   f"(refused by the inferbook egress guard)")

    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_sendto = socket.socket.sendto

    def connect(self, address):  # type: ignore[no-untyped-def]
        check(self, address, "connect")
        return real_connect(self, address)

    def connect_ex(self, address):  # type: ignore[no-untyped-def]
        check(self, address, "connect")
        return real_connect_ex(self, address)

    def sendto(self, data, *args):  # type: ignore[no-untyped-def]
        check(self, args[-1], "send")
        return real_sendto(self, data, *args)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket.socket.sendto = sendto  # type: ignore[method-assign]

    forbidden = tuple(os.path.join(os.path.abspath(p), "") for p in
                      os.environ.get("INFERBOOK_FORBIDDEN_PATHS", "").split(os.pathsep) if p)
    if forbidden:
        def audit(event: str, args: tuple) -> None:  # type: ignore[type-arg]
            if (event in ("open", "os.listdir", "os.scandir") and args
                    and isinstance(args[0], (str, bytes, os.PathLike))):
                path = os.path.join(os.path.abspath(os.fsdecode(args[0])), "")
                if path.startswith(forbidden):
                    _record("read", path.rstrip(os.sep))
                    raise PermissionError(f"{path.rstrip(os.sep)}: refused by the inferbook egress guard "
                                          "(a clone has no such folder)")
        sys.addaudithook(audit)


def _chain() -> None:
    """Run the sitecustomize this one shadows, if the interpreter has one."""
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    path = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec and spec.loader and spec.origin != os.path.abspath(__file__):
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


if _LOG:
    install()
_chain()
