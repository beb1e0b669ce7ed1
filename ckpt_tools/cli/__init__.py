"""The `ckpt` command line: parse, call the library, render; every CkptToolsError becomes one line + exit 2."""

from __future__ import annotations

import importlib
import os
import re
import sys
from typing import Any

# numpy's bundled OpenBLAS starts one busy-waiting thread per core when numpy is imported; no command multiplies
# matrices, so those threads only took CPU from the work (0.08 of a 0.13 s `validate`, and the other core from
# the second `--jobs` process). Set before anything imports numpy; an explicit setting is left alone.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import click

from ckpt_tools import __version__
from ckpt_tools.errors import CkptToolsError, UsageError
from ckpt_tools.messages import bounded, flat, printable

COMMANDS = ("inspect", "diff", "validate", "convert", "ls", "scan")


class CkptGroup(click.Group):
    """Loads sub-commands lazily and turns library errors into one stderr line with exit code 2."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module = importlib.import_module(f"ckpt_tools.cli.{cmd_name}_cmd")
        command: click.Command = module.command
        return command

    def invoke(self, ctx: click.Context) -> Any:
        from ckpt_tools.cli.terminal import safe_output
        from ckpt_tools.readers.confine import following_symlinks

        with safe_output(), following_symlinks(False):  # each command starts confined; its flag may lift it
            return self._invoke(ctx)

    def _invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CkptToolsError as exc:
            click.echo(f"ckpt: error: {self.message(ctx, exc)}", err=True)
            ctx.exit(exc.exit_code)
        except OSError as exc:
            name = getattr(exc, "filename", None)
            click.echo(f"ckpt: error: {name + ': ' if name else ''}{exc.strerror or one_line(exc)}", err=True)
            ctx.exit(2)
        except MemoryError:
            click.echo("ckpt: error: out of memory while reading the artifact", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("ckpt: interrupted", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as exc:
            if os.environ.get("CKPT_DEBUG"):
                raise
            click.echo(
                f"ckpt: error: internal error ({type(exc).__name__}: {one_line(exc)}); "
                "set CKPT_DEBUG=1 for a traceback",
                err=True,
            )
            ctx.exit(2)

    def message(self, ctx: click.Context, exc: CkptToolsError) -> str:
        """The one-line message; a usage error about one library argument speaks of the command's own flag."""
        if isinstance(exc, UsageError) and exc.argument is not None and ctx.invoked_subcommand:
            flag = flag_for(self.get_command(ctx, ctx.invoked_subcommand), exc.argument)
            if flag is not None:
                return one_line(UsageError(f"{flag}: {exc.detail}"))
        text = one_line(exc)
        command = self.get_command(ctx, ctx.invoked_subcommand) if ctx.invoked_subcommand else None
        return _flags_for_arguments(text, command)


def _flags_for_arguments(text: str, command: click.Command | None) -> str:
    """Hints inside library messages name keyword arguments (`force=True`, `rules=`); say the flag instead."""
    for param in command.params if command is not None else ():
        if isinstance(param, click.Option) and param.name:
            text = re.sub(rf"\b{re.escape(param.name)}=(True\b)?(?![\w'\"])", param.opts[0], text)
    return text


def flag_for(command: click.Command | None, argument: str) -> str | None:
    """How `command` spells the library argument `argument`: its option (`--require`) or argument (`PATHS`)."""
    for param in command.params if command is not None else ():
        if param.name == argument:
            return param.opts[0] if isinstance(param, click.Option) else param.human_readable_name
    return None


def one_line(exc: BaseException) -> str:
    """The message on one line, printable whatever bytes a hostile file put into names."""
    return bounded(printable(flat(exc)))


@click.group(cls=CkptGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120})
@click.version_option(__version__, prog_name="ckpt")
def main() -> None:
    """Inspect, diff, validate and convert TensorFlow/Keras checkpoints.

    Exit codes: 0 ok / identical / valid, 1 differences or validation failures, 2 errors.

    \b
    Examples:
      ckpt inspect fixtures/tf1_adam
      ckpt validate fixtures/tf1_adam fixtures/keras3_adam/model.keras
    """


def run() -> None:  # pragma: no cover - console entry for `python -m ckpt_tools`
    sys.exit(main())
