"""The collections Pianoapp trains on (POP909, ASAP, Nottingham) and ships as its demo (music21's corpus).

Each file becomes an `Item`. Loaders read index files, annotation text and music21's own metadata
cache, never the notes, so listing everything takes about a second. `Item.meta` holds what those
sources say (kind, metre, key, tempo, form, style); what the notes say is `attributes.note_attributes`.
"""

import csv
import functools
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pianoapp.constants import DEFAULT_DATA_DIR, MUSICXML_SUFFIXES, SCORE_SUFFIXES
from pianoapp.data.splits import SPLITS, split_of
from pianoapp.errors import BadInputError


@dataclass(frozen=True)
class Item:
    item_id: str  # e.g. "pop909/001", "asap/Bach/Fugue/bwv_846/Shi05M", "music21/bach/bwv66.6"
    path: Path  # the MIDI or score file
    collection: str  # one of COLLECTIONS
    piece_id: str  # shared by every performance and the score of one piece; splits go by it
    title: str
    composer: str  # composer or artist; "" if unknown
    # Known without reading notes: kind, metre, key, key_signature, tempo_bpm, tempo_marking, form, style.
    meta: dict = field(hash=False)  # shared with the loader's cache: treat as read-only


COLLECTIONS = ("pop909", "asap", "nottingham", "music21")

# fmt: off
ERAS = {
    "Ciconia": "Medieval",
    "Palestrina": "Renaissance", "Josquin des Prez": "Renaissance", "Monteverdi": "Renaissance",
    "Lusitano": "Renaissance",
    "Bach": "Baroque", "Handel": "Baroque", "Corelli": "Baroque",
    "C. P. E. Bach": "Classical", "Haydn": "Classical", "Mozart": "Classical", "Beethoven": "Classical",
    "Schubert": "Romantic", "Chopin": "Romantic", "Schumann": "Romantic", "Clara Schumann": "Romantic",
    "Liszt": "Romantic", "Brahms": "Romantic", "Glinka": "Romantic", "Balakirev": "Romantic",
    "Verdi": "Romantic", "Amy Beach": "Romantic",
    "Scriabin": "late Romantic", "Rachmaninoff": "late Romantic",
    "Debussy": "Impressionist", "Ravel": "Impressionist",
    "Prokofiev": "20th-century", "Schoenberg": "20th-century", "Webern": "20th-century",
    "Joplin": "ragtime",
}

# Words in titles and folder names that name a form, most specific first.
FORMS = (
    ("etude", "étude"), ("fugue", "fugue"), ("prelude", "prelude"), ("sonata", "sonata"),
    ("ballade", "ballade"), ("scherzo", "scherzo"), ("polonaise", "polonaise"), ("mazurka", "mazurka"),
    ("waltz", "waltz"), ("impromptu", "impromptu"), ("rhapsod", "rhapsody"), ("toccata", "toccata"),
    ("fantas", "fantasy"), ("barcarolle", "barcarolle"), ("berceuse", "berceuse"), ("concerto", "concerto"),
    ("moment musical", "moment musical"), ("arabesk", "arabesque"), ("nocturne", "nocturne"),
    ("quartet", "string quartet"), ("madrigal", "madrigal"), ("chorale", "chorale"),
    ("slip jig", "slip jig"), ("jig", "jig"), ("reel", "reel"), ("hornpipe", "hornpipe"),
    ("strathspey", "strathspey"), ("polka", "polka"), ("march", "march"), ("minuet", "minuet"),
    ("rag", "rag"), ("variations", "variations"),
)
# fmt: on

# Nottingham file-name prefix: (tune type, the metre that type is written in, where it fixes one).
NOTTINGHAM_TYPES = {
    "ashover": ("Ashover tune", None),  # the Ashover manuscript: dances in several metres
    "hpps": ("hornpipe", "4/4"),
    "jigs": ("jig", "6/8"),
    "morris": ("Morris dance", None),
    "playford": ("Playford dance", None),
    "reels": ("reel", None),  # written in 4/4 or 2/4
    "slip": ("slip jig", "9/8"),
    "waltzes": ("waltz", "3/4"),
    "xmas": ("Christmas tune", None),
}

