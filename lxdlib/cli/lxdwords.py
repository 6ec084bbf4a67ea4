"""What LXD 5.0's ``lxc`` prints for the errors lxdlib raises: one table, used by the command's
error path only.

The library's messages name the object (``instance 'c1' not found``), which is what a caller of
the API wants to read; ``lxc`` says ``Instance not found``, and the ``lxdlib`` command mirrors
``lxc`` word for word, so scripts that match LXD's texts keep working. The choice is made from
the error's type and its structured attributes (``NotFound.kind``, ``WrongState.state``…) and the
verb that ran, never from its message. An error without an entry here keeps its own message.

Every text was read off a running LXD 5.0.2 (tests/integration/test_cli_lxd_errors.py holds the
cases). Imported only once an error is being printed: no cost on any command's start-up.
"""

from __future__ import annotations

from ..errors import (
    AlreadyExists,
    InvalidConfig,
    InvalidName,
    LXCError,
    LxdlibError,
    NotFound,
    WrongState,
)

#: ``NotFound.kind`` -> what LXD says, whatever the verb
NOT_FOUND = {
    "instance": "Instance not found",
    "profile": "Profile not found",
    "image": "Image not found",
    "image alias": "Image alias not found",
    "image property": "Property not found",
    "network": "Network not found",
    "storage pool": "Storage pool not found",
    "storage volume": "Storage pool volume not found",
    "storage volume snapshot": "Storage pool volume not found",
    "device": "Device doesn't exist",
}

#: (verb, ``WrongState.state``) -> what LXD says; a verb is the top-level command word
WRONG_STATE = {
    ("start", "RUNNING"): "The instance is already running",
    ("stop", "STOPPED"): "The instance is already stopped",
    ("restart", "STOPPED"): "The instance is already stopped",
    ("pause", "STOPPED"): "The container isn't running",
    ("pause", "FROZEN"): "The container is already frozen",
    ("exec", "STOPPED"): "Instance is not running",
    ("exec", "FROZEN"): "Instance is frozen",
    ("delete", "RUNNING"): "The instance is currently running, stop it first or pass --force",
    ("delete", "FROZEN"): "The instance is currently running, stop it first or pass --force",
    ("rename", "RUNNING"): "Renaming of running container not allowed",
    ("rename", "FROZEN"): "Renaming of running container not allowed",
    ("move", "RUNNING"): "Renaming of running container not allowed",
    ("move", "FROZEN"): "Renaming of running container not allowed",
}

_CREATES_INSTANCE = ("launch", "init", "copy")
#: the verbs that add a device to a profile or take it away (``network``'s, ``storage
#: volume``'s): LXD fetches the profile, then adds or removes the device
_PROFILE_DEVICE_VERBS = ("attach-profile", "detach-profile", "volume attach-profile",
                         "volume detach-profile")


def worded(e: LxdlibError, text: str) -> LxdlibError:
    """``e`` marked with the text the command prints for it (its message stays the library's,
    for ``--debug`` and the API): for the few errors whose LXD text needs what only the command
    line knows (the instance a profile was added to twice…)."""
    e.lxd_text = text  # type: ignore[attr-defined]
    return e


def device_refused(e: InvalidConfig, device: str, *, instance: bool) -> InvalidConfig:
    """``e`` (a device ``config device add`` or ``profile device add`` was given) in LXD's
    words: ``Device validation failed for "d1": …``, after ``Invalid devices: `` for an
    instance's. A refusal in lxdlib's own words (lower case) keeps them."""
    reason = e.reason
    if f"device {device!r}" not in str(e):  # not the new device's refusal
        return e
    if e.key == "type" and reason == "Unsupported device type":
        reason = f'Failed loading device "{device}": {reason}'
    elif not reason[:1].isupper():
        return e
    text = f'Device validation failed for "{device}": {reason}'
    worded(e, f"Invalid devices: {text}" if instance else text)
    return e


def verb_of(args: object) -> tuple[str, str]:
    """The command word and, for the commands with verbs (``profile add``…), the verb."""
    command = str(getattr(args, "command", "") or "")
    sub = ""
    for dest in ("config_cmd", "profile_cmd", "image_cmd", "network_cmd", "storage_cmd",
                 "file_command"):
        value = getattr(args, dest, None)
        if value:
            sub = str(value)
            break
    if command == "storage" and sub == "volume":
        sub = f"volume {getattr(args, 'volume_cmd', '') or ''}".rstrip()
    return command, sub


