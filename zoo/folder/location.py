"""Where a zoo lives: a local folder, or a URI (`s3://bucket/prefix`, `gs://...`, any scheme
fsspec reaches), as one object with the few operations a zoo needs.

`open_location` is the one place that turns a location into a filesystem and a root. Credentials
and endpoints come from the environment the filesystem library reads (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, an IAM role, ...) or from `storage_options`, never from
the zoo. Every key is a relative path spelled inside the root (`names.inside`), so no key outside
the zoo's prefix is ever read or written.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator

from zoo.errors import IntegrityError, ZooFolderError
from zoo.folder.names import MAX_JSON_BYTES, TEMPORARY_SUFFIX, inside, read_bounded
from zoo.folder.zoofolder import ZooFolder

URI = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
BLOCK = 1 << 20


def is_uri(location: str | Path) -> bool:
    """True for `scheme://...` other than file://; a local path is never one."""
    match = URI.match(str(location)) if isinstance(location, str) else None
    return match is not None and match.group(1).lower() != "file"


def open_location(location: str | Path, storage_options: dict[str, Any] | None = None
                  ) -> LocalFolder | StorePrefix:
    """The zoo location `location`: a LocalFolder for a path (or file://), a StorePrefix for a
    URI, its filesystem made by fsspec from the URI and `storage_options`."""
    if not is_uri(location):
        text = str(location)
        return LocalFolder(Path(text[len("file://"):] if text.startswith("file://") else text))
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(str(location), **(storage_options or {}))
    except (ImportError, ValueError) as error:
        raise ZooFolderError(f"{location}: no filesystem for this location ({error}); for "
                             f"s3:// install phase-zoo[s3]") from None
    root = root.rstrip("/")
    if not root or "/" not in root and fs.protocol[0] in ("s3", "s3a", "gs", "gcs"):
        raise ZooFolderError(f"{location}: a zoo needs a prefix inside the bucket "
                             f"(s3://bucket/name), not a whole bucket")
    return StorePrefix(str(location).rstrip("/"), fs, root)


def hash_stream(handle: Any) -> str:
    """Hex sha256 of what `handle` reads, 1 MiB at a time."""
    digest = hashlib.sha256()
    for block in iter(lambda: handle.read(BLOCK), b""):
        digest.update(block)
    return digest.hexdigest()


class LocalFolder:
    """A zoo in a local folder, through `ZooFolder`'s confined methods (no symbolic link
    followed, regular files only, atomic writes)."""

    def __init__(self, root: Path) -> None:
        self.folder = ZooFolder(root)
        self.root = self.folder.root
        self.url = str(self.root)

    def name(self, relative: str) -> str:
        """The file's path, for messages."""
        return str(inside(self.root, relative))

    def _exists(self, relative: str) -> bool:
        return self.folder.check(relative).exists()  # a link on the way is refused

    def read_bytes(self, relative: str, what: str, limit: int = MAX_JSON_BYTES) -> bytes | None:
        """The file's bytes (None when missing), refused above `limit` before reading."""
        if not self._exists(relative):
            return None
        return read_bounded(self.folder.check(relative), what, limit)

    def sha256(self, relative: str) -> str | None:
        """The file's sha256, None when missing."""
        if not self._exists(relative):
            return None
        with self.folder.open_read(relative) as handle:
            return hash_stream(handle)

    def get(self, relative: str, local: Path) -> None:
        """Copy the file to the local file `local`."""
        with self.folder.open_read(relative) as source, open(local, "wb") as out:
            shutil.copyfileobj(source, out, BLOCK)

    def put(self, local: Path, relative: str) -> None:
        """Store the local file `local` under `relative`, atomically (a reader sees the old
        file or the whole new one)."""
        self.folder.write(relative, lambda temporary: shutil.copyfile(local, temporary))

    def write_bytes(self, relative: str, data: bytes) -> None:
        """Replace the file with `data`, atomically."""
        self.folder.write(relative, data)

    def listing(self) -> dict[str, int]:
        """Every regular file under the root: relative name -> bytes (a link is refused)."""
        if not self.root.is_dir():
            return {}
        names = []
        for entry in sorted(os.listdir(self.root)):
            path = self.root / entry
            if path.is_dir() and not path.is_symlink():
                names += self.folder.files(entry)
            else:
                self.folder.check(entry)  # a link or a special file is refused
                names.append(entry)
        return {name: (self.root / name).stat().st_size for name in names}


