"""Writing files so that a crash or a full disk never leaves a partial file under its real name.

In:  a path and a function that writes to a temporary path (or text, or a JSON-able payload).
Out: the file, complete, or no change at all. Files are UTF-8. A version folder of an export
     (`new_version`: FOLDER/1/, FOLDER/2/, ..., TensorFlow Serving's layout) the same way,
     whole or not at all.
"""
import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import tempfile

import numpy as np


def atomic_write(path, write):
    """`write(temporary)`, then rename to `path`: a crash or a full disk never leaves a partial
    file under the real name. The temporary name is new and created exclusively, so a link
    planted there is never followed and two runs never write into each other's file; it ends
    with the real name (Keras checks `.keras`, NumPy `.npz`). The file's bytes reach the disk
    before the rename, and the rename before this returns, so a power cut leaves the old file
    or the new one too, not a named file of zeros."""
    handle, temporary = new_temporary(path)
    try:
        os.close(handle)
        write(temporary)
        _sync(temporary, os.O_RDONLY)
        os.replace(temporary, path)
    except BaseException:
        if os.path.lexists(temporary):
            os.remove(temporary)
        raise
    _sync(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def export_versions(folder):
    """The version numbers of an export in TensorFlow Serving's layout (FOLDER/1/saved_model.pb,
    FOLDER/2/...), sorted; [] for a folder that does not exist or is empty; None for anything
    else (a file, or a folder holding anything but version folders), never to be written into."""
    if not os.path.lexists(folder):
        return []
    if not os.path.isdir(folder):
        return None
    names = os.listdir(folder)
    if not all(re.fullmatch(r"[0-9]{1,18}", name)
               and os.path.isfile(os.path.join(folder, name, "saved_model.pb")) for name in names):
        return None
    return sorted(int(name) for name in names)


def new_version(folder, write):
    """`write(path)` of `folder`'s next version folder, under a temporary name beside `folder`,
    then one rename into place: `folder` itself when it is new, else folder/N. A reader
    (TensorFlow Serving polls for versions) sees the whole version or none; a crash leaves a
    `.tmp-` folder beside `folder`, never a part of a version in it -> the version's path, or
    None when `folder` is not new, empty or an export (`export_versions`)."""
    versions = export_versions(folder)
    if versions is None:
        return None
    version = str(max(versions, default=0) + 1)
    absolute = os.path.abspath(folder)
    os.makedirs(os.path.dirname(absolute), exist_ok=True)
    temporary = tempfile.mkdtemp(dir=os.path.dirname(absolute),
                                 prefix=".tmp-", suffix="-" + os.path.basename(absolute))
    try:
        os.chmod(temporary, 0o777 & ~_umask())
        write(os.path.join(temporary, version))
        for root, folders, names in os.walk(temporary, topdown=False):
            for name in names:
                _sync(os.path.join(root, name), os.O_RDONLY)
            _sync(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        if os.path.isdir(absolute):
            os.rename(os.path.join(temporary, version), os.path.join(absolute, version))
            os.rmdir(temporary)
        else:
            os.rename(temporary, absolute)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    _sync(os.path.dirname(absolute), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    _sync(absolute, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    return os.path.join(folder, version)


def _sync(path, flags):
    """fsync a file or a folder (its entries: a rename is in the folder)."""
    handle = os.open(path, flags)
    try:
        os.fsync(handle)
    except OSError as error:   # a file system that cannot sync a folder: the file is synced
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(handle)


def new_temporary(path):
    """A new file beside `path`, created exclusively, with an ordinary new file's mode (not
    mkstemp's 0600) -> (open handle, its path)."""
    folder, name = os.path.split(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix="-" + name)
    os.fchmod(handle, 0o666 & ~_umask())
    return handle, temporary


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path, text):
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(text)


def write_json(path, payload):
    with open(path, "w", encoding="utf-8") as stream:
        json.dump(payload, stream, indent=2, default=json_default)
        stream.write("\n")


def json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


@contextlib.contextmanager
def folder_lock(folder):
    """Hold `folder` for this run: a second run on it fails at once with EBUSY, rather than
    both writing the same checkpoints. The lock goes with the process, even when killed."""
    path = os.path.join(folder, ".lock")
    handle = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OSError(errno.EBUSY, "another run is using this folder", folder) from None
        yield
    finally:
        os.close(handle)


@contextlib.contextmanager
def reading(path):
    """Marks an OSError raised inside as a failure to read `path` (an input), so the message
    names the input rather than advising another output folder."""
    try:
        yield
    except OSError as error:
        error.reading = True
        error.filename = error.filename or path
        raise
