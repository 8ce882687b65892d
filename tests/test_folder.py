"""zoo.folder: zoo.json as a typed record, the manifest's format version, models from the record."""

import json
import shutil

import pytest
import torch

from loaders import load_model
from zoo.datasets.base import DataInfo
from zoo.errors import ZooFolderError
from zoo.folder.documents import record_documents
from zoo.folder.names import FORMAT_VERSION, READABLE_VERSIONS, ZOO_JSON
from zoo.folder.reader import ZooReader
from zoo.folder.record import ZooRecord, read_record, write_record

SPEC = {"name": "z", "seeds": [0, 1], "load_axis": {"name": "width", "values": [4]},
        "temperature_axis": {"name": "batch_size", "values": [8]}}


def test_record_round_trips_every_field(tmp_path):
    record = ZooRecord(SPEC, "abc", "f00", {"torch": "2"},
                       DataInfo("classification", (1, 8, 8), 10), {"format": "ray-tune"})
    write_record(tmp_path, record)
    body = json.loads((tmp_path / ZOO_JSON).read_text())
    assert body["format_version"] == FORMAT_VERSION
    assert body["data_info"] == {"task": "classification", "input_shape": [1, 8, 8],
                                 "num_outputs": 10}
    assert read_record(tmp_path) == record
    assert read_record(tmp_path / "absent") is None


def test_record_of_another_format_version_is_refused_naming_the_file(tmp_path):
    record = ZooRecord(SPEC, "abc", "f00", {}, DataInfo("pinn", (2,), 1))
    body = json.loads(record.to_json())
    old = min(READABLE_VERSIONS) - 1
    body["format_version"] = old
    (tmp_path / ZOO_JSON).write_text(json.dumps(body))
    with pytest.raises(ZooFolderError, match=rf"zoo\.json: format version {old} is not supported"):
        read_record(tmp_path)
    del body["data_info"]
    body["format_version"] = FORMAT_VERSION
    (tmp_path / ZOO_JSON).write_text(json.dumps(body))
    with pytest.raises(ZooFolderError, match=r"zoo\.json: not a zoo\.json this version can read .*data_info"):
        read_record(tmp_path)


def test_generated_record_holds_the_data_shape_facts(tiny_zoo):
    record = ZooReader(tiny_zoo).record
    assert record.data_info == DataInfo("classification", (40,), 10)
    assert record.spec["name"] == "tiny" and record.imported_from is None


def test_load_model_needs_only_the_zoo_folder_not_the_data(tiny_zoo, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_zoo, copy)
    body = json.loads((copy / ZOO_JSON).read_text())
    body["spec"]["data"] = {"name": "no-such-data-set", "root": str(tmp_path / "gone")}
    (copy / ZOO_JSON).write_text(json.dumps(body))
    record_documents(copy, (ZOO_JSON,))  # as a hostile writer would: the manifest agrees
    row = ZooReader(tiny_zoo).table("models", columns=["model_id", "epoch"]).to_pylist()[0]
    original = load_model(tiny_zoo, row["model_id"], row["epoch"])
    copied = load_model(copy, row["model_id"], row["epoch"])
    for (name, a), (_, b) in zip(original.state_dict().items(), copied.state_dict().items()):
        assert torch.equal(a, b), name
