"""schemas/fileio.py on local paths: what --input names, atomic writes, one-line errors."""

from __future__ import annotations

import os
import stat

import pytest

import schemas
from schemas import fileio


def test_inputs_from_paths_folders_globs_and_path_lists(tmp_path):
    for name in ("a/1.wat.gz", "a/2.wat.gz", "a/.hidden.wat.gz", "a/sub/3.wat.gz", "b.jsonl"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    a = str(tmp_path / "a")
    assert fileio.expand_inputs([f"{a}/*.wat.gz"]) == [f"{a}/1.wat.gz", f"{a}/2.wat.gz"]
    assert fileio.expand_inputs([a]) == [f"{a}/1.wat.gz", f"{a}/2.wat.gz"]  # a folder: its files
    assert fileio.expand_inputs([f"{a}/"]) == [f"{a}/1.wat.gz", f"{a}/2.wat.gz", f"{a}/sub/3.wat.gz"]
    assert fileio.expand_inputs([f"{a}/**/*.wat.gz"]) == [f"{a}/1.wat.gz", f"{a}/2.wat.gz", f"{a}/sub/3.wat.gz"]
    (tmp_path / "list.paths").write_text("a/1.wat.gz\n# a comment\nb.jsonl\n")
    assert fileio.expand_inputs([str(tmp_path / "list.paths"), f"{a}/1.wat.gz"]) == [
        f"{a}/1.wat.gz", str(tmp_path / "b.jsonl")]
    with pytest.raises(schemas.UserError, match="matches nothing"):
        fileio.expand_inputs([f"{a}/*.warc.gz"])
    with pytest.raises(schemas.UserError, match="no filesystem for nosuch://"):
        fileio.expand_inputs(["nosuch://bucket/x"])


def test_atomic_writes_and_listing(tmp_path):
    dest = str(tmp_path / "out" / "x.json")
    with pytest.raises(RuntimeError), fileio.atomic_local(dest) as tmp:
        open(tmp, "w").write("partial")
        raise RuntimeError("killed")
    assert not fileio.exists(dest) and fileio.listdir(str(tmp_path / "out")) == []  # no temp left
    fileio.write_json(dest, {"a": 1})
    assert fileio.read_json(dest) == {"a": 1} and fileio.listdir(str(tmp_path / "out")) == ["x.json"]
    (name, size, mtime), = fileio.listing(str(tmp_path / "out"))
    assert (name, size) == ("x.json", (tmp_path / "out" / "x.json").stat().st_size) and size > 0 and mtime == (tmp_path / "out" / "x.json").stat().st_mtime_ns
    fileio.remove(dest)
    assert fileio.listdir(str(tmp_path / "out")) == [] and fileio.listdir(str(tmp_path / "nope")) == []
    (tmp_path / "file").write_text("")
    with pytest.raises(schemas.UserError, match="cannot create this folder"):
        fileio.makedirs(str(tmp_path / "file" / "sub"))


def test_inputs_are_named_relative_to_the_folder_they_are_given_from(tmp_path):
    for name in ("a/1.wat.gz", "a/sub/3.wat.gz", "b/1.wat.gz"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    a = str(tmp_path / "a")
    named = {f: fileio.relative(f, root) for f, root in fileio.expand_inputs_with_roots([f"{a}/**/*.wat.gz"])}
    assert named == {f"{a}/1.wat.gz": "1.wat.gz", f"{a}/sub/3.wat.gz": "sub/3.wat.gz"}
    named = {f: fileio.relative(f, root) for f, root in fileio.expand_inputs_with_roots([a + "/", f"{a}/1.wat.gz"])}
    assert named == {f"{a}/1.wat.gz": "1.wat.gz", f"{a}/sub/3.wat.gz": "sub/3.wat.gz"}
    assert fileio.relative("s3://b/crawl/x/1.gz", "s3://b/crawl") == "x/1.gz"
    assert fileio.relative("s3://b/other/1.gz", "s3://b/crawl") == "s3://b/other/1.gz"


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_take_the_mode_the_umask_gives(tmp_path, umask):
    """Atomic writes go through a private temp file; the file published is as readable as
    any file written in place (0644 under the usual umask), not 0600."""
    saved = os.umask(umask)
    try:
        fileio.write_bytes(str(tmp_path / "a.bin"), b"x")
        with fileio.atomic_local(str(tmp_path / "sub" / "b.bin")) as tmp, open(tmp, "wb") as fh:
            fh.write(b"y")
        fileio.publish(str(tmp_path / "a.bin"), str(tmp_path / "c.bin"))
        (tmp_path / "plain.bin").write_bytes(b"z")
    finally:
        os.umask(saved)
    expected = 0o666 & ~umask
    for name in ("a.bin", "sub/b.bin", "c.bin", "plain.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name
