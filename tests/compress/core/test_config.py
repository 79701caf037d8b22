from pathlib import Path

import pytest

from compress.core.config import DEFAULT_CONFIG, RunConfig, load_config
from compress.core.errors import UserError
from compress.core.hashing import stable_hash

CONFIGS = sorted((Path(__file__).parents[3] / "configs").glob("*.yaml"))


def test_demo_yaml_is_the_embedded_default():
    assert load_config(Path(__file__).parents[3] / "configs" / "demo.yaml") == DEFAULT_CONFIG


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_file_validates(path):
    cfg = load_config(path)
    assert RunConfig.model_validate(cfg.model_dump()) == cfg and cfg.students  # a run with something to compare


def test_configs_folder_is_not_empty():
    assert CONFIGS


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_unknown_key_names_the_key_and_file(tmp_path):
    path = write(tmp_path, "name: x\nstudents:\n  - name: s\n    distill: {tempreature: 2}\n")
    with pytest.raises(UserError) as err:
        load_config(path)
    line = err.value.line()
    assert "unknown key 'students.0.distill.tempreature'" in line and str(path) in line and "\n" not in line
    assert err.value.fix == "did you mean 'temperature'?"


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_a_non_finite_number_is_refused(tmp_path, value):
    # An infinite temperature would train on NaN losses from the first step and still write a report.
    path = write(tmp_path, f"students: [{{name: s, distill: {{temperature: {value}}}}}]\n")
    with pytest.raises(UserError, match="students.0.distill.temperature': Input should be a finite number"):
        load_config(path)


def test_wrong_type_names_the_key_and_value(tmp_path):
    with pytest.raises(UserError) as err:
        load_config(write(tmp_path, "teacher:\n  train:\n    epochs: three\n"))
    assert "teacher.train.epochs" in err.value.line() and "'three'" in err.value.line()


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_bad_yaml_names_the_line(tmp_path):
    with pytest.raises(UserError) as err:
        load_config(write(tmp_path, "name: x\nteacher: [unclosed\n"))
    assert "not valid YAML" in err.value.line() and "run.yaml:" in err.value.line()


def test_top_level_must_be_a_mapping(tmp_path):
    with pytest.raises(UserError, match="mapping"):
        load_config(write(tmp_path, "- just\n- a list\n"))


def test_duplicate_student_names_rejected(tmp_path):
    with pytest.raises(UserError, match="unique"):
        load_config(write(tmp_path, "students: [{name: s}, {name: s}]\n"))


def test_bad_layer_list_rejected(tmp_path):
    with pytest.raises(UserError, match="distinct"):
        load_config(write(tmp_path, "students: [{name: s, layers: [1, 1]}]\n"))


def test_unknown_source_kind_rejected(tmp_path):
    with pytest.raises(UserError, match="data.source"):
        load_config(write(tmp_path, "data: {source: {kind: ftp}}\n"))


def test_config_is_frozen():
    with pytest.raises(Exception):
        DEFAULT_CONFIG.seed = 3


def test_how_often_training_checkpoints_leaves_the_stage_hashes_alone():
    from compress.core.config import TrainConfig

    assert stable_hash(TrainConfig(checkpoint_every=0)) == stable_hash(TrainConfig())
    assert stable_hash({"students": [TrainConfig(checkpoint_every=3).model_dump()]}) == \
        stable_hash({"students": [TrainConfig().model_dump()]})
    assert stable_hash(TrainConfig(group_by_length=True)) != stable_hash(TrainConfig())


def test_stable_hash_changes_with_config_only():
    other = DEFAULT_CONFIG.model_copy(update={"seed": 1})
    assert stable_hash(DEFAULT_CONFIG) == stable_hash(RunConfig.model_validate(DEFAULT_CONFIG.model_dump()))
    assert stable_hash(DEFAULT_CONFIG) != stable_hash(other)


@pytest.mark.parametrize("students", ["[{name: teacher}]", "[{name: s}, {name: s-baseline}]"])
def test_generated_model_names_must_not_collide(tmp_path, students):
    with pytest.raises(UserError, match="model names must be unique"):
        load_config(write(tmp_path, f"students: {students}\n"))


def test_union_tag_is_not_in_the_key_path(tmp_path):
    with pytest.raises(UserError) as err:
        load_config(write(tmp_path, "data: {source: {kind: local, train: x.csv, colour: red}}\n"))
    assert "'data.source.colour'" in err.value.line()


