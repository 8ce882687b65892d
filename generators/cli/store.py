"""Commands that move a zoo between locations (local folders, s3:// and other URIs): `sync`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `sync` command."""
    sync = sub.add_parser(
        "sync", help="copy a zoo between two locations (folders, s3://bucket/prefix), verified",
        description="Copy every object the source's manifest lists, each checked against its "
                    "sha256, then the manifest last: a reader of DST sees the old zoo or the "
                    "whole new one, and a rerun skips what is already there. Credentials and "
                    "endpoints come from the environment (AWS_* variables, AWS_ENDPOINT_URL).")
    sync.add_argument("src", metavar="SRC", help="zoo location to copy from")
    sync.add_argument("dst", metavar="DST", help="location to copy to")
    sync.set_defaults(run=cmd_sync)


def cmd_sync(args: argparse.Namespace) -> int:
    from zoo.folder.sync import sync

    report = sync(args.src, args.dst)
    print(f"{args.dst}: {report.copied} objects copied ({report.bytes / 1e6:.2f} MB), "
          f"{report.skipped} already there, manifest written last")
    return 0
