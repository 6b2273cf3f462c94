"""The `dgen` command.

    dgen shard SOURCE [--root DIR] --out shards/NAME   pack a dataset into WebDataset shards
    dgen merge DIR                                     join the part manifests of `shard --part I/N`
    dgen verify DIR                                    check shards against their manifest
    dgen bench [loader|train]                          images/s vs a plain PyTorch script (docs/performance.md)
    dgen train --model vae [...]                       same as `accelerate launch dgen/train.py ...`
    dgen sample --run RUN_DIR [--n 64]                 images from a trained run's latest checkpoint
    dgen eval --run RUN_DIR [--untrained] | --data DIR FID/KID (classifier features) of a run, or train vs test
    dgen eval --images PATH --data DIR [--split S]     FID/KID of any generator's images (PNG/JPEG folder, .npy, .npz)
    dgen eval --table RUN_DIR... [--out F] [--wandb]   domain-adaptation accuracy table (methods x pairs)

`dgen shard SOURCE --help` lists the options of one source.
"""

from __future__ import annotations

import argparse
import secrets
import sys

from dgen.errors import DgenError, setup_logging


def _add_shard(sub) -> None:
    from dgen.data.sources import SOURCES

    p = _command(sub, "shard", "pack a dataset into WebDataset shards + manifest.json",
                 "dgen shard mnist --root ~/data/mnist --out shards/mnist\n  dgen shard folder --root ~/photos --out shards/photos --size 64")
    srcs = p.add_subparsers(dest="source", metavar="SOURCE", required=True)
    for name, cls in sorted(SOURCES.items()):
        sp = srcs.add_parser(name, help=cls.help, description=cls.help, allow_abbrev=False)
        sp.add_argument("--out", help="output folder (default: shards/SOURCE)")
        size_default = "native" if cls.default_size is None else cls.default_size
        sp.add_argument("--size", type=_size, default=cls.default_size,
                        help=f"square image side in px, or 'native' (default: {size_default})")
        sp.add_argument("--channels", type=int, choices=(1, 3), default=cls.default_channels,
                        help=f"1 = grayscale, 3 = RGB (default: {cls.default_channels})")
        sp.add_argument("--per-shard", type=int, default=1000, help="samples per shard (default: 1000)")
        sp.add_argument("--format", choices=("png", "npy"), default="png", dest="image_format",
                        help="png: compact; npy: uncompressed pixels, ~20x faster to decode (default: png)")
        sp.add_argument("--workers", type=int, default=1, help="parallel writer processes (default: 1)")
        sp.add_argument("--part", default="0/1", help="write only part I of N (e.g. a Slurm array task), then `dgen merge`")
        sp.add_argument("--quiet", action="store_true", help="no progress bar")
        sp.add_argument("--allow-empty-splits", action="store_true",
                        help="succeed even if a split ends empty (all its items unreadable)")
        cls.add_arguments(sp)
        sp.set_defaults(run=_run_shard, source_cls=cls)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _size(text: str) -> int | None:
    return None if text == "native" else int(text)


def _run_shard(args) -> int:
    from dgen.data.shard import parse_part, write_shards

    part = parse_part(args.part)
    source = args.source_cls.from_args(args)
    out = args.out or f"shards/{args.source}"
    path = write_shards(source, out, size=args.size, channels=args.channels, per_shard=args.per_shard,
                        workers=args.workers, part=part, progress=not args.quiet, image_format=args.image_format,
                        allow_empty_splits=args.allow_empty_splits)
    print(f"wrote {path}")
    if part[1] > 1:
        print(f"part {part[0]}/{part[1]} done; once every part is: dgen merge {out}")
    else:
        _print_summary(path)
    return 0


def _print_summary(path) -> None:
    from dgen.data.manifest import load_manifest

    m = load_manifest(path)
    size = "x".join(map(str, m.image_size)) if m.image_size else "mixed sizes"
    for split, info in m.splits.items():
        skipped = f", {info.skipped} unreadable items skipped" if info.skipped else ""
        print(f"  {m.dataset}/{split}: {info.samples} samples in {len(info.shards)} shards ({size}, {m.channels} ch{skipped})")


def _run_merge(args) -> int:
    from dgen.data.shard import merge_parts

    path = merge_parts(args.dir)
    print(f"wrote {path}")
    _print_summary(path)
    return _run_verify(argparse.Namespace(dir=args.dir, no_decode=False))


