"""`rethink pack`: decode an image folder once into memory-mapped shards (ImageNet scale)."""

from __future__ import annotations

import argparse

from rethink.options import positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("pack",
                            help="decode an image folder once into memory-mapped shards (ImageNet scale)")
    parser.add_argument("src", help="image folder (directory or tarball): {train,test|val}/<class>/<image>")
    parser.add_argument("--out", required=True,
                        help="pack directory; train from it with --dataset packed:DIR")
    parser.add_argument("--resolution", type=positive_int, default=299,
                        help="shorter side resized to this, then centre-cropped square (default 299)")
    parser.add_argument("--shard-size", type=positive_int, default=None,
                        help="images per shard file (default: about 1 GiB of pixels each)")
    parser.add_argument("--workers", type=positive_int, default=1, help="decoding processes (default 1)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rethink.data.packed import pack_folder

    m = pack_folder(args.src, args.out, resolution=args.resolution, shard_size=args.shard_size,
                    workers=args.workers)
    counts = {s: m["splits"][s]["count"] for s in ("train", "test")}
    print(f"pack {args.out}: {counts['train']:,} train / {counts['test']:,} test images, "
          f"{m['resolution']}x{m['resolution']}, {len(m['classes'])} classes, content sha256 "
          f"{m['content_sha256'][:16]}...")
    return 0