# music21 corpus folders in the demo collection: (composer, form, style). Composer "" means many or
# anonymous (music21's metadata may name one); style "" means the composer's era. Folders not here
# (demos, theory exercises, the Nottingham tunes, which are a collection of their own) are left out.
MUSIC21_FOLDERS = {
    "airdsAirs": ("", "air", "Scottish"),
    "bach": ("Bach", "chorale", ""),
    "beach": ("Amy Beach", "song", ""),
    "beethoven": ("Beethoven", "string quartet", ""),
    "ciconia": ("Ciconia", "canon", ""),
    "corelli": ("Corelli", "trio sonata", ""),
    "cpebach": ("C. P. E. Bach", "sonata", ""),
    "essenFolksong": ("", "folk song", "folk"),
    "handel": ("Handel", "aria", ""),
    "haydn": ("Haydn", "string quartet", ""),
    "johnson_j_r": ("J. Rosamond Johnson", "song", "American"),
    "joplin": ("Joplin", "rag", ""),
    "josquin": ("Josquin des Prez", "chanson", ""),
    "leadSheet": ("", "song", "American popular"),
    "liliuokalani": ("Liliuokalani", "song", "Hawaiian"),
    "luca": ("", "mass movement", "Medieval"),
    "lusitano": ("Lusitano", "madrigal", ""),
    "miscFolk": ("", "folk tune", "folk"),
    "monteverdi": ("Monteverdi", "madrigal", ""),
    "mozart": ("Mozart", "", ""),
    "oneills1850": ("", "dance tune", "Irish"),
    "palestrina": ("Palestrina", "mass movement", ""),
    "ryansMammoth": ("", "fiddle tune", "traditional"),
    "schoenberg": ("Schoenberg", "piano piece", ""),
    "schubert": ("Schubert", "song", ""),
    "schumann_clara": ("Clara Schumann", "", ""),
    "schumann_robert": ("Schumann", "", ""),
    "trecento": ("", "song", "Medieval"),
    "verdi": ("Verdi", "aria", ""),
    "webern": ("Webern", "canon", ""),
}
MUSIC21_PER_FOLDER = 30  # keeps the demo balanced: Palestrina alone has 1,318 files
# Folders whose metadata titles name a section or a voice part ("First Section", "Canto"), not the piece.
MUSIC21_TITLED_BY_FILE = frozenset({"palestrina", "monteverdi"})
# Longer scores (Beethoven's quartets, up to 3,600 quarter notes) take music21 5 s to 2 min to convert,
# too slow for a demo collection that is rendered and indexed on first start.
MUSIC21_MAX_QUARTERS = 800
# Files (without suffix) `read_midi` rejects although short enough: badly formed repeats, ABC that
# music21 10.5 cannot build. Found by reading every candidate once.
MUSIC21_UNREADABLE = frozenset(
    {
        "essenFolksong/ballad60",
        "essenFolksong/fink0",
        "essenFolksong/variant0",
        "haydn/opus74no1/movement3",
        "haydn/opus74no1/movement4",
        "mozart/k458/movement2",
        "oneills1850/0001-0050",
        "oneills1850/0626-0635",
        "ryansMammoth/KittyInTheLaneReel",
        "ryansMammoth/LookBeforeYouStrathspey",
    }
)


def load_collection(name: str, data_dir: Path | None = None) -> list[Item]:
    """Every item of one collection, in a fixed order. Reads index files only, never notes."""
    if name not in COLLECTIONS:
        raise BadInputError(f"Unknown collection '{name}'; choose one of {', '.join(COLLECTIONS)}.")
    if name == "music21":
        return list(_music21())
    folder = (Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR) / name
    if not folder.is_dir():
        raise BadInputError(
            f"The {name} data is not at {folder}; pass the folder that holds pop909/, asap/ and nottingham/."
        )
    return list(_LOADERS[name](folder.resolve()))


def load_items(
    collections: tuple[str, ...] | list[str] | str = COLLECTIONS,
    data_dir: Path | None = None,
    split: str | None = None,
) -> list[Item]:
    """Items of several collections, optionally only those of one split ('train', 'val' or 'test')."""
    if split is not None and split not in SPLITS:
        raise BadInputError(f"Unknown split '{split}'; choose one of {', '.join(SPLITS)}.")
    if isinstance(collections, str):
        collections = (collections,)
    items = [item for name in collections for item in load_collection(name, data_dir)]
    return items if split is None else [item for item in items if split_of(item.piece_id) == split]


def form_of(text: str) -> str:
    """The form a title or folder name names ('Etudes_op_10' → 'étude'), or ''."""
    words = text.lower().replace("_", " ")
    return next((form for stem, form in FORMS if re.search(rf"\b{stem}", words)), "")