def _run_verify(args) -> int:
    from dgen.data.verify import verify

    problems = verify(args.dir, decode=not args.no_decode)
    for p in problems:
        print(f"BAD {p}", file=sys.stderr)
    if problems:
        print(f"{args.dir}: {len(problems)} problem(s); first: {problems[0]}", file=sys.stderr)
        return 1
    print(f"{args.dir}: all shards match the manifest")
    return 0


def _run_bench(args) -> int:
    from dgen.bench import run

    run(args, args.bench or "results")
    return 0


def _run_sample(args) -> int:
    from dgen.engine.run import sample_images
    from dgen.eval.images import save_grid

    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)  # new samples unless asked
    images = sample_images(args.run_dir, n=args.n, seed=seed)
    out = save_grid(images, args.out or f"{args.run_dir}/images/sampled-seed{seed}.png")
    print(f"wrote {out} (seed {seed}; the same images again: --seed {seed})")
    return 0


def _run_eval(args) -> int:
    import json

    from dgen.engine.scores import score_floor, score_images, score_run

    if args.images and (args.run_dir or args.table):
        raise DgenError("--images goes with --data SHARDS, not with --run or --table")
    if args.images and not args.data:
        raise DgenError("--images needs --data SHARDS: the shards whose classifier and split are the reference")
    if sum(map(bool, (args.run_dir, args.data, args.table))) != 1:
        raise DgenError("dgen eval needs one of --run RUN_DIR, --data SHARDS [--images PATH] or --table RUN_DIR...")
    if args.split and not args.images:
        raise DgenError("--split goes with --images (--data alone scores train against test)")
    if args.fid_classifier_steps and not args.data:
        raise DgenError("--fid-classifier-steps goes with --data (a run uses its own)")
    if args.fid_encoder_steps and not args.data:
        raise DgenError("--fid-encoder-steps goes with --data (a run uses its own)")
    if args.image_size and not args.data:
        raise DgenError("--image-size goes with --data (a run uses its own)")
    if args.table:
        return _table(args)
    steps = {"steps": args.fid_classifier_steps} if args.fid_classifier_steps else {}
    if args.fid_encoder_steps:
        steps["encoder_steps"] = args.fid_encoder_steps
    steps["image_size"] = args.image_size
    if args.run_dir:
        result = score_run(args.run_dir, untrained=args.untrained, samples=args.samples,
                           inception=not args.no_inception)
    elif args.images:
        result = score_images(args.images, args.data, split=args.split or "test", samples=args.samples, **steps)
    else:
        result = score_floor(args.data, samples=args.samples, **steps)
    print(json.dumps(result))
    return 0


def _table(args) -> int:
    from pathlib import Path

    from dgen.atomic import atomic_write_text
    from dgen.engine.tracking import log_table
    from dgen.eval.table import collect, markdown
    from dgen.methods import table_rows

    rows = table_rows()
    cells, skipped = collect([Path(r) for r in args.table], rows)
    for run, why in skipped:
        print(f"skipped {run}: {why}", file=sys.stderr)
    if not cells:
        raise DgenError("no finished domain-adaptation runs among the folders given")
    text = markdown(cells, rows)
    print(text, end="")
    if args.out:
        atomic_write_text(Path(args.out), text)
    if args.wandb:
        print(f"logged to W&B: {log_table(cells, rows)}", file=sys.stderr)
    return 0


