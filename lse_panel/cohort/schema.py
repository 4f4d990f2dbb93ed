"""The cohort bundle's vocabulary: modality kinds, phenotype specs, the manifest's schema version."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

SCHEMA_VERSION = 1
"""Bumped whenever the on-disk layout changes; loaders refuse versions they do not know."""

BUILD_STATUSES = ("in_progress", "servable", "complete")
"""``build.status`` values: half-built (refused by ``open_bundle``), servable while a build
still adds projections, complete."""

PhenotypeType = Literal["continuous", "binary", "categorical"]
ModalityKind = Literal["signal", "image_sequence"]
TargetTask = Literal["regression", "classification"]


class BundleError(ValueError):
    """A bundle on disk (or about to be written) is not what its manifest promises.

    The message always names the file, the field and what to do about it.
    """


@dataclass(frozen=True)
class SignalModality:
    """Channels × samples at a fixed sampling rate (a 12-lead median beat, say)."""

    name: str
    channel_names: tuple[str, ...]
    n_samples: int
    sampling_rate_hz: float
    units: str = "mV"
    description: str = ""
    kind: ModalityKind = field(default="signal", init=False)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.channel_names), self.n_samples)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["channel_names"] = list(self.channel_names)
        out["shape"] = list(self.shape)
        return out


@dataclass(frozen=True)
class ImageSequenceModality:
    """Frames × height × width over one cycle (an MRI cine, say)."""

    name: str
    n_frames: int
    height: int
    width: int
    frame_interval_ms: float
    units: str = "a.u."
    description: str = ""
    kind: ModalityKind = field(default="image_sequence", init=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.n_frames, self.height, self.width)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["shape"] = list(self.shape)
        return out


Modality = SignalModality | ImageSequenceModality


def modality_from_json(data: dict[str, Any]) -> Modality:
    """Rebuild a modality from its manifest entry, dispatching on ``kind``."""
    data = {k: v for k, v in data.items() if k not in ("shape",)}
    kind = data.pop("kind", None)
    if kind == "signal":
        data["channel_names"] = tuple(data["channel_names"])
        return SignalModality(**data)
    if kind == "image_sequence":
        return ImageSequenceModality(**data)
    raise BundleError(
        f"manifest.json: modality {data.get('name')!r} has kind {kind!r}; "
        "expected 'signal' or 'image_sequence'. Fix the manifest or rebuild the bundle."
    )


@dataclass(frozen=True)
class PhenotypeSpec:
    """What one phenotype column means: its type, units and, for categories, their labels.

    Binary and categorical phenotypes are stored as small integer codes that index
    ``categories``; continuous ones as float32.
    """

    name: str
    type: PhenotypeType
    units: str = ""
    description: str = ""
    categories: tuple[str, ...] = ()

    @property
    def dtype(self) -> str:
        return "float32" if self.type == "continuous" else "int8"

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["categories"] = list(self.categories)
        out["dtype"] = self.dtype
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PhenotypeSpec:
        return cls(
            name=data["name"],
            type=data["type"],
            units=data.get("units", ""),
            description=data.get("description", ""),
            categories=tuple(data.get("categories", ())),
        )


def target_task(spec: PhenotypeSpec) -> TargetTask | None:
    """How a phenotype is predicted from latents: a regression (continuous), a classification
    (two categories), or ``None`` when the cross-fitted linear probes cannot take it (more
    than two categories)."""
    if spec.type == "continuous":
        return "regression"
    return "classification" if len(spec.categories) == 2 else None


def default_targets(specs: dict[str, PhenotypeSpec]) -> dict[str, TargetTask]:
    """Every phenotype that can be a downstream target (see :func:`target_task`), in table order."""
    return {name: task for name, spec in specs.items() if (task := target_task(spec)) is not None}
