"""`pianoapp`: the command-line front door. Mirrors the services; heavy imports happen after parsing.

Contract (../shared/DESIGN.md): `--json` prints one JSON document on stdout and nothing else;
logs and errors go to stderr; exit 2 for bad input, 1 for other failures.
"""

import argparse
import json
import os
import shlex
import sys

from pianoapp.errors import BadInputError, PianoappError

CAPABILITY_OF = {"search": "search", "match": "match", "continue": "continue", "arrange": "arrange",
                 "explore": "explore", "index": "search"}
RECIPES = ("matcher", "bind", "lm", "arranger")
EVALS = ("matcher", "search", "lm", "arranger")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pianoapp", description="Piano music across audio, MIDI and text.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    index = sub.add_parser("index", help="build or extend a search/match index").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    build = index.add_parser("build", help="index MIDI/MusicXML/audio files or folders")
    build.add_argument("paths", nargs="*", metavar="PATH")
    build.add_argument("--out", required=True, metavar="DIR")
    build.add_argument("--demo", action="store_true", help="build the built-in demo index (music21 corpus)")
    add = index.add_parser("add", help="add files to an existing index (never loses items)")
    add.add_argument("paths", nargs="+", metavar="PATH")
    add.add_argument("--index", required=True, metavar="DIR")
    remove = index.add_parser("remove", help="remove items from an index by path or id")
    remove.add_argument("keys", nargs="+", metavar="PATH_OR_ID")
    remove.add_argument("--index", required=True, metavar="DIR")

    search = sub.add_parser("search", help="find pieces by a text description")
    search.add_argument("text", metavar="TEXT")
    _index_opts(search)
    search.add_argument("--collection", help="only items of this collection")
    search.add_argument("--composer", help="only items by this composer")
    search.add_argument("--key", help="only items in this key ('D minor') or mode ('minor')")
    search.add_argument("--min-seconds", type=float, metavar="S", help="only items at least this long")
    search.add_argument("--max-seconds", type=float, metavar="S", help="only items at most this long")

    match = sub.add_parser("match", help="find the MIDI for a recording or the recordings for a MIDI")
    match.add_argument("file", metavar="FILE")
    _index_opts(match)

    cont = sub.add_parser("continue", help="continue a MIDI prompt or a recording")
    cont.add_argument("prompt", metavar="PROMPT")
    cont.add_argument("--seconds", type=float, default=15.0)
    cont.add_argument("--seed", type=int, default=0)
    cont.add_argument("--out", required=True, metavar="OUT.mid")
    cont.add_argument("--temperature", type=float, default=0.98)
    cont.add_argument("--top-p", type=float, default=1.0)
    cont.add_argument("--min-p", type=float, default=0.035)
    cont.add_argument("--model", metavar="DIR", help="LM folder (default models/lm-small)")

    arr = sub.add_parser("arrange", help="arrange a lead sheet in the style of a reference recording")
    arr.add_argument("leadsheet", metavar="LEADSHEET")
    arr.add_argument("--reference", metavar="AUDIO",
                     help="recording (or MIDI/score, rendered) whose style to follow; without it, the default style")
    arr.add_argument("--seed", type=int, default=0)
    arr.add_argument("--out", required=True, metavar="OUT.mid")
    arr.add_argument("--bars", type=int, metavar="N", help="arrange the first N bars (default: all, at most 32)")
    arr.add_argument("--chords", metavar="TEXT", help="chords per bar, e.g. 'C G Am F | F G C C' (replaces the file's)")
    arr.add_argument("--model", metavar="DIR", help="arranger folder (default models/arranger)")

    exp = sub.add_parser("explore", help="UMAP of an index or CKA between encoder layers, as HTML")
    exp.add_argument("view", choices=("umap", "cka"))
    exp.add_argument("--index", metavar="DIR", help="umap: index folder (default: the built-in demo index)")
    exp.add_argument("--out", metavar="FILE.html", help="standalone interactive HTML to write")
    exp.add_argument("--seed", type=int, default=0)
    exp.add_argument("--json", action="store_true", help="print the numbers as one JSON document on stdout")
    exp.add_argument("--colour", default="source",
                     help="umap: source (music21 corpus folder, else collection), collection, composer, key, "
                          "tempo or duration")
    exp.add_argument("--method", default="umap", help="umap: umap or tsne")
    exp.add_argument("--file", action="append", default=[], metavar="FILE",
                     help="umap: place this recording or MIDI file on the map (repeatable)")
    exp.add_argument("--query", action="append", default=[], metavar="TEXT",
                     help="umap: place this description on the map (repeatable)")
    exp.add_argument("--model", metavar="DIR", help="cka: matcher folder (default models/matcher)")
    exp.add_argument("--baseline", metavar="DIR", help="cka: matcher to compare with (default models/matcher-d0)")
    exp.add_argument("--segments", type=int, default=512, metavar="N", help="cka: paired test segments")

    train = sub.add_parser("train", help="train a model; re-running the same command resumes")
    train.add_argument("recipe", choices=RECIPES)
    train.add_argument("--config", default="tiny", help="named config: tiny, small or base")
    train.add_argument("--data", metavar="DIR", help="training data (default ../shared/data)")
    train.add_argument("--out", metavar="DIR", help="model folder to write (default models/<recipe>-<config>)")
    train.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                       help="override a training-config field, e.g. --set max_steps=200 (repeatable)")

    ev = sub.add_parser("eval", help="evaluate a model on the held-out split")
    ev.add_argument("target", choices=EVALS)
    ev.add_argument("--model", metavar="DIR", help="model folder (default: the shipped one)")
    ev.add_argument("--data", metavar="DIR")
    ev.add_argument("--split", default="test", choices=("val", "test"))
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--prompts", type=int, default=20, metavar="N",
                    help="lm: held-out prompts to continue and compare (0 skips; the model card uses 100)")
    ev.add_argument("--json", action="store_true")

    ren = sub.add_parser("render", help="render a MIDI/MusicXML file to audio with FluidSynth")
    ren.add_argument("file", metavar="FILE")
    ren.add_argument("--out", required=True, metavar="OUT.wav")
    ren.add_argument("--soundfont", help="installed soundfont name or .sf2/.sf3 path")

    tr = sub.add_parser("transcribe", help="transcribe a piano recording to MIDI (basic-pitch)")
    tr.add_argument("file", metavar="AUDIO")
    tr.add_argument("--out", required=True, metavar="OUT.mid")
    return p


