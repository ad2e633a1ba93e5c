"""Every committed result folder says how it was made: a README with the command and the commit,
and results/README.md lists every folder (issue 23: claims and their provenance travel together)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[1] / "results"
FOLDERS = sorted(p.name for p in RESULTS.iterdir() if p.is_dir())
COMMIT = re.compile(r"commit\s+`?[0-9a-f]{7,40}\b", re.IGNORECASE)
COMMAND = re.compile(r"(`[^`\n]*\b(python|bash)\s[^`\n]+`)|(```(bash|sh)?\n[^`]*\b(python|bash)\s)")


def test_there_are_result_folders() -> None:
    assert len(FOLDERS) >= 10, FOLDERS


@pytest.mark.parametrize("folder", FOLDERS)
def test_folder_readme_names_its_command_and_commit(folder: str) -> None:
    readme = RESULTS / folder / "README.md"
    assert readme.is_file(), f"results/{folder} has no README.md"
    text = readme.read_text(encoding="utf-8")
    assert COMMAND.search(text), f"results/{folder}/README.md names no command (python/bash in backticks)"
    assert COMMIT.search(text), f"results/{folder}/README.md names no commit ('commit <hash>')"


def test_index_lists_every_folder() -> None:
    index = (RESULTS / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\|\s*`([\w.-]+)/`", index, flags=re.MULTILINE))
    assert listed == set(FOLDERS), f"results/README.md lists {sorted(listed)}, folders are {FOLDERS}"


def test_committed_tables_are_readable_by_aggregate() -> None:
    """scripts/aggregate.py takes a committed ``results_all.csv.gz`` as it is (no gunzip first)."""
    from eval.records import read_records

    table = read_records(RESULTS / "world_reconstruction" / "results_all.csv.gz")
    assert len(table) > 1000 and {"inverter", "metric", "value", "status"} <= set(table.columns)
    assert table["value"].notna().any()
