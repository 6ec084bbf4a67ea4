"""Name rules for instances, snapshots, profiles and image aliases.

Instance names follow LXD's ``IsHostname`` (they become the container's hostname and a directory
name), with LXD's own messages. The other kinds follow LXD where it has a rule and add what lxdlib
needs because each name also becomes a file or directory name under the state root: no ``.``/``..``,
no ``/``, no control characters, a length cap. Every failure raises
:class:`~lxdlib.errors.InvalidName`.
"""

from __future__ import annotations

from ..errors import InvalidName
from ..patterns import Pattern
from .text import has_control

SNAPSHOT_DELIMITER = "/"

_HOSTNAME_CHARS = Pattern(r"[-a-zA-Z0-9]+")
SNAPSHOT_NAME_MAX = 255
PROFILE_NAME_MAX = 63
ALIAS_NAME_MAX = 255


def validate_instance_name(name: str) -> None:
    """LXD ``IsHostname``: 1-63 bytes of ``[-a-zA-Z0-9]``, no leading or trailing ``-``,
    not all digits."""
    if not isinstance(name, str):
        raise InvalidName("instance", repr(name), "Name must be a string")
    if not 1 <= len(name.encode("utf-8", "surrogatepass")) <= 63:
        raise InvalidName("instance", name, "Name must be 1-63 characters long")
    if name.startswith("-"):
        raise InvalidName("instance", name, 'Name must not start with "-" character')
    if name.endswith("-"):
        raise InvalidName("instance", name, 'Name must not end with "-" character')
    if name.isascii() and name.isdigit():
        raise InvalidName("instance", name, "Name cannot be a number")
    if not _HOSTNAME_CHARS.fullmatch(name):
        raise InvalidName(
            "instance", name, "Name can only contain alphanumeric and hyphen characters"
        )


def validate_snapshot_name(name: str) -> None:
    """LXD ``ValidSnapName`` (non-empty, not ``..``, none of ``* /\\`` or space), plus: not ``.``,
    no control characters, at most 255 bytes (it becomes a directory or subvolume name)."""
    if not isinstance(name, str):
        raise InvalidName("snapshot", repr(name), "Snapshot name must be a string")
    if name == "":
        raise InvalidName("snapshot", name, "Invalid instance snapshot name, cannot be empty")
    if name in (".", ".."):
        raise InvalidName("snapshot", name, f"Invalid instance snapshot name {name!r}")
    if any(ch in name for ch in "* /\\"):
        raise InvalidName(
            "snapshot", name, "Cannot contain *, spaces, forward or back slashes"
        )
    if has_control(name) or any(ch.isspace() for ch in name):
        raise InvalidName("snapshot", name, "Cannot contain whitespace or control characters")
    if len(name.encode("utf-8", "surrogatepass")) > SNAPSHOT_NAME_MAX:
        raise InvalidName("snapshot", name, f"Name must be at most {SNAPSHOT_NAME_MAX} bytes long")


def validate_profile_name(name: str) -> None:
    """LXD's rules (non-empty, no ``/``, not ``.``/``..``) plus no whitespace or control
    characters and at most 63 bytes. ``default`` is a valid name; only its rename and delete
    are refused, by the profile store."""
    if not isinstance(name, str):
        raise InvalidName("profile", repr(name), "Profile name must be a string")
    if name == "":
        raise InvalidName("profile", name, "No name provided")
    if "/" in name:
        raise InvalidName("profile", name, "Profile names may not contain slashes")
    if name in (".", ".."):
        raise InvalidName("profile", name, f"Invalid profile name {name!r}")
    if has_control(name) or any(ch.isspace() for ch in name):
        raise InvalidName("profile", name, "Cannot contain whitespace or control characters")
    if len(name.encode("utf-8", "surrogatepass")) > PROFILE_NAME_MAX:
        raise InvalidName("profile", name, f"Name must be at most {PROFILE_NAME_MAX} bytes long")


def validate_alias_name(name: str) -> None:
    """Image alias: non-empty, no whitespace or control characters, no ``:`` (the CLI reads
    ``remote:alias``); ``/`` is allowed (``debian/12/amd64``) as LXD allows it, but no
    ``/``-separated part may be empty, ``.`` or ``..``.

    Aliases live only in ``images/aliases.yaml`` and never become a path component here, so
    ``/`` is harmless; ``.``/``..`` parts are refused because an alias also goes into URLs
    (``/1.0/images/aliases/<name>`` of a remote), where such a part names another alias."""
    if not isinstance(name, str):
        raise InvalidName("alias", repr(name), "Alias name must be a string")
    if name == "":
        raise InvalidName("alias", name, "Alias name missing")
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise InvalidName("alias", name, 'No "/"-separated part may be empty, "." or ".."')
    if ":" in name:
        raise InvalidName("alias", name, 'Cannot contain ":"')
    if has_control(name) or any(ch.isspace() for ch in name):
        raise InvalidName("alias", name, "Cannot contain whitespace or control characters")
    if len(name.encode("utf-8", "surrogatepass")) > ALIAS_NAME_MAX:
        raise InvalidName("alias", name, f"Name must be at most {ALIAS_NAME_MAX} bytes long")


def split_snapshot_ref(ref: str) -> tuple[str, str | None]:
    """``'inst/snap'`` -> ``('inst', 'snap')``; ``'inst'`` -> ``('inst', None)``.

    Splits at the first ``/`` like LXD and validates both halves, so ``'a/b/c'`` is refused
    (a snapshot name cannot contain ``/``).
    """
    if not isinstance(ref, str):
        raise InvalidName("instance", repr(ref), "Name must be a string")
    parent, sep, snap = ref.partition(SNAPSHOT_DELIMITER)
    validate_instance_name(parent)
    if not sep:
        return parent, None
    validate_snapshot_name(snap)
    return parent, snap


def join_snapshot_ref(instance: str, snapshot: str) -> str:
    """The full ``inst/snap`` name LXD shows."""
    return f"{instance}{SNAPSHOT_DELIMITER}{snapshot}"
