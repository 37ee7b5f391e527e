from __future__ import annotations

from pathlib import Path

import pytest

from sftdpo.data.plays import read_plays, strip_gutenberg
from sftdpo.errors import DataError

BODY = "ACT I\r\nSCENE 1.\r\nEnter HAMLET.\r\n"


def test_strip_modern_markers() -> None:
    text = (
        "The Project Gutenberg eBook of Hamlet\r\nlicense blah\r\n"
        "*** START OF THE PROJECT GUTENBERG EBOOK HAMLET ***\r\n\r\n"
        + BODY
        + "\r\n*** END OF THE PROJECT GUTENBERG EBOOK HAMLET ***\r\nmore license\r\n"
    )
    assert strip_gutenberg(text) == "ACT I\nSCENE 1.\nEnter HAMLET.\n"


@pytest.mark.parametrize(
    "footer",
    [
        "End of the Project Gutenberg EBook of Hamlet, by William Shakespeare",
        "End of Project Gutenberg's Hamlet, by William Shakespeare",
    ],
)
def test_strip_old_footers(footer: str) -> None:
    text = "*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\n" + BODY + "\n" + footer + "\nlegal\n"
    out = strip_gutenberg(text)
    assert out == "ACT I\nSCENE 1.\nEnter HAMLET.\n"
    assert "Gutenberg" not in out


def test_no_markers_unchanged() -> None:
    assert strip_gutenberg("Just a play.\nProject Gutenberg is mentioned here.\n") == (
        "Just a play.\nProject Gutenberg is mentioned here.\n"
    )


def test_read_plays(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_plays(tmp_path / "none")
    (tmp_path / "notes.md").write_text("x")
    with pytest.raises(DataError, match="no .txt files"):
        read_plays(tmp_path)
    (tmp_path / "b_play.txt").write_text("B text\r\n")
    (tmp_path / "a_play.txt").write_text("*** START OF THE PROJECT GUTENBERG EBOOK A ***\nA text\n")
    assert read_plays(tmp_path) == [("a_play", "A text\n"), ("b_play", "B text\n")]


def test_real_plays(data_root: Path) -> None:
    plays = read_plays(data_root / "shakespeare-plays")
    assert len(plays) == 40
    names = [n for n, _ in plays]
    assert names == sorted(names) and "hamlet_gut" in names
    assert not any("sonnet" in n or "pilgrim" in n for n in names)
    assert 4_500_000 < sum(len(t) for _, t in plays) < 5_500_000
