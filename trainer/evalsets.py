"""Reading evaluation datasets in the layouts users have.

- CLIP_benchmark's webdataset layout: ``*.tar`` shards (at the top, or under a split folder
  such as ``test/`` and ``train/``) whose samples hold an image (``webp``/``png``/``jpg``/
  ``jpeg``) and ``cls`` (the class index), beside ``classnames.txt`` (one name per line, in
  index order) and optionally ``zeroshot_classification_templates.txt`` (one template per
  line, ``{c}`` for the name). Retrieval sets hold ``txt`` instead: one caption per line.
- `openwit shard` output, for retrieval: ``{uid}.jpg`` with its ``{uid}.txt``.
- ImageFolder: one folder per class holding its images, plus a class-name file (one line
  per class folder, sorted by folder name: ``folder<TAB>name`` or just the name) and a
  templates file; without a class-name file the folder names are the class names.

Problems end in a ValueError whose message names the file: a missing class-name file, a
class index out of range, an unreadable image.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

IMAGE_EXTS = ("webp", "png", "jpg", "jpeg")
CLASSNAMES = "classnames.txt"
TEMPLATES = "zeroshot_classification_templates.txt"


class DatasetError(ValueError):
    """An evaluation dataset that cannot be read; the message names the file."""


@dataclass
class Classification:
    name: str
    classnames: list[str]
    templates: list[str] = field(default_factory=list)
    items: list[tuple[str, object]] = field(default_factory=list)  # (where, image bytes or path), label
    labels: list[int] = field(default_factory=list)

    def images(self):
        """(where, PIL image RGB, label) for every sample."""
        for (where, source), label in zip(self.items, self.labels):
            try:
                data = source if isinstance(source, bytes) else Path(source).read_bytes()
            except OSError as e:
                raise DatasetError(f"{where}: unreadable image ({e.strerror})") from None
            yield where, _decode(where, data), label


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _split_root(root: Path, split: str) -> Path:
    """Where the split's data lies: the folder itself when it holds .tar shards, else its
    ``split`` subfolder (CLIP_benchmark's ``test/``, ``train/``) when there is one."""
    if not root.exists():
        raise DatasetError(f"{root}: no such dataset folder")
    if any(root.glob("*.tar")) or not (root / split).is_dir():
        return root
    return root / split


def load(path: str, classnames_file: str | None = None, templates_file: str | None = None,
         split: str = "test") -> Classification:
    """A classification set: flat ``*.tar`` shards, ``{split}/*.tar`` (class files at the
    top), an ImageFolder, or ``{split}/`` holding an ImageFolder."""
    root = Path(path)
    data_root = _split_root(root, split)
    tars = sorted(data_root.glob("*.tar"))
    if tars:
        return _webdataset(root, tars, classnames_file, templates_file)
    return _image_folder(root, data_root, classnames_file, templates_file)


@dataclass
class Retrieval:
    name: str
    images: list[tuple[str, bytes]] = field(default_factory=list)  # (where, image bytes)
    texts: list[str] = field(default_factory=list)
    text_image: list[int] = field(default_factory=list)  # the image index of each text

    def decoded(self):
        for where, data in self.images:
            yield where, _decode(where, data)


def load_retrieval(path: str, split: str = "test") -> Retrieval:
    """Image-text pairs from ``*.tar`` shards whose samples hold an image and a ``txt``
    member: CLIP_benchmark's retrieval layout (several captions, one per line) and
    `openwit shard` output (one caption) alike."""
    root = Path(path)
    tars = sorted(_split_root(root, split).glob("*.tar"))
    if not tars:
        raise DatasetError(f"{path}: no .tar shards for retrieval (nor in {split}/)")
    data = Retrieval(root.name)
    for tar_path, key, s in _tar_samples(tars):
        image = next((s[e] for e in IMAGE_EXTS if e in s), None)
        if image is None or "txt" not in s:
            raise DatasetError(f"{tar_path}: sample {key} lacks an image or a txt member")
        try:
            lines = [t.strip() for t in s["txt"].decode("utf-8").splitlines() if t.strip()]
        except UnicodeDecodeError:
            raise DatasetError(f"{tar_path}: sample {key} has a txt that is not UTF-8") from None
        if not lines:
            raise DatasetError(f"{tar_path}: sample {key} has an empty txt")
        data.texts += lines
        data.text_image += [len(data.images)] * len(lines)
        data.images.append((f"{tar_path}:{key}", image))
    return data


def _tar_samples(tars: list[Path]):
    """(tar path, key, {extension: bytes}) for every sample, in shard and member order."""
    for tar_path in tars:
        samples: dict[str, dict[str, bytes]] = {}
        try:
            with tarfile.open(tar_path) as tar:
                for m in tar:
                    if m.isfile():
                        key, _, ext = m.name.partition(".")
                        samples.setdefault(key, {})[ext.lower()] = tar.extractfile(m).read()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DatasetError(f"{tar_path}: unreadable tar ({e})") from None
        for key, members in samples.items():
            yield tar_path, key, members


def _decode(where: str, data: bytes):
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.convert("RGB")
    except Exception as e:  # any decoder error: name the file
        raise DatasetError(f"{where}: unreadable image ({type(e).__name__})") from None


def _templates(root: Path, templates_file: str | None) -> list[str]:
    path = Path(templates_file) if templates_file else root / TEMPLATES
    if templates_file and not path.is_file():
        raise DatasetError(f"{path}: no such templates file")
    return [t.replace("{c}", "{}") for t in _lines(path)] if path.is_file() else []


def _webdataset(root: Path, tars: list[Path], classnames_file: str | None, templates_file: str | None) -> Classification:
    names_path = Path(classnames_file) if classnames_file else root / CLASSNAMES
    if not names_path.is_file():
        raise DatasetError(f"{names_path}: missing class-name file (one class name per line, in index order)")
    classnames = _lines(names_path)
    data = Classification(root.name, classnames, _templates(root, templates_file))
    for tar_path, key, s in _tar_samples(tars):
        image = next((s[e] for e in IMAGE_EXTS if e in s), None)
        if image is None or "cls" not in s:
            raise DatasetError(f"{tar_path}: sample {key} lacks an image or a cls member")
        try:
            label = int(s["cls"].decode().strip())
        except ValueError:
            raise DatasetError(f"{tar_path}: sample {key} has a cls that is not an integer") from None
        if not 0 <= label < len(classnames):
            raise DatasetError(f"{tar_path}: sample {key} has class index {label}, outside 0..{len(classnames) - 1} "
                               f"of {names_path}")
        data.items.append((f"{tar_path}:{key}", image))
        data.labels.append(label)
    return data


def _image_folder(root: Path, data_root: Path, classnames_file: str | None, templates_file: str | None
                  ) -> Classification:
    folders = sorted(d for d in data_root.iterdir() if d.is_dir())
    if not folders:
        raise DatasetError(f"{data_root}: neither .tar shards nor class folders")
    if classnames_file:
        path = Path(classnames_file)
        if not path.is_file():
            raise DatasetError(f"{path}: missing class-name file")
        lines = _lines(path)
        if len(lines) != len(folders):
            raise DatasetError(f"{path}: {len(lines)} class names for {len(folders)} class folders in {data_root}")
        classnames = [line.split("\t", 1)[-1] for line in lines]
    else:
        classnames = [d.name.replace("_", " ") for d in folders]
    data = Classification(root.name, classnames, _templates(root, templates_file))
    for label, folder in enumerate(folders):
        for f in sorted(folder.iterdir()):
            if f.is_file() and f.suffix.lower().lstrip(".") in (*IMAGE_EXTS, "bmp", "gif"):
                data.items.append((str(f), str(f)))
                data.labels.append(label)
    return data
