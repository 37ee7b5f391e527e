from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sftdpo.data.sonnets import HeldOut, Sonnet, parse_sonnets, read_held_out, read_sonnets
from sftdpo.errors import DataError

HEADER = "Sonnets\nby Someone\nCreated on Jul 31, 2015, from FDT version 0.9.0.1\n\n\n"
TEXT = (
    HEADER
    + "1\n\nLine one a,  \nLine two b,\n\nLine three c,\n  Indented couplet.\n\n\n"
    + "  2  \n\nSecond sonnet first,\nSecond sonnet second.\n"
)


def test_parse_lf_crlf_cr_same() -> None:
    lf = parse_sonnets(TEXT)
    assert lf == parse_sonnets(TEXT.replace("\n", "\r\n")) == parse_sonnets(TEXT.replace("\n", "\r"))
    assert lf == [
        Sonnet(1, ("Line one a,", "Line two b,", "Line three c,", "  Indented couplet.")),
        Sonnet(2, ("Second sonnet first,", "Second sonnet second.")),
    ]
    assert lf[1].text == "Second sonnet first,\nSecond sonnet second."


def test_header_ignored_and_empty_block_skipped(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        out = parse_sonnets("Header 1609\n7\n\n\n8\nOnly line\n", source="x.txt")
    assert out == [Sonnet(8, ("Only line",))]
    assert "x.txt: sonnet 7" in caplog.text


def test_read_sonnets_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_sonnets(tmp_path / "missing.txt")
    (tmp_path / "e.txt").write_text("  \n")
    with pytest.raises(DataError, match="empty"):
        read_sonnets(tmp_path / "e.txt")
    (tmp_path / "n.txt").write_text("no numbers here\njust prose\n")
    with pytest.raises(DataError, match="no sonnets found in .*n.txt"):
        read_sonnets(tmp_path / "n.txt")
    (tmp_path / "b.txt").write_bytes(b"1\nCaf\xe9\n")
    with pytest.raises(DataError, match="not UTF-8.*line 2"):
        read_sonnets(tmp_path / "b.txt")


def test_real_training_sonnets(data_root: Path) -> None:
    sonnets = read_sonnets(data_root / "sonnets" / "sonnets.txt")
    assert [s.number for s in sonnets] == list(range(1, 132))
    lengths = {s.number: len(s.lines) for s in sonnets}
    assert lengths.pop(99) == 15 and lengths.pop(126) == 12
    assert set(lengths.values()) == {14}
    assert sonnets[0].lines[0] == "From fairest creatures we desire increase,"
    assert not any("\r" in line or line != line.rstrip() for s in sonnets for line in s.lines)


def test_real_held_out(data_root: Path) -> None:
    d = data_root / "sonnets"
    held = read_held_out(d / "sonnets_held_out_dev.txt", d / "TRUE_sonnets_held_out_dev.txt")
    assert [h.number for h in held] == list(range(132, 144))
    for h in held:
        assert len(h.prompt_lines) == 3 and len(h.true_lines) == 14
        assert len(h.continuation_lines) == 11
        assert h.reference.startswith(h.prompt)
    assert held[0].prompt_lines[0] == "Thine eyes I love, and they, as pitying me,"


def _write_pair(tmp_path: Path, prompts: str, true: str) -> tuple[Path, Path]:
    p, t = tmp_path / "p.txt", tmp_path / "TRUE_p.txt"
    p.write_text(prompts)
    t.write_text(true)
    return p, t


def test_held_out_fixture_ok_and_properties(tmp_path: Path) -> None:
    p, t = _write_pair(tmp_path, "5\na\n  b\n", "5\na\nb\nc\nd\n")
    (h,) = read_held_out(p, t)
    assert h == HeldOut(5, ("a", "  b"), ("a", "b", "c", "d"))
    assert (h.prompt, h.reference, h.continuation_lines) == ("a\n  b", "a\nb\nc\nd", ("c", "d"))


def test_held_out_mismatch_names_line(tmp_path: Path) -> None:
    p, t = _write_pair(tmp_path, "1\na\nb\n\n2\nx\nWRONG\n", "1\na\nb\nc\n\n2\nx\ny\nz\n")
    with pytest.raises(DataError) as e:
        read_held_out(p, t)
    msg = str(e.value)
    assert "sonnet #2 (number 2) line 2 does not match TRUE" in msg
    assert "'WRONG' vs 'y'" in msg and "p.txt" in msg


def test_held_out_count_and_number_mismatch(tmp_path: Path) -> None:
    p, t = _write_pair(tmp_path, "1\na\n", "1\na\nb\n\n2\nc\nd\n")
    with pytest.raises(DataError, match="has 1 sonnets but TRUE .* has 2"):
        read_held_out(p, t)
    p, t = _write_pair(tmp_path, "1\na\n", "3\na\nb\n")
    with pytest.raises(DataError, match="sonnet #1 is number 1 but TRUE .* is number 3"):
        read_held_out(p, t)
