"""`zoo sync`: a zoo copied between a local folder and a real S3 server (moto on loopback),
verified, resumable, manifest last."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from generators.cli import main
from zoo.errors import IntegrityError, ZooFolderError
from zoo.folder.location import objects_of, open_location
from zoo.folder.manifest import read_manifest
from zoo.folder.names import MANIFEST
from zoo.folder.sync import sync

ROOT = Path(__file__).resolve().parent.parent


def zoo_files(root: Path) -> dict[str, bytes]:
    """The bytes of the manifest and of every object it covers."""
    names = [relative for relative, _ in objects_of(read_manifest(root))] + [MANIFEST]
    return {name: (root / name).read_bytes() for name in names}


def test_a_zoo_round_trips_through_s3_bit_for_bit(tiny_zoo, s3_store, tmp_path):
    url = s3_store.url("round-trip")
    there = sync(tiny_zoo, url)
    back = tmp_path / "back"
    assert main(["sync", url, str(back)]) == 0
    assert zoo_files(back) == zoo_files(tiny_zoo)
    assert s3_store.keys("round-trip") == sorted(zoo_files(tiny_zoo))
    assert there.copied == len(zoo_files(tiny_zoo)) - 1 and there.skipped == 0
    again = sync(tiny_zoo, url)  # resumable: everything is there with its digest
    assert (again.copied, again.skipped) == (0, there.copied)


def test_s3_to_s3_copies_only_what_the_manifest_lists(tiny_zoo, s3_store):
    first, second = s3_store.url("one"), s3_store.url("two")
    sync(tiny_zoo, first)
    open_location(first).write_bytes("stray.bin", b"not the zoo's")
    sync(first, second)
    assert s3_store.keys("two") == sorted(zoo_files(tiny_zoo))


def test_a_tampered_source_object_is_refused_and_no_manifest_written(tiny_zoo, s3_store,
                                                                      tmp_path):
    source = tmp_path / "source"
    shutil.copytree(tiny_zoo, source)
    shard = read_manifest(source).shards[-1].path
    data = bytearray((source / shard).read_bytes())
    data[len(data) // 2] ^= 1
    (source / shard).write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=shard):
        sync(source, s3_store.url("tampered"))
    assert MANIFEST not in s3_store.keys("tampered")


def test_a_key_outside_the_prefix_is_refused(s3_store):
    store = open_location(s3_store.url("confined"))
    for key in ("../escape", "/absolute", "a/../../b"):
        with pytest.raises(ZooFolderError, match="leaves the zoo folder"):
            store.key(key)
    with pytest.raises(ZooFolderError, match="not a whole bucket"):
        open_location(f"s3://{s3_store.bucket}")


@pytest.mark.slow
def test_a_sync_killed_mid_copy_leaves_the_old_zoo_readable_and_a_rerun_finishes(
        tiny_zoo, s3_store, tmp_path):
    from generators.relabel import relabel
    from zoo.folder.reader import ZooReader

    newer = tmp_path / "newer"  # the same zoo relabelled: new cells and models shards
    shutil.copytree(tiny_zoo, newer)
    relabel(newer, {"mc": 100.0})
    url = s3_store.url("killed")
    sync(tiny_zoo, url)
    fresh = {r for r, _ in objects_of(read_manifest(newer))} - set(zoo_files(tiny_zoo))
    assert len(fresh) >= 2
    killed = subprocess.run([sys.executable, "-m", "tests.faults", "sigkill-after-copies:1",
                             "sync", str(newer), url], cwd=ROOT, capture_output=True)
    assert killed.returncode == -9
    back = tmp_path / "back"
    sync(url, back)  # what a reader of the store sees: the old zoo, whole
    assert zoo_files(back) == zoo_files(tiny_zoo)
    ZooReader(back).table("cells")
    rerun = subprocess.run([sys.executable, "-m", "generators.cli", "sync", str(newer), url],
                           cwd=ROOT, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    again = tmp_path / "again"
    sync(url, again)
    assert zoo_files(again) == zoo_files(newer)


def test_a_link_in_a_local_destination_is_refused_not_followed(tiny_zoo, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    (target / "data").symlink_to(outside)
    with pytest.raises(ZooFolderError, match="symbolic link"):
        sync(tiny_zoo, target)
    assert not any(outside.iterdir())
