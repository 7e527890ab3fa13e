"""Packs (`rethink pack`, `packed:DIR`): format, memory mapping, damage, and streaming training
with the in-memory path's subsets, labels and preprocessing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rethink.cli import main
from rethink.config import RunConfig
from rethink.data import load_dataset
from rethink.data import packed as packed_mod
from rethink.data.packed import PackedDataset, open_pack, pack_folder
from rethink.data.pipeline import build_run_data
from rethink.data.preprocess import prepare
from rethink.data.streaming import corruption_dir
from rethink.errors import DataError
from rethink.store import Store

N_CLASSES, N_TRAIN, N_TEST, SIZE = 20, 6, 2, 64


def make_tree(root: Path, seed: int = 0) -> Path:
    """20 classes x (6 train + 2 test) 64x64 RGB PNGs (lossless): a class colour plus noise."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, size=(N_CLASSES, 3))
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        for c in range(N_CLASSES):
            d = root / split / f"class{c:02d}"
            d.mkdir(parents=True)
            for i in range(n):
                noise = rng.normal(0, 40, size=(SIZE, SIZE, 3))
                img = np.clip(colours[c] + noise, 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"img{i}.png")
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("folder") / "tree")


@pytest.fixture(scope="module")
def pack64(tree, tmp_path_factory) -> Path:
    """The tree packed at its own size, 50 images per shard: train 50+50+20, test 40."""
    out = tmp_path_factory.mktemp("packs") / "p64"
    pack_folder(tree, out, resolution=SIZE, shard_size=50, log=lambda s: None)
    return out


@pytest.fixture(scope="module")
def folder_raw(tree):
    return load_dataset(f"folder:{tree}")


def copy_pack(pack: Path, dest: Path) -> Path:
    shutil.copytree(pack, dest, ignore=shutil.ignore_patterns("corrupted"))
    return dest


# ---------------------------------------------------------------------------- packing


def test_pack_holds_the_folder_images_labels_and_statistics(pack64, folder_raw):
    m = json.loads((pack64 / "manifest.json").read_text())
    assert m["format_version"] == 1 and m["resolution"] == SIZE and len(m["content_sha256"]) == 64
    assert m["classes"] == list(folder_raw.classes) and len(m["source_sha256"]) == 64
    train, test = m["splits"]["train"], m["splits"]["test"]
    assert (train["count"], test["count"]) == (N_CLASSES * N_TRAIN, N_CLASSES * N_TEST)
    assert [(s["name"], s["count"]) for s in train["shards"]] == [
        ("train-00000.npy", 50), ("train-00001.npy", 50), ("train-00002.npy", 20)]
    assert [s["name"] for s in test["shards"]] == ["test-00000.npy"]
    shards = [np.load(pack64 / s["name"], allow_pickle=False) for s in train["shards"]]
    assert all(a.dtype == np.uint8 and a.shape[1:] == (SIZE, SIZE, 3) for a in shards)
    # PNG is lossless and the pack resolution is the image size: exactly what folder: decodes
    np.testing.assert_array_equal(np.concatenate(shards), folder_raw.train_images.numpy())
    np.testing.assert_array_equal(np.load(pack64 / "test-00000.npy"), folder_raw.test_images.numpy())
    np.testing.assert_array_equal(np.load(pack64 / "train-labels.npy"), folder_raw.train_labels.numpy())
    np.testing.assert_array_equal(np.load(pack64 / "test-labels.npy"), folder_raw.test_labels.numpy())
    pixels = folder_raw.train_images.numpy().reshape(-1, 3) / 255.0
    np.testing.assert_allclose(m["train_mean"], pixels.mean(0), rtol=1e-12)
    np.testing.assert_allclose(m["train_std"], pixels.std(0), rtol=1e-9)
    assert not list(pack64.parent.glob(".*packing*"))  # the work folder was renamed into place


