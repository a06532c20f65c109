"""The same script on Keras' TensorFlow and JAX backends, and TensorFlow where it sees a GPU.

These run the script in new processes: a process holds one Keras backend. `tests/as_if.py`
replays the machines this one is not (TensorFlow not installed; TensorFlow seeing a GPU).
"""
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.tensorflow_only   # each test picks its processes' backends itself
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AS_IF = os.path.join(ROOT, "tests", "as_if.py")
SCRIPT = os.path.join(ROOT, "ncf_lastfm.py")


def run(*argv, backend="tensorflow", mode=None, env=None, timeout=600):
    """The script (or `python -c`) in a new process -> CompletedProcess."""
    command = [sys.executable] + ([AS_IF, mode] if mode else []) + list(argv)
    environment = {**os.environ, "KERAS_BACKEND": backend, "TQDM_DISABLE": "1", **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                          env=environment)


def metrics(folder):
    with open(os.path.join(folder, "metrics.json")) as stream:
        return json.load(stream)


def test_where_tensorflow_sees_a_gpu_keras_would_pick_xla_and_the_script_chooses_for_itself():
    """The replay is real: Keras' own "auto" picks XLA under it. The script's choice: XLA on,
    the compiled kernels (CPU ops XLA cannot compile) off; a history model without XLA."""
    probe = ("import keras, backend, kernels, models; backend.prepare(); "
             "plain = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]); "
             "plain.compile('adam', 'mse'); "
             "mlp = models.build_model('mlp', 10, 20); "
             "history = models.build_model('neumf', 10, 20, history=([0, 1], [2, 3])); "
             "print(plain.jit_compile, mlp.jit_compile, history.jit_compile, kernels.USE_KERNEL)")
    code = (f"import sys; sys.path[:0] = [{ROOT!r}, {os.path.join(ROOT, 'tests')!r}]; "
            "import as_if; as_if.see_a_gpu(); " + probe)
    replayed = run("-c", code)
    assert replayed.returncode == 0, replayed.stderr[-2000:]
    assert replayed.stdout.split() == ["True", "True", "False", "False"]
    here = run("-c", f"import sys; sys.path.insert(0, {ROOT!r}); " + probe)
    assert here.returncode == 0 and here.stdout.split()[:3] == ["False", "False", "False"]


@pytest.mark.parametrize("argv", [[], ["--strategy=mirrored", "--devices=2"]],
                         ids=["one-device", "mirrored"])
def test_the_default_run_trains_and_scores_where_tensorflow_sees_a_gpu(tmp_path, argv):
    """Before the seam this ended in "tf2xla conversion failed ... ncf_lazy_adam_apply"."""
    done = run(SCRIPT, "--dataset=sample", "--num_epoch=1", "--quiet",
               f"--output_dir={tmp_path}", *argv, mode="gpu")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "hit ratio : " in done.stdout
    with open(tmp_path / "mlp" / "environment.json") as stream:
        assert json.load(stream)["compiled_kernels"] is False


@pytest.mark.slow
def test_forced_xla_on_this_cpu_trains_every_model_and_the_history_input(tmp_path):
    """NCF_LASTFM_XLA=1: every model's step compiled by XLA (the TensorFlow ops, no kernels);
    the history input, which has no XLA form, trains without it."""
    env = {"NCF_LASTFM_XLA": "1"}
    done = run(SCRIPT, "--dataset=sample", "--num_epoch=1", "--compare", "--quiet",
               f"--output_dir={tmp_path / 'all'}", env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    with open(tmp_path / "all" / "compare.csv") as stream:
        rows = {line.split(",")[0]: float(line.split(",")[1]) for line in stream.readlines()[1:]}
    assert sorted(rows) == ["bpr", "gmf", "mlp", "neumf", "pop"]
    assert all(0 < rows[name] <= 1 for name in rows) and rows["neumf"] > rows["pop"]
    done = run(SCRIPT, "--dataset=sample", "--num_epoch=1", "--model=gmf", "--quiet",
               "--user_input=history", f"--output_dir={tmp_path / 'history'}", env=env)
    assert done.returncode == 0, done.stderr[-2000:]


def test_jax_runs_without_tensorflow_installed_and_refuses_strategies_in_one_line(tmp_path):
    done = run(SCRIPT, "--dataset=sample", "--num_epoch=2", "--quiet", "--validation=True",
               f"--output_dir={tmp_path}", backend="jax", mode="no-tensorflow")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-2].startswith("hit ratio : ")
    result = metrics(tmp_path / "mlp")
    assert result["hit_ratio"] > result["popularity_hit_ratio"]
    refused = run(SCRIPT, "--dataset=sample", "--strategy=mirrored", backend="jax",
                  mode="no-tensorflow")
    assert refused.returncode == 2 and refused.stderr == (
        "error: --strategy=mirrored is TensorFlow's (tf.distribute); on JAX train without it, "
        "or run with KERAS_BACKEND=tensorflow\n")


