import copy

import pytest

from tests.conftest import TINY_SPEC, write_spec
from zoo.errors import SpecError
from zoo.spec import short_hash
from zoo.specfile import builtin_specs, load_spec, parse_spec


def _spec(**changes):
    body = copy.deepcopy(TINY_SPEC)
    body.update(changes)
    return body


def test_tiny_spec_parses_and_expands_into_cells_and_seeds():
    spec = parse_spec(_spec())
    jobs = spec.jobs("fingerprint")
    assert len(spec.cells()) == 4 and len(jobs) == 8
    assert [c.width for c in spec.cells()] == [4, 4, 8, 8]
    assert [c.batch_size for c in spec.cells()] == [128, 512, 128, 512]
    assert spec.checkpoint_epochs == (0, 1, 2)
    assert spec.metrics.epochs == (2,)
    assert len({j.model_id for j in jobs}) == 8 and len({j.cell_id for j in jobs}) == 4


def test_ids_are_stable_and_depend_on_what_defines_the_model():
    first = parse_spec(_spec()).jobs("fp")
    again = parse_spec(_spec()).jobs("fp")
    assert [j.model_id for j in first] == [j.model_id for j in again]
    assert first[0].model_id == short_hash({**parse_spec(_spec()).cell_identity(
        first[0].cell, "fp"), "seed": 0})
    other_data = parse_spec(_spec()).jobs("other fingerprint")
    assert first[0].model_id != other_data[0].model_id
    # checkpoints and metric settings do not change what a model is
    fewer = parse_spec(_spec(checkpoints={"every": 2})).jobs("fp")
    assert [j.model_id for j in fewer] == [j.model_id for j in first]
    # a grown zoo keeps the ids of the models it already had
    grown = parse_spec(_spec(seeds=[0, 1, 2])).jobs("fp")
    assert {j.model_id for j in first} <= {j.model_id for j in grown}


def test_checkpoint_and_metric_epochs():
    spec = parse_spec(_spec(training={"epochs": 12}, checkpoints={"every": 5, "epochs": [7]},
                            metrics={"epochs": [3, "last"]}))
    assert spec.checkpoint_epochs == (0, 5, 7, 10, 12)
    assert spec.metrics.epochs == (3, 12)


def test_model_dim_axis_sets_width():
    spec = parse_spec(_spec(grid={"load": {"axis": "model_dim", "values": [16, 32]},
                                  "temperature": {"axis": "learning_rate", "values": [0.1]}}))
    assert [c.width for c in spec.cells()] == [16, 32]
    assert [c.learning_rate for c in spec.cells()] == [0.1, 0.1]


