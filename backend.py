"""Which Keras backend runs the script, and the seam between the model code and it.

models.py and training.py are written in Keras layers and keras.ops; what is fast in one
backend's own terms comes from `fast()`: tf_fast.py on TensorFlow (row-sparse updates, the
compiled kernels on a CPU, tf.data), jax_fast.py on JAX (the same arithmetic with fixed shapes).
TensorFlow, the notebook's, is the default; KERAS_BACKEND=jax picks JAX, and then nothing here
imports TensorFlow. Which backend is Keras' own choice: KERAS_BACKEND, else ~/.keras/keras.json.
"""
import importlib
import os
import sys

SUPPORTED = ("tensorflow", "jax")
# NCF_LASTFM_XLA: auto (default) compiles TensorFlow's train step with XLA when TensorFlow sees
# a GPU, as Keras would, but never around an op XLA cannot compile; 1 always; 0 never
XLA_CHOICES = ("auto", "1", "0")


def name():
    """The backend Keras picks when it is imported: KERAS_BACKEND, else keras.json's."""
    return os.environ.get("KERAS_BACKEND") or _configured() or "tensorflow"


def _configured():
    """The backend ~/.keras/keras.json names, as Keras reads it, or ""."""
    import json
    folder = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(folder, "keras.json")) as stream:
            return str(json.load(stream).get("backend", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def environment_error(supported=SUPPORTED):
    """A one-line error for a backend outside `supported` (a script measuring TensorFlow's own
    code passes ("tensorflow",)), or NCF_LASTFM_XLA set to something else than its choices,
    else ""."""
    backend = name()
    if backend not in supported:
        names = " or ".join(f"KERAS_BACKEND={each}" for each in supported)
        return (f"KERAS_BACKEND={backend!r}: this script runs on Keras' "
                + (" or ".join({"tensorflow": "TensorFlow", "jax": "JAX"}[each]
                               for each in supported))
                + f" backend; set {names}")
    if importlib.util.find_spec(backend) is None:
        return (f"KERAS_BACKEND={backend} but {backend} is not installed; pip install {backend}, "
                "or pick the other backend")
    if (xla := xla_setting()) not in XLA_CHOICES:
        return (f"NCF_LASTFM_XLA={xla!r} is not a choice; expected auto (the default), 1 or 0")
    return ""


def xla_setting():
    return os.environ.get("NCF_LASTFM_XLA", "auto")


def is_jax():
    return name() == "jax"


def fast():
    """The backend's half of the seam: tf_fast or jax_fast (imported on first use)."""
    return importlib.import_module("jax_fast" if is_jax() else "tf_fast")


def import_quietly():
    """The backend's C++ start-up notes (oneDNN, CUDA, "no GPU found") go to file descriptor 2
    whatever its log level says; they would bury a one-line error. Silenced at import only."""
    module = name()
    if module in sys.modules:
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        importlib.import_module(module)
        import keras  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def jit_compile(history=False):
    """Keras' `jit_compile` for a model, chosen here rather than by Keras' "auto" (which picks
    XLA whenever TensorFlow sees a GPU, and XLA cannot compile the compiled kernels' ops): JAX
    always compiles; TensorFlow with XLA on a GPU (NCF_LASTFM_XLA=auto) or when asked (1), never
    for a history model (its ragged sums have no XLA form), and never on a CPU by default (XLA
    made the step slower there: docs/experiments.md)."""
    if is_jax():
        return True
    if history or xla_setting() == "0":
        return False
    return xla_setting() == "1" or fast().sees_gpu()


def prepare():
    """Before the first model: on TensorFlow, the compiled kernels only where they can run, on
    a CPU and outside XLA (they are CPU ops on the tables' own handles): tf_fast.prepare."""
    if not is_jax():
        fast().prepare(xla_setting() == "1")


def out_of_memory_errors():
    """The exceptions that mean the backend ran out of memory."""
    return (MemoryError,) + fast().OUT_OF_MEMORY


def versions():
    """{backend: version} of what runs the model, for environment.json."""
    backend = name()
    return {"backend": backend, backend: importlib.import_module(backend).__version__}
