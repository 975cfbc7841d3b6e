"""``db.import_csv(Model, path)``: stream a CSV file into a table through BulkCreate.

The file is read row by row (csv.DictReader) and fed to a BulkCreate node as a
generator, so memory stays bounded whatever the file's size, and the import
is one transaction: a bad row anywhere imports nothing (unless on_error="skip").
"""

from __future__ import annotations

import copy
import csv
import json
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .errors import ValidationError, did_you_mean
from .model import MISSING
from .runtime import LocalRuntime
from .workflow import WorkflowBuilder

if TYPE_CHECKING:  # pragma: no cover
    from .nodes.base import NodeOwner


def import_csv(
    db: NodeOwner,
    model: Any,
    path: str | os.PathLike,
    *,
    delimiter: str = ",",
    encoding: str = "utf-8",
    batch_size: int | None = None,
    on_error: str = "raise",
    progress: bool | None = None,
    runtime: Any = None,
    user: Any = None,
    tenant: str | None = None,
) -> dict[str, Any]:
    """Import a CSV file (header row = field names) into ``model``'s table; returns BulkCreate's output."""

    table = db.table(model)
    _check_header(table.model, path, delimiter, encoding)
    workflow = WorkflowBuilder(dataflow=db, name=f"import {os.fspath(path)}")
    workflow.add_node(
        f"{table.model.name}BulkCreateNode",
        "import_csv",
        {
            "data": _records(table.model, path, delimiter, encoding),
            "batch_size": batch_size,
            "on_error": on_error,
            "progress": progress,
        },
    )
    results, _ = (runtime or LocalRuntime()).execute(workflow.build(), user=user, tenant=tenant)
    return results["import_csv"]


def _check_header(model: Any, path: str | os.PathLike, delimiter: str, encoding: str) -> None:
    with open(path, newline="", encoding=encoding) as handle:
        header = next(csv.reader(handle, delimiter=delimiter), None)
    if not header:
        raise ValidationError(
            f"CSV file {os.fspath(path)!r} is empty.", hint="the first line must name the fields."
        )
    writable = {f.name for f in model.user_fields}
    unknown = [h for h in header if h not in writable]
    if unknown:
        raise ValidationError(
            f"CSV file {os.fspath(path)!r} has column '{unknown[0]}', which model '{model.name}' does not have."
            + did_you_mean(unknown[0], writable),
            hint=f"rename the column, or remove it; fields of {model.name}: {', '.join(sorted(writable))}.",
        )


def _records(model: Any, path: str | os.PathLike, delimiter: str, encoding: str) -> Iterator[dict[str, Any]]:
    fields = model.by_name
    with open(path, newline="", encoding=encoding) as handle:
        for row in csv.DictReader(handle, delimiter=delimiter):
            yield {
                name: parse_csv_value(fields[name], text) for name, text in row.items() if name is not None
            }


def parse_csv_value(field: Any, text: str) -> Any:
    """A CSV cell (always text) -> the field's type.

    An empty cell is missing: None for an Optional field, the default for a field with one.
    """
    if text == "" and field.nullable:
        return None
    if text == "" and field.default is not MISSING:
        return copy.deepcopy(field.default)
    kind = field.type.name
    if kind == "boolean":
        lowered = text.strip().lower()
        if lowered in ("true", "t", "yes", "y", "1"):
            return True
        if lowered in ("false", "f", "no", "n", "0"):
            return False
        return text
    if kind == "json":
        try:
            return json.loads(text)
        except ValueError:
            return text
    if kind == "bytes":
        return text.encode()
    return text
