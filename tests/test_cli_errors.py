"""The ``musicgen-jax`` command's refusals and failures: one ``error:`` line on stderr, exit 1, no
traceback, and no file written (or an existing one left as it was)."""

from __future__ import annotations

import os

import pytest

from musicgen_jax.cli.main import main


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--duration", "0.5"], "duration must be between 1 and 120"),
        (["--duration", "121"], "duration must be between 1 and 120"),
        (["--temperature", "0"], "temperature must be greater than 0"),
        (["--temperature", "-1"], "temperature must be greater than 0"),
        (["--top-p", "1.5"], "top_p must be in (0, 1]"),
        (["--top-p", "-0.2"], "top_p must be in (0, 1]"),
        (["--genre", "polka-step"], "unknown genre 'polka-step'"),
        (["--mood", "hapy"], "did you mean 'happy'"),
        (["--tempo", "900"], "tempo must be between"),
        (["--num-beams", "12"], "num_beams must be between 1 and 8"),
        (["--output", "/nonexistent-dir/x.wav"], "does not exist"),
        (["--output", "song.ogg-vorbis"], "unknown audio format"),
        (["--output", "song.wav", "--format", "mp3"], "has suffix .wav but format 'mp3'"),
    ],
)
def test_bad_input_gets_a_message_not_a_traceback(
    tiny_jax_dir, tmp_path, monkeypatch, capsys, extra, message
):
    monkeypatch.chdir(tmp_path)  # the default and relative outputs would land here
    code = main(["generate", "jazz", "--model", str(tiny_jax_dir)] + extra)
    err = capsys.readouterr().err
    assert code == 1
    assert message in err and "Traceback" not in err
    assert err.strip().splitlines() == [next(line for line in err.splitlines() if message in line)]
    assert err.startswith("error: ")
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_empty_prompt_and_unwritable_output(tiny_jax_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "  ", "--model", str(tiny_jax_dir)]) == 1
    assert "the prompt is empty" in capsys.readouterr().err
    assert not (tmp_path / "output.wav").exists()
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        assert (
            main(["generate", "jazz", "--model", str(tiny_jax_dir), "--output", str(locked / "x.wav")]) == 1
        )
        assert "permission denied" in capsys.readouterr().err
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_a_failed_write_leaves_no_partial_file_and_keeps_the_old_one(
    tiny_jax_dir, tmp_path, monkeypatch, capsys
):
    """The disk filling up halfway through the encoder: exit 1 with the OS's reason, the previous
    file at that name untouched, no temporary file left behind."""
    import errno

    import soundfile

    target = tmp_path / "song.wav"
    target.write_bytes(b"the previous take")

    def write_half_then_fail(file, *args, **kwargs):
        file.write(b"RIFF\0\0")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(soundfile, "write", write_half_then_fail)
    args = ["generate", "jazz", "--model", str(tiny_jax_dir), "--duration", "1", "--output", str(target)]
    assert main(args + ["--cache-dir", ""]) == 1
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("error: ")]
    assert f"cannot write {target}: No space left on device" in line and "Traceback" not in err
    assert target.read_bytes() == b"the previous take"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["song.wav"]


def test_an_audio_prompt_that_is_not_audio_is_refused(tiny_jax_dir, tmp_path, capsys):
    (tmp_path / "notes.wav").write_text("not audio")
    args = ["generate", "jazz", "--model", str(tiny_jax_dir), "--output", str(tmp_path / "x.wav")]
    assert main(args + ["--audio-prompt", str(tmp_path / "notes.wav")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "notes.wav" in err and "Traceback" not in err
    assert main(args + ["--audio-prompt", str(tmp_path / "missing.wav")]) == 1
    assert f"no audio file at {tmp_path / 'missing.wav'}" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.wav"]
