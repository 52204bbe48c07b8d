"""Small file helpers shared by every stage: atomic writes and content hashes.

Every output of the toolkit goes through `atomic_write_bytes` so that an interrupted run
(Ctrl-C, OOM kill, full disk) never leaves a half-written file under its final name.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator


def default_file_mode() -> int:
    """The usual mode of a new file (0666 less the umask); mkstemp's files are 0600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_output_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path next to `path` for a writer that needs a file name (safetensors);
    renamed to `path` with the usual file mode when the block succeeds, removed otherwise."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same folder and a rename.

    An OSError (disk full, read-only folder, permission denied) names `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise _named(error, path) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp_name, default_file_mode())
        os.replace(tmp_name, path)
    except BaseException as error:
        # Also on KeyboardInterrupt: the temp file must not linger next to real outputs.
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        if isinstance(error, OSError):
            raise _named(error, path) from None
        raise
    return path


def _named(error: OSError, path: Path) -> OSError:
    """The same error, naming the output file (a full disk's write error names no file)."""
    if error.filename is not None and Path(error.filename).name.startswith(f".{path.name}."):
        return type(error)(error.errno, error.strerror, str(path))  # not the temp file's name
    if error.filename is None and error.errno is not None:
        return type(error)(error.errno, error.strerror, str(path))
    return error


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def to_json_text(obj: Any) -> str:
    """The one JSON style of our outputs: UTF-8, indented, stable key order as given."""
    return json.dumps(obj, ensure_ascii=False, indent=2) + "\n"


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, to_json_text(obj))


def atomic_write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> None:
    lines = [json.dumps(record, ensure_ascii=False) + "\n" for record in records]
    atomic_write_text(path, "".join(lines))


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON Lines file; a truncated last line (interrupted append) is ignored."""
    records = []
    with open(path, "r", encoding="utf-8") as handle:
        for line in handle:
            if not line.endswith("\n"):
                break
            line = line.strip()
            if line:
                records.append(json.loads(line))
    return records


def json_lines(path: str | os.PathLike, data: bytes | None = None) -> Iterator[tuple[int, Any, str | None]]:
    """Each non-blank line of a JSON Lines file someone else wrote: (line number, value,
    None), or (line number, None, why it is not JSON). Not UTF-8: a DataError naming the file.
    `data`: the file's bytes when the caller has read them already."""
    from keyseg.errors import DataError

    if data is None:
        data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(path, f"not UTF-8 text ({error.reason} at byte {error.start})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line), None
        except json.JSONDecodeError as error:
            yield number, None, f"not JSON ({error.msg} at column {error.colno})"
        except RecursionError:
            yield number, None, "not JSON (nested too deeply)"


def sha256_bytes(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        # Length-prefix each part so that ("ab", "c") and ("a", "bc") hash differently.
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
