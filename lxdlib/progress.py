"""Progress bars for the operations that report ``progress(done, total)``.

Image downloads, imports, publish and export take a ``progress=`` callback with bytes done and
bytes expected (``total`` 0 when unknown). ``tqdm_progress`` turns that into a tqdm bar — a
widget in Jupyter (with ipywidgets), text on a terminal — so a notebook cell needs one argument:

    host.images.import_file(path, aliases=["deb"], progress=tqdm_progress("import"))
"""

from __future__ import annotations

from typing import Any


class TqdmProgress:
    """A ``progress(done, total)`` callback drawing one tqdm bar; it closes itself at the end
    (or use it as a context manager so a failed operation closes it too)."""

    def __init__(self, desc: str = "", *, unit: str = "B", **tqdm_kw: Any) -> None:
        try:
            from tqdm.auto import tqdm  # type: ignore[import-untyped,import-not-found,unused-ignore]
        except ImportError:
            raise ImportError("progress bars need tqdm: pip install tqdm") from None
        self._tqdm = tqdm
        self._kw = {"desc": desc, "unit": unit, "unit_scale": unit == "B",
                    "unit_divisor": 1024 if unit == "B" else 1000, "leave": True, **tqdm_kw}
        self.bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = self._tqdm(total=total or None, **self._kw)
        bar = self.bar
        if total and bar.total != total:
            bar.total = total
            bar.refresh()
        if done > bar.n:
            bar.update(done - bar.n)
        if total and done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None and not getattr(self.bar, "disable", False):
            self.bar.close()

    def __enter__(self) -> TqdmProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def tqdm_progress(desc: str = "", *, unit: str = "B", **tqdm_kw: Any) -> TqdmProgress:
    """A callback for ``progress=`` that drives a tqdm bar (``tqdm.auto``)."""
    return TqdmProgress(desc, unit=unit, **tqdm_kw)
