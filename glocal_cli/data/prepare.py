"""Obtain a dataset (tensorflow-datasets or a folder of original files), verify it, and
write one compact ``<name>.npz`` plus a ``<name>.json`` manifest; load it back.

Layout of a prepared folder::

    out_dir/<name>.npz   train_images uint8 [N,H,W,C], train_labels uint8 [N],
                         test_images uint8 [M,H,W,C], test_labels uint8 [M]
    out_dir/<name>.json  name, source, shape, num_classes, splits {train,test: count,
                         label_counts}, files {filename: md5, sha256, size, verified}

A folder of original files holds them directly, or in a sub-folder named after the
dataset (``datasets/mnist/train-images-idx3-ubyte.gz``); both are accepted.
"""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from glocal_cli.atomic import save_npz, write_json
from glocal_cli.data import readers
from glocal_cli.data.registry import IDX_FILENAMES, DatasetSpec, folder_names, get_spec
from glocal_cli.errors import DataNotAvailable, UserError

log = logging.getLogger(__name__)

#: ``hook(label, done, total)``: progress of hashing a file (bytes) or reading tfds (examples).
Progress = Callable[[str, int, int], None]

_ARRAY_KEYS = ("train_images", "train_labels", "test_images", "test_labels")


class Dataset(NamedTuple):
    """A dataset in memory.

    Attributes:
        train_images: uint8 ``[N, H, W, C]``.
        train_labels: int32 ``[N]`` in ``0 .. num_classes-1``.
        test_images: uint8 ``[M, H, W, C]``.
        test_labels: int32 ``[M]``.
        num_classes: number of classes.
        name: canonical dataset name.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    name: str


# --------------------------------------------------------------------------- paths


def npz_path(name: str, out_dir: str | Path) -> Path:
    """``out_dir/<canonical name>.npz``."""
    return Path(out_dir) / f"{get_spec(name).name}.npz"


def manifest_path(name: str, out_dir: str | Path) -> Path:
    """``out_dir/<canonical name>.json``."""
    return Path(out_dir) / f"{get_spec(name).name}.json"


def _present(folder: Path, spec: DatasetSpec) -> bool:
    if any((folder / f.filename).is_file() for f in spec.files):
        return True
    return spec.extracted_dir is not None and (folder / spec.extracted_dir).is_dir()


def find_source_folder(spec: DatasetSpec, folder: Path) -> Path:
    """The folder actually holding ``spec``'s original files: ``folder/<name>`` or ``folder``.

    Raises:
        UserError: ``folder`` does not exist, or a required file is missing (named).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"data folder not found: {folder}")
    candidates = [folder / n for n in folder_names(spec)] + [folder]
    chosen = next((c for c in candidates if c.is_dir() and _present(c, spec)), None)
    if chosen is None:
        where = f"{folder} (nor in its sub-folder {spec.name}/)"
        raise UserError(f"missing file {spec.files[0].filename} for {spec.name} in {where}")
    return chosen


def original_paths(spec: DatasetSpec, folder: Path) -> dict[str, Path]:
    """Map each original file name to its path inside ``folder`` (already resolved).

    For CIFAR an extracted folder (``cifar-10-batches-py/``) is used when the tarball is
    absent; it is then the single entry.
    """
    if spec.extracted_dir is not None:
        tar = folder / spec.files[0].filename
        if not tar.is_file() and (folder / spec.extracted_dir).is_dir():
            return {spec.extracted_dir: folder / spec.extracted_dir}
    paths = {}
    for f in spec.files:
        p = folder / f.filename
        if not p.is_file():
            raise UserError(f"missing file {f.filename} for {spec.name} in {folder}")
        paths[f.filename] = p
    return paths


# --------------------------------------------------------------------------- verification


def verify_files(
    spec: DatasetSpec, paths: dict[str, Path], verify: bool = True, progress: Progress | None = None
) -> dict[str, dict]:
    """Hash the original files and (if ``verify``) compare with the official md5s.

    Returns:
        ``{filename: {"md5", "sha256", "size", "verified"}}``. An extracted CIFAR folder has
        no official checksum: its pickles are hashed individually with ``verified`` False.

    Raises:
        UserError: size or md5 mismatch (names the file, expected and got).
    """
    official = {f.filename: f for f in spec.files}
    info: dict[str, dict] = {}
    for filename, path in paths.items():
        files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        for p in files:
            key = filename if p == path else f"{filename}/{p.name}"
            ref = official.get(key)
            if verify and ref is not None and ref.size is not None and p.stat().st_size != ref.size:
                raise UserError(
                    f"checksum mismatch for {p}: expected size {ref.size} bytes, got {p.stat().st_size}"
                )
            hook = (lambda d, t, _k=key: progress(f"verify {_k}", d, t)) if progress else None
            dig = readers.file_digests(p, hook)
            ok = ref is not None and dig.md5 == ref.md5
            if verify and ref is not None and not ok:
                raise UserError(f"checksum mismatch for {p}: expected md5 {ref.md5}, got {dig.md5}")
            info[key] = {"md5": dig.md5, "sha256": dig.sha256, "size": dig.size, "verified": bool(ok)}
    return info


