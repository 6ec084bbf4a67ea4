"""lxdlib's version, in one place: the package (``lxdlib.__version__``, setup.cfg's ``attr:``),
``lxdlib --version`` and ``lxdlib version``, and the ``serve`` protocol's greeting read it here.
No imports: ``--version`` answers before anything else is loaded."""

VERSION = "0.1.0"
