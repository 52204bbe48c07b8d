import asyncio

import pytest

from keyword_records import RECORDS
from keyseg.keywords.backends import HFBackend
from keyseg.keywords.prompt import SYSTEM_PROMPT
from tiny_models import save_tiny_causal_lm, save_tiny_seq2seq

TEXTS = [SYSTEM_PROMPT, "Question: Answer: Reply as JSON keyword Keyword rejected previous again"] + [
    query + " " + outputs for query, outputs, _ in RECORDS]


@pytest.mark.parametrize("builder", [save_tiny_causal_lm, save_tiny_seq2seq])
def test_local_model_answers_greedily_and_deterministically(tmp_path, builder):
    folder = builder(tmp_path / "model", TEXTS)
    backend = HFBackend(str(folder), max_new_tokens=4)
    query, outputs, _ = RECORDS[0]
    first = asyncio.run(backend.complete(query, outputs))
    second = asyncio.run(backend.complete(query, outputs))
    assert first.content == second.content and isinstance(first.content, str)
    assert first.prompt_tokens > 20 and 0 < first.completion_tokens <= 4
    # Every generated word comes from the tiny vocabulary: the text is the decoded new tokens.
    assert all(word in " ".join(TEXTS).lower() for word in first.content.split())


def test_missing_folder_is_refused_without_download(tmp_path):
    with pytest.raises(OSError):
        HFBackend(str(tmp_path / "nothing-here"))
