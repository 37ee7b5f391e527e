from __future__ import annotations

from pathlib import Path

import pytest

from sftdpo.data.quora import (
    QuoraPair,
    SkipLog,
    label_balance,
    read_pairs,
    split_of,
    split_pairs,
)
from sftdpo.errors import DataError

CS224N_HEADER = "\tid\tsentence1\tsentence2\tis_duplicate\n"
GLUE_HEADER = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8", newline="")
    return p


def good_rows(n: int, start: int = 0) -> str:
    return "".join(f"{i}\tid{i}\tQuestion {i}?\tOther {i}?\t{i % 2}.0\n" for i in range(start, start + n))


def test_cs224n_layout_with_quoting(tmp_path: Path) -> None:
    text = (
        CS224N_HEADER
        + '0\ta1\t"""Is ""the"" needed?"""\tPlain?\t1.0\n'
        + '1\ta2\t"tab\there"\t"two\nlines"\t0.0\n'
        + "2\ta3\tQ?\tR?\t1\n"
    )
    pairs, skips = read_pairs(write(tmp_path, "q.tsv", text))
    assert skips.count == 0
    assert pairs[0] == QuoraPair("a1", '"Is "the" needed?"', "Plain?", 1)
    assert pairs[1] == QuoraPair("a2", "tab\there", "two\nlines", 0)
    assert [p.id for p in pairs] == ["a1", "a2", "a3"]
    assert [p.label for p in pairs] == [1, 0, 1]


def test_glue_layout_tsv_and_csv(tmp_path: Path) -> None:
    tsv = GLUE_HEADER + "7\t1\t2\tWhat?\tWhy?\t0\n8\t3\t4\tHow?\tWho?\t1\n"
    pairs, skips = read_pairs(write(tmp_path, "g.tsv", tsv))
    assert [(p.id, p.question1, p.label) for p in pairs] == [("7", "What?", 0), ("8", "How?", 1)]
    csv_text = 'id,qid1,qid2,question1,question2,is_duplicate\n9,1,2,"A, b?",C?,1\n'
    pairs, _ = read_pairs(write(tmp_path, "g.csv", csv_text))
    assert pairs == [QuoraPair("9", "A, b?", "C?", 1)]
    # unknown suffix: delimiter sniffed from the header
    pairs, _ = read_pairs(write(tmp_path, "g.txt", tsv))
    assert len(pairs) == 2


def test_bad_rows_skipped_with_line_numbers(tmp_path: Path) -> None:
    text = (
        CS224N_HEADER                                  # line 1
        + good_rows(3)                                 # lines 2-4
        + "10\tb1\tQ?\tR?\t\n"                         # 5 missing label
        + "11\tb2\tQ?\tR?\t2\n"                        # 6 invalid label
        + '12\tb3\t"multi\nline"\t\t1.0\n'             # 7-8 empty question
        + "13\tb4\tQ?\tR?\n"                           # 9 wrong field count
        + "14\tid0\tQ?\tR?\tyes\n"                     # 10 invalid label
        + "15\tid1\tQ?\tR?\t0\n"                       # 11 duplicate id
        + good_rows(200, start=100)
    )
    pairs, skips = read_pairs(write(tmp_path, "q.tsv", text))
    assert len(pairs) == 203
    assert skips.skipped == [
        (5, "missing label"),
        (6, "invalid label '2'"),
        (7, "empty question"),
        (9, "malformed row (4 fields, expected 5)"),
        (10, "invalid label 'yes'"),
        (11, "duplicate id 'id1'"),
    ]
    assert skips.by_reason() == {
        "missing label": 1, "invalid label": 2, "empty question": 1,
        "malformed row": 1, "duplicate id": 1,
    }
    assert skips.first_lines(2) == [5, 6]
    assert skips.count == 6


def test_too_many_bad_rows_is_an_error(tmp_path: Path) -> None:
    bad = "".join(f"{i}\tx{i}\tQ?\tR?\tmaybe\n" for i in range(12))
    text = CS224N_HEADER + good_rows(100) + bad
    with pytest.raises(DataError, match=r"12 of 112 rows malformed in .*q\.tsv \(first at lines 102, 103"):
        read_pairs(write(tmp_path, "q.tsv", text))
    # 12 bad rows in 1000 is under 5%: fine
    pairs, skips = read_pairs(write(tmp_path, "ok.tsv", CS224N_HEADER + good_rows(1000) + bad))
    assert (len(pairs), skips.count) == (1000, 12)


def test_missing_columns(tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        read_pairs(write(tmp_path, "q.tsv", "id\tquestion1\tlabel_x\nfoo\tbar\t1\n"))
    msg = str(e.value)
    assert "q.tsv" in msg and "sentence2/question2" in msg and "is_duplicate" in msg
    assert "CS224N" in msg and "GLUE QQP" in msg
    assert "\n" not in msg


def test_empty_and_header_only(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="empty"):
        read_pairs(write(tmp_path, "e.tsv", ""))
    with pytest.raises(DataError, match="no rows"):
        read_pairs(write(tmp_path, "h.tsv", CS224N_HEADER))
    with pytest.raises(DataError, match="not found"):
        read_pairs(tmp_path / "nope.tsv")


def test_non_utf8(tmp_path: Path) -> None:
    data = (CS224N_HEADER + good_rows(2)).encode() + b"5\tz\tCaf\xe9?\tR?\t1\n"
    with pytest.raises(DataError, match=r"bad\.tsv is not UTF-8: bad byte 0xe9 at offset \d+ \(line 4\)"):
        read_pairs(write(tmp_path, "bad.tsv", data))


def test_split_of_known_values_and_stability() -> None:
    # computed once from sha256; must never change across machines or versions
    known = {"a": "train", "f": "dev", "h": "dev", "1": "train"}
    assert {k: split_of(k) for k in known} == known
    ids = [f"id{i}" for i in range(2000)]
    first = [split_of(i) for i in ids]
    assert first == [split_of(i) for i in ids]
    assert {"test"} <= set(first)


def test_split_pairs_keeps_order_and_balance() -> None:
    pairs = [QuoraPair(f"p{i}", "a", "b", int(i % 3 == 0)) for i in range(300)]
    splits = split_pairs(pairs)
    assert sum(len(v) for v in splits.values()) == 300
    for name, ps in splits.items():
        assert all(split_of(p.id) == name for p in ps)
        idx = [int(p.id[1:]) for p in ps]
        assert idx == sorted(idx)
    assert label_balance([]) == 0.0
    assert label_balance(pairs) == pytest.approx(100 / 300)


def test_skiplog_empty() -> None:
    s = SkipLog()
    assert (s.count, s.by_reason(), s.first_lines()) == (0, {}, [])


def test_real_file(data_root: Path) -> None:
    pairs, skips = read_pairs(data_root / "quora" / "quora-pairs.tsv")
    assert len(pairs) == 18213
    assert skips.skipped == [(2319, "missing label"), (12807, "missing label")]
    assert 0.36 < label_balance(pairs) < 0.39
    splits = split_pairs(pairs)
    ids = {name: {p.id for p in ps} for name, ps in splits.items()}
    assert not (ids["train"] & ids["dev"]) and not (ids["train"] & ids["test"])
    assert not (ids["dev"] & ids["test"])
    n = len(pairs)
    assert abs(len(splits["train"]) / n - 0.8) < 0.02
    assert abs(len(splits["dev"]) / n - 0.1) < 0.02
    assert abs(len(splits["test"]) / n - 0.1) < 0.02
    assert {k: len(v) for k, v in splits.items()} == {"train": 14585, "dev": 1762, "test": 1866}
