from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from sftdpo.data import fetch as fetch_mod
from sftdpo.data.fetch import fetch, gutenberg_sonnets_to_layout, qqp_rows_to_tsv
from sftdpo.data.quora import QuoraPair, read_pairs
from sftdpo.data.sonnets import parse_sonnets, read_held_out
from sftdpo.errors import DataError, UsageError

ROMAN = [(100, "C"), (90, "XC"), (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"),
         (4, "IV"), (1, "I")]


def roman(n: int) -> str:
    out = ""
    for v, s in ROMAN:
        while n >= v:
            out, n = out + s, n - v
    return out


def fake_gutenberg(numbering: str = "arabic") -> str:
    parts = [
        "The Project Gutenberg eBook of Shakespeare's Sonnets\r\n\r\n",
        "*** START OF THE PROJECT GUTENBERG EBOOK SHAKESPEARE'S SONNETS ***\r\n\r\n",
        "THE SONNETS\r\n\r\nby William Shakespeare\r\n\r\n",
    ]
    for n in range(1, 155):
        label = str(n) if numbering == "arabic" else roman(n)
        lines = [f"  Sonnet {n} line {i}," for i in range(1, 13)]
        lines += [f"    Couplet {n} a,", f"    Couplet {n} b."]
        parts.append(f"                    {label}\r\n\r\n" + "\r\n".join(lines) + "\r\n\r\n")
    parts.append("THE END\r\n\r\n*** END OF THE PROJECT GUTENBERG EBOOK SHAKESPEARE'S SONNETS ***\r\n")
    parts.append("Licence text 1 2 3\r\n")
    return "".join(parts)


@pytest.mark.parametrize("numbering", ["arabic", "roman"])
def test_gutenberg_sonnets_to_layout(numbering: str, tmp_path: Path) -> None:
    files = gutenberg_sonnets_to_layout(fake_gutenberg(numbering))
    assert set(files) == {"sonnets.txt", "sonnets_held_out_dev.txt", "TRUE_sonnets_held_out_dev.txt"}
    train = parse_sonnets(files["sonnets.txt"])
    assert [s.number for s in train] == list(range(1, 132))
    assert train[0].lines[0] == "Sonnet 1 line 1,"
    assert train[0].lines[-1] == "  Couplet 1 b."
    assert all(len(s.lines) == 14 for s in train)
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    held = read_held_out(tmp_path / "sonnets_held_out_dev.txt", tmp_path / "TRUE_sonnets_held_out_dev.txt")
    assert [h.number for h in held] == list(range(132, 144))
    assert all(len(h.prompt_lines) == 3 and len(h.true_lines) == 14 for h in held)
    assert "THE END" not in files["TRUE_sonnets_held_out_dev.txt"]


def test_gutenberg_missing_sonnets_is_error() -> None:
    with pytest.raises(DataError, match="lacks sonnets"):
        gutenberg_sonnets_to_layout("1\n\na\nb\nc\nd\n")


def test_qqp_rows_round_trip(tmp_path: Path) -> None:
    rows = [
        {"id": "train-0", "question1": 'Say "hi"?', "question2": "tab\there", "label": 1},
        {"id": "train-1", "question1": "two\nlines?", "question2": "B?", "label": 0},
        {"id": "test-0", "question1": "unlabelled?", "question2": "C?", "label": -1},
    ]
    text = qqp_rows_to_tsv(rows)
    assert text.startswith("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n")
    path = tmp_path / "q.tsv"
    path.write_text(text, newline="")
    pairs, skips = read_pairs(path)
    assert skips.count == 0
    assert pairs == [
        QuoraPair("train-0", 'Say "hi"?', "tab\there", 1),
        QuoraPair("train-1", "two\nlines?", "B?", 0),
    ]


def test_offline_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_net(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", no_net)
    t0 = time.monotonic()
    with pytest.raises(DataError) as e:
        fetch(tmp_path / "data")
    assert time.monotonic() - t0 < 2
    msg = str(e.value)
    assert fetch_mod.SONNETS_URL in msg and "offline" in msg and "sonnets/sonnets.txt" in msg
    assert not (tmp_path / "data" / "sonnets").exists()


def test_quora_without_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # import raises ImportError
    with pytest.raises(DataError, match=r"pip install sftdpo\[fetch\]"):
        fetch(tmp_path, parts=["quora"])


def test_sonnets_fetch_writes_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch_mod, "_download", lambda url, timeout=10.0: fake_gutenberg())
    msgs = fetch(tmp_path, parts=["sonnets", "plays"])
    assert (tmp_path / "sonnets" / "sonnets.txt").is_file()
    assert any("plays: not downloaded" in m and "shakespeare-plays" in m for m in msgs)
    assert not list((tmp_path / "sonnets").glob("*.part"))


def test_unknown_part(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown data part"):
        fetch(tmp_path, parts=["poems"])
