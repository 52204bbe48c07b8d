"""Fixtures shared by the stage tests."""

import json

import pytest
from keyword_records import explanatory_json


@pytest.fixture
def explanatory(tmp_path):
    """A ReasonSeg explanatory/train.json of the shared keyword records."""
    path = tmp_path / "ReasonSeg" / "explanatory" / "train.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(explanatory_json()))
    return path