def _beat_tempo(beat_times) -> float | None:
    """Beats per minute from annotated beat times (median beat length, robust to rubato and gaps)."""
    gaps = np.diff(np.asarray(beat_times, dtype=float))
    gaps = gaps[gaps > 0]
    return round(60.0 / float(np.median(gaps)), 1) if len(gaps) else None


# POP909 ---------------------------------------------------------------------------------------


@functools.cache
def _pop909(folder: Path) -> tuple[Item, ...]:
    items = []
    with open(folder / "index.csv", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            song = row["song_id"]
            song_dir = folder / song
            beats, subdivisions = int(row["num_beats_per_measure"]), int(row["num_quavers_per_beat"])
            meta = {
                "kind": "arrangement",
                "style": "Chinese pop",
                "form": "song",
                # the index counts beats per bar and quavers per beat: 3 quavers make the metre compound
                "metre": f"{beats * 3}/8" if subdivisions == 3 else f"{beats}/4",
                "key": _pop909_key(song_dir / "key_audio.txt"),
                "tempo_bpm": _beat_tempo(np.loadtxt(song_dir / "beat_midi.txt", ndmin=2)[:, 0]),
            }
            item_id = f"pop909/{song}"
            items.append(
                Item(item_id, song_dir / f"{song}.mid", "pop909", item_id, row["name"], row["artist"], meta)
            )
    return tuple(items)


def _pop909_key(path: Path) -> str | None:
    """The key the song spends longest in: 'Gb:maj' → 'Gb major'."""
    spans = [line.split("\t") for line in path.read_text().splitlines() if line.strip()]
    if not spans:
        return None
    label = max(spans, key=lambda s: float(s[1]) - float(s[0]))[2]
    tonic, _, mode = label.partition(":")
    return f"{tonic} {'minor' if mode.startswith('min') else 'major'}"


# ASAP -----------------------------------------------------------------------------------------

# Folders holding the same piece with or without repeats ("17-1_no_repeat") join their piece.
ASAP_VARIANT = re.compile(r"_(no_\w*repeat|repeat|no_trio)$")
SINGULAR = {
    "Ballades": "Ballade",
    "Etudes": "Etude",
    "Polonaises": "Polonaise",
    "Preludes": "Prelude",
    "Scherzos": "Scherzo",
    "Sonatas": "Sonata",
    "Rhapsodies": "Rhapsody",
}


@functools.cache
def _asap(folder: Path) -> tuple[Item, ...]:
    rows_by_piece: dict[str, list[dict]] = defaultdict(list)
    with open(folder / "metadata.csv", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            rows_by_piece[row["folder"]].append(row)
    items = []
    for piece_folder, rows in rows_by_piece.items():
        composer = rows[0]["composer"]
        parts = piece_folder.split("/")
        piece_id = "asap/" + "/".join(ASAP_VARIANT.sub("", part) for part in parts)
        title = _asap_title(parts[1:])
        base = {"form": form_of("/".join(parts[1:])), "style": ERAS.get(composer, "")}
        files = [("score", rows[0]["midi_score"], rows[0]["midi_score_annotations"])]
        files += [("performance", row["midi_performance"], row["performance_annotations"]) for row in rows]
        for kind, midi, annotations in files:
            meta = {"kind": kind, **base, **_annotation_meta(folder / annotations)}
            item_id = f"asap/{piece_folder}/{Path(midi).stem}"
            items.append(Item(item_id, folder / midi, "asap", piece_id, title, composer, meta))
    return tuple(items)


def _asap_title(parts: list[str]) -> str:
    """A title from the folders below the composer: 'Piano_Sonatas/17-1' → 'Piano Sonata 17, movement 1'."""
    work, *rest = [ASAP_VARIANT.sub("", part) for part in parts]
    work = _words(work)
    if not rest:
        return work
    piece = rest[0]
    if re.fullmatch(r"\d+(st|nd|rd|th)", piece):
        return f"{work}, {piece} movement"
    if match := re.fullmatch(r"(\d+)-(\d+)(?:_(\d+))?", piece):
        number, movement, also = match.groups()
        movements = f"movements {movement} and {also}" if also else f"movement {movement}"
        piece = f"{number}, {movements}"
    elif match := re.fullmatch(r"(\d+)_(.+)", piece):
        piece = f"{match[1]}, {_words(match[2])}"
    else:
        piece = _words(piece)
    if "Op." in work:
        return f"{work} No. {piece}"
    *head, last = work.split(" ")
    return " ".join([*head, SINGULAR.get(last, last), piece])


def _words(name: str) -> str:
    """A folder or file name as words: 'Etudes_op_10' → 'Etudes Op. 10', 'bwv_846' → 'BWV 846'."""
    text = name.replace("_", " ")
    text = re.sub(r"\bop\.? ?(?=\d)", "Op. ", text, flags=re.IGNORECASE)
    text = re.sub(r"\bbwv ?", "BWV ", text, flags=re.IGNORECASE)
    return re.sub(r"\bno (?=\d)", "No. ", text, flags=re.IGNORECASE)


def _annotation_meta(path: Path) -> dict:
    """Metre, key signature and beat tempo from an ASAP annotation file.

    Lines are 'time<TAB>time<TAB>label' with label 'b' or 'db' (downbeat), followed on the beats where
    they change by ',metre' and ',key signature in fifths'.
    """
    if not path.is_file():
        return {}
    times, meta = [], {}
    for line in path.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) < 3:
            continue
        times.append(float(fields[0]))
        labels = fields[2].split(",")
        if len(labels) > 1 and labels[1] and "metre" not in meta:
            meta["metre"] = labels[1]
        if len(labels) > 2 and labels[2] and "key_signature" not in meta:
            meta["key_signature"] = int(labels[2])
    meta["tempo_bpm"] = _beat_tempo(times)
    return meta


# Nottingham -----------------------------------------------------------------------------------


@functools.cache
def _nottingham(folder: Path) -> tuple[Item, ...]:
    items = []
    for path in sorted(folder.glob("*.mid"), key=_natural_order):
        match = re.fullmatch(r"([a-z]+?)(?:([a-z])-([a-z]))?(\d+)", path.stem)
        if not match or match[1] not in NOTTINGHAM_TYPES:
            continue
        prefix, first, last, number = match.groups()
        tune_type, metre = NOTTINGHAM_TYPES[prefix]
        title = f"{tune_type[0].upper()}{tune_type[1:]} {number}"
        if first:  # reels are filed alphabetically: reelsa-c holds tunes whose titles start A to C
            title += f" ({first.upper()}–{last.upper()})"
        meta = {"kind": "lead sheet", "form": tune_type, "style": "traditional"}
        if metre:
            meta["metre"] = metre
        item_id = f"nottingham/{path.stem}"
        items.append(Item(item_id, path, "nottingham", item_id, title, "", meta))
    return tuple(items)


def _natural_order(path: Path) -> tuple:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.stem))


