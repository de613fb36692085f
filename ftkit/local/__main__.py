"""``python -m ftkit.local``: run and manage the local OpenAI-compatible fine-tuning server.

    python -m ftkit.local serve [--host 127.0.0.1] [--port 8765] [--home ~/.ftkit]
    python -m ftkit.local status | stop
    python -m ftkit.local register-model NAME PATH   # a Hugging Face directory or a .gguf file
    python -m ftkit.local export MODEL --format adapter|merged|gguf --out DIR
    python -m ftkit.local recipe JOB_ID --out DIR     # or --spec job.json: the job as a TRL recipe
    python -m ftkit.local import-adapter DIR --base MODEL [--suffix NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .control import DEFAULT_PORT, home_dir, running_server, stop_server
from .store import (
    UnusableDatabase,
    check_database,
    make_home_private,
    private_umask,
    shared_directory,
)


def prepare_home(home: Path) -> None:
    """Before the server opens anything: a private umask (inherited by the trainers it starts), a
    private home (an older, looser one tightened, said in one line), a usable database (else
    :class:`UnusableDatabase` with the one message to show)."""
    private_umask()
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    if shared_directory(home):
        print(f"warning: the home {home} is a shared directory; only ftkit's own files in it are made private. "
              "Set FTKIT_HOME to a directory of its own.", flush=True)
    tightened = make_home_private(home)
    if tightened:
        print(f"made the home {home} private: {tightened} of its files and folders could be read by other users; "
              "now folders are 0700 and files 0600", flush=True)
    for note in check_database(home):
        print(note, flush=True)


def serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from .api.app import create_app
    except ImportError as e:
        print(f"the local server needs the 'local' extra: pip install 'ftkit[local]' ({e})", file=sys.stderr)
        return 2
    home = home_dir(args.home)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host}, reachable from other machines; anyone with the key "
              f"in {home / 'api_key'} can use it", file=sys.stderr)
    try:
        prepare_home(home)
        app = create_app(home, max_upload_mb=args.max_upload_mb, trainer_threads=args.trainer_threads,
                         log=lambda m: print(m, flush=True))
    except UnusableDatabase as e:  # one message with the way out, no traceback
        print(f"ftkit: {e}", file=sys.stderr, flush=True)
        return 2
    info = home / "server.json"

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets)
            info.write_text(json.dumps({"pid": os.getpid(), "host": args.host, "port": args.port}))
            print(f"ftkit local server on http://{args.host}:{args.port}/v1 (home {home})", flush=True)

    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    try:
        Server(config).run()
    finally:
        try:
            if json.loads(info.read_text()).get("pid") == os.getpid():
                info.unlink()
        except (OSError, ValueError):
            pass
    return 0


def status(args: argparse.Namespace) -> int:
    home = home_dir(args.home)
    info = running_server(home)
    if info is None:
        print(f"no server running for {home}")
        return 1
    print(f"running: pid {info.pid}, {info.base_url} (home {home})")
    return 0


def stop(args: argparse.Namespace) -> int:
    stopped = stop_server(home_dir(args.home))
    print("stopped" if stopped else "no server was running")
    return 0


def register(args: argparse.Namespace) -> int:
    from .services.platform import APIError, Platform
    from .store import Store

    home = home_dir(args.home)
    try:
        prepare_home(home)
        row = Platform(Store(home), max_upload_bytes=0).register_base_model(args.name, args.path)
    except APIError as e:
        print(e.message, file=sys.stderr)
        return 2
    except UnusableDatabase as e:
        print(f"ftkit: {e}", file=sys.stderr)
        return 2
    print(f"registered base model {row['id']} from {row['source']}")
    return 0


def export(args: argparse.Namespace) -> int:
    """Export a fine-tuned model (ftkit.local.export); a clear message and exit 2 when it cannot."""
    try:
        from .export import ExportError, export_model
        from .inference.weights import ModelNotAvailable
    except ImportError as e:
        print(f"export needs the 'local' extra: pip install 'ftkit[local]' ({e})", file=sys.stderr)
        return 2
    types = [t.strip() for t in (args.gguf_types or "").split(",") if t.strip()]
    try:
        export_model(args.model, args.format, args.out, args.home, base=args.base, gguf_types=types,
                     dtype=args.dtype, overwrite=args.force)
    except (ExportError, ModelNotAvailable, OSError) as e:
        print(f"ftkit export: {e}", file=sys.stderr)
        return 2
    return 0


def recipe(args: argparse.Namespace) -> int:
    """Write a job (or a job spec) as a TRL recipe (ftkit.local.recipes); exit 2 with the reason when it cannot."""
    from .recipes import RecipeError, commands, recipe_from_job, recipe_from_spec, write_recipe

    if (args.job is None) == (args.spec is None):
        print("ftkit recipe: give a JOB_ID or --spec job.json (one of them)", file=sys.stderr)
        return 2
    try:
        job = recipe_from_spec(args.spec, args.home) if args.spec else recipe_from_job(args.job, args.home)
        out = write_recipe(job, args.out, overwrite=args.force, gpus=args.gpus)
    except (RecipeError, OSError) as e:
        print(f"ftkit recipe: {e}", file=sys.stderr)
        return 2
    print(f"wrote the {job.method} recipe of {job.job_id or args.spec} to {out}; in that folder:")
    for name, line in commands(job, gpus=args.gpus).items():
        print(f"  {name.replace('_', ' ')}: {line}")
    return 0


def import_adapter(args: argparse.Namespace) -> int:
    """Register an adapter trained elsewhere as a fine-tuned model (ftkit.local.recipes.import_adapter)."""
    from .recipes import ImportError_
    from .recipes import import_adapter as register_adapter

    try:
        prepare_home(home_dir(args.home))
        model = register_adapter(args.adapter, args.base, suffix=args.suffix, home=args.home)
    except (ImportError_, UnusableDatabase, OSError) as e:
        print(f"ftkit import-adapter: {e}", file=sys.stderr)
        return 2
    print(f"imported {args.adapter} as {model}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ftkit.local", description="ftkit's local fine-tuning server")
    parser.add_argument("--home", type=Path, default=None, help="data directory (default $FTKIT_HOME or ~/.ftkit)")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the server in the foreground")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=DEFAULT_PORT)
    s.add_argument("--home", type=Path, default=argparse.SUPPRESS)
    s.add_argument("--max-upload-mb", type=float, default=float(os.environ.get("FTKIT_MAX_UPLOAD_MB", 512)))
    s.add_argument("--trainer-threads", type=int, default=None, help="torch threads for training (default: all)")
    s.add_argument("--log-level", default="warning")
    s.set_defaults(run=serve)
    sub.add_parser("status", help="is a server running for this home?").set_defaults(run=status)
    sub.add_parser("stop", help="stop the server of this home").set_defaults(run=stop)
    r = sub.add_parser("register-model", help="add a base model from a local HF directory or GGUF file")
    r.add_argument("name")
    r.add_argument("path")
    r.set_defaults(run=register)
    e = sub.add_parser("export", help="export a fine-tuned model as a PEFT adapter, a merged model or GGUF files",
                       description="MODEL: a fine-tuned model id (ft:...), a checkpoint id (ftckpt_...), a checkpoint "
                                   "model id (ft:...:ckpt-step-N) or a job id; for merged/gguf also a base model name. "
                                   "Reads the store directly: the server may run or not.")
    e.add_argument("model")
    e.add_argument("--format", required=True, choices=["adapter", "merged", "gguf"])
    e.add_argument("--out", required=True, type=Path, help="folder to write (created; must be empty or new)")
    e.add_argument("--home", type=Path, default=argparse.SUPPRESS)
    e.add_argument("--base", default=None,
                   help="adapter: what adapter_config.json names as the base (default: the hub id, e.g. "
                        "HuggingFaceTB/SmolLM2-135M-Instruct)")
    e.add_argument("--gguf-types", default="f16,q8_0", help="gguf: comma-separated types among f32,f16,bf16,q8_0 "
                                                           "(default f16,q8_0)")
    e.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="merged: weight type (default float32, the server's precision)")
    e.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    e.set_defaults(run=export)
    rc = sub.add_parser("recipe", help="write a job as a TRL recipe (train.py, TRL config, accelerate configs)",
                        description="Writes what TRL and accelerate need to run the same job on one or many GPUs; "
                                    "see ftkit/local/recipes.py.")
    rc.add_argument("job", nargs="?", default=None, help="a fine-tuning job id of the local server (run or not)")
    rc.add_argument("--spec", type=Path, default=None, help="a job spec not run yet: JSON in the shape of "
                                                            "POST /v1/fine_tuning/jobs, files as paths")
    rc.add_argument("--out", required=True, type=Path, help="folder to write (created; must be empty or new)")
    rc.add_argument("--gpus", type=int, default=8, help="GPUs of the multi-GPU config (default 8)")
    rc.add_argument("--home", type=Path, default=argparse.SUPPRESS)
    rc.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    rc.set_defaults(run=recipe)
    ia = sub.add_parser("import-adapter", help="register a LoRA adapter trained elsewhere as a fine-tuned model")
    ia.add_argument("adapter", type=Path, help="a PEFT adapter folder (adapter_config.json, adapter_model.safetensors)")
    ia.add_argument("--base", required=True, help="the base model it adapts, as the local server names it")
    ia.add_argument("--suffix", default=None, help="the name's suffix: ft:BASE:local:SUFFIX:id")
    ia.add_argument("--home", type=Path, default=argparse.SUPPRESS)
    ia.set_defaults(run=import_adapter)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
