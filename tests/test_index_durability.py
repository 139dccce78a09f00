"""An index survives the process writing it being killed, and uploads never become paths in it.

`pianoapp index add` runs in a subprocess and is SIGKILLed at several moments: while starting, while
reading files, while saving the next generation, and just after the manifest switched to it. Each
time the index is the old one or the new one, never corrupt, and search and match answer from it;
the writer lock dies with the process, so the next add runs to the end.
"""

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_cli import PIANOAPP, assert_one_line_error

from pianoapp import constants
from pianoapp.errors import BadInputError
from pianoapp.index import MANIFEST, locked, read_manifest

ASSETS = constants.ASSETS_DIR
BASE = ["mozart_k545_opening.mid", "bach_chorale_bwv66.6.mid"]
ADDED = ["joplin_maple_leaf_rag_opening.mid", "pedal_arpeggios.mid", "folk_lead_sheet.mid",
         "joplin_maple_leaf_rag_opening.flac"]
LAST = "nottingham_playford14_lead_sheet.mid"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PIANOAPP_DEBUG": ""}


@pytest.fixture(scope="module")
def base_index(tmp_path_factory):
    """A real index of two pieces, with matching windows."""
    from pianoapp.services.library import build_index

    folder = tmp_path_factory.mktemp("base") / "index"
    build_index([ASSETS / name for name in BASE], folder)
    return folder


def _ids(folder: Path) -> set[str]:
    from pianoapp.index import Index
    from pianoapp.services.library import SPACE

    return {Path(it["path"]).name for it in Index.open(folder, space=SPACE).items}


def _generation(folder: Path) -> int | None:
    try:
        return json.loads((folder / MANIFEST).read_text())["generation"]
    except (OSError, ValueError):  # caught between the temporary file and the rename: look again
        return None


def _add(names: list[str], folder: Path) -> list[str]:
    return [str(PIANOAPP), "index", "add", *(str(ASSETS / n) for n in names), "--index", str(folder)]


def _kill_add(names: list[str], folder: Path, moment: str) -> None:
    """Start `pianoapp index add` and SIGKILL it at `moment`."""
    old = _generation(folder)
    proc = subprocess.Popen(_add(names, folder), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    os.set_blocking(proc.stderr.fileno(), False)
    seen, started = b"", time.monotonic()
    try:
        while proc.poll() is None and time.monotonic() - started < 240:
            seen += proc.stderr.read() or b""
            if moment == "starting":
                hit = time.monotonic() - started > 0.5
            elif moment == "reading files":
                hit = b"indexing:" in seen
            elif moment == "saving":  # a file of the next generation exists (the manifest may not name it yet)
                hit = any(f"-{old + 1}." in p.name for p in folder.iterdir())
            else:  # "just saved": the manifest names the new generation; the old one's files may remain
                hit = _generation(folder) not in (None, old)
            if hit:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.0005)
    finally:
        if proc.poll() is None and time.monotonic() - started >= 240:
            proc.kill()
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, f"index add ended by itself before '{moment}'"


def _answers(folder: Path) -> None:
    from pianoapp.services.match import match
    from pianoapp.services.search import search

    assert search("a cheerful piece", index_dir=folder, k=10)
    assert match(ASSETS / "mozart_k545_opening.mid", index_dir=folder, k=3)["results"]


def test_index_add_killed_at_any_moment_leaves_the_old_or_the_new_index(base_index, tmp_path):
    folder = tmp_path / "index"
    shutil.copytree(base_index, folder)
    base = _ids(folder)
    for moment in ("starting", "reading files", "saving"):
        _kill_add(ADDED, folder, moment)
        assert _ids(folder) in (base, base | set(ADDED)), moment  # opens: not corrupt
        _answers(folder)
    # The killed writers' lock went with them: the next add runs to the end, keeps everything and
    # clears what a killed save left half-written.
    done = subprocess.run(_add(ADDED, folder), check=False, capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr
    assert _ids(folder) == base | set(ADDED)
    generation = read_manifest(folder)["generation"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [MANIFEST, f"items-{generation}.jsonl", f"embeddings-{generation}.npy", f"windows-{generation}.npz"])
    # Killed just after the switch: the new index stands, and the command line answers from it.
    _kill_add([LAST], folder, "just saved")
    assert _ids(folder) == base | set(ADDED) | {LAST}
    search, match = (subprocess.Popen([PIANOAPP, *argv, "--index", str(folder), "--json"], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=ENV)
                     for argv in (["search", "a ragtime"], ["match", str(ASSETS / "pedal_arpeggios.mid")]))
    for proc in (search, match):
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert json.loads(out)["results"]
    assert Path(json.loads(out)["results"][0]["path"]).name == "pedal_arpeggios.mid"


def test_the_writer_lock_is_released_when_its_holder_is_killed(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom pianoapp.index import locked\n"
        f"with locked({str(tmp_path)!r}):\n    print('locked', flush=True)\n    time.sleep(600)\n")],
        stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "locked"
        fd = os.open(tmp_path, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):  # held: the check below is not vacuous
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=30)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free at once, without waiting
        finally:
            os.close(fd)
    finally:
        holder.kill()
        holder.wait()
    with locked(tmp_path):
        pass


