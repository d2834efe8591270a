"""Omniglot on disk: the official zips or extracted folders, the array cache, the optional download.

The 32k PNGs (``images_background/<Alphabet>/characterNN/*.png``, 105x105 1-bit) are decoded once into a compact array
cache ``omniglot_<size>.npz``: uint8 images resized with PIL LANCZOS and inverted so that ink is bright (strokes ~255,
paper 0). The cache carries a format version and a fingerprint of the source files (member names and sizes) and is
validated on every load; :func:`load_or_build_arrays` rebuilds a corrupt or stale cache from the sources or, with no
sources, raises one clear :class:`DataError`.

Where the cache lives: ``cache_dir`` when given; otherwise ``root`` when it is writable, else
``~/.cache/metarl/omniglot/<hash of root>/`` (``$XDG_CACHE_HOME`` honoured). "Writable" requires a write permission bit
on ``root``, not just ``os.access``: a root user can write anywhere, but a folder marked read-only (e.g. a shared data
set) is treated as read-only.

``download=True`` fetches missing zips from the official source and verifies the official md5; a user-supplied local
copy is used without that check (re-packed copies hold the same images with a different zip md5).
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import urllib.error
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import UserError

PARTS: tuple[str, str] = ("images_background", "images_evaluation")
"""The two halves of the data set: background (meta-train/val) and evaluation (meta-test) alphabets."""

RESOURCES: dict[str, tuple[str, str]] = {
    "images_background": (
        "https://github.com/brendenlake/omniglot/raw/master/python/images_background.zip",
        "68d2efa1b9178cc56df9314c21c6e718",
    ),
    "images_evaluation": (
        "https://github.com/brendenlake/omniglot/raw/master/python/images_evaluation.zip",
        "6b91aef0f799c5bb55b94e3f2daec811",
    ),
}
"""Official download URL and md5 of each zip (Lake's repository)."""

FORMAT_VERSION = 1
"""Version of the cache layout; bump it when the arrays or their meaning change (old caches are then rebuilt)."""


_FIX_HINT = (
    "Fix: pass --data-dir pointing at a folder that holds images_background.zip and images_evaluation.zip (or their "
    "extracted folders), or set `download: true` to fetch the official copy."
)
_CORRUPT_HINT = (
    "Fix: replace the damaged file with a good copy (or delete it and set `download: true` to fetch the official "
    "one), or pass --data-dir pointing at a folder with intact data."
)


class DataError(UserError, RuntimeError):
    """Omniglot data (or its cache) is missing, corrupt or unusable; the message names the path and the fix.

    ``problem`` (what is wrong, with the path) and ``hint`` (the fix) are kept apart too, so a caller with its own
    way of naming the data folder (``metarl train``: ``--set fewshot.data_dir=PATH``) can restate the fix.
    ``kind`` is ``"missing"``, ``"corrupt"`` or ``"download"``.
    """

    def __init__(self, message: str, problem: str | None = None, hint: str = "", kind: str = "missing") -> None:
        super().__init__(message)
        self.problem = problem if problem is not None else message
        self.hint = hint
        self.kind = kind


def _error(problem: str, hint: str = _FIX_HINT) -> DataError:
    kind = "missing" if hint == _FIX_HINT else "corrupt" if hint == _CORRUPT_HINT else "download"
    return DataError(f"{problem}. {hint}", problem=problem, hint=hint, kind=kind)


# ----------------------------------------------------------------------------------------------------------------------
# Sources: zips or extracted folders


@dataclass(frozen=True)
class _Member:
    """One drawing in a source: where it is and what it belongs to."""

    part: str
    alphabet: str
    character: str
    name: str
    size: int
    ref: str  # zip member name, or file path for folders


@dataclass(frozen=True)
class _Source:
    part: str
    path: Path
    is_zip: bool


def _find_sources(root: Path) -> dict[str, _Source]:
    """The parts present under ``root``; an extracted folder wins over a zip of the same part."""
    found: dict[str, _Source] = {}
    for part in PARTS:
        folder, archive = root / part, root / f"{part}.zip"
        if folder.is_dir():
            found[part] = _Source(part, folder, is_zip=False)
        elif archive.is_file():
            found[part] = _Source(part, archive, is_zip=True)
    return found


def _split_member_path(parts: list[str], part: str) -> tuple[str, str, str] | None:
    """``(alphabet, character, file)`` if ``parts`` ends in ``<part>/<alphabet>/<character>/<file>.png``."""
    if len(parts) < 4 or parts[-4] != part or not parts[-1].lower().endswith(".png"):
        return None
    if parts[-1].startswith("._") or "__MACOSX" in parts:
        return None
    return parts[-3], parts[-2], parts[-1]


def _list_members(source: _Source) -> list[_Member]:
    """All drawings of a source in a fixed order (alphabet, character, file name)."""
    members: list[_Member] = []
    if source.is_zip:
        try:
            with zipfile.ZipFile(source.path) as archive:
                infos = archive.infolist()
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise _error(f"Omniglot archive is not a readable zip ({exc}): {source.path}", _CORRUPT_HINT) from exc
        for info in infos:
            split = _split_member_path(info.filename.split("/"), source.part)
            if split and not info.is_dir():
                members.append(_Member(source.part, *split, size=info.file_size, ref=info.filename))
    else:
        for path in source.path.glob("*/*/*"):
            split = _split_member_path([source.part, *path.relative_to(source.path).parts], source.part)
            if split and path.is_file():
                members.append(_Member(source.part, *split, size=path.stat().st_size, ref=str(path)))
    if not members:
        raise _error(
            f"no Omniglot images found in {source.path} (expected {source.part}/<Alphabet>/<character>/*.png)",
            _CORRUPT_HINT,
        )
    members.sort(key=lambda m: (m.alphabet, m.character, m.name))
    return members


def _fingerprint(members: list[_Member]) -> str:
    """Hash of member paths and sizes: identifies the source data a cache was built from (cheap: no decoding)."""
    digest = hashlib.sha1()
    for m in members:
        digest.update(f"{m.part}/{m.alphabet}/{m.character}/{m.name}:{m.size}\n".encode())
    return digest.hexdigest()


def _decode(data: bytes, image_size: int) -> np.ndarray:
    """PNG bytes -> ``[S, S]`` uint8, resized with LANCZOS, inverted so that ink is bright."""
    with Image.open(io.BytesIO(data)) as image:
        gray = image.convert("L")
        if gray.size != (image_size, image_size):
            gray = gray.resize((image_size, image_size), Image.Resampling.LANCZOS)
        return 255 - np.asarray(gray, dtype=np.uint8)


def _decode_source(source: _Source, members: list[_Member], image_size: int, out: np.ndarray) -> None:
    """Decode every member of one source into ``out`` (``[len(members), S, S]``)."""
    archive = zipfile.ZipFile(source.path) if source.is_zip else None
    try:
        for i, m in enumerate(members):
            try:
                data = archive.read(m.ref) if archive else Path(m.ref).read_bytes()
                out[i] = _decode(data, image_size)
            except (zipfile.BadZipFile, UnidentifiedImageError, OSError, EOFError, ValueError) as exc:
                raise _error(f"corrupt Omniglot image {m.ref} ({exc}) in {source.path}", _CORRUPT_HINT) from exc
    finally:
        if archive:
            archive.close()


def _build_arrays(sources: dict[str, _Source], members: dict[str, list[_Member]], image_size: int) -> dict:
    """Decode all sources into the cache's arrays (see ``_validate``)."""
    ordered = [m for part in PARTS for m in members[part]]
    images = np.empty((len(ordered), image_size, image_size), dtype=np.uint8)
    offset = 0
    for part in PARTS:
        n = len(members[part])
        _decode_source(sources[part], members[part], image_size, images[offset : offset + n])
        offset += n
    keys = [(m.part, m.alphabet, m.character) for m in ordered]
    starts = [i for i in range(len(keys)) if i == 0 or keys[i] != keys[i - 1]]
    chars = [keys[i] for i in starts]
    return {
        "format_version": np.int64(FORMAT_VERSION),
        "image_size": np.int64(image_size),
        "fingerprint": np.str_(_fingerprint(ordered)),
        "images": images,
        "char_start": np.asarray([*starts, len(ordered)], dtype=np.int64),
        "char_part": np.asarray([c[0] for c in chars]),
        "char_alphabet": np.asarray([c[1] for c in chars]),
        "char_name": np.asarray([c[2] for c in chars]),
    }


# ----------------------------------------------------------------------------------------------------------------------
# Cache


class _InvalidCache(Exception):
    """A cache file that cannot be used (corrupt, stale fingerprint, other format version); it is rebuilt."""


_CACHE_KEYS = (
    "format_version",
    "image_size",
    "fingerprint",
    "images",
    "char_start",
    "char_part",
    "char_alphabet",
    "char_name",
)


def _load_cache(path: Path, image_size: int, fingerprint: str | None) -> dict:
    """Read and validate a cache file; raise ``_InvalidCache(reason)`` if it cannot be used as is."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in _CACHE_KEYS if k not in npz.files]
            if missing:
                raise _InvalidCache(f"missing arrays {missing}")
            arrays = {k: npz[k] for k in _CACHE_KEYS}
    except _InvalidCache:
        raise
    except Exception as exc:  # any failure to read means "corrupt"; the caller reports or rebuilds
        raise _InvalidCache(f"unreadable ({type(exc).__name__}: {exc})") from exc
    _validate(arrays, image_size, fingerprint)
    return arrays


def _validate(a: dict, image_size: int, fingerprint: str | None) -> None:
    if int(a["format_version"]) != FORMAT_VERSION:
        raise _InvalidCache(f"format version {int(a['format_version'])}, expected {FORMAT_VERSION}")
    images, start = a["images"], a["char_start"]
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (image_size, image_size):
        raise _InvalidCache(f"images have dtype {images.dtype} shape {images.shape}, expected uint8 [n, S, S]")
    if int(a["image_size"]) != image_size:
        raise _InvalidCache(f"image size {int(a['image_size'])}, expected {image_size}")
    n_chars = len(start) - 1
    if start.ndim != 1 or n_chars < 1 or start[0] != 0 or start[-1] != len(images) or np.any(np.diff(start) <= 0):
        raise _InvalidCache("character index is inconsistent with the images")
    if not all(len(a[k]) == n_chars for k in ("char_part", "char_alphabet", "char_name")):
        raise _InvalidCache("character names are inconsistent with the character index")
    if not set(a["char_part"].tolist()) <= set(PARTS):
        raise _InvalidCache("unknown data set parts")
    if fingerprint is not None and str(a["fingerprint"]) != fingerprint:
        raise _InvalidCache("built from different source files (fingerprint mismatch)")


def _save_cache(path: Path, arrays: dict) -> None:
    """Write atomically (temporary file + rename), so a crash or a concurrent writer never leaves half a cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/metarl`` or ``~/.cache/metarl``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "metarl"


def _is_writable(folder: Path) -> bool:
    """Writable by us *and* not marked read-only (a root user passes ``os.access`` on read-only folders)."""
    try:
        mode = folder.stat().st_mode
    except OSError:
        return False
    return os.access(folder, os.W_OK) and bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def default_cache_dir(root: str | os.PathLike) -> Path:
    """Where the cache for ``root`` goes by default: ``root`` if writable, else a per-root folder in the user cache."""
    root = Path(root).expanduser().resolve()
    if _is_writable(root):
        return root
    return user_cache_dir() / "omniglot" / hashlib.sha1(str(root).encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------------------------------------------------
# Download


def _fetch(url: str, dest: Path, md5: str) -> None:
    """Download ``url`` to ``dest`` and verify its md5; on any failure leave nothing behind and raise ``DataError``."""
    tmp = dest.with_name(dest.name + ".part")
    try:
        digest = hashlib.md5()
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as f:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                f.write(chunk)
        if digest.hexdigest() != md5:
            raise _error(
                f"downloaded {url} has md5 {digest.hexdigest()}, expected {md5}; refusing to use it: {dest}",
                "Fix: retry later, or download the official zips by hand and pass their folder with --data-dir.",
            )
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError) as exc:
        raise _error(
            f"could not download {url} to {dest} ({exc})",
            "Fix: check the network and that the data folder is writable, or download the zips by hand and pass "
            "their folder with --data-dir.",
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)


def _download(root: Path, parts: list[str]) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _error(f"cannot create the data folder {root} for download ({exc})") from exc
    for part in parts:
        url, md5 = RESOURCES[part]
        _fetch(url, root / f"{part}.zip", md5)


def load_arrays(
    root: Path, image_size: int, download: bool = False, cache_dir: str | os.PathLike | None = None
) -> tuple[dict, Path | None, bool]:
    """The data set's arrays from a valid cache, else decoded from the sources (and cached); downloads the missing
    zips first when ``download``. Returns ``(arrays, cache path or None if it could not be written, from_cache)``.
    """
    name = f"omniglot_{image_size}.npz"
    sources = _find_sources(root)
    missing = [p for p in PARTS if p not in sources]
    if missing and download:
        _download(root, missing)
        sources = _find_sources(root)
        missing = [p for p in PARTS if p not in sources]
    members = {part: _list_members(src) for part, src in sources.items()} if not missing else None
    fingerprint = _fingerprint([m for p in PARTS for m in members[p]]) if members else None

    if cache_dir is not None:
        candidates = [Path(cache_dir).expanduser() / name]
    else:
        candidates = list(dict.fromkeys([root / name, default_cache_dir(root) / name]))
    problems: list[str] = []
    for path in candidates:
        if not path.is_file():
            continue
        try:
            return _load_cache(path, image_size, fingerprint), path, True
        except _InvalidCache as exc:
            problems.append(f"cache {path} is unusable: {exc}")

    if missing:
        where = f"{root}" if root.is_dir() else f"{root} (folder does not exist)"
        found = "; ".join(problems) + "; and " if problems else ""
        raise _error(f"{found}Omniglot data not found: no {' / '.join(missing)} (.zip or folder) in {where}")
    for problem in problems:
        warnings.warn(f"{problem}; rebuilding it from {root}", stacklevel=3)

    arrays = _build_arrays(sources, members, image_size)
    target = Path(cache_dir).expanduser() / name if cache_dir is not None else default_cache_dir(root) / name
    try:
        _save_cache(target, arrays)
    except OSError as exc:
        warnings.warn(
            f"could not write the Omniglot cache {target} ({exc}); it will be rebuilt next time", stacklevel=3
        )
        target = None
    return arrays, target, False