def test_resize_shorter_side_centre_crop_rgb_and_val_as_test(tmp_path):
    src = tmp_path / "imgs"
    for split in ("train", "val"):
        (src / split / "a").mkdir(parents=True)
    wide = np.zeros((64, 96, 3), np.uint8)  # left half red, right half blue
    wide[:, :48, 0], wide[:, 48:, 2] = 255, 255
    Image.fromarray(wide).save(src / "train" / "a" / "wide.png")
    Image.fromarray(np.full((80, 40), 100, np.uint8), "L").save(src / "train" / "a" / "gray.png")
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 1], rgba[..., 3] = 200, 7
    Image.fromarray(rgba, "RGBA").save(src / "val" / "a" / "alpha.png")
    lines = []
    pack_folder(src, tmp_path / "p", resolution=32, log=lines.append)
    ds = open_pack(tmp_path / "p")
    assert ds.train_images.shape == (2, 32, 32, 3) and ds.test_images.shape == (1, 32, 32, 3)
    assert (ds.train_images[0].numpy() == 100).all()  # gray.png: grayscale becomes 3 equal channels
    x = ds.train_images[1].numpy()  # wide.png: 96x64 -> 48x32, centre 32 columns: 16 red, 16 blue
    assert (x[:, :14] == [255, 0, 0]).all() and (x[:, 18:] == [0, 0, 255]).all()
    assert (ds.test_images[0].numpy() == [0, 200, 0]).all()  # val/ is the test split; alpha dropped
    assert any("images/s" in line for line in lines)


