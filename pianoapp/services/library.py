"""Files into indexes: build, add to and remove from an index folder; shared by the CLI and the app.

Every file becomes one item: its notes (recordings are transcribed with basic-pitch first) give key,
tempo, texture, register and the rest (`data.attributes`); its metadata gives title, composer and
collection. Two engines embed items and queries (`ENGINE`, one per installation):
- "bind", when the trained text–audio–MIDI model is in models/bind (`models.bind`): an item is embedded
  from its opening's sound and notes, the matcher's audio and MIDI windows through the model's adapters
  (a score is rendered, a recording transcribed; the windows matching keeps are reused), a query by the
  model's text tower; beside that, the MiniLM embedding of the item's text (the metadata engine's), so
  that one inner product weighs the two cosines (`beside_text`; on held-out captions the blend ranks
  better than either, models/bind/MODEL_CARD.md);
- "metadata" otherwise: the item's description embedded with MiniLM (`item_text`), queries likewise.
Each names its `SPACE`; an index built in another space asks to be rebuilt, except a bind index from
before the text half, which gains it from its items' stored texts when opened (`_open_current`).

Files under the shared training data (POP909, ASAP, Nottingham) keep their collection's metadata
(song names, composers, tune types). Demo items are named `music21:<corpus path>`, the same on every
machine; `locate` finds the file.
"""

import atexit
import functools
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pianoapp import constants
from pianoapp.data.attributes import note_attributes
from pianoapp.data.captions import WORDINGS, caption_slots, describe
from pianoapp.data.corpora import Item, load_collection
from pianoapp.errors import BadInputError, NotAvailableError, PianoappError
from pianoapp.index import MANIFEST, Index, ItemTimeline, is_index, locked, read_manifest
from pianoapp.io.files import check_file, file_kind, write_atomic
from pianoapp.io.midi import piano_notes, read_midi, write_midi

BIND_DIR = constants.MODELS_DIR / "bind"
ENGINE = "bind" if (BIND_DIR / "model.safetensors").is_file() else "metadata"  # what answers a text query
# The checkpoint (bind) or the encoder and item-text recipe (metadata; bump on any change) embeddings come from.
_BIND_ID = hashlib.sha256((BIND_DIR / "model.safetensors").read_bytes()).hexdigest()[:12] if ENGINE == "bind" else ""
SPACE = f"bind+text/{_BIND_ID}" if ENGINE == "bind" else "all-MiniLM-L6-v2/metadata-text-v1"
_BIND_ONLY_SPACE = f"bind/{_BIND_ID}"  # the same model's embeddings before the text half was added
DEMO_INDEX_DIR = constants.ASSETS_DIR / "demo-index"
DEMO_COLLECTION = "music21"
UPLOADS_COLLECTION = "your files"
MUSIC21_PREFIX = "music21:"
INDEXED_SUFFIXES = constants.SYMBOLIC_SUFFIXES + constants.AUDIO_SUFFIXES
TRAINING_COLLECTIONS = ("pop909", "asap", "nottingham")
# Slots of `caption_slots` said in an item's text, each in its first training wording.
TEXT_SLOTS = ("genre", "mood", "tempo", "texture", "density", "register", "dynamics", "metre", "rendition")

PARALLEL_FROM = 8  # files per worker process below which reading in one process is faster
Progress = Callable[[int, int], None]  # (files done, files in all)


@dataclass
class Report:
    """What a build, add or remove did, for a summary line and the per-file reasons."""

    index_dir: Path
    added: list[dict] = field(default_factory=list)
    removed: list[dict] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)  # paths whose content is indexed already
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why), one sentence each
    total: int = 0  # items in the index afterwards

    def summary(self) -> str:
        done = [f"{len(self.added):,} added"] if self.added or not self.removed else []
        done += [f"{len(self.removed):,} removed"] if self.removed else []
        done += [f"{len(self.duplicates):,} already there"] if self.duplicates else []
        done += [f"{len(self.skipped):,} skipped"] if self.skipped else []
        return f"{', '.join(done)}; {self.total:,} item{'s' if self.total != 1 else ''} in {self.index_dir}."


# The engine --------------------------------------------------------------------------------------


