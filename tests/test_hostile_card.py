"""Hostile dataset cards: README.md written so that the project's own reading of `configs:`
and Hugging Face's differ (CRLF, a leading newline, a byte-order mark, a line starting `---`
inside the front matter), or naming files through fields other than data_files' paths
(data_dir, URLs, a standalone .huggingface.yaml). Each card is checked first with Hugging
Face's own parsers (huggingface_hub's DatasetCard, datasets' MetadataConfigs) to show that
`load_dataset` would read outside the folder; the project's readers and `zoo verify` must
refuse it, naming README.md."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

import pytest
import yaml

from tests.test_hostile_folders import reseal, verify_outcome
from zoo.errors import ZooFolderError
from zoo.folder.reader import ZooReader

OUTSIDE = "../outside/*.parquet"


def first_path(text: str) -> str:
    return re.search(r"\n    - (data/models/\S+)", text).group(1)


def outside_path(text: str, target: str = OUTSIDE) -> str:
    return text.replace(first_path(text), target, 1)


def front_matter_line(line: str) -> Callable[[str], str]:
    """Insert `line` right after the card's first front-matter line, then name OUTSIDE."""
    def change(text: str) -> str:
        first_end = text.index("\n", 4) + 1
        return outside_path(text[:first_end] + line + "\n" + text[first_end:])
    return change


def models_config(extra: str, drop_files: bool = False) -> Callable[[str], str]:
    """Add `extra` (YAML lines, 2-space indented) to the models config."""
    def change(text: str) -> str:
        start = text.index("- config_name: models\n") + len("- config_name: models\n")
        if drop_files:
            end = text.index("- config_name: cells")
            return text[:start] + extra + text[end:]
        return text[:start] + extra + text[start:]
    return change


def crlf(text: str) -> str:
    return outside_path(text).replace("\n", "\r\n")


# (id, change of README.md's text, what HF's parser reads, message of the refusal)
CASES = [
    ("crlf", crlf, OUTSIDE, "'../outside/\\*.parquet', which is not a shard"),
    ("leading-newline", lambda t: "\n" + outside_path(t), OUTSIDE, "which is not a shard"),
    ("leading-blank-lines", lambda t: " \n\t\n" + outside_path(t), OUTSIDE,
     "which is not a shard"),
    ("byte-order-mark", lambda t: "\ufeff" + outside_path(t), OUTSIDE, "which is not a shard"),
    ("dash-line-in-front-matter", front_matter_line("---x: 1"), OUTSIDE,
     "which is not a shard"),
    ("data-dir-outside", models_config("  data_dir: ../outside\n"), "../outside",
     "config 'models' sets 'data_dir'; a zoo's card sets only config_name, default, "
     "data_files"),
    ("data-dir-instead-of-files", models_config("  data_dir: ../outside\n", drop_files=True),
     "../outside", "config 'models' sets 'data_dir'"),
    ("url-data-file", lambda t: outside_path(t, "https://example.com/evil.parquet"),
     "https://example.com/evil.parquet", "'https://example.com/evil.parquet', which is not"),
    ("hf-url-data-file", lambda t: outside_path(t, "hf://datasets/x/y/evil.parquet"),
     "hf://datasets/x/y/evil.parquet", "which is not a shard"),
    ("absolute-data-file", lambda t: outside_path(t, "/etc/hostname"), "/etc/hostname",
     "'/etc/hostname', which is not a shard"),
    ("glob-inside", lambda t: outside_path(t, "data/*/*.parquet"), "data/*/*.parquet",
     "'data/\\*/\\*.parquet', which is not a shard"),
    ("features-in-config", models_config("  features: []\n"), None,
     "config 'models' sets 'features'"),
    ("data-files-mapping", models_config("  data_files: {train: ../outside/x.parquet}\n",
                                         drop_files=True), None,
     "config 'models' has data_files of a form datasets does not read"),
    ("path-not-a-string", lambda t: t.replace(first_path(t), "{a: 1}", 1), None,
     "has data_files of a form datasets does not read"),
    ("front-matter-a-list", lambda t: "---\n- 1\n---\n", None, "front matter is a list"),
    ("configs-not-a-list", lambda t: "---\nconfigs: ../outside\n---\n", None,
     "configs is not a list of mappings"),
    ("alias-bomb", lambda t: "---\n" + "\n".join(
        ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
        + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]) + "\n---\n",
     None, "front matter is not a dataset card this version reads .*more than 100000 values"),
    ("escape-in-path", lambda t: outside_path(t, '"\\e]0;pwned\\a.parquet"'),
     "\x1b]0;pwned\x07.parquet",
     r"'\\x1b\]0;pwned\\x07\.parquet', which is not a shard"),
]


