"""`rethink models`: the registered models with their parameter counts beside the paper's."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("models", help="list the registered models with their parameter counts")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rethink.models import count_params, create_model, list_models

    print(f"{'name':<16} {'paper params':>13} {'ours (paper conv.)':>19} {'ours (total)':>13}  description")
    for info in list_models():
        # each model at the input it was published for: the paper's CIFAR models at 28x28x3 with
        # 10 classes, Inception V3 at 299x299x3 with 1000
        model = create_model(info.name, in_shape=info.native_in_shape, num_classes=info.native_num_classes)
        paper = (f"{info.paper_params:,}" if info.paper_params
                 else f"{info.reference_params:,}*" if info.reference_params else "-")
        print(f"{info.name:<16} {paper:>13} {count_params(model):>19,} "
              f"{count_params(model):>13,}  {info.description}")
    print("counts at 28x28x3 input, 10 classes (inception-v3: 299x299x3, 1000 classes); paper convention: "
          "conv/linear weights and biases\n* not in the paper: the standard architecture's count")
    return 0