class StorePrefix:
    """A zoo under a prefix of an object store (or any fsspec filesystem)."""

    def __init__(self, url: str, fs: Any, root: str) -> None:
        self.url, self.fs, self.root = url, fs, root

    def key(self, relative: str) -> str:
        """The filesystem key of `relative`, refused unless it is spelled inside the root."""
        parts = inside(Path("/"), relative).parts[1:]
        return "/".join((self.root, *parts))

    def name(self, relative: str) -> str:
        """The object's URI, for messages."""
        return f"{self.url}/{relative}"

    def _size(self, relative: str) -> int | None:
        key = self.key(relative)
        self.fs.invalidate_cache(key)  # another process may have written it since a listing
        try:
            info = self.fs.info(key)
        except FileNotFoundError:
            return None
        if info.get("type") != "file":
            raise ZooFolderError(f"{self.name(relative)}: not an object")
        return int(info["size"])

    def read_bytes(self, relative: str, what: str, limit: int = MAX_JSON_BYTES) -> bytes | None:
        """The object's bytes (None when missing), refused above `limit` before reading."""
        size = self._size(relative)
        if size is None:
            return None
        if size > limit:
            raise ZooFolderError(f"{self.name(relative)}: {size} bytes, more than a {what} may "
                                 f"hold ({limit})")
        data = self.fs.cat_file(self.key(relative))
        if len(data) != size:
            raise ZooFolderError(f"{self.name(relative)}: changed while it was read")
        return data

    def sha256(self, relative: str) -> str | None:
        """The object's sha256 (read through), None when missing."""
        if self._size(relative) is None:
            return None
        with self.fs.open(self.key(relative), "rb") as handle:
            return hash_stream(handle)

    def get(self, relative: str, local: Path) -> None:
        """Download the object to the local file `local`."""
        try:
            self.fs.get_file(self.key(relative), str(local))
        except FileNotFoundError:
            raise IntegrityError(f"{self.name(relative)}: missing") from None

    def put(self, local: Path, relative: str) -> None:
        """Upload the local file `local` as the object (an object store's PUT is atomic)."""
        self.fs.put_file(str(local), self.key(relative))

    def write_bytes(self, relative: str, data: bytes) -> None:
        """Replace the object with `data` in one PUT."""
        self.fs.pipe_file(self.key(relative), data)

    def create(self, relative: str, data: bytes) -> bool:
        """Create the object only if none exists (If-None-Match: *); False when one does."""
        try:
            self.fs.pipe_file(self.key(relative), data, mode="create")
        except FileExistsError:
            return False
        return True

    def etag(self, relative: str) -> str | None:
        """The object's ETag (any write changes it), None when missing."""
        key = self.key(relative)
        self.fs.invalidate_cache(key)
        try:
            info = self.fs.info(key)
        except FileNotFoundError:
            return None
        return str(info.get("ETag") or info.get("etag") or "") or None

    def replace_if(self, relative: str, data: bytes, etag: str) -> bool:
        """Replace the object with `data` in one PUT only while its ETag is `etag` (If-Match):
        of writers racing from the same ETag exactly one succeeds. False when the object has
        changed or is gone; a store without conditional replaces (not S3) is refused."""
        if not hasattr(self.fs, "call_s3"):
            raise ZooFolderError(f"{self.name(relative)}: this store cannot replace an object "
                                 f"conditionally (If-Match); if no writer holds it, delete it")
        bucket, key, _ = self.fs.split_path(self.key(relative))
        try:
            self.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, IfMatch=etag)
        except FileNotFoundError:
            return False
        except OSError as error:  # s3fs: PreconditionFailed (412) as EINVAL
            if error.errno != errno.EINVAL:
                raise
            return False
        finally:
            self.fs.invalidate_cache(self.key(relative))
        return True

    def delete(self, relative: str) -> None:
        """Remove the object if it exists."""
        try:
            self.fs.rm_file(self.key(relative))
        except FileNotFoundError:
            pass

    def listing(self) -> dict[str, int]:
        """Every object under the prefix: relative name -> bytes."""
        return {name: int(info["size"]) for name, info in self._found().items()}

    def versions(self) -> dict[str, str]:
        """Every object under the prefix: relative name -> a token that changes when the object
        does (its size and ETag, or its modification time where the store has no ETag)."""
        tags = ("ETag", "etag", "mtime", "LastModified")
        return {name: f"{info['size']}:" + next((str(info[k]) for k in tags if info.get(k)), "")
                for name, info in self._found().items()}

    def _found(self) -> dict[str, dict[str, Any]]:
        prefix = self.root + "/"
        try:
            found = self.fs.find(self.root, detail=True)
        except FileNotFoundError:
            return {}
        return {key[len(prefix):]: info for key, info in found.items()
                if key.startswith(prefix) and info.get("type") == "file"}


def scratch_name(folder: Path) -> Path:
    """A fresh temporary file name in `folder`, unique across processes."""
    return folder / f"{uuid.uuid4().hex}{TEMPORARY_SUFFIX}"


def objects_of(manifest: Any) -> Iterator[tuple[str, str]]:
    """(relative name, sha256) of every object the manifest covers but itself: shards first,
    then layouts, then documents (zoo.json, README.md), the order a copy writes them in."""
    from zoo.folder.names import LAYOUTS

    for shard in manifest.shards:
        yield shard.path, shard.sha256
    for key, digest in sorted(manifest.layouts.items()):
        yield f"{LAYOUTS}/{key}.json", digest
    yield from sorted(manifest.documents.items())
