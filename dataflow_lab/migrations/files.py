"""Migrations as reviewable files: ``0002_users_add_age.sql`` with an up and a down section.

    -- dataflow_lab migration 0002_users_add_age
    -- destructive: no
    -- +up
    ALTER TABLE users ADD COLUMN age BIGINT;
    -- +down
    ALTER TABLE users DROP COLUMN age;

Each statement ends with ``;`` at the end of a line. Lines starting with
``--`` are comments. A reviewer may edit a file before it is applied; once
applied, its checksum is in the history, and editing it is an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import MigrationError
from .engine import MigrationPlan, checksum

__all__ = ["FileMigration", "read_directory", "write_file"]

_NAME = re.compile(r"^(\d{4})_[A-Za-z0-9_]+\.sql\Z")


@dataclass(frozen=True)
class FileMigration:
    name: str  # the file name without .sql
    path: Path
    up: tuple[str, ...]
    down: tuple[str, ...]
    destructive: bool

    @property
    def checksum(self) -> str:
        return checksum(self.up, self.down)


def write_file(directory: str | Path, plan: MigrationPlan, slug: str, taken: Iterable[str] = ()) -> Path:
    """Write ``plan`` as the next numbered file of ``directory``; returns its path.

    ``taken`` are names already used (the history's): the number follows them too, so an
    empty directory does not start again at 0001 over a history that already has one.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    names = [p.name for p in folder.iterdir()] + [f"{name}.sql" for name in taken]
    numbers = [int(m.group(1)) for name in names if (m := _NAME.match(name))]
    name = f"{max(numbers, default=0) + 1:04d}_{slug}"
    lines = [
        f"-- dataflow_lab migration {name}",
        f"-- destructive: {'yes' if plan.destructive else 'no'}",
        *(f"--   {line}" for line in plan.describe()),
        "-- Review, then apply with db.migrations.apply(directory=...).",
        "-- +up",
        *(f"{sql};" for sql in plan.up),
        "-- +down",
        *(f"{sql};" for sql in plan.down),
    ]
    path = folder / f"{name}.sql"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_directory(directory: str | Path) -> list[FileMigration]:
    """The migration files of ``directory``, in order."""
    folder = Path(directory)
    if not folder.is_dir():
        raise MigrationError(
            f"Migration directory '{folder}' does not exist.",
            hint="generate migrations into it first: db.migrations.generate(directory).",
        )
    return [_read(p) for p in sorted(folder.iterdir()) if _NAME.match(p.name)]


def _read(path: Path) -> FileMigration:
    sections: dict[str, list[str]] = {"up": [], "down": []}
    current: list[str] | None = None
    pending: list[str] = []
    destructive = False
    for line in path.read_text(encoding="utf-8").splitlines():
        marker = line.strip().lower()
        if marker in ("-- +up", "-- +down"):
            current = sections[marker[4:]]
            continue
        if marker.startswith("-- destructive:"):
            destructive = marker.endswith("yes")
        if marker.startswith("--") or not marker:
            continue
        if current is None:
            raise MigrationError(f"Migration file '{path}' has SQL before its '-- +up' line.",
                                 hint="put every statement under '-- +up' or '-- +down'.")  # fmt: skip
        pending.append(line)
        if line.rstrip().endswith(";"):
            current.append("\n".join(pending).rstrip().rstrip(";"))
            pending = []
    if pending or not sections["up"]:
        raise MigrationError(
            f"Migration file '{path}' is incomplete: "
            + ("a statement lacks its ';'." if pending else "no up SQL."),
            hint="end each statement with ';' at the end of a line, under '-- +up' / '-- +down'.",
        )
    return FileMigration(path.stem, path, tuple(sections["up"]), tuple(sections["down"]), destructive)
