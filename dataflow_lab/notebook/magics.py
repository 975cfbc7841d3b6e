"""``%dataflow`` and ``%%dataflow``: models, workflows and runs from notebook cells.

Line:  connect URL | run NAME [--params JSON] [--background] [--transaction MODE] [--user U]
       | show NAME | nodes [MODEL] | status | migrate [--confirm] [--backfill JSON] [--rollback]
       | plot KIND [--x COL] [--y COL] [--from NAME] [--title T]
Cell:  model | workflow NAME [--run] [--params JSON] [--background] [--transaction MODE] [--user U]
Both:  sql [-o NAME] [--db NAME] [--write | --duckdb] [--user U] [SQL]

A user's mistake becomes one UsageError line with a hint ("did you mean ..."),
never a traceback (``%config DataFlowMagics.short_errors = False`` shows it).
"""

from __future__ import annotations

import ast
import functools
import html
import json
import keyword
import shlex
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, needs_local_scope, no_var_expand
from IPython.core.magic_arguments import MagicArgumentParser
from IPython.display import display
from traitlets import Bool, CaselessStrEnum, Float, Int, Unicode, observe

from ..access import User
from ..config import redact_url
from ..errors import BackfillRequiredError, DataFlowError, DestructiveMigrationError, did_you_mean
from ..runtime import TRANSACTION_MODES
from ..workflow import Workflow, WorkflowBuilder
from .catalogue import Catalogue
from .dag import DagView
from .display import widgets_available
from .plot import KINDS, Plot
from .run import NotebookRun, start_run, wait_in_cell
from .session import Session
from .sql_cell import plot_cell, sql_cell
from .workflow_cell import build_workflow

if TYPE_CHECKING:  # pragma: no cover
    from IPython.core.interactiveshell import InteractiveShell

__all__ = ["DataFlowMagics"]

LINE_COMMANDS = ("connect", "run", "show", "nodes", "status", "migrate", "plot")
CELL_COMMANDS = ("model", "workflow")
LINE_AND_CELL_COMMANDS = ("sql",)
USAGE = """\
%dataflow connect URL                 switch the notebook's database (models move over)
%dataflow run NAME [--params JSON] [--background] [--transaction auto|workflow|node|saga|2pc] [--user U]
                  [--timeout S] [--node-timeout S]   time limits (s) of the run and of each node; 0: none
%dataflow show NAME                   the workflow's DAG (coloured by its last run)
%dataflow nodes [MODEL]               the node catalogue: parameters and SQL
%dataflow status                      database, models, workflows, last runs
%dataflow migrate [--confirm]         bring the tables to the models (--confirm: drops and narrowing too)
%dataflow plot bar|line|hist|scatter [--x COL] [--y COL] [--from NAME] [--title T]   chart a DataFrame
%%dataflow model                      a cell of classes -> models (shows their nodes)
%%dataflow workflow NAME [--run] ...  a cell of `node = NodeType(param=value)` lines
%%dataflow sql [-o NAME] [--db NAME] [--write | --duckdb]   a cell of SQL -> a DataFrame ({var}, :var bound)
%dataflow sql [-o NAME] [--db NAME] [--write] SELECT ...   the same on one line
Settings: %config DataFlowMagics"""


class _SecretURL(str):
    """A database URL whose repr hides the password (so %config never shows it)."""

    def __repr__(self) -> str:
        return repr(redact_url(str(self)))


class _URLTrait(Unicode):
    def validate(self, obj: Any, value: Any) -> _SecretURL:
        return _SecretURL(super().validate(obj, value))


def _run_options(parser: MagicArgumentParser) -> MagicArgumentParser:
    parser.add_argument(
        "--params", nargs="+", default=None, help="JSON object: node id -> {parameter: value}"
    )
    parser.add_argument("--background", action="store_true", help="return a handle at once; the run goes on")
    parser.add_argument("--transaction", choices=TRANSACTION_MODES, default=None)
    parser.add_argument(
        "--user", default=None, help="run as this user: a User variable of the notebook, or a plain name"
    )
    parser.add_argument("--timeout", type=float, default=None, help="seconds for the whole run (0: no limit)")
    parser.add_argument(
        "--node-timeout", type=float, default=None, help="seconds for each node (0: no limit)"
    )
    return parser


