"""The stage declarations: one per stage, in pipeline order, each naming a real function of the declared result."""

from __future__ import annotations

import inspect
import typing

from compress.pipeline import stages
from compress.pipeline.declarations import GROUPS, STAGES, declared, group_of


def test_every_declaration_names_the_function_that_does_it_and_its_result_type():
    for stage in STAGES:
        function = getattr(stages, stage.does)
        returned = typing.get_type_hints(function)["return"]
        assert typing.get_args(returned) == (list[str], stage.result), stage.name
        assert inspect.getdoc(function), f"{stage.does} has no docstring"


def test_groups_are_in_pipeline_order_and_end_with_the_report():
    assert GROUPS == ("teacher", "students", "prune", "quantize", "export", "bench", "report")
    order = [GROUPS.index(stage.group) for stage in STAGES]
    assert order == sorted(order)


def test_manifest_entries_map_back_to_their_declaration():
    assert group_of("teacher_logits") == "teacher" and group_of("teacher_transfer") == "teacher"
    assert group_of("student:minilm-l3") == "students" and group_of("baseline:minilm-l3-baseline") == "students"
    assert declared("export:teacher").entry("teacher") == "export:teacher"
    assert declared("bench").entry() == "bench"
    training = {stage.name for stage in STAGES if stage.every_process}
    assert training == {"teacher", "teacher_logits", "teacher_transfer", "student", "baseline", "prune"}


def test_a_stage_hash_is_its_name_and_what_it_reads():
    from compress.core.hashing import stable_hash

    teacher_logits = declared("teacher_logits")
    assert teacher_logits.config_hash("abc") == stable_hash("teacher_logits", "abc")