# --------------------------------------------------------------------------- reading


def read_originals(spec: DatasetSpec, folder: Path, paths: dict[str, Path]) -> readers.SplitArrays:
    """Read the original files of ``spec`` (paths from :func:`original_paths`)."""
    if spec.fmt == "idx":
        tr_x, tr_y = readers.read_idx_pair(paths[IDX_FILENAMES[0]], paths[IDX_FILENAMES[1]])
        te_x, te_y = readers.read_idx_pair(paths[IDX_FILENAMES[2]], paths[IDX_FILENAMES[3]])
        return readers.SplitArrays(tr_x, tr_y, te_x, te_y)
    if spec.fmt == "svhn":
        tr_x, tr_y = readers.read_svhn_mat(paths["train_32x32.mat"])
        te_x, te_y = readers.read_svhn_mat(paths["test_32x32.mat"])
        return readers.SplitArrays(tr_x, tr_y, te_x, te_y)
    (source,) = paths.values()
    return readers.read_cifar(source, spec.fmt)


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise UserError(
            "tensorflow-datasets is not installed: run pip install 'glocal-cli[tfds]' "
            "or pass a folder of the original files as the source"
        ) from None
    return tfds


def _tfds_has(spec: DatasetSpec, tfds_data_dir: str | Path | None) -> bool:
    """Whether tensorflow-datasets already prepared ``spec`` in its data folder (no download needed)."""
    import os

    root = Path(tfds_data_dir or os.environ.get("TFDS_DATA_DIR") or Path.home() / "tensorflow_datasets")
    return any((root / spec.tfds_name).glob("**/dataset_info.json"))


def offline_hint(spec: DatasetSpec) -> str:
    """How to prepare ``spec`` without a network: which files, and where ``glocal download`` looks."""
    files = ", ".join(f.filename for f in spec.files)
    return (f"offline, download the original files ({files}) elsewhere and run "
            f"`glocal download {spec.name} --source FOLDER`, with the files in FOLDER or FOLDER/{spec.name}/")


def check_tfds_source(spec: DatasetSpec, tfds_data_dir: str | Path | None = None) -> None:
    """Raise a one-line UserError within seconds when tensorflow-datasets would need a network that is not there."""
    from glocal_cli.data import network

    if _tfds_has(spec, tfds_data_dir):
        return
    reason = network.unreachable(spec.download_urls + network.TFDS_URLS)
    if reason is not None:
        raise UserError(f"cannot reach the download source of {spec.name} ({reason}); {offline_hint(spec)}")


def read_tfds(
    spec: DatasetSpec, tfds_data_dir: str | Path | None = None, progress: Progress | None = None
) -> readers.SplitArrays:
    """Read both splits through ``tensorflow_datasets.data_source`` (no TensorFlow needed).

    Downloads and prepares the dataset in ``tfds_data_dir`` (tfds default when None) if
    needed. Examples are read by index (``ds[i]``).
    """
    check_tfds_source(spec, tfds_data_dir)  # before tfds: offline it would retry for minutes
    tfds = _import_tfds()
    out = []
    for split in ("train", "test"):
        try:
            ds = tfds.data_source(spec.tfds_name, split=split, data_dir=tfds_data_dir, download=True)
        except Exception as exc:  # tfds raises many kinds (network, registration, format)
            raise UserError(
                f"tensorflow-datasets could not provide {spec.tfds_name} ({readers.short_error(exc)}); "
                "without network pass a folder of the original files as the source"
            ) from None
        n = len(ds)
        images = np.empty((n, *spec.image_shape), dtype=np.uint8)
        labels = np.empty((n,), dtype=np.int32)
        for i in range(n):
            ex = ds[i]
            images[i] = np.asarray(ex["image"], dtype=np.uint8).reshape(spec.image_shape)
            labels[i] = int(ex["label"])
            if progress is not None and (i % 1000 == 999 or i == n - 1):
                progress(f"tfds {spec.tfds_name} {split}", i + 1, n)
        out += [images, labels]
    return readers.SplitArrays(*out)


