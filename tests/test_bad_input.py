"""Bad input, table-driven: every known mistake is refused in one line that names it and says a fix.

The command line answers exit status 2 with exactly one line on stderr; the Python API raises a
RethinkError subclass whose message names the problem and whose hint says what to do. Either way
the output directory is left exactly as it was: not created when it was absent, and when it holds
the results of an earlier good run, the same files with the same bytes (database included).
Small generated data (tmp_path) keeps the module fast; rows needing the real data are `realdata`.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.util
import math
import pickle
import shutil
import sqlite3
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    EvilPickle,
    fake_cifar_batches,
    idx_bytes,
    make_tree,
    tar_dir,
    write_idx_dir,
    write_image,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rethink import cli
from rethink.commands.run import config_from_args
from rethink.config import AUGMENTATIONS, RunConfig
from rethink.data import downloads, load_dataset
from rethink.data.corruption import CORRUPTIONS, GAUSSIAN_STATS, LABEL_NOISE_CONVENTIONS, corrupt
from rethink.data.packed import open_pack, pack_folder
from rethink.errors import CheckpointError, ConfigError, DataError, RethinkError
from rethink.experiments.sweep import run_sweep
from rethink.models import list_models
from rethink.models.registry import INITS
from rethink.options import join_negative_values, to_argv
from rethink.store import DB_NAME
from rethink.train import distributed
from rethink.train.runner import run

HAVE_RAY = importlib.util.find_spec("ray") is not None
SIZE = 8  # pixels: the generated folders' images, and the runs' --input-size


# ---------------------------------------------------------------------------- shared good data


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A valid tiny image folder: 2 classes x (6 train + 2 test) 8x8 RGB PNGs."""
    root = tmp_path_factory.mktemp("good") / "tree"
    make_tree(root, classes=("a", "b"), n=(6, 2), size=(SIZE, SIZE))
    return root


def good_argv(tree: Path) -> list[str]:
    return ["run", "--dataset", f"folder:{tree}", "--input-size", str(SIZE), "--max-epochs", "1",
            "--batch-size", "4", "--precision", "fp32", "--device", "cpu"]


