import sys
from pathlib import Path

# Test helpers (independent reference implementations, fixture builders) live in
# tests/helpers and are imported by module name.
sys.path.insert(0, str(Path(__file__).parent / "helpers"))
