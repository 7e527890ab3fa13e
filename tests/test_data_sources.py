"""Dataset sources and the array cache: formats, safety, errors, caching, downloads, real data."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import os
import pickle
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    EvilPickle,
    fake_cifar_batches,
    idx_bytes,
    make_tree,
    py2_dumps,
    tar_dir,
    write_idx_dir,
    write_image,
)
from PIL import Image

from rethink.data import (
    cache,
    check_data_dir,
    downloads,
    formats,
    imagetree,
    list_sources,
    load_dataset,
    sources,
)
from rethink.data.formats import safe_unpickle
from rethink.data.sources import CIFAR10_CLASSES, resolve_cache_dir, resolve_data_dir
from rethink.errors import ConfigError, DataError

# ---------------------------------------------------------------------------- fixtures


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "arrays"


def assert_arrays(ds, expected: dict[str, np.ndarray]) -> None:
    for key, want in expected.items():
        got = getattr(ds, key)
        assert got.dtype == (torch.uint8 if "images" in key else torch.int64), key
        np.testing.assert_array_equal(got.numpy(), want, err_msg=key)


# ---------------------------------------------------------------------------- registry, paths


def test_registry_lists_every_source():
    assert list_sources() == ["cifar10", "mnist", "folder:PATH", "idx:PATH", "packed:PATH"]


@pytest.mark.parametrize("name", ["cifar100", "imagenet", "folders:/x", ""])
def test_unknown_name_is_a_config_error_listing_known_sources(name, tmp_path):
    with pytest.raises(ConfigError) as e:
        load_dataset(name, tmp_path)
    assert "cifar10, mnist, folder:PATH, idx:PATH" in str(e.value)


def test_prefix_source_without_a_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="folder:PATH"):
        load_dataset("folder:", tmp_path)


def test_data_dir_resolution_order(monkeypatch, tmp_path):
    monkeypatch.setenv("RETHINK_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv("RETHINK_DATA")
    assert resolve_data_dir(None) == tmp_path / "xdg" / "rethink" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert resolve_data_dir(None) == Path.home() / ".cache" / "rethink" / "data"


def test_cache_dir_resolution_order(monkeypatch, tmp_path):
    monkeypatch.setenv("RETHINK_CACHE", str(tmp_path / "env"))
    assert resolve_cache_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_cache_dir() == tmp_path / "env"
    monkeypatch.delenv("RETHINK_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_cache_dir() == tmp_path / "xdg" / "rethink" / "arrays"


# ---------------------------------------------------------------------------- safe unpickling


class _EvilEval:
    def __reduce__(self):
        return (eval, ("__import__('os').getpid()",))


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_malicious_pickle_is_refused_without_running(tmp_path, protocol):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({b"data": EvilPickle(marker), b"labels": []}, protocol=protocol)
    with pytest.raises(DataError, match=r"refused to unpickle (posix|os|nt)\.system"):
        safe_unpickle(payload, "batch")
    assert not marker.exists()


def test_eval_and_builtins_are_refused():
    with pytest.raises(DataError, match="builtins.eval"):
        safe_unpickle(pickle.dumps(_EvilEval()), "batch")
    with pytest.raises(DataError, match="builtins.getattr"):
        safe_unpickle(b"cbuiltins\ngetattr\n.", "batch")


def test_malicious_batch_file_fails_the_load(tmp_path, cache_dir):
    d = tmp_path / "cifar-10-batches-py"
    fake_cifar_batches(d)
    marker = tmp_path / "pwned"
    (d / "data_batch_3").write_bytes(pickle.dumps({b"data": EvilPickle(marker)}))
    with pytest.raises(DataError, match="data_batch_3: refused") as e:
        load_dataset("cifar10", tmp_path, cache_dir=cache_dir)
    assert not marker.exists()
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_arrays_from_python3_pickles_load(protocol):
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    obj = safe_unpickle(pickle.dumps({b"data": a, b"labels": [1, 2, 3]}, protocol=protocol), "x")
    np.testing.assert_array_equal(obj[b"data"], a)
    assert obj[b"labels"] == [1, 2, 3]


def test_truncated_pickle_is_a_data_error():
    payload = py2_dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]})
    with pytest.raises(DataError, match="not a readable CIFAR batch"):
        safe_unpickle(payload[: len(payload) // 2], "batch")


# ---------------------------------------------------------------------------- cifar10


def test_cifar_batches_decode_channel_major_rows(tmp_path, cache_dir):
    expected = fake_cifar_batches(tmp_path / "cifar-10-batches-py")
    ds = load_dataset("cifar10", tmp_path, cache_dir=cache_dir)
    assert_arrays(ds, expected)
    assert ds.classes == CIFAR10_CLASSES
    assert ds.train_images.shape == (20, 32, 32, 3)
    assert "exact" in ds.description
    # the red value of pixel (row 1, col 2) of image 0 is byte 1*32+2 of the row; green +1024
    raw = safe_unpickle((tmp_path / "cifar-10-batches-py" / "data_batch_1").read_bytes(), "b")
    row = raw[b"data"][0]
    assert ds.train_images[0, 1, 2].tolist() == [row[34], row[1024 + 34], row[2048 + 34]]


def test_cifar_official_tarball(tmp_path, cache_dir, monkeypatch):
    expected = fake_cifar_batches(tmp_path / "src" / "cifar-10-batches-py")
    tgz = tar_dir(
        tmp_path / "src" / "cifar-10-batches-py", tmp_path / "cifar-10-python.tar.gz", "w:gz"
    )
    monkeypatch.setattr(downloads, "CIFAR10_MD5", md5(tgz.read_bytes()))
    ds = load_dataset("cifar10", tmp_path, cache_dir=cache_dir)
    assert_arrays(ds, expected)
    assert ds.source_hash == hashlib.sha256(tgz.read_bytes()).hexdigest()


def test_cifar_tarball_with_wrong_md5_is_refused(tmp_path, cache_dir):
    fake_cifar_batches(tmp_path / "src" / "cifar-10-batches-py")
    tar_dir(tmp_path / "src" / "cifar-10-batches-py", tmp_path / "cifar-10-python.tar.gz", "w:gz")
    with pytest.raises(DataError, match="not the official archive"):
        load_dataset("cifar10", tmp_path, cache_dir=cache_dir)


def test_cifar_prefers_official_batches_over_image_folder(tmp_path, cache_dir):
    expected = fake_cifar_batches(tmp_path / "cifar-10-batches-py")
    make_tree(tmp_path / "cifar-10-images", classes=CIFAR10_CLASSES, n=(1, 1), size=(32, 32))
    ds = load_dataset("cifar10", tmp_path, cache_dir=cache_dir)
    assert "official" in ds.description
    assert_arrays(ds, expected)


def test_cifar_image_folder_must_really_be_cifar(tmp_path, cache_dir):
    make_tree(tmp_path / "cifar-10-images", classes=CIFAR10_CLASSES, n=(2, 1), size=(32, 32))
    with pytest.raises(DataError, match="not CIFAR-10's 50000/10000") as e:
        load_dataset("cifar10", tmp_path, cache_dir=cache_dir)
    assert "folder:" in e.value.hint


def test_missing_cifar_names_the_files_and_download(tmp_path, cache_dir):
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", tmp_path, cache_dir=cache_dir)
    text = str(e.value)
    assert str(tmp_path) in text and "cifar-10-python.tar.gz" in text and "--download" in text
    assert "\n" not in text


def test_cifar_batches_meta_with_other_classes_is_refused(tmp_path, cache_dir):
    d = tmp_path / "cifar-10-batches-py"
    fake_cifar_batches(d)
    (d / "batches.meta").write_bytes(py2_dumps({b"label_names": [b"x"] * 10}))
    with pytest.raises(DataError, match="not CIFAR-10's"):
        load_dataset("cifar10", tmp_path, cache_dir=cache_dir)


# ---------------------------------------------------------------------------- IDX and mnist


def test_idx_parse_rejects_bad_files():
    good = idx_bytes(np.zeros((2, 3, 4), np.uint8))
    assert formats.parse_idx(good, "f", 3).shape == (2, 3, 4)
    with pytest.raises(DataError, match="bad magic"):
        formats.parse_idx(b"\x01" + good[1:], "f", 3)
    with pytest.raises(DataError, match="element type 0x0d"):
        formats.parse_idx(good[:2] + b"\x0d" + good[3:], "f", 3)
    with pytest.raises(DataError, match="has 3 dims, expected 1"):
        formats.parse_idx(good, "f", 1)
    with pytest.raises(DataError, match="truncated"):
        formats.parse_idx(good[:-1], "f", 3)
    with pytest.raises(DataError, match="truncated"):
        formats.parse_idx(good + b"\0", "f", 3)


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("test_prefix", ["t10k", "test"])
def test_idx_source(tmp_path, cache_dir, gz, test_prefix):
    expected = write_idx_dir(tmp_path / "digits", gz=gz, test_prefix=test_prefix)
    ds = load_dataset(f"idx:{tmp_path / 'digits'}", tmp_path, cache_dir=cache_dir)
    assert_arrays(ds, expected)
    assert ds.name == f"idx:{(tmp_path / 'digits').resolve()}"
    assert ds.classes == tuple(str(i) for i in range(10))
    assert ds.train_images.shape == (12, 28, 28, 1)


def test_idx_path_relative_to_data_dir(tmp_path, cache_dir, monkeypatch):
    write_idx_dir(tmp_path / "data" / "digits")
    monkeypatch.chdir(tmp_path)
    ds = load_dataset("idx:digits", tmp_path / "data", cache_dir=cache_dir)
    assert ds.train_images.shape[0] == 12


def test_idx_count_mismatch_and_missing_file(tmp_path, cache_dir):
    d = tmp_path / "digits"
    write_idx_dir(d)
    (d / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(11, np.uint8))))
    with pytest.raises(DataError, match="has 12 images but train-labels-idx1-ubyte.gz has 11"):
        load_dataset(f"idx:{d}", tmp_path, cache_dir=cache_dir)
    (d / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match="no test images file"):
        load_dataset(f"idx:{d}", tmp_path, cache_dir=cache_dir)
    with pytest.raises(DataError, match="no such file"):
        load_dataset(f"idx:{tmp_path / 'nowhere'}", tmp_path, cache_dir=cache_dir)


def _fake_mnist_checksums(monkeypatch, d: Path) -> None:
    """Make the tiny files in `d` the 'official' ones, by uncompressed md5."""
    table = {}
    for stem in downloads.MNIST_FILES:
        raw = gzip.decompress((d / f"{stem}.gz").read_bytes())
        table[stem] = ("0" * 32, md5(raw))
    monkeypatch.setattr(downloads, "MNIST_FILES", table)


def test_mnist_checks_official_checksums(tmp_path, cache_dir, monkeypatch):
    expected = write_idx_dir(tmp_path / "mnist")
    with pytest.raises(DataError, match="official MNIST checksums") as e:
        load_dataset("mnist", tmp_path, cache_dir=cache_dir)
    assert "idx:" in e.value.hint
    _fake_mnist_checksums(monkeypatch, tmp_path / "mnist")
    ds = load_dataset("mnist", tmp_path, cache_dir=cache_dir)
    assert_arrays(ds, expected)
    assert ds.classes == tuple("0123456789")


def test_mnist_accepts_official_gz_md5_too(tmp_path, cache_dir, monkeypatch):
    write_idx_dir(tmp_path / "mnist")
    table = {
        s: (md5((tmp_path / "mnist" / f"{s}.gz").read_bytes()), "0" * 32)
        for s in downloads.MNIST_FILES
    }
    monkeypatch.setattr(downloads, "MNIST_FILES", table)
    assert load_dataset("mnist", tmp_path, cache_dir=cache_dir).train_labels.shape == (12,)


def test_missing_mnist_says_what_to_place_where(tmp_path, cache_dir):
    with pytest.raises(DataError) as e:
        load_dataset("mnist", tmp_path, cache_dir=cache_dir)
    assert "train-images-idx3-ubyte.gz not found" in e.value.message
    assert str(tmp_path / "mnist") in str(e.value) and "--download" in e.value.hint


# ---------------------------------------------------------------------------- image folders


def test_folder_tree_alphabetical_classes_and_file_order(tmp_path, cache_dir):
    pixels = make_tree(tmp_path / "tree", classes=("b", "a", "c"))
    ds = load_dataset(f"folder:{tmp_path / 'tree'}", tmp_path, cache_dir=cache_dir)
    assert ds.classes == ("a", "b", "c")
    assert ds.train_images.shape == (9, 5, 6, 3) and ds.test_images.shape == (6, 5, 6, 3)
    assert ds.train_labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    np.testing.assert_array_equal(ds.train_images[3].numpy(), pixels[("train", "b", 0)])
    np.testing.assert_array_equal(ds.test_images[5].numpy(), pixels[("test", "c", 1)])


def test_folder_files_in_natural_order(tmp_path, cache_dir):
    root = tmp_path / "tree"
    values = {}
    for i in (10, 2, 1):
        a = np.full((4, 4, 3), i, np.uint8)
        write_image(root / "train" / "x" / f"img{i}.png", a)
        values[i] = a
    write_image(root / "test" / "x" / "0.png", values[1])
    ds = load_dataset(f"folder:{root}", tmp_path, cache_dir=cache_dir)
    assert ds.train_images[:, 0, 0, 0].tolist() == [1, 2, 10]


def test_folder_with_cifar_classes_keeps_official_order(tmp_path, cache_dir):
    make_tree(tmp_path / "tree", classes=tuple(sorted(CIFAR10_CLASSES)), n=(1, 1))
    ds = load_dataset(f"folder:{tmp_path / 'tree'}", tmp_path, cache_dir=cache_dir)
    assert ds.classes == CIFAR10_CLASSES


@pytest.mark.parametrize("mode,suffix", [("w", ".tar"), ("w:gz", ".tar.gz"), ("w:xz", ".tar.xz")])
def test_folder_tarballs_match_the_tree(tmp_path, cache_dir, mode, suffix):
    make_tree(tmp_path / "tree")
    tree = load_dataset(f"folder:{tmp_path / 'tree'}", tmp_path, cache_dir=cache_dir)
    tarball = tar_dir(tmp_path / "tree", tmp_path / f"imgs{suffix}", mode, arcname="imgs")
    ds = load_dataset(f"folder:{tarball}", tmp_path, cache_dir=cache_dir)
    assert ds.classes == tree.classes and ds.content_hash == tree.content_hash
    assert ds.source_hash == hashlib.sha256(tarball.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "fmt,fallback",
    [(tarfile.USTAR_FORMAT, False), (tarfile.GNU_FORMAT, True), (tarfile.PAX_FORMAT, True)],
)
def test_tar_formats_long_names_and_no_top_dir(tmp_path, cache_dir, monkeypatch, fmt, fallback):
    """Plain ustar headers (long paths split into prefix/name) take the fast reader; GNU long
    names and pax headers fall back to tarfile. All give the same arrays as the folder."""
    classes = ("k" * 120, "ünï")
    make_tree(tmp_path / "tree", classes=classes)
    tree = load_dataset(f"folder:{tmp_path / 'tree'}", tmp_path, cache_dir=cache_dir)
    dest = tmp_path / "flat.tar"
    with tarfile.open(dest, "w", format=fmt) as tf:
        for split in ("train", "test"):
            tf.add(tmp_path / "tree" / split, arcname=split)
    opened = []
    real_open = tarfile.open
    monkeypatch.setattr(
        imagetree.tarfile, "open", lambda *a, **k: opened.append(1) or real_open(*a, **k)
    )
    ds = load_dataset(f"folder:{dest}", tmp_path, cache_dir=cache_dir)
    assert ds.classes == tuple(sorted(classes)) and ds.content_hash == tree.content_hash
    assert bool(opened) == fallback


def test_all_grayscale_gives_one_channel_mixed_gives_rgb(tmp_path, cache_dir):
    make_tree(tmp_path / "gray", gray=True)
    ds = load_dataset(f"folder:{tmp_path / 'gray'}", tmp_path, cache_dir=cache_dir)
    assert ds.train_images.shape[-1] == 1
    g = np.full((5, 6), 77, np.uint8)
    write_image(tmp_path / "mixed" / "train" / "a" / "0.png", g)
    write_image(tmp_path / "mixed" / "train" / "a" / "1.png", np.zeros((5, 6, 3), np.uint8))
    write_image(tmp_path / "mixed" / "test" / "a" / "0.png", g)
    ds = load_dataset(f"folder:{tmp_path / 'mixed'}", tmp_path, cache_dir=cache_dir)
    assert ds.train_images.shape == (2, 5, 6, 3)
    assert (ds.train_images[0] == 77).all() and (ds.test_images == 77).all()


def test_folder_jpeg_decodes_like_pillow(tmp_path, cache_dir):
    a = np.random.default_rng(0).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    for split in ("train", "test"):
        write_image(tmp_path / "t" / split / "k" / "0.jpg", a, fmt="JPEG")
    ds = load_dataset(f"folder:{tmp_path / 't'}", tmp_path, cache_dir=cache_dir)
    want = np.asarray(Image.open(tmp_path / "t" / "train" / "k" / "0.jpg").convert("RGB"))
    np.testing.assert_array_equal(ds.train_images[0].numpy(), want)


def test_odd_image_size_is_named(tmp_path, cache_dir):
    make_tree(tmp_path / "tree")
    write_image(tmp_path / "tree" / "test" / "c" / "9.png", np.zeros((7, 6, 3), np.uint8))
    with pytest.raises(DataError, match=r"test/c/9.png is 6x7 but train/a/0.png is 6x5"):
        load_dataset(f"folder:{tmp_path / 'tree'}", tmp_path, cache_dir=cache_dir)


def test_non_image_file_is_named(tmp_path, cache_dir):
    make_tree(tmp_path / "tree")
    (tmp_path / "tree" / "train" / "b" / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"train/b/notes.txt is not a readable image") as e:
        load_dataset(f"folder:{tmp_path / 'tree'}", tmp_path, cache_dir=cache_dir)
    assert "\n" not in str(e.value)


def test_truncated_image_is_named(tmp_path, cache_dir):
    make_tree(tmp_path / "tree")
    p = tmp_path / "tree" / "train" / "a" / "1.png"
    p.write_bytes(p.read_bytes()[:40])
    with pytest.raises(DataError, match=r"train/a/1.png is not a readable image"):
        load_dataset(f"folder:{tmp_path / 'tree'}", tmp_path, cache_dir=cache_dir)


def test_empty_class_folder_and_missing_split(tmp_path, cache_dir):
    make_tree(tmp_path / "tree")
    (tmp_path / "tree" / "train" / "empty").mkdir()
    with pytest.raises(DataError, match="class folder train/empty is empty"):
        load_dataset(f"folder:{tmp_path / 'tree'}", tmp_path, cache_dir=cache_dir)
    make_tree(tmp_path / "only", n=(1, 0))
    with pytest.raises(DataError, match="no images under test/"):
        load_dataset(f"folder:{tmp_path / 'only'}", tmp_path, cache_dir=cache_dir)


def test_misplaced_file_and_ignored_extras(tmp_path, cache_dir):
    make_tree(tmp_path / "tree")
    (tmp_path / "tree" / "README.md").write_text("ignored")
    (tmp_path / "tree" / "train" / "a" / ".DS_Store").write_text("ignored")
    assert load_dataset(f"folder:{tmp_path / 'tree'}", tmp_path, cache_dir=cache_dir).classes
    write_image(tmp_path / "tree" / "train" / "a" / "deep" / "x.png", np.zeros((5, 6, 3), np.uint8))
    with pytest.raises(DataError, match="unexpected file train/a/deep/x.png"):
        load_dataset(f"folder:{tmp_path / 'tree'}", tmp_path, cache_dir=cache_dir)
    (tmp_path / "tree" / "train" / "a" / "deep" / "x.png").unlink()
    write_image(tmp_path / "tree" / "test" / "loose.png", np.zeros((5, 6, 3), np.uint8))
    with pytest.raises(DataError, match="unexpected file test/loose.png"):
        load_dataset(f"folder:{tmp_path / 'tree'}", tmp_path, cache_dir=cache_dir)


def test_corrupt_tarball_is_a_data_error(tmp_path, cache_dir):
    make_tree(tmp_path / "tree")
    tarball = tar_dir(tmp_path / "tree", tmp_path / "imgs.tar.xz", "w:xz")
    tarball.write_bytes(tarball.read_bytes()[:-100])
    with pytest.raises(DataError, match="cannot decompress imgs.tar.xz"):
        load_dataset(f"folder:{tarball}", tmp_path, cache_dir=cache_dir)


# ---------------------------------------------------------------------------- cache


def _counting_decode(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = sources.decode_tree

    def spy(*args, **kwargs):
        calls.append("decode")
        return real(*args, **kwargs)

    monkeypatch.setattr(sources, "decode_tree", spy)
    return calls


def test_second_load_comes_from_the_cache(tmp_path, cache_dir, monkeypatch):
    make_tree(tmp_path / "tree")
    calls = _counting_decode(monkeypatch)
    a = load_dataset(f"folder:{tmp_path / 'tree'}", tmp_path, cache_dir=cache_dir)
    b = load_dataset(f"folder:{tmp_path / 'tree'}", tmp_path, cache_dir=cache_dir, verify=True)
    assert calls == ["decode"]
    assert (a.source_hash, a.content_hash, a.classes) == (b.source_hash, b.content_hash, b.classes)
    assert torch.equal(a.train_images, b.train_images) and torch.equal(a.test_labels, b.test_labels)
    b.train_images[0, 0, 0, 0] = 1  # cached arrays load as ordinary writable tensors
    entries = [p for p in cache_dir.iterdir() if p.is_dir()]
    assert len(entries) == 1 and entries[0].name.startswith("folder-")
    assert entries[0].name.endswith(f"-{a.source_hash[:16]}")
    manifest = json.loads((entries[0] / "manifest.json").read_text())
    assert manifest["content_sha256"] == a.content_hash and manifest["classes"] == ["a", "b", "c"]
    assert not [p for p in cache_dir.iterdir() if p.name.startswith(".")]  # no temp leftovers


def _entry(cache_dir: Path) -> Path:
    (entry,) = [p for p in cache_dir.iterdir() if p.is_dir()]
    return entry


@pytest.mark.parametrize(
    "damage",
    ["manifest-garbage", "manifest-shape", "truncated-npy", "missing-npy", "format-version"],
)
def test_damaged_cache_entry_is_rebuilt(tmp_path, cache_dir, monkeypatch, damage):
    make_tree(tmp_path / "tree")
    name = f"folder:{tmp_path / 'tree'}"
    first = load_dataset(name, tmp_path, cache_dir=cache_dir)
    entry = _entry(cache_dir)
    manifest = json.loads((entry / "manifest.json").read_text())
    if damage == "manifest-garbage":
        (entry / "manifest.json").write_text("{not json")
    elif damage == "manifest-shape":
        manifest["arrays"]["train_images"]["shape"][0] += 1
        (entry / "manifest.json").write_text(json.dumps(manifest))
    elif damage == "truncated-npy":
        p = entry / "train_images.npy"
        p.write_bytes(p.read_bytes()[:-10])
    elif damage == "missing-npy":
        (entry / "test_labels.npy").unlink()
    elif damage == "format-version":
        manifest["format_version"] = -1
        (entry / "manifest.json").write_text(json.dumps(manifest))
    calls = _counting_decode(monkeypatch)
    again = load_dataset(name, tmp_path, cache_dir=cache_dir)
    assert calls == ["decode"]
    assert again.content_hash == first.content_hash
    assert load_dataset(name, tmp_path, cache_dir=cache_dir).content_hash == first.content_hash
    assert calls == ["decode"]  # and the rebuilt entry is good


def test_flipped_bytes_in_the_cache_are_caught_and_rebuilt(tmp_path, cache_dir, monkeypatch):
    make_tree(tmp_path / "tree")
    name = f"folder:{tmp_path / 'tree'}"
    first = load_dataset(name, tmp_path, cache_dir=cache_dir)
    p = _entry(cache_dir) / "train_images.npy"
    raw = bytearray(p.read_bytes())
    raw[-1] ^= 0xFF  # one pixel: same size, same header, so only the checksum can tell
    p.write_bytes(bytes(raw))
    calls = _counting_decode(monkeypatch)
    assert load_dataset(name, tmp_path, cache_dir=cache_dir).content_hash == first.content_hash
    assert calls == ["decode"]
    assert torch.equal(
        load_dataset(name, tmp_path, cache_dir=cache_dir).train_images, first.train_images
    )


def test_changed_source_gets_a_new_entry(tmp_path, cache_dir):
    make_tree(tmp_path / "tree")
    name = f"folder:{tmp_path / 'tree'}"
    a = load_dataset(name, tmp_path, cache_dir=cache_dir)
    write_image(tmp_path / "tree" / "train" / "a" / "0.png", np.zeros((5, 6, 3), np.uint8))
    b = load_dataset(name, tmp_path, cache_dir=cache_dir)
    assert a.source_hash != b.source_hash and a.content_hash != b.content_hash
    assert (b.train_images[0] == 0).all()


def test_file_hash_memo_follows_size_and_mtime(tmp_path, cache_dir, monkeypatch):
    f = tmp_path / "f.bin"
    f.write_bytes(b"one")
    assert cache.file_hashes([f], cache_dir)[f] == hashlib.sha256(b"one").hexdigest()
    monkeypatch.setattr(cache, "sha256_file", lambda p: pytest.fail("memo not used"))
    assert cache.file_hashes([f], cache_dir)[f] == hashlib.sha256(b"one").hexdigest()
    monkeypatch.undo()
    f.write_bytes(b"two!")
    assert cache.file_hashes([f], cache_dir)[f] == hashlib.sha256(b"two!").hexdigest()


def test_unwritable_cache_still_loads(tmp_path):
    make_tree(tmp_path / "tree")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache dir should be")
    ds = load_dataset(f"folder:{tmp_path / 'tree'}", tmp_path, cache_dir=blocker / "arrays")
    assert ds.train_images.shape[0] == 9


def test_sha256sums_mismatch_is_refused(tmp_path, cache_dir):
    make_tree(tmp_path / "tree")
    tarball = tar_dir(tmp_path / "tree", tmp_path / "imgs.tar", "w")
    (tmp_path / "SHA256SUMS").write_text(f"{'0' * 64}  imgs.tar\n")
    with pytest.raises(DataError, match="does not match its entry in"):
        load_dataset(f"folder:{tarball}", tmp_path, cache_dir=cache_dir)
    (tmp_path / "SHA256SUMS").write_text(
        f"{hashlib.sha256(tarball.read_bytes()).hexdigest()}  imgs.tar\n"
    )
    assert load_dataset(f"folder:{tarball}", tmp_path, cache_dir=cache_dir).classes == (
        "a",
        "b",
        "c",
    )


# ---------------------------------------------------------------------------- downloads


def test_mnist_download_tries_mirrors_verifies_and_renames(tmp_path, cache_dir, monkeypatch):
    mirror = tmp_path / "mirror"
    expected = write_idx_dir(mirror)
    _fake_mnist_checksums(monkeypatch, mirror)
    monkeypatch.setattr(
        downloads, "MNIST_MIRRORS", ((tmp_path / "down").as_uri() + "/", mirror.as_uri() + "/")
    )
    data = tmp_path / "data"
    ds = load_dataset("mnist", data, download=True, cache_dir=cache_dir)
    assert_arrays(ds, expected)
    assert sorted(p.name for p in (data / "mnist").iterdir()) == sorted(
        f"{s}.gz" for s in downloads.MNIST_FILES
    )


def test_download_with_bad_checksum_leaves_nothing(tmp_path, cache_dir, monkeypatch):
    mirror = tmp_path / "mirror"
    write_idx_dir(mirror)
    monkeypatch.setattr(downloads, "MNIST_MIRRORS", (mirror.as_uri() + "/",))
    data = tmp_path / "data"
    with pytest.raises(DataError, match="could not download train-images-idx3-ubyte.gz") as e:
        load_dataset("mnist", data, download=True, cache_dir=cache_dir)
    assert "checksum mismatch" in str(e.value) and "by hand" in e.value.hint
    assert list((data / "mnist").iterdir()) == []


def test_cifar_download(tmp_path, cache_dir, monkeypatch):
    expected = fake_cifar_batches(tmp_path / "src" / "cifar-10-batches-py")
    tgz = tar_dir(tmp_path / "src" / "cifar-10-batches-py", tmp_path / "served.tar.gz", "w:gz")
    monkeypatch.setattr(downloads, "CIFAR10_URL", tgz.as_uri())
    monkeypatch.setattr(downloads, "CIFAR10_MD5", md5(tgz.read_bytes()))
    data = tmp_path / "data"
    assert_arrays(load_dataset("cifar10", data, download=True, cache_dir=cache_dir), expected)
    assert [p.name for p in data.iterdir()] == ["cifar-10-python.tar.gz"]


def test_offline_download_is_one_line(tmp_path, cache_dir, monkeypatch):
    def offline(*args, **kwargs):
        raise downloads.urllib.error.URLError("no network")

    monkeypatch.setattr(downloads.urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", tmp_path, download=True, cache_dir=cache_dir)
    assert "no network" in str(e.value) and "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_download_with_the_data_present_never_touches_the_network(tmp_path, cache_dir, monkeypatch):
    def offline(*args, **kwargs):
        raise AssertionError("the network was used")

    monkeypatch.setattr(downloads.urllib.request, "urlopen", offline)
    expected = fake_cifar_batches(tmp_path / "cifar-10-batches-py")
    write_idx_dir(tmp_path / "mnist")
    _fake_mnist_checksums(monkeypatch, tmp_path / "mnist")
    assert_arrays(load_dataset("cifar10", tmp_path, download=True, cache_dir=cache_dir), expected)
    load_dataset("mnist", tmp_path, download=True, cache_dir=cache_dir)


@pytest.fixture
def http_mirror(tmp_path: Path):
    """A local HTTP server (CI has no internet) serving tmp_path/www; yields (base URL, requests)."""
    root, requests = tmp_path / "www", []
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):  # noqa: N802 (the base class's name)
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()
    server.server_close()
    thread.join()


# `rethink` with the CIFAR-10 URL and md5 replaced (argv 1 and 2), as the tests above monkeypatch them
_CLI_WITH_MIRROR = ("import sys; from rethink.data import downloads; "
                    "downloads.CIFAR10_URL, downloads.CIFAR10_MD5 = sys.argv[1:3]; "
                    "from rethink.cli import main; sys.exit(main(sys.argv[3:]))")


def test_demo_downloads_cifar10_into_an_empty_data_dir_and_runs(tmp_path, http_mirror):
    """What `make demo` does on a fresh machine (its reproduce command, on the smoke preset): the
    official archive is fetched, checked and used; a rerun does not touch the network; a corrupt
    download is refused in one line, exit 2, leaving nothing behind."""
    make = subprocess.run(["make", "-n", "demo"], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True)
    demo = [line for line in make.stdout.splitlines() if "rethink reproduce" in line]
    assert demo and "--download" in demo[0].split(), make.stdout + make.stderr

    base, requests = http_mirror
    www = tmp_path / "www"
    fake_cifar_batches(tmp_path / "src" / "cifar-10-batches-py", per_batch=100)  # 500 train, 100 test
    good = tar_dir(tmp_path / "src" / "cifar-10-batches-py", www / "cifar-10-python.tar.gz", "w:gz")
    (www / "corrupt").mkdir()
    damaged = bytearray(good.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    (www / "corrupt" / "cifar-10-python.tar.gz").write_bytes(bytes(damaged))
    checksum = md5(good.read_bytes())

    def reproduce(url: str, data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
        argv = ["reproduce", "--preset", "smoke", "--experiments", "fig1b", "--models", "mlp1x512",
                "--precision", "fp32", "--download", "--data-dir", str(data), "--out", str(out), *extra]
        env = {**os.environ, "RETHINK_CACHE": str(tmp_path / "arrays")}
        return subprocess.run([sys.executable, "-c", _CLI_WITH_MIRROR, url, checksum, *argv],
                              capture_output=True, text=True, env=env, timeout=300)

    data, out = tmp_path / "data", tmp_path / "runs"
    data.mkdir()  # empty: a fresh machine
    done = reproduce(f"{base}/cifar-10-python.tar.gz", data, out)
    assert done.returncode == 0, done.stderr
    assert requests == ["/cifar-10-python.tar.gz"]
    assert [p.name for p in data.iterdir()] == ["cifar-10-python.tar.gz"]
    assert "3 trained, 0 skipped, 0 failed" in done.stdout and (out / "report" / "index.html").is_file()

    again = reproduce(f"{base}/cifar-10-python.tar.gz", data, out, "--no-report")
    assert again.returncode == 0, again.stderr
    assert requests == ["/cifar-10-python.tar.gz"]  # the archive is there: no second request
    assert "0 trained, 3 skipped" in again.stdout

    empty, never = tmp_path / "empty", tmp_path / "never"
    empty.mkdir()
    bad = reproduce(f"{base}/corrupt/cifar-10-python.tar.gz", empty, never)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and "checksum mismatch" in bad.stderr
    assert bad.stderr.startswith("rethink: error: cifar10: could not download cifar-10-python.tar.gz")
    assert list(empty.iterdir()) == [] and not never.exists()


# ---------------------------------------------------------------------------- data check


def test_check_data_dir_never_crashes(tmp_path, cache_dir):
    lines = check_data_dir(tmp_path / "missing", cache_dir=cache_dir)
    text = "\n".join(lines)
    assert "does not exist" in text and "cifar10: absent" in text and "mnist: absent" in text


def test_check_data_dir_reports_found_data(tmp_path, cache_dir):
    fake_cifar_batches(tmp_path / "cifar-10-batches-py")
    (tmp_path / "SHA256SUMS").write_text(
        f"{cache.sha256_file(tmp_path / 'cifar-10-batches-py' / 'test_batch')}  "
        "cifar-10-batches-py/test_batch\n" + "0" * 64 + "  gone.bin\n"
    )
    text = "\n".join(check_data_dir(tmp_path, cache_dir=cache_dir))
    assert "ok      cifar-10-batches-py/test_batch" in text and "missing gone.bin" in text
    assert "cifar10: present" in text and "(20, 32, 32, 3)" in text and "airplane" in text


# ---------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_real_cifar10(real_cifar10, shared_data_dir):
    ds = real_cifar10
    assert ds.train_images.shape == (50000, 32, 32, 3) and ds.train_images.dtype == torch.uint8
    assert ds.test_images.shape == (10000, 32, 32, 3)
    assert ds.classes == CIFAR10_CLASSES
    assert torch.bincount(ds.train_labels).tolist() == [5000] * 10
    assert torch.bincount(ds.test_labels).tolist() == [1000] * 10
    assert "lossy" in ds.description
    sums = (shared_data_dir / "SHA256SUMS").read_text()
    assert f"{ds.source_hash}  cifar-10-images.tar.xz" in sums
    # channel means match the official CIFAR-10 ones to 3 decimals (data/README.md)
    means = ds.train_images.sum(dim=(0, 1, 2), dtype=torch.int64).double() / (50000 * 1024 * 255)
    assert torch.allclose(
        means, torch.tensor([0.4914, 0.4822, 0.4465], dtype=torch.float64), atol=0.002
    )


@pytest.mark.realdata
def test_real_cifar10_warm_load_reads_the_cache_without_decoding(real_cifar10, shared_data_dir,
                                                                  monkeypatch):
    """A second load comes from the array cache: no image is decoded again (its speed is
    measured by `rethink bench`, not asserted here)."""
    def no_decoding(*args, **kwargs):
        raise AssertionError("the warm load decoded the images again")

    monkeypatch.setattr(sources, "decode_tree", no_decoding)
    again = load_dataset("cifar10", shared_data_dir)
    assert again.content_hash == real_cifar10.content_hash
    assert torch.equal(again.train_labels, real_cifar10.train_labels)


@pytest.mark.realdata
def test_real_mnist(real_mnist, shared_data_dir):
    ds = real_mnist
    assert ds.train_images.shape == (60000, 28, 28, 1) and ds.test_images.shape == (
        10000,
        28,
        28,
        1,
    )
    assert ds.classes == tuple("0123456789") and "exact" in ds.description
    train_hist = torch.bincount(ds.train_labels, minlength=10)
    test_hist = torch.bincount(ds.test_labels, minlength=10)
    assert (
        train_hist.sum() == 60000 and int(train_hist.min()) > 5000 and int(train_hist.max()) < 7000
    )
    assert test_hist.sum() == 10000 and int(test_hist.min()) > 850 and int(test_hist.max()) < 1150
    raw = gzip.decompress((shared_data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes())
    assert md5(raw) == "27ae3e4e09519cfbb04c329615203637"  # official, per data/README.md
    assert bytes(ds.test_labels.to(torch.uint8).numpy()) == raw[8:]


@pytest.mark.realdata
def test_real_check_data_dir(real_cifar10, real_mnist, shared_data_dir):
    text = "\n".join(check_data_dir(shared_data_dir))
    assert text.count("\n  ok ") == 5 and "BAD" not in text
    assert "cifar10: present" in text and "mnist: present" in text
    assert "5000 each" in text