def test_cli_pack_skips_the_same_pack_and_refuses_a_different_one(tree, pack64, tmp_path, capsys):
    out = copy_pack(pack64, tmp_path / "p")
    assert main(["pack", str(tree), "--out", str(out), "--resolution", "64", "--shard-size", "50"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert main(["pack", str(tree), "--out", str(out), "--resolution", "48"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "different pack (resolution 64, not 48)" in err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert main(["pack", str(tree), "--out", str(tmp_path / "other")]) == 2
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_interrupted_pack_resumes_at_the_first_unfinished_shard(tree, pack64, tmp_path, monkeypatch):
    real, calls = packed_mod._load_job, []

    def dies_after_70(job):
        calls.append(job)
        if len(calls) > 70:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(packed_mod, "_load_job", dies_after_70)
    out = tmp_path / "p"
    with pytest.raises(KeyboardInterrupt):
        pack_folder(tree, out, resolution=SIZE, shard_size=50, log=lambda s: None)
    assert not out.exists() and (tmp_path / ".p.packing" / "train-00000.npy").is_file()
    calls.clear()
    monkeypatch.setattr(packed_mod, "_load_job", lambda job: (calls.append(job), real(job))[1])
    lines = []
    m = pack_folder(tree, out, resolution=SIZE, shard_size=50, log=lines.append)
    assert len(calls) == N_CLASSES * (N_TRAIN + N_TEST) - 50  # the first shard was kept
    assert any("resuming" in line for line in lines)
    assert m["content_sha256"] == json.loads((pack64 / "manifest.json").read_text())["content_sha256"]
    assert not (tmp_path / ".p.packing").exists()


def test_worker_processes_give_the_same_pack(tree, pack64, tmp_path):
    m = pack_folder(tree, tmp_path / "p", resolution=SIZE, shard_size=50, workers=2, log=lambda s: None)
    assert m["content_sha256"] == json.loads((pack64 / "manifest.json").read_text())["content_sha256"]


# ---------------------------------------------------------------------------- loading


def test_loading_memory_maps_without_reading_pixels(pack64, tmp_path):
    ds = load_dataset(f"packed:{pack64}")
    assert isinstance(ds, PackedDataset) and ds.name == f"packed:{pack64.resolve()}"
    assert all(isinstance(s, np.memmap) and s.mode == "r" for s in ds.train_images.shards)
    assert ds.train_images.shape == (120, SIZE, SIZE, 3) and ds.num_classes == N_CLASSES
    # damaging pixels (same size) goes unnoticed by a plain load, which reads none; verify re-hashes
    damaged = copy_pack(pack64, tmp_path / "d")
    with open(damaged / "train-00001.npy", "r+b") as f:
        f.seek(-100, 2)
        f.write(bytes(100))
    assert open_pack(damaged).train_images.shape[0] == 120
    with pytest.raises(DataError, match="train-00001.npy does not match its sha256"):
        load_dataset(f"packed:{damaged}", verify=True)


def _truncate(p: Path) -> str:
    path = p / "train-00001.npy"
    path.write_bytes(path.read_bytes()[:-5000])
    return "train-00001.npy"


def _remove(p: Path) -> str:
    (p / "train-00002.npy").unlink()
    return "train-00002.npy is missing"


def _reshape(p: Path) -> str:
    np.save(p / "test-00000.npy", np.zeros((40, 32, 32, 3), np.uint8))
    return "test-00000.npy holds uint8 (40, 32, 32, 3)"


def _labels(p: Path) -> str:
    (p / "train-labels.npy").unlink()
    return "train-labels.npy is missing"


def _edit_manifest(p: Path) -> str:
    m = json.loads((p / "manifest.json").read_text())
    m["classes"][0] = "renamed"
    (p / "manifest.json").write_text(json.dumps(m))
    return "does not match its content hash"


@pytest.mark.parametrize("damage", [_truncate, _remove, _reshape, _labels, _edit_manifest])
def test_a_damaged_pack_is_one_line_exit_2_naming_the_file(damage, pack64, tmp_path, capsys):
    broken = copy_pack(pack64, tmp_path / "broken")
    fragment = damage(broken)
    out = tmp_path / "out"
    code = main(["run", "--dataset", f"packed:{broken}", "--input-size", "56", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and fragment in err and "rethink pack" in err, err
    assert not out.exists()


# ---------------------------------------------------------------------------- streaming run data


def _both(folder_raw, pack: Path, **kw):
    config = RunConfig(dataset="x", input_size=56, **kw)
    return build_run_data(config, folder_raw), build_run_data(config, load_dataset(f"packed:{pack}"))


def _assert_same(mem, lazy, n_idx: int = 37) -> None:
    assert torch.equal(mem.train_y, lazy.train_y) and torch.equal(mem.test_y, lazy.test_y)
    assert torch.equal(mem.changed, lazy.changed) and mem.realized_rate == lazy.realized_rate
    assert torch.equal(mem.subset, lazy.subset) and mem.in_shape == lazy.in_shape
    assert len(lazy.train_x) == len(mem.train_x) and lazy.train_x.shape == mem.train_x.shape
    torch.testing.assert_close(lazy.train_x[:], mem.train_x, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lazy.test_x[0:len(mem.test_x)], mem.test_x, atol=1e-5, rtol=1e-5)
    idx = torch.randperm(len(mem.train_y), generator=torch.Generator().manual_seed(1))[:n_idx]
    torch.testing.assert_close(lazy.train_x[idx], mem.train_x[idx], atol=1e-5, rtol=1e-5)
    for start in range(0, len(mem.train_y), 16):  # consecutive slices: the read-ahead path
        torch.testing.assert_close(lazy.train_x[start:start + 16], mem.train_x[start:start + 16],
                                   atol=1e-5, rtol=1e-5)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    torch.testing.assert_close(lazy.train_batch(idx, g1), mem.train_batch(idx, g2), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"corruption": "random-labels", "corruption_seed": 3},
        {"corruption": "partial", "p": 0.5, "train_size": 60, "test_size": 20, "augment": ("crop", "flip")},
        {"corruption": "partial", "p": 0.5, "label_noise": "incorrect-only", "subset_seed": 2,
         "train_size": 100},
    ],
    ids=["true", "random-labels", "partial-subset-crop", "partial-incorrect-only"],
)
def test_run_data_from_a_pack_equals_the_in_memory_run_data(folder_raw, pack64, kw, one_torch_thread):
    mem, lazy = _both(folder_raw, pack64, **kw)
    _assert_same(mem, lazy)
    if kw.get("corruption") == "random-labels":
        assert lazy.realized_rate > 0.8
    if "augment" in kw:
        assert lazy.train_full is not None and lazy.train_full.shape == (60, SIZE, SIZE, 3)
        assert lazy.crop_padding == mem.crop_padding


def test_shuffled_pixels_are_written_once_reused_and_equal_the_in_memory_ones(folder_raw, pack64, tmp_path,
                                                                            one_torch_thread):
    pack = copy_pack(pack64, tmp_path / "p")
    mem, lazy = _both(folder_raw, pack, corruption="shuffled-pixels", corruption_seed=4, train_size=80)
    _assert_same(mem, lazy)  # one permutation from Generator(seed): the in-memory one exactly
    ds = load_dataset(f"packed:{pack}")
    d = corruption_dir(ds, "shuffled-pixels", 4, 56, "per-channel")
    assert d.name == "shuffled-pixels-seed4-crop56" and (d / "manifest.json").is_file()
    before = {p.name: p.stat().st_mtime_ns for p in d.iterdir()}
    lines = []
    from rethink.data.streaming import build_packed_run_data

    again = build_packed_run_data(RunConfig(dataset="x", input_size=56, corruption="shuffled-pixels",
                                            corruption_seed=4), ds, log=lines.append)
    assert not lines and {p.name: p.stat().st_mtime_ns for p in d.iterdir()} == before  # reused
    assert again.corruption_sha256 != lazy.corruption_sha256  # the subset differs
    # a run on the clean data hashes differently from the same subset's shuffled data
    clean = build_run_data(RunConfig(dataset="x", input_size=56, train_size=80), ds)
    assert clean.corruption_sha256 != lazy.corruption_sha256 and clean.data_hash == lazy.data_hash


def test_concurrent_runs_write_the_corrupted_shards_once(pack64, tmp_path, one_torch_thread):
    """Data-parallel ranks build their RunData at the same time: one writes, the others wait."""
    from concurrent.futures import ThreadPoolExecutor

    pack = copy_pack(pack64, tmp_path / "p")
    config = RunConfig(dataset="x", input_size=56, corruption="random-pixels", corruption_seed=7)
    lines: list[str] = []
    from rethink.data.streaming import build_packed_run_data

    def build(_):
        return build_packed_run_data(config, load_dataset(f"packed:{pack}"), log=lines.append)

    with ThreadPoolExecutor(3) as pool:
        runs = list(pool.map(build, range(3)))
    assert sum("writing" in line for line in lines) == 1
    assert len({r.corruption_sha256 for r in runs}) == 1
    assert all(torch.equal(r.train_x[:], runs[0].train_x[:]) for r in runs[1:])


def test_random_pixels_and_gaussian_are_frozen_and_follow_the_definitions(folder_raw, pack64, tmp_path,
                                                                         one_torch_thread):
    pack = copy_pack(pack64, tmp_path / "p")
    ds = load_dataset(f"packed:{pack}")
    config = RunConfig(dataset="x", input_size=56, corruption="random-pixels", corruption_seed=1,
                       augment=("crop",))
    a, b = build_run_data(config, ds), build_run_data(config, load_dataset(f"packed:{pack}"))
    assert torch.equal(a.train_full[:], b.train_full[:]) and a.corruption_sha256 == b.corruption_sha256
    clean = folder_raw.train_images[:, 4:60, 4:60].reshape(120, -1, 3).numpy()
    got = a.train_full[:].reshape(120, -1, 3).numpy()

    def key(x):  # an RGB triple as one number
        return x[..., 0].astype(np.int64) * 65536 + x[..., 1].astype(np.int64) * 256 + x[..., 2]

    np.testing.assert_array_equal(np.sort(key(got), 1), np.sort(key(clean), 1))  # permuted, triples kept
    assert not (got == clean).all(axis=(1, 2)).any()
    # image 0's permutation, recovered from its pixels, is not image 1's
    order = np.argsort(key(clean[0]), kind="stable")
    perm0 = order[np.searchsorted(key(clean[0])[order], key(got[0]))]
    np.testing.assert_array_equal(clean[0][perm0], got[0])
    assert not (clean[1][perm0] == got[1]).all()

    gauss = build_run_data(config.replace(corruption="gaussian", corrupt_before_crop=True), ds)
    noise = gauss.train_full[:]
    assert noise.dtype == torch.float32 and noise.shape == (120, SIZE, SIZE, 3)
    mean, std = ds.pixel_stats("per-channel")
    torch.testing.assert_close(noise.double().mean((0, 1, 2)), torch.tensor(mean), atol=3e-3, rtol=0)
    torch.testing.assert_close(noise.double().std((0, 1, 2)), torch.tensor(std), atol=3e-3, rtol=0)
    torch.testing.assert_close(gauss.test_x[:], prepare(ds_test_noise(pack), 56), atol=1e-5, rtol=1e-5)
    assert gauss.realized_rate == 0.0 and not gauss.changed.any()


def ds_test_noise(pack: Path) -> torch.Tensor:
    d = pack / "corrupted" / "gaussian-seed1-full-per-channel"
    x = torch.from_numpy(np.load(d / "test-00000.npy", allow_pickle=False))
    assert x.dtype == torch.float32 and x.shape == (40, SIZE, SIZE, 3)  # test images are noise too
    return x


# ---------------------------------------------------------------------------- end to end


def test_cli_trains_from_a_pack_and_resumes(pack64, tmp_path, capsys, monkeypatch, one_torch_thread):
    out = tmp_path / "runs"
    argv = ["run", "--dataset", f"packed:{pack64}", "--model", "mlp1x512", "--input-size", "56",
            "--corruption", "random-labels", "--max-epochs", "3", "--precision", "fp32", "--out", str(out)]
    real = Store.write_epoch

    def killed_after_epoch_2(self, run_id, row):
        real(self, run_id, row)
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Store, "write_epoch", killed_after_epoch_2)
    assert main(argv) == 130
    text = capsys.readouterr().out
    assert "(120 train / 40 test, 56x56x3)" in text and "epoch   1/3" in text  # epoch 2: killed at its row
    monkeypatch.setattr(Store, "write_epoch", real)
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "resuming run" in text and "after epoch 2" in text and "epoch   3/3" in text
    with Store(out) as store:
        (run,) = store.runs()
        epochs = store.epochs(run["run_id"])
    assert [e["epoch"] for e in epochs] == [0, 1, 2, 3]  # epoch 0: the initial network
    # 20 classes: top-5 is recorded beside top-1, and is at least as high; the best is over trained
    # epochs (epoch 0 has none)
    for e in epochs:
        assert e["train_acc"] <= e["train_top5"] <= 1 and e["test_acc"] <= e["test_top5"] <= 1
        best = max((x["test_top5"] for x in epochs[1 : e["epoch"] + 1]), default=None)
        assert e["best_test_top5"] == best
    assert main(argv) == 0 and "already finished" in capsys.readouterr().out


def test_table2_sweep_trains_inception_v3_from_a_pack_and_reports_top5(tree, tmp_path, monkeypatch):
    """The paper's ImageNet table end to end, tiny: Inception V3 at its smallest input (75 from an
    80-pixel pack), the seven rows for one epoch, then the report's Table 2 with top-5 columns."""
    from rethink.experiments import grids
    from rethink.experiments.sweep import run_sweep

    pack = tmp_path / "p80"
    pack_folder(tree, pack, resolution=80, log=lambda s: None)
    tiny = grids.Preset(name="tiny-imagenet", description="Table 2 machinery on 20 generated classes",
                        models=(grids.IMAGENET_MODEL,), train_size={}, test_size={},
                        max_epochs={grids.IMAGENET_MODEL: 1}, table2_input_size=75)
    monkeypatch.setitem(grids.PRESETS, "tiny-imagenet", tiny)
    result = run_sweep("tiny-imagenet", experiments=("table2",), dataset=f"packed:{pack}",
                       out_dir=tmp_path / "runs", log=lambda s: None)
    assert (result.runs, result.finished, result.failed) == (7, 7, 0)
    with Store(tmp_path / "runs") as store:
        runs = store.runs()
        configs = [json.loads(r["config"]) for r in runs]
        assert {(c["model"], c["input_size"]) for c in configs} == {("inception-v3", 75)}
        assert all(store.epochs(r["run_id"])[0]["test_top5"] is not None for r in runs)
    assert sorted(c["augment"] for c in configs).count(["color", "crop"]) == 2
    report = (result.report.parent / "report.md").read_text()
    table = report[report.index("Table 2: ImageNet with Inception V3"):]
    assert "top-5 test (ours)" in table and "77.84" in table and "95.20" in table