def _index_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", metavar="DIR", help="index folder (default: the built-in demo index)")
    p.add_argument("-k", type=int, default=10, help="number of results")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def _parse_overrides(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        field, sep, value = pair.partition("=")
        if not sep or not field:
            raise BadInputError(f"--set expects FIELD=VALUE, got '{pair}'.")
        out[field.strip()] = value.strip()
    return out


def dispatch(args: argparse.Namespace, argv: list[str]) -> int:
    from pianoapp.services import availability

    if args.command == "continue":
        from pianoapp.services.continue_ import continue_file

        out = continue_file(args.prompt, args.out, seconds=args.seconds, seed=args.seed,
                            temperature=args.temperature, top_p=args.top_p, min_p=args.min_p,
                            model_dir=args.model)
        print(f"wrote {out}", file=sys.stderr)
        return 0
    if args.command == "arrange":  # the service checks availability when no --model is given
        from pianoapp.services.arrange import arrange_file

        out, notices = arrange_file(args.leadsheet, args.out, reference=args.reference, bars=args.bars,
                                    seed=args.seed, chords_text=args.chords, model_dir=args.model)
        for notice in notices:
            print(notice, file=sys.stderr)
        print(f"wrote {out}", file=sys.stderr)
        return 0
    if args.command in CAPABILITY_OF:
        availability.require(CAPABILITY_OF[args.command])
    if args.command == "index":
        return _index(args)
    if args.command == "search":
        return _search(args)
    if args.command == "match":
        return _match(args)
    if args.command == "explore":
        return _explore(args)
    if args.command == "render":
        from pianoapp.services.convert import render_file

        print(f"wrote {render_file(args.file, args.out, soundfont=args.soundfont)}", file=sys.stderr)
        return 0
    if args.command == "transcribe":
        from pianoapp.services.convert import transcribe_file

        print(f"wrote {transcribe_file(args.file, args.out)}", file=sys.stderr)
        return 0
    if args.command == "train":
        from pianoapp.train import run

        model_dir = run(args.recipe, args.config, data_dir=args.data, out_dir=args.out,
                        overrides=_parse_overrides(args.set), command="pianoapp " + shlex.join(argv))
        print(f"wrote {model_dir}", file=sys.stderr)
        return 0
    if args.command == "eval":
        from pianoapp.services.evaluation import evaluate

        report = evaluate(args.target, model_dir=args.model, data_dir=args.data, split=args.split,
                          seed=args.seed, prompts=args.prompts)
        print(json.dumps(report, indent=None if args.json else 2))
        return 0
    raise PianoappError(f"`pianoapp {args.command}` is not available yet.")


def _index(args: argparse.Namespace) -> int:
    from pianoapp.services import library

    if args.action == "remove":
        report = library.remove_from_index(args.keys, args.index)
    else:
        progress = _progress_bar("indexing")
        if args.action == "add":
            report = library.add_to_index(args.paths, args.index, progress=progress)
        elif args.demo:
            if args.paths:
                raise BadInputError("--demo builds the demo collection's index; give it no paths.")
            report = library.build_demo_index(args.out, progress=progress)
        else:
            if not args.paths:
                raise BadInputError("Name the files or folders to index (or --demo for the demo collection).")
            report = library.build_index(args.paths, args.out, progress=progress)
    for path, why in report.skipped:
        print(f"skipped {path}: {why}", file=sys.stderr)
    print(report.summary(), file=sys.stderr)
    return 0


def _progress_bar(desc: str):
    """A (done, total) callback drawing a tqdm bar on stderr."""
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=desc, unit="file", file=sys.stderr, leave=False)
        bar.update(done - bar.n)
        if done == total:
            bar.close()

    return update