@pytest.mark.parametrize("changes, message", [
    ({"trainig": {}}, r"trainig: unknown field; allowed fields"),
    ({"name": "bad name!"}, r"name: 'bad name!' is not allowed"),
    ({"training": {"epochs": 0}}, r"training.epochs: 0 is not allowed; expected an integer >= 1"),
    ({"training": {"epochs": 2.5}}, r"training.epochs: 2.5 is not allowed; expected an integer"),
    ({"training": {"optimizer": "lbfgs"}}, r"training.optimizer: 'lbfgs' is not allowed; "
                                           r"expected one of sgd, adam, adamw"),
    ({"training": {"schedule": "step"}}, r"training.schedule: 'step' is not allowed"),
    ({"training": {"augmentation": "mixup"}}, r"training.augmentation: 'mixup'"),
    ({"training": {"learning_rate": 0.0}}, r"training.learning_rate: 0.0 is not allowed"),
    ({"training": {"momentum": -1.0}}, r"training.momentum: -1.0 is not allowed"),
    ({"grid": {"load": {"axis": "depth", "values": [1]},
               "temperature": {"axis": "batch_size", "values": [8]}}},
     r"grid.load.axis: 'depth' is not allowed; expected one of width, model_dim"),
    ({"grid": {"load": {"axis": "width", "values": [4]},
               "temperature": {"axis": "width", "values": [8]}}},
     r"grid.temperature.axis: 'width' is not allowed"),
    ({"grid": {"load": {"axis": "width", "values": []},
               "temperature": {"axis": "batch_size", "values": [8]}}},
     r"grid.load.values: \[\] is not allowed; expected a non-empty list"),
    ({"grid": {"load": {"axis": "width", "values": [4, 4]},
               "temperature": {"axis": "batch_size", "values": [8]}}},
     r"grid.load.values: \[4, 4\] is not allowed; expected distinct values"),
    ({"grid": {"load": {"axis": "data_fraction", "values": [0.5, 1.5]},
               "temperature": {"axis": "batch_size", "values": [8]}}},
     r"grid.load.values\[1\]: 1.5 is not allowed; expected a number > 0.0 and <= 1.0"),
    ({"grid": {"load": {"axis": "width", "values": [4]}}},
     r"grid.temperature: missing"),
    ({"seeds": [0, 0]}, r"seeds: \[0, 0\] is not allowed; expected distinct seeds"),
    ({"seeds": []}, r"seeds: \[\] is not allowed"),
    ({"seeds": [-1]}, r"seeds\[0\]: -1 is not allowed"),
    ({"checkpoints": {"every": 0}}, r"checkpoints.every: 0 is not allowed"),
    ({"checkpoints": {"epochs": [9]}}, r"checkpoints.epochs\[0\]: 9 is not allowed; "
                                       r"expected an integer >= 0 and <= 2"),
    ({"metrics": {"epochs": [5]}}, r"metrics.epochs\[0\]: 5 is not allowed"),
    ({"metrics": {"epochs": []}}, r"metrics.epochs: \[\] is not allowed; expected at least "
                                  r"one epoch"),
    ({"metrics": {"curve": {"points": 2}}}, r"metrics.curve.points: 2 is not allowed"),
    ({"metrics": {"curve": {"steps": 0}}}, r"metrics.curve.steps: 0 is not allowed; expected "
                                           r"an integer >= 1"),
    ({"metrics": {"curve": {"steps": 1.5}}}, r"metrics.curve.steps: 1.5 is not allowed"),
    ({"metrics": {"curve": {"bn_samples": 0}}}, r"metrics.curve.bn_samples: 0 is not allowed"),
    ({"metrics": {"curve": {"tolerance": 0.0}}}, r"metrics.curve.tolerance: 0.0 is not allowed; "
                                                 r"expected a number > 0"),
    ({"metrics": {"curve": {"tolerance": "1"}}}, r"metrics.curve.tolerance: '1' is not allowed"),
    ({"metrics": {"curve": {"max_rounds": 0}}}, r"metrics.curve.max_rounds: 0 is not allowed"),
    ({"metrics": {"curve": {"epochs": 0}}}, r"metrics.curve.epochs: 0 is not allowed"),
    ({"metrics": {"similarity": {"mixup_alpha": 0.0}}},
     r"metrics.similarity.mixup_alpha: 0.0 is not allowed; expected a number > 0"),
    ({"metrics": {"spectra_min_eigenvalues": 1}},
     r"metrics.spectra_min_eigenvalues: 1 is not allowed; expected an integer >= 2"),
    ({"metrics": {"hessian": {"enabled": "yes"}}}, r"metrics.hessian.enabled: 'yes' is not"),
    ({"metrics": {"hessian": {"probes": 3}}}, r"metrics.hessian.probes: unknown field"),
    ({"metrics": {"hessian": {"micro_batch_size": 0}}},
     r"metrics.hessian.micro_batch_size: 0 is not allowed"),
    ({"metrics": {"hessian": {"vector_memory_gb": -1.0}}},
     r"metrics.hessian.vector_memory_gb: -1.0 is not allowed; expected a number >= 0"),
    ({"metrics": {"hessian": {"vector_memory_gb": "8"}}},
     r"metrics.hessian.vector_memory_gb: '8' is not allowed"),
    ({"phases": {"mc": -1.0}}, r"phases.mc: -1.0 is not allowed"),
    ({"phases": {"loss": 1.0}}, r"phases.loss: unknown field"),
    ({"data": {"name": "mnist1d", "fraction": 0.0}}, r"data.fraction: 0.0 is not allowed"),
    ({"data": {"name": "mnist1d", "root": 3}}, r"data.root: 3 is not allowed"),
    ({"architecture": {"family": "mlp", "width": 0}}, r"architecture.width: 0 is not allowed"),
])
def test_every_bad_field_is_named(changes, message):
    with pytest.raises(SpecError, match=message):
        parse_spec(_spec(**changes))


def test_missing_required_section_is_named():
    body = _spec()
    del body["grid"]
    with pytest.raises(SpecError, match="grid: missing"):
        parse_spec(body)


def test_registries_are_checked_when_loading(tmp_path):
    path = write_spec(tmp_path, architecture={"family": "lstm"})
    with pytest.raises(SpecError, match="architecture.family: 'lstm' is not allowed"):
        load_spec(path)
    path = write_spec(tmp_path, data={"name": "imagenet"})
    with pytest.raises(SpecError, match="data.name: 'imagenet'"):
        load_spec(path)


def test_unknown_spec_name_lists_the_built_ins(tmp_path):
    with pytest.raises(SpecError, match="neither a file nor a built-in spec; built-in specs: .*demo"):
        load_spec("no-such-spec")
    with pytest.raises(SpecError, match=r"^spec: 'pinn-convection' was renamed; use "
                                        r"'pinn-convection-700'$"):
        load_spec("pinn-convection")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)


