"""Typed outputs (nodes/outputs.py): what a node returns, and what a connection may carry into an input."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import uuid
from decimal import Decimal
from typing import Any, Optional, TypedDict

import pytest

from dataflow_lab import DataFlow
from dataflow_lab.nodes import outputs
from dataflow_lab.nodes.model_node import Records
from dataflow_lab.nodes.outputs import Expects
from dataflow_lab.nodes.python import python_node


class Level(enum.Enum):
    LOW = 1
    HIGH = 2


@pytest.fixture
def shop():
    db = DataFlow()

    @db.model
    class Order:
        item: str
        quantity: int = 1
        note: Optional[str] = None  # noqa: UP045 - Optional is the documented spelling

    yield db
    db.close()


# (target, source, admitted): a model field's check coerces losslessly (types.py)
FIELD = [
    (int, int, True),
    (int, str, True),  # '42'
    (int, float, True),  # 3.0
    (int, bool, False),
    (int, Decimal, False),
    (float, int, True),
    (float, bool, False),
    (bool, int, True),  # 0 or 1
    (str, int, False),
    (str, dt.datetime, False),
    (dt.datetime, str, True),  # ISO 8601
    (dt.datetime, dt.date, True),  # a value declared a date may be a datetime: not refused
    (dt.date, dt.datetime, False),
    (Decimal, float, True),
    (uuid.UUID, str, True),
    (str, uuid.UUID, False),
    (dict, list, False),
    (list, tuple, True),
    (Level, str, True),
    (Level, int, True),  # its values
    (Level, float, False),
]


@pytest.mark.parametrize(
    ("target", "source", "admitted"), FIELD, ids=[f"{s.__name__}->{t.__name__}" for t, s, _ in FIELD]
)
def test_a_field_input_admits_what_its_check_could_pass(target, source, admitted):
    assert Expects.field(target).admits(source) is admitted


# a parameter without a check of its own takes an instance of its type (and '42' for an int)
PARAM = [
    (int, str, True),
    (int, float, False),
    (int, bool, False),
    ((int, float), int, True),
    (str, int, False),
    (bool, int, True),  # an int-typed value may be a bool: not refused
    (list, Records, True),
    (dict, dict, True),
]


@pytest.mark.parametrize(("target", "source", "admitted"), PARAM)
def test_a_plain_parameter_admits_instances_of_its_type(target, source, admitted):
    assert Expects(target if isinstance(target, tuple) else (target,)).admits(source) is admitted


@pytest.mark.parametrize(
    "source",
    [Any, Optional[int], int | None, None, type(None), "SomeForwardRef", object],  # noqa: UP045
)
def test_unknown_optional_and_none_sources_are_never_refused_for_what_may_not_arrive(source):
    assert Expects.field(int).admits(source)


def test_a_union_is_admitted_when_one_of_its_arms_is():
    assert Expects.field(str).admits(int | str)
    assert not Expects.field(str).admits(int | float)


def test_generated_nodes_declare_their_outputs_from_operation_and_model(shop):
    nodes = shop.nodes
    assert outputs.label(nodes["OrderCreateNode"].output_type()) == "a Order row"
    assert outputs.label(nodes["OrderReadNode"].output_type()) == "a Order row | None"
    assert outputs.label(nodes["OrderListNode"].output_type()) == "{records: Records[Order], count: int}"
    assert outputs.label(nodes["OrderCountNode"].output_type()) == "{count: int}"
    assert outputs.label(nodes["OrderDeleteNode"].output_type()) == "{id: int, deleted: bool}"
    assert outputs.label(nodes["OrderUpsertNode"].output_type()) == "{created: bool, record: a Order row}"
    assert outputs.keys(nodes["OrderBulkCreateNode"].output_type()) == ["inserted", "ids", "skipped"]
    assert outputs.walk(nodes["OrderBulkCreateNode"].output_type(), "ids.0")[0] == int | None
    assert outputs.walk(nodes["OrderListNode"].output_type(), "records.-1.note")[0] == str | None


def test_generated_nodes_declare_field_inputs(shop):
    nodes = shop.nodes
    assert str(nodes["OrderCreateNode"].input_type("quantity")) == "int"
    assert str(nodes["OrderUpdateNode"].input_type("fields.quantity")) == "int | dict"  # {'$inc': n}
    assert str(nodes["OrderReadNode"].input_type("id")) == "int"
    assert nodes["OrderBulkCreateNode"].input_type("data") is None  # its own check: lists, DataFrames...
    assert nodes["OrderListNode"].input_type("filter.item") is None


class Summary(TypedDict):
    total: int
    label: str


@dataclasses.dataclass
class Point:
    x: float


def summary() -> Summary:
    return {"total": 1, "label": "one"}


def point() -> Point:
    return Point(1.0)


def test_a_python_nodes_return_annotation_is_its_output_type():
    assert python_node(summary).output_type() is Summary
    assert outputs.walk(Summary, "total")[0] is int
    assert outputs.walk(Summary, "totl")[2].part == "totl"
    assert outputs.walk(python_node(point).output_type(), "x")[0] is float
    assert python_node(lambda x: x).output_type() is Any
