"""Matching with the shipped matcher on real files: a rendered, noisy excerpt in an unseen soundfont
finds its piece and where it starts; a MIDI file finds its recording; the index's windows survive
saving and removal; bad queries get one sentence."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pianoapp import constants
from pianoapp.data.augment import add_noise
from pianoapp.errors import BadInputError, SilentAudioError
from pianoapp.index import Index
from pianoapp.io.midi import read_midi
from pianoapp.io.render import render
from pianoapp.services import library, match

MOZART = "mozart_k545_opening"


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, assets_dir) -> Path:
    folder = tmp_path_factory.mktemp("match") / "index"
    library.build_index(sorted(assets_dir.glob("*.mid")), folder)
    return folder


def excerpt_wav(path: Path, midi: Path, start_s: float, seconds: float, *, seed: int = 0) -> Path:
    """Seconds of a MIDI file from start_s, rendered with TimGM6mb (never trained on) plus 20 dB noise."""
    audio = render(read_midi(midi), soundfont="TimGM6mb")
    sr = constants.SAMPLE_RATE
    clip = audio[round(start_s * sr): round((start_s + seconds) * sr)]
    sf.write(path, add_noise(clip, np.random.default_rng(seed), snr_db=20), sr)
    return path


def test_noisy_excerpt_in_an_unseen_soundfont_is_found_where_it_starts(index_dir, assets_dir, tmp_path):
    query = excerpt_wav(tmp_path / "clip.wav", assets_dir / f"{MOZART}.mid", start_s=5.0, seconds=8.0)
    report = match.match(query, index_dir=index_dir, k=3)
    best = report["results"][0]
    assert Path(best["path"]).stem == MOZART
    assert abs(best["start_s"] - 5.0) < 1.0
    assert best["start_s"] < best["end_s"] <= best["duration_s"]
    assert best["score"] > report["results"][1]["score"]
    assert report["query"]["duration_s"] == pytest.approx(8.0, abs=0.01)
    assert best["match"] and not report["no_match"] and report["margin"] >= report["threshold"]
    assert not any(hit["match"] for hit in report["results"][1:])


def test_a_piece_indexed_twice_is_one_match_measured_against_other_pieces(assets_dir, tmp_path):
    folder = tmp_path / "both"
    library.build_index([assets_dir / f"{MOZART}.mid", assets_dir / f"{MOZART}.flac",
                         assets_dir / "joplin_maple_leaf_rag_opening.mid"], folder)
    query = excerpt_wav(tmp_path / "clip.wav", assets_dir / f"{MOZART}.mid", start_s=3.0, seconds=8.0)
    report = match.match(query, index_dir=folder, k=1)
    hits = match.rank(match.read_query(query), library.open_indexes(folder, False)[0], k=3)
    assert [Path(h["path"]).stem for h in hits[:2]] == [MOZART, MOZART] and match.same_piece(*hits[:2])
    assert report["margin"] == pytest.approx(hits[0]["score"] - hits[2]["score"], abs=1e-3)
    assert len(report["results"]) == 1 and report["results"][0]["match"]


def test_a_midi_file_finds_its_recording(assets_dir, tmp_path):
    folder = tmp_path / "recordings"
    library.build_index([assets_dir / f"{MOZART}.flac", assets_dir / "pedal_arpeggios.mid"], folder)
    hits = match.match(assets_dir / f"{MOZART}.mid", index_dir=folder, k=2)["results"]
    assert Path(hits[0]["path"]).name == f"{MOZART}.flac"
    assert hits[0]["start_s"] < 1.0


def test_windows_survive_saving_and_removal(index_dir, assets_dir, tmp_path):
    index = Index.open(index_dir)
    durations = {Path(it["path"]).stem: it["duration_s"] for it in index.items}
    assert len({int(o) for o in index.windows.owner}) == len(index)
    for row, item in enumerate(index.items):  # 10 chroma frames a second, for each item's whole length
        frames = index.windows.chroma_of(row).shape[1]
        assert abs(frames / 10 - item["duration_s"]) < 1.0
    copy = tmp_path / "copy"
    library.build_index(sorted(assets_dir.glob("*.mid")), copy)
    library.remove_from_index([str(assets_dir / "bach_chorale_bwv66.6.mid")], copy)
    reopened = Index.open(copy)
    assert "bach_chorale_bwv66.6" not in {Path(it["path"]).stem for it in reopened.items}
    for row, item in enumerate(reopened.items):  # owners renumbered: each item keeps its own frames
        frames = reopened.windows.chroma_of(row).shape[1]
        assert abs(frames / 10 - durations[Path(item["path"]).stem]) < 1.0
    hits = match.match(assets_dir / f"{MOZART}.flac", index_dir=copy, k=1)["results"]
    assert Path(hits[0]["path"]).stem == MOZART


def test_separation_auc_counts_right_answers_above_wrong_ones():
    from pianoapp.evaluate.matching import separation_auc

    # Right: 0.9 and 0.3; wrong: the positive at 0.5 (wrong top hit) and the negatives 0.1, 0.3.
    auc = separation_auc([0.9, 0.5, 0.3], [True, False, True], [0.1, 0.3])
    assert auc == pytest.approx((3 + 1 + 0.5) / 6)


def test_align_finds_a_span_inside_a_piece():
    rng = np.random.default_rng(0)
    piece = rng.random((12, 300))
    piece /= np.linalg.norm(piece, axis=0)
    fit = match.align(piece[:, 120:180], piece)
    assert fit.start_s == pytest.approx(12.0) and fit.end_s == pytest.approx(18.0)
    assert fit.similarity == pytest.approx(1.0)


def test_align_is_librosas_subsequence_dtw_exactly():
    import librosa

    rng = np.random.default_rng(1)
    for trial in range(60):
        m = int(rng.integers(1, 60))
        q, p = rng.random((12, m)), rng.random((12, int(rng.integers(m, 300))))
        if trial % 2:  # coarse values and silent frames, as in the index: many ties
            q, p = np.round(q * 3) / 3, np.round(p * 3) / 3
            p[:, rng.random(p.shape[1]) < 0.2] = 0
        q, p = (x / np.maximum(np.linalg.norm(x, axis=0), 1e-9) for x in (q, p))
        acc, path = librosa.sequence.dtw(C=1.0 - q.T @ p, subseq=True, backtrack=True)
        fit = match.align(q, p)
        end = int(np.argmin(acc[-1]))
        assert fit.similarity == 1.0 - acc[-1, end] / m and fit.end_s == pytest.approx((end + 1) * match.CHROMA_HOP_S)
        assert np.array_equal(fit.path, path[::-1])


def test_bad_queries_get_one_sentence(index_dir, assets_dir, tmp_path):
    short = excerpt_wav(tmp_path / "short.wav", assets_dir / f"{MOZART}.mid", start_s=2.0, seconds=1.0)
    with pytest.raises(BadInputError, match="at least 4 s"):
        match.match(short, index_dir=index_dir)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(10 * constants.SAMPLE_RATE, np.float32), constants.SAMPLE_RATE)
    with pytest.raises(SilentAudioError):
        match.match(silent, index_dir=index_dir)
    with pytest.raises(BadInputError, match="-k"):
        match.match(assets_dir / f"{MOZART}.flac", index_dir=index_dir, k=0)


def test_an_index_without_windows_asks_to_be_rebuilt(assets_dir, tmp_path):
    folder = tmp_path / "old"
    Index.create(folder, library.SPACE, 384).save()
    with pytest.raises(BadInputError, match="rebuild"):
        match.match(assets_dir / f"{MOZART}.flac", index_dir=folder)


def test_noise_is_refused_in_one_sentence_not_matched(tmp_path):
    noise = tmp_path / "noise.wav"
    rng = np.random.default_rng(0)
    sf.write(noise, 0.1 * rng.standard_normal(10 * constants.SAMPLE_RATE).astype(np.float32), constants.SAMPLE_RATE)
    # Against the demo index its flat chroma fits a dense string quartet, standing out by more than the
    # calibrated margin; no notes are heard in it, so it is refused before it is ranked.
    with pytest.raises(BadInputError, match="No piano notes were heard in noise.wav"):
        match.match(noise)


def test_console_match_prints_one_json_document(index_dir, assets_dir):
    pianoapp = Path(sys.executable).parent / "pianoapp"
    proc = subprocess.run([pianoapp, "match", str(assets_dir / f"{MOZART}.flac"), "--index", str(index_dir),
                           "-k", "2", "--json"], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert {"path", "title", "collection", "score", "start_s", "end_s"} <= set(doc["results"][0])
    assert Path(doc["results"][0]["path"]).stem == MOZART