def lxd_text(e: LxdlibError, args: object, name: str | None = None) -> str:
    """What ``lxc`` prints after ``Error: `` for ``e`` raised by the command line ``args``
    (``name``: the instance of a batch it was raised for)."""
    text = getattr(e, "lxd_text", None)
    if isinstance(text, str):
        return text
    command, sub = verb_of(args)
    if isinstance(e, LXCError) and e.log_tail and command == "start":
        # a start liblxc tried and failed, its log read (not one refused beforehand, nor a
        # config liblxc cannot load, which has no log to look at): lxc points at the log
        names = getattr(args, "names", None) or []
        who = name or (str(names[0]) if len(names) == 1 else "")
        if who:
            return f"{e}\nTry `lxdlib info --show-log {who}` for more info"
    if isinstance(e, NotFound) and (command, sub) == ("storage", "volume attach") and \
            e.kind == "storage volume":  # LXD's device check loads the volume: its words
        rest = getattr(args, "rest", None) or []
        device = rest[0] if len(rest) == 2 else getattr(args, "volume", e.name)
        return (f'Failed add validation for device "{device}": Failed loading custom volume: '
                "Storage volume not found")
    if isinstance(e, NotFound):
        return str(e) if e.repair else _not_found(e, command, sub) or str(e)
    if isinstance(e, WrongState):
        return WRONG_STATE.get((command, getattr(e, "state", "")), str(e))
    if isinstance(e, AlreadyExists):
        return _exists(e, command, sub) or str(e)
    if isinstance(e, InvalidConfig) and getattr(e, "device", None) and \
            (command, sub) in (("config", "edit"), ("profile", "edit")):
        device_refused(e, str(getattr(e, "device", "")), instance=command == "config")
        text = getattr(e, "lxd_text", None)
        if isinstance(text, str):
            return text
    if isinstance(e, InvalidConfig) and (command, sub) in (("storage", "volume set"),
                                                          ("storage", "volume create")):
        # LXD names the volume as its storage layer does: <pool>_<volume>
        vol = f"{getattr(args, 'pool', '')}_{getattr(args, 'volume', '')}"
        if e.reason.startswith("unknown custom volume key"):
            return f'Invalid option for volume "{vol}" option "{e.key}"'
        if e.reason[:1].isupper():
            return f'Invalid value for volume "{vol}" option "{e.key}": {e.reason}'
    if isinstance(e, InvalidConfig):
        return _invalid_config(e, command, sub) or str(e)
    if isinstance(e, InvalidName):
        return _invalid_name(e, command) or str(e)
    return str(e)


def _invalid_name(e: InvalidName, command: str) -> str | None:
    if e.kind == "storage volume snapshot" and e.reason.startswith("Storage name"):
        return e.reason  # LXD's own refusal: its sentence alone
    if e.kind == "instance" and command in ("rename", "move", *_CREATES_INSTANCE):
        if "/" in e.name:
            return 'The character "/" is reserved for snapshots'
        return f"Invalid instance name: {e.reason}"
    if e.kind == "snapshot" and command == "snapshot":
        if "/" in e.name:
            return 'Invalid snapshot name: Cannot contain "/"'
        if " " in e.name:
            return (f'Failed creating instance snapshot record "{e.name}": Invalid instance '
                    "snapshot name: Cannot contain space or / characters")
    return None


