"""The code's shape as the next engineer relies on it, and the small defects found with it:
one table of models, one errors module, imports without a circle, the five steps by name in
`ncf_lastfm.run`; a plot titled with the run's candidates, paths compared as folders, files
synced before their rename, a failed kernel build tried again with another g++, a download that
fails its check not downloaded again each run, --compare's closing lines said, SIGTERM."""
import ast
import json
import os
import signal
import stat

import numpy as np
import pytest

import data
import errors
import files
import kernels
import model_table
import ncf_lastfm
import report
import training
from conftest import write_csvs
from test_command_line import run_main
from test_contracts import FEW, TINY
from test_download import Server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRODUCT = sorted(name for name in os.listdir(ROOT) if name.endswith(".py"))


def tree(name):
    with open(os.path.join(ROOT, name), encoding="utf-8") as stream:
        return ast.parse(stream.read())


# ---- one table of models, one errors module, no import circle -----------------------------------
MODEL_ONLY = {"neumf", "bpr", "pop"}       # "mlp" and "gmf" are also the towers' names


def compares_a_model(node):
    """A comparison of a model (a `model`, `name` or `model_name`) with a model's name, or with
    a name only a model has."""
    sides = [node.left, *node.comparators]
    constants = [value.value for side in sides for value in [side, *getattr(side, "elts", [])]
                 if isinstance(value, ast.Constant) and isinstance(value.value, str)]
    subjects = [getattr(side, "attr", getattr(side, "id", "")) for side in sides]
    return (any(value in MODEL_ONLY for value in constants)
            or (any(value in model_table.MODELS for value in constants)
                and any(subject in ("model", "name", "model_name") for subject in subjects)))


def test_no_module_but_the_table_compares_a_model_name():
    found = [f"{name}:{node.lineno}" for name in PRODUCT if name != "model_table.py"
             for node in ast.walk(tree(name))
             if isinstance(node, ast.Compare) and compares_a_model(node)]
    assert not found, f"model names compared outside model_table.py: {found}"


def test_the_table_describes_every_model_and_names_its_layers():
    assert list(model_table.MODELS) == ["pop", "bpr", "gmf", "mlp", "neumf"]
    neumf, mlp = model_table.MODELS["neumf"], model_table.MODELS["mlp"]
    assert neumf.layer_name("mlp", "hidden_1") == "mlp_hidden_1"
    assert mlp.layer_name("mlp", "hidden_1") == "hidden_1"
    assert neumf.item_table == "gmf_item_embedding" and mlp.item_table == "item_embedding"
    assert [name for name, spec in model_table.MODELS.items() if spec.pairwise] == ["bpr"]
    assert model_table.TRAINED == ("bpr", "gmf", "mlp", "neumf")
    assert ncf_lastfm.MODEL_DEFAULTS["gmf"]["NUM_FACTOR"] == 128


# Not errors for the user: --help, SIGTERM (handled as Ctrl-C is), a damaged archive's signal
# inside a conversion (sources.py turns it into an InputError)
CONTROL_FLOW = {"HelpRequested", "Terminated", "_Corrupt"}


def test_errors_are_defined_in_one_module_only():
    defined = [f"{name}:{node.name}" for name in PRODUCT if name != "errors.py"
               for node in ast.walk(tree(name)) if isinstance(node, ast.ClassDef)
               and any(getattr(base, "id", getattr(base, "attr", "")).endswith(("Error",
                                                                                "Exception"))
                       for base in node.bases)]
    defined = [where for where in defined if where.split(":")[1] not in CONTROL_FLOW]
    assert not defined, f"error classes outside errors.py: {defined}"
    assert errors.InputError.exit_code == 2 and errors.RunError.exit_code == 1


def product_imports(name):
    """The product modules `name` imports, at the top or inside a function."""
    modules = {module[:-3] for module in PRODUCT}
    found = set()
    for node in ast.walk(tree(name)):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
    return found & modules - {name[:-3]}


def test_modules_import_each_other_without_a_circle_and_none_imports_the_script():
    graph = {name[:-3]: product_imports(name) for name in PRODUCT}
    assert not [name for name, imported in graph.items() if "ncf_lastfm" in imported]
    state = {}

    def visit(module, path):
        if state.get(module) == "done":
            return
        assert state.get(module) != "open", f"import circle: {' -> '.join(path + [module])}"
        state[module] = "open"
        for other in sorted(graph[module]):
            visit(other, path + [module])
        state[module] = "done"
    for module in graph:
        visit(module, [])


def test_run_calls_the_five_steps_by_name_in_order():
    run = next(node for node in tree("ncf_lastfm.py").body
               if isinstance(node, ast.FunctionDef) and node.name == "run")
    calls = [node.func.attr for node in ast.walk(run) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Attribute)
             and getattr(node.func.value, "id", "") == "steps"]
    steps = ["load_data", "split_data", "build_model", "train_model", "evaluate_model"]
    assert [call for call in calls if call in steps] == steps


# ---- the small defects ---------------------------------------------------------------------------
def test_the_hit_ratio_plot_names_the_runs_candidates(tmp_path, monkeypatch):
    titles = []
    monkeypatch.setattr(report, "_save", lambda figure, path: titles.append(
        [axes.get_title() for axes in figure.axes]) or path)
    ranks = {"ranks": np.arange(30) % 31, "hit_ratio": 0.3}
    report.plot_run({"model": "mlp", **ranks}, ranks, 10, str(tmp_path), candidates=31)
    assert titles == [["hit ratio at K (1 held-out artist among 31 candidates)"]]