def _limit(seconds: float) -> float | None:
    """A magic's time limit: 0 (or less) means none."""
    return seconds if seconds > 0 else None


def _parser(prog: str, *positional: tuple[str, str], run: bool = False) -> MagicArgumentParser:
    parser = MagicArgumentParser(prog=f"%dataflow {prog}", add_help=False)
    for name, nargs in positional:
        parser.add_argument(name, nargs=nargs)
    if prog == "workflow":
        parser.add_argument("--run", action="store_true", help="run the workflow after building it")
    return _run_options(parser) if run else parser


def _migrate_parser() -> MagicArgumentParser:
    parser = MagicArgumentParser(prog="%dataflow migrate", add_help=False)
    parser.add_argument("--confirm", action="store_true", help="also run drops and narrowing retypes")
    parser.add_argument(
        "--backfill", nargs="+", default=None, help="JSON object: column -> value for existing rows"
    )
    parser.add_argument("--rollback", action="store_true", help="undo the last migration")
    return parser


def _plot_parser() -> MagicArgumentParser:
    parser = MagicArgumentParser(prog="%dataflow plot", add_help=False)
    parser.add_argument("kind", nargs="?", help=" | ".join(KINDS))
    parser.add_argument("--x", default=None, help="the column along the x axis")
    parser.add_argument("--y", default=None, help="the column along the y axis")
    parser.add_argument(
        "--from", dest="source", default=None, help="a DataFrame variable (default: the last SQL result)"
    )
    parser.add_argument("--title", default=None)
    return parser


PARSERS = {
    "connect": _parser("connect", ("url", "?")),
    "run": _parser("run", ("name", "?"), run=True),
    "show": _parser("show", ("name", "?")),
    "nodes": _parser("nodes", ("models", "*")),
    "status": _parser("status"),
    "migrate": _migrate_parser(),
    "plot": _plot_parser(),
    "model": _parser("model"),
    "workflow": _parser("workflow", ("name", "?"), run=True),
}


