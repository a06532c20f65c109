"""Writing files so that a crash or a full disk never leaves a partial file under its real name.

In:  a path and a function that writes to a temporary path (or text, or a JSON-able payload).
Out: the file, complete, or no change at all. Files are UTF-8.
"""
import json
import os

import numpy as np


def atomic_write(path, write):
    """`write(temporary)`, then rename to `path`: a crash or a full disk never leaves a partial
    file under the real name. The temporary name keeps the suffix (Keras checks `.keras`)."""
    folder, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(folder, f".tmp-{name}")
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


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
