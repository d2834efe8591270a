"""Few-shot data: sinusoid tasks, the Omniglot loader and cache, its splits and the episode sampler.

Most Omniglot tests run on a tiny synthetic set built here in the official layout (zips and folders). The real set is
tested when present at ``<repo>/../shared/data/omniglot`` (or ``$METARL_OMNIGLOT_DIR``); its cache is built once per
run into a temporary folder (about 9 s on 2 cores) unless a valid cache already sits at the default location.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metarl.fewshot import omniglot as og
from metarl.fewshot import omniglot_files
from metarl.fewshot.omniglot import (
    DataError,
    Omniglot,
    OmniglotTasks,
    default_cache_dir,
    make_synthetic_omniglot,
)
from metarl.fewshot.sinusoid import SinusoidTasks
from metarl.fewshot.tasks import split_rng

REAL_ROOT = Path(
    os.environ.get("METARL_OMNIGLOT_DIR", Path(__file__).resolve().parents[1].parent / "shared/data/omniglot")
)


def batches_equal(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.episode(), b.episode(), strict=True))


# ----------------------------------------------------------------------------------------------------------------------
# Sinusoid


def test_sinusoid_shapes_and_ranges():
    batch = SinusoidTasks().sample(400, 10, 7, np.random.default_rng(0))
    assert batch.support_x.shape == (400, 10, 1) and batch.query_y.shape == (400, 7, 1)
    assert batch.support_x.dtype == torch.float32
    amp, phase = batch.info["amplitude"], batch.info["phase"]
    assert amp.min() >= 0.1 and amp.max() <= 5.0 and amp.max() - amp.min() > 4.0
    assert phase.min() >= 0.0 and phase.max() <= math.pi and phase.max() - phase.min() > 2.5
    for x in (batch.support_x, batch.query_x):
        assert x.min() >= -5.0 and x.max() <= 5.0
    expected = SinusoidTasks.evaluate(batch.query_x.double(), amp[:, None, None], phase[:, None, None])
    torch.testing.assert_close(batch.query_y.double(), expected, atol=1e-5, rtol=1e-5)
    assert batch.support(3)[0].shape == (10, 1) and len(batch) == 400


def test_sinusoid_determinism_and_disjoint_streams():
    tasks = SinusoidTasks()
    a = tasks.sample(8, 5, 5, split_rng(3, "train"))
    assert batches_equal(a, tasks.sample(8, 5, 5, split_rng(3, "train")))
    assert not batches_equal(a, tasks.sample(8, 5, 5, split_rng(4, "train")))
    test = tasks.sample(8, 5, 5, split_rng(3, "test"))
    assert not np.intersect1d(a.info["amplitude"].numpy(), test.info["amplitude"].numpy()).size
    # The fixed evaluation list does not depend on how many tasks are drawn at once.
    assert batches_equal(tasks.fixed(5, 5, 5, seed=1)[:3], tasks.fixed(3, 5, 5, seed=1))
    with pytest.raises(ValueError, match="unknown split"):
        split_rng(0, "tset")
    with pytest.raises(ValueError, match="amplitude_range"):
        SinusoidTasks(amplitude_range=(5.0, 0.1))


# ----------------------------------------------------------------------------------------------------------------------
# Omniglot on a synthetic set

N_BG, N_EV, N_CHARS, N_DRAWINGS = 3, 2, 3, 5


@pytest.fixture(scope="module")
def synth_zip(tmp_path_factory) -> Path:
    return make_synthetic_omniglot(
        tmp_path_factory.mktemp("synth_zip"), n_alphabets=(N_BG, N_EV), n_characters=N_CHARS, n_drawings=N_DRAWINGS
    )


@pytest.fixture(scope="module")
def synth(synth_zip, tmp_path_factory) -> Omniglot:
    return Omniglot(synth_zip, cache_dir=tmp_path_factory.mktemp("synth_cache"), n_val_alphabets=1)


def copy_root(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for part in og.PARTS:
        shutil.copy(src / f"{part}.zip", dst)
    return dst


def test_loader_on_synthetic_zip(synth, synth_zip):
    n_chars = (N_BG + N_EV) * N_CHARS
    assert synth.n_characters == n_chars and synth.images.shape == (n_chars * N_DRAWINGS, 28, 28)
    assert synth.images.dtype == np.uint8 and not synth.from_cache
    assert (np.diff(synth.char_start) == N_DRAWINGS).all()
    assert len(synth.alphabets("images_background")) == N_BG and len(synth.alphabets("images_evaluation")) == N_EV
    # Each stored image is the PNG decoded, LANCZOS-resized and inverted (ink bright, paper dark).
    c = N_BG * N_CHARS + 1  # second character of the first evaluation alphabet
    name = f"images_evaluation/{synth.char_alphabet[c]}/{synth.char_name[c]}"
    with zipfile.ZipFile(synth_zip / "images_evaluation.zip") as archive:
        first = sorted(n for n in archive.namelist() if n.startswith(name))[0]
        png = Image.open(io.BytesIO(archive.read(first))).convert("L").resize((28, 28), Image.Resampling.LANCZOS)
    np.testing.assert_array_equal(synth.drawings(c)[0], 255 - np.asarray(png))
    assert synth.images.mean() < 0.35 * 255 and synth.images.max() == 255


def test_extracted_folders_match_zips(synth, tmp_path):
    folders = make_synthetic_omniglot(
        tmp_path / "folders", n_alphabets=(N_BG, N_EV), n_characters=N_CHARS, n_drawings=N_DRAWINGS, as_zip=False
    )
    assert not list(folders.glob("*.zip"))
    ds = Omniglot(folders, cache_dir=tmp_path / "cache", n_val_alphabets=1)
    np.testing.assert_array_equal(ds.images, synth.images)
    np.testing.assert_array_equal(ds.char_name, synth.char_name)


def test_cache_round_trip_and_location(synth_zip, tmp_path, monkeypatch):
    root = copy_root(synth_zip, tmp_path / "root")
    built = Omniglot(root, n_val_alphabets=1)  # writable root: the cache goes next to the data
    assert not built.from_cache and built.cache_path == root / "omniglot_28.npz" and built.cache_path.is_file()
    loaded = Omniglot(root, n_val_alphabets=1)
    assert loaded.from_cache
    for key in ("images", "char_start", "char_part", "char_alphabet", "char_name"):
        np.testing.assert_array_equal(getattr(loaded, key), getattr(built, key))

    # A root marked read-only (even for a root user) gets its cache in the per-user cache folder instead.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    ro = copy_root(synth_zip, tmp_path / "ro")
    ro.chmod(0o555)
    try:
        ds = Omniglot(ro, n_val_alphabets=1)
        assert ds.cache_path.parent == default_cache_dir(ro)
        assert ds.cache_path.is_relative_to(tmp_path / "xdg" / "metarl") and not (ro / "omniglot_28.npz").exists()
        assert Omniglot(ro, n_val_alphabets=1).from_cache
    finally:
        ro.chmod(0o755)


def test_corrupt_or_stale_cache_is_rebuilt(synth, synth_zip, tmp_path):
    cache = tmp_path / "cache"
    Omniglot(synth_zip, cache_dir=cache, n_val_alphabets=1)
    path = cache / "omniglot_28.npz"
    path.write_bytes(b"not an npz file")
    with pytest.warns(UserWarning, match="unusable.*rebuilding"):
        ds = Omniglot(synth_zip, cache_dir=cache, n_val_alphabets=1)
    assert not ds.from_cache
    np.testing.assert_array_equal(ds.images, synth.images)
    assert Omniglot(synth_zip, cache_dir=cache, n_val_alphabets=1).from_cache  # the rebuilt cache is valid

    # An old format version is rebuilt too.
    with np.load(path) as npz:
        arrays = dict(npz)
    arrays["format_version"] = np.int64(omniglot_files.FORMAT_VERSION + 1)
    np.savez(path, **arrays)
    with pytest.warns(UserWarning, match="format version"):
        assert not Omniglot(synth_zip, cache_dir=cache, n_val_alphabets=1).from_cache

    # Sources replaced by different data: the cache is stale (fingerprint), not silently reused.
    other = make_synthetic_omniglot(tmp_path / "other", n_alphabets=(N_BG, N_EV), n_characters=2, seed=1)
    with pytest.warns(UserWarning, match="fingerprint"):
        ds = Omniglot(other, cache_dir=cache, n_val_alphabets=1)
    assert ds.n_characters == (N_BG + N_EV) * 2


def test_cache_without_sources(synth, synth_zip, tmp_path):
    cache = tmp_path / "cache"
    Omniglot(synth_zip, cache_dir=cache, n_val_alphabets=1)
    gone = tmp_path / "gone"  # the cache alone is enough ...
    ds = Omniglot(gone, cache_dir=cache, n_val_alphabets=1)
    assert ds.from_cache and ds.n_characters == synth.n_characters
    (cache / "omniglot_28.npz").write_bytes(b"\x00" * 100)  # ... but a corrupt one with no sources is one clear error
    with pytest.raises(DataError) as err:
        Omniglot(gone, cache_dir=cache)
    message = str(err.value)
    assert str(cache / "omniglot_28.npz") in message and str(gone) in message and "--data-dir" in message


def test_missing_data_is_one_clear_error(synth_zip, tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("must not download unless asked")

    monkeypatch.setattr(omniglot_files.urllib.request, "urlopen", no_network)
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as err:
        Omniglot(missing, cache_dir=tmp_path / "cache")
    message = str(err.value)
    assert str(missing) in message and "does not exist" in message
    assert "--data-dir" in message and "download: true" in message

    half = tmp_path / "half"
    half.mkdir()
    shutil.copy(synth_zip / "images_background.zip", half)
    with pytest.raises(DataError, match="images_evaluation"):
        Omniglot(half, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "bad_png", "wrong_layout"])
def test_corrupt_zip_is_one_clear_error(synth_zip, tmp_path, damage):
    root = copy_root(synth_zip, tmp_path / "root")
    target = root / "images_background.zip"
    if damage == "garbage":
        target.write_bytes(b"this is not a zip" * 100)
    elif damage == "truncated":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    else:
        with zipfile.ZipFile(target, "w") as archive:
            name = "images_background/A/character01/x.png" if damage == "bad_png" else "other/A/character01/x.png"
            archive.writestr(name, b"\x89PNG but not really")
    with pytest.raises(DataError) as err:
        Omniglot(root, cache_dir=tmp_path / "cache")
    assert str(target) in str(err.value) and "--data-dir" in str(err.value)
    assert not (tmp_path / "cache" / "omniglot_28.npz").exists()


def serve_locally(monkeypatch, files: dict[str, Path], md5s: dict[str, str] | None = None) -> None:
    """Point the official download URLs at local files (there is no internet here)."""
    resources = {}
    for part, path in files.items():
        md5 = md5s[part] if md5s else hashlib.md5(path.read_bytes()).hexdigest()
        resources[part] = (path.resolve().as_uri(), md5)
    monkeypatch.setattr(omniglot_files, "RESOURCES", resources)


def test_download_verifies_md5(synth, synth_zip, tmp_path, monkeypatch):
    files = {part: synth_zip / f"{part}.zip" for part in og.PARTS}
    serve_locally(monkeypatch, files)
    root = tmp_path / "downloaded"
    ds = Omniglot(root, download=True, n_val_alphabets=1)
    np.testing.assert_array_equal(ds.images, synth.images)
    assert sorted(p.name for p in root.iterdir()) == [
        "images_background.zip",
        "images_evaluation.zip",
        "omniglot_28.npz",
    ]

    bad = {part: "0" * 32 for part in og.PARTS}
    serve_locally(monkeypatch, files, bad)
    root = tmp_path / "tampered"
    with pytest.raises(DataError, match="md5") as err:
        Omniglot(root, download=True)
    assert "0" * 32 in str(err.value)
    assert list(root.iterdir()) == []  # nothing half-downloaded or unverified is left behind

    # Data already there: no download even when allowed, and a local copy needs no md5 match.
    serve_locally(monkeypatch, {part: tmp_path / "does-not-exist.zip" for part in og.PARTS}, bad)
    assert Omniglot(synth_zip, download=True, cache_dir=tmp_path / "c", n_val_alphabets=1).n_characters > 0

    with pytest.raises(DataError, match="could not download"):
        Omniglot(tmp_path / "unreachable", download=True)


def test_splits_are_disjoint_whole_alphabets(synth):
    train, val, test = (synth.split(s) for s in ("train", "val", "test"))
    assert (len(train.alphabets), len(val.alphabets), len(test.alphabets)) == (N_BG - 1, 1, N_EV)
    assert set(train.alphabets).isdisjoint(val.alphabets)
    assert set(train.alphabets) | set(val.alphabets) == set(synth.alphabets("images_background"))
    assert set(test.alphabets) == set(synth.alphabets("images_evaluation"))
    chars = [set(s.characters.tolist()) for s in (train, val, test)]
    assert not (chars[0] & chars[1] or chars[0] & chars[2] or chars[1] & chars[2])
    assert (synth.char_part[test.characters] == "images_evaluation").all()
    assert (synth.char_part[np.concatenate([train.characters, val.characters])] == "images_background").all()
    assert train.n_classes == 4 * len(train.characters) == len(train.classes)
    assert {tuple(c) for c in train.classes} == {(c, r) for c in train.characters for r in range(4)}
    with pytest.raises(ValueError, match="n_val_alphabets"):
        Omniglot(synth.root, cache_dir=synth.cache_path.parent, n_val_alphabets=N_BG)


def test_episode_sampler(synth):
    n, k, q, b = 5, 2, 3, 4
    tasks = OmniglotTasks(synth.split("train"), n_way=n, k_shot=k, k_query=q)
    batch = tasks.sample(b, np.random.default_rng(0))
    assert batch.support_x.shape == (b, n * k, 1, 28, 28) and batch.query_x.shape == (b, n * q, 1, 28, 28)
    assert batch.support_x.dtype == torch.float32 and batch.support_y.dtype == torch.int64
    assert 0.0 <= batch.support_x.min() and batch.support_x.max() <= 1.0
    for t in range(b):
        assert torch.equal(batch.support_y[t].bincount(minlength=n), torch.full((n,), k))
        assert torch.equal(batch.query_y[t].bincount(minlength=n), torch.full((n,), q))
    # Every image is a drawing of its label's (character, rotation) class; support and query drawings are distinct.
    for t in range(b):
        for label, (char, rot) in enumerate(batch.info["classes"][t].tolist()):
            candidates = np.rot90(synth.drawings(char), rot, axes=(1, 2)).reshape(N_DRAWINGS, -1)
            used = []
            for x, y in ((batch.support_x[t], batch.support_y[t]), (batch.query_x[t], batch.query_y[t])):
                for image in x[y == label]:
                    pixels = np.round(image.numpy().reshape(-1) * 255).astype(np.uint8)
                    matches = np.flatnonzero((candidates == pixels).all(1))
                    assert matches.size >= 1
                    used.append(int(matches[0]))
            assert len(set(used)) == k + q
    # Classes of a task are distinct; labels are a fresh random assignment per task.
    assert all(len({tuple(c) for c in batch.info["classes"][t].tolist()}) == n for t in range(b))
    many = tasks.sample(30, 1).info["classes"][:, 0, 0]
    assert len(set(many.tolist())) > 3


def test_episode_sampler_determinism(synth):
    tasks = OmniglotTasks(synth.split("test"), n_way=3, k_shot=1, k_query=2)
    a = tasks.sample(6, np.random.default_rng(7))
    assert batches_equal(a, tasks.sample(6, np.random.default_rng(7)))
    assert batches_equal(a, tasks.sample(6, 7))
    assert not batches_equal(a, tasks.sample(6, np.random.default_rng(8)))
    fixed = tasks.fixed(5, seed=0)
    assert batches_equal(fixed[:2], tasks.fixed(2, seed=0)) and batches_equal(fixed, tasks.fixed(5, seed=0))
    assert torch.equal(fixed.info["classes"], tasks.fixed(5, seed=0).info["classes"])


def test_episode_sampler_rejects_impossible_episodes(synth):
    with pytest.raises(ValueError, match="drawings"):
        OmniglotTasks(synth.split("train"), n_way=2, k_shot=3, k_query=N_DRAWINGS)
    with pytest.raises(ValueError, match="classes"):
        OmniglotTasks(synth.split("val"), n_way=4 * N_CHARS + 1, k_shot=1, k_query=1)


# ----------------------------------------------------------------------------------------------------------------------
# The real Omniglot


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> Omniglot:
    if not (REAL_ROOT / "images_background.zip").exists() and not (REAL_ROOT / "images_background").is_dir():
        pytest.skip(f"real Omniglot not found at {REAL_ROOT} (set METARL_OMNIGLOT_DIR to test it)")
    existing = default_cache_dir(REAL_ROOT) / "omniglot_28.npz"
    cache_dir = existing.parent if existing.is_file() else tmp_path_factory.mktemp("omniglot_cache")
    start = time.perf_counter()
    ds = Omniglot(REAL_ROOT, cache_dir=cache_dir)
    print(f"real Omniglot {'loaded' if ds.from_cache else 'built'} in {time.perf_counter() - start:.1f} s")
    return ds


def test_real_omniglot_counts(real):
    parts = real.char_part
    assert (parts == "images_background").sum() == 964 and (parts == "images_evaluation").sum() == 659
    assert len(real.alphabets("images_background")) == 30 and len(real.alphabets("images_evaluation")) == 20
    assert (np.diff(real.char_start) == 20).all() and real.images.shape == (32460, 28, 28)
    assert real.split("train").n_classes + real.split("val").n_classes == 964 * 4
    assert real.split("test").n_classes == 659 * 4 and len(real.split("val").alphabets) == 5
    assert real.images.dtype == np.uint8 and real.images.max() == 255 and real.images.mean() < 0.2 * 255


def test_real_omniglot_cache_round_trip(real):
    again = Omniglot(REAL_ROOT, cache_dir=real.cache_path.parent)
    assert again.from_cache and again.cache_path == real.cache_path
    np.testing.assert_array_equal(again.images, real.images)
    np.testing.assert_array_equal(again.char_name, real.char_name)
    # Spot-check the cache against the PNGs themselves.
    with zipfile.ZipFile(REAL_ROOT / "images_evaluation.zip") as archive:
        name = sorted(n for n in archive.namelist() if n.endswith(".png"))[-1]
        png = Image.open(io.BytesIO(archive.read(name))).convert("L").resize((28, 28), Image.Resampling.LANCZOS)
    np.testing.assert_array_equal(real.images[-1], 255 - np.asarray(png))


def test_real_omniglot_episodes(real):
    batch = OmniglotTasks(real.split("test"), n_way=20, k_shot=1, k_query=5).sample(2, 0)
    assert batch.support_x.shape == (2, 20, 1, 28, 28) and batch.query_y.shape == (2, 100)
    assert (batch.info["classes"][..., 0] >= 964).all()  # evaluation characters come after the background ones
