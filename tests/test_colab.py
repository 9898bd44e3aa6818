"""Colab set-up, played here with stand-ins: a fake ``google.colab`` (a Drive mount into a
temporary folder, a file upload) and a fake ``kaggle`` command on PATH (records its calls, then
writes a small Kaggle-shaped zip or answers 403), on a tiny synthetic set zipped the ways
Kaggle ships DSB2018. Also: the set-up cell and the badges are generated from ``REPO_URL``,
and the repository's address is written nowhere else."""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import jupytext
import nbformat
import pytest

from nucseg_utils import colab, data, report
from nucseg_utils.core import mirror
from nucseg_utils.data import synthetic

REPO = Path(__file__).resolve().parent.parent
# the notebooks' paired scripts (colab/ also holds a plain script, check_colab_stack.py)
SCRIPTS = [p for folder in ("notebooks", "colab") for p in sorted((REPO / folder).glob("*.py"))
           if p.with_suffix(".ipynb").exists()]
NOTEBOOKS = [p.with_suffix(".ipynb") for p in SCRIPTS]
TOKEN = b'{"username": "someone", "key": "0123456789abcdef"}'
# the repository's owner/name, as a whole word (not e.g. the start of a longer path)
NAMED = re.compile(rf"(?<![\w.-]){re.escape(colab.repo_slug())}(?![\w-])", re.I)

FAKE_KAGGLE = '''#!{python}
"""A stand-in for the kaggle command: records its arguments, refuses like the real one."""
import json, os, shutil, sys
with open(os.environ["FAKE_KAGGLE_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
home = os.environ.get("KAGGLE_CONFIG_DIR") or os.path.join(os.environ["HOME"], ".kaggle")
if not (os.environ.get("KAGGLE_KEY") or os.path.isfile(os.path.join(home, "kaggle.json"))):
    sys.exit("OSError: Could not find kaggle.json. Make sure it's located in " + home)
if os.environ.get("FAKE_KAGGLE_MODE") == "403":
    sys.exit("403 Client Error: Forbidden for url: https://www.kaggle.com/api/v1/"
             "competitions/data/download-all/data-science-bowl-2018")
dest = sys.argv[sys.argv.index("-p") + 1]
shutil.copyfile(os.environ["FAKE_KAGGLE_ZIP"], os.path.join(dest, "data-science-bowl-2018.zip"))
print("Downloading data-science-bowl-2018.zip to", dest)
'''


# --------------------------------------------------------------------------- data on "Drive"
def _zip_folder(folder: Path, zip_path: Path) -> Path:
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(folder).as_posix())
    return zip_path


@pytest.fixture(scope="session")
def tiny_set(tmp_path_factory) -> Path:
    """Three small synthetic images in the DSB layout (folders)."""
    return synthetic.make_dataset(tmp_path_factory.mktemp("tiny") / "syn", n_train=2, n_test=1,
                                  seed=0, shapes=((64, 64),))


@pytest.fixture(scope="session")
def kaggle_files(tmp_path_factory, tiny_set) -> dict:
    """The tiny set as Kaggle ships DSB2018: inner zips (+ zipped labels), and the outer zip."""
    inner = tmp_path_factory.mktemp("inner")
    for split in ("stage1_train", "stage1_test"):
        _zip_folder(tiny_set / split, inner / f"{split}.zip")
    with zipfile.ZipFile(inner / "stage1_train_labels.csv.zip", "w") as z:
        z.write(tiny_set / "stage1_train_labels.csv", "stage1_train_labels.csv")
    shutil.copyfile(tiny_set / "stage1_solution.csv", inner / "stage1_solution.csv")
    outer = tmp_path_factory.mktemp("outer") / data.OUTER_ZIP
    with zipfile.ZipFile(outer, "w") as z:
        for p in sorted(inner.iterdir()):
            z.write(p, p.name)
    return {"inner": inner, "outer": outer, "folders": tiny_set}


# --------------------------------------------------------------------------- a fake Colab
def _unset(monkeypatch, name):
    monkeypatch.setenv(name, "x")  # recorded, so that monkeypatch restores the original state
    monkeypatch.delenv(name)


