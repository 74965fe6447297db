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
from learnware_cli.cli.output import print_json, safe, stderr
from learnware_cli.errors import EXIT_INTERNAL, EXIT_USAGE, LwError, MarketError, RejectedError

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
    add_completion=False,
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
search_cmd.register(app)
reuse_cmd.register(app)


def _report_error(exc: LwError, json_mode: bool) -> None:
    if json_mode:
        payload = {"ok": False, "error": exc.kind, "message": exc.message}
        if isinstance(exc, RejectedError):
            payload.update(check=exc.check, reason=exc.reason)
        print_json(payload)
    # messages quote paths, ids and model errors: untrusted text, kept from driving the terminal or rich markup
    stderr.print(f"[bold red]error:[/] {safe(exc.message)}", highlight=False, markup=True, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app and map known exceptions to a one-line message and exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    json_mode = "--json" in args
    try:
        app(args=args, prog_name="lw")  # standalone: usage errors and --help end in SystemExit
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        stderr.print(str(exc.code))
        return EXIT_USAGE
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
    return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
