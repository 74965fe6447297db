"""The `lw` command: a Typer app over the library, plus the one place errors become exit codes.

Command modules stay thin (parse, call the library, render through
``output``); they import JAX and scikit-learn inside their functions so that
``lw --help`` stays fast.
"""

from __future__ import annotations

import sys

from learnware_cli._threads import prefer_single_threaded_blas

prefer_single_threaded_blas()  # before NumPy is first imported (cli.output imports it)

import typer  # noqa: E402

from learnware_cli import __version__  # noqa: E402
from learnware_cli.cli import init_cmd, market_cmds, reuse_cmd, search_cmd, spec_cmd, submit_cmds
from learnware_cli.cli import anchors_cmd, islands_cmd
from learnware_cli.cli.output import print_json, safe, stderr
from learnware_cli.errors import EXIT_INTERNAL, EXIT_USAGE, LwError, MarketError, RejectedError, UsageError

app = typer.Typer(
    name="lw",
    help=(
        "lw: a toolkit for learnware markets.\n\n"
        "A learnware is a trained model plus a specification (semantic tags and an RKME, a small "
        "weighted point set summarising its training data). Developers submit learnwares to a "
        "market (a local folder); users search it with their own data's RKME and reuse what fits.\n\n"
        "Example: lw init ./market && lw spec data.csv --market ./market --out spec.json"
    ),
    no_args_is_help=True,
    add_completion=True,  # --install-completion, --show-completion (bash, zsh, fish, PowerShell)
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lw {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    pass


init_cmd.register(app)
spec_cmd.register(app)
submit_cmds.register(app)
market_cmds.register(app)
islands_cmd.register(app)
anchors_cmd.register(app)
search_cmd.register(app)
reuse_cmd.register(app)


def _framework_errors() -> tuple:
    """The base classes of Typer's own errors: TyperException (Typer vendors Click), or click's (older Typer)."""
    found = [getattr(typer, "TyperException", None)]
    try:
        from click.exceptions import ClickException
    except ImportError:
        ClickException = None
    found.append(ClickException)
    return tuple(cls for cls in found if cls is not None)


_FRAMEWORK_ERRORS = _framework_errors()


def _report_error(exc: LwError, json_mode: bool, hint: str = "") -> None:
    if json_mode:
        payload = {**(exc.extra or {}), "ok": False, "error": exc.kind, "message": exc.message}
        if isinstance(exc, RejectedError):
            payload.update(check=exc.check, reason=exc.reason)
        print_json(payload)
    # messages quote paths, ids and model errors: untrusted text, kept from driving the terminal or rich markup
    stderr.print(f"[bold red]error:[/] {safe(exc.message)}", highlight=False, markup=True, soft_wrap=True)
    if hint and not json_mode:
        stderr.print(safe(hint), highlight=False, soft_wrap=True)


def _usage_error(exc) -> tuple[UsageError, str]:
    """A Typer/Click usage error (unknown option, bad value, missing argument) as lw's own, plus a help hint."""
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "lw"
    message = exc.format_message()
    return UsageError(f"{command}: {message}"), f"Try '{command} --help' for help."


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app and map known exceptions to a one-line message and exit code.

    Typer runs non-standalone so that its usage errors reach this map too: with
    --json they are a JSON document like every other failure, without it one
    line and a hint on stderr (never a boxed panel).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    json_mode = "--json" in args
    try:
        code = app(args=args, prog_name="lw", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except SystemExit as exc:  # shell completion ends this way
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        stderr.print(str(exc.code))
        return EXIT_USAGE
    except _FRAMEWORK_ERRORS as exc:  # Typer's own errors: usage mistakes (exit 2) and the like
        if type(exc).__name__ == "NoArgsIsHelpError":  # plain `lw`: the help is already on screen
            return EXIT_USAGE
        error, hint = _usage_error(exc)
        error.exit_code = getattr(exc, "exit_code", EXIT_USAGE) or EXIT_USAGE
        _report_error(error, json_mode, hint)
        return error.exit_code
    except typer.Abort:
        stderr.print("aborted")
        return EXIT_INTERNAL
    except LwError as exc:
        _report_error(exc, json_mode)
        return exc.exit_code
    except KeyboardInterrupt:
        stderr.print("interrupted")
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:  # a file the library did not expect to fail (read-only market, full disk): one line, exit 5
        from learnware_cli.market.store import os_error_text

        error = MarketError(os_error_text(exc))
        _report_error(error, json_mode)
        return error.exit_code
    except Exception:  # a bug: keep the traceback for the report
        import traceback

        traceback.print_exc()
        return EXIT_INTERNAL


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
