"""Entry point of the ``discanalysis`` command.

Each subcommand lives in its own module ``DiscAnalysisLib/cli/<name>.py`` exposing ``add_parser(subparsers)``
and ``run(args) -> int``; to add one, write the module and list it in :data:`SUBCOMMANDS`. Heavy imports
stay inside ``run`` so that ``discanalysis --help`` is instant.

Exit codes: 0 success, 2 bad input or usage (one line on stderr, no traceback), 130 cancelled,
1 internal error (a bug: the traceback is printed with ``--debug``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import CancelledError, DiscAnalysisError

#: Subcommand modules, in the order ``--help`` lists them.
SUBCOMMANDS: tuple[str, ...] = (
    "info", "segment", "markers", "grade", "fit", "run", "batch", "stats", "classify", "register", "demo",
)

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_CANCELLED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="discanalysis",
        description="Lumbar disc MRI analysis: segmentation, markers, grading, relaxometry, registration.",
    )
    parser.add_argument("--version", action="version", version=f"discanalysis {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks of internal errors")
    parser.add_argument(
        "--progress",
        choices=("bar", "lines", "none"),
        default="bar",
        help="progress display: a bar on stderr (default), machine-readable 'PROGRESS f msg' lines on stdout "
        "(used by the Slicer module's background runs), or none",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__package__}.{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    _quiet_itk_warnings()
    try:
        return int(args.handler(args) or EXIT_OK)
    except CancelledError as exc:
        print(f"discanalysis: cancelled: {exc}", file=sys.stderr)
        return EXIT_CANCELLED
    except KeyboardInterrupt:
        print("discanalysis: interrupted", file=sys.stderr)
        return EXIT_CANCELLED
    except DiscAnalysisError as exc:
        print(f"discanalysis {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - last-resort guard: one line unless --debug
        if args.debug:
            raise
        print(
            f"discanalysis {args.command}: internal error ({type(exc).__name__}: {exc}). "
            "This is a bug in DiscAnalysis; rerun with --debug and report the traceback.",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def progress_callback(args: argparse.Namespace, description: str):
    """The progress callback for ``args.progress``: a context manager yielding a callback (or None)."""
    import contextlib

    from ..progress import TqdmReporter, line_reporter

    if args.progress == "lines":
        return contextlib.nullcontext(line_reporter())
    if args.progress == "none":
        return contextlib.nullcontext(None)
    return TqdmReporter(description)


def _quiet_itk_warnings() -> None:
    # ITK prints multi-line warnings (e.g. 'Non uniform sampling') straight to stderr; they are noise for
    # a CLI user. Our own checks report what matters through logging.
    try:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalWarningDisplay(False)
    except Exception:  # noqa: BLE001 - never fail the CLI over a cosmetic setting
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
