"""Runs ncf_lastfm.py (or another script) as it would run on a machine this one is not:

  python tests/as_if.py no-tensorflow SCRIPT ARGS...   TensorFlow not installed: every import of
      it fails, as in an environment of Keras and JAX only; exit code 3 if anything of
      TensorFlow's, or the TensorFlow half of the seam (tf_fast), was imported anyway.
  python tests/as_if.py gpu SCRIPT ARGS...             TensorFlow's device list holds a GPU, as
      Keras 3 asks when it picks XLA by itself (`jit_compile="auto"`); the ops still run on this
      CPU. This replays the GPU machine's decisions, not its arithmetic.
"""
import importlib.abc
import os
import runpy
import sys


class NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError(f"No module named {name!r} (tests/as_if.py no-tensorflow)")
        return None


def see_a_gpu():
    import tensorflow as tf
    real = tf.config.list_physical_devices

    def with_a_gpu(device_type=None):
        found = real(device_type)
        if device_type in (None, "GPU"):
            found = found + [tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU")]
        return found

    tf.config.list_physical_devices = with_a_gpu


def main():
    mode, script, *argv = sys.argv[1:]
    if mode == "no-tensorflow":
        sys.meta_path.insert(0, NoTensorFlow())
    elif mode == "gpu":
        see_a_gpu()
    else:
        sys.exit(f"tests/as_if.py: unknown mode {mode!r}")
    sys.argv = [script, *argv]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        leaked = sorted(name for name in sys.modules if name == "tf_fast"
                        or name == "tensorflow" or name.startswith("tensorflow."))
        if mode == "no-tensorflow" and leaked:
            print(f"as_if: imported without TensorFlow: {leaked[:3]}", file=sys.stderr)
            os._exit(3)


if __name__ == "__main__":
    main()
