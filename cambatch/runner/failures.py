"""When OUT cannot be written: a full disk, a read-only file system, a folder that vanished mid-run.

Such a failure is no bug of cambatch and no fault of one image: the run stops with one line that
names what could not be written, how much of the report is safe, and what to do (exit 4).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ..errors import OutputUnwritable
from ..layout import OutputLayout
from . import resume

_FULL = (errno.ENOSPC, errno.EDQUOT)
_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)
_VANISHED = (errno.ENOENT, errno.ESTALE)
_KNOWN = (*_FULL, *_READ_ONLY, *_VANISHED, errno.EIO)


def output_failure(exc: OSError, layout: OutputLayout) -> OutputUnwritable | None:
    """The one-line failure for an `OSError` met writing under OUT, or None when it is another error."""
    code = _errno_of(exc)
    filename = getattr(exc, "filename", None)
    if code is None or (filename is not None and not _under(Path(os.fsdecode(filename)), layout.root)):
        return None
    where = Path(os.fsdecode(filename)) if filename is not None else layout.root
    if code in _VANISHED and not layout.root.is_dir():
        return OutputUnwritable(f"the output folder {layout.root} vanished during the run; rerun to start it again")
    kept = f"{_saved_images(layout)} images already saved are kept"
    if code in _FULL:
        return OutputUnwritable(f"no space left on device writing {where}; {kept}; free space and rerun")
    if code in _READ_ONLY:
        return OutputUnwritable(f"{where} is not writable ({os.strerror(code)}); {kept}; make it writable and rerun")
    return OutputUnwritable(f"{os.strerror(code)} writing {where}; {kept}; check the disk and rerun")


def _errno_of(exc: OSError) -> int | None:
    """The errno, also for pyarrow's IO errors, which carry it only in their text."""
    if exc.errno in _KNOWN:
        return exc.errno
    text = str(exc)
    return next((code for code in _KNOWN if os.strerror(code) in text), None)


def _under(path: Path, root: Path) -> bool:
    return path.absolute().is_relative_to(root)


def _saved_images(layout: OutputLayout) -> int:
    """Images in the report's complete parts (this run's and earlier ones')."""
    try:
        return len(resume.indexed(layout.report_dir))
    except OSError:
        return 0