def _check_arrays(spec: DatasetSpec, arrays: readers.SplitArrays, where: str) -> None:
    for split in ("train", "test"):
        x, y = getattr(arrays, f"{split}_images"), getattr(arrays, f"{split}_labels")
        if x.ndim != 4 or tuple(x.shape[1:]) != spec.image_shape or x.shape[0] != y.shape[0]:
            raise UserError(
                f"{where}: {split} images {x.shape} / labels {y.shape} do not match "
                f"{spec.name} shape {spec.image_shape}"
            )
        if y.size and (y.min() < 0 or y.max() >= spec.num_classes):
            raise UserError(f"{where}: {split} labels outside 0..{spec.num_classes - 1}")


def _to_dataset(spec: DatasetSpec, arrays: readers.SplitArrays) -> Dataset:
    return Dataset(
        train_images=arrays.train_images,
        train_labels=arrays.train_labels.astype(np.int32),
        test_images=arrays.test_images,
        test_labels=arrays.test_labels.astype(np.int32),
        num_classes=spec.num_classes,
        name=spec.name,
    )


# --------------------------------------------------------------------------- prepared files


def _npz_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Shapes of the arrays of an ``.npz`` from the npy headers, after a CRC check."""
    shapes = {}
    with zipfile.ZipFile(path) as zf:
        if zf.testzip() is not None:
            raise ValueError("bad CRC")
        for member in zf.namelist():
            with zf.open(member) as f:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, _ = read(f)
            shapes[member.removesuffix(".npy")] = tuple(shape)
    return shapes


def is_prepared(name: str, out_dir: str | Path) -> bool:
    """Whether ``out_dir`` holds a valid prepared ``name``: manifest present and the npz
    readable with the counts and shape the manifest records."""
    spec = get_spec(name)
    try:
        manifest = json.loads(manifest_path(spec.name, out_dir).read_text())
        counts = {s: int(manifest["splits"][s]["count"]) for s in ("train", "test")}
        shapes = _npz_shapes(npz_path(spec.name, out_dir))
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
        return False
    return manifest.get("name") == spec.name and all(
        shapes.get(f"{s}_images") == (counts[s], *spec.image_shape) and shapes.get(f"{s}_labels") == (counts[s],)
        for s in ("train", "test")
    )


def _manifest(spec: DatasetSpec, arrays: readers.SplitArrays, source: str, files: dict[str, dict]) -> dict:
    splits = {}
    for s in ("train", "test"):
        y = getattr(arrays, f"{s}_labels")
        splits[s] = {"count": int(y.shape[0]), "label_counts": np.bincount(y, minlength=spec.num_classes).tolist()}
    return {
        "name": spec.name,
        "source": source,
        "shape": list(spec.image_shape),
        "num_classes": spec.num_classes,
        "splits": splits,
        "files": files,
        "npz": f"{spec.name}.npz",
    }


def prepare_dataset(
    name: str,
    source: str | Path,
    out_dir: str | Path,
    *,
    verify: bool = True,
    progress: Progress | None = None,
    tfds_data_dir: str | Path | None = None,
) -> Path:
    """Write ``out_dir/<name>.npz`` and ``out_dir/<name>.json``; return the npz path.

    Args:
        name: dataset name or alias.
        source: ``"tfds"`` (tensorflow-datasets, downloads where a network allows) or a
            folder holding the original files (directly or in a sub-folder ``<name>/``).
        out_dir: output folder (created).
        verify: compare the original files with the official md5s (False for test files).
        progress: optional ``hook(label, done, total)``.
        tfds_data_dir: tensorflow-datasets data folder (tfds default when None).

    A second call with valid outputs present does nothing (see :func:`is_prepared`).
    Both outputs are written atomically; on any error nothing new is left behind.
    """
    spec = get_spec(name)
    out = npz_path(spec.name, out_dir)
    if is_prepared(spec.name, out_dir):
        log.info("%s already prepared in %s; nothing to do", spec.name, out_dir)
        return out
    if str(source) == "tfds":
        arrays = read_tfds(spec, tfds_data_dir, progress)
        files: dict[str, dict] = {}
        source_str = f"tfds:{spec.tfds_name}"
    else:
        if not Path(source).is_dir():
            raise UserError(f"source must be 'tfds' or an existing folder of original files, got {str(source)!r}")
        folder = find_source_folder(spec, Path(source))
        paths = original_paths(spec, folder)
        files = verify_files(spec, paths, verify, progress)
        arrays = read_originals(spec, folder, paths)
        source_str = str(folder.resolve())
    _check_arrays(spec, arrays, str(source))
    label_dtype = np.uint8 if spec.num_classes <= 256 else np.int32
    save_npz(
        out,
        train_images=arrays.train_images,
        train_labels=arrays.train_labels.astype(label_dtype),
        test_images=arrays.test_images,
        test_labels=arrays.test_labels.astype(label_dtype),
    )
    write_json(manifest_path(spec.name, out_dir), _manifest(spec, arrays, source_str, files))
    return out


#: Key of the one array in a "not run" marker ``.npz`` (a unicode string: the reason; no pickle).
NOT_RUN_KEY = "not_run"


def not_run_reason(spec: DatasetSpec, source: str | Path) -> str:
    """The one-line reason recorded when ``spec`` cannot be obtained from ``source``."""
    files = ", ".join(f.filename for f in spec.files)
    if str(source) == "tfds":
        return (f"not run: {spec.name} could not be downloaded through tensorflow-datasets; "
                f"put {files} in a folder and set data.source to it")
    return (f"not run: {spec.name} not found in {source}; put {files} there "
            "or set data.source: tfds with a network")


def write_not_run(path: str | Path, reason: str) -> None:
    """Write a marker ``.npz`` (array ``not_run`` = ``reason``) in place of an output that could not be made."""
    save_npz(path, **{NOT_RUN_KEY: np.array(reason)})


def read_not_run(path: str | Path) -> str | None:
    """The reason stored in a marker ``.npz``, or None when ``path`` is not a marker."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if NOT_RUN_KEY in z.files:
                return str(z[NOT_RUN_KEY])
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        return None
    return None


