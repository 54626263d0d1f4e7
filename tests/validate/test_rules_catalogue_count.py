"""The README's feature table states how many validation rules there are: kept true."""

from __future__ import annotations

import re
from pathlib import Path

from registry.validate import RULES


def test_the_readme_states_the_number_of_validation_rules():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    [stated] = re.findall(r"Metadata validation per ITI TF-3 §4\.1–4\.2: (\d+) rules", readme)
    assert int(stated) == len(RULES)
