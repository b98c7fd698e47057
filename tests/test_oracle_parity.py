"""The parity table is current and shows no missing Optax name (oracle env: optax and every plugin installed)."""

import sys
from pathlib import Path

import pytest

optax = pytest.importorskip("optax")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))
import parity  # noqa: E402


def test_parity_table_is_current_and_complete():
    table = parity.table()
    assert (ROOT / "docs" / "parity.md").read_text() == table, "run `python docs/parity.py`"
    missing = [line for line in table.splitlines() if line.endswith("| missing |")]
    assert missing == []