def _search(args: argparse.Namespace) -> int:
    from pianoapp.services.library import ENGINE
    from pianoapp.services.search import Filters, search

    filters = Filters(args.collection, args.composer, args.key, args.min_seconds, args.max_seconds)
    hits = search(args.text, index_dir=args.index, k=args.k,
                  filters=filters if filters != Filters() else None)
    if args.json:
        print(json.dumps({"engine": ENGINE, "results": hits}, ensure_ascii=False))
        return 0
    print(f"engine: {ENGINE}", file=sys.stderr)
    for rank, hit in enumerate(hits, 1):
        by = f" · {hit['composer']}" if hit["composer"] else ""
        print(f"{rank:>3}. {hit['score']:.3f}  {hit['title']}{by} ({hit['collection']})  {hit['path']}")
    if not hits:
        print("no results", file=sys.stderr)
    return 0


def _match(args: argparse.Namespace) -> int:
    from pianoapp.services.match import match
    from pianoapp.services.preview import clock

    report = match(args.file, index_dir=args.index, k=args.k,
                   progress=lambda stage: print(f"{stage}…", file=sys.stderr))
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
        return 0
    if report["no_match"]:
        print(f"no match: no indexed piece stands out (the closest leads the next piece by {report['margin']:.3f}; "
              f"a match needs {report['threshold']:.3f}); the closest:", file=sys.stderr)
    for rank, hit in enumerate(report["results"], 1):
        mark = "" if hit["match"] else "  (no match)"
        print(f"{rank:>3}. {hit['score']:.3f}  {clock(hit['start_s'])}–{clock(hit['end_s'])}  {hit['title']}"
              f" ({hit['collection']})  {hit['path']}{mark}")
    return 0


def _explore(args: argparse.Namespace) -> int:
    from pianoapp.services import explore

    if not args.out and not args.json:
        raise BadInputError("Say what to write: --out FILE.html for the interactive page, --json for the numbers.")
    if args.view == "umap":
        extras = [explore.file_point(f) for f in args.file] + [explore.text_point(t) for t in args.query]
        result = explore.umap_map(args.index, colour_by=args.colour, method=args.method, seed=args.seed,
                                  extras=extras)
        doc, figures, lines = result.to_json(), [result.figure], result.summary()
    else:
        doc = explore.cka(args.model, args.baseline, seed=args.seed, n_segments=args.segments,
                          progress=_progress_bar("CKA"))
        figures, lines = explore.cka_figures(doc), explore.cka_summary(doc)
    if args.out:
        title = "Map of the collection" if args.view == "umap" else "CKA between audio and MIDI encoder layers"
        for path in explore.write_html(figures, args.out, title=title, lines=lines):
            print(f"wrote {path}", file=sys.stderr)
    if args.json:
        print(json.dumps(doc, ensure_ascii=False))
    else:
        print("\n".join(lines), file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        return dispatch(args, argv)
    except PianoappError as err:
        print(f"pianoapp: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("pianoapp: interrupted.", file=sys.stderr)
        return 130
    except Exception as err:  # a bug: one line for the user, the traceback only on request
        if os.environ.get("PIANOAPP_DEBUG"):
            raise
        print(f"pianoapp: internal error ({type(err).__name__}: {err}); rerun with PIANOAPP_DEBUG=1 "
              "for details and report it.", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