@pytest.fixture
def fake_colab(tmp_path, monkeypatch, kaggle_files):
    """Colab as far as setup() can tell: google.colab in sys.modules, a Drive that appears on
    mount (with ``env.drive_files`` in it), a file upload, a kaggle command, an empty HOME."""
    env = types.SimpleNamespace(mounts=[], uploads=[], upload_returns={}, drive_files={},
                                drive=tmp_path / "drive", log=tmp_path / "kaggle_calls.jsonl",
                                local=tmp_path / "content" / "dsb2018")
    env.mydrive = env.drive / "MyDrive"

    def mount(mountpoint, force_remount=False, **kw):
        env.mounts.append(str(mountpoint))
        mydrive = Path(mountpoint) / "MyDrive"
        mydrive.mkdir(parents=True, exist_ok=True)
        for rel, src in env.drive_files.items():
            target = mydrive / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(src, bytes):
                target.write_bytes(src)
            elif Path(src).is_dir():
                shutil.copytree(src, target)
            else:
                shutil.copyfile(src, target)

    def upload():
        env.uploads.append(True)
        return dict(env.upload_returns)

    gc = types.ModuleType("google.colab")
    gc.drive = types.SimpleNamespace(mount=mount)
    gc.files = types.SimpleNamespace(upload=upload)
    monkeypatch.setitem(sys.modules, "google.colab", gc)
    for name in ("NUCSEG_DATA", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_CONFIG_DIR",
                 "NUCSEG_REPO_URL"):
        _unset(monkeypatch, name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    kaggle = bin_dir / "kaggle"
    kaggle.write_text(FAKE_KAGGLE.format(python=sys.executable))
    kaggle.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_KAGGLE_LOG", str(env.log))
    monkeypatch.setenv("FAKE_KAGGLE_ZIP", str(kaggle_files["outer"]))
    monkeypatch.chdir(tmp_path)  # setup() moves into notebooks/; this moves back afterwards
    env.calls = lambda: ([json.loads(line) for line in env.log.read_text().splitlines()]
                         if env.log.exists() else [])
    env.setup = lambda **kw: colab.setup(drive=str(env.drive), local_data=str(env.local),
                                         repo=REPO, install=False, **kw)
    return env


def test_setup_outside_colab_does_nothing(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    _unset(monkeypatch, "NUCSEG_DATA")
    found = colab.setup()
    assert not found.colab and found.data_root is None and found.messages == []
    assert "NUCSEG_DATA" not in os.environ


def test_setup_without_token_or_data_says_synthetic_and_does_not_raise(fake_colab, capsys):
    found = fake_colab.setup()
    assert found.colab and found.synthetic and found.kaggle == "no token"
    assert fake_colab.mounts == [str(fake_colab.drive)]
    assert fake_colab.calls() == [] and fake_colab.uploads == []  # never asked unprompted
    assert "SYNTHETIC" in capsys.readouterr().out
    assert "NUCSEG_DATA" not in os.environ
    assert Path.cwd() == REPO / "notebooks"


@pytest.mark.parametrize("layout", ["outer zip", "inner zips", "folders one level down"])
def test_setup_finds_dsb2018_on_drive_in_every_layout_kaggle_ships(fake_colab, kaggle_files,
                                                                   layout):
    folder = fake_colab.mydrive / "dsb2018"
    if layout == "outer zip":
        fake_colab.drive_files = {f"dsb2018/{data.OUTER_ZIP}": kaggle_files["outer"]}
        root = folder
    elif layout == "inner zips":
        fake_colab.drive_files = {f"dsb2018/{p.name}": p for p in kaggle_files["inner"].iterdir()}
        root = folder
    else:
        fake_colab.drive_files = {"dsb2018/stage1": kaggle_files["folders"]}
        root = folder / "stage1"
    found = fake_colab.setup()
    assert found.data_root == str(root) and found.source == "Drive"
    assert os.environ["NUCSEG_DATA"] == str(root)
    train = data.open_split("stage1_train")  # through NUCSEG_DATA, as a notebook reads it
    assert len(train) == 2 and train.sample(train.ids[0]).labels.max() > 0
    assert len(data.open_split("stage1_test")) == 1
    assert fake_colab.calls() == []


@pytest.mark.parametrize("token", ["kaggle.json on Drive", "environment variables"])
def test_setup_downloads_once_with_a_token_and_the_next_notebook_finds_it_on_drive(
        fake_colab, monkeypatch, token):
    if token == "kaggle.json on Drive":
        fake_colab.drive_files = {"kaggle.json": TOKEN}
    else:
        monkeypatch.setenv("KAGGLE_USERNAME", "someone")
        monkeypatch.setenv("KAGGLE_KEY", "0123456789abcdef")
    folder = fake_colab.mydrive / "dsb2018"
    found = fake_colab.setup()
    assert fake_colab.calls() == [["competitions", "download", "-c", "data-science-bowl-2018",
                                   "-p", str(folder)]]
    assert found.kaggle == "downloaded" and found.source == "Kaggle"
    assert found.data_root == str(folder) and (folder / data.OUTER_ZIP).is_file()
    if token == "kaggle.json on Drive":
        installed = Path.home() / ".kaggle" / "kaggle.json"
        assert installed.read_bytes() == TOKEN
        assert stat.S_IMODE(installed.stat().st_mode) == 0o600

    # The next notebook: a fresh runtime, the same Drive.
    _unset(monkeypatch, "NUCSEG_DATA")
    shutil.rmtree(Path.home() / ".kaggle", ignore_errors=True)
    again = fake_colab.setup()
    assert again.source == "Drive" and again.data_root == str(folder)
    assert len(fake_colab.calls()) == 1  # no second download
    assert len(fake_colab.mounts) == 1  # Drive was mounted already


def test_kaggle_json_is_asked_for_only_when_asked_explicitly(fake_colab):
    fake_colab.upload_returns = {"kaggle.json": TOKEN}
    assert fake_colab.setup().synthetic and fake_colab.uploads == []
    found = fake_colab.setup(kaggle_upload=True)
    assert fake_colab.uploads == [True] and found.kaggle == "downloaded"
    assert (Path.home() / ".kaggle" / "kaggle.json").read_bytes() == TOKEN
    assert not list(fake_colab.mydrive.rglob("kaggle.json"))  # the token is not put on Drive


def test_a_403_is_explained_without_raising(fake_colab, monkeypatch, capsys):
    fake_colab.drive_files = {"kaggle.json": TOKEN}
    monkeypatch.setenv("FAKE_KAGGLE_MODE", "403")
    found = fake_colab.setup()
    assert found.kaggle == "rules not accepted (403)" and found.synthetic
    out = capsys.readouterr().out
    assert colab.RULES_URL in out and "accept" in out and "SYNTHETIC" in out
    assert len(fake_colab.calls()) == 1


def test_a_truncated_zip_on_drive_is_reported_not_raised(fake_colab, capsys):
    fake_colab.drive_files = {f"dsb2018/{data.OUTER_ZIP}": b"PK\x03\x04 cut short"}
    found = fake_colab.setup()
    assert found.synthetic
    assert "not a readable zip" in capsys.readouterr().out


def test_without_drive_the_download_goes_to_the_local_folder(fake_colab, monkeypatch):
    def refuse(mountpoint, **kw):
        raise ValueError("mount failed: access was not granted")
    monkeypatch.setattr(sys.modules["google.colab"].drive, "mount", refuse)
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "0123456789abcdef")
    found = fake_colab.setup()
    assert found.drive is None and found.data_root == str(fake_colab.local)
    assert any("not mounted" in m for m in found.messages)


# --------------------------------------------------------------------------- the set-up cell
def _run_cell(cell: str):
    exec(compile(cell, "setup-cell", "exec"), {"__name__": "__cell__"})


def test_a_failed_clone_stops_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    bogus = tmp_path / "no-such-repository"
    monkeypatch.setenv("NUCSEG_REPO_URL", str(bogus))
    dest = tmp_path / "clone"
    with pytest.raises(SystemExit) as stop:
        _run_cell(colab.setup_cell(dest=str(dest)))
    msg = str(stop.value)
    assert str(bogus) in msg and "NUCSEG_REPO_URL" in msg
    assert "fork" in msg.lower() and "private" in msg and "network" in msg.lower()
    assert not dest.exists()


def test_the_setup_cell_clones_once_then_calls_setup(tmp_path, monkeypatch):
    src = tmp_path / "origin"
    src.mkdir()
    (src / "README.md").write_text("a stand-in repository\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    for cmd in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "x"]):
        subprocess.run(git + cmd, cwd=src, check=True, capture_output=True)
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    calls = []
    monkeypatch.setattr(colab, "setup", lambda *a, **k: calls.append(a or k))
    monkeypatch.setenv("NUCSEG_REPO_URL", str(src))
    dest = tmp_path / "clone"
    _run_cell(colab.setup_cell(dest=str(dest)))
    assert (dest / "README.md").is_file() and len(calls) == 1
    monkeypatch.setenv("NUCSEG_REPO_URL", str(tmp_path / "gone"))  # would fail if cloned again
    _run_cell(colab.setup_cell(dest=str(dest)))
    assert len(calls) == 2


def test_the_setup_cell_does_nothing_outside_colab(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(colab, "setup", lambda *a, **k: pytest.fail("setup() called"))
    _run_cell(colab.setup_cell())


def _code_cells(path: Path) -> list[str]:
    nb = jupytext.read(path) if path.suffix == ".py" else nbformat.read(path, as_version=4)
    return [c.source.strip() for c in nb.cells if c.cell_type == "code"]


@pytest.mark.parametrize("path", SCRIPTS + NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_notebook_opens_with_the_setup_cell_generated_from_repo_url(path):
    cells = _code_cells(path)
    setup = [c for c in cells if '"google.colab" in sys.modules' in c]
    assert setup == [colab.setup_cell().strip()], \
        f"{path.name}: its set-up cell differs; run `python -m nucseg_utils.colab`, `make sync`"
    assert cells[0] == setup[0], f"{path.name}: the set-up cell must be the first code cell"


def _badges(text: str) -> list[str]:
    return re.findall(r"https://colab\.research\.google\.com/github/[^\s\"')]+", text)


def test_every_colab_badge_is_generated_from_repo_url():
    readme = (REPO / "README.md").read_text()
    expected = {colab.badge_url(p.relative_to(REPO).as_posix()) for p in NOTEBOOKS}
    assert set(_badges(readme)) == expected  # one per notebook, each pointing at REPO_URL
    for script in SCRIPTS:  # each notebook's own badge points at itself
        nb_path = script.with_suffix(".ipynb").relative_to(REPO).as_posix()
        assert _badges(script.read_text()) == [colab.badge_url(nb_path)], script.name


def test_every_copy_already_matches_repo_url_and_a_fork_rewrites_them_all(tmp_path):
    fork = "https://github.com/someone/a-fork"
    for path in [REPO / "README.md", *SCRIPTS]:
        text = path.read_text()
        assert colab.rewrite_links(text) == text, f"{path.name}: run `python -m nucseg_utils.colab`"
        moved = colab.rewrite_links(text, fork)
        assert not NAMED.search(moved), path.name
        assert moved.count("someone/a-fork") == len(NAMED.findall(text)) > 0
    copy = tmp_path / "repo"
    for rel in ["README.md", *(p.relative_to(REPO) for p in SCRIPTS)]:
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / rel, copy / rel)
    changed = colab.write_links(copy, fork)
    assert len(changed) == 1 + len(SCRIPTS)
    assert colab.setup_cell(fork) in (copy / "notebooks" / "01_eda.py").read_text()


def _project_text_files():
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git work tree")
    for name in listed.stdout.splitlines():
        path = REPO / name
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # images, the model
        if path.suffix == ".ipynb":  # as the cells read, not JSON-escaped
            nb = nbformat.reads(text, as_version=4)
            text = "\n".join(c.source for c in nb.cells) + json.dumps(nb.metadata)
        yield path, text


def test_the_repository_address_is_written_once():
    """Allowed: the REPO_URL line of core/runs.py, and copies generated from it that the tests
    above check (set-up cells, Open-in-Colab badges of notebooks that exist). Anything else
    naming the repository fails here: make it use colab.REPO_URL instead."""
    badge = re.compile(re.escape(colab.badge_url("")) + r"([\w./-]+\.ipynb)")
    constant = f'REPO_URL = "{colab.REPO_URL}"'
    seen_constant, offenders = 0, []
    for path, text in _project_text_files():
        if path == REPO / "nucseg_utils" / "core" / "runs.py":
            seen_constant += text.count(constant)
            text = text.replace(constant, "", 1)
        text = text.replace(colab.setup_cell(), "")
        text = badge.sub(lambda m: "" if (REPO / m.group(1)).is_file() else m.group(0), text)
        offenders += [f"{path.relative_to(REPO)}: ...{text[max(m.start() - 40, 0):m.end()]}"
                      for m in NAMED.finditer(text)]
    assert seen_constant == 1
    assert not offenders, "the repository's address is hard-coded here:\n" + "\n".join(offenders)


# --------------------------------------------------------------------------- the runner
def test_the_paper_runner_asks_colab_for_a_t4_and_streams_the_notebooks_output():
    nb = nbformat.read(REPO / "colab" / "run_paper_profile.ipynb", as_version=4)
    assert nb.metadata["accelerator"] == "GPU" and nb.metadata["colab"]["gpuType"] == "T4"
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    params = next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert "allow_cpu = False" in params
    assert "colab.check_gpu(allow_cpu)" in code and "log_output=True" in code


def test_check_gpu_stops_without_a_gpu_unless_cpu_is_allowed(capsys):
    with pytest.raises(RuntimeError, match="T4 GPU.*allow_cpu = True"):
        colab.check_gpu(list_gpus=lambda: [])
    assert colab.check_gpu(allow_cpu=True, list_gpus=lambda: []) == []
    gpu = types.SimpleNamespace(name="/physical_device:GPU:0")
    assert colab.check_gpu(list_gpus=lambda: [gpu]) == [gpu]
    assert "GPU:0" in capsys.readouterr().out


def test_run_all_hands_log_output_to_papermill(tmp_path, monkeypatch, tiny_set):
    seen = []
    monkeypatch.setattr(report.context, "_papermill_run",
                        lambda nb, out, params, cwd, log_output=False: seen.append(log_output))
    assert report.run_all("smoke", run_dir=tmp_path / "run", data_root=tiny_set,
                          figures_dir=tmp_path / "pub", notebooks=["01_eda.ipynb"],
                          log_output=True) == 0
    assert seen == [True]


def test_install_missing_installs_the_package_and_extras_but_never_tensorflow(monkeypatch):
    import importlib.metadata
    import importlib.util

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    pip = []
    monkeypatch.setattr(colab, "_pip", pip.append)
    colab.install_missing(Path("/content/repo"))
    assert pip == [["-e", "/content/repo", "segmentation-models==1.0.1", "papermill", "kaggle",
                    "roifile", "zarr>=3.1", "distributed"]]
    assert not any("tensorflow" in a or "keras" in a for a in pip[0])


def test_install_missing_replaces_a_zarr_older_than_3_1(monkeypatch):
    import importlib.metadata
    import importlib.util

    versions = {"nucseg": "0.1.0", "zarr": "2.18.3"}
    monkeypatch.setattr(importlib.metadata, "version", lambda name: versions[name])
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())  # all present
    pip = []
    monkeypatch.setattr(colab, "_pip", pip.append)
    assert colab.install_missing(Path("/content/repo")) == ["zarr>=3.1"]
    versions["zarr"] = "3.1.6"
    pip.clear()
    assert colab.install_missing(Path("/content/repo")) == [] and pip == []


# --------------------------------------------------------------------------- opened alone
def test_a_notebook_opened_alone_uses_the_committed_model_and_says_so(tmp_path, monkeypatch,
                                                                     tiny_set, capsys):
    for name in report.OVERRIDES:  # as opened by a person, not under nbval
        _unset(monkeypatch, name)
    ctx = report.Context("smoke", str(tiny_set), str(tmp_path / "run"))
    assert ctx.model_file() == report.COMMITTED_MODELS["cpu"] / "model.npz"
    assert "committed cpu model" in capsys.readouterr().out
    (tmp_path / "run" / "model.npz").write_bytes(b"the run's own")
    assert ctx.model_file() == tmp_path / "run" / "model.npz"


# --------------------------------------------------------------------------- the run on Drive
def _tree(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _a_run(local: Path):
    (local / "notebooks").mkdir(parents=True)
    (local / "checkpoint.npz").write_bytes(b"checkpoint of epoch 20")
    (local / "history.csv").write_text("epoch\n1\n")
    (local / "notebooks" / "03_training.ipynb").write_text("{}")
    (local / ".checkpoint.abc.tmp.npz").write_bytes(b"half a file being written")


def test_sync_run_copies_the_run_to_drive_and_then_only_what_changed(tmp_path, monkeypatch):
    local, drive = tmp_path / "content" / "run", tmp_path / "MyDrive" / "run"
    _a_run(local)
    assert mirror.sync_run(local, drive) == ["history.csv", "notebooks/03_training.ipynb",
                                           "checkpoint.npz"]  # the checkpoint last
    assert _tree(drive) == {k: v for k, v in _tree(local).items() if not k.startswith(".")}
    copies = []
    monkeypatch.setattr(mirror, "_copy_atomic",
                        lambda src, dst: copies.append(src.name) or shutil.copyfile(src, dst))
    assert mirror.sync_run(local, drive) == [] and copies == []  # nothing new: nothing copied
    (local / "history.csv").write_text("epoch\n1\n2\n")
    assert mirror.sync_run(local, drive, ["history.csv", "checkpoint.npz", "gone.csv"]) == \
        ["history.csv"]
    (drive / "checkpoint.npz").unlink()  # deleted on Drive: copied again
    assert mirror.sync_run(local, drive, ["checkpoint.npz"]) == ["checkpoint.npz"]


def test_a_copy_to_drive_cut_short_leaves_the_previous_file_and_no_part(tmp_path, monkeypatch):
    local, drive = tmp_path / "content" / "run", tmp_path / "MyDrive" / "run"
    _a_run(local)
    mirror.sync_run(local, drive)
    (local / "checkpoint.npz").write_bytes(b"checkpoint of epoch 40, much longer ......")

    def dies_half_way(src, dst):
        Path(dst).write_bytes(Path(src).read_bytes()[:10])
        raise OSError("Transport endpoint is not connected")  # Drive went away

    monkeypatch.setattr(shutil, "copyfile", dies_half_way)
    with pytest.raises(OSError):
        mirror.sync_run(local, drive, ["checkpoint.npz"])
    assert (drive / "checkpoint.npz").read_bytes() == b"checkpoint of epoch 20"
    assert sorted(p.name for p in drive.iterdir()) == ["checkpoint.npz", "history.csv",
                                                       "notebooks"]
    monkeypatch.undo()
    assert mirror.sync_run(local, drive, ["checkpoint.npz"]) == ["checkpoint.npz"]  # retried
    assert (drive / "checkpoint.npz").read_bytes().startswith(b"checkpoint of epoch 40")


def test_restore_run_brings_the_run_back_to_a_new_session_before_it_resumes(tmp_path):
    local, drive = tmp_path / "content" / "run", tmp_path / "MyDrive" / "run"
    assert mirror.restore_run(drive, local) == []  # nothing on Drive yet: a first session
    _a_run(local)
    mirror.sync_run(local, drive)
    on_drive = _tree(drive)
    # a new session: the runtime's disk is empty, Drive has the run
    shutil.rmtree(local)
    assert mirror.restore_run(drive, local) == sorted(on_drive)
    assert {k: v for k, v in _tree(local).items() if not k.startswith(".")} == on_drive
    assert mirror.sync_run(local, drive) == []  # restored files are not copied back
    # the same session again: the local run is newer than Drive's and is kept
    (local / "history.csv").write_text("epoch\n1\n2\n3\n")
    (local / "notebooks" / "03_training.ipynb").unlink()
    assert mirror.restore_run(drive, local) == ["notebooks/03_training.ipynb"]
    assert (local / "history.csv").read_text() == "epoch\n1\n2\n3\n"
    # a local folder without a checkpoint takes Drive's whole (consistent) copy
    (local / "checkpoint.npz").unlink()
    assert "history.csv" in mirror.restore_run(drive, local)
    assert (local / "history.csv").read_text() == "epoch\n1\n"


def test_the_paper_runner_trains_locally_and_keeps_its_run_on_drive():
    source = (REPO / "colab" / "run_paper_profile.py").read_text()
    for needed in ("colab.restore_run(drive_dir, run_dir)", "colab.SYNC_ENV",
                   "colab.sync_run(run_dir, drive_dir)", '"/content", "runs"'):
        assert needed in source, needed
    assert source.index("colab.restore_run") < source.index("report.run_all")


def test_every_notebook_tells_a_colab_user_the_runtime_time_and_what_is_asked():
    for path in (p for p in NOTEBOOKS if p.parent.name == "notebooks"):
        cells = json.loads(path.read_text())["cells"]
        badge = next("".join(c["source"]) for c in cells
                     if c["cell_type"] == "markdown" and "colab-badge" in "".join(c["source"]))
        flat = " ".join(badge.split())
        for words in ("CPU runtime", "few minutes", "Google Drive", "Kaggle token",
                      "synthetic set"):
            assert words in flat, (path.name, words)