def test_every_built_in_spec_loads():
    names = builtin_specs()
    assert "demo" in names
    for name in names:
        spec = load_spec(name)
        assert spec.name == name
        assert spec.jobs("fp")


def test_resolved_spec_round_trips_through_its_dict():
    from zoo.specfile import spec_from_dict

    spec = parse_spec(_spec(training={"epochs": 7}, checkpoints={"every": 3},
                            metrics={"epochs": [2, "last"]}, phases={"mc": 1.5}))
    assert spec_from_dict(spec.to_dict()) == spec
    edited = spec.to_dict()
    edited["checkpoint_epochs"] = [1, 7]
    with pytest.raises(SpecError, match="does not round-trip"):
        spec_from_dict(edited)


def test_curve_defaults_follow_the_published_recipe():
    spec = parse_spec(_spec(metrics={"epochs": ["last"]}))
    curve = spec.metrics.curve
    assert (curve.steps, curve.epochs, curve.tolerance, curve.max_rounds, curve.bn_samples) == (
        None, 10, None, 4, None)  # rounds of 10 epochs; tolerance from the task; all train
    assert spec.metrics.spectra_min_eigenvalues == 50
    assert (spec.metrics.similarity.mixup_batches, spec.metrics.similarity.mixup_alpha) == (
        6, 16.0)
    set_ = parse_spec(_spec(metrics={"curve": {"steps": 9, "tolerance": 2, "bn_samples": 64}}))
    assert (set_.metrics.curve.steps, set_.metrics.curve.tolerance) == (9, 2.0)
    assert set_.metrics.curve.bn_samples == 64


def test_precision_is_part_of_the_id_only_when_not_default_and_graphs_never():
    base = parse_spec(_spec()).jobs("fp")
    fp32 = parse_spec(_spec(training={**TINY_SPEC["training"], "precision": "fp32"})).jobs("fp")
    bf16 = parse_spec(_spec(training={**TINY_SPEC["training"], "precision": "bf16"})).jobs("fp")
    never = parse_spec(_spec(training={**TINY_SPEC["training"], "graphs": "never"})).jobs("fp")
    assert [j.model_id for j in fp32] == [j.model_id for j in base]
    assert [j.model_id for j in never] == [j.model_id for j in base]
    assert not {j.model_id for j in bf16} & {j.model_id for j in base}
    identity = parse_spec(_spec()).cell_identity(base[0].cell, "fp")
    assert "precision" not in identity["recipe"] and "graphs" not in identity["recipe"]


@pytest.mark.parametrize("field, value, allowed", [
    ("precision", "fp16", "fp32, bf16"), ("graphs", "always", "auto, never")])
def test_precision_and_graphs_are_checked(field, value, allowed):
    with pytest.raises(SpecError, match=rf"training.{field}: '{value}' is not allowed; "
                                        rf"expected one of {allowed}"):
        parse_spec(_spec(training={**TINY_SPEC["training"], field: value}))


def test_specs_from_before_graphs_and_precision_keep_their_hash_and_round_trip():
    from zoo.specfile import spec_from_dict

    spec = parse_spec(_spec())
    body = spec.to_dict()
    assert "graphs" not in body["training"] and "precision" not in body["training"]
    assert spec_from_dict(body) == spec  # a zoo.json written before the fields existed
    bf16 = parse_spec(_spec(training={**TINY_SPEC["training"], "precision": "bf16"}))
    assert bf16.to_dict()["training"]["precision"] == "bf16"
    assert spec_from_dict(bf16.to_dict()) == bf16 and bf16.spec_hash() != spec.spec_hash()


def test_the_hessian_vector_budget_is_left_out_of_the_hash_at_its_default():
    """Zoos written before metrics.hessian.vector_memory_gb keep their spec hash; another
    budget is recorded (it may change results by float rounding) but leaves model ids alone."""
    import json
    from pathlib import Path

    from zoo.specfile import spec_from_dict

    spec = parse_spec(_spec())
    assert spec.metrics.hessian.vector_memory_gb == 8.0
    assert "vector_memory_gb" not in spec.to_dict()["metrics"]["hessian"]
    small = parse_spec(_spec(metrics={**TINY_SPEC.get("metrics", {}),
                                      "hessian": {"vector_memory_gb": 2}}))
    assert small.metrics.hessian.vector_memory_gb == 2.0
    assert small.to_dict()["metrics"]["hessian"]["vector_memory_gb"] == 2.0
    assert spec_from_dict(small.to_dict()) == small and small.spec_hash() != spec.spec_hash()
    assert small.jobs("fp") == spec.jobs("fp")
    for fixture in ("zoo-format3", "zoo-format4"):
        body = json.loads((Path(__file__).parent / "fixtures" / fixture / "zoo.json").read_text())
        assert spec_from_dict(body["spec"]).spec_hash() == body["spec_hash"]
