"""The `ali-replay` command line: train and evaluate an ALI, run and compare continual-learning strategies."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from typing import Optional, Sequence

from ali_replay.errors import UserError

log = logging.getLogger("ali_replay")


def _add_config_args(parser: argparse.ArgumentParser, kind: str) -> None:
    parser.add_argument("--config", help=f"a YAML file, or the name of one in configs/{kind}/")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dot-list overrides, e.g. train.epochs=5 data.root=../shared/data")
    parser.add_argument("--resume", action="store_true", help="continue the run saved in output_dir")
    parser.add_argument("--overwrite", action="store_true", help="discard what output_dir holds and start again")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = argparse.ArgumentParser(prog="ali-replay", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train-ali", help="train a standalone ALI (configs/ali/)")
    _add_config_args(p, "ali")
    p.add_argument("--no-eval", action="store_true", help="skip eval-ali at the end")

    p = sub.add_parser("eval-ali", help="evaluate a trained ALI run folder and write eval.json")
    p.add_argument("run_dir")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. eval.labels_per_class=10")

    p = sub.add_parser("run", help="one continual-learning strategy, one seed")
    _add_config_args(p, "compare")
    p.add_argument("--strategy", help="strategy spec, e.g. ali_replay@latent_memory (default: the first listed)")
    p.add_argument("--seed", type=int, help="seed (default: the first listed)")

    p = sub.add_parser("compare", help="every strategy x every seed on one benchmark, with a report")
    _add_config_args(p, "compare")

    p = sub.add_parser("bench-speed", help="training images per second: trainer vs a minimal loop, per preset")
    p.add_argument("args", nargs=argparse.REMAINDER, help="options of benchmarks.speed (see --help there)")

    p = sub.add_parser("report", help="rebuild report.md, results.csv and plots from results.json")
    p.add_argument("results_dir")

    p = sub.add_parser("select", help="each strategy family's recipe chosen on validation accuracy (never test)")
    p.add_argument("results_dirs", nargs="+", metavar="RESULTS_DIR",
                   help="output_dir(s) of comparisons run with benchmark.validation > 0")
    p.add_argument("--family", action="append", default=[], metavar="NAME",
                   help="only this family (repeat for several), e.g. --family ali_replay --family dgr")
    p.add_argument("--family-of", action="append", default=[], metavar="SPEC=FAMILY",
                   help="put a strategy spec in a family by hand (default: its name before '@' or '+')")
    return parser


def _train_ali(args) -> None:
    from ali_replay.config import load_run_config
    from ali_replay.evaluation import evaluate_ali, write_eval
    from ali_replay.trainer import ALITrainer

    from ali_replay.distributed import shutdown

    cfg = load_run_config(args.config, args.overrides)
    trainer = ALITrainer(cfg, resume=args.resume, overwrite=args.overwrite)
    try:
        run_dir = trainer.fit()
    finally:
        shutdown(trainer.dist)
    if not trainer.dist.is_main:
        return
    print(f"trained: {run_dir} (epoch {trainer.epoch}, step {trainer.step})")
    if not args.no_eval:
        from ali_replay.run_lock import RunLock

        with RunLock(run_dir):  # eval.json is written by the folder's one writer too
            result = evaluate_ali(trainer.ali, cfg, trainer.device)
            print(json.dumps(result, indent=2))
            print(f"wrote {write_eval(run_dir, result)}")


def _eval_ali(args) -> None:
    from ali_replay.config import ALIRunConfig, merge_config
    from ali_replay.evaluation import evaluate_ali, write_eval
    from ali_replay.runtime import resolve_device
    from ali_replay.trainer import load_trained

    from omegaconf import OmegaConf

    ali, saved_cfg, _ = load_trained(args.run_dir)
    # The saved config over today's schema (older runs may lack newer keys), then the overrides.
    cfg = merge_config(OmegaConf.merge(OmegaConf.structured(ALIRunConfig), saved_cfg), None, args.overrides)
    device = resolve_device(cfg.device)
    from ali_replay.run_lock import RunLock

    with RunLock(args.run_dir):  # not beside a training run that writes into the same folder
        result = evaluate_ali(ali, cfg, device)
        print(json.dumps(result, indent=2))
        print(f"wrote {write_eval(args.run_dir, result)}")


def _main_process() -> bool:
    """False in the processes torchrun starts besides rank 0 (which alone prints)."""
    return int(os.environ.get("RANK", "0")) == 0


def _run(args) -> None:
    from benchmarks import load_compare_config, run

    from ali_replay import distributed

    cfg = load_compare_config(args.config, args.overrides)
    spec = args.strategy or cfg.strategies[0]
    seed = cfg.seeds[0] if args.seed is None else args.seed
    try:
        result = run(cfg, spec, seed, resume=args.resume, overwrite=args.overwrite)
    finally:
        distributed.shutdown(distributed.current())
    if not _main_process():
        return
    print(json.dumps({k: v for k, v in result.items() if k != "acc_matrix"}, indent=2, default=str))


def _compare(args) -> None:
    from benchmarks import compare, load_compare_config, write_report

    from ali_replay import distributed

    cfg = load_compare_config(args.config, args.overrides)
    try:
        compare(cfg, resume=args.resume, overwrite=args.overwrite, command=" ".join(sys.argv))
    finally:
        distributed.shutdown(distributed.current())
    if not _main_process():
        return
    print(write_report(cfg.output_dir))
    print(f"results in {cfg.output_dir}")


def _report(args) -> None:
    from benchmarks import write_report

    print(write_report(args.results_dir))


def _select(args) -> None:
    from benchmarks.select import parse_assignments, select

    _, text = select(args.results_dirs, args.family or None, parse_assignments(args.family_of))
    print(text, end="")


def _bench_speed(args) -> None:
    from benchmarks.speed import main as speed_main

    speed_main(args.args)


COMMANDS = {"train-ali": _train_ali, "eval-ali": _eval_ali, "run": _run, "compare": _compare, "report": _report,
            "bench-speed": _bench_speed, "select": _select}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse arguments, run a sub-command, and turn user errors into one-line messages."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "bench-speed":  # its options belong to benchmarks.speed
        args.args, extra = [*extra, *args.args], []
    # Overrides may follow options (`train-ali --resume train.epochs=9`): argparse leaves those over.
    if extra and (not hasattr(args, "overrides") or any("=" not in item or item.startswith("-") for item in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        COMMANDS[args.command](args)
    except UserError as error:
        if args.debug:
            traceback.print_exc()
        print(f"ali-replay {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ali-replay {args.command}: interrupted; saved state is kept, --resume continues", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