def _command(sub, name: str, text: str, example: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=text, description=text, epilog=f"example:\n  {example}", allow_abbrev=False,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dgen", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_shard(sub)
    p = _command(sub, "merge", "join part manifests written by `dgen shard --part I/N`, then verify",
                 "dgen merge shards/celeba     # after every `dgen shard celeba ... --part I/N` finished")
    p.add_argument("dir")
    p.set_defaults(run=_run_merge)
    p = _command(sub, "verify", "check every shard against manifest.json (sha256, counts, decoding, empty splits); "
                 "exit 1 on any problem", "dgen verify shards/digits")
    p.add_argument("dir")
    p.add_argument("--no-decode", action="store_true", help="skip decoding images (faster)")
    p.set_defaults(run=_run_verify)
    from dgen.bench import add_arguments as add_bench

    p = _command(sub, "bench", "images/s of loading and training, dgen vs a plain PyTorch script; JSON",
                 "dgen bench            # both, results in bench/\n  dgen bench loader")
    add_bench(p, "results")
    p.set_defaults(run=_run_bench, bench=None)
    bench = p.add_subparsers(dest="bench", metavar="WHAT")
    for what, text in (("loader", "images/s: shard stream vs torchvision reading files, per worker count"),
                       ("train", "training images/s: dgen vs a plain loop, synthetic input and end to end")):
        bp = bench.add_parser(what, help=text)
        add_bench(bp, what)
        bp.set_defaults(run=_run_bench)
    p = sub.add_parser("train", help="train a model (flags: dgen train --model NAME --help)", add_help=False)
    p.set_defaults(run=None)
    p = _command(sub, "sample", "sample images from a trained run's latest checkpoint (new ones each time)",
                 "dgen sample --run runs/vae-digits-20261121-101500 --n 64\n  dgen sample --run RUN --seed 7   # the same images again")
    p.add_argument("--run", dest="run_dir", required=True, help="run folder (runs/...)")
    p.add_argument("--n", type=int, default=64, help="number of images (default: 64)")
    p.add_argument("--seed", type=int, help="noise seed (default: a fresh one, printed; the run's own samples.png "
                   "is the run's --seed)")
    p.add_argument("--out", help="PNG path (default: RUN/images/sampled-seedS.png)")
    p.set_defaults(run=_run_sample)
    p = _command(sub, "eval", "FID/KID (classifier features; contrastive features of unlabelled shards) of a run, of "
                 "any generator's images, of train vs test (the floor), or the adaptation table; one JSON line",
                 "dgen eval --run runs/dcgan\n  dgen eval --data shards/digits     # the floor\n"
                 "  dgen eval --images samples/ --data shards/digits   # PNG/JPEG files, or samples.npy / .npz\n"
                 "  dgen eval --table runs/* --out table.md")
    p.add_argument("--run", dest="run_dir", help="run folder: score its latest checkpoint")
    p.add_argument("--untrained", action="store_true", help="score the run's architecture freshly initialised")
    p.add_argument("--no-inception", action="store_true",
                   help="with --run: no Inception FID/KID, even where torchvision's weights are at hand")
    p.add_argument("--samples", type=_positive, default=2000, metavar="N",
                   help="generated images; with --images the first this many in sorted order; with --data alone "
                        "the first this many training images, as many as a run's FID uses (default: 2000)")
    p.add_argument("--data", metavar="SHARDS",
                   help="shard folder: FID between its train and test splits, or with --images the reference")
    p.add_argument("--images", metavar="PATH",
                   help="score these images against --data's test split with the feature network its runs use "
                        "(comparable with their test/fid_classifier, or test/fid_contrastive where the shards have "
                        "no labels): a folder of PNG/JPEG files (searched "
                        "recursively, read in sorted path order), or a .npy / .npz (key 'images', or its only "
                        "array) of uint8 0..255 or float [0, 1] images, N x H x W, N x H x W x C or N x C x H x W "
                        "(C = 1 or 3); converted to the shards' channels and size")
    p.add_argument("--split", choices=("train", "test"),
                   help="with --images: the reference split (default: test); the keys name it (train/fid_classifier)")
    p.add_argument("--image-size", type=_positive, metavar="PX",
                   help="with --data: score at this square size, as runs that resize to it do (e.g. 32 for the "
                        "GANs' MNIST presets; default: the shards' size)")
    p.add_argument("--fid-classifier-steps", type=_positive, metavar="N",
                   help="with --data: the feature classifier's training steps (default: 600, as runs; "
                        "a run made with another --fid-classifier-steps is compared with the same N)")
    p.add_argument("--fid-encoder-steps", type=_positive, metavar="N",
                   help="with --data of unlabelled shards: the contrastive feature encoder's training steps "
                        "(default: 800, as runs)")
    p.add_argument("--table", nargs="+", metavar="RUN_DIR",
                   help="domain-adaptation runs: their target accuracy table (rows methods, columns pairs)")
    p.add_argument("--out", help="with --table: also write the Markdown table here")
    p.add_argument("--wandb", action="store_true", help="with --table: also log it to W&B (offline without a key)")
    p.set_defaults(run=_run_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:  # the training flags depend on --model: dgen.train parses them
        from dgen.train import main as train_main

        return train_main(argv[1:])
    setup_logging()
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except DgenError as e:
        print(f"dgen: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