def item_text(item: Item, attributes: dict) -> str:
    """What the metadata engine embeds: `describe` (title, composer, collection, key, tempo) and what
    the notes say (genre, mood, tempo, texture, density, register, dynamics, metre, rendition)."""
    slots = caption_slots(item, attributes)
    parts = [describe(item, attributes)]
    for name in TEXT_SLOTS:
        value = slots.get(name)
        if isinstance(value, tuple):
            concept, fields = value
            text = WORDINGS[concept][0][0].format(**fields)
            value = f"{text} {fields['form']}" if concept.startswith("style:") else text
        if value:
            parts.append(value)
    return "; ".join(parts)


def embed_texts(texts: list[str]) -> np.ndarray:
    """Texts (queries; for the metadata engine, item texts too) in the engine's space, unit rows."""
    if ENGINE == "bind":
        return beside_text(load_bind().encode_texts(texts), texts)
    return _minilm(texts)


# The description's cosine against the model's in a bind score: chosen on the validation split's held-out
# captions (`python bench/search_blend.py`; queries naming no title or composer, MRR 0.382 alone, 0.438
# at 1, 0.472 at 2, 0.473 at 3: a plateau from 2).
TEXT_WEIGHT = 2.0


def beside_text(vectors: np.ndarray, texts: list[str]) -> np.ndarray:
    """The bind engine's rows: each bind embedding (an item's, or a query's from the text tower) beside
    the MiniLM embedding of its text (the item's `item_text`, or the query), both unit, scaled so that a
    row is unit and an inner product of two is (bind cosine + TEXT_WEIGHT × text cosine) / (1 + TEXT_WEIGHT)."""
    halves = [v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
              for v in (np.asarray(vectors, np.float32), _minilm(texts))]
    return np.hstack([halves[0], np.sqrt(TEXT_WEIGHT) * halves[1]]) / np.sqrt(1.0 + TEXT_WEIGHT)


def _minilm(texts: list[str]) -> np.ndarray:
    from pianoapp.models.text_encoder import load_text_encoder  # torch and transformers: only when needed

    return load_text_encoder().encode(texts)


def embed_file(path: str | os.PathLike) -> np.ndarray:
    """A file's embedding as `add_uploads` would index it (titled by its name, in "your files"),
    without adding it: where an upload would sit among indexed items."""
    path = Path(path)
    source = Source(str(path), path, UPLOADS_COLLECTION, _plain_item(path, UPLOADS_COLLECTION), upload=True)
    record, _, vector = _record(source, _content_hash(check_file(path)), False)
    return (beside_text(vector[None], [record["text"]]) if vector is not None else embed_texts([record["text"]]))[0]


_bind_lock = threading.Lock()


def load_bind():
    """The bind model, loaded once, checked against the installed matcher it composes with."""
    from pianoapp.models.bind import matcher_id
    from pianoapp.models.checkpoint import load_config, load_model

    with _bind_lock:
        trained_with = load_config(BIND_DIR).get("matcher")
        if trained_with != matcher_id():
            raise NotAvailableError(
                f"The search model in {BIND_DIR} was trained with matcher {trained_with}, but models/matcher is "
                f"{matcher_id()}; retrain it with `pianoapp train bind --config small --out {BIND_DIR}`."
            )
        return load_model(BIND_DIR, device="cpu")


def item_vector(name: str, kind: str, notes: np.ndarray, audio: np.ndarray | None, timeline: ItemTimeline,
                attributes: dict) -> np.ndarray:
    """The bind engine's embedding of an item: the windows of its opening, audio and MIDI, and its
    notes' `attributes` (the whole piece's). Its own modality's windows are the matching timeline's;
    the other's are made: a score's opening rendered, a recording's transcription (`notes`) cut into
    note windows."""
    import pretty_midi

    from pianoapp.data.segments import SEGMENT_SECONDS
    from pianoapp.data.sequences import START
    from pianoapp.descriptors import piece_descriptors
    from pianoapp.io.midi import notes_to_midi
    from pianoapp.io.render import render
    from pianoapp.services.match import audio_windows, note_windows

    model = load_bind()
    opening = model.config.opening_seconds
    last_start = opening - SEGMENT_SECONDS + 1e-6  # windows wholly inside the opening, as in training
    own = np.asarray(timeline.embeddings)[timeline.start_s <= last_start]
    if kind == "audio":
        made, starts = note_windows(notes[notes[:, START] < opening])
    else:
        played = [pretty_midi.Note(int(v), int(p), s, e) for s, e, p, v in notes.tolist() if s < opening]
        made, starts = audio_windows(render(notes_to_midi(played))[: round(opening * constants.SAMPLE_RATE)])
    made = made[starts <= last_start]
    if not len(own) and not len(made):
        raise BadInputError(f"{name} has no notes in its first {opening:g} s to search by.")
    audio_w, midi_w = (own, made) if kind == "audio" else (made, own)
    return model.encode_item(audio_w, midi_w, piece_descriptors(attributes))


