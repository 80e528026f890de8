"""The CLI's error and exit-code contract, enforced at ONE boundary (`KilnGroup.main`).

Every command raises; nothing below prints an error or picks an exit code itself.
The boundary turns what was raised into one line on stderr,

    error: <one sentence naming the option, variable, file and line, or database>

(further lines only for an input file's other bad lines), a JSON object on stdout when
the command was given `--json` (`{"error": {"type", "message", "exit_code", ...}}`), and
the exit code of `EXIT_CODES`. A traceback is printed only with `--debug` /
`KILN_DEBUG=1`, or for a genuine bug (exit 70), with a line asking to report it.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence
from enum import IntEnum
from typing import Any

import orjson
import typer
from typer.core import TyperGroup

try:  # Typer >= 0.20 carries its own copy of click; older ones use click itself
    from typer._click import exceptions as click
except ImportError:  # pragma: no cover
    from click import exceptions as click  # type: ignore[no-redef]

from batchkiln.errors import (
    BudgetExceeded,
    ConfigError,
    InputError,
    KeyConflict,
    KilnError,
    NotFound,
    StoreError,
    VendorError,
)


class ExitCode(IntEnum):
    OK = 0
    NOT_ALL_SUCCEEDED = 1
    BAD_INPUT = 2
    BUDGET = 3
    UNREACHABLE = 4
    BUG = 70
    INTERRUPTED = 130


#: the contract, one row per code: the README and `kiln --help` print this table
EXIT_CODES: tuple[tuple[ExitCode, str], ...] = (
    (ExitCode.OK, "done: every request succeeded (or the command did what it says)"),
    (
        ExitCode.NOT_ALL_SUCCEEDED,
        "the job ended with requests that failed for good, were cancelled, or wait for"
        " `kiln retry`",
    ),
    (
        ExitCode.BAD_INPUT,
        "bad input, option or configuration, unknown job, key conflict; nothing stored or sent",
    ),
    (ExitCode.BUDGET, "refused by a budget (per job or KILN_BUDGET_USD); nothing sent"),
    (ExitCode.UNREACHABLE, "the store or a vendor could not be reached or used"),
    (ExitCode.BUG, "a bug in batchkiln (traceback printed; please report it)"),
    (ExitCode.INTERRUPTED, "interrupted (SIGINT / SIGTERM) at a safe point; no lease held"),
)


def exit_code_help() -> str:
    """The table as `kiln --help` shows it (one code a line)."""
    rows = "\n\n".join(f"{int(code):>3}  {text}" for code, text in EXIT_CODES)
    return f"Exit codes:\n\n{rows}"


class CommandError(KilnError):
    """A mistake a command found itself (an option combination, a port in use)."""

    kind = "usage"

    def __init__(self, message: str, code: int = ExitCode.BAD_INPUT, **fields: Any) -> None:
        super().__init__(message)
        self.exit_code = int(code)
        self.fields = fields


class Interrupted(KilnError):
    """SIGINT or SIGTERM stopped the command at a safe point."""

    kind = "interrupted"


def job_exit_code(state: str, counts: dict[str, int]) -> int:
    """0 when a finished job's every request succeeded (or it is still running: a worker
    carries on), 1 when it ended with requests that did not succeed."""
    if state not in ("done", "awaiting_retry"):
        return ExitCode.OK
    unsuccessful = sum(n for outcome, n in counts.items() if outcome != "succeeded")
    return ExitCode.NOT_ALL_SUCCEEDED if unsuccessful else ExitCode.OK


def code_for(exc: KilnError) -> int:
    """The contract's exit code for a KilnError."""
    if isinstance(exc, CommandError):
        return int(exc.exit_code)
    if isinstance(exc, Interrupted):
        return ExitCode.INTERRUPTED
    if isinstance(exc, BudgetExceeded):
        return ExitCode.BUDGET
    if isinstance(exc, ConfigError | InputError | KeyConflict | NotFound):
        return ExitCode.BAD_INPUT  # ConfigError first: a bad database URL is configuration
    if isinstance(exc, StoreError | VendorError):
        return ExitCode.UNREACHABLE
    if exc.kind == "invalid_key":
        return ExitCode.BAD_INPUT
    return ExitCode.NOT_ALL_SUCCEEDED


def _fields(exc: KilnError) -> dict[str, Any]:
    if isinstance(exc, CommandError):
        return dict(exc.fields)
    if isinstance(exc, ConfigError) and exc.name:
        return {"variable": exc.name}
    if isinstance(exc, InputError):
        return {
            "errors": [{"file": e.file, "line": e.line, "reason": e.reason} for e in exc.errors],
            "truncated": exc.truncated,
        }
    if isinstance(exc, KeyConflict):
        return {"key": exc.key}
    if isinstance(exc, VendorError):
        return {"retryable": exc.retryable, "status": exc.status, "code": exc.code}
    if isinstance(exc, BudgetExceeded):
        return {"refusal": exc.refusal.to_json()}
    return {}


