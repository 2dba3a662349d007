"""The `framepack` command: generate, models, download."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .errors import GenerationCancelled, InputError, ModelNotAvailableError

REQUEST_FIELDS = {
    # flag: (type, help). Defaults and ranges live in engine/request.py; unset flags keep them.
    "negative_prompt": (str, "negative prompt (used when --true-cfg-scale > 1)"),
    "aspect_ratio": (str, "16:9 or 9:16 (default 16:9)"),
    "resolution": (str, "480p or 720p (default 720p)"),
    "seed": (int, "-1 for random (default); the seed used is printed"),
    "num_inference_steps": (int, "sampling steps per section, 4-50 (default 25)"),
    "num_frames": (int, "frames of the video at 30 fps, 30-1800 (default 180)"),
    "guidance_scale": (float, "distilled guidance, 0-32 (default 10)"),
    "true_cfg_scale": (
        float,
        "true classifier-free guidance with the negative prompt, 1-32 (default 1: off)",
    ),
    "sampler": (str, "unipc (the reference's, default) or euler"),
    "latent_window_size": (int, "latent frames per section, 1-33 (default 9)"),
    "teacache_threshold": (float, "TeaCache's threshold, 0-1 (default 0.15; higher skips more steps)"),
}


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-dir", type=Path, help="local folder with <owner>/<name> copies of the repos")
    p.add_argument("--cache-dir", type=Path, help="where tiny models and work files go")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="framepack", description="Self-hosted FramePack image-to-video")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="turn an image and a prompt into an MP4")
    gen.add_argument("--image", required=True, help="path, http(s) URL, data URI or base64")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--last-image", help="end image (inverted-order models)")
    gen.add_argument("--model", default="framepack", help="framepack, framepack-f1, tiny, tiny-f1 ...")
    for name, (kind, text) in REQUEST_FIELDS.items():
        gen.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, help=text)
    gen.add_argument(
        "--enable-teacache", action="store_true", default=None,
        help="skip the transformer on steps whose input barely changed (faster, not exact)",
    )  # fmt: skip
    gen.add_argument("--attention", help="attention kernel: native (default), flash, sage ... (diffusers' names)")
    gen.add_argument(
        "--compile", action="store_true", default=None, help="torch.compile the transformer (compile time printed)"
    )
    gen.add_argument("--out", type=Path, default=Path("video.mp4"), help="output MP4 (default video.mp4)")
    gen.add_argument("--device", help="cuda, cuda:1, cpu (default: best available)")
    gen.add_argument("--memory", help="auto, resident, offload, group, cpu, fp8 or fp8-group (default auto)")
    gen.add_argument("--crf", type=int, help="H.264 quality, 0-51 (default 16)")
    gen.add_argument("--checkpoint-dir", type=Path, help="save section checkpoints here; resume from them")
    _add_model_options(gen)

    models = sub.add_parser("models", help="list the models and whether each is on this machine")
    _add_model_options(models)

    dl = sub.add_parser("download", help="fetch (or, for tiny models, build) the files a model needs")
    dl.add_argument("model")
    _add_model_options(dl)

    serve = sub.add_parser("serve", help="run the HTTP API with an embedded worker")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument("--model-family", help="real (FramePack weights, default) or tiny (random, offline)")
    serve.add_argument("--no-auth", action="store_true", default=None, help="no API keys (loopback only)")
    serve.add_argument("--no-worker", dest="run_worker", action="store_false", default=None, help="API only")
    _add_server_options(serve)

    worker = sub.add_parser("worker", help="run one worker (no API) on the job database; SIGTERM stops it gracefully")
    worker.add_argument("--model-family", help="real (FramePack weights, default) or tiny (random, offline)")
    worker.add_argument("--worker-id", help="this worker's name in status and metrics (default: host-pid-random)")
    worker.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics of this worker on this port")
    worker.add_argument("--host", help="address for --metrics-port (default 127.0.0.1)")
    _add_server_options(worker)

    status = sub.add_parser("status", help="queue depth and running jobs with their worker and progress")
    _add_server_options(status)

    db = sub.add_parser("db", help="the job database")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    _add_server_options(db_sub.add_parser("upgrade", help="run the Alembic migrations up to the latest"))

    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key (printed once)")
    create.add_argument("--name", required=True)
    listing = keys_sub.add_parser("list", help="list keys (never their secret)")
    revoke = keys_sub.add_parser("revoke", help="revoke a key by id or prefix")
    revoke.add_argument("key")
    secret = keys_sub.add_parser("webhook-secret", help="print the secret that signs webhooks (hex)")
    for p in (create, listing, revoke, secret):
        _add_server_options(p)
    return parser


def _add_server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, help="job database, files and checkpoints")
    p.add_argument("--database", help="postgresql://user:pw@host/db or another SQLAlchemy URL (default: SQLite)")
    p.add_argument("--storage", help="s3://bucket/prefix or a local folder (default: DATA_DIR/files)")
    p.add_argument("--storage-endpoint-url", help="S3 endpoint for MinIO, Ceph, R2 ... (keys: AWS_* variables)")
    p.add_argument("--lease-seconds", type=float, help="how long a silent worker keeps a job (default 30)")
    p.add_argument("--max-attempts", type=int, help="tries per job before it fails (default 3)")
    p.add_argument("--device", help="cuda, cuda:1, cpu (default: best available)")
    p.add_argument("--memory", help="auto, resident, offload, group, fp8, fp8-group or cpu (default auto)")
    p.add_argument("--attention", help="attention backend by diffusers' name (native, flash, sage ...)")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the transformer's blocks")
    _add_model_options(p)


def _settings(args: argparse.Namespace):
    from .config import get_settings

    return get_settings(
        model_dir=args.model_dir,
        cache_dir=args.cache_dir,
        device=getattr(args, "device", None),
        memory=getattr(args, "memory", None),
        crf=getattr(args, "crf", None),
        attention=getattr(args, "attention", None),
        compile=getattr(args, "compile", None),
    )


def _generate(args: argparse.Namespace) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from .engine.request import GenerationParams
    from .generator import FramePack, read_images
    from .jobs.checkpoints import FolderCheckpoint
    from .progress import ProgressBar

    fields = {k: getattr(args, k) for k in (*REQUEST_FIELDS, "enable_teacache") if getattr(args, k) is not None}
    params = GenerationParams.parse(
        image=args.image, last_image=args.last_image, prompt=args.prompt, model=args.model, **fields
    ).resolved()
    settings = _settings(args)
    image, last_image = read_images(params, settings)
    fp = FramePack(args.model, settings=settings, device=args.device, memory=args.memory)
    print(
        f"{params.model} on {fp.engine.device} ({fp.engine.memory_mode.value} memory): {params.num_frames} frames "
        f"{params.size[0]}x{params.size[1]} in {params.sections} sections of {params.num_inference_steps} steps, "
        f"seed {params.seed}",
        file=sys.stderr,
    )
    checkpoint = FolderCheckpoint(args.checkpoint_dir) if args.checkpoint_dir else None
    with logging_redirect_tqdm(), ProgressBar(params.sections * params.num_inference_steps) as bar:
        result = fp.render(params, image, last_image, args.out, on_progress=bar.update, checkpoint=checkpoint)
    compiled = "" if fp.engine.compile_seconds is None else f"compile={fp.engine.compile_seconds:.1f}s "
    print(
        f"seed={result.seed} frames={result.frames} size={result.width}x{result.height} fps={result.fps} "
        f"time={result.seconds:.1f}s {compiled}out={result.path}"
    )
    return 0


def _models(args: argparse.Namespace) -> int:
    from .engine.loading import missing_repos
    from .engine.registry import MODELS

    settings = _settings(args)
    for spec in MODELS.values():
        missing = missing_repos(spec, settings.model_dir, settings.cache_dir)
        if not missing:
            state = "present"
        elif spec.tiny_preset:
            state = "not built (built on first use)"
        else:
            state = "missing: " + ", ".join(missing)
        print(f"{spec.name:<14} {spec.order.value:<9} {state:<40} {spec.description}")
    return 0


def _download(args: argparse.Namespace) -> int:
    from .engine.loading import download
    from .engine.registry import get_spec

    settings = _settings(args)
    spec = get_spec(args.model)
    where = download(spec, settings.model_dir, settings.cache_dir)
    print(f"{spec.name}: ready ({where or 'Hugging Face cache'})")
    return 0


def _server_settings(args: argparse.Namespace):
    from .config import get_server_settings

    names = ("host", "port", "model_family", "no_auth", "run_worker", "data_dir", "database", "device",
             "memory", "model_dir", "cache_dir", "storage", "storage_endpoint_url", "lease_seconds", "max_attempts",
             "worker_id", "metrics_port", "attention", "compile")  # fmt: skip
    return get_server_settings(**{n: getattr(args, n, None) for n in names})


def _worker(args: argparse.Namespace) -> int:
    from .server import run_worker

    run_worker(_server_settings(args))
    return 0


def _status(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from .api.services import build_services

    services = build_services(_server_settings(args))
    counts = services.jobs.counts()
    oldest = services.jobs.oldest_waiting()
    now = datetime.now(UTC)
    waited = f", oldest waiting {(now - oldest).total_seconds():.0f} s" if oldest else ""
    print(f"queue: {counts['created']} waiting{waited}; " + ", ".join(f"{s} {n}" for s, n in counts.items()))
    running, _total = services.jobs.list(None, page=1, page_size=100, states=["processing"])
    print(f"running: {len(running)}")
    for job in running:
        p = job.progress or {}
        where = f"section {p.get('section', '?')}/{p.get('sections', '?')} "
        where += f"step {p.get('step', '?')}/{p.get('steps', '?')}"
        eta = f"eta {p['eta_seconds']:.0f} s" if p.get("eta_seconds") is not None else ""
        lease = f"lease {(job.lease_until - now).total_seconds():+.0f} s" if job.lease_until else "no lease"
        print(f"  {job.id}  {job.model:<28} {job.worker_id or '-':<24} {where:<26} {eta:<10} {lease}")
    workers = [w for w in services.roster.list() if w.state != "stopped" or (now - w.last_seen).total_seconds() < 3600]
    print(f"workers: {len(workers)}")
    for w in workers:
        seen = (now - w.last_seen).total_seconds()
        gpu = f" gpu {w.gpu_memory_bytes / 2**30:.1f} GiB" if w.gpu_memory_bytes is not None else ""
        job = f" job {w.job_id}" if w.job_id else ""
        print(f"  {w.id:<24} {w.host}:{w.pid} {w.device:<8} {w.state:<8} last heartbeat {seen:.0f} s ago, "
              f"{w.jobs_done} done{gpu}{job}")  # fmt: skip
    return 0


def _db(args: argparse.Namespace) -> int:
    from .jobs.db import upgrade_database

    settings = _server_settings(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_database(settings.database_url)
    print(f"database at the latest schema: {settings.database_url}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .server import serve

    serve(_server_settings(args))
    return 0


def _keys(args: argparse.Namespace) -> int:
    from .api.services import build_services

    settings = _server_settings(args)
    services = build_services(settings)
    if args.keys_command == "webhook-secret":
        from .jobs.keys import shared_secret

        print(shared_secret(services.db, "webhook-signing", settings.data_dir / "webhook.key").hex())
        return 0
    keys = services.keys
    if args.keys_command == "create":
        plaintext, info = keys.create_key(args.name)
        print(f"{plaintext}\n(key {info.id} '{info.name}': shown once, stored hashed)")
    elif args.keys_command == "list":
        for info in keys.list_keys():
            state = f"revoked {info.revoked_at:%Y-%m-%d}" if info.revoked_at else "active"
            print(f"{info.id}  {info.prefix}...  {info.name:<20} {info.created_at:%Y-%m-%d %H:%M}  {state}")
    elif not keys.revoke_key(args.key):
        print(f"error: key: no active key {args.key!r}", file=sys.stderr)
        return 2
    return 0


COMMANDS = {
    "generate": _generate, "models": _models, "download": _download, "serve": _serve, "keys": _keys,
    "worker": _worker, "status": _status, "db": _db,
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from .logs import quiet_libraries

    quiet_libraries()
    try:
        return COMMANDS[args.command](args)
    except InputError as exc:
        print(f"error: {exc.field}: {exc.message}", file=sys.stderr)
        return 2
    except ModelNotAvailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except GenerationCancelled:
        print("cancelled", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
