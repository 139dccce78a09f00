"""Text for text search: seeded caption paraphrases per item, and a plain metadata line as a baseline.

Captions say what an item sounds like (genre, key and mood, tempo, texture, register, dynamics,
metre) from its metadata and the attributes computed from its notes. The templates and the
descriptive wordings come in two disjoint pools, "train" and "eval": a text encoder trained on the
first and evaluated on the second is measured on paraphrase, not on recalling a template.
"""

import random
import re
import string

from pianoapp.data.attributes import TEMPO_WORDS, word
from pianoapp.data.corpora import Item

POOLS = ("train", "eval")

# Every template needs the slots it names; {genre}, {key}, {mood}, {tempo}, {texture}, {density} and
# {register} are always there, {by}, {title}, {metre}, {bpm}, {dynamics}, {rendition} only when known.
TEMPLATES = {
    "train": (
        "a {mood}, {tempo} {genre} in {key}.",
        "a {genre} in {key} with {texture} in the {register}.",
        "{mood} and {tempo}: a {genre} {by}.",
        "{title}, a {genre} {by}, in {key}.",
        "a {tempo} piece in {key}, {mood} in character, built from {texture}.",
        "piano music in {key}: {density} {texture}, mostly in the {register}.",
        "a {dynamics}, {mood} {genre} {metre}.",
        "this {genre} moves at {bpm} and sounds {mood}.",
        "{rendition} of a {mood} {genre} in {key}.",
        "{key}, {tempo}, {mood}: {texture} in the {register}.",
        "a {genre} {metre}, {tempo} and {mood}.",
        "{density} {texture} in {key}, {dynamics} throughout.",
    ),
    "eval": (
        "music that feels {mood}: a {tempo} {genre} in {key}.",
        "imagine a {tempo} {genre}, its {texture} sitting in the {register}.",
        "anyone after {mood} music {by} could pick this {genre}.",
        "here is {title}, {by}; expect {texture} in {key}.",
        "the {genre} here is {mood}, {tempo}, and written in {key}.",
        "listen for {density} {texture} around the {register} in this {key} piece.",
        "{dynamics} and {mood}, this {genre} unfolds {metre}.",
        "with {bpm}, {mood} in tone and set in {key}, this is a {genre}.",
        "what you hear is {rendition}: a {genre}, {mood} and {tempo}.",
        "mostly in the {register}, this {key} {genre} has a {mood} character.",
        "{mood} {genre} {metre}, with {density} {texture}.",
        "in {key} and {tempo}, this {genre} stays {dynamics} from start to end.",
    ),
}

# concept: (train wordings, eval wordings); a wording may name fields filled from the item.
WORDINGS = {
    "tempo:slow": (("slow", "unhurried", "leisurely"), ("languid", "slow-moving", "lingering")),
    "tempo:moderate": (
        ("moderate-tempo", "mid-tempo", "steady"),
        ("medium-paced", "walking-pace", "even-paced"),
    ),
    "tempo:fast": (("fast", "quick", "brisk"), ("rapid", "speedy", "up-tempo")),
    "mood:major-fast": (("cheerful", "bright", "lively"), ("joyful", "sunny", "exuberant")),
    "mood:major-moderate": (("warm", "pleasant", "easygoing"), ("genial", "contented", "good-humoured")),
    "mood:major-slow": (("calm", "gentle", "tender"), ("serene", "peaceful", "soothing")),
    "mood:minor-fast": (("agitated", "dramatic", "restless"), ("stormy", "urgent", "turbulent")),
    "mood:minor-moderate": (("wistful", "pensive", "dark"), ("brooding", "bittersweet", "uneasy")),
    "mood:minor-slow": (("sad", "melancholy", "mournful"), ("sorrowful", "plaintive", "sombre")),
    "density:sparse": (("sparse", "spacious"), ("airy", "uncluttered")),
    "density:moderate": (("moderately busy", "moderately dense"), ("medium-density", "evenly spread")),
    "density:dense": (("dense", "busy"), ("crowded", "note-heavy")),
    "texture:monophonic": (
        ("single-line melody", "unaccompanied melody"),
        ("lone melodic voice", "solo line without harmony"),
    ),
    "texture:homophonic": (
        ("block chords", "chordal writing"),
        ("hymn-like chords", "chords struck together"),
    ),
    "texture:polyphonic": (
        ("layered lines", "multi-voiced writing"),
        ("interweaving parts", "overlapping voices"),
    ),
    "register:low": (("low register", "bass range"), ("lower keys", "deep end of the keyboard")),
    "register:middle": (("middle register", "central range"), ("mid-range", "centre of the keyboard")),
    "register:high": (("high register", "upper range"), ("treble keys", "top of the keyboard")),
    "dynamics:soft": (("soft", "quiet"), ("hushed", "delicate")),
    "dynamics:medium": (("moderately loud", "medium-volume"), ("mezzo-forte", "even-volume")),
    "dynamics:loud": (("loud", "forceful"), ("powerful", "thunderous")),
    "by": (
        ("by {composer}", "composed by {composer}"),
        ("written by {composer}", "from the pen of {composer}"),
    ),
    "bpm": (
        ("about {bpm} beats per minute", "{bpm} BPM"),
        ("a pulse near {bpm} a minute", "roughly {bpm} beats a minute"),
    ),
    "metre": (("in {metre} time", "in {metre}"), ("in {feel} metre", "with a {metre} time signature")),
    "rendition:performance": (
        ("an expressive human performance", "a pianist's performance with natural timing"),
        ("a live-sounding rendition with rubato", "a recording by a pianist, phrasing and all"),
    ),
    "rendition:score": (
        ("a straight rendering of the score", "the score played exactly as written"),
        ("a literal, metronomic playback", "a quantised score rendition"),
    ),
    "rendition:arrangement": (
        ("a solo piano arrangement", "a piano arrangement of a song"),
        ("a piano cover", "a piano version of the song"),
    ),
    "rendition:lead sheet": (
        ("a lead-sheet arrangement", "a melody-and-chords version"),
        ("a bare tune-plus-chords setting", "a simple melody with chord backing"),
    ),
    # Other names for a style, so the eval pool also paraphrases genres.
    "style:Chinese pop": (("Chinese pop",), ("Mandopop", "C-pop")),
    "style:traditional": (("traditional", "folk"), ("old-time", "country-dance")),
}

