"""Offline tokenisation with the tiny real-hop codec: segments hold the codec's codes of the right
audio, metadata and text travel along, bad files are counted not fatal, and a run killed halfway
resumes to exactly what an uninterrupted run writes."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import soundfile

from musicgen_jax.audio.io import load_audio
from musicgen_jax.data import manifest, synthetic, tokenize
from musicgen_jax.data.tokenize import TokenizeOptions, iter_records, tokenize_dataset
from musicgen_jax.data.tokenize import run as tokenize_run

SOURCE_RATE = 24000  # not the codec's 32 kHz: the tokeniser must resample
OPTIONS = TokenizeOptions(segment_seconds=1.0, min_segment_seconds=0.5, shard_size=3, batch_size=2)
SPANS = ((0.0, 1.0), (1.0, 0.6))  # (start, seconds) of the segments of a 1.6 s piece


@pytest.fixture(scope="module")
def codec(tiny_hf_dir):
    from musicgen_jax.codec import EncodecBridge

    return EncodecBridge.from_pretrained(tiny_hf_dir)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Three 1.6 s pieces (segments of 1 and 0.6 s), one more without metadata, a 0.3 s one (too
    short) and a broken file."""
    root = tmp_path_factory.mktemp("synth")
    synthetic.write_dataset(root, 3, duration=1.6, sample_rate=SOURCE_RATE, seed=2)
    short = synthetic.generate_example(7, seed=2, duration=0.3, sample_rate=SOURCE_RATE)
    soundfile.write(str(root / "audio" / "short.wav"), short.audio.T, SOURCE_RATE)
    untagged = synthetic.generate_example(8, seed=2, duration=1.6, sample_rate=SOURCE_RATE)
    soundfile.write(str(root / "audio" / "untagged.wav"), untagged.audio.T, SOURCE_RATE)
    (root / "audio" / "broken.wav").write_bytes(b"RIFF not really audio")
    return root


def by_key(directory) -> dict[tuple[str, int], object]:
    return {(r.path, r.segment_index): r for r in iter_records(directory)}


@pytest.fixture(scope="module")
def tokenised(codec, dataset, tmp_path_factory):
    output = tmp_path_factory.mktemp("tokens")
    sources = manifest.find_sources(audio_dir=dataset / "audio")
    summary = tokenize_dataset(sources, codec, output, OPTIONS, codec_source="tiny", progress=False)
    return sources, output, summary


def test_records_hold_the_codes_text_and_metadata_of_each_segment(codec, tokenised):
    sources, output, summary = tokenised
    assert (summary.sources, summary.tokenised, summary.failed, summary.too_short) == (6, 4, 1, 1)
    assert summary.without_metadata == 1 and summary.records == 8 and summary.frames == 4 * (50 + 30)
    assert summary.audio_seconds == pytest.approx(4 * 1.6, abs=1e-3)
    assert summary.failures[0]["path"].endswith("broken.wav")
    found = by_key(output)
    assert len(found) == 8
    untagged = next(r for r in found.values() if r.path.endswith("untagged.wav"))
    assert (untagged.metadata, untagged.text) == ({}, "")
    for source in [s for s in sources if s.audio_path.name.startswith("synth_")]:
        audio, _ = load_audio(source.audio_path, sample_rate=codec.sample_rate)  # [1, samples]
        sidecar = json.loads(manifest.sidecar_path(source.audio_path).read_text())
        for segment, (start, seconds) in enumerate(SPANS):
            record = found[(str(source.audio_path), segment)]
            piece = audio[:, round(start * 32000) : round((start + seconds) * 32000)]
            np.testing.assert_array_equal(record.codes, codec.encode(piece[None], 32000)[0])
            assert record.codes.dtype == np.int16 and record.num_frames == round(seconds * 50)
            assert record.offset_seconds == pytest.approx(start) and record.duration_seconds == pytest.approx(
                seconds
            )
            assert record.metadata == sidecar and record.text == sidecar["description"]
            assert (record.frame_rate, record.sample_rate) == (50.0, 32000)
    assert len({tuple(r.codes[0, :5]) for r in found.values()}) == 8  # real, varied codes
    index = [json.loads(line) for line in (output / tokenize.INDEX_NAME).read_text().splitlines()]
    # Shards close at the first file boundary at or past 3 records: 2 + 2, twice.
    assert [e["num_records"] for e in index if e["kind"] == "shard"] == [4, 4]
    assert {e["kind"] for e in index} == {"failed", "too_short", "shard"}
    assert json.loads((output / tokenize.SUMMARY_NAME).read_text())["records"] == 8

    again = tokenize_dataset(sources, codec, output, OPTIONS, progress=False)  # everything is done
    assert (again.already_done, again.records, again.shards_written) == (6, 0, 0)
    with pytest.raises(ValueError, match="segment_seconds"):
        tokenize_dataset(sources, codec, output, TokenizeOptions(segment_seconds=2.0), progress=False)


