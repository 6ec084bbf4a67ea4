"""lxdlib: LXD's system-container model as a Python library, with no daemon.

    import lxdlib
    host = lxdlib.Host()                       # or Host(root=...) for an isolated store
    web = host.launch("busybox", "web", config={"limits.memory": "256MiB"})
    print(web.exec("echo hi").text)

Heavy modules (liblxc, pyroute2) load on first use, so ``import lxdlib`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    AlreadyExists,
    Busy,
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
    ToolMissing,
    UnsafeImage,
    WrongState,
)

if TYPE_CHECKING:
    from .host import Host
    from .instances import Instance
    from .runtime import ExecResult

__version__ = "0.1.0"

__all__ = [
    "AlreadyExists",
    "Busy",
    "ExecResult",
    "Host",
    "ImageError",
    "InUse",
    "Instance",
    "InvalidArgument",
    "InvalidConfig",
    "InvalidName",
    "LXCError",
    "LxdlibError",
    "NetworkError",
    "NotFound",
    "ProfileApplyError",
    "QuotaExceeded",
    "StorageError",
    "TemplateError",
    "ToolMissing",
    "UnsafeImage",
    "WrongState",
]

_LAZY = {"Host": ".host", "Instance": ".instance", "ExecResult": ".runtime"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'lxdlib' has no attribute {name!r}")