def _not_found(e: NotFound, command: str, sub: str) -> str | None:
    kind, name = getattr(e, "kind", ""), str(getattr(e, "name", ""))
    if kind == "file" and command == "file":
        return "Not Found"
    if kind == "snapshot" and "/" in name:
        inst, _, snap = name.partition("/")
        if command == "restore":
            return f"Snapshot {name} does not exist"
        fetch = (f'Failed to fetch snapshot "{snap}" of instance "{inst}" in project '
                 '"default": InstanceSnapshot not found')
        if command == "delete":
            return f'Failed checking instance snapshot exists "local:{name}": {fetch}'
        return fetch
    if kind == "config key" and (command, sub) == ("config", "unset"):
        return f"Can't unset key '{name}', it's not currently set"
    if kind == "profile" and command == "image":  # an image's profiles, edited
        return f"Profile '{name}' doesn't exist"
    if kind == "profile" and command in ("launch", "init"):  # -p
        return f'Requested profile "{name}" doesn\'t exist'
    if kind == "device" and (command, sub) == ("storage", "volume detach"):
        return "No device found for this storage volume"
    if kind == "remote" and command == "remote":
        return f"Remote {name} doesn't exist"
    if kind == "network" and (command, sub) == ("network", "info"):
        return f'Network interface "{name}" not found'
    text = NOT_FOUND.get(kind)
    if text is None:
        return None
    if kind == "instance" and command == "export":
        return f"Create instance backup: {text}"
    if kind == "storage pool" and command in ("launch", "init"):  # -s
        return f'Failed loading storage pool "{name}": {text}'
    if kind == "profile" and (command, sub) == ("profile", "edit"):
        return f'Failed to retrieve profile "{name}": {text}'
    if kind == "instance" and command == "delete":
        return f'Failed checking instance exists "local:{name}": {text}'
    if kind == "profile" and ((command == "profile" and sub in ("show", "copy", "get"))
                              or sub in _PROFILE_DEVICE_VERBS):
        return f"Fetch profile: {text}"
    if kind == "network" and command == "network" and sub == "delete":
        return f"Failed loading network: {text}"
    if kind == "network" and command in ("launch", "init"):  # --network
        return f'Failed loading network "{name}": {text}'
    return text


def _exists(e: AlreadyExists, command: str, sub: str) -> str | None:
    kind, name = getattr(e, "kind", ""), str(getattr(e, "name", ""))
    if kind == "instance":
        if command in ("rename", "move"):
            return f'Name "{name}" already in use'
        if command in _CREATES_INSTANCE:
            return ('Failed creating instance record: Add instance info to the database: '
                    'This "instances" entry already exists')
    elif kind == "snapshot" and command == "snapshot":
        snap = name.rpartition("/")[2]
        return (f'Failed creating instance snapshot record "{snap}": Add snapshot info to the '
                'database: This "instances_snapshots" entry already exists')
    elif kind == "profile" and command == "profile":
        if sub == "rename":
            return f'Name "{name}" already in use'
        if sub in ("create", "copy"):
            return f'Error inserting "{name}" into database: The profile already exists'
    elif kind == "network" and (command, sub) == ("network", "create"):
        return "The network already exists"
    elif kind == "storage volume snapshot" and command == "storage":
        return f'Snapshot "{name}" already in use'
    elif kind in ("storage volume", "custom volume") and command == "storage":
        return "Volume by that name already exists"
    elif kind == "image alias" and command == "image":
        return f'Alias "{name}" already exists'
    elif kind == "device" and sub == "device":
        return "The device already exists"
    elif kind == "device" and (sub in _PROFILE_DEVICE_VERBS or
                               (command, sub) == ("storage", "volume attach")):
        return f"Device already exists: {name}"
    return None


def _invalid_config(e: InvalidConfig, command: str, sub: str) -> str | None:
    reason = getattr(e, "reason", "")
    if reason == "Unknown configuration key":
        reason = f"{reason}: {getattr(e, 'key', '')}"
    elif reason[:1].islower():
        # a refusal in lxdlib's own words (LXD's sentences, which the checks mirror, begin
        # with a capital: "Invalid value…", "Cannot use…"), such as a value of another YAML
        # type in an edit or a raw.lxc line liblxc refuses: which key, as lxdlib says it
        reason = f"'{getattr(e, 'key', '')}': {reason}"
    if command == "config" and sub in ("set", "unset", "edit"):
        return f"Invalid config: {reason}"
    if command in ("launch", "init"):
        return f"Failed creating instance record: {reason}"
    if command == "profile" and sub in ("set", "unset", "edit"):
        return reason
    if command == "storage" and sub in ("set", "unset", "edit") and \
            getattr(e, "key", "") == "source":  # refused before the new config is checked
        return "Pool source cannot be changed when not in pending state"
    return None