# Index folders ----------------------------------------------------------------------------------


def user_index_dir() -> Path:
    """The app's index of the user's own files: $PIANOAPP_HOME/index, else ~/.local/share/pianoapp/index."""
    home = os.environ.get("PIANOAPP_HOME") or Path.home() / ".local" / "share" / "pianoapp"
    return Path(home) / "index"


_opened: dict[Path, Index] = {}
_opened_lock = threading.Lock()


def open_index(folder: str | os.PathLike) -> Index:
    """An index for searching, read once per saved generation (a later save is picked up)."""
    folder = Path(folder).resolve()
    generation = read_manifest(folder)["generation"]
    with _opened_lock:
        cached = _opened.get(folder)
        if cached is None or cached.generation != generation:
            cached = _opened[folder] = _open_current(folder)
        return cached


def _open_current(folder: Path) -> Index:
    """The index in `folder`, in this installation's space. One from the bind model before items
    carried their text half gains it here, from each item's stored text: what a rebuild would give,
    without reading a file again; the next save keeps it."""
    index = Index.open(folder)
    if index.space == _BIND_ONLY_SPACE and ENGINE == "bind":
        index.reembed(SPACE, beside_text(index.embeddings, [item["text"] for item in index.items]))
    elif index.space != SPACE:
        Index.open(folder, space=SPACE)  # raises, saying what to rebuild
    return index


def demo_index_dir() -> Path:
    if not is_index(DEMO_INDEX_DIR):
        raise BadInputError(
            f"The built-in demo index is missing from {DEMO_INDEX_DIR}; rebuild it with "
            f"`pianoapp index build --demo --out {DEMO_INDEX_DIR}`."
        )
    return DEMO_INDEX_DIR


def open_indexes(index_dir: str | os.PathLike | None, with_user_index: bool) -> list[Index]:
    """The index named (default: the demo index) and, if asked and there is one, the user's library."""
    folders = [Path(index_dir) if index_dir is not None else demo_index_dir()]
    if with_user_index and is_index(user_index_dir()):
        folders.append(user_index_dir())
    return [open_index(folder) for folder in folders]


def locate(path: str) -> Path:
    """The file an item's path names on this machine."""
    if path.startswith(MUSIC21_PREFIX):
        from music21 import common  # slow import, only for demo items

        return Path(common.getCorpusFilePath()) / path.removeprefix(MUSIC21_PREFIX)
    return Path(path)


# Build, add, remove ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One file to index."""

    path: str  # what the index records: as the caller gave it
    file: Path  # where to read it now (an upload's own name is what error messages show)
    collection: str
    item: Item | None = None  # its collection's metadata, when known
    upload: bool = False  # uploads keep the app's length cap; collections are read whole

    @property
    def name(self) -> str:
        """How reports name the file: the path given, or an upload's own file name."""
        return self.file.name if self.upload else self.path


def build_index(paths: Iterable[str | os.PathLike], out_dir: str | os.PathLike, *,
                progress: Progress | None = None) -> Report:
    """A new index of the MIDI, score and audio files among `paths` (folders are walked) in out_dir,
    replacing any index there. Files that cannot be read are skipped, each with its reason."""
    sources, skipped = _find_files(paths)
    report = _build(sources, Path(out_dir), progress=progress)
    report.skipped[:0] = skipped
    return report


