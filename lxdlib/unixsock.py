"""A unix socket file reached through a handle on its directory, for the proxy device's two
sides: the forwarder that makes and removes its listening socket, and the device code that
clears one a dead forwarder left.

A socket's path may pass a directory a host user owns, who can swap a component for a symlink
between a check and the connect or unlink that follows: each side opens the directory once
(``O_PATH``) and names the socket through it, ``/proc/self/fd/<dirfd>/<name>``, which the
kernel resolves to that directory whatever the path says by then. A socket address holds only
``SUN_PATH_MAX`` bytes, so a longer such name falls back to the path itself.

The forwarder imports this before it may enter a container's mount namespace (where it loads
nothing more). ``socket`` is imported where a probe needs it: the pure config layer reads
``SUN_PATH_MAX`` from here to refuse an address no socket holds, and every verb loads that
layer (``socket`` brings ``selectors``; the forwarder has both already).
"""

from __future__ import annotations

#: The bytes of ``sockaddr_un.sun_path``, its terminating NUL included: a path of this length
#: or more is no socket address.
SUN_PATH_MAX = 108


def via_dir(dirfd: int, name: str, path: str) -> str:
    """The address of the socket ``name`` in the directory held open as ``dirfd``:
    ``/proc/self/fd/<dirfd>/<name>``, so a bind or connect lands in that directory even if a
    component of ``path`` (the same socket's full path) was swapped for a symlink meanwhile;
    ``path`` itself when that name is too long for a socket address. Only where ``/proc`` is
    this process's own (not inside a container's mount namespace)."""
    held = f"/proc/self/fd/{dirfd}/{name}"
    return held if len(held.encode()) < SUN_PATH_MAX else path


def refuses_connections(address: str) -> bool:
    """Whether nothing listens on the unix stream socket at ``address``: a connect is refused,
    as at the file a killed forwarder left, which may then be removed. Any other outcome (a
    listener answers, or is too busy to within a second; no such file; no permission) is
    False. The kernel refuses a connect to a file that is no socket too: callers check that
    it is one (``S_ISSOCK``, through the same directory handle) first."""
    import socket

    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(address)
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    finally:
        probe.close()
    return False