def test_non_utf8_config_is_a_user_error(tmp_path):
    path = tmp_path / "latin.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(UserError, match="cannot read the config"):
        load_config(path)


def test_student_kinds_and_their_defaults(tmp_path):
    cfg = load_config(write(tmp_path, "students:\n  - {name: a}\n  - {name: b, kind: custom_transformer}\n"
                                      "  - {name: c, kind: bilstm}\n  - {name: d, kind: checkpoint, model: some/id}\n"))
    assert [s.kind for s in cfg.students] == ["layer_dropped", "custom_transformer", "bilstm", "checkpoint"]
    # Students trained from scratch default to more epochs and a higher learning rate than copies of the teacher.
    assert cfg.students[1].train.learning_rate > cfg.students[0].train.learning_rate


@pytest.mark.parametrize("student, fragment", [
    ("{name: b, kind: custom_transformer, hidden_size: 30, num_heads: 4}", "multiple of num_heads"),
    ("{name: b, kind: bilstm, hidden_size: 64, heads: 2}", "unknown key 'students.0.heads'"),
    ("{name: b, kind: bilstm, hidden_size: wide}", "key 'students.0.hidden_size'"),
    ("{name: b, kind: lstm}", "'lstm'"),
    ("{name: d, kind: checkpoint}", "students.0.model"),
    ("{name: s, distill: {method: fancy}}", "students.0.distill.method"),
    ("{name: b, kind: bilstm, distill: {method: progressive}}", "needs a transformer student"),
    ("{name: small.old}", "'small.old' ends like the run's temporary folders"),  # a resumed run would delete it
])
def test_bad_student_settings_name_the_key(tmp_path, student, fragment):
    with pytest.raises(UserError) as err:
        load_config(write(tmp_path, f"students: [{student}]\n"))
    assert fragment in err.value.line() and "\n" not in err.value.line()


@pytest.mark.parametrize("compress, fragment", [
    ("prune: [{name: p, model: s, kind: structured, head_ratio: 1.0}]", "key 'prune.0.head_ratio'"),
    ("prune: [{name: p, model: s, kind: unstructured, amount: -0.1}]", "key 'prune.0.amount'"),
    ("prune: [{name: p, model: s, kind: unstructured, amount: 1}]", "less than 1"),
    ("prune: [{name: p, model: nobody, kind: structured}]", "prune.0.model 'nobody' is not a model of this run"),
    ("prune: [{name: p, model: s, kind: structured, head_ratio: 0, ffn_ratio: 0}]", "nothing to prune"),
    ("prune: [{name: p, model: s, kind: sparse}]", "'sparse'"),
    ("prune: [{name: p, model: s, kind: structured, recovery: {distill: {method: intermediate}}}]",
     "recovery uses logit or hybrid KD"),
    ("quantize: [{name: q, model: later}]\nprune: [{name: later, model: s, kind: unstructured}]", None),
    ("quantize: [{name: s, model: s}]", "model names must be unique"),
    ("prune: [{name: p, model: s, kind: unstructured, layers: []}]", "key 'prune.0.layers'"),
    ("prune: [{name: p, model: s, kind: unstructured, layers: [a, a]}]", "listed twice"),
    ("export: {quantize: {models: [nobody]}}", "export.quantize.models: 'nobody' is not an exported model"),
    ("quantize: [{name: q, model: s}]\nexport: {quantize: {models: [q]}}", "'q' is not an exported model"),
    ("export: {quantize: {variants: [dynamic-int4]}}", "key 'export.quantize.variants.0'"),
    ("export: {quantize: {variants: []}}", "key 'export.quantize.variants'"),
    ("export: {quantize: {max_metric_drop: -0.1}}", "key 'export.quantize.max_metric_drop'"),
])
def test_pruning_and_quantisation_entries_are_checked_when_the_file_loads(tmp_path, compress, fragment):
    path = write(tmp_path, f"students: [{{name: s}}]\n{compress}\n")
    if fragment is None:  # quantising a prune entry is allowed (prune runs first)
        assert load_config(path).quantize[0].model == "later"
        return
    with pytest.raises(UserError) as err:
        load_config(path)
    assert fragment in err.value.line() and "\n" not in err.value.line()