def build_demo_index(out_dir: str | os.PathLike = DEMO_INDEX_DIR, *, progress: Progress | None = None) -> Report:
    """The built-in demo index: music21's demo collection (`data.corpora`), paths `music21:<corpus path>`."""
    from music21 import common

    root = Path(common.getCorpusFilePath())
    sources = [Source(MUSIC21_PREFIX + item.path.relative_to(root).as_posix(), item.path, DEMO_COLLECTION, item)
               for item in load_collection(DEMO_COLLECTION)]
    return _build(sources, Path(out_dir), progress=progress)


def _build(sources: list[Source], out_dir: Path, *, progress: Progress | None) -> Report:
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInputError(f"{out_dir} is a file; choose a folder for the index.")
    if out_dir.is_dir() and not is_index(out_dir) and any(not p.name.startswith(".") for p in out_dir.iterdir()):
        raise BadInputError(f"{out_dir} holds other files; choose a new or empty folder for the index.")
    with locked(out_dir):
        index = Index.create(out_dir, SPACE, _engine_dim(), windows=_new_windows())
        index.generation = _current_generation(out_dir)  # the old index stays current until the new is saved
        return _index_files(index, sources, progress=progress)


def add_to_index(paths: Iterable[str | os.PathLike], index_dir: str | os.PathLike, *,
                 progress: Progress | None = None) -> Report:
    """Add files to an existing index; what it holds stays (content already there is not added twice)."""
    read_manifest(Path(index_dir))  # a missing or outdated index is a sentence, before anything is read
    sources, skipped = _find_files(paths)
    with locked(index_dir):
        report = _index_files(_open_current(Path(index_dir)), sources, progress=progress)
    report.skipped[:0] = skipped
    return report


def add_uploads(uploads: Iterable[str | os.PathLike], index_dir: str | os.PathLike | None = None, *,
                progress: Progress | None = None) -> Report:
    """Add files uploaded in the app to the user's index (created on first use), keeping a copy of
    each under the index's files/ folder, named by its content: an upload's name is only its title."""
    index_dir = Path(index_dir) if index_dir is not None else user_index_dir()
    store = index_dir / "files"
    sources, skipped = [], []
    with locked(index_dir):
        if is_index(index_dir):  # an outdated index is refused before any upload is copied
            index = _open_current(index_dir)
        else:
            index = Index.create(index_dir, SPACE, _engine_dim(), windows=_new_windows())
        store.mkdir(exist_ok=True)
        for upload in map(Path, uploads):
            try:
                file_kind(upload)
                copy = store / f"{_content_hash(check_file(upload))}{upload.suffix.lower()}"
            except PianoappError as err:
                skipped.append((upload.name, str(err)))
                continue
            if not copy.exists():  # atomic: a copy cut short by a crash would pass for the content later
                write_atomic(copy, lambda tmp, upload=upload: shutil.copyfile(upload, tmp))
            item = _plain_item(copy, UPLOADS_COLLECTION, title=_title(upload))
            sources.append(Source(str(copy), upload, UPLOADS_COLLECTION, item, upload=True))
        if not sources:
            raise BadInputError(" ".join(why for _, why in skipped) or "Choose MIDI, MusicXML or audio files to add.")
        saved = {it["path"] for it in index.items}
        try:
            report = _index_files(index, sources, progress=progress)
            saved = {it["path"] for it in index.items}
        finally:
            for orphan in store.iterdir():  # copies the saved index does not hold: not indexed, or not saved
                if str(orphan) not in saved:
                    orphan.unlink(missing_ok=True)
    report.skipped[:0] = skipped
    return report


def remove_from_index(keys: Iterable[str], index_dir: str | os.PathLike) -> Report:
    """Remove items by path (as indexed, or naming the same file) or id; unknown keys are an error."""
    keys = [str(k) for k in keys]
    read_manifest(Path(index_dir))
    with locked(index_dir):
        index = _open_current(Path(index_dir))
        by_file = {_same_file(it["path"]): it["path"] for it in index.items}
        wanted = {by_file.get(_same_file(k), k) for k in keys}
        removed = index.remove(wanted)
        missing = sorted(wanted - {it["path"] for it in removed} - {it["id"] for it in removed})
        if missing:
            raise BadInputError(f"Not in the index at {index_dir}: {', '.join(missing)}; nothing was removed.")
        index.save()
    store = Path(index_dir) / "files"
    for item in removed:
        if Path(item["path"]).parent == store:  # the app's copy of an upload goes with it
            Path(item["path"]).unlink(missing_ok=True)
    return Report(Path(index_dir), removed=removed, total=len(index))


