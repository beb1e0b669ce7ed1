"""The exception hierarchy of ckpt-tools: one root, turned into a one-line message at the CLI."""

from __future__ import annotations


class CkptToolsError(Exception):
    """Root of every error ckpt-tools raises on purpose; the CLI prints it as one line and exits 2."""

    exit_code = 2


class UsageError(CkptToolsError, ValueError):
    """The call itself is wrong: bad argument values, missing arguments, conflicting arguments.

    When one argument is at fault, `argument` names it (the library's keyword, e.g. `require`) and `detail` is the
    message without the argument's name, so that a front end can speak of its own spelling (the CLI's `--require`).
    """

    def __init__(self, message: str, *, argument: str | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.argument = argument
        self.detail = message if detail is None else detail


class FormatNotRecognizedError(CkptToolsError, ValueError):
    """No reader accepted the path; the message lists why each one declined."""


class CorruptCheckpointError(CkptToolsError, ValueError):
    """The artifact's bytes do not parse: bad magic, truncation, offsets past the end, bad protos."""


class ChecksumError(CorruptCheckpointError):
    """Stored bytes do not match their recorded CRC32C."""


class MissingFileError(CkptToolsError, FileNotFoundError):
    """A file the artifact needs (a shard, an index, a member) is absent."""


class UnsafeInputError(CkptToolsError, ValueError):
    """The artifact asks for something ckpt-tools refuses to do: escape its folder, follow external links,
    allocate an absurd amount of memory."""


class MissingDependencyError(CkptToolsError, ImportError):
    """An optional dependency is needed for this operation; the message names the extra to install."""


class ConversionError(CkptToolsError, ValueError):
    """A conversion cannot be done faithfully: unmatched variables, shape mismatches, unplaceable slots."""


class OutputExistsError(CkptToolsError, FileExistsError):
    """The output path exists and replacing it was not asked for (`force=True`)."""