def prepare_or_record(name: str, source: str | Path, out_dir: str | Path, *, verify: bool = True,
                      progress: Progress | None = None) -> tuple[Path, str | None]:
    """:func:`prepare_dataset`, but when ``source`` lacks the dataset record a "not run" marker.

    Returns ``(npz path, None)`` when prepared, ``(npz path, reason)`` when the
    marker ``<name>.npz`` and a ``<name>.json`` with ``status: "not run"`` were written.
    Bad arguments (unknown name, bad output folder, checksum mismatch) still raise.
    """
    spec = get_spec(name)
    src_missing = str(source) != "tfds" and not Path(source).is_dir()
    if not src_missing:
        try:
            return prepare_dataset(name, source, out_dir, verify=verify, progress=progress), None
        except UserError as e:
            msg = str(e)
            if not (msg.startswith("missing file") or msg.startswith("data folder not found")
                    or msg.startswith("tensorflow-datasets")):
                raise
    reason = not_run_reason(spec, source)
    out = npz_path(spec.name, out_dir)
    write_not_run(out, reason)
    write_json(manifest_path(spec.name, out_dir), {"name": spec.name, "status": "not run", "reason": reason,
                                                   "source": str(source)})
    return out, reason


def load_prepared(name: str, path: str | Path) -> Dataset:
    """Load a prepared ``<name>.npz`` (see module docstring for its layout)."""
    spec = get_spec(name)
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            if NOT_RUN_KEY in z.files:
                reason = str(z[NOT_RUN_KEY])
                raise DataNotAvailable(f"{spec.name} is not available ({path} records: {reason})", reason)
            missing = [k for k in _ARRAY_KEYS if k not in z.files]
            if missing:
                raise UserError(f"corrupt prepared file {path}: array {missing[0]} missing")
            arrays = readers.SplitArrays(*(z[k] for k in _ARRAY_KEYS))
    except UserError:  # a UserError is a ValueError: let ours (not run, missing array) through as they are
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise UserError(f"corrupt or truncated prepared file {path}: {readers.short_error(exc)}") from None
    _check_arrays(spec, arrays, str(path))
    return _to_dataset(spec, arrays)


def load_dataset(name: str, data_dir: str | Path, *, verify: bool = True) -> Dataset:
    """Load ``name`` from ``data_dir``.

    ``data_dir`` is either a prepared folder (holding ``<name>.npz``) or a folder of the
    original files (directly or under ``<name>/``); the originals are then read directly,
    their checksums verified (unless ``verify`` is False), and nothing is written.

    Returns:
        :class:`Dataset` with uint8 NHWC images and int32 labels.
    """
    spec = get_spec(name)
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"data folder not found: {data_dir}")
    prepared = npz_path(spec.name, data_dir)
    if prepared.is_file():
        return load_prepared(spec.name, prepared)
    folder = find_source_folder(spec, data_dir)
    paths = original_paths(spec, folder)
    verify_files(spec, paths, verify)
    arrays = read_originals(spec, folder, paths)
    _check_arrays(spec, arrays, str(folder))
    return _to_dataset(spec, arrays)
