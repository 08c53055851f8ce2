"""`headstart` command line: run the pipeline (as a Prefect flow), one stage, the demo, or `dvc repro`."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import time

from tasks.core.disk_space import disk_full_anywhere
from tasks.core.errors import UserError, exit_on_user_error
from tasks.core.params import load_params
from tasks.core.paths import default_paths
from tasks.core.stages import STAGES


def _print_result(results: dict, seconds: float) -> None:
    paths = default_paths()
    ev, ex = results["evaluate"], results["export"]

    def rel(p: str) -> str:
        return os.path.relpath(p, paths.root)

    print(f"\nheadstart: done in {seconds:.0f}s")
    from tasks.modality.registry import modality_for

    modality = modality_for(load_params().backbone)
    print(f"  model    {rel(ex['onnx'])}  (ONNX, raw {modality.noun} in, labels in {rel(ex['labels'])})")
    print(f"  metrics  {rel(ev['metrics_path'])}  (per class: models/metrics/per_class.json)")
    print(f"  plots    {rel(ev['confusion_png'])}")
    print(f"  {ev['split']} accuracy {ev['accuracy']:.3f}, macro F1 {ev['f1_macro']:.3f} on {ev['n']} {modality.noun}")


def cmd_run(args) -> None:
    from flows.prefect_api import use_project_server
    from tasks.dataset.sources import list_sources
    from tasks.modality.registry import modality_for, others_than

    # fail fast, before Prefect starts and before -S is written into params.yaml: a bad params file, override or
    # source, or data of the other modality than the backbone's (listing reads no file)
    params = load_params(overrides=args.set)
    modality = modality_for(params.backbone)
    list_sources(params.ingest, default_paths().root, modality, params.backbone.name, others_than(modality))
    t0 = time.perf_counter()
    use_project_server()
    from flows.train import train_flow

    results = train_flow(overrides=args.set or None, commit=not args.no_commit)
    _print_result(results, time.perf_counter() - t0)
    if args.command == "run":
        print("  this is a candidate; `headstart promote` makes it deployable (after the gate, when a champion exists)")


def cmd_promote(args) -> None:
    from flows.dvc_sync import record_promotion
    from tasks.registry.champions import serving_dir
    from tasks.registry.promotion import judge_and_publish

    paths = default_paths()
    if not paths.onnx.exists():
        raise UserError(f"{paths.onnx} not found: build a candidate first (`headstart run` or `dvc repro`)")
    recorder = None if getattr(args, "no_commit", False) else functools.partial(record_promotion, paths.root)
    record = judge_and_publish(load_params(), paths, recorder=recorder)  # the DVC/git record too, under its lock
    if record["action"] == "unchanged":
        print(f"headstart promote: the candidate is the champion v{record['champion_version']:04d} already")
        return
    if record["action"] != "promoted":
        print(f"headstart promote: rejected; champion v{record['champion_version']:04d} stays ({record['reason']})")
        raise SystemExit(1)
    print(f"headstart promote: v{record['champion_version']:04d} is the champion ({record['reason']}); deploy "
          f"repository {os.path.relpath(serving_dir(paths), paths.root)}/")


def _enter_text_demo_project(args) -> str:
    """Materialise the text demo's own project and BBC News in it, then make it this process's project (working
    directory and HEADSTART_ROOT): `run` and `promote` below read its params.yaml and write its models. Returns its
    path relative to the checkout."""
    from tasks.dataset.bbc_demo import TEXT_DEMO_DIR, TEXT_DEMO_PROJECT, make_project, materialise

    checkout = default_paths().root
    root = make_project(checkout / TEXT_DEMO_PROJECT, checkout)
    counts = materialise(root / TEXT_DEMO_DIR, per_class=args.per_class)
    print(f"demo data: {sum(counts.values())} BBC News articles in {len(counts)} topics -> {TEXT_DEMO_PROJECT}/"
          f"{TEXT_DEMO_DIR}, in the text demo's own project {TEXT_DEMO_PROJECT}/", file=sys.stderr)
    os.chdir(root)
    os.environ["HEADSTART_ROOT"] = str(root)
    return TEXT_DEMO_PROJECT


def cmd_demo(args) -> None:
    """Materialise demo data, then `run` and `promote`. No demo writes the checkout's params.yaml: the image demo
    runs on the checkout's params (the shipped ones read data/raw with an image backbone), the text demo in a project
    of its own (tasks.dataset.bbc_demo says why). `-S` writes into the params.yaml of the project the demo runs in."""
    project = None
    if args.text:
        project = _enter_text_demo_project(args)
    else:
        from tasks.dataset.clipart_demo import materialise

        paths = default_paths()
        source = load_params(overrides=args.set).ingest.source
        if (paths.root / source).resolve() != paths.raw.resolve():
            raise UserError(f"headstart demo trains on the clip-art images it puts in data/raw, but params.yaml reads "
                            f"ingest.source: {source} (`git checkout params.yaml` restores the shipped params; "
                            f"`headstart run` trains on your source)")
        counts = materialise(paths.raw, per_class=args.per_class)
        print(f"demo data: {sum(counts.values())} clip-art images in {len(counts)} classes -> "
              f"{os.path.relpath(paths.raw, paths.root)}", file=sys.stderr)
    cmd_run(args)
    cmd_promote(args)  # the demo ends with a deployable model (with nothing to beat, the gate passes)
    if project:
        print(f"the text demo's project is {project}/ (paths above are relative to it): `cd {project}` to predict, "
              f"serve, run or retrain on it; the checkout's params.yaml and models are as they were")


def cmd_stage(args) -> None:
    from tasks.core.stages import stage_function

    stage_function(args.name)(load_params(overrides=args.set))


def cmd_retrain(args) -> None:
    from flows.prefect_api import use_project_server

    use_project_server()
    from flows.retrain import retrain_flow

    record = retrain_flow(force=args.force)
    print(f"\nheadstart retrain: {record['action']}; champion v{record.get('champion_version')}"
          + (f" ({record['reason']})" if "reason" in record else ""))


def cmd_schedule(args) -> None:
    import datetime as dt

    from flows.prefect_api import local_server

    if not args.cron and not args.interval:
        raise UserError("schedule: give --cron \"0 3 * * 1\" or --interval SECONDS")
    with local_server(args.port) as api:
        from flows.retrain import retrain_flow

        when = f"cron '{args.cron}'" if args.cron else f"every {args.interval}s"
        print(f"serving the retrain flow ({when}) against {api}; Ctrl-C to stop", file=sys.stderr)
        schedule = {"cron": args.cron} if args.cron else {"interval": dt.timedelta(seconds=args.interval)}
        # limit=1: two retrains at once would only fight over the feature-store lock
        retrain_flow.serve(name=args.name, parameters={"root": str(default_paths().root)}, limit=1, **schedule)


def cmd_prefect(args) -> None:
    from flows.prefect_api import running_project_server, start_project_server, stop_project_server

    if args.command == "server":
        print("headstart server: deprecated, use `headstart prefect` (the local Prefect API; `headstart serve` is the "
              "inference server); this alias goes in the next release", file=sys.stderr)
    if args.action == "stop":
        print(f"headstart prefect: {stop_project_server()}")  # signals only the server it started
        return
    state = start_project_server() if args.action == "start" else running_project_server()
    print(f"headstart prefect: {state['api'].removesuffix('/api')} (pid {state['pid']})" if state
          else "headstart prefect: not running (the next `headstart run` starts it)")


def cmd_predict(args) -> None:
    from tasks.registry.champions import champion_model, champion_version
    from tasks.runtime.predict import predict

    paths = default_paths()
    model = args.model
    if model is None:
        champion = champion_model(paths)
        model = champion or paths.onnx
        which = (f"the champion v{champion_version(paths):04d}" if champion else
                 "the candidate (no champion yet: `headstart promote`)")
        print(f"predict: using {which}: {os.path.relpath(model, paths.root)}", file=sys.stderr)
    predict(args.inputs, model=model, top_k=args.top_k, out=args.out, batch_size=args.batch_size)


def cmd_serve(args) -> None:
    from tasks.inference_server.main import run_from_args

    run_from_args(args)


def cmd_repro(args) -> None:
    from flows.dvc_sync import dvc_command

    print(dvc_command(default_paths().root, "repro", *args.dvc_args, timeout=24 * 3600), end="")


def _with_overrides(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                   help="set a param (written to params.yaml, like `dvc exp run -S`)")
    return p


def _pipeline_commands(sub) -> None:
    """run, demo, stage, promote, retrain, schedule: the commands that build and judge models."""
    with_overrides = _with_overrides

    run = with_overrides(sub.add_parser("run", help="run the whole pipeline as a Prefect flow, then dvc commit"))
    run.add_argument("--no-commit", action="store_true", help="do not record the run with `dvc commit`")
    run.set_defaults(func=cmd_run)

    demo = with_overrides(sub.add_parser("demo", help="materialise the clip-art demo data (or, with --text, BBC News), "
                                                     "then `run` and `promote`"))
    demo.add_argument("--text", action="store_true", help="the text demo: BBC News (5 topics) with MiniLM")
    demo.add_argument("--per-class", type=int, default=None, help="at most N demo images (or articles) per class")
    demo.add_argument("--no-commit", action="store_true")
    demo.set_defaults(func=cmd_demo)

    stage = sub.add_parser("stage", help="run one stage without Prefect (what dvc.yaml runs)")
    stage.add_argument("name", choices=STAGES)
    stage.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a param for this run only")
    stage.set_defaults(func=cmd_stage)

    promote = sub.add_parser("promote", help="make the candidate deployable: the champion/challenger gate, then the "
                                            "registry and the deploy repository (exit 1 if rejected)")
    promote.set_defaults(func=cmd_promote)

    retrain = sub.add_parser("retrain", help="retrain on new data; promote only a challenger that is not worse")
    retrain.add_argument("--force", action="store_true", help="retrain even when no file changed")
    retrain.set_defaults(func=cmd_retrain)

    schedule = sub.add_parser("schedule", help="serve the retrain flow as a Prefect deployment on a cron schedule")
    schedule.add_argument("--cron", help='e.g. "0 3 * * 1" (Mondays 03:00)')
    schedule.add_argument("--interval", type=int, help="or: every N seconds")
    schedule.add_argument("--name", default="headstart-retrain")
    schedule.add_argument("--port", type=int, default=4200,
                          help="port of the local Prefect server started when PREFECT_API_URL is not set")
    schedule.set_defaults(func=cmd_schedule)


def _model_commands(sub) -> None:
    """predict, serve, repro, and the local Prefect API's lifecycle."""
    prefect = sub.add_parser("prefect", help="the project's local Prefect API, which stays up between runs "
                                             "(127.0.0.1)")
    prefect.add_argument("action", choices=["status", "start", "stop"])
    prefect.set_defaults(func=cmd_prefect)
    server = sub.add_parser("server", help="deprecated: `headstart prefect` (one release)")
    server.add_argument("action", choices=["status", "start", "stop"])
    server.set_defaults(func=cmd_prefect)

    pred = sub.add_parser("predict", help="top-k predictions of the exported model for files, folders or a CSV")
    pred.add_argument("inputs", nargs="+", help="image (or, for a text model, .txt) files, folders (searched "
                                                "recursively) or CSVs with a path column (text: or a text column)")
    pred.add_argument("--model", default=None, help="an exported .onnx (default: the champion, else the candidate)")
    pred.add_argument("--top-k", type=int, default=3)
    pred.add_argument("--out", default=None, help="output .csv or .json (default: CSV on stdout)")
    pred.add_argument("--batch-size", type=int, default=32)
    pred.set_defaults(func=cmd_predict)

    from tasks.inference_server.main import add_arguments as serve_arguments

    serve = serve_arguments(sub.add_parser("serve", help="serve the champion over the V2 inference protocol (REST and "
                                                          "gRPC, as Triton does), switching on each promotion"))
    serve.set_defaults(func=cmd_serve)

    repro = sub.add_parser("repro", help="`dvc repro` with the project's Python on PATH")
    repro.add_argument("dvc_args", nargs=argparse.REMAINDER)
    repro.set_defaults(func=cmd_repro)