def _find_files(paths: Iterable[str | os.PathLike]) -> tuple[list[Source], list[tuple[str, str]]]:
    """The files among `paths`, and (path, why) for the given paths that are no use.

    A folder's files take the folder's name as their collection; inside folders, files of other
    kinds (notes, images) are passed over silently.
    """
    sources, skipped = [], []
    for given in map(str, paths):
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*")
                           if p.is_file() and p.suffix.lower() in INDEXED_SUFFIXES and not p.name.startswith("."))
            if not found:
                skipped.append((given, f"{given} holds no MIDI, MusicXML or audio files."))
            collection = path.resolve().name
            for p in found:
                recorded = os.path.join(given, p.relative_to(path).as_posix())
                sources.append(Source(recorded, p, collection, _known_item(p)))
        elif not path.exists():
            skipped.append((given, f"{given}: no such file or folder."))
        else:
            sources.append(Source(given, path, path.resolve().parent.name, _known_item(path)))
    if not sources:
        raise BadInputError(" ".join(why for _, why in skipped[:3]) or
                            "No files given; name MIDI, MusicXML or audio files, or folders holding them.")
    return sources, skipped


def _index_files(index: Index, sources: list[Source], *, progress: Progress | None) -> Report:
    """Read, describe and embed the files not indexed yet; add them to `index` and save it."""
    report = Report(index.folder)
    known_ids = {it["id"] for it in index.items}
    with_windows = index.windows is not None
    todo = []
    for source in sources:
        try:
            digest = _content_hash(check_file(source.file))
        except PianoappError as err:
            report.skipped.append((source.name, str(err)))
            continue
        if digest in known_ids:
            report.duplicates.append(source.name)
        else:
            known_ids.add(digest)
            todo.append((source, digest, with_windows))
    if progress:
        progress(len(sources) - len(todo), len(sources))
    records, windows, vectors = [], [], []
    for done, ((source, *_), (record, item_windows, vector, why)) in enumerate(zip(todo, _read_all(todo), strict=True), 1):
        if record is None:
            report.skipped.append((source.name, why))
        else:
            records.append(record)
            windows.append(item_windows)
            vectors.append(vector)
        if progress:
            progress(len(sources) - len(todo) + done, len(sources))
    if sources and not records and not report.duplicates:
        reasons = " ".join(list(dict.fromkeys(why for _, why in report.skipped))[:3])  # each reason once
        which = "The file could not" if len(sources) == 1 else f"None of the {len(sources)} files could"
        raise BadInputError(f"{which} be indexed: {reasons}")
    if records:
        texts = [r["text"] for r in records]
        embeddings = beside_text(np.stack(vectors), texts) if ENGINE == "bind" else embed_texts(texts)
        report.added = index.add(records, embeddings, windows if with_windows else None)
    index.save()
    report.total = len(index)
    return report


def _read_all(todo: list[tuple[Source, str, bool]]) -> Iterator[tuple]:
    """(record, windows, vector, "") or (None, None, None, why) per file, in order; many files are
    read in parallel (music21 takes seconds per long score)."""
    workers = min(os.cpu_count() or 1, len(todo) // PARALLEL_FROM)
    if workers < 2:
        yield from map(_try_record, todo)
        return
    # spawn, not fork: the app's threads must not be copied mid-work into the children
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_one_thread) as pool:
        yield from pool.map(_try_record, todo)


def _one_thread() -> None:
    """Worker processes split the files, so each embeds on one thread rather than fighting for all."""
    import torch

    torch.set_num_threads(1)


def _try_record(job: tuple[Source, str, bool]) -> tuple:
    try:
        return (*_record(*job), "")
    except PianoappError as err:
        return None, None, None, str(err)


