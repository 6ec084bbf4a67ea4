"""``python -m lxdlib``: the ``lxdlib`` command (how one root's lxdlib runs another's, e.g. as
the other side of a migration, without depending on where the script was installed)."""

from .cli.main import entry

entry()
