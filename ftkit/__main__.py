"""Command line: ``python -m ftkit validate FILE [--model M]``.

Exit status: 0 valid (warnings allowed), 1 the file has errors (each named with its line: an
over-long or over-deep line too), 2 the input is unusable (missing, unreadable, or not a regular
file: a directory, a FIFO, a device -- refused at once) or the command is wrong. Never a
traceback (set FTKIT_DEBUG=1 to see one for a bug report).

Each line is read up to ``--max-line-mb`` megabytes (default 16): a longer line is an error of
that line, skipped without being held in memory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

EXIT_OK, EXIT_ERRORS, EXIT_UNUSABLE = 0, 1, 2
MAX_LINE_BYTES = 16_000_000  # ftkit.validation.MAX_LINE_BYTES, without importing numpy for --help


def _validate(args: argparse.Namespace) -> int:
    from .tokens import UnknownModelError
    from .validation import UnusableInputError, validate

    try:
        report = validate(args.file, model=args.model, encoding=args.encoding,
                          max_line_bytes=int(args.max_line_mb * 1_000_000))
    except UnusableInputError as e:
        print(f"ftkit validate: {e}", file=sys.stderr)
        return EXIT_UNUSABLE
    except UnknownModelError as e:
        print(f"ftkit validate: {e}", file=sys.stderr)
        return EXIT_UNUSABLE
    if args.json:
        out = {
            "file": report.source,
            "ok": report.ok,
            "examples": report.n_examples,
            "kind": report.kind,
            "encoding": report.encoding,
            "tokens": report.total_token_count,
            "counts": dict(report.codes()),
            "problems": [p.__dict__ for p in report.problems],
        }
        print(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        print(report.summary(max_lines=args.lines), end="")
    return EXIT_OK if report.ok else EXIT_ERRORS


def _positive_mb(value: str) -> float:
    try:
        mb = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0 < mb * 1_000_000 < 2**62:
        raise argparse.ArgumentTypeError(f"must be a positive number of megabytes, got {value!r}")
    return mb


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ftkit", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="check a fine-tuning JSONL file and summarise every problem")
    v.add_argument("file", help="path to a .jsonl training or validation file")
    v.add_argument("--model", help="target model: picks the tokenizer and the per-example limit")
    v.add_argument("--encoding", choices=["o200k_base", "cl100k_base"], help="count with this encoding")
    v.add_argument("--lines", type=int, default=5, help="problems shown per code (default 5)")
    v.add_argument("--max-line-mb", type=_positive_mb, default=MAX_LINE_BYTES / 1_000_000,
                   help=f"longest line read, in MB (default {MAX_LINE_BYTES / 1_000_000:g}); a longer line is an error")
    v.add_argument("--json", action="store_true", help="print the full report as JSON")
    v.set_defaults(run=_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse already printed the usage error
        return EXIT_UNUSABLE if e.code else EXIT_OK
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug in ftkit: say so plainly, no traceback unless asked
        if os.environ.get("FTKIT_DEBUG"):
            raise
        print(f"ftkit: internal error ({type(e).__name__}: {e}); rerun with FTKIT_DEBUG=1 for details",
              file=sys.stderr)
        return EXIT_UNUSABLE


if __name__ == "__main__":
    sys.exit(main())
