"""lxdlib: LXD's system-container model as a Python library, with no daemon.

    import lxdlib
    host = lxdlib.Host()                       # or Host(root=...) for an isolated store
    web = host.launch("busybox", "web", config={"limits.memory": "256MiB"})
    print(web.exec("echo hi").text)
    h2 = lxdlib.connect("ssh://root@host2")  # another host's lxdlib, over ssh (same verbs)

Every collection (``host.instances``, ``images``, ``profiles``, ``networks``, ``pools``,
``volumes``, ``inst.snapshots``) and every model has one shape: see ``lxdlib.model``.

Heavy modules (liblxc, pyroute2) load on first use, so ``import lxdlib`` stays cheap: the models
and collections below are imported when first named.
"""

from __future__ import annotations

from .errors import (
    TYPE_CHECKING,
    AlreadyExists,
    BulkError,
    Busy,
    CorruptArchive,
    CorruptRecord,
    DeviceNode,
    DiskFull,
    ExecError,
    ExecTimeout,
    HostLimit,
    IdmapNotAllowed,
    ImageError,
    InUse,
    InvalidArgument,
    InvalidConfig,
    InvalidName,
    LXCError,
    LxdlibError,
    NetworkError,
    NotFound,
    ProfileApplyError,
    QuotaExceeded,
    StorageError,
    TemplateError,
    Timeout,
    ToolMissing,
    UnsafeImage,
    UnsafeLink,
    UnsafeMemberName,
    UnsafeStream,
    UnsupportedBackup,
    WrongState,
)
from .version import VERSION

if TYPE_CHECKING:
    from typing import Any

    from .execresult import ExecResult
    from .host import Host
    from .images import Image, Images
    from .instances import Instance, Instances
    from .networks import Network, Networks
    from .profile_apply import Profile, Profiles
    from .snapshots import Snapshot, Snapshots
    from .sshhost import connect
    from .views import Pool, Pools
    from .volumes import Volume, Volumes
    from .wire import ConnectionLost, ProtocolError

__version__ = VERSION

__all__ = [
    "AlreadyExists",
    "BulkError",
    "Busy",
    "ConnectionLost",
    "CorruptArchive",
    "CorruptRecord",
    "DeviceNode",
    "DiskFull",
    "ExecError",
    "ExecResult",
    "ExecTimeout",
    "Host",
    "HostLimit",
    "IdmapNotAllowed",
    "Image",
    "ImageError",
    "Images",
    "InUse",
    "Instance",
    "Instances",
    "InvalidArgument",
    "InvalidConfig",
    "InvalidName",
    "LXCError",
    "LxdlibError",
    "Network",
    "NetworkError",
    "Networks",
    "NotFound",
    "Pool",
    "Pools",
    "Profile",
    "ProfileApplyError",
    "Profiles",
    "ProtocolError",
    "QuotaExceeded",
    "Snapshot",
    "Snapshots",
    "StorageError",
    "TemplateError",
    "Timeout",
    "ToolMissing",
    "UnsafeImage",
    "UnsafeLink",
    "UnsafeMemberName",
    "UnsafeStream",
    "UnsupportedBackup",
    "Volume",
    "Volumes",
    "WrongState",
    "connect",
]

# what users receive, by the module that defines it (imported on first use)
_LAZY = {
    "Host": ".host",
    "Instance": ".instances", "Instances": ".instances",
    "Image": ".images", "Images": ".images",
    "Profile": ".profile_apply", "Profiles": ".profile_apply",
    "Network": ".networks", "Networks": ".networks",
    "Pool": ".views", "Pools": ".views",
    "Volume": ".volumes", "Volumes": ".volumes",
    "Snapshot": ".snapshots", "Snapshots": ".snapshots",
    "ExecResult": ".execresult",
    "connect": ".sshhost",
    "ConnectionLost": ".wire", "ProtocolError": ".wire",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'lxdlib' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