def test_a_folder_that_starts_like_the_output_folder_is_not_inside_it(tmp_path):
    s = ncf_lastfm.Settings(output_dir=str(tmp_path / "out"))
    beside = OSError(13, "Permission denied", str(tmp_path / "output2" / "x.csv"))
    inside = OSError(13, "Permission denied", str(tmp_path / "out" / "mlp" / "x.csv"))
    assert ncf_lastfm.os_error_message(beside, s).startswith("cannot read ")
    assert "choose another folder" in ncf_lastfm.os_error_message(inside, s)


def test_an_atomic_write_syncs_the_file_before_its_rename_and_the_folder_after(tmp_path,
                                                                               monkeypatch):
    events, fsync, replace = [], os.fsync, os.replace

    def synced(handle):
        events.append(("fsync", stat.S_ISDIR(os.fstat(handle).st_mode)))
        fsync(handle)
    monkeypatch.setattr(os, "fsync", synced)
    monkeypatch.setattr(os, "replace", lambda a, b: events.append(("rename",)) or replace(a, b))
    files.atomic_write(str(tmp_path / "a.txt"), lambda path: files.write_text(path, "x"))
    assert events == [("fsync", False), ("rename",), ("fsync", True)]
    assert (tmp_path / "a.txt").read_text() == "x"


def fake_gxx(folder, version):
    """A g++ on PATH that says `version` and fails every build, counting them."""
    folder.mkdir(exist_ok=True)
    script = folder / "g++"
    script.write_text("#!/bin/sh\n"
                      f'if [ "$1" = "--version" ]; then echo "g++ (Fake) {version}"; exit 0; fi\n'
                      f'echo build >> "{folder}/builds"; echo "error: cannot" >&2; exit 1\n')
    script.chmod(0o755)
    return (folder / "builds")


def test_a_failed_kernel_build_is_tried_again_once_g_plus_plus_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    builds = fake_gxx(tmp_path / "bin", "12.2")
    for _ in range(2):     # the second run: refused from the record, no new build
        with pytest.raises(RuntimeError, match="g\\+\\+ failed"):
            kernels._build_kernel(native=False)
    assert builds.read_text().count("build") == 1
    fake_gxx(tmp_path / "bin", "13.1")            # an upgraded g++: tried again
    with pytest.raises(RuntimeError, match="g\\+\\+ failed: error: cannot"):
        kernels._build_kernel(native=False)
    assert builds.read_text().count("build") == 2


def test_a_download_that_fails_its_check_is_not_downloaded_again_each_run(tmp_path, capsys):
    site = write_csvs(tmp_path / "site", *data.make_planted(50, 60, 500, seed=0))
    with open(os.path.join(site, data.PLAY_FILE), "a") as stream:
        stream.write("0,1,many\n")
    server = Server(site)
    url, cache = server.url, str(tmp_path / "k")
    with pytest.raises(errors.InputError, match="many"):
        data.load("lastfm", root_url=url, explicit_url=True, cache_dir=cache, log=print)
    folder = tmp_path / "k" / "lastfm"
    stamp = {name: os.stat(folder / name).st_ino for name in data.COLUMNS}
    with pytest.raises(errors.InputError, match="failed this check when downloaded; delete"):
        data.load("lastfm", root_url=url, explicit_url=True, cache_dir=cache, log=print)
    assert {name: os.stat(folder / name).st_ino for name in data.COLUMNS} == stamp
    assert "downloading again" not in capsys.readouterr().out
    server.close()


def test_compares_closing_lines_are_said_to_be_the_tables_last_model(capsys):
    results = [{"model": name, "hit_ratio": 0.9 - 0.1 * i, "ndcg": 0.5}
               for i, name in enumerate(model_table.MODELS)]
    final = ncf_lastfm.report_compared(results)
    assert final["model"] == "neumf"                       # not the best on the test set (pop)
    assert "the closing lines are neumf's" in capsys.readouterr().out


def test_sigterm_is_one_line_exit_143_and_resume_continues(tmp_path, capsys, monkeypatch):
    tiny_dir = write_csvs(tmp_path / "csv", *data.make_planted(*TINY[:3], seed=TINY[3]))
    save = training.Checkpoints.save

    def save_then_terminated(self, model, state):
        save(self, model, state)
        if state["epoch"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)
    monkeypatch.setattr(training.Checkpoints, "save", save_then_terminated)
    argv = [f"--data_dir={tiny_dir}", f"--output_dir={tmp_path / 'out'}", *FEW]
    # a run that set no handler of its own meets this one, and does not end the test runner
    before = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        code, out, err = run_main(capsys, *argv, "--num_epoch=5")
        assert signal.getsignal(signal.SIGTERM) is not ncf_lastfm.on_sigterm   # put back
    finally:
        signal.signal(signal.SIGTERM, before)
    assert code == 143, err
    assert err == (f"terminated (SIGTERM): the last complete epoch's checkpoint is in "
                   f"{tmp_path / 'out' / 'mlp'}/; run the same command with --resume to "
                   "continue\n")
    monkeypatch.setattr(training.Checkpoints, "save", save)
    code, out, err = run_main(capsys, *argv, "--num_epoch=3", "--resume")
    assert code == 0, err
    metrics = json.loads((tmp_path / "out" / "mlp" / "metrics.json").read_text())
    assert metrics["num_epoch"] == 3 and len(metrics["history"]) == 3


def test_the_script_defers_only_the_modules_that_start_tensorflow():
    deferred = set()
    for node in ast.walk(tree("ncf_lastfm.py")):
        if isinstance(node, ast.FunctionDef):
            deferred |= {alias.name for child in ast.walk(node)
                         if isinstance(child, ast.Import) for alias in child.names}
    # TensorFlow starts only once the settings are checked: these wait for it
    assert deferred <= {"compare", "distribute", "files", "loading", "report", "steps",
                        "tensorflow", "training"}, deferred
