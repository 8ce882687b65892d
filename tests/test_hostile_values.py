"""Hostile values: repeated YAML keys, booleans for integers, paths no system opens, and
terminal control sequences. Each is refused in one line naming the field or file, or printed
escaped; none is read as something else (YAML's last-key-wins, True as epoch 1)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import yaml

from tests.conftest import TINY_SPEC
from tests.test_hostile_specs import _refused
from zoo.printable import printable
from zoo.specfile import read_yaml

TINY = yaml.safe_dump(TINY_SPEC, sort_keys=False)

# (spec text, message): a key given twice is refused naming the file, line and key
REPEATED_KEYS = [
    (TINY + "seeds: [7]\n", r"spec\.yaml: line \d+: 'seeds' appears twice in one mapping"),
    (TINY.replace("  epochs: 2\n", "  epochs: 2\n  epochs: 50\n"),
     r"spec\.yaml: line \d+: 'epochs' appears twice in one mapping; expected each key once"),
    (TINY.replace("name: tiny\n", "name: tiny\nname: other\n"),
     r"spec\.yaml: line 2: 'name' appears twice"),
    (TINY + "phases: {mc: 0.1, mc: 0.9}\n", r"spec\.yaml: line \d+: 'mc' appears twice"),
    (TINY + "phases: {1: 0.1, 1.0: 0.9}\n", r"spec\.yaml: line \d+: 1\.0 appears twice"),
]


@pytest.mark.parametrize("text, message", REPEATED_KEYS,
                         ids=[f"repeated-{i}" for i in range(len(REPEATED_KEYS))])
def test_a_key_given_twice_is_refused_naming_the_line(tmp_path, capsys, text, message):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    _refused(capsys, path, tmp_path / "out", message)


def test_merge_keys_and_distinct_keys_still_read():
    text = "base: &b {k: 1, j: 2}\nover:\n  <<: *b\n  k: 3\n1: a\n'1': b\n"
    assert read_yaml(text, "s.yaml") == {"base": {"k": 1, "j": 2}, "over": {"k": 3, "j": 2},
                                         1: "a", "1": "b"}


LONG = "a" * 5000

# (changes to the spec's data section, extra CLI arguments, message): one line, exit 2
ROOTS = [
    ({"name": "cifar10", "root": LONG}, [],
     r"^zoo: error: data\.root: 'aaa.*\.\.\. is not allowed; expected a folder path of at most "
     r"4096 characters, each name at most 255 bytes$"),
    ({"name": "mnist1d", "root": LONG}, [], r"^zoo: error: data\.root: 'aaa.*\.\.\. is not "),
    ({"name": "cifar10", "root": "/tmp/" + "b" * 300 + "/x"}, [],
     r"^zoo: error: data\.root: '/tmp/bbb.*\.\.\. is not allowed; .*each name at most 255"),
    ({"name": "cifar10", "root": "/tmp/a\0b"}, [], r"^zoo: error: data\.root: '/tmp/a\\x00b' is"),
    ({"name": "cifar10"}, ["--data-root", LONG], r"^zoo: error: data\.root: 'aaa.*\.\.\. is not"),
    ({"name": "mnist1d"}, ["--data-root", "/tmp/" + "c" * 3000],
     r"^zoo: error: data\.root: '/tmp/ccc.*\.\.\. is not allowed"),
]


@pytest.mark.parametrize("data, extra, message", ROOTS, ids=[f"root-{i}" for i in range(len(ROOTS))])
def test_a_data_root_no_system_opens_is_refused_in_one_line(tmp_path, capsys, monkeypatch, data,
                                                            extra, message):
    from generators.cli import main

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**TINY_SPEC, "data": data}))
    code = main(["generate", str(path), "--out", str(tmp_path / "out"), "--dry-run", *extra])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and len(lines[0]) < 400, err
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("epochs", [[True], [False, 1], True, [np.True_], [1.0], "1", [None]],
                         ids=["true", "false-and-1", "bare-true", "numpy-true", "float", "string",
                              "none"])
def test_epochs_that_are_not_integers_are_refused(tiny_zoo, epochs):
    from loaders import ZooDataset

    with pytest.raises(ValueError, match=r"^epochs: .* is not allowed; expected 'last', 'all' or "
                                         r"a list of integers$"):
        ZooDataset(tiny_zoo, split="all", epochs=epochs)


def test_integer_epochs_of_numpy_still_select_rows(tiny_zoo):
    from loaders import ZooDataset

    plain = ZooDataset(tiny_zoo, split="all", epochs=[1])
    assert len(ZooDataset(tiny_zoo, split="all", epochs=[np.int64(1)])) == len(plain) == 8


@pytest.mark.parametrize("text, shown", [
    ("a\x1b[31mred", r"a\x1b[31mred"),
    ("title\x1b]0;pwned\x07", r"title\x1b]0;pwned\x07"),
    ("back\x08\x08xx", r"back\x08\x08xx"),
    ("two\nlines\r", r"two\nlines\r"),
    ("csi\x9b2J", r"csi\x9b2J"),
    ("abc\u202edcb", r"abc\u202edcb"),
    ("zero\u200bwidth\ufeff", r"zero\u200bwidth\ufeff"),
    ("plain é ü 模型 tab\tend", "plain é ü 模型 tab\\tend"),
], ids=["colour", "title", "backspace", "newline", "c1-csi", "bidi", "zero-width", "plain"])
def test_printable_escapes_every_control_character(text, shown):
    assert printable(text) == shown


def test_printable_keeps_the_lines_of_a_table_only_when_asked():
    assert printable("a\nb\x1b", lines=True) == "a\nb\\x1b"
    assert printable(3.5) == "3.5"


ESCAPE = "\x1b]0;pwned\x07\x1b[2J"


def test_info_escapes_control_characters_from_zoo_json_and_the_cells(zoo, capsys):  # noqa: F811
    import pyarrow as pa
    import pyarrow.parquet as pq

    from generators.cli import main
    from tests.test_hostile_folders import edit_json, reseal
    from zoo.folder.writer import write_parquet

    edit_json(zoo / "zoo.json", lambda body: body["spec"].__setitem__("name", ESCAPE))
    for shard in (zoo / "data" / "cells").glob("*.parquet"):
        table = pq.read_table(shard)
        for column in ("phase", "load_axis"):
            index = table.column_names.index(column)
            table = table.set_column(index, column, pa.array([ESCAPE] * table.num_rows))
        write_parquet(table, shard)
    reseal(zoo)
    assert main(["info", str(zoo)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert out.startswith("zoo \\x1b]0;pwned\\x07\\x1b[2J in ")
    assert out.count("\\x1b]0;pwned") >= 1 + 1 + 4  # the name, the header, every cell's phase


def test_errors_escape_control_characters_in_one_line(tmp_path, capsys):
    from generators.cli import main

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**TINY_SPEC, "data": {"name": ESCAPE}}))
    assert main(["generate", str(path), "--dry-run", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and len(err.strip().splitlines()) == 1
    assert "data.name: '\\x1b]0;pwned\\x07\\x1b[2J' is not a known data set" in err
