"""Helpers several command modules share: ``key=value`` arguments, the ``edit`` verbs' editor
round trip and the YAML they read back, and LXD's one-line progress.

They live here, below every command module, so that no command module has to import another
(``config``, ``profile``, ``network``, ``storage``, ``image`` and the instance verbs all parse
``key=value`` lists and edit YAML the same way).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from typing import Any

import yaml

from ..errors import InvalidArgument
from ..progress import LineProgress

#: LXD's one-line progress on a terminal (the instance and image verbs' name for it)
ProgressBar = LineProgress


def parse_kv(items: list[str], what: str) -> dict[str, str]:
    """``["a=1", "b=x=y"]`` → ``{"a": "1", "b": "x=y"}``; ``what`` names the items in errors."""
    out = {}
    for it in items or []:
        if "=" not in it:
            raise InvalidArgument(f"{what} must be key=value, got {it!r}")
        k, v = it.split("=", 1)
        out[k] = v
    return out


def edit_text(text: str) -> str:
    """New content for an ``edit`` verb: stdin when it is not a terminal, else ``$EDITOR``."""
    if not sys.stdin.isatty():
        return sys.stdin.read()
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    with tempfile.NamedTemporaryFile("w+", suffix=".yaml", delete=False) as f:
        f.write(text)
        path = f.name
    try:
        subprocess.call([*editor.split(), path])
        with open(path) as f:
            return f.read()
    finally:
        os.unlink(path)


def load_mapping(text: str) -> dict[str, Any]:
    """The YAML mapping an ``edit`` verb got back; anything else is the user's mistake."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise InvalidArgument(f"invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise InvalidArgument("expected a YAML mapping")
    return data


def str_map(d: Any, what: str) -> dict[str, str]:
    """An edited ``config`` mapping as strings: YAML reads ``true`` and ``5`` as a bool and an
    int, but LXD's keys are strings (``"true"``, ``"5"``)."""
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise InvalidArgument(f"{what} must be a mapping")
    return {str(k): ("true" if v is True else "false" if v is False else str(v))
            for k, v in d.items()}


def devices_map(d: Any) -> dict[str, dict[str, str]]:
    """An edited ``devices`` mapping: each device's keys as strings, as ``str_map`` does."""
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise InvalidArgument("devices must be a mapping")
    return {str(k): str_map(v, f"device {k}") for k, v in d.items()}
