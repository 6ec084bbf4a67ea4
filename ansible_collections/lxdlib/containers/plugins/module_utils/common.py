# Copyright: lxdlib developers
# Apache License 2.0 (see the repository's LICENSE)
"""What every lxdlib module does the same way: find the host's root, import lxdlib (a module
run where lxdlib is missing fails with a message, not a traceback), turn lxdlib's typed errors
into a failed task, and shape what is returned."""

from __future__ import annotations

import datetime
import traceback
from typing import Any, Dict, Optional

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

LXDLIB_IMPORT_ERROR: Optional[str] = None
try:
    import lxdlib
except ImportError:  # reported by open_host, with the interpreter that lacked it
    lxdlib = None
    LXDLIB_IMPORT_ERROR = traceback.format_exc()


def root_argument_spec() -> Dict[str, Any]:
    """The ``root`` option all modules take (see the ``lxdlib.containers.root`` fragment)."""
    return {"root": {"type": "path"}}


def open_host(module: AnsibleModule) -> Any:
    """``lxdlib.Host`` for the task's root. No ``root`` means lxdlib's own default
    (``$LXDLIB_ROOT`` or ``/var/lib/lxdlib``); a root that is named must exist, so a mistyped
    path fails instead of starting an empty root beside the real one."""
    if lxdlib is None:
        module.fail_json(msg=missing_required_lib("lxdlib"), exception=LXDLIB_IMPORT_ERROR)
    try:
        return lxdlib.Host(module.params.get("root"))
    except lxdlib.LxdlibError as e:
        fail(module, e)


def fail(module: AnsibleModule, error: BaseException, **extra: Any) -> None:
    """Fail the task with lxdlib's message and the error's type (``NotFound``, ``InUse``…),
    which a playbook can test in ``failed_when``."""
    module.fail_json(msg=str(error), error=type(error).__name__, **extra)


def is_lxdlib_error(error: BaseException) -> bool:
    return lxdlib is not None and isinstance(error, lxdlib.LxdlibError)


def plain(value: Any) -> Any:
    """Make a value JSON-able for a module's result (datetimes as ISO 8601 text)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    return value


def parse_time(text: Optional[str]) -> Optional[datetime.datetime]:
    """An ISO 8601 time from a task (``2026-01-31T12:00:00+00:00``); one without a zone is
    taken as UTC, as lxdlib wants aware times."""
    if text is None or text == "":
        return None
    when = datetime.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: Optional[str]) -> Optional[datetime.timedelta]:
    """A span like ``30m``, ``12h``, ``7d``, ``2w`` (a bare number is seconds)."""
    if text is None or text == "":
        return None
    raw = str(text).strip()
    unit = raw[-1:].lower()
    if unit in _UNITS:
        number, factor = raw[:-1], _UNITS[unit]
    else:
        number, factor = raw, 1
    try:
        count = float(number)
    except ValueError:
        raise ValueError("invalid duration %r (a number with s, m, h, d or w)" % (text,))
    if count < 0:
        raise ValueError("invalid duration %r: negative" % (text,))
    return datetime.timedelta(seconds=count * factor)
