"""Which annotation entry is which image of a run: one identity per image, and never a guess.

An image is its INPUT and its path relative to it (the report's `input_root` and `path`). An entry of
the annotations names an image by a path. Each image takes the entry named by the first of these steps
that names any, among the entries no earlier step took:

1. **its path**: relative to its INPUT (the report's `path`), relative to the annotations' folder (the
   folder of the CSV or JSON file; the XML, mask or WSOL folder itself), or absolute (its URL on a store);
2. **its path behind its INPUT's folder name**: `a/x.png` for `x.png` found under INPUT `photos/a`, as
   a file written for `cambatch run photos/a photos/b` names it;
3. **its file name** (`x.png`), compared with each entry's file name;
4. **its stem** (`x`), compared with each entry's stem.

An entry written without an image extension (a VOC XML and a mask PNG name their image by their own
path without `.xml` / `.png`) is compared with the image's paths without their extension, after the
entries written with one. Paths compare as POSIX paths (backslashes as slashes, `./` and `..`
resolved), case-sensitive.

Steps 3 and 4 are fallbacks: they apply only to an entry that no image matched by its path (steps 1-2),
and only when unambiguous. A file name or stem that two entries share is never used. Where a match
would be a guess, the image gets an error naming the entries, and no label and no box:

- an image that two entries match at one step, or that falls back on a name two entries share while
  either is left unmatched;
- each image of an entry that two images match at one step.

`cambatch run` makes such an image an error row (`ImageSource.error`); `cambatch evaluate` lists it in
`annotation_error`.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from ..sources.discover import IMAGE_EXTENSIONS, ImageSource
from ..sources.remote import is_url
from .model import Annotations, Truth
from .readers import load_annotations

Image = tuple[str, str]  # (input_root, path): `ImageSource.key`, a report row's identity
SHOWN = 3  # images named in the message of an entry that matches more
_NONE: frozenset[str] = frozenset()


@dataclass(frozen=True)
class GroundTruth:
    """Annotations matched to a run's images: each image's truth by its identity, and the images that
    cannot have one (`conflicts`: the error naming the entries; their truth carries the same error).
    """

    annotations: Annotations
    truths: dict[Image, Truth]
    conflicts: dict[Image, str]

    @property
    def problems(self) -> list[str]:
        """The malformed entries met while reading, one line each naming the file and line."""
        return self.annotations.problems

    def find(self, image: Image) -> Truth | None:
        """The truth of the image (input_root, path); None when no entry names it."""
        return self.truths.get(image)


def annotate(
    sources: list[ImageSource], annotations: Path | str | None
) -> tuple[list[ImageSource], GroundTruth | None]:
    """The run's images with their ground truth read from `annotations` (None: no annotations).

    `sources` must be all of the run's images, before sharding, so that every shard matches alike.
    An image without a label takes the annotations' (as `--labels-from-dirs` gives one); an image the
    annotations name ambiguously becomes an error (`ImageSource.error`).
    """
    if annotations is None:
        return sources, None
    truth = match(load_annotations(annotations), [source.key for source in sources])
    return [_annotated(source, truth) for source in sources], truth


def _annotated(source: ImageSource, truth: GroundTruth) -> ImageSource:
    if source.key in truth.conflicts:
        return replace(source, error=source.error or truth.conflicts[source.key])
    found = truth.find(source.key)
    label = source.label or (found.label if found is not None else None)
    return replace(source, label=label) if label != source.label else source


def match(annotations: Annotations, images: Iterable[Image]) -> GroundTruth:
    """Each image's entry, by the steps of this module's rule."""
    matching = _Matching(annotations, list(dict.fromkeys(images)))
    root = str(annotations.root).rstrip("/") + "/"
    matching.exact(lambda image: _paths(image, root), "by path")
    matching.exact(_behind_input, "by path behind the INPUT's folder name")
    matching.fallback(lambda image: _leaf(image[1]), matching.names.file, "file name")
    matching.fallback(lambda image: _bare(_leaf(image[1])), matching.names.stem, "stem")
    return GroundTruth(annotations, matching.truths, matching.conflicts)


def _paths(image: Image, annotations_root: str) -> list[str]:
    """Step 1: the image's path relative to its INPUT, absolute, and relative to the annotations' folder."""
    input_root, rel = image
    whole = f"{input_root.rstrip('/')}/{rel}"
    inside = [whole[len(annotations_root) :]] if whole.startswith(annotations_root) else []
    return [rel, whole, *inside]


def _behind_input(image: Image) -> list[str]:
    input_root, rel = image
    return [f"{_leaf(input_root.rstrip('/'))}/{rel}"]


def _leaf(path: str) -> str:
    """The last part of a POSIX path (`PurePosixPath.name`, at a fraction of its cost: a million images)."""
    return path.rpartition("/")[2]


def _bare(path: str) -> str:
    """`path` without its image extension (`a/x.jpg` -> `a/x`); any other path as it is."""
    stem, extension = posixpath.splitext(path)
    return stem if extension.lower() in IMAGE_EXTENSIONS else path


def _normal(name: str) -> str:
    """An entry's path as the images' paths are written: POSIX, `./` and `..` resolved (a URL as it is)."""
    return name if is_url(name) else posixpath.normpath(name.replace("\\", "/"))


class _Names:
    """The entries by each name they answer to: paths with an image extension, paths without one (a VOC XML's
    or a mask's own path), file names and stems.
    """

    def __init__(self, annotations: Annotations):
        self.whole: dict[str, set[str]] = {}
        self.bare: dict[str, set[str]] = {}
        self.file: dict[str, set[str]] = {}
        self.stem: dict[str, set[str]] = {}
        for key in annotations.images:
            for name in (key, *annotations.aliases.get(key, ())):
                self._add(_normal(name), key)

    def _add(self, name: str, key: str) -> None:
        leaf = _leaf(name)
        stem = _bare(leaf)
        if stem != leaf:  # named with an image extension
            self.whole.setdefault(name, set()).add(key)
            self.file.setdefault(leaf, set()).add(key)
        else:
            self.bare.setdefault(name, set()).add(key)
        self.stem.setdefault(stem, set()).add(key)


class _Matching:
    """The steps' state: the images left, the entries taken, and what each image got."""

    def __init__(self, annotations: Annotations, images: list[Image]):
        self.annotations = annotations
        self.names = _Names(annotations)
        self.left = images  # not yet decided, in the run's order
        self.taken: set[str] = set()
        self.truths: dict[Image, Truth] = {}
        self.conflicts: dict[Image, str] = {}

    def exact(self, paths: Callable[[Image], list[str]], how: str) -> None:
        """A step by path: each image left takes the entry not yet taken that one of its `paths` names, a name
        with the image's extension before one without (`x.jpg` and `x.png` may share a mask named `x`).
        """
        for index, form in ((self.names.whole, _same), (self.names.bare, _bare)):
            found = {}
            for image in self.left:
                keys = self._untaken(index, [form(path) for path in paths(image)])
                if keys:
                    found[image] = keys
            self._settle(found, how)
            self.left = [image for image in self.left if image not in found]

    def _untaken(self, index: dict[str, set[str]], names: list[str]) -> frozenset[str] | set[str]:
        """The entries not yet taken that `names` name (a loop, not a set union: it runs once per image)."""
        keys = _NONE
        for name in names:
            if name in index:
                keys = keys | index[name]
        return keys - self.taken if keys and self.taken else keys

    def fallback(self, alias: Callable[[Image], str], index: dict[str, set[str]], how: str) -> None:
        """A step by file name or stem: an image whose `alias` names any entry is decided here; it takes
        nothing when every such entry is taken, and has an error when the name is shared.
        """
        found, decided = {}, set()
        for image in self.left:
            keys = index.get(alias(image), _NONE)
            if keys:
                decided.add(image)
            if keys and not keys <= self.taken:
                found[image] = keys
        self._settle(found, f"by {how}")
        self.left = [image for image in self.left if image not in decided]

    def _settle(self, found: dict[Image, set[str]], how: str) -> None:
        """Give each image its one entry, or an error where an image has two entries or an entry two images."""
        images_of: dict[str, list[Image]] = {}
        for image, keys in found.items():
            for key in keys:
                images_of.setdefault(key, []).append(image)
        for image, keys in found.items():
            key = min(keys)
            if len(keys) > 1:
                every = "both" if len(keys) == 2 else "all"
                self._conflict(image, f"entries {_listed(keys)} {every} match this image ({how})")
            elif len(images_of[key]) > 1:
                self._conflict(image, f"entry {key!r} matches {_counted(images_of[key])} ({how})")
            else:
                self.truths[image] = self.annotations.images[key]
        self.taken |= images_of.keys()

    def _conflict(self, image: Image, message: str) -> None:
        text = f"ambiguous ground truth in {Path(self.annotations.source).name}: {message}"
        self.conflicts[image] = text
        self.truths[image] = Truth(error=text)


def _same(path: str) -> str:
    return path


def _counted(images: list[Image]) -> str:
    """`3 images: /a/x.png, /b/x.png, /c/x.png`, the first `SHOWN` named."""
    shown = [f"{root.rstrip('/')}/{rel}" for root, rel in images[:SHOWN]]
    more = f" and {len(images) - SHOWN} more" if len(images) > SHOWN else ""
    return f"{len(images)} images: {', '.join(shown)}{more}"


def _listed(keys: set[str]) -> str:
    names = [repr(key) for key in sorted(keys)]
    return ", ".join(names[:-1]) + " and " + names[-1]
