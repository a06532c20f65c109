"""The compiled kernels (kernels.cc): built with g++ on first use, loaded into TensorFlow.

In:  kernels.cc beside this file, and NCF_LASTFM_KERNEL: 1 (default) built for this CPU,
     portable for any CPU of its architecture (the same figures, a little slower), 0 for
     TensorFlow ops only.
Out: `fused_kernel()`, the loaded op library (LazyAdam's row update and the history sums), or
     None where it cannot be built: then TensorFlow ops do the same arithmetic, more slowly.
     `environment()` says what a run's figures depend on beyond its settings: the CPU, oneDNN,
     the kernels' build and the versions.
This module imports TensorFlow only when a kernel is built or loaded, so `environment_error`
can check the environment before TensorFlow starts.
"""
import functools
import hashlib
import os
import platform
import shutil
import stat
import subprocess
import sys
import threading

import backend
from errors import error_reason

KERNEL_CHOICES = ("1", "portable", "0")


def environment_error():
    """A one-line error if NCF_LASTFM_KERNEL is set to something else than KERNEL_CHOICES,
    else an empty string (the backend is backend.environment_error's)."""
    kernel = os.environ.get("NCF_LASTFM_KERNEL", "1")
    if kernel not in KERNEL_CHOICES:
        return (f"NCF_LASTFM_KERNEL={kernel!r} is not a kernel choice; expected 1 (built for "
                "this CPU, the default), portable or 0 (TensorFlow ops only)")
    return ""


# Any other value of NCF_LASTFM_KERNEL is refused by environment_error() before a model is built
KERNEL_MODE = os.environ.get("NCF_LASTFM_KERNEL", "1")
USE_KERNEL = KERNEL_MODE != "0"
KERNEL_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels.cc")
# No -ffast-math: the history sums must add in TensorFlow's order
KERNEL_FLAGS = ["-shared", "-fPIC", "-O3", "-fno-math-errno", "-w"]
# This CPU's widest vectors do the same arithmetic, more elements at a time (a history step at
# the notebook's scale about a fifth faster: docs/results.md); no fused multiply-add, which
# would round a * b + c once where TensorFlow rounds twice
NATIVE_FLAGS = ["-march=native", "-ffp-contract=off"]
_kernel = None   # the loaded op library; False once it could not be built
_kernel_lock = threading.Lock()   # one build at a time: the background one, or the first use
_kernel_library = ""   # the file it was loaded from
_announced = False   # the first build's line has been printed
_kernel_build = None   # "native" (built for this CPU), an x86-64 level, or "portable", once loaded
# The x86-64 micro-architecture levels (g++ 11 or later), widest first, with the CPU flags
# (/proc/cpuinfo's names) each adds: a CPU has a level when it has its flags and the lower
# levels'. Built for when -march=native cannot be (g++ 12 and TensorFlow's Eigen headers on a
# CPU with AVX-512 FP16): this CPU's AVX2 and FMA units without its newest instructions.
X86_LEVELS = (("x86-64-v4", {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}),
              ("x86-64-v3", {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe",
                             "xsave"}),
              ("x86-64-v2", {"cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3"}))
LEVEL_FLAGS = ["-ffp-contract=off"]   # as NATIVE_FLAGS: the same rounding as TensorFlow's


def fused_kernel():
    """The compiled kernels.cc op library (LazyAdam's update, the history sums), built with g++
    on first use into a cache folder (keyed by the source, TensorFlow's version and flags), or
    None if it cannot be built: then TensorFlow ops do the same arithmetic, more slowly. A
    build started by `build_in_background` is waited for."""
    global _kernel, _kernel_library, _kernel_build
    with _kernel_lock:
        if _kernel is None:
            import tensorflow as tf
            _kernel = False
            try:
                for build, options in build_choices():
                    try:
                        path = _build_kernel(**options)
                        break
                    except RuntimeError:   # g++ cannot build for this target: the next one
                        if build == "portable":
                            raise
                _kernel = tf.load_op_library(path)
                _kernel_library, _kernel_build = path, build
            except Exception as error:  # no compiler, no writable cache, another TensorFlow
                print(f"note: the compiled kernels (kernels.cc) are not available "
                      f"({error_reason(error, -1)}); using "
                      "TensorFlow ops (same arithmetic, slower)", file=sys.stderr)
    return _kernel or None