@pytest.mark.slow
@pytest.mark.parametrize("trained_on, loaded_on", [("tensorflow", "jax"), ("jax", "tensorflow")])
@pytest.mark.parametrize("argv", [["--model=mlp"], ["--model=neumf", "--user_input=history"],
                                  ["--model=bpr"]], ids=["mlp", "neumf-history", "bpr"])
def test_a_model_saved_on_one_backend_scores_the_same_on_the_other(tmp_path, trained_on,
                                                                    loaded_on, argv):
    trained = run(SCRIPT, "--dataset=sample", "--num_epoch=1", "--quiet", *argv,
                  f"--output_dir={tmp_path / 'a'}", backend=trained_on)
    assert trained.returncode == 0, trained.stderr[-2000:]
    name = argv[0].split("=")[1]
    loaded = run(SCRIPT, "--dataset=sample", "--quiet", f"--load={tmp_path / 'a' / name}/{name}"
                 ".keras", f"--output_dir={tmp_path / 'b'}", backend=loaded_on,
                 mode="no-tensorflow" if loaded_on == "jax" else None)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    before, after = metrics(tmp_path / "a" / name), metrics(tmp_path / "b" / f"{name}-loaded")
    assert round(after["hit_ratio"], 4) == round(before["hit_ratio"], 4)
    assert abs(after["ndcg"] - before["ndcg"]) < 1e-4


@pytest.mark.slow
def test_the_gpu_check_runs_end_to_end_with_its_gpu_steps_skipped(tmp_path):
    """bench/gpu.sh on this CPU (NCF_GPU_CHECK_CPU=1), at a small scale; an empty wheel
    folder: what it needs is installed here, and it installs nothing from elsewhere."""
    (tmp_path / "wheels").mkdir()
    done = subprocess.run(["bash", "bench/gpu.sh", str(tmp_path / "wheels"), "0.01"],
                          capture_output=True, text=True, cwd=ROOT, timeout=900,
                          env={**os.environ, "NCF_GPU_CHECK_CPU": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["gpu"] == "none (CPU)" and result["speed"]["backend"] == "jax"
    assert 0.5 < result["sample_hit_ratio"] <= 1 and result["speed"]["train_samples_per_s"] > 0
    assert set(result["goals"]) == {"train_samples_per_s >= 20M", "epoch_seconds <= 10",
                                    "eval_seconds <= 2"}


def test_the_gpu_check_refuses_a_machine_without_a_gpu(tmp_path):
    (tmp_path / "wheels").mkdir()
    done = subprocess.run(["bash", "bench/gpu.sh", str(tmp_path / "wheels"), "0.005"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={k: v for k, v in os.environ.items() if k != "NCF_GPU_CHECK_CPU"})
    assert done.returncode == 1 and done.stderr.startswith("error: JAX sees no GPU here")


JAX_LAZY_ADAM = """
import sys
sys.path.insert(0, {root!r})
import keras, numpy as np
import models
rng = np.random.default_rng(5)
table = rng.normal(size=(50, 4)).astype(np.float32)
variables = [keras.Variable(table, name="embeddings") for _ in range(2)]
optimizers = [models.LazyAdam(0.01), keras.optimizers.Adam(0.01)]
for optimizer, variable in zip(optimizers, variables):
    optimizer.build([variable])
for step in range(3):
    gradient = np.zeros_like(table)
    rows = rng.choice(50, 7, replace=False)
    gradient[rows] = rng.normal(size=(7, 4))
    for optimizer, variable in zip(optimizers, variables):
        optimizer.apply_gradients([(gradient, variable)])
lazy, dense = (np.asarray(variable) for variable in variables)
print(int(np.array_equal(lazy, dense)), int((lazy != table).all(1).sum()))
"""


def test_lazy_adam_on_jax_is_keras_adam_as_measured_faster_there():
    """JAX's table gradients are dense; LazyAdam there takes Keras' Adam step, every row moving
    once its moments are non-zero (jax_fast.is_row_sparse says why)."""
    done = run("-c", JAX_LAZY_ADAM.format(root=ROOT), backend="jax")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["1", str(int(done.stdout.split()[1]))]
    assert int(done.stdout.split()[1]) > 7     # more rows moved than the last step touched


@pytest.mark.parametrize("argv", [["--export=e"], ["--tensorboard=t"]], ids=["export", "tb"])
def test_what_only_tensorflow_writes_is_refused_on_jax_in_one_line(argv, tmp_path):
    refused = run(SCRIPT, "--dataset=sample", *argv, f"--output_dir={tmp_path}", backend="jax",
                  mode="no-tensorflow")
    what = argv[0].split("=")[0]
    assert refused.returncode == 2 and refused.stderr == (
        f"error: {what} writes with TensorFlow (a SavedModel, TensorBoard's logs); run it with "
        "KERAS_BACKEND=tensorflow (a model saved on JAX loads there with --load)\n")
