"""The `minerva` command: the desktop app by default, `serve` for the headless API."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from app import cli_models
from app.core.settings import BUNDLED_MODEL_ID, EngineSettings, ServerSettings

log = logging.getLogger("minerva")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minerva", description="Run language models locally.")
    parser.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="default: INFO for serve, WARNING for the other commands",
    )
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="run the OpenAI-compatible API without the GUI")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    serve.add_argument("--model", default=BUNDLED_MODEL_ID, help="model id (default: the bundled model)")
    serve.add_argument("--kv-bits", type=int, choices=[0, 4, 8], default=0, help="KV cache quantization")
    serve.add_argument("--context-length", type=_positive, default=8192)
    serve.add_argument("--max-concurrency", type=_positive, default=8)
    serve.add_argument(
        "--api-key",
        default=os.environ.get("MINERVA_API_KEY"),
        help="require this key (Bearer or x-api-key); default $MINERVA_API_KEY; needed off loopback",
    )
    serve.add_argument("--cors-origin", action="append", default=[], help="allow this browser origin (repeatable)")
    serve.add_argument("--allowed-host", action="append", default=[], help="accept this Host name too (repeatable)")
    cli_models.add_parser(commands)
    return parser


def _engine_settings(args: argparse.Namespace) -> EngineSettings:
    return EngineSettings(
        model=args.model,
        kv_bits=args.kv_bits,
        context_length=args.context_length,
        max_concurrency=args.max_concurrency,
    )


def run_serve(args: argparse.Namespace) -> int:
    from app.core.paths import models_dir
    from app.engine.engine import Engine
    from app.server.runner import serve

    server_settings = ServerSettings(
        host=args.host,
        port=args.port,
        api_key=args.api_key or None,
        cors_origins=tuple(args.cors_origin),
        allowed_hosts=tuple(args.allowed_host),
    )
    engine = Engine(_engine_settings(args), models_dir())
    engine.start()
    try:
        serve(server_settings, engine)
    except OSError as exc:
        log.error("Cannot listen on %s:%d: %s. Choose another --port.", args.host, args.port, exc.strerror or exc)
        return 2
    finally:
        engine.stop()
    return 0


def run_gui() -> int:
    from app.ui.placeholder import run

    return run()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    default_level = "INFO" if args.command == "serve" else "WARNING"
    logging.basicConfig(
        level=args.log_level or default_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        if args.command == "serve":
            return run_serve(args)
        if args.command == "models":
            return cli_models.run(args)
        return run_gui()
    except ValueError as exc:  # settings validation: say what is wrong, no traceback
        print(f"minerva: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