def test_a_run_killed_halfway_resumes_to_the_same_records(codec, tokenised, tmp_path, monkeypatch):
    sources, reference, _ = tokenised  # sorted: broken.wav, short.wav, the three pieces, untagged.wav
    real_encode = tokenize.encode_source

    def run_dying_at_call(number: int, options: TokenizeOptions) -> None:
        calls = []

        def encode(*args, **kwargs):
            calls.append(1)
            if len(calls) == number:
                raise KeyboardInterrupt
            return real_encode(*args, **kwargs)

        monkeypatch.setattr(tokenize_run, "encode_source", encode)
        with pytest.raises(KeyboardInterrupt):
            tokenize_dataset(sources, codec, resumed, options, progress=False)
        monkeypatch.setattr(tokenize_run, "encode_source", real_encode)

    resumed = tmp_path / "resumed"
    # Dies on the second piece while the first one's records sit in an open shard: the shard is
    # discarded, only the failed and too-short files are remembered.
    run_dying_at_call(4, OPTIONS)
    assert list(iter_records(resumed)) == [] and not list(resumed.glob("*.tmp"))
    # Shard size may change between runs: now every file commits, and it dies on the second piece.
    run_dying_at_call(2, dataclasses.replace(OPTIONS, shard_size=1))
    assert len(list(iter_records(resumed))) == 2
    summary = tokenize_dataset(sources, codec, resumed, OPTIONS, progress=False)
    assert (summary.already_done, summary.tokenised, summary.failed, summary.records) == (3, 3, 0, 6)
    expected, got = by_key(reference), by_key(resumed)
    assert expected.keys() == got.keys()
    for key, record in expected.items():
        np.testing.assert_array_equal(got[key].codes, record.codes)
    assert [p.name for p in sorted(resumed.glob("train-*"))] == [
        f"train-0000{i}.array_record" for i in range(3)
    ]


def test_cli_with_a_manifest_and_a_metadata_jsonl(tiny_hf_dir, dataset, tmp_path, capsys):
    table = tmp_path / "meta.jsonl"
    entries = manifest.read_manifest(dataset / "data.jsonl")
    table.write_text(
        "\n".join(
            json.dumps({"path": e.path, "description": f"track {i}", "genre": "jazz"})
            for i, e in enumerate(entries)
        )
    )
    code = tokenize.main(
        [
            "--manifest",
            str(dataset / "data.jsonl"),
            "--metadata",
            str(table),
            "--codec",
            str(tiny_hf_dir),
            "--output",
            str(tmp_path / "out"),
            "--segment-seconds",
            "2",
            "--split",
            "valid",
            "--no-progress",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "3 tokenised" in printed and "real time" in printed
    found = list(iter_records(tmp_path / "out", split="valid"))
    assert sorted(r.text for r in found) == ["track 0", "track 1", "track 2"]
    assert all(r.metadata == {"description": r.text, "genre": "jazz"} and r.num_frames == 80 for r in found)
    assert tokenize.main(["--audio-dir", str(tmp_path / "nothing"), "--codec", "x", "--output", "y"]) == 2
    missing_codec = [
        "--audio-dir",
        str(dataset / "audio"),
        "--codec",
        str(tmp_path / "no-codec"),
        "--output",
        "y",
    ]
    assert tokenize.main(missing_codec) == 2
    assert "cannot load the codec" in capsys.readouterr().err


def test_augmented_copies_are_tokenised_beside_the_originals(tmp_path, tiny_hf_dir):
    """--augment: each file gets N augmented copies (reproducible under the seed), with the caption
    and the metadata the transforms imply (tempo after a stretch, no key after a pitch shift)."""
    import yaml

    from musicgen_jax.data import synthetic
    from musicgen_jax.data import tokenize as tokenize_lib

    manifest = synthetic.write_dataset(tmp_path / "audio", 2, duration=2.0, seed=3)
    augment = tmp_path / "augment.yaml"
    augment.write_text(
        yaml.safe_dump(
            {
                "augment": {
                    "time_stretch": {"probability": 1.0, "min_rate": 1.25, "max_rate": 1.25},
                    "pitch_shift": {"probability": 1.0, "min_semitones": 2, "max_semitones": 2},
                    "polymix": {"probability": 1.0},
                }
            }
        )
    )
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        argv = [
            "--manifest",
            str(manifest),
            "--codec",
            str(tiny_hf_dir),
            "--output",
            str(out),
            "--segment-seconds",
            "1",
            "--augment",
            str(augment),
            "--augment-copies",
            "2",
            "--augment-seed",
            "7",
            "--no-progress",
        ]
        assert tokenize_lib.main(argv) == 0
        runs.append(list(tokenize_lib.iter_records(out)))
    first, second = runs
    originals = [r for r in first if "#augment" not in r.path]
    copies = [r for r in first if "#augment" in r.path]
    assert len(originals) == 4  # 2 files x 2 one-second segments
    # A 1.25x stretch leaves 1.6 s: one full segment per copy (the 0.6 s remainder is below
    # min_segment_seconds).
    assert len(copies) == 2 * 2 and all(r.duration_seconds == 1.0 for r in copies)
    assert all(np.array_equal(a.codes, b.codes) for a, b in zip(first, second))  # reproducible
    source = originals[0].metadata
    copy = next(r for r in copies if r.path.startswith(originals[0].path)).metadata
    assert copy["augmentations"] == ["polymix", "time_stretch", "pitch_shift"]
    assert copy["bpm"] == round(float(source["bpm"]) * 1.25, 1) and "key" not in copy
    assert " and " in copy["description"]  # polymix merged two captions