COLLECTION_NAMES = {
    "pop909": "POP909 Chinese pop piano",
    "asap": "ASAP classical piano",
    "nottingham": "Nottingham folk tunes",
    "music21": "music21 corpus",
}
ENERGIES = ("slow", "moderate", "fast")  # the tempo words, in order
METRE_FEELS = {
    2: "duple",
    3: "triple",
    4: "quadruple",
    6: "compound duple",
    9: "compound triple",
    12: "compound quadruple",
}


def captions(item: Item, attributes: dict, *, n: int = 5, seed: int = 0, split: str = "train") -> list[str]:
    """`n` captions for an item: the same (item, seed, split) always gives the same captions.

    split "train" draws on the training pool of templates and wordings, "eval" on the held-out one.
    """
    if split not in POOLS:
        raise ValueError(f"split must be one of {POOLS}, not {split!r}")
    pool = POOLS.index(split)
    rng = random.Random(f"{seed}:{split}:{item.item_id}")
    slots = caption_slots(item, attributes)
    usable = [t for t in TEMPLATES[split] if template_fields(t) <= slots.keys()]
    order = rng.sample(usable, len(usable))
    return [_fill(order[i % len(order)], slots, pool, rng) for i in range(n)]


def describe(item: Item, attributes: dict) -> str:
    """One plain line of metadata (title, composer, collection, key, tempo): the search baseline's text."""
    bpm = item.meta.get("tempo_bpm") or attributes.get("tempo_bpm")
    parts = [
        item.title,
        item.composer,
        COLLECTION_NAMES.get(item.collection, item.collection),  # a user's folder: its own name
        item.meta.get("key") or attributes.get("key"),
        f"{bpm:.0f} BPM" if bpm else "",
    ]
    return "; ".join(part for part in parts if part)


def caption_slots(item: Item, attributes: dict) -> dict[str, str | tuple[str, dict]]:
    """What can be said about an item: slot → fixed text, or (wording concept, fields to fill it)."""
    key = item.meta.get("key") or attributes["key"]
    mode = "minor" if key.endswith("minor") else "major"
    bpm = item.meta.get("tempo_bpm") or attributes["tempo_bpm"]
    tempo = word(bpm, TEMPO_WORDS) if bpm else attributes["tempo"]
    # Mood follows mode and energy: the tempo, nudged one step by loud or soft playing.
    energy = ENERGIES.index(tempo) + {"loud": 1, "soft": -1}.get(attributes["dynamics"], 0)
    energy = ENERGIES[min(max(energy, 0), len(ENERGIES) - 1)]
    slots: dict[str, str | tuple[str, dict]] = {
        "genre": _genre(item, tempo),
        "key": key,
        "mood": (f"mood:{mode}-{energy}", {}),
        "tempo": (f"tempo:{tempo}", {}),
        "texture": (f"texture:{attributes['texture']}", {}),
        "density": (f"density:{attributes['density_word']}", {}),
        "register": (f"register:{attributes['register']}", {}),
    }
    if item.composer:
        slots["by"] = ("by", {"composer": item.composer})
    if item.collection != "nottingham":  # Nottingham titles are only a tune type and a file number
        slots["title"] = item.title
    if bpm:
        slots["bpm"] = ("bpm", {"bpm": round(bpm)})
    if attributes["dynamics"] != "unmarked":
        slots["dynamics"] = (f"dynamics:{attributes['dynamics']}", {})
    if metre := item.meta.get("metre"):
        feel = METRE_FEELS.get(int(metre.split("/")[0]), "irregular")
        slots["metre"] = ("metre", {"metre": metre, "feel": feel})
    if f"rendition:{item.meta.get('kind')}" in WORDINGS:
        slots["rendition"] = (f"rendition:{item.meta['kind']}", {})
    return slots


def template_fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def _genre(item: Item, tempo: str) -> str | tuple[str, dict]:
    """'Baroque chorale', 'Irish jig', 'Chinese pop ballad'; a style with other names becomes a wording."""
    style, form = item.meta.get("style", ""), item.meta.get("form", "")
    if item.collection == "pop909" and tempo == "slow":
        form = "ballad"
    form = form or ("piano piece" if not style else "piece")
    if f"style:{style}" in WORDINGS:
        return (f"style:{style}", {"form": form})
    return form if style.lower() in form.lower() else f"{style} {form}".strip()  # not "folk folk song"


def _fill(template: str, slots: dict, pool: int, rng: random.Random) -> str:
    values = {}
    for name in sorted(template_fields(template)):  # sorted: the draw order must not depend on the set
        value = slots[name]
        if isinstance(value, tuple):
            concept, fields = value
            text = rng.choice(WORDINGS[concept][pool]).format(**fields)
            value = f"{text} {fields['form']}" if concept.startswith("style:") else text
        values[name] = value
    text = template.format(**values)
    text = re.sub(r"\b([Aa]) (?=[aeiouAEIOU])", r"\1n ", text)  # a → an before a vowel
    text = re.sub(r"\s+", " ", text).strip()
    return text[0].upper() + text[1:]