def notebook_terms(exc: DataFlowError, message: str) -> tuple[str, str | None]:
    """A migration refusal said in the notebook's words: no SQL dump, and a hint naming the magic
    (the Python API's hint names ``db``, which a notebook of magics does not have)."""
    if isinstance(exc, DestructiveMigrationError):
        return message.split(" It would run:")[0], (
            "if you mean it, run %dataflow migrate --confirm (dropped and narrowed values are kept in "
            "a backup table; %dataflow migrate --rollback puts them back); %dataflow migrate shows "
            "the SQL. Otherwise change the model back and re-run its cell."
        )
    if isinstance(exc, BackfillRequiredError):
        example = json.dumps({c: "..." for c in exc.columns}).replace('"..."', "...")
        return message, (
            f"give it a default or make it Optional and re-run the model cell, or fill the existing "
            f"rows once: %dataflow migrate --backfill '{example}'"
        )
    return message, exc.hint


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _usage_errors(method: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a DataFlowError into one UsageError line (the Python API raises normally)."""

    @functools.wraps(method)
    def wrapper(self: DataFlowMagics, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except UsageError as exc:
            raise UsageError(self.session.scrub(str(exc))) from None
        except DataFlowError as exc:
            if not self.short_errors:
                raise
            problems = getattr(exc, "problems", None)
            message = exc.message if not problems else f"{len(problems)} problem(s): " + "; ".join(problems)
            message, hint = notebook_terms(exc, message)
            hint = f" Hint: {hint}" if hint else ""
            raise UsageError(self.session.scrub(_one_line(message + hint))) from None

    return wrapper


@magics_class
class DataFlowMagics(Magics):
    """The %dataflow magics. Settings: ``%config DataFlowMagics``."""

    database_url = _URLTrait(
        "",
        help="Database of the notebook's DataFlow when %dataflow connect was not used: '' means "
        "DATABASE_URL if set, else in-memory SQLite. Its password is never shown.",
    ).tag(config=True)
    echo = Bool(
        False, help="Show each SQL statement the notebook sends: in each run's summary, under its node."
    ).tag(config=True)
    summary_sql = Bool(
        None,
        allow_none=True,
        help="List each node's SQL in its run's summary (behind a disclosure). None: as the "
        "notebook's DataFlow's environment says, on in development (the spec: SQL visible where "
        "the user looks); echo=True turns it on too.",
    ).tag(config=True)
    display_limit = Int(
        10, help="Rows of each List output shown (as a DataFrame) in a run's summary; 0 shows all."
    ).tag(config=True)
    live = Bool(
        True, help="Show a live DAG and monitor panel for runs that last longer than live_after seconds."
    ).tag(config=True)
    live_after = Float(
        0.1, help="Seconds a run must last before its live panel is made (quicker runs show only a summary)."
    ).tag(config=True)
    refresh_interval = Float(
        0.1, help="Seconds between two updates of a live panel (the hooks are throttled to this)."
    ).tag(config=True)
    transaction = CaselessStrEnum(
        TRANSACTION_MODES,
        default_value="auto",
        help="Default transaction mode of runs: 'auto' (one transaction per database, 2PC across "
        "PostgreSQL databases), 'workflow' (one transaction per database), 'node' (commit node by "
        "node), 'saga' (commit node by node, compensate on failure) or '2pc'.",
    ).tag(config=True)
    timeout = Float(
        300.0, help="Seconds a run may take before it is cancelled and rolled back (0: no limit)."
    ).tag(config=True)
    node_timeout = Float(
        30.0, help="Seconds each node may take before the run is cancelled and rolled back (0: no limit)."
    ).tag(config=True)
    short_errors = Bool(
        True, help="Show %dataflow errors as one line with a hint; False shows the full traceback."
    ).tag(config=True)

    def __init__(self, shell: Any = None, session: Session | None = None, **kwargs: Any):
        self.session = session or Session()  # before the config loads: its observers use it
        super().__init__(shell=shell, **kwargs)
        self.session.default_url = self.database_url
        self.session.echo(self.echo)

    @property
    def _shell(self) -> InteractiveShell:
        """The shell running the magic (a magic always runs in one)."""
        assert self.shell is not None, "%dataflow runs inside IPython"
        return self.shell

    @observe("database_url")
    def _database_url_changed(self, change: dict[str, Any]) -> None:
        self.session.default_url = change["new"]
        if self.session.current is not None and change["new"]:
            self.session.connect(change["new"])

    @observe("echo")
    def _echo_changed(self, change: dict[str, Any]) -> None:
        self.session.echo(change["new"])

    # -- dispatch ------------------------------------------------------------
    @no_var_expand
    @needs_local_scope
    @line_cell_magic
    def dataflow(self, line: str, cell: str | None = None, local_ns: Mapping[str, Any] | None = None) -> Any:
        """Models, workflows and runs; `%dataflow` alone lists the commands."""
        return self._dispatch(line, cell, local_ns)

    @_usage_errors
    def _dispatch(self, line: str, cell: str | None, local_ns: Mapping[str, Any] | None) -> Any:
        command, _, rest = line.strip().partition(" ")
        if not command or command in ("help", "-h", "--help"):
            print(USAGE)
            return None
        if command in LINE_AND_CELL_COMMANDS:
            namespace = self._shell.user_ns if local_ns is None else {**self._shell.user_ns, **local_ns}
            return self._sql(rest, cell, namespace)
        if command not in PARSERS:
            raise UsageError(
                f"%dataflow has no command '{command}'.{did_you_mean(command, [*PARSERS, *LINE_AND_CELL_COMMANDS])} "
                f"Hint: commands: {', '.join(LINE_COMMANDS)} (line), {', '.join(CELL_COMMANDS)} (cell)."
            )
        if cell is None and command in CELL_COMMANDS:
            raise UsageError(
                f"'{command}' is a cell command. Hint: start the cell with %%dataflow {command}."
            )
        if cell is not None and command in LINE_COMMANDS:
            raise UsageError(
                f"'{command}' is a line command. Hint: write it as %dataflow {command} ... on one line."
            )
        try:
            argv = shlex.split(rest)
        except ValueError as exc:
            raise UsageError(f"%dataflow {command}: {exc}. Hint: close every quote.") from None
        args = PARSERS[command].parse_args(argv)
        namespace = self._shell.user_ns if local_ns is None else {**self._shell.user_ns, **local_ns}
        handler = getattr(self, f"_{command}")
        return handler(args, namespace) if cell is None else handler(args, cell, namespace)

    # -- cells -----------------------------------------------------------------
    def _model(self, args: Any, cell: str, namespace: dict[str, Any]) -> Catalogue | ModelChange:
        try:
            tree = ast.parse(cell)
        except SyntaxError as exc:
            raise UsageError(f"model cell line {exc.lineno}: {exc.msg}.") from None
        names = [stmt.name for stmt in tree.body if isinstance(stmt, ast.ClassDef)]
        if not names:
            raise UsageError(
                "a model cell defines classes. Hint: class User:\\n    name: str\\n    email: str"
            )
        try:
            code = compile(tree, "<model cell>", "exec", flags=self._shell.compile.flags, dont_inherit=True)
            exec(code, self._shell.user_ns)  # noqa: S102 - the user's own cell
        except Exception as exc:
            line = _cell_line(exc, "<model cell>")
            raise UsageError(f"model cell line {line}: {type(exc).__name__}: {exc}") from None
        again = [n for n in names if n in self.session.model_classes]
        for name in names:
            self.session.add_model(self._shell.user_ns[name])
        if again or self.session.db.database.opened:  # a re-run cell may meet existing tables
            notice = self._model_change(names)
            if notice is not None:
                return notice
        return Catalogue(self.session.db, names)

    def _model_change(self, names: list[str]) -> ModelChange | None:
        """What the database would refuse of these models, said at the model cell, or None."""
        db = self.session.db
        try:
            plan = db.migrations.plan()
        except BackfillRequiredError as exc:
            message, hint = notebook_terms(exc, exc.message)
            return ModelChange(names, f"{message} Hint: {hint}", sql="")
        steps = [s for s in plan.steps if s.destructive]
        if not steps:
            return None
        what = "; ".join(s.description for s in steps)
        _, hint = notebook_terms(DestructiveMigrationError("", sql=[]), "")
        line = f"The database will refuse this model change: {what}. Nothing was changed. Hint: {hint}"
        return ModelChange(
            names, self.session.scrub(line), sql="".join(f"{q};\n" for s in steps for q in s.up)
        )

    def _workflow(self, args: Any, cell: str, namespace: dict[str, Any]) -> Any:
        name = self._name(args.name, "workflow")
        workflow = build_workflow(cell, name=name, dataflow=self.session.current, namespace=namespace)
        self._shell.user_ns[name] = workflow
        self.session.workflow_sources[name] = cell
        if args.run or args.background:
            return self._start(workflow, args, namespace)
        return workflow

    # -- lines -----------------------------------------------------------------
    def _connect(self, args: Any, namespace: dict[str, Any]) -> None:
        if not args.url:
            raise UsageError(
                "which database? Hint: %dataflow connect sqlite:///notes.db (or postgresql://...)."
            )
        url = self._shell.var_expand(args.url) if ("$" in args.url or "{" in args.url) else args.url
        new, old = self.session.connect(url)
        moved = f"; models: {', '.join(self.session.model_classes)}" if self.session.model_classes else ""
        closed = f" (closed {old.url})" if old is not None else ""
        print(f"Connected to {new.url} ({new.dialect}){moved}{closed}")

    def _run(self, args: Any, namespace: dict[str, Any]) -> Any:
        workflow = self._lookup(args.name, namespace)
        return self._start(workflow, args, namespace)

    def _show(self, args: Any, namespace: dict[str, Any]) -> DagView:
        workflow = self._lookup(args.name, namespace)
        last = self.session.last_runs.get(workflow.name)
        snapshot = last.snapshot() if last is not None and last.workflow is workflow else None
        return DagView(workflow, snapshot)

    def _nodes(self, args: Any, namespace: dict[str, Any]) -> Catalogue:
        return Catalogue(self.session.db, args.models or None)

    def _status(self, args: Any, namespace: dict[str, Any]) -> None:
        print(self.session.describe())

    def _migrate(self, args: Any, namespace: dict[str, Any]) -> None:
        """Apply the models' pending changes to the notebook's database (what the hints point at)."""
        migrations = self.session.db.migrations
        if args.rollback:
            undone = migrations.rollback(confirm_destructive=args.confirm)
            print("\n".join(f"Rolled back: {m.name}" for m in undone) or "Nothing to roll back.")
            return
        backfill = self._params(args.backfill, namespace, option="--backfill")
        plan = migrations.plan(backfill=backfill)
        if not plan:
            print("Nothing to migrate: every table matches its model.")
            return
        if plan.destructive and not args.confirm:  # shown, not run: the reader confirms with --confirm
            display(ModelChange(list(self.session.model_classes), "", sql=plan.sql, plan=plan))
            return
        for m in migrations.apply(confirm_destructive=args.confirm, backfill=backfill):
            print(f"Applied: {m.name}")

    def _sql(self, line: str, cell: str | None, namespace: Mapping[str, Any]) -> Any:
        """``%%dataflow sql`` / ``%dataflow sql``: one statement on the notebook's database (sql_cell.py)."""
        return sql_cell(self.session, self._shell.user_ns, line, cell, namespace, self._user)

    def _plot(self, args: Any, namespace: dict[str, Any]) -> Plot:
        return plot_cell(self.session, args, namespace)

    # -- helpers -----------------------------------------------------------
    def _summary_sql(self) -> bool:
        if self.echo or self.summary_sql is not None:
            return bool(self.echo or self.summary_sql)
        return self.session.db.config.environment == "development"

    def _name(self, name: str | None, what: str) -> str:
        if not name:
            raise UsageError(f"%%dataflow {what} needs a name. Hint: %%dataflow {what} onboarding --run")
        if not name.isidentifier() or keyword.iskeyword(name):
            raise UsageError(
                f"'{name}' is not a Python name. Hint: use letters, digits and _, like onboarding."
            )
        return name

    def _lookup(self, name: str | None, namespace: Mapping[str, Any]) -> Workflow:
        if not name:
            raise UsageError("which workflow? Hint: %dataflow run onboarding")
        value = namespace.get(name)
        if isinstance(value, WorkflowBuilder):
            value = value.build(name=name)
        if isinstance(value, Workflow):
            return self._rebuilt(name, value, namespace)
        known = [k for k, v in namespace.items() if isinstance(v, Workflow | WorkflowBuilder)]
        known += [k for k in self.session.workflow_sources if k not in known]
        where = f" ({name} is a {type(value).__name__})" if value is not None else ""
        raise UsageError(
            f"no workflow named '{name}'{where}.{did_you_mean(name, known)} "
            f"Hint: {'workflows: ' + ', '.join(known) if known else 'build one in a %%dataflow workflow cell'}."
        )

    def _rebuilt(self, name: str, workflow: Workflow, namespace: Mapping[str, Any]) -> Workflow:
        """After %dataflow connect, a workflow cell's nodes point at the closed DataFlow: rebuild it."""
        stale = any(db.database.closed for db in workflow.dataflows())
        source = self.session.workflow_sources.get(name)
        if not stale or source is None:
            return workflow
        workflow = build_workflow(source, name=name, dataflow=self.session.db, namespace=namespace)
        self._shell.user_ns[name] = workflow
        return workflow

    def _params(self, words: list[str] | None, namespace: Mapping[str, Any], option: str = "--params") -> Any:
        if words is None:
            return None
        text = " ".join(words)
        if text.isidentifier() and isinstance(namespace.get(text), Mapping):
            return namespace[text]
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            example = '{"create": {"name": "Bob"}}' if option == "--params" else '{"nick": "none"}'
            raise UsageError(
                f"{option} is not valid JSON ({exc.msg} at column {exc.colno}). "
                f"Hint: quote it whole: {option} '{example}'"
            ) from None

    @staticmethod
    def _user(word: str | None, namespace: Mapping[str, Any]) -> Any:
        """``--user teacher``: the notebook's ``teacher`` when it is a User, else the name itself."""
        if word is None:
            return None

        found = namespace.get(word)
        return found if isinstance(found, User) else word

    def _start(self, workflow: Workflow, args: Any, namespace: Mapping[str, Any]) -> NotebookRun:
        run = start_run(
            workflow,
            parameters=self._params(args.params, namespace),
            name=workflow.name,
            transaction=args.transaction or self.transaction,
            user=self._user(args.user, namespace),
            interval=self.refresh_interval,
            display_limit=self.display_limit,
            background=args.background,
            show_sql=self._summary_sql(),
            timeout=_limit(self.timeout if args.timeout is None else args.timeout),
            node_timeout=_limit(self.node_timeout if args.node_timeout is None else args.node_timeout),
        )
        self.session.last_runs[workflow.name] = run
        live = self.live and self._frontend_has_widgets()
        if args.background:
            if live:
                run.show_in_place(display)  # shown now (also for `h = %dataflow run ... --background`)
            return run
        # One display slot per run, made before waiting, so quick and slow runs give the same outputs.
        slot = display({"text/plain": ""}, raw=True, display_id=True) if live else None
        try:
            wait_in_cell(
                run, live_after=self.live_after if live else None, show=slot.update if slot else None
            )
        except KeyboardInterrupt:
            _clear(slot, run)
            display(run)
            raise
        _clear(slot, run)  # the live panel goes; the static summary takes its place, so a run is shown once
        if run.status != "done":
            run.show_error = False  # the error is reported once, as this magic's one-line error
            display(run)
            error = run.error
            if isinstance(error, DataFlowError) or error is None:
                raise error or DataFlowError(f"Run '{workflow.name}' was cancelled.")
            raise error
        return run

    def _frontend_has_widgets(self) -> bool:
        """Live panels need ipywidgets and a kernel (a frontend that renders widgets)."""
        return widgets_available() and getattr(self.shell, "kernel", None) is not None


class ModelChange:
    """A model cell's change that the database would refuse: one line, the SQL behind a disclosure."""

    def __init__(self, models: list[str], line: str, *, sql: str, plan: Any = None):
        self.models, self.line, self.sql, self.plan = models, line, sql, plan

    def __repr__(self) -> str:
        return self.line or repr(self.plan)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:

        head = html.escape(self.line) if self.line else "This migration drops or narrows data:"
        sql = (f"<details><summary>the SQL it would run</summary><pre>{html.escape(self.sql)}</pre></details>"
               if self.sql else "")  # fmt: skip
        tail = (
            ""
            if self.line
            else "<div>Re-run with <code>%dataflow migrate --confirm</code> to apply it.</div>"
        )
        return {
            "text/plain": repr(self)
            if self.line
            else f"{self.plan!r}\nRe-run with %dataflow migrate --confirm.",
            "text/html": f'<div class="df-model-change">⚠ {head}{sql}{tail}</div>',
        }


def _clear(slot: Any, run: NotebookRun) -> None:
    """Empty a run's live slot, so no widget view (dead once the kernel is gone) is saved."""
    if slot is not None and run.live is not None:
        slot.update({"text/plain": ""}, raw=True)


def _cell_line(exc: BaseException, filename: str) -> int | None:
    tb, line = exc.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