@pytest.fixture(scope="module")
def good_out(tree, tmp_path_factory) -> Path:
    """An output directory holding one finished run (database, run folder, checkpoint)."""
    out = tmp_path_factory.mktemp("good") / "runs"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli.main([*good_argv(tree), "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    assert (out / DB_NAME).is_file()
    return out


@pytest.fixture(scope="module")
def good_pack(tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("good") / "pack"
    pack_folder(tree, out, resolution=SIZE, shard_size=5, log=lambda s: None)
    return out


@dataclasses.dataclass
class Ctx:
    """What a row's `make` may use: scratch space beside the output dir, and the good data."""

    tmp: Path  # scratch space (not the output directory)
    out: Path  # the output directory under test
    tree: Path
    good_out: Path
    good_pack: Path
    monkeypatch: pytest.MonkeyPatch

    @property
    def marker(self) -> Path:
        """A file a malicious input would create: it must never exist."""
        return self.tmp / "pwned"


# ---------------------------------------------------------------------------- snapshots


def snapshot(d: Path) -> dict[str, str] | None:
    """Relative path -> sha256 of the bytes ('dir' for folders); None if `d` does not exist."""
    if not d.exists():
        return None
    return {p.relative_to(d).as_posix(): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*"))}


def db_dump(d: Path, scratch: Path) -> list[str] | None:
    """The database's content as SQL, read from a copy (reading must not touch `d`)."""
    if not (d / DB_NAME).is_file():
        return None
    copy = scratch / f"dump-{len(list(scratch.glob('dump-*')))}"
    copy.mkdir()
    for f in d.glob(DB_NAME + "*"):
        shutil.copy2(f, copy / f.name)
    db = sqlite3.connect(copy / DB_NAME)
    try:
        return list(db.iterdump())
    finally:
        db.close()


class Unchanged:
    """Records the output dir (and its neighbours) before the call; `check()` asserts nothing moved."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.files = snapshot(ctx.out)
        self.db = db_dump(ctx.out, ctx.tmp)
        self.neighbours = sorted(p.name for p in ctx.out.parent.iterdir())

    def check(self) -> None:
        ctx = self.ctx
        if self.files is None:
            assert not ctx.out.exists(), f"{ctx.out} was created: {snapshot(ctx.out)}"
        else:
            assert db_dump(ctx.out, ctx.tmp) == self.db, "the results database changed"
            assert snapshot(ctx.out) == self.files, "files in the output directory changed"
        # nothing beside it either (e.g. a half-written `.out.packing/`)
        assert sorted(p.name for p in ctx.out.parent.iterdir()) == self.neighbours
        assert not ctx.marker.exists(), "a malicious input ran code"


# ---------------------------------------------------------------------------- bad data, made on demand


def mixed_sizes(tmp: Path) -> str:
    root = tmp / "mixed"
    make_tree(root, classes=("a", "b"), n=(2, 1), size=(SIZE, SIZE))
    write_image(root / "train" / "b" / "7.png", np.zeros((SIZE + 1, SIZE, 3), np.uint8))
    return f"folder:{root}"


def empty_class(tmp: Path) -> str:
    root = tmp / "empty"
    make_tree(root, classes=("a", "b"), n=(2, 1), size=(SIZE, SIZE))
    (root / "train" / "c").mkdir()
    return f"folder:{root}"


def non_image(tmp: Path) -> str:
    root = tmp / "notes"
    make_tree(root, classes=("a", "b"), n=(2, 1), size=(SIZE, SIZE))
    (root / "train" / "a" / "notes.txt").write_text("not a picture")
    return f"folder:{root}"


def no_train_split(tmp: Path) -> str:
    root = tmp / "notrain"
    make_tree(root, classes=("a", "b"), n=(2, 1), size=(SIZE, SIZE))
    shutil.rmtree(root / "train")
    return f"folder:{root}"


def truncated_tar_gz(tmp: Path) -> str:
    make_tree(tmp / "src", classes=("a", "b"), n=(2, 1), size=(SIZE, SIZE))
    tarball = tar_dir(tmp / "src", tmp / "images.tar.gz", "w:gz")
    tarball.write_bytes(tarball.read_bytes()[:-60])
    return f"folder:{tarball}"


def truncated_tar(tmp: Path) -> str:
    """An uncompressed tarball cut in the middle of a member's data."""
    make_tree(tmp / "src", classes=("a", "b"), n=(2, 1), size=(SIZE, SIZE))
    tarball = tar_dir(tmp / "src", tmp / "images.tar", "w")
    with tarfile.open(tarball) as tf:
        member = next(m for m in tf.getmembers() if m.isfile())
    tarball.write_bytes(tarball.read_bytes()[: member.offset_data + member.size // 2])
    return f"folder:{tarball}"


def not_a_tar(tmp: Path) -> str:
    (tmp / "images.tar").write_bytes(b"this is not a tar archive at all" * 40)
    return f"folder:{tmp / 'images.tar'}"


def idx_bad_magic(tmp: Path) -> str:
    d = tmp / "digits"
    write_idx_dir(d)
    raw = idx_bytes(np.zeros((12, 28, 28), np.uint8))
    (d / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x08\x03" + raw[2:]))
    return f"idx:{d}"


def idx_count_mismatch(tmp: Path) -> str:
    d = tmp / "digits"
    write_idx_dir(d)
    (d / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(11, np.uint8))))
    return f"idx:{d}"


def idx_label_out_of_range(tmp: Path) -> str:
    """A test label (200) that no training image has: a class the model could never learn."""
    d = tmp / "digits"
    write_idx_dir(d)
    labels = (np.arange(5) % 10).astype(np.uint8)
    labels[3] = 200
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    return f"idx:{d}"


def idx_truncated(tmp: Path) -> str:
    d = tmp / "digits"
    write_idx_dir(d, gz=False)
    p = d / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-100])
    return f"idx:{d}"


def malicious_cifar(tmp: Path) -> Path:
    """A data dir whose CIFAR batch pickles os.system: unpickling it would create tmp/pwned."""
    d = tmp / "data" / "cifar-10-batches-py"
    fake_cifar_batches(d)
    (d / "data_batch_2").write_bytes(pickle.dumps({b"data": EvilPickle(tmp / "pwned"), b"labels": [0]}))
    return tmp / "data"


def damaged_pack(ctx: Ctx) -> str:
    broken = ctx.tmp / "broken-pack"
    shutil.copytree(ctx.good_pack, broken)
    shard = broken / "train-00001.npy"
    shard.write_bytes(shard.read_bytes()[:-70])
    return f"packed:{broken}"


def foreign_checkpoint(ctx: Ctx, argv: list[str], damage: Callable[[bytes], bytes]) -> None:
    """Put (a damaged copy of) the good run's checkpoint in the run folder of the config `argv`."""
    (good_id,) = [p.name for p in ctx.good_out.iterdir() if p.is_dir()]
    config = parse_run_config(argv)
    assert config.run_id != good_id
    folder = ctx.out / config.run_id
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(damage((ctx.good_out / good_id / "checkpoint.pt").read_bytes()))


def other_config(ctx: Ctx) -> list[str]:
    return [*good_argv(ctx.tree), "--init-seed", "1"]


def checkpoint_of_another_run(ctx: Ctx) -> list[str]:
    foreign_checkpoint(ctx, other_config(ctx), lambda b: b)
    return other_config(ctx)


def truncated_checkpoint(ctx: Ctx) -> list[str]:
    foreign_checkpoint(ctx, other_config(ctx), lambda b: b[: len(b) // 2])
    return other_config(ctx)


def no_launch(ctx: Ctx) -> None:
    def launch(nproc, argv):
        raise AssertionError("torchrun was launched for a run that cannot be split")

    ctx.monkeypatch.setattr(distributed, "launch", launch)


# ---------------------------------------------------------------------------- the command line


@dataclasses.dataclass(frozen=True)
class Cli:
    """One bad command line: `make(ctx)` builds its files and returns argv (without --out)."""

    id: str
    make: Callable[[Ctx], list[str]]
    problem: str  # a fragment naming what is wrong
    fix: str  # a fragment of the fix it suggests
    states: tuple[str, ...] = ("absent", "existing")  # the output dir before the call
    marks: tuple = ()


def run_args(*extra: str) -> Callable[[Ctx], list[str]]:
    """`rethink run` on the good folder with `extra` options."""
    return lambda ctx: [*good_argv(ctx.tree), *extra]


def run_on(make_dataset: Callable[[Path], str], *extra: str) -> Callable[[Ctx], list[str]]:
    return lambda ctx: [*good_argv(ctx.tree), "--dataset", make_dataset(ctx.tmp), *extra]


REPRODUCE = ["reproduce", "--no-report", "--device", "cpu"]
RAY = pytest.mark.skipif(not HAVE_RAY, reason="Ray is not installed")

CLI_ROWS = [
    # ---- unknown names
    Cli("model", run_args("--model", "resnet"), "unknown model 'resnet'", "pick one of the known names"),
    Cli("dataset", run_args("--dataset", "cifar100"), "unknown dataset 'cifar100'", "known: cifar10"),
    Cli("corruption", run_args("--corruption", "label-noise"), "unknown corruption", "choose one of true"),
    Cli("preset", lambda ctx: [*REPRODUCE, "--preset", "huge"], "unknown preset 'huge'", "choose one of"),
    Cli("experiment", lambda ctx: [*REPRODUCE, "--preset", "smoke", "--experiments", "fig9"],
        "unknown experiment(s) fig9", "choose from table1"),
    Cli("sweep-model", lambda ctx: [*REPRODUCE, "--preset", "smoke", "--models", "vgg"],
        "unknown model(s) vgg", "choose from"),
    Cli("augmentation", run_args("--augment", "cutout"), "unknown augmentation 'cutout'", "crop, flip"),
    Cli("precision", run_args("--precision", "fp8"), "unknown precision 'fp8'", "fp32, bf16"),
    Cli("init", run_args("--init", "xavier"), "unknown initialization 'xavier'", "glorot"),
    Cli("label-noise", run_args("--corruption", "partial", "--p", "0.5", "--label-noise", "often"),
        "unknown label noise 'often'", "uniform"),
    Cli("gaussian-stats", run_args("--corruption", "gaussian", "--gaussian-stats", "median"),
        "unknown gaussian statistics 'median'", "per-channel"),
    Cli("device", run_args("--device", "quantum"), "unknown device 'quantum'", "pass auto, cpu"),
    # ---- the label corruption probability
    Cli("p-negative", run_args("--corruption", "partial", "--p", "-0.1"), "p=-0.1 is outside [0, 1]",
        "pass --p between 0 and 1"),
    Cli("p-above-one", run_args("--corruption", "partial", "--p", "1.5"), "p=1.5 is outside [0, 1]",
        "pass --p between 0 and 1"),
    Cli("p-nan", run_args("--corruption", "partial", "--p", "nan"), "p=nan is outside [0, 1]",
        "pass --p between 0 and 1"),
    Cli("p-inf", run_args("--corruption", "partial", "--p", "inf"), "p=inf is outside [0, 1]",
        "pass --p between 0 and 1"),
    Cli("partial-without-p", run_args("--corruption", "partial"), "'partial' needs a probability",
        "pass --p"),
    Cli("p-without-partial", run_args("--corruption", "random-labels", "--p", "0.5"),
        "--p only applies to 'partial'", "drop --p"),
    # ---- sizes and optimization
    Cli("train-size-zero", run_args("--train-size", "0"), "--train-size: 0 must be positive", "--help"),
    Cli("train-size-negative", run_args("--train-size", "-5"), "-5 must be positive", "--help"),
    Cli("test-size-zero", run_args("--test-size", "0"), "--test-size: 0 must be positive", "--help"),
    Cli("input-size-zero", run_args("--input-size", "0"), "--input-size: 0 must be positive", "--help"),
    Cli("batch-size-zero", run_args("--batch-size", "0"), "--batch-size: 0 must be positive", "--help"),
    Cli("batch-size-negative", run_args("--batch-size", "-4"), "-4 must be positive", "--help"),
    Cli("batch-size-text", run_args("--batch-size", "lots"), "'lots' is not an integer", "--help"),
    Cli("max-epochs-zero", run_args("--max-epochs", "0"), "--max-epochs: 0 must be positive", "--help"),
    Cli("decay-per-zero", run_args("--decay-per", "0"), "--decay-per: 0 must be positive", "--help"),
    Cli("lr-zero", run_args("--lr", "0"), "lr=0.0 is outside (0, inf]", "fix --lr"),
    Cli("lr-negative", run_args("--lr", "-0.01"), "lr=-0.01 is outside (0, inf]", "fix --lr"),
    Cli("lr-nan", run_args("--lr", "nan"), "lr=nan is outside", "fix --lr"),
    Cli("momentum-above-one", run_args("--momentum", "1.5"), "momentum=1.5 is outside [0, 1]",
        "fix --momentum"),
    Cli("momentum-negative", run_args("--momentum", "-0.5"), "momentum=-0.5 is outside [0, 1]",
        "fix --momentum"),
    Cli("lr-decay-zero", run_args("--lr-decay", "0"), "lr_decay=0.0 is outside (0, 1]", "fix --lr-decay"),
    Cli("weight-decay-negative", run_args("--weight-decay", "-1e-4"), "weight_decay=-0.0001 is outside",
        "fix --weight-decay"),
    Cli("dropout-one", run_args("--dropout", "1"), "dropout=1.0 is outside [0, 1)", "fix --dropout"),
    Cli("fit-threshold-above-one", run_args("--fit-threshold", "1.5"), "fit_threshold=1.5 is outside",
        "fix --fit-threshold"),
    Cli("seed-negative", run_args("--seed", "-1"), "-1 must be >= 0", "--help"),
    Cli("crop-with-pixel-test", run_args("--corruption", "random-pixels", "--augment", "crop"),
        "needs the pixels corrupted at full resolution", "add --corrupt-before-crop"),
    Cli("color-with-gaussian", run_args("--corruption", "gaussian", "--augment", "color"),
        "color augmentation clips pixels", "drop color from --augment"),
    Cli("seeds-zero", lambda ctx: [*REPRODUCE, "--preset", "smoke", "--seeds", "0"],
        "--seeds: 0 must be positive", "--help"),
    # ---- the data does not fit the config
    Cli("train-size-above-dataset", run_args("--train-size", "100"),
        "--train-size 100 is larger than the 12 train images", "pass at most 12"),
    Cli("test-size-above-dataset", run_args("--test-size", "5"),
        "--test-size 5 is larger than the 4 test images", "pass at most 4"),
    Cli("input-size-above-images", run_args("--input-size", "16"), "cannot crop 8x8 images to 16x16",
        "choose an input size"),
    Cli("preset-above-dataset",
        lambda ctx: [*REPRODUCE, "--preset", "smoke", "--experiments", "fig1b", "--models", "mlp1x512",
                     "--dataset", f"folder:{ctx.tree}"],
        "preset smoke wants 100 train images", "use a smaller preset"),
    # ---- damaged or malformed data
    Cli("folder-missing", lambda ctx: [*good_argv(ctx.tree), "--dataset", f"folder:{ctx.tmp / 'nowhere'}"],
        "no such file or directory", "give an existing path"),
    Cli("cifar-missing", lambda ctx: [*good_argv(ctx.tree), "--dataset", "cifar10",
                                      "--data-dir", str(ctx.tmp / "empty-data")],
        "cifar10: no data found", "pass --download"),
    Cli("folder-mixed-sizes", run_on(mixed_sizes), "train/b/7.png is 8x9 but", "resize all images"),
    Cli("folder-empty-class", run_on(empty_class), "class folder train/c is empty",
        "put its images in it or remove it"),
    Cli("folder-non-image", run_on(non_image), "train/a/notes.txt is not a readable image",
        "remove it or replace it"),
    Cli("folder-no-train-split", run_on(no_train_split), "no images under train/", "{train,test}/<class>"),
    Cli("tarball-truncated-gz", run_on(truncated_tar_gz), "cannot decompress images.tar.gz",
        "copy it again"),
    Cli("tarball-truncated-member", run_on(truncated_tar), "images.tar is not a readable tar archive",
        "give a folder or a .tar"),
    Cli("tarball-garbage", run_on(not_a_tar), "images.tar is not a readable tar archive",
        "give a folder or a .tar"),
    Cli("idx-bad-magic", run_on(idx_bad_magic), "not an IDX file (bad magic number)", "check the file"),
    Cli("idx-count-mismatch", run_on(idx_count_mismatch),
        "train-images-idx3-ubyte.gz has 12 images but train-labels-idx1-ubyte.gz has 11 labels",
        "different datasets"),
    Cli("idx-label-out-of-range", run_on(idx_label_out_of_range), "test labels [200]",
        "check the label files"),
    Cli("idx-truncated", run_on(idx_truncated), "bytes but dims (12, 28, 28) need 9424", "copy it again"),
    Cli("cifar-malicious-pickle",
        lambda ctx: [*good_argv(ctx.tree), "--dataset", "cifar10", "--data-dir",
                     str(malicious_cifar(ctx.tmp))],
        "data_batch_2: refused to unpickle posix.system", "delete it and download it again"),
    Cli("pack-truncated-shard", lambda ctx: [*good_argv(ctx.tree), "--dataset", damaged_pack(ctx)],
        "train-00001.npy is", "re-run `rethink pack"),
    # ---- checkpoints in the output directory
    Cli("checkpoint-of-another-config", checkpoint_of_another_run, "belongs to run", "use another --out",
        states=("existing",)),
    Cli("checkpoint-truncated", truncated_checkpoint, "checkpoint.pt is", "delete it to restart",
        states=("existing",)),
    # ---- execution
    Cli("nproc-batch-too-small",
        lambda ctx: no_launch(ctx) or run_args("--batch-size", "2", "--nproc", "4")(ctx),
        "a batch of 2 examples", "use fewer processes"),
    Cli("nproc-last-batch-too-small",
        lambda ctx: no_launch(ctx) or run_args("--batch-size", "5", "--nproc", "3")(ctx),
        "a batch of 2 examples (training set 12, batch size 5) cannot be split over 3 processes",
        "use fewer processes"),
    Cli("nproc-train-size-above-dataset",
        lambda ctx: no_launch(ctx) or run_args("--train-size", "100", "--nproc", "2")(ctx),
        "--train-size 100 is larger than the 12 train images", "pass at most 12"),
    Cli("ray-address-garbage",
        lambda ctx: [*REPRODUCE, "--preset", "smoke", "--executor", "ray", "--ray-address", "garbage"],
        "cannot connect to the Ray cluster at garbage", "check --ray-address", marks=(RAY,)),
    Cli("ray-address-nothing-listening",
        lambda ctx: [*REPRODUCE, "--preset", "smoke", "--executor", "ray", "--ray-address", "127.0.0.1:1"],
        "cannot connect to the Ray cluster at 127.0.0.1:1", "check --ray-address", marks=(RAY,)),
    Cli("ray-address-without-ray", lambda ctx: [*REPRODUCE, "--preset", "smoke", "--ray-address", "auto"],
        "--ray-address needs --executor ray", "add --executor ray"),
    Cli("report-without-database", lambda ctx: ["report"], "no results database in",
        "run `rethink reproduce`", states=("absent", "empty")),
    Cli("pack-missing-folder", lambda ctx: ["pack", str(ctx.tmp / "nowhere")], "no such file or directory",
        "give an image-folder directory or tarball", states=("absent", "empty")),
    Cli("pack-non-image", lambda ctx: ["pack", non_image(ctx.tmp).removeprefix("folder:"), "--resolution",
                                       str(SIZE)],
        "train/a/notes.txt is not a readable image", "remove or replace it", states=("absent", "empty")),
    Cli("pack-into-its-source", lambda ctx: ["pack", str(ctx.out.parent)], "is inside the source",
        "write the pack somewhere else", states=("absent",)),
    Cli("unknown-command", lambda ctx: ["frobnicate"], "invalid choice: 'frobnicate'", "--help",
        states=("absent",)),
]


def _cli_params() -> list:
    return [pytest.param(row, state, id=f"{row.id}[{state}]", marks=list(row.marks))
            for row in CLI_ROWS for state in row.states]


@pytest.fixture
def ctx(tmp_path, tree, good_out, good_pack, monkeypatch) -> Ctx:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (tmp_path / "outs").mkdir()
    return Ctx(scratch, tmp_path / "outs" / "out", tree, good_out, good_pack, monkeypatch)


def prepare(ctx: Ctx, state: str) -> None:
    if state == "existing":
        shutil.copytree(ctx.good_out, ctx.out)
    elif state == "empty":
        ctx.out.mkdir()


def call_cli(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize(("row", "state"), _cli_params())
def test_cli_bad_input_is_one_line_exit_2_and_leaves_out_dir_alone(row: Cli, state, ctx, capsys):
    prepare(ctx, state)
    argv = [*row.make(ctx)]
    if argv[0] != "frobnicate":
        argv += ["--out", str(ctx.out)]
    before = Unchanged(ctx)
    code, err = call_cli(argv, capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and err.endswith("\n") and err.startswith("rethink"), err
    assert row.problem in err, err
    assert row.fix in err, err
    before.check()


@pytest.mark.realdata
@pytest.mark.parametrize("state", ["absent", "existing"])
def test_cli_train_size_above_real_mnist(shared_data_dir, state, ctx, capsys):
    prepare(ctx, state)
    before = Unchanged(ctx)
    code, err = call_cli(["run", "--dataset", "mnist", "--data-dir", str(shared_data_dir), "--train-size",
                          "70000", "--device", "cpu", "--out", str(ctx.out)], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "--train-size 70000 is larger than the 60000 train images of mnist" in err
    assert "pass at most 60000" in err
    before.check()


# ---------------------------------------------------------------------------- the Python API


@dataclasses.dataclass(frozen=True)
class Api:
    """One bad call: `call(ctx)` makes its files and calls the API with ctx.out as the output dir."""

    id: str
    call: Callable[[Ctx], object]
    error: type[RethinkError]
    problem: str
    fix: str
    states: tuple[str, ...] = ("absent",)
    setup: Callable[[Ctx], None] | None = None  # files placed before the output dir is snapshot


def validate(**fields) -> Callable[[Ctx], object]:
    return lambda ctx: RunConfig(**fields).validate()


def load(make_dataset: Callable[[Path], str]) -> Callable[[Ctx], object]:
    return lambda ctx: load_dataset(make_dataset(ctx.tmp), ctx.tmp)


def run_config(ctx: Ctx, **fields) -> RunConfig:
    base = dict(dataset=f"folder:{ctx.tree}", input_size=SIZE, max_epochs=1, batch_size=4, precision="fp32")
    return RunConfig(**{**base, **fields})


def api_run(**fields) -> Callable[[Ctx], object]:
    return lambda ctx: run(run_config(ctx, **fields), out_dir=ctx.out, device="cpu", log=lambda s: None)


def api_run_other_config(ctx: Ctx):
    config = parse_run_config(other_config(ctx))
    return run(config, out_dir=ctx.out, device="cpu", log=lambda s: None)


def place_checkpoint(damage: Callable[[bytes], bytes]) -> Callable[[Ctx], None]:
    return lambda ctx: foreign_checkpoint(ctx, other_config(ctx), damage)


def sweep(preset: str = "smoke", **kw) -> Callable[[Ctx], object]:
    return lambda ctx: run_sweep(preset, out_dir=ctx.out, device="cpu", report=False, log=lambda s: None,
                                 **kw)


def mnist_label_out_of_range(ctx: Ctx):
    """MNIST files (checksums made to match) whose training labels include 10."""
    d = ctx.tmp / "data" / "mnist"
    write_idx_dir(d)
    labels = (np.arange(12) % 10).astype(np.uint8)
    labels[5] = 10
    (d / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    table = {stem: ("0" * 32, hashlib.md5(gzip.decompress((d / f"{stem}.gz").read_bytes())).hexdigest())
             for stem in downloads.MNIST_FILES}
    ctx.monkeypatch.setattr(downloads, "MNIST_FILES", table)
    return load_dataset("mnist", ctx.tmp / "data")


def malicious_cifar_load(ctx: Ctx):
    return load_dataset("cifar10", malicious_cifar(ctx.tmp))


API_ROWS = [
    Api("config-init", validate(init="xavier"), ConfigError, "unknown initialization 'xavier'",
        "choose one of"),
    Api("config-p-negative", validate(corruption="partial", p=-0.1), ConfigError, "outside [0, 1]",
        "pass --p"),
    Api("config-p-nan", validate(corruption="partial", p=math.nan), ConfigError, "outside [0, 1]",
        "pass --p"),
    Api("config-momentum", validate(momentum=1.01), ConfigError, "momentum=1.01 is outside",
        "fix --momentum"),
    Api("config-lr-inf", validate(lr=math.inf), ConfigError, "lr=inf is outside", "fix --lr"),
    Api("config-batch-zero", validate(batch_size=0), ConfigError, "batch_size=0 must be a positive integer",
        "fix --batch-size"),
    Api("config-test-size-negative", validate(test_size=-3), ConfigError, "test_size=-3 must be a positive",
        "fix --test-size"),
    Api("config-decay-samples-zero", validate(decay_samples=0), ConfigError, "decay_samples=0",
        "fix --decay-per"),
    Api("config-input-size-float", validate(input_size=28.5), ConfigError, "input_size=28.5",
        "fix --input-size"),
    Api("config-unknown-key", lambda ctx: RunConfig.from_dict({"modle": "mlp1x512"}), ConfigError,
        "unknown config key(s) modle", "known keys"),
    Api("load-unknown-dataset", lambda ctx: load_dataset("imagenet", ctx.tmp), ConfigError,
        "unknown dataset 'imagenet'", "known: cifar10"),
    Api("load-prefix-without-path", lambda ctx: load_dataset("folder:", ctx.tmp), ConfigError,
        "has no path", "folder:PATH"),
    Api("load-mixed-sizes", load(mixed_sizes), DataError, "is 8x9 but", "resize all images"),
    Api("load-empty-class", load(empty_class), DataError, "class folder train/c is empty", "remove it"),
    Api("load-non-image", load(non_image), DataError, "is not a readable image", "remove it"),
    Api("load-no-train-split", load(no_train_split), DataError, "no images under train/", "lay the images"),
    Api("load-truncated-tarball", load(truncated_tar_gz), DataError, "cannot decompress", "copy it again"),
    Api("load-idx-bad-magic", load(idx_bad_magic), DataError, "bad magic number", "check the file"),
    Api("load-idx-count-mismatch", load(idx_count_mismatch), DataError, "has 12 images but", "different"),
    Api("load-idx-label-out-of-range", load(idx_label_out_of_range), DataError, "test labels [200]",
        "check the label files"),
    Api("load-mnist-label-out-of-range", mnist_label_out_of_range, DataError, "train labels outside 0..9",
        "check the files"),
    Api("load-cifar-malicious-pickle", malicious_cifar_load, DataError, "refused to unpickle",
        "delete it and download it again"),
    Api("open-pack-truncated-shard", lambda ctx: open_pack(damaged_pack(ctx).removeprefix("packed:")),
        DataError, "train-00001.npy is", "re-run `rethink pack"),
    Api("open-pack-not-a-pack", lambda ctx: open_pack(ctx.tree), DataError, "manifest.json is missing",
        "rethink pack"),
    Api("api-pack-missing-folder", lambda ctx: pack_folder(ctx.tmp / "nowhere", ctx.out, log=lambda s: None),
        DataError, "no such file or directory", "give an image-folder"),
    Api("pack-resolution-zero", lambda ctx: pack_folder(ctx.tree, ctx.out, resolution=0), ConfigError,
        "--resolution 0 must be positive", "pass e.g."),
    Api("api-pack-non-image",
        lambda ctx: pack_folder(non_image(ctx.tmp).removeprefix("folder:"), ctx.out, resolution=SIZE,
                                log=lambda s: None),
        DataError, "notes.txt is not a readable image", "remove or replace it"),
    Api("run-unknown-model", api_run(model="resnet"), ConfigError, "unknown model", "pick one of",
        states=("absent", "existing")),
    Api("run-train-size-above-dataset", api_run(train_size=13), ConfigError,
        "--train-size 13 is larger than the 12 train images", "pass at most 12",
        states=("absent", "existing")),
    Api("run-input-size-above-images", api_run(input_size=12), ConfigError, "12", "input",
        states=("absent", "existing")),
    Api("run-unknown-device", lambda ctx: run(run_config(ctx), out_dir=ctx.out, device="abacus"), ConfigError,
        "unknown device 'abacus'", "pass auto, cpu", states=("absent", "existing")),
    Api("run-checkpoint-of-another-config", api_run_other_config, CheckpointError,
        "belongs to run", "use another --out", states=("existing",), setup=place_checkpoint(lambda b: b)),
    Api("run-checkpoint-garbage", api_run_other_config, CheckpointError, "is unreadable", "delete it",
        states=("existing",), setup=place_checkpoint(lambda b: b"\x00garbage" * 10)),
    Api("sweep-unknown-preset", sweep("huge"), ConfigError, "unknown preset 'huge'", "choose one of",
        states=("absent", "existing")),
    Api("sweep-unknown-experiment", sweep(experiments=("fig9",)), ConfigError, "unknown experiment",
        "choose from", states=("absent", "existing")),
    Api("sweep-seeds-zero", sweep(seeds=0), ConfigError, "--seeds 0 must be at least 1", "pass --seeds 1",
        states=("absent", "existing")),
    Api("sweep-unknown-precision", sweep(precision="fp8"), ConfigError, "unknown precision 'fp8'",
        "choose one of", states=("absent", "existing")),
    Api("sweep-missing-data", lambda ctx: run_sweep("smoke", out_dir=ctx.out, data_dir=ctx.tmp / "none",
                                                    device="cpu", report=False, log=lambda s: None),
        DataError, "cifar10: no data found", "--download", states=("absent", "existing")),
]


def _api_params() -> list:
    return [pytest.param(row, state, id=f"{row.id}[{state}]") for row in API_ROWS for state in row.states]


@pytest.mark.parametrize(("row", "state"), _api_params())
def test_api_bad_input_raises_a_one_line_rethink_error(row: Api, state, ctx):
    prepare(ctx, state)
    if row.setup is not None:
        row.setup(ctx)
    before = Unchanged(ctx)
    with pytest.raises(RethinkError) as info:
        row.call(ctx)
    exc = info.value
    assert isinstance(exc, row.error), f"{type(exc).__name__}: {exc}"
    assert "\n" not in str(exc), str(exc)
    assert row.problem in exc.message, exc.message
    assert exc.hint and row.fix in exc.hint, exc.hint
    before.check()


def test_the_tables_cover_at_least_30_distinct_bad_inputs():
    ids = [r.id for r in CLI_ROWS] + [r.id for r in API_ROWS]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 30


# ---------------------------------------------------------------------------- properties


MODELS = tuple(info.name for info in list_models())
DROPOUT_MODELS = tuple(info.name for info in list_models() if info.supports_dropout)


@st.composite
def valid_configs(draw) -> RunConfig:
    corruption = draw(st.sampled_from(tuple(CORRUPTIONS)))
    model = draw(st.sampled_from(MODELS))
    augment = tuple(draw(st.sets(st.sampled_from(AUGMENTATIONS))))
    pixel_test = corruption in ("shuffled-pixels", "random-pixels", "gaussian")
    fields = dict(
        dataset=draw(st.sampled_from(["cifar10", "mnist", "folder:/data/x", "idx:rel/dir", "packed:/p"])),
        train_size=draw(st.none() | st.integers(1, 10**6)),
        test_size=draw(st.none() | st.integers(1, 10**6)),
        input_size=draw(st.integers(1, 512)),
        corruption=corruption,
        p=draw(st.floats(0, 1)) if corruption == "partial" else None,
        label_noise=draw(st.sampled_from(LABEL_NOISE_CONVENTIONS)),
        gaussian_stats=draw(st.sampled_from(GAUSSIAN_STATS)),
        corrupt_before_crop=draw(st.booleans()) or ("crop" in augment and pixel_test),
        model=model,
        dropout=draw(st.floats(0, 1, exclude_max=True)) if model in DROPOUT_MODELS else 0.0,
        init=draw(st.sampled_from(tuple(INITS))),
        lr=draw(st.none() | st.floats(1e-6, 10)),
        momentum=draw(st.floats(0, 1)),
        lr_decay=draw(st.floats(0, 1, exclude_min=True)),
        decay_samples=draw(st.none() | st.integers(1, 10**7)),
        batch_size=draw(st.integers(1, 4096)),
        weight_decay=draw(st.floats(0, 1)),
        augment=tuple(a for a in augment if not (a == "color" and corruption == "gaussian")),
        max_epochs=draw(st.integers(1, 1000)),
        fit_threshold=draw(st.floats(0, 1, exclude_min=True)),
        stop_at_fit=draw(st.booleans()),
        epochs_past_fit=draw(st.integers(0, 50)),
        precision=draw(st.sampled_from(("fp32", "bf16"))),
        train_eval=draw(st.sampled_from(("full", "screen"))),
        **{k: draw(st.integers(0, 2**31))
           for k in ("corruption_seed", "init_seed", "data_seed", "subset_seed")},
    )
    return RunConfig(**fields)


def parse_run_config(argv: list[str]) -> RunConfig:
    """The RunConfig that the `rethink run` command line `argv` asks for."""
    return config_from_args(cli.build_parser().parse_args(argv))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=valid_configs())
def test_any_valid_config_round_trips_through_the_cli_and_its_dict(config):
    """Every run option is generated from RunConfig's fields, and written back by to_argv: a config
    goes through the command line (and through its dict) to the same config and run id."""
    assert config.validate() is config
    parsed = parse_run_config(["run", *to_argv(config)])
    assert parsed == config and parsed.run_id == config.run_id
    again = RunConfig.from_dict(config.to_dict())
    assert again == config and again.run_id == config.run_id
    assert RunConfig.from_dict(RunConfig.from_dict(config.to_dict()).to_dict()).to_json() == config.to_json()


def test_a_command_line_written_by_hand_gives_the_config_it_says():
    """to_argv and the parser could agree with each other and both be wrong; this one is by hand."""
    argv = ["run", "--dataset", "mnist", "--train-size", "500", "--corruption", "partial", "--p", "0.3",
            "--label-noise", "incorrect-only", "--model", "alexnet", "--lr", "0.05", "--decay-per", "epoch",
            "--augment", "flip,crop", "--no-stop-at-fit", "--precision", "fp32", "--seed", "7",
            "--init-seed", "3", "--weight-decay", "-1e-4"]
    config = config_from_args(cli.build_parser().parse_args(join_negative_values(argv)))
    assert config == RunConfig(dataset="mnist", train_size=500, corruption="partial", p=0.3,
                               label_noise="incorrect-only", model="alexnet", lr=0.05, decay_samples=None,
                               augment=("crop", "flip"), stop_at_fit=False, precision="fp32",
                               weight_decay=-1e-4, corruption_seed=7, init_seed=7, data_seed=7, subset_seed=7)


bad_p = st.one_of(st.floats(max_value=0, exclude_max=True), st.floats(min_value=1, exclude_min=True),
                  st.sampled_from([math.nan, math.inf, -math.inf]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(p=bad_p)
def test_any_p_outside_the_unit_interval_is_refused_by_config_and_cli(p, capsys, tmp_path_factory):
    with pytest.raises(ConfigError, match=r"outside \[0, 1\]"):
        RunConfig(corruption="partial", p=p).validate()
    out = tmp_path_factory.getbasetemp() / "never-written"
    code, err = call_cli(["run", "--corruption", "partial", "--p", repr(p), "--device", "cpu",
                          "--out", str(out)], capsys)
    assert code == 2 and err.count("\n") == 1 and "outside [0, 1]" in err, err
    assert not out.exists()


def _data(n: int, k: int, h: int, w: int, c: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (n, h, w, c), generator=g, dtype=torch.uint8),
            torch.randint(0, k, (n,), generator=g),
            torch.randint(0, 256, (max(1, n // 2), h, w, c), generator=g, dtype=torch.uint8),
            torch.randint(0, k, (max(1, n // 2),), generator=g))


def _pixel_multiset(images: torch.Tensor) -> torch.Tensor:
    """Per image, its pixels (channel tuples as one integer) in sorted order."""
    flat = images.to(torch.int64).reshape(len(images), -1, images.shape[-1])
    keys = sum(flat[..., i] * 256**i for i in range(flat.shape[-1]))
    return keys.sort(dim=1).values


@settings(max_examples=50, deadline=None)
@given(kind=st.sampled_from(tuple(CORRUPTIONS)), n=st.integers(1, 40), k=st.integers(2, 12),
       hw=st.tuples(st.integers(1, 6), st.integers(1, 6)), c=st.sampled_from([1, 3]),
       p=st.floats(0, 1), seed=st.integers(0, 2**31), noise=st.sampled_from(LABEL_NOISE_CONVENTIONS),
       stats=st.sampled_from(GAUSSIAN_STATS))
def test_every_corruption_keeps_shapes_and_ranges_and_is_deterministic(kind, n, k, hw, c, p, seed, noise,
                                                                       stats):
    x, y, tx, ty = _data(n, k, *hw, c, seed)
    originals = [t.clone() for t in (x, y, tx, ty)]
    kw = dict(num_classes=k, seed=seed, p=p if kind == "partial" else None, label_noise=noise,
              gaussian_stats=stats)
    d = corrupt(kind, x, y, tx, ty, **kw)
    again = corrupt(kind, x, y, tx, ty, **kw)
    for a, b in zip(originals, (x, y, tx, ty), strict=True):
        assert torch.equal(a, b)  # inputs untouched
    assert d.train_images.shape == x.shape and d.test_images.shape == tx.shape
    image_dtype = torch.float32 if kind == "gaussian" else torch.uint8
    assert d.train_images.dtype == d.test_images.dtype == image_dtype
    assert d.train_labels.shape == y.shape and d.train_labels.dtype == torch.int64
    assert int(d.train_labels.min()) >= 0 and int(d.train_labels.max()) < k
    assert torch.equal(d.test_labels, ty)  # test labels stay true
    assert torch.equal(d.changed, d.train_labels != y) and d.realized_rate == float(d.changed.float().mean())
    if kind in ("true", "shuffled-pixels", "random-pixels", "gaussian"):
        assert torch.equal(d.train_labels, y)
    if kind in ("true", "partial", "random-labels"):
        assert torch.equal(d.train_images, x) and torch.equal(d.test_images, tx)
    if kind in ("shuffled-pixels", "random-pixels"):  # each image's pixels, moved as whole pixels
        assert torch.equal(_pixel_multiset(d.train_images), _pixel_multiset(x))
        assert torch.equal(_pixel_multiset(d.test_images), _pixel_multiset(tx))
    for field in ("train_images", "train_labels", "test_images", "changed"):
        assert torch.equal(getattr(d, field), getattr(again, field)), field


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 200), k=st.integers(2, 20), seed=st.integers(0, 2**31),
       noise=st.sampled_from(LABEL_NOISE_CONVENTIONS))
def test_partial_with_p_zero_is_the_identity(n, k, seed, noise):
    x, y, tx, ty = _data(n, k, 2, 2, 1, seed)
    d = corrupt("partial", x, y, tx, ty, num_classes=k, seed=seed, p=0.0, label_noise=noise)
    assert torch.equal(d.train_labels, y) and not d.changed.any() and d.realized_rate == 0.0
    assert torch.equal(d.train_images, x) and torch.equal(d.test_images, tx)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 200), k=st.integers(2, 20), seed=st.integers(0, 2**31))
def test_random_labels_stay_in_range_and_follow_the_seed(n, k, seed):
    x, y, tx, ty = _data(n, k, 1, 1, 1, 0)
    a = corrupt("random-labels", x, y, tx, ty, num_classes=k, seed=seed)
    b = corrupt("random-labels", x, y, tx, ty, num_classes=k, seed=seed)
    assert torch.equal(a.train_labels, b.train_labels)
    assert int(a.train_labels.min()) >= 0 and int(a.train_labels.max()) < k