def test_an_index_from_another_version_is_one_sentence_on_the_command_line(base_index, tmp_path):
    folder = tmp_path / "index"
    shutil.copytree(base_index, folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**manifest, "version": manifest["version"] + 1}))
    before = sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir())
    for argv in (["search", "waltz"], ["index", "add", str(ASSETS / ADDED[0])]):
        proc = subprocess.run([PIANOAPP, *argv, "--index", str(folder)], check=False, capture_output=True, text=True,
                              env=ENV, timeout=300)
        assert proc.returncode == 2 and proc.stdout == ""
        assert_one_line_error(proc.stderr)
        assert "another version of Pianoapp" in proc.stderr and "rebuild it" in proc.stderr
    assert sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir()) == before  # untouched


# Uploads ----------------------------------------------------------------------------------------


def test_upload_names_never_become_paths_in_the_index(tmp_path):
    """Uploads are stored by content hash: a name with '..' or an index file's name is only a title."""
    from pianoapp.services.library import add_uploads

    index = tmp_path / "home" / "index"
    uploads = tmp_path / "uploads" / "a" / "b"
    uploads.mkdir(parents=True)
    traversal = Path(f"{uploads}/../../etc/passwd.mid")  # the name a browser might send, as a path
    traversal.parent.mkdir(parents=True)
    shutil.copy(ASSETS / "mozart_k545_opening.mid", traversal)
    for name in ("manifest.mid", "items-1.jsonl.mid"):
        shutil.copy(ASSETS / "bach_chorale_bwv66.6.mid", uploads / name)
    named_manifest = uploads / MANIFEST  # MIDI bytes named like the index's own manifest
    shutil.copy(ASSETS / "pedal_arpeggios.mid", named_manifest)

    report = add_uploads([traversal, uploads / "manifest.mid", uploads / "items-1.jsonl.mid", named_manifest], index)
    assert [Path(it["path"]).parent for it in report.added] == [index / "files"] * 2
    assert report.duplicates == ["items-1.jsonl.mid"]  # same bytes as manifest.mid: one copy
    assert [name for name, _ in report.skipped] == [MANIFEST]  # not a music file by its name: refused
    assert {it["title"] for it in report.added} == {"passwd", "manifest"}
    generation = read_manifest(index)["generation"]
    assert json.loads((index / MANIFEST).read_text())["format"] == "pianoapp-index"
    assert sorted(p.name for p in index.iterdir()) == sorted(
        [MANIFEST, "files", f"items-{generation}.jsonl", f"embeddings-{generation}.npy", f"windows-{generation}.npz"])
    assert sorted(p.suffix for p in (index / "files").iterdir()) == [".mid", ".mid"]
    assert not (tmp_path / "home" / "etc").exists() and not (index.parent / "etc").exists()


def test_a_failed_upload_leaves_no_files_behind(tmp_path, monkeypatch):
    from pianoapp.index import Index
    from pianoapp.services import library

    index = tmp_path / "index"
    library.add_uploads([ASSETS / "mozart_k545_opening.mid"], index)

    def files() -> list[Path]:
        return sorted(p.relative_to(index) for p in index.rglob("*"))

    before = files()
    damaged = tmp_path / "damaged.mid"
    damaged.write_bytes((ASSETS / "joplin_maple_leaf_rag_opening.mid").read_bytes()[:60])
    with pytest.raises(BadInputError):
        library.add_uploads([damaged], index)
    assert files() == before

    def half_a_copy(src, dst):  # the disk fills up halfway through copying the upload
        Path(dst).write_bytes(Path(src).read_bytes()[:100])
        raise OSError("No space left on device")

    with monkeypatch.context() as m:
        m.setattr(library.shutil, "copyfile", half_a_copy)
        with pytest.raises(OSError):
            library.add_uploads([ASSETS / "bach_chorale_bwv66.6.mid"], index)
    assert files() == before  # no truncated copy left under the content's name

    def crash(self):  # the process fails saving, after the copy was made and the item added in memory
        raise RuntimeError("out of memory")

    with monkeypatch.context() as m:
        m.setattr(Index, "save", crash)
        with pytest.raises(RuntimeError):
            library.add_uploads([ASSETS / "bach_chorale_bwv66.6.mid"], index)
    assert files() == before
    assert len(library.add_uploads([ASSETS / "bach_chorale_bwv66.6.mid"], index).added) == 1
