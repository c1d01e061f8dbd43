"""The systemd notify protocol, without a systemd library.

Messages are `KEY=VALUE` lines sent as one datagram to the unix socket named by
`$NOTIFY_SOCKET` (a path, or an abstract-namespace name written with a leading
`@`). Everything is a no-op when the variable is unset, so the daemon behaves
the same from a terminal. Sending never raises: a notification that cannot be
delivered is logged once and the service keeps running.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import MutableMapping

import structlog

log = structlog.get_logger("monitor.notify")

_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Notifier:
    """Sends READY, STATUS, WATCHDOG, RELOADING and STOPPING to the service manager."""

    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec
        self._socket: socket.socket | None = None
        self._failed = False

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] | None = None, *, unset: bool = True) -> Notifier:
        """Read `$NOTIFY_SOCKET` and the watchdog variables; `unset` hides them from child processes."""
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        watchdog = _watchdog_usec(env)
        if unset:
            # Like sd_notify(unset_environment=1): a child (the embedded model server) must not
            # inherit the socket and speak for the service.
            for name in _VARIABLES:
                env.pop(name, None)
        return cls(address, watchdog_usec=watchdog)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to ping: half the watchdog timeout, as systemd recommends; None without a watchdog."""
        if not self.enabled or not self.watchdog_usec:
            return None
        return self.watchdog_usec / 2_000_000

    # -- messages -----------------------------------------------------------------------
    def ready(self, status: str | None = None) -> bool:
        """Started (or done reloading); True when the message was sent."""
        return self.send("READY=1", *_status(status))

    def status(self, text: str) -> bool:
        return self.send(*_status(text))

    def watchdog(self) -> bool:
        """Still alive: send at least every `watchdog_interval_s`."""
        return self.send("WATCHDOG=1")

    def reloading(self, status: str | None = None) -> bool:
        # MONOTONIC_USEC lets systemd tell this reload from an earlier one (systemd >= 253 requires it).
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}", *_status(status))

    def stopping(self, status: str | None = None) -> bool:
        """The ordered shutdown has begun."""
        return self.send("STOPPING=1", *_status(status))

    def send(self, *fields: str) -> bool:
        """Send one datagram of `KEY=VALUE` lines; True when it was handed to the socket."""
        if self.address is None or not fields:
            return False
        try:
            sock = self._connect()
            sock.sendto("\n".join(fields).encode("utf-8"), _sockaddr(self.address))
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning("systemd notification failed", socket=self.address, error=str(exc))
            return False
        return True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _connect(self) -> socket.socket:
        if self._socket is None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._socket.setblocking(False)  # never stall the event loop on a full socket buffer
        return self._socket


def _sockaddr(address: str) -> str:
    # An abstract-namespace name is written `@name` and addressed with a leading NUL byte.
    return "\0" + address[1:] if address.startswith("@") else address


def _status(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    return ("STATUS=" + " ".join(text.split()),)  # one line: a newline would start a new field


def _watchdog_usec(env: MutableMapping[str, str]) -> int | None:
    pid = env.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None  # the watchdog is meant for another process (we were forked or exec'd)
    value = env.get("WATCHDOG_USEC", "")
    return int(value) if value.isdigit() and int(value) > 0 else None