# music21 --------------------------------------------------------------------------------------


@functools.cache
def _music21() -> tuple[Item, ...]:
    from music21 import common  # slow import, only when the demo collection is asked for

    root = Path(common.getCorpusFilePath())
    metadata = _music21_metadata()
    items = []
    for path in _music21_files(root, metadata):
        rel = path.relative_to(root)
        folder = rel.parts[0]
        composer, form, style = MUSIC21_FOLDERS[folder]
        md = dict(metadata[rel.as_posix()].all())
        if not composer:
            composer = _clean_composer(md.get("composer"))
        title = _file_title(rel) if folder in MUSIC21_TITLED_BY_FILE else _music21_title(md, rel)
        meta = {
            "kind": "score",
            "form": form_of(title) or form,
            "style": style or ERAS.get(composer, ""),
            **_music21_musical_meta(md),
        }
        item_id = "music21/" + rel.with_suffix("").as_posix()
        items.append(Item(item_id, path, "music21", item_id, title, composer, meta))
    return tuple(items)


def _music21_files(root: Path, metadata: dict) -> list[Path]:
    """Up to MUSIC21_PER_FOLDER readable files per folder, spread evenly over its sorted files.

    MusicXML is preferred where a score also comes as Humdrum; scores over MUSIC21_MAX_QUARTERS are out.
    """
    from music21 import corpus

    by_folder: dict[str, dict[Path, Path]] = defaultdict(dict)
    for path in sorted(Path(p) for p in corpus.getPaths()):
        rel = path.relative_to(root)
        md = metadata.get(rel.as_posix())
        if (
            rel.parts[0] not in MUSIC21_FOLDERS
            or path.suffix.lower() not in SCORE_SUFFIXES
            or md is None
            or float(getattr(md, "scoreQuarterLength", None) or 0) > MUSIC21_MAX_QUARTERS
            or rel.stem.startswith("test")  # music21's own test copies of other files
        ):
            continue
        stem = rel.with_suffix("")
        kept = by_folder[rel.parts[0]].get(stem)  # the same score in two formats: keep the MusicXML
        if kept is None or (
            path.suffix.lower() in MUSICXML_SUFFIXES and kept.suffix.lower() not in MUSICXML_SUFFIXES
        ):
            by_folder[rel.parts[0]][stem] = path
    chosen = []
    for folder in sorted(by_folder):
        files = sorted(by_folder[folder].values())
        step = len(files) / min(len(files), MUSIC21_PER_FOLDER)
        chosen += [files[int(i * step)] for i in range(min(len(files), MUSIC21_PER_FOLDER))]
    # Dropped after the pick, so that the list of unreadable files does not shift which others are picked.
    return [
        path for path in chosen if path.relative_to(root).with_suffix("").as_posix() not in MUSIC21_UNREADABLE
    ]


