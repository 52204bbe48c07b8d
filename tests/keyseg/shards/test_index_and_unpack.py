"""Hostile shard sets: an index.json that names a command, a URL or a file elsewhere, and
tars whose members would land outside the unpack folder."""

from __future__ import annotations

import io
import json
import os
import tarfile

import pytest
from typer.testing import CliRunner

from cli import app
from keyseg.data import resolve_shards
from keyseg.errors import DataError, UsageError
from keyseg.shards.index import ShardSet, read_index
from keyseg.shards.tario import UnsafeMemberError, unpack_shard
from shard_edits import write_members


def write_index(folder, paths):
    folder.mkdir(parents=True, exist_ok=True)
    index = {"splits": {"reasonseg:val": {"shards": [{"path": path, "samples": 1} for path in paths]}}}
    (folder / "index.json").write_text(json.dumps(index))


def hostile_paths(marker):
    return [f"pipe:touch {marker}; cat a.tar", f"/etc/passwd", "../outside.tar", "sub/../../outside.tar",
            "http://example.invalid/a.tar", "C:\\shards\\a.tar"]


@pytest.mark.parametrize("number", range(6))
def test_an_index_path_is_a_plain_file_inside_the_shard_set(tmp_path, monkeypatch, number):
    marker = tmp_path / "MARKER"
    folder = tmp_path / "set"
    (tmp_path / "outside.tar").write_bytes(b"")
    hostile = hostile_paths(marker)[number]
    write_index(folder, [hostile])
    for spec in (folder, folder / "index.json"):
        with pytest.raises(DataError) as error:
            resolve_shards(spec, "reasonseg:val")
        assert str(folder / "index.json") in str(error.value) and repr(hostile) in str(error.value)
    assert not marker.exists()


def test_index_paths_come_back_absolute_even_from_a_relative_folder(tmp_path, monkeypatch):
    # An absolute path can never be read as a URL or `pipe:` command by a later reader.
    folder = tmp_path / "set"
    write_index(folder, ["reasonseg/val/a.tar"])
    monkeypatch.chdir(folder)
    assert ShardSet.open(".").shard_paths("reasonseg:val")["reasonseg:val"] == [folder / "reasonseg/val/a.tar"]


def test_a_symlink_out_of_the_shard_set_is_refused(tmp_path):
    folder = tmp_path / "set"
    write_index(folder, ["link.tar"])
    (tmp_path / "secret.tar").write_bytes(b"x")
    os.symlink(tmp_path / "secret.tar", folder / "link.tar")
    with pytest.raises(DataError, match="resolves outside"):
        ShardSet.open(folder).shard_paths("reasonseg:val")


def test_command_line_urls_are_still_accepted(tmp_path):
    assert resolve_shards("pipe:cat a.tar") == ["pipe:cat a.tar"]
    assert resolve_shards("https://example.invalid/a-{0..1}.tar") == [
        "https://example.invalid/a-0.tar", "https://example.invalid/a-1.tar"]


@pytest.mark.parametrize("text, reason", [("{", "not valid JSON"), ("[]", "no 'splits'"),
                                          ('{"splits": {"a": {"shards": 5}}}', "'shards' must be a list"),
                                          ('{"splits": {"a": {"shards": [{"path": 3}]}}}', "'path' string")])
def test_a_malformed_index_is_one_data_error(tmp_path, text, reason):
    (tmp_path / "index.json").write_text(text)
    with pytest.raises(DataError, match=reason):
        read_index(tmp_path)


def test_an_unknown_split_is_a_usage_error(tmp_path):
    write_index(tmp_path, ["a.tar"])
    with pytest.raises(UsageError, match="has: reasonseg:val"):
        ShardSet.open(tmp_path).shard_paths("refcoco:val")


def hostile_shard(path, names):
    write_members(path, [(name, b"bad") for name in names])


@pytest.mark.parametrize("names", [["a.jpg", "../escape.jpg"], ["a.jpg", "a.json", "/tmp/abs.json"],
                                   ["a.jpg", "sub/b.jpg"], ["a.jpg", "a.jpg"]])
def test_unpack_writes_nothing_when_any_member_is_refused(tmp_path, names):
    shard = tmp_path / "hostile.tar"
    hostile_shard(shard, names)
    out = tmp_path / "out" / "here"
    with pytest.raises(UnsafeMemberError):
        unpack_shard(shard, out)
    assert not out.exists() and not (tmp_path / "out" / "escape.jpg").exists()
    result = CliRunner().invoke(app, ["shards", "unpack", "--shard", str(shard), "--out", str(out)])
    assert result.exit_code == 1 and str(shard) in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_unpack_of_a_truncated_tar_writes_nothing(tmp_path):
    shard = tmp_path / "good.tar"
    hostile_shard(shard, [f"s{i}.jpg" for i in range(40)])
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(shard.read_bytes()[:10_000])
    out = tmp_path / "out"
    with pytest.raises(UnsafeMemberError, match="not a readable tar"):
        unpack_shard(truncated, out)
    assert not out.exists()
    assert [p.name for p in unpack_shard(shard, out)] == [f"s{i}.jpg" for i in range(40)]


def test_samples_read_before_a_tar_breaks_are_still_yielded(tmp_path):
    from keyseg.shards.tario import iter_samples

    shard = tmp_path / "s.tar"
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        for key in ("a", "b", "c"):
            for extension in ("jpg", "json"):
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size = 1000
                tar.addfile(info, io.BytesIO(bytes(1000)))
    data = shard.read_bytes()
    # Cut inside c.json's data: a and b are whole, c has its jpg only.
    cut = data[: data.index(b"c.json") + 512 + 100]
    seen = []
    with pytest.raises(tarfile.ReadError):
        for key, members in iter_samples(io.BytesIO(cut)):
            seen.append((key, sorted(members)))
    assert seen == [("a", ["jpg", "json"]), ("b", ["jpg", "json"]), ("c", ["jpg"])]
