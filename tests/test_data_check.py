from __future__ import annotations

from pathlib import Path

import pytest

from sftdpo.data.check import check_data_dir, format_report
from sftdpo.data.datadir import ENV_VAR, DataDir, load_quora, resolve_data_dir
from sftdpo.errors import DataError

HDR = "\tid\tsentence1\tsentence2\tis_duplicate\n"


def test_real_dir_summary(data_root: Path) -> None:
    summary, problems = check_data_dir(data_root)
    assert problems == []
    text = "\n".join(summary)
    assert "18,213 usable pairs, 2 skipped (missing label: 2; first at line(s) 2319, 12807)" in text
    assert "131 training sonnets" in text
    assert "held-out 'dev': 12 prompts matched to references" in text
    assert "plays: 40 files" in text
    assert "train 14,585, dev 1,762, test 1,866" in text
    report = format_report(summary, problems)
    assert report.endswith("no problems found\n")


def test_broken_dir_lists_every_problem(tmp_path: Path) -> None:
    (tmp_path / "quora").mkdir()
    (tmp_path / "quora" / "q.tsv").write_text("a\tb\n1\t2\n")
    (tmp_path / "sonnets").mkdir()
    (tmp_path / "sonnets" / "sonnets.txt").write_text("1\nx\ny\n")
    (tmp_path / "sonnets" / "sonnets_held_out_dev.txt").write_text("1\nx\n")
    summary, problems = check_data_dir(tmp_path)
    assert len(problems) == 3
    assert "q.tsv" in problems[0] and "lacks column" in problems[0]
    assert "sonnets_held_out_dev.txt has no matching TRUE_sonnets_held_out_dev.txt" in problems[1]
    assert "no shakespeare-plays/ folder" in problems[2]
    assert all("\n" not in p for p in problems)
    assert any("1 training sonnets" in s for s in summary)
    report = format_report(summary, problems)
    assert "3 problem(s):" in report and report.count("PROBLEM:") == 3


def test_leaked_held_out_is_a_problem(tmp_path: Path) -> None:
    s = tmp_path / "sonnets"
    s.mkdir()
    (s / "sonnets.txt").write_text("1\na\nb\n")
    (s / "sonnets_held_out_x.txt").write_text("1\na\n")
    (s / "TRUE_sonnets_held_out_x.txt").write_text("1\na\nb\n")
    _, problems = check_data_dir(tmp_path)
    assert any("held-out 'x' sonnets [1] also appear" in p for p in problems)


def test_missing_root() -> None:
    _, problems = check_data_dir(Path("/nonexistent/sftdpo-data"))
    assert len(problems) == 1 and "does not exist" in problems[0]


def test_resolve_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert resolve_data_dir(str(tmp_path)) == tmp_path
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert resolve_data_dir(None) == tmp_path
    with pytest.raises(DataError, match=r"from --data-dir.*sftdpo data fetch"):
        resolve_data_dir(str(tmp_path / "nope"))
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nope2"))
    with pytest.raises(DataError, match=r"nope2 \(from \$SFTDPO_DATA_DIR\)"):
        resolve_data_dir(None)
    monkeypatch.delenv(ENV_VAR)
    import platformdirs

    monkeypatch.setattr(platformdirs, "user_data_dir", lambda name: str(tmp_path / name))
    with pytest.raises(DataError, match=r"sftdpo/data \(from the default location\)"):
        resolve_data_dir(None)
    (tmp_path / "sftdpo" / "data").mkdir(parents=True)
    assert resolve_data_dir(None) == tmp_path / "sftdpo" / "data"


def test_datadir_layout(tmp_path: Path, data_root: Path) -> None:
    real = DataDir(data_root)
    assert [p.name for p in real.quora_files()] == ["quora-pairs.tsv"]
    assert real.sonnets_train.name == "sonnets.txt"
    assert [(n, p.name, t.name) for n, p, t in real.held_out_sets()] == [
        ("dev", "sonnets_held_out_dev.txt", "TRUE_sonnets_held_out_dev.txt")
    ]
    assert real.plays_dir.name == "shakespeare-plays"
    empty = DataDir(tmp_path)
    for get in (empty.quora_files, lambda: empty.sonnets_train, empty.held_out_sets,
                lambda: empty.plays_dir):
        with pytest.raises(DataError, match="expected layout: quora/"):
            get()


def test_load_quora_several_files(tmp_path: Path) -> None:
    q = tmp_path / "quora"
    q.mkdir()
    (q / "b.tsv").write_text(HDR + "0\tx\tQ?\tR?\t1\n1\ty\tQ?\tR?\t0\n")
    (q / "a.csv").write_text(",id,sentence1,sentence2,is_duplicate\n0,y,A?,B?,1\n")
    (q / "ignored.txt").write_text("junk")
    pairs, skips = load_quora(DataDir(tmp_path))
    assert [(p.id, p.label) for p in pairs] == [("y", 1), ("x", 1)]
    assert skips.skipped == [(3, "duplicate id 'y' [b.tsv]")]
    assert skips.by_reason() == {"duplicate id": 1}