@functools.cache
def _music21_metadata() -> dict:
    """music21's shipped metadata cache (no parsing): the first tune's metadata per corpus-relative path."""
    from music21.metadata.bundles import MetadataBundle

    bundle = MetadataBundle("core").read()  # unvalidated: validating stats every file (2 s)
    first: dict[str, tuple] = {}
    # The bundle has no public lookup by path, and iterating it by index is quadratic (20 s).
    for entry in bundle._metadataEntries.values():
        if entry.metadata is None:
            continue
        number = int(entry.number) if str(entry.number or "").isdigit() else 0
        key = str(entry.sourcePath)
        if key not in first or number < first[key][0]:
            first[key] = (number, entry.metadata)
    return {key: md for key, (_, md) in first.items()}


def _clean_composer(text) -> str:
    """A name from music21's metadata, or "" for the anonymous, the garbled and manuscript sigla."""
    name = str(text or "").split("\n")[0].strip().rstrip(".")
    if (
        not name
        or name.lower().startswith(("anonymous", "music21"))
        or any(c in name for c in '0123456789"?')
    ):
        return ""
    return name.title() if name.isupper() else name


def _music21_title(md: dict, rel: Path) -> str:
    for name, min_words in (("title", 1), ("movementName", 2)):  # a one-word movementName is a part name
        text = str(md.get(name) or "").split("\n")[0].strip().rstrip(".").replace(" -- ", " – ")
        letters = sum(c.isalpha() or c.isspace() for c in text)
        if (
            len(text) >= 3
            and len(text.split()) >= min_words
            and letters >= 0.6 * len(text)  # rejects OCR debris
            and not text.lower().endswith(SCORE_SUFFIXES)
        ):
            return text.title() if text.isupper() else text
    return _file_title(rel)


def _file_title(rel: Path) -> str:
    """A corpus file name as words: 'opus18no1/movement1.mxl' → 'Op. 18 No. 1, movement 1'."""
    text = "/".join(rel.with_suffix("").parts[1:])
    text = re.sub(r"([a-z])\.?(\d)", r"\1 \2", text)
    text = re.sub(r"(\d)([a-z])", r"\1 \2", text).replace("_", " ").replace("/", ", ")
    text = re.sub(r"\bopus\b", "Op.", _words(text))
    text = re.sub(r"\bk (?=\d)", "K. ", text)
    return text[0].upper() + text[1:]


def _music21_musical_meta(md: dict) -> dict:
    meta = {}
    metre = str(md.get("timeSignatureFirst") or "")
    if re.fullmatch(r"([2-9]|1[0-2])/(2|4|8)", metre):  # ABC books also hold stray "1/16" defaults
        meta["metre"] = metre
    if isinstance(md.get("keySignatureFirst"), int):
        meta["key_signature"] = md["keySignatureFirst"]
    # '<music21.tempo.MetronomeMark allegro moderato Quarter=128>'; "(playback only)" marks are defaults
    tempo = str(md.get("tempoFirst") or "")
    if match := re.search(
        r"MetronomeMark ([a-z ]*?) ?(?:Dotted )?(?:Quarter|Half|Eighth|Whole)=([\d.]+)>$", tempo
    ):
        marking, bpm = match.groups()
        if marking:
            meta["tempo_marking"] = marking
        meta["tempo_bpm"] = round(float(bpm), 1)
    return meta


_LOADERS = {"pop909": _pop909, "asap": _asap, "nottingham": _nottingham}
