import sys
from pathlib import Path

# Test helpers (independent reference implementations, fixture builders) live in
# tests/helpers and are imported by module name.
sys.path.insert(0, str(Path(__file__).parent / "helpers"))

import pytest


@pytest.fixture(scope="session")
def demo_shards(tmp_path_factory):
    """Demo data -> prepare -> heuristic keywords -> shards (small shards: uneven counts).

    Returns the shard set folder; its parent holds data/ and prepared/.
    """
    from pipelines import demo_data, mine_keywords, prepare, shard
    from rich.console import Console

    root = tmp_path_factory.mktemp("demo_chain")
    quiet = Console(quiet=True)
    demo_data.run(demo_data.DemoDataConfig(out=root / "data", images=16))
    prepare.run(prepare.PrepareConfig(data_dir=root / "data", out=root / "prepared", workers=1,
                                      show_progress=False), console=quiet)
    mine_keywords.run(mine_keywords.MineKeywordsConfig(
        mode="generate", input=root / "data/reason_seg/ReasonSeg/explanatory/train.json", backend="heuristic",
        show_progress=False), console=quiet)
    shard.run(shard.ShardConfig(prepared=root / "prepared", out=root / "shards", maxcount=3, workers=1,
                                show_progress=False), console=quiet)
    return root / "shards"
