"""Network guard for tests/test_offline.py, loaded by every Python process that has this folder on PYTHONPATH
(Python imports `sitecustomize` at start-up): dvc, stage subprocesses, the Prefect server, Dask workers.

While $HEADSTART_NET_GUARD_LOG names a file, each process appends one JSON line when it starts, and one for every
attempt to reach beyond this machine, which it blocks (OSError): a connect or sendto to an address that is not
loopback, a name lookup of anything but localhost or an IP literal, and a bind to a non-loopback interface (something
listening where the network can reach it). Unix sockets and loopback pass untouched.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import sys

_LOG = os.environ.get("HEADSTART_NET_GUARD_LOG")
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def _record(event: str, **fields) -> None:
    line = json.dumps({"event": event, "pid": os.getpid(), "argv": sys.orig_argv, **fields})
    fd = os.open(_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())  # one write on an O_APPEND fd: lines from many processes never interleave
    finally:
        os.close(fd)


def _is_literal(host) -> bool:
    try:
        ipaddress.ip_address(str(host).strip("[]").split("%")[0])
        return True
    except ValueError:
        return False


def _is_loopback_host(host) -> bool:
    if host is None or host in _LOCAL_NAMES:
        return True
    host = host.decode() if isinstance(host, bytes) else str(host)
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0]).is_loopback
    except ValueError:
        return False


def _local_address(sock, address) -> bool:
    if getattr(sock, "family", None) not in (socket.AF_INET, socket.AF_INET6) or not isinstance(address, tuple):
        return True  # unix sockets, netlink...: never leave the machine
    return _is_loopback_host(address[0])


def _blocked(call: str, target) -> OSError:
    _record("blocked", call=call, target=repr(target))
    return OSError(f"network guard: {call} to {target!r} blocked (tests/netguard)")


def _install() -> None:
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_sendto, real_bind = socket.socket.sendto, socket.socket.bind
    real_getaddrinfo, real_gethostbyname = socket.getaddrinfo, socket.gethostbyname
    real_gethostbyname_ex, real_gethostbyaddr = socket.gethostbyname_ex, socket.gethostbyaddr

    def connect(self, address):
        if not _local_address(self, address):
            raise _blocked("connect", address)
        return real_connect(self, address)

    def connect_ex(self, address):
        if not _local_address(self, address):
            raise _blocked("connect_ex", address)
        return real_connect_ex(self, address)

    def sendto(self, data, *args):
        address = args[-1]
        if not _local_address(self, address):
            raise _blocked("sendto", address)
        return real_sendto(self, data, *args)

    def bind(self, address):
        if not _local_address(self, address):
            raise _blocked("bind", address)  # "" and 0.0.0.0 are every interface
        return real_bind(self, address)

    def lookup(call, real):
        def guarded(host, *args, **kwargs):
            if not (_is_loopback_host(host) or _is_literal(host)):
                raise _blocked(call, host)
            return real(host, *args, **kwargs)
        return guarded

    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
    socket.socket.sendto, socket.socket.bind = sendto, bind
    socket.getaddrinfo = lookup("getaddrinfo", real_getaddrinfo)
    socket.gethostbyname = lookup("gethostbyname", real_gethostbyname)
    socket.gethostbyname_ex = lookup("gethostbyname_ex", real_gethostbyname_ex)
    socket.gethostbyaddr = lookup("gethostbyaddr", real_gethostbyaddr)


if _LOG:
    _install()
    _record("start", executable=sys.executable)