def _message(exc: KilnError) -> str:
    if isinstance(exc, BudgetExceeded):
        return f"{exc.message}; nothing was sent"
    return exc.message


def _report(kind: str, message: str, code: int, fields: dict[str, Any], *, as_json: bool) -> int:
    first, *rest = (message.strip() or kind).splitlines()
    sys.stderr.write(f"error: {first}\n")
    for line in rest:
        sys.stderr.write(f"{line}\n")
    if as_json:
        payload = {"error": {"type": kind, "message": message, "exit_code": code, **fields}}
        sys.stdout.write(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def _usage(exc: click.ClickException) -> tuple[str, dict[str, Any]]:
    """Click's parse errors as one sentence naming the option."""
    ctx = getattr(exc, "ctx", None)
    path = ctx.command_path if ctx is not None else "kiln"
    param = getattr(exc, "param", None)
    if isinstance(exc, click.BadParameter) and param is not None:
        kind = getattr(param, "param_type_name", "parameter")
        longs = [o for o in param.opts if o.startswith("--")]
        hint = (longs or param.opts or [""])[0]  # the first long name, as declared
        if kind == "argument" or not hint:
            hint = str(param.name or "").upper()
        if isinstance(exc, click.MissingParameter):
            return f"{path}: missing {kind} {hint} (see `{path} --help`)", {"option": hint}
        return f"{hint}: {exc.message.rstrip('.')}", {"option": hint}
    if isinstance(exc, click.NoSuchOption):
        return (
            f"{path}: no such option {exc.option_name} (`{path} --help` lists them)",
            {"option": exc.option_name},
        )
    message = exc.format_message().rstrip(".")
    return f"{path}: {message[:1].lower()}{message[1:]} (see `{path} --help`)", {}


def _third_party(exc: BaseException, database_url: str | None) -> KilnError | None:
    """Errors from the libraries under us that are not bugs: database, vendor SDK, OS."""
    from batchkiln.store.database import describe_failure

    if database_url is not None:
        failure = describe_failure(exc, database_url)
        if failure is not None:
            return failure
    module = type(exc).__module__.split(".")[0]
    if module in ("openai", "anthropic", "httpx", "google"):
        return VendorError(f"the vendor call failed: {exc}", retryable=False)
    if isinstance(exc, ConnectionError | TimeoutError):
        return VendorError(f"a connection failed: {exc}", retryable=True)
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return CommandError(f"{where}{exc.strerror or exc}", ExitCode.BAD_INPUT)
    return None


def _settings_debug() -> tuple[bool, str | None]:
    from batchkiln.settings import Settings

    try:
        settings = Settings.load()
    except KilnError:
        return False, None
    return settings.debug, settings.database_url


def handle(exc: BaseException, argv: Sequence[str]) -> int:
    """Print what `exc` means under the contract; return the exit code."""
    options = list(argv[: argv.index("--")] if "--" in argv else argv)
    as_json = "--json" in options
    if isinstance(exc, typer.Exit):
        return exc.exit_code
    if isinstance(exc, click.NoArgsIsHelpError):
        sys.stdout.write(exc.format_message() + "\n")
        return ExitCode.BAD_INPUT
    if isinstance(exc, click.ClickException):
        message, fields = _usage(exc)
        return _report("usage", message, ExitCode.BAD_INPUT, fields, as_json=as_json)
    if isinstance(exc, KeyboardInterrupt | typer.Abort):
        return _report("interrupted", "interrupted", ExitCode.INTERRUPTED, {}, as_json=as_json)
    debug, database_url = _settings_debug()
    debug = debug or "--debug" in options
    known = exc if isinstance(exc, KilnError) else _third_party(exc, database_url)
    if known is None:
        traceback.print_exception(exc)
        sys.stderr.write(
            "this is a bug in batchkiln: please report it with the traceback above, the"
            " command you ran and `kiln version`\n"
        )
        message = f"internal error: {type(exc).__name__}: {exc}"
        return _report("bug", message, ExitCode.BUG, {}, as_json=as_json)
    if debug:
        traceback.print_exception(exc)
    code = code_for(known)
    return _report(known.kind, _message(known), code, _fields(known), as_json=as_json)


class KilnGroup(TyperGroup):
    """The `kiln` group: click's own error printing is replaced by `handle`."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        try:
            result = super().main(
                args=argv,
                prog_name=prog_name,
                complete_var=complete_var,
                standalone_mode=False,
                **extra,
            )
            code = result if isinstance(result, int) else 0
        except SystemExit:
            raise
        except BaseException as exc:
            code = handle(exc, argv)
        if standalone_mode:
            sys.exit(code)
        return code


__all__ = [
    "EXIT_CODES",
    "CommandError",
    "ExitCode",
    "Interrupted",
    "KilnGroup",
    "code_for",
    "exit_code_help",
    "handle",
    "job_exit_code",
]