def build_in_background():
    """Build (or load) the kernels in a thread while the data load and split: a first run's
    20 to 45 s of g++ then overlap with them. The first model to need them waits for it.
    TensorFlow's only: on JAX nothing is built."""
    if USE_KERNEL and _kernel is None and not backend.is_jax():
        threading.Thread(target=fused_kernel, name="kernels.cc build", daemon=True).start()


def build_choices():
    """The builds tried, in order -> [(name, _build_kernel's options)]: this CPU's
    (-march=native), the widest x86-64 level this CPU has, then any CPU of its architecture."""
    choices = []
    if KERNEL_MODE != "portable":
        if native_target():
            choices.append(("native", {"native": True}))
        choices += [(level, {"native": False, "level": level}) for level in cpu_levels()[:1]]
    return choices + [("portable", {"native": False})]


def cpu_levels(cpuinfo="/proc/cpuinfo"):
    """The x86-64 levels this CPU has, widest first ([] on another architecture)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return []
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as stream:
            flags = next((set(line.split(":", 1)[1].split()) for line in stream
                          if line.startswith("flags")), set())
    except OSError:
        return []
    have = [level for level, needed in X86_LEVELS if needed <= flags]
    # a level counts only with every lower one (v4 without v3's FMA is not v4)
    names = [level for level, _ in X86_LEVELS]
    return [level for level in have if set(names[names.index(level):]) <= set(have)]


def kernel_loaded():
    """Has this process loaded the compiled kernels (for LazyAdam or the history sums)?"""
    return bool(_kernel)


def kernel_build():
    """How the loaded kernels were built: "native" (for this CPU), "portable" (for any CPU of
    its architecture), or None if this process has not loaded them."""
    return _kernel_build if _kernel else None


@functools.lru_cache(maxsize=None)
def native_target():
    """What g++'s -march=native stands for on this CPU (its expanded options), or "" where it
    cannot say: part of the built library's name, so a cache folder shared by several machines
    never hands one CPU's instructions to another."""
    try:
        shown = subprocess.run(["g++", *NATIVE_FLAGS, "-###", "-E", "-x", "c++", os.devnull],
                               capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return ""
    lines = [line for line in shown.stderr.splitlines() if "cc1" in line]
    return lines[-1].strip() if shown.returncode == 0 and lines else ""


def announce_compile():
    """Say once why the first run pauses (a failed build for this CPU falls back to another)."""
    global _announced
    if not _announced:
        _announced = True
        print("compiling the kernels (kernels.cc) for this machine: first run only, about 30 s",
              flush=True)


def _build_kernel(native=True, level=None):
    """The library built (once) for this CPU (`native`), for an x86-64 `level`, or for any CPU
    -> its path; a RuntimeError when g++ cannot build it."""
    import tensorflow as tf
    with open(KERNEL_SOURCE, "rb") as stream:
        source = stream.read()
    if level:
        target, extra = level, [f"-march={level}", *LEVEL_FLAGS]
    else:
        target = native_target() if native else ""
        extra = NATIVE_FLAGS if target else []
    flags = (KERNEL_FLAGS + extra + tf.sysconfig.get_compile_flags()
             + tf.sysconfig.get_link_flags())
    key = hashlib.sha256(b"\0".join([source, tf.__version__.encode(), " ".join(flags).encode(),
                                     target.encode()]))
    folder = private_folder(os.path.join(os.environ.get("XDG_CACHE_HOME")
                                         or os.path.expanduser("~/.cache"), "ncf_lastfm"))
    path = os.path.join(folder, f"lazy_adam-{key.hexdigest()[:16]}.so")
    if os.path.isfile(path) and _file_digest(path) != _recorded_digest(path):
        os.remove(path)            # not the library this script built: build it again
    compiler = compiler_version()
    if _failed_with(path) == compiler:   # this g++ cannot build this target: not each run
        raise RuntimeError(f"g++ failed before (see {path}.failed)")
    _remove_abandoned(path)
    if not os.path.isfile(path):
        announce_compile()
        partial = f"{path}.{os.getpid()}.part"
        try:
            built = subprocess.run(["g++", KERNEL_SOURCE, "-o", partial, *flags],
                                   capture_output=True, text=True, timeout=600)
            if built.returncode:
                with open(path + ".failed", "w") as stream:   # retried by another g++
                    stream.write(f"{compiler}\n{built.stderr}")
                raise RuntimeError(f"g++ failed: {built.stderr.strip()[-300:]}")
            with open(path + ".sha256.part", "w") as stream:
                stream.write(_file_digest(partial))
            os.replace(path + ".sha256.part", path + ".sha256")
            os.replace(partial, path)   # whole or not at all, even with parallel builds
            if os.path.isfile(path + ".failed"):   # another g++ failed before
                os.remove(path + ".failed")
        finally:
            if os.path.exists(partial):
                os.remove(partial)
    return path


def _remove_abandoned(path):
    """Partial builds of `path` whose process is gone (a run that ended while g++ ran in the
    background) are removed; a live process's are its own."""
    folder, name = os.path.split(path)
    for other in os.listdir(folder):
        pid = other[len(name) + 1:-len(".part")]
        if other.startswith(name + ".") and other.endswith(".part") and pid.isdigit():
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                os.remove(os.path.join(folder, other))
            except OSError:    # alive, another user's
                pass


def compiler_version():
    """The first line of `g++ --version`, and where that g++ is: a record of a failed build
    holds it, so that the build is tried again once g++ is upgraded or replaced."""
    try:
        shown = subprocess.run(["g++", "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return ""
    first = (shown.stdout.strip().splitlines() or [""])[0]
    return f"{first} ({shutil.which('g++')})"


def _failed_with(path):
    """The compiler a failed build of `path` recorded (None: no failed build recorded)."""
    try:
        with open(path + ".failed", encoding="utf-8", errors="replace") as stream:
            return stream.readline().rstrip("\n")
    except OSError:
        return None


def private_folder(folder):
    """`folder`, created if need be, once it is shown to be a folder (not a link) that only this
    user owns and can write: the library in it is code this process runs. Else RuntimeError,
    and the TensorFlow ops run instead."""
    os.makedirs(folder, mode=0o700, exist_ok=True)
    status = os.lstat(folder)
    if (not stat.S_ISDIR(status.st_mode) or status.st_uid != os.getuid()
            or status.st_mode & (stat.S_IWGRP | stat.S_IWOTH)):
        raise RuntimeError(f"{folder} is not a folder that only this user can write")
    return folder


def _file_digest(path):
    with open(path, "rb") as stream:
        return hashlib.sha256(stream.read()).hexdigest()


def _recorded_digest(path):
    try:
        with open(path + ".sha256") as stream:
            return stream.read().strip()
    except OSError:
        return ""


def environment():
    """What a run's figures depend on beyond its settings and data: the CPU, whether
    TensorFlow's oneDNN matrix products are on, whether the run used the compiled kernels and
    how they were built (for this CPU or any: the same figures, another speed), and the
    versions. oneDNN picks its code by the CPU, so the MLP's and NeuMF's figures move in
    their later digits from one CPU model to another (docs/results.md; on the two CPUs
    compared there, BPR's, GMF's and pop's did not)."""
    import keras
    import numpy as np
    onednn = None
    if not backend.is_jax():
        try:
            from tensorflow.python.util import _pywrap_util_port
            onednn = bool(_pywrap_util_port.IsMklEnabled())
        except (ImportError, AttributeError):   # a private API: gone in some TensorFlow build
            pass
    return {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "onednn": onednn,
            "compiled_kernels": kernel_loaded(), "kernel_build": kernel_build(),
            "python": platform.python_version(), **backend.versions(),
            "keras": keras.__version__, "numpy": np.__version__, "platform": platform.platform()}


def cpu_name(cpuinfo="/proc/cpuinfo"):
    """The CPU's model name, its family and model numbers (two CPUs can share a name) and its
    vector extensions, from Linux's /proc/cpuinfo; elsewhere what `platform` knows."""
    try:
        with open(cpuinfo) as stream:
            fields = {}
            for line in stream:
                if not line.strip():
                    break                                   # the first processor is enough
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        return platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    vector = [f for f in ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16",
                          "amx_tile") if f in flags]
    numbers = ", ".join(f"{key} {fields[key]}" for key in ("cpu family", "model")
                        if key in fields)
    name = fields.get("model name") or platform.processor() or platform.machine()
    details = "; ".join(part for part in (numbers, " ".join(vector)) if part)
    return f"{name} ({details})" if details else name
