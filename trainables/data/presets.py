"""Dataset presets: each states only its folder layout, class names and file types.

One folder-dataset implementation (:mod:`trainables.data.folder`) reads every preset, in the
way TorchGeo's ``UCMerced`` is a handful of class attributes over one ``ImageFolder`` base.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


@dataclass(frozen=True)
class Preset:
    """The layout of one dataset family.

    Attributes:
        name: Preset name used in specs (``dataset.preset``).
        suffixes: File suffixes (lower case) that count as images.
        classes: Canonical class names, or ``None`` when any folder name is a class.
        folders: Class name -> folder name, where they differ (RSSCN7's letter prefixes).
        subdir: Optional folder below the root that holds the class folders
            (UC-Merced's ``Images/``); a root that points at it directly also works.
        native_size: Side length of the original images in pixels (documentation only).
        citation: Where the dataset comes from.
        source: The dataset's canonical public page.
        url: The archive ``python -m trainables.data download`` fetches (``None``: not
            downloadable).
        md5: Published MD5 of that archive (``None``: none is published; the download is
            then checked against the preset's layout only). See :mod:`trainables.data.download`.
        mirror: Another public copy of the same archive (for ``--url``), where one is known.
    """

    name: str
    suffixes: tuple[str, ...] = IMAGE_SUFFIXES
    classes: tuple[str, ...] | None = None
    folders: dict[str, str] = field(default_factory=dict)
    subdir: str | None = None
    native_size: int | None = None
    citation: str = ""
    source: str = ""
    url: str | None = None
    md5: str | None = None
    mirror: str | None = None

    def folder_of(self, class_name: str) -> str:
        """Folder name on disk for ``class_name``."""
        return self.folders.get(class_name, class_name)

    def class_of(self, folder: str) -> str:
        """Class name for a folder on disk."""
        for cls, fold in self.folders.items():
            if fold == folder:
                return cls
        return folder


NWPU_RESISC45_CLASSES = (
    "airplane", "airport", "baseball_diamond", "basketball_court", "beach", "bridge",
    "chaparral", "church", "circular_farmland", "cloud", "commercial_area",
    "dense_residential", "desert", "forest", "freeway", "golf_course", "ground_track_field",
    "harbor", "industrial_area", "intersection", "island", "lake", "meadow",
    "medium_residential", "mobile_home_park", "mountain", "overpass", "palace", "parking_lot",
    "railway", "railway_station", "rectangular_farmland", "river", "roundabout", "runway",
    "sea_ice", "ship", "snowberg", "sparse_residential", "stadium", "storage_tank",
    "tennis_court", "terrace", "thermal_power_station", "wetland",
)  # fmt: skip

UCMERCED_CLASSES = (
    "agricultural", "airplane", "baseballdiamond", "beach", "buildings", "chaparral",
    "denseresidential", "forest", "freeway", "golfcourse", "harbor", "intersection",
    "mediumresidential", "mobilehomepark", "overpass", "parkinglot", "river", "runway",
    "sparseresidential", "storagetanks", "tenniscourt",
)  # fmt: skip

RSSCN7_FOLDERS = {
    "grass": "aGrass",
    "field": "bField",
    "industry": "cIndustry",
    "riverlake": "dRiverLake",
    "forest": "eForest",
    "resident": "fResident",
    "parking": "gParking",
}

PRESETS: dict[str, Preset] = {
    "nwpu_resisc45": Preset(
        name="nwpu_resisc45",
        suffixes=(".jpg", ".jpeg"),
        classes=NWPU_RESISC45_CLASSES,
        native_size=256,
        citation="Cheng, Han & Lu, Proc. IEEE 2017: 45 classes x 700 images, 256x256 jpg",
        # The authors share a RAR on OneDrive (no direct link); TorchGeo's copy is a zip,
        # pinned to a revision, with the MD5 TorchGeo publishes (torchgeo.datasets.RESISC45).
        source="https://gcheng-nwpu.github.io/#Datasets",
        url="https://hf.co/datasets/torchgeo/resisc45/resolve/"
        "a826b44d938a883185f11ebe3d512d38b464312f/NWPU-RESISC45.zip",
        md5="75206b2e16446591afa88e2628744886",
    ),
    "ucmerced": Preset(
        name="ucmerced",
        suffixes=(".tif", ".tiff"),
        classes=UCMERCED_CLASSES,
        subdir="Images",
        native_size=256,
        citation="Yang & Newsam, ACM SIGSPATIAL 2010: 21 classes x 100 images, 256x256 tif",
        # The authors' zip; the MD5 is the one TorchGeo publishes for it and for its copy.
        source="http://weegee.vision.ucmerced.edu/datasets/landuse.html",
        url="http://weegee.vision.ucmerced.edu/datasets/UCMerced_LandUse.zip",
        md5="5b7ec56793786b6dc8a908e8854ac0e4",
        mirror="https://hf.co/datasets/torchgeo/ucmerced/resolve/"
        "7c5ef3454d9b1cccfa7ccde0c01fc8f00a45909a/UCMerced_LandUse.zip",
    ),
    "rsscn7": Preset(
        name="rsscn7",
        suffixes=(".jpg", ".jpeg"),
        classes=tuple(RSSCN7_FOLDERS),
        folders=RSSCN7_FOLDERS,
        native_size=400,
        citation="Zou et al., IEEE GRSL 2015: 7 classes x 400 images, 400x400 jpg",
        # The authors publish the images as a GitHub repository; the archive of its pinned
        # commit is fetched. No checksum is published (GitHub builds the zip on request).
        source="https://github.com/palewithout/RSSCN7",
        url="https://github.com/palewithout/RSSCN7/archive/"
        "6d77849df87d242b323184ab096e44dd63730c7e.zip",
    ),
    "folder": Preset(name="folder", citation="any <root>/<class>/* tree of images"),
    "synthetic": Preset(
        name="synthetic",
        suffixes=(".png",),
        citation="procedural aerial scenes generated by trainables.data.synthetic",
    ),
}


def close_matches(value: str, choices: list[str] | tuple[str, ...]) -> str:
    """A ``"; did you mean 'x'?"`` suffix for error messages, or ``""``."""
    matches = difflib.get_close_matches(value, list(choices), n=3, cutoff=0.6)
    if not matches:
        return ""
    return "; did you mean " + ", ".join(repr(m) for m in matches) + "?"


def get_preset(name: str) -> Preset:
    """Look up a preset by name.

    Raises:
        ValueError: the name is not a known preset (with close matches).
    """
    if name not in PRESETS:
        raise ValueError(
            f"unknown dataset preset {name!r}{close_matches(name, list(PRESETS))} "
            f"Known presets: {', '.join(PRESETS)}."
        )
    return PRESETS[name]