def hf_reads(text: str) -> list[str]:
    """Every data file and data_dir Hugging Face's own parsers take from this card's text."""
    from datasets.data_files import sanitize_patterns
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard

    configs = MetadataConfigs.from_dataset_card_data(DatasetCard(text).data)
    out = []
    for params in configs.values():
        out += [params["data_dir"]] if "data_dir" in params else []
        if params.get("data_files") is not None:
            for paths in sanitize_patterns(params["data_files"]).values():
                out += paths
    return out


def tamper(root: Path, change: Callable[[str], str]) -> Path:
    path = root / "README.md"
    text = path.read_text()
    path.write_bytes(change(text).encode("utf-8"))
    reseal(root)
    return path


@pytest.mark.parametrize("change, hf_path, message", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_a_card_hugging_face_reads_differently_is_refused(zoo, capsys, change, hf_path,  # noqa: F811
                                                          message):
    readme = tamper(zoo, change)
    if hf_path is not None:  # the attack is real: Hugging Face's own parsers read it
        text = readme.read_bytes().decode("utf-8-sig")
        assert hf_path in hf_reads(text)
    with pytest.raises(ZooFolderError, match=message) as caught:
        ZooReader(zoo)
    assert str(caught.value).startswith(f"{readme}: ")
    assert "\n" not in str(caught.value) and "\x1b" not in str(caught.value)
    code, err, _ = verify_outcome(zoo, capsys)
    assert code == 1 and re.search(message, err) and str(readme) in err, err


def test_a_standalone_huggingface_yaml_is_refused(zoo, capsys):  # noqa: F811
    extra = zoo / ".huggingface.yaml"
    extra.write_text(yaml.safe_dump({"configs": [{"config_name": "models",
                                                  "data_files": OUTSIDE}]}))
    with pytest.raises(ZooFolderError, match=r"datasets merges it into the card's configs"):
        ZooReader(zoo)
    code, err, _ = verify_outcome(zoo, capsys)
    assert code == 1 and f"{extra}: datasets merges it" in err, err


def test_the_written_card_reads_the_same_for_hugging_face_and_the_project(zoo):  # noqa: F811
    from zoo.folder.documents import readme_files

    text = (zoo / "README.md").read_text()
    shards = {s.path for s in ZooReader(zoo).manifest.shards}
    ours = [file for _, file in readme_files(zoo / "README.md")]
    assert sorted(ours) == sorted(hf_reads(text)) and set(ours) <= shards | {"layouts.parquet"}
    assert len(ours) == len(set(ours)) > 0


@pytest.mark.parametrize("change", [crlf, lambda t: "\n" + t.replace("\n", "\r\n")],
                         ids=["crlf-outside", "crlf-untouched"])
def test_line_endings_never_hide_configs(zoo, change):  # noqa: F811
    from zoo.folder.documents import readme_files

    readme = tamper(zoo, change)
    assert readme_files(readme)  # the configs are found whatever the line endings


def test_a_layouts_config_names_only_the_listed_layouts_table(zoo, capsys):  # noqa: F811
    layout = sorted((zoo / "layouts").iterdir())[0].relative_to(zoo).as_posix()  # listed, JSON
    readme = tamper(zoo, lambda t: t.replace("    - layouts.parquet", f"    - {layout}", 1))
    assert layout in hf_reads(readme.read_text())
    with pytest.raises(ZooFolderError, match=f"config 'layouts' names '{layout}', which is "
                                             f"not a shard"):
        ZooReader(zoo)
    code, err, _ = verify_outcome(zoo, capsys)
    assert code == 1 and "which is not a shard" in err, err


def test_a_layouts_table_the_manifest_does_not_cover_is_refused(zoo):  # noqa: F811
    manifest = zoo / "manifest.json"
    body = json.loads(manifest.read_text())
    del body["documents"]["layouts.parquet"]
    manifest.write_text(json.dumps(body))
    with pytest.raises(ZooFolderError, match="layouts.parquet: not covered by the manifest"):
        ZooReader(zoo)


def test_a_changed_layouts_table_is_refused(zoo):  # noqa: F811
    table = zoo / "layouts.parquet"
    table.write_bytes(table.read_bytes() + b"\0")
    with pytest.raises(ZooFolderError, match="layouts.parquet: sha256 does not match"):
        ZooReader(zoo)