def _record(source: Source, digest: str, with_windows: bool) -> tuple[dict, ItemTimeline | None, np.ndarray | None]:
    """An index item for a file (its "text" is what the metadata engine embeds), what matching keeps
    of it if asked (`services.match.item_timeline`), and its bind embedding with that engine."""
    from pianoapp.data.segments import note_rows
    from pianoapp.services.match import item_timeline

    path = source.file
    item = source.item or _plain_item(path, source.collection)
    audio = None
    if file_kind(path) == "audio":
        from pianoapp.io.audio import load_audio
        from pianoapp.io.transcribe import transcribe

        audio = load_audio(path)
        pm = transcribe(audio)
    else:
        pm = read_midi(path, max_seconds=None if source.upload else float("inf"))
    if "metre" not in item.meta and pm.time_signature_changes:
        ts = pm.time_signature_changes[0]
        item = Item(item.item_id, item.path, item.collection, item.piece_id, item.title, item.composer,
                    {**item.meta, "metre": f"{ts.numerator}/{ts.denominator}"})
    notes = piano_notes(pm)
    attributes = {k: v.item() if isinstance(v, np.generic) else v for k, v in note_attributes(notes).items()}
    text = item_text(item, attributes)
    record = {
        "id": digest,
        "path": source.path,
        "title": item.title,
        "composer": item.composer,
        "collection": item.collection,
        "key": item.meta.get("key") or attributes["key"],
        "tempo_bpm": round(item.meta.get("tempo_bpm") or attributes["tempo_bpm"], 1),
        "metre": item.meta.get("metre", ""),
        "duration_s": round(attributes["duration_s"], 2),
        "attributes": attributes,
        "text": text,
    }
    kind, rows = "audio" if audio is not None else "midi", note_rows(notes)
    timeline = item_timeline(kind, notes=rows, audio=audio) if with_windows or ENGINE == "bind" else None
    vector = item_vector(source.name, kind, rows, audio, timeline, attributes) if ENGINE == "bind" else None
    return record, timeline if with_windows else None, vector


def _plain_item(path: Path, collection: str, *, title: str | None = None) -> Item:
    """What a file says about itself when it belongs to no known collection: its name."""
    kind = {"audio": "recording"}.get(file_kind(path), file_kind(path))
    return Item(str(path), path, collection, str(path), title or _title(path), "", {"kind": kind})


def _known_item(path: Path) -> Item | None:
    """The collection's own item for a file of the shared training data, if it is one."""
    for name in TRAINING_COLLECTIONS:
        folder = (constants.DEFAULT_DATA_DIR / name).resolve()
        if folder in path.resolve().parents:
            return _training_items(name).get(path.resolve())
    return None


@functools.cache
def _training_items(name: str) -> dict[Path, Item]:
    return {item.path.resolve(): item for item in load_collection(name)}


def _title(path: Path) -> str:
    """A file name as a title: 'my_song-final.mid' → 'my song final'."""
    return re.sub(r"[_\s]+", " ", path.stem).strip() or path.name


def _content_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:20]


def _same_file(path: str) -> str:
    return path if path.startswith(MUSIC21_PREFIX) else os.path.realpath(path)


def _new_windows():
    from pianoapp.services.match import new_windows

    return new_windows()


def _engine_dim() -> int:
    from pianoapp.models.text_encoder import load_text_encoder

    if ENGINE == "bind":
        from pianoapp.models.checkpoint import load_config

        return int(load_config(BIND_DIR)["model"]["embed_dim"]) + load_text_encoder().dim
    return load_text_encoder().dim


def _current_generation(folder: Path) -> int:
    """The generation of the index in `folder` (0 if none), whatever version or encoder wrote it: a
    rebuild saves the next one, so the switch stays atomic."""
    try:
        return int(json.loads((folder / MANIFEST).read_text())["generation"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


# Downloads --------------------------------------------------------------------------------------


@functools.cache
def _download_dir() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="pianoapp-downloads-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def midi_download(item: dict) -> Path:
    """A MIDI file of an indexed item, named after its title, in a temporary folder the app may serve
    (scores are converted, recordings transcribed)."""
    path = check_file(locate(item["path"]))
    name = re.sub(r"[^\w\- ]+", "", item["title"]).strip()[:60] or "piece"
    out = _download_dir() / item["id"] / f"{name}.mid"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        if file_kind(path) == "midi":
            shutil.copyfile(path, out)
        elif file_kind(path) == "audio":
            from pianoapp.io.audio import load_audio
            from pianoapp.io.transcribe import transcribe

            write_midi(transcribe(load_audio(path)), out)
        else:
            write_midi(read_midi(path, max_seconds=float("inf")), out)
    return out
