"""Command line: ``python -m ftkit validate FILE [--model M]`` and ``python -m ftkit migrate ...``.


    python -m ftkit validate FILE [--model M] [--max-line-mb MB]
    python -m ftkit migrate snapshot --out DIR [--golden N] [--yes | --max-cost-usd USD]
    python -m ftkit migrate replay DIR [--map HOSTED=LOCAL ...] [--wait]
    python -m ftkit migrate compare DIR

Exit status of ``validate``: 0 valid (warnings allowed), 1 the file has errors (each named with
its line: an over-long or over-deep line too), 2 the input is unusable (missing, unreadable, or
not a regular file: a directory, a FIFO, a device -- refused at once) or the command is wrong.
Each line is read up to ``--max-line-mb`` megabytes (default 16): a longer line is an error of
that line, skipped without being held in memory. ``migrate``: 0 done, 1 not approved or not all
done (nothing billable was sent without approval), 2 unusable input. Never a traceback (set
FTKIT_DEBUG=1 to see one for a bug report).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

EXIT_OK, EXIT_ERRORS, EXIT_UNUSABLE = 0, 1, 2
MAX_LINE_BYTES = 16_000_000  # ftkit.validation.MAX_LINE_BYTES, without importing numpy for --help


class GraderFileError(ValueError):
    """The --grader given to ``validate`` is not a usable grader."""


def _grader_fields(source: str) -> set[str]:
    """The ``{{ item.<field> }}`` names a grader reads; ``source`` is a JSON file or inline JSON."""
    from . import graders

    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8") if path.is_file() else source
        grader = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GraderFileError(f"--grader {source}: not a JSON grader ({e})") from None
    try:
        return graders.compile_grader(grader).item_fields()
    except graders.GraderError as e:
        raise GraderFileError(f"--grader {source}: {e.param}: {e.message}") from None


def _validate(args: argparse.Namespace) -> int:
    from .tokens import UnknownModelError
    from .validation import MIN_EXAMPLES_FOR, UnusableInputError, validate

    try:
        fields = _grader_fields(args.grader) if args.grader else ()
        report = validate(args.file, model=args.model, encoding=args.encoding, method=args.method,
                          grader_fields=fields, max_line_bytes=int(args.max_line_mb * 1_000_000),
                          min_examples=MIN_EXAMPLES_FOR[args.role])
    except GraderFileError as e:
        print(f"ftkit validate: {e}", file=sys.stderr)
        return EXIT_UNUSABLE
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


def _pairs(values: list[str] | None, option: str) -> dict[str, str]:
    out = {}
    for value in values or []:
        left, sep, right = value.partition("=")
        if not sep or not left.strip() or not right.strip():
            raise ValueError(f"{option} takes KEY=VALUE, got {value!r}")
        out[left.strip()] = right.strip()
    return out


def _migrate(args: argparse.Namespace) -> int:
    import openai

    from . import migrate

    try:
        if args.migrate_command == "snapshot":
            from .backend import client

            if args.golden < 0 or args.max_tokens < 1:  # before any backend is reached (or started)
                raise migrate.MigrationError("--golden must be >= 0 and --max-tokens >= 1")
            source = client()
            migrate.snapshot(source, args.out, golden=args.golden, max_tokens=args.max_tokens, seed=args.seed,
                             yes=args.yes, max_cost_usd=args.max_cost_usd, jobs=args.job,
                             local_files=_pairs(args.file, "--file"), model_for=_pairs(args.model_for, "--model-for"),
                             concurrency=args.concurrency)
            print(f"Snapshot in {args.out} ({migrate.MANIFEST})")
            return EXIT_OK
        target = migrate.target_client(args.backend, home=args.home, base_url=args.base_url)
        if args.migrate_command == "replay":
            table = migrate.replay(target, args.dir, model_map=_pairs(args.map, "--map"), jobs=args.job,
                                   auto_hyperparameters=args.auto_hyperparameters, wait=args.wait)
            if len(table):
                print(table.to_string(index=False))
            bad = [s for s in table.get("status", []) if str(s).startswith("error")]
            return EXIT_ERRORS if bad else EXIT_OK
        result = migrate.compare(target, args.dir, concurrency=args.concurrency)
        print(result)
        print(f"report: {result.report_path}")
        return EXIT_OK
    except migrate.CostNotApproved as e:
        print(f"ftkit migrate: {e}", file=sys.stderr)
        return EXIT_ERRORS
    except (migrate.MigrationError, ValueError, OSError) as e:
        print(f"ftkit migrate: {e}", file=sys.stderr)
        return EXIT_UNUSABLE
    except openai.APIError as e:
        print(f"ftkit migrate: the API answered {type(e).__name__}: {getattr(e, 'message', e)}", file=sys.stderr)
        return EXIT_UNUSABLE


def build_parser() -> argparse.ArgumentParser:
    from . import methods  # the registered methods (torch-free, cheap)

    parser = argparse.ArgumentParser(prog="python -m ftkit", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="check a fine-tuning JSONL file and summarise every problem")
    v.add_argument("file", help="path to a .jsonl training or validation file")
    v.add_argument("--model", help="target model: picks the tokenizer and the per-example limit")
    v.add_argument("--encoding", choices=["o200k_base", "cl100k_base"], help="count with this encoding")
    v.add_argument("--lines", type=int, default=5, help="problems shown per code (default 5)")
    v.add_argument("--max-line-mb", type=_positive_mb, default=MAX_LINE_BYTES / 1_000_000,
                   help=f"longest line read, in MB (default {MAX_LINE_BYTES / 1_000_000:g}); a longer line is an error")
    v.add_argument("--method", choices=methods.names(), default=None,
                   help="the job's method (default: read from the first line's shape)")
    v.add_argument("--grader", metavar="GRADER_JSON",
                   help="reinforcement: the job's grader (a .json file or inline JSON); every line must "
                        "carry the item fields it reads")
    v.add_argument("--role", choices=["training", "validation"], default="training",
                   help="the file's role in a job: its minimum number of examples (training 10, validation 1)")
    v.add_argument("--json", action="store_true", help="print the full report as JSON")
    v.set_defaults(run=_validate)

    m = sub.add_parser("migrate", help="move hosted fine-tunes: snapshot jobs + golden set, replay, compare")
    msub = m.add_subparsers(dest="migrate_command", required=True)
    s = msub.add_parser("snapshot", help="record every fine-tuning job, its files and a golden set (resumable)",
                        description="The source is chosen as the openai SDK would: OPENAI_API_KEY/OPENAI_BASE_URL, or "
                                    "AZURE_OPENAI_API_KEY/AZURE_OPENAI_ENDPOINT/OPENAI_API_VERSION (FTKIT_BACKEND "
                                    "forces one); with none, ftkit's local server.")
    s.add_argument("--out", required=True, help="snapshot folder (created; an existing one is resumed)")
    s.add_argument("--golden", type=int, default=50, help="golden prompts per fine-tuned model (default 50; 0: none)")
    s.add_argument("--max-tokens", type=int, default=256, help="max_tokens of each golden answer (default 256)")
    s.add_argument("--seed", type=int, default=0, help="seed of the golden sample (default 0)")
    s.add_argument("--yes", action="store_true", help="approve the golden set's cost without asking")
    s.add_argument("--max-cost-usd", type=float, default=None, help="approve it if the worst case is within this")
    s.add_argument("--job", action="append", help="only this job id (repeatable)")
    s.add_argument("--file", action="append", metavar="FILE_ID=PATH",
                   help="your own copy of a file the platform will not let you download (repeatable)")
    s.add_argument("--model-for", action="append", metavar="JOB_ID=MODEL",
                   help="ask this model for the job's golden set (e.g. an Azure deployment name)")
    s.add_argument("--concurrency", type=int, default=8)
    for name, help_text in (("replay", "re-create each succeeded job on the target backend (resumable)"),
                            ("compare", "ask the replayed models the golden prompts and report agreement")):
        r = msub.add_parser(name, help=help_text)
        r.add_argument("dir", help="the snapshot folder")
        r.add_argument("--backend", choices=["local", "openai", "azure"], default=None,
                       help="target backend (default: $FTKIT_BACKEND, else the local server)")
        r.add_argument("--home", default=None, help="local target: the server's home (default $FTKIT_HOME)")
        r.add_argument("--base-url", default=None,
                       help="an OpenAI-compatible target URL; key from FTKIT_TARGET_API_KEY (else OPENAI_API_KEY)")
        if name == "replay":
            r.add_argument("--map", action="append", metavar="HOSTED=TARGET",
                           help="base model mapping, fnmatch patterns allowed (default: every gpt-* model -> "
                                "SmolLM2-135M-Instruct on a local target)")
            r.add_argument("--job", action="append", help="only this source job id (repeatable)")
            r.add_argument("--auto-hyperparameters", action="store_true",
                           help="let the target choose hyperparameters instead of copying the hosted ones")
            r.add_argument("--wait", action="store_true", help="follow each job until it ends")
        else:
            r.add_argument("--concurrency", type=int, default=16)
    m.set_defaults(run=_migrate)
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
