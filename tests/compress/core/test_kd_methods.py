"""The KD method table: every method the YAML accepts has a row, the rows agree with each other, and the config's
checks follow the table rather than lists of their own."""

from typing import get_args

import pytest
from pydantic import ValidationError

from compress.core.config import BiLSTMStudent, KDConfig, RecoveryConfig, RunConfig
from compress.core.kd_methods import KD_METHODS, KDMethodName, kd_method, names_where


def test_every_method_of_the_yaml_has_one_row():
    assert list(KD_METHODS) == list(get_args(KDMethodName))
    with pytest.raises(KeyError, match="unknown KD method 'fitnets' \\(known: logit, hybrid, intermediate"):
        kd_method("fitnets")


@pytest.mark.parametrize("name", list(KD_METHODS))
def test_a_method_that_transfers_layers_needs_what_layer_transfer_needs(name):
    """Matching teacher layers takes a transformer student on the teacher's tokens, and does not fit a pruned
    model's recovery; methods without it need none of that."""
    method = KD_METHODS[name]
    transfers = method.layer_transfer is not None
    assert method.transformer_student == method.teacher_tokenizer == transfers
    assert method.pruned_recovery == (not transfers)


def test_names_where_lists_the_methods_with_those_needs_in_table_order():
    assert names_where(transformer_student=False) == "logit or hybrid"
    assert names_where(classes=True) == "hybrid"
    assert names_where(layer_transfer="all_layers_first") == "tinybert"


@pytest.mark.parametrize("name", list(KD_METHODS))
def test_the_config_checks_read_the_table(name):
    method = KD_METHODS[name]
    kd = KDConfig(method=name)
    if method.transformer_student:
        with pytest.raises(ValidationError, match="needs a transformer student"):
            BiLSTMStudent(name="b", distill=kd)
    else:
        BiLSTMStudent(name="b", distill=kd)
    if method.pruned_recovery:
        RecoveryConfig(distill=kd)
    else:
        with pytest.raises(ValidationError, match="recovery uses logit or hybrid KD"):
            RecoveryConfig(distill=kd)
    regression = {"task": "regression", "data": {"source": {"kind": "local", "train": "x.csv"}},
                  "students": [{"name": "s", "distill": {"method": name}}]}
    if method.classes:
        with pytest.raises(ValidationError, match="regression has no classes"):
            RunConfig.model_validate(regression)
    else:
        RunConfig.model_validate(regression)
    own_tokenizer = {"students": [{"name": "c", "kind": "custom_transformer", "tokenizer": "t",
                                   "distill": {"method": name}}]}
    if method.teacher_tokenizer:
        with pytest.raises(ValidationError, match="needs the teacher's tokenizer; use logit or hybrid"):
            RunConfig.model_validate(own_tokenizer)
    else:
        RunConfig.model_validate(own_tokenizer)