def build_parser() -> argparse.ArgumentParser:
    """The `headstart` argument parser; building it imports neither torch nor Prefect."""
    ap = argparse.ArgumentParser(prog="headstart", description="Transfer learning: images or texts -> a deployable "
                                                               "classifier.")
    sub = ap.add_subparsers(dest="command", required=True)
    _pipeline_commands(sub)
    _model_commands(sub)
    return ap


class _NoTracebackForUserErrors(logging.Filter):
    """Prefect logs a failed task's exception with its traceback; a user's mistake gets its one line only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], UserError):
            record.exc_info, record.exc_text = None, None
        return True


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    """Entry point of the `headstart` console script."""
    for name in ("prefect.task_runs", "prefect.flow_runs", "prefect.flow_engine", "prefect.task_engine"):
        logging.getLogger(name).addFilter(_NoTracebackForUserErrors())
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except UserError:
        raise
    except Exception as exc:  # a failed Prefect flow re-raises the task's exception
        cause = exc
        while cause.__cause__ is not None and not isinstance(cause, UserError):
            cause = cause.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        full = disk_full_anywhere(exc, f"headstart {args.command}" if hasattr(args, "command") else "headstart")
        if full is not None:  # a full disk met by a writer that names its own temp file: one line too
            raise full from None
        raise


if __name__ == "__main__":
    main()
