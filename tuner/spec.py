"""The search spec: one YAML file, validated strictly before Ray starts.

A spec names the experiment, the dataset, the factors and hyperparameters, the search, the
scheduler and the resources. Every factor or hyperparameter is one of::

    lr: 0.001                                   # fixed
    batch_size: [16, 32, 64]                    # choices (grid: every one; optuna: categorical)
    lr: {loguniform: [1.0e-5, 1.0e-2]}          # range: uniform | loguniform | int | logint
    backbone_lr_mult: {values: [0.1, 1.0], when: {transfer: finetune}}   # conditional

Errors name the YAML path of the bad key (``hyperparameters.lr.loguniform: ...``) and are
raised as :class:`SpecError`; the CLI turns them into exit status 2 before anything is
created. ``${VAR}`` and ``${VAR:-default}`` in string values expand from the environment.
"""

from __future__ import annotations

import difflib
import functools
import itertools
import os
import re
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    create_model,
    field_validator,
)
from pydantic.fields import FieldInfo

from trainables.augment_presets import AUGMENTATIONS
from trainables.config import (
    NO_WEIGHTS,
    SCRATCH,
    DataConfig,
    Strict,
    TrialConfig,
    has_weights,
)
from trainables.extras import installed, missing_message
from trainables.timm_models import check_name as check_timm_name
from trainables.timm_models import is_timm
from tuner.budget import parse_duration
from tuner.tracking import TRACKERS, missing

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
RANGE_KINDS = ("uniform", "loguniform", "int", "logint")
#: TrialConfig fields a spec may not set per trial (they come from the resources or the CLI).
NOT_PARAMS = ("data", "num_threads", "num_workers", "max_batches")
PARAM_NAMES = tuple(n for n in TrialConfig.model_fields if n not in NOT_PARAMS)
#: The design's factors: the choices a search compares (the report's tables are cut by
#: them). Factors and other hyperparameters are parsed alike and may be written in either
#: section of a spec; a parameter named here is a factor wherever it is written.
FACTOR_NAMES = ("model", "transfer", "weights", "augmentation", "head")
#: The validation metrics every epoch reports, one of which Optuna and ASHA optimise
#: (``search.metric``; never a test metric).
SearchMetric = Literal["val_acc", "val_f1", "val_kappa", "val_loss"]
#: The trainables a spec can name (``trainable:``): modules ``trainables.<name>`` with a
#: ``run_trial`` function.
Trainable = Literal["classify", "toy"]
#: Common names for parameters, offered when a spec uses them.
SYNONYMS = {
    "learning_rate": "lr", "learningrate": "lr", "batch": "batch_size", "bs": "batch_size",
    "optim": "optimizer", "aug": "augmentation", "augment": "augmentation",
    "arch": "model", "architecture": "model", "backbone": "model", "pretrained": "weights",
    "num_epochs": "epochs", "max_epochs": "epochs", "wd": "weight_decay",
    "schedule": "lr_schedule", "scheduler": "lr_schedule", "lr_mult": "backbone_lr_mult",
}  # fmt: skip


class SpecError(ValueError):
    """An invalid spec; the message starts with the YAML path of the bad key."""


# ------------------------------------------------------------------------------------ YAML
class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML loader that refuses duplicate keys."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise SpecError(
                f"duplicate key {key!r} at line {key_node.start_mark.line + 1} "
                f"(first at line {seen[key]}); each key may appear once"
            )
        seen[key] = key_node.start_mark.line + 1
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

#: Largest spec file read (bytes); real specs are a few kilobytes.
MAX_SPEC_BYTES = 1_000_000
#: Most values (mappings, lists and scalars, each alias counted where it is used) a spec may
#: expand to: YAML anchors and aliases can make a small file stand for billions of values.
MAX_SPEC_VALUES = 100_000
#: Most trials a search may ask for (optuna's num_samples, grid cells x seeds, seeds).
MAX_TRIALS = 100_000
#: Paths whose resolved value is recorded in ``spec.yaml`` (reproducibility needs the folder
#: the data came from); every other ``${VAR}`` keeps its reference when written.
RESOLVED_PATHS = ("dataset.root", "pretrain.dataset.root")


def _check_size(tree: Any, source: str) -> None:
    """Refuse a parsed tree that stands for more than :data:`MAX_SPEC_VALUES` values.

    Walks the tree as its readers will (an alias is counted every time it is reached) and
    stops as soon as the limit is passed, so a "billion laughs" spec costs at most
    ``MAX_SPEC_VALUES`` steps to refuse.
    """
    count, stack = 0, [tree]
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_SPEC_VALUES:
            raise SpecError(
                f"{source}: the spec expands to more than {MAX_SPEC_VALUES:,} values (YAML "
                "anchors and aliases repeat what they name); the limit is "
                f"{MAX_SPEC_VALUES:,} values; a search spec needs a few hundred"
            )
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def parse(text: str, source: str) -> dict:
    """Parse spec text with the safe, duplicate-refusing loader, within the size limits.

    Args:
        text: The YAML text.
        source: What to call it in messages (the file name).
    """
    if len(text.encode()) > MAX_SPEC_BYTES:
        raise SpecError(
            f"{source}: {len(text.encode()):,} bytes; the limit for a spec is "
            f"{MAX_SPEC_BYTES:,} bytes"
        )
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        raise SpecError(f"{source}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: the spec must be a mapping of keys, not {type(raw).__name__}")
    _check_size(raw, source)
    return raw


def expand(value: Any, path: str = "", *, missing: Literal["error", "keep"] = "error") -> Any:
    """Expand ``${VAR}`` / ``${VAR:-default}`` in every string of a parsed YAML tree.

    Args:
        value: The tree (not modified).
        path: YAML path of ``value`` (for messages).
        missing: An unset variable without a default is an ``error``, or is ``keep`` as
            written (for readers such as the report, which only display it).
    """
    if isinstance(value, dict):
        return {
            k: expand(v, f"{path}.{k}" if path else str(k), missing=missing)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [expand(v, f"{path}[{i}]", missing=missing) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        if missing == "keep":
            return m.group(0)
        raise SpecError(
            f"{path}: environment variable {name} is not set; set it or write ${{{name}:-default}}"
        )

    return _ENV_RE.sub(sub, value)


_expand = expand


def with_references(resolved: dict, template: dict, keep: tuple[str, ...] = RESOLVED_PATHS) -> dict:
    """``resolved`` with every ``${VAR}`` string of ``template`` put back as written.

    What the project writes (``spec.yaml``, Tune's ``tuner.pkl``, the report) must not hold
    what a variable expanded to: it may be a secret. Only the paths in ``keep`` (the
    dataset roots, which reproducibility needs) keep their resolved value.

    Args:
        resolved: The validated spec as a mapping (defaults filled in); not modified.
        template: The raw spec before expansion (same keys where both have them).
        keep: YAML paths recorded resolved.
    """
    out = _copy_tree(resolved)

    def walk(tmpl: Any, target: Any, path: str) -> None:
        if isinstance(tmpl, dict) and isinstance(target, dict):
            for k, v in tmpl.items():
                sub = f"{path}.{k}" if path else str(k)
                if k not in target:
                    continue
                if isinstance(v, str) and _ENV_RE.search(v):
                    if sub not in keep:
                        target[k] = v
                else:
                    walk(v, target[k], sub)
        elif isinstance(tmpl, list) and isinstance(target, list):
            for i, v in enumerate(tmpl[: len(target)]):
                if isinstance(v, str) and _ENV_RE.search(v):
                    target[i] = v
                else:
                    walk(v, target[i], f"{path}[{i}]")

    walk(template, out, "")
    return out


def _copy_tree(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_tree(v) for v in value]
    return value


def apply_override(raw: dict, assignment: str) -> None:
    """Apply one ``--set a.b.c=value`` (value parsed as YAML) to the raw spec in place."""
    if "=" not in assignment:
        raise SpecError(f"--set {assignment!r}: expected KEY=VALUE, e.g. search.num_samples=4")
    key, text = assignment.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise SpecError(f"--set {assignment!r}: empty key segment in {key!r}")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise SpecError(f"--set {key}: {'.'.join(parts[: i + 1])} is not a mapping")
        node = child
    node[parts[-1]] = yaml.load(text, Loader=_UniqueKeyLoader) if text else ""


def load_raw(path: str | Path, overrides: list[str] = (), *, expand_vars: bool = True) -> dict:
    """Read a spec file with the safe loader, apply ``--set`` overrides, expand variables.

    The file and what it expands to are size-limited (:data:`MAX_SPEC_BYTES`,
    :data:`MAX_SPEC_VALUES`). With ``expand_vars=False`` the ``${VAR}`` references are
    kept (the template that :func:`with_references` restores from).
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file {str(path)!r} does not exist")
    size = path.stat().st_size
    if size > MAX_SPEC_BYTES:
        raise SpecError(f"{path}: {size:,} bytes; the limit for a spec is {MAX_SPEC_BYTES:,} bytes")
    raw = parse(path.read_text(), str(path))
    for assignment in overrides:
        apply_override(raw, assignment)
    _check_size(raw, f"{path} with --set overrides")
    return expand(raw) if expand_vars else raw


def load_saved(text: str, source: str, *, strict: bool = True) -> Spec:
    """The spec saved with an experiment's results (``spec.yaml``), validated.

    Its ``${VAR}`` references are expanded from the environment now; the spec remembers
    them, so what is written from it keeps them (see :func:`referenced`).

    Args:
        text: The file's text (read with :func:`parse`'s limits).
        source: Its name, for messages.
        strict: For a search to run (``--resume``): a variable that is not set is an error
            naming it, and the dataset is checked. Readers (report, exports) pass
            ``False``: unset variables stay as written, the data need not be there.
    """
    template = parse(text, source)
    if strict:
        spec = validate(expand(template))
    else:
        spec = validate(expand(template, missing="keep"), check_data=False)
    spec._template = template
    return spec


def referenced(spec: Spec) -> dict:
    """The spec as a mapping (defaults filled in) with its ``${VAR}`` references as written.

    What ``spec.yaml`` holds. A spec whose template (``spec._template``, the raw spec before
    expansion, set by the CLI) is unknown has no references to restore.
    """
    resolved = spec.model_dump(mode="json", exclude_none=True)
    if spec._template is None:
        return resolved
    return with_references(resolved, spec._template)


def _from_references(data: dict) -> Spec:
    """Unpickle a :class:`Spec` pickled with its references (see ``Spec.__reduce__``)."""
    spec = validate(expand(data, missing="keep"), check_data=False)
    spec._template = data
    return spec


# ---------------------------------------------------------------------------- parameters
class Param(BaseModel):
    """One factor or hyperparameter after parsing.

    Attributes:
        name: Parameter name (a :class:`~trainables.config.TrialConfig` field).
        kind: ``fixed``, ``choice`` or one of :data:`RANGE_KINDS`.
        values: The fixed value (one item), the choices, or the (low, high) bounds.
        when: Condition: the parameter applies only where each named parameter has one of
            the listed values (otherwise the trial uses the default).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    kind: str
    values: tuple[Any, ...]
    when: dict[str, tuple[Any, ...]] = Field(default_factory=dict)

    @property
    def searched(self) -> bool:
        """Whether the parameter takes more than one value."""
        return self.kind != "fixed" and not (self.kind == "choice" and len(self.values) == 1)

    def applies(self, config: dict) -> bool:
        """Whether the ``when`` condition holds for ``config``."""
        return all(config.get(k) in v for k, v in self.when.items())


def field_type(name: str) -> type:
    """Python type of a TrialConfig field (``str`` for Literals, unwraps Optional): the
    value type of a parameter, and of its typed Parquet column."""
    ann = TrialConfig.model_fields[name].annotation
    if typing.get_origin(ann) is Literal:
        return str
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    return args[0] if args else ann


def _parse_param(path: str, name: str, raw: Any) -> Param:
    if name not in PARAM_NAMES:
        hint = difflib.get_close_matches(name, PARAM_NAMES, n=3)
        if name.lower() in SYNONYMS:
            hint = [SYNONYMS[name.lower()], *(h for h in hint if h != SYNONYMS[name.lower()])]
        did = f"; did you mean {', '.join(repr(h) for h in hint)}?" if hint else ""
        raise SpecError(
            f"{path}: unknown parameter {name!r}{did} Parameters: {', '.join(PARAM_NAMES)}"
        )
    when: dict[str, tuple] = {}
    if isinstance(raw, dict):
        raw = dict(raw)
        cond = raw.pop("when", None)
        if cond is not None:
            if not isinstance(cond, dict) or not cond:
                raise SpecError(f"{path}.when: expected a mapping like {{transfer: finetune}}")
            for k, v in cond.items():
                if k not in PARAM_NAMES:
                    raise SpecError(f"{path}.when: unknown parameter {k!r}")
                when[k] = tuple(v) if isinstance(v, list) else (v,)
        kinds = [k for k in raw if k in (*RANGE_KINDS, "values", "value")]
        unknown = [k for k in raw if k not in (*RANGE_KINDS, "values", "value")]
        if unknown or len(kinds) != 1:
            bad = unknown[0] if unknown else ", ".join(kinds) or "nothing"
            hint = difflib.get_close_matches(str(bad), [*RANGE_KINDS, "values", "when"], n=2)
            did = f"; did you mean {', '.join(repr(h) for h in hint)}?" if hint else ""
            raise SpecError(
                f"{path}: a parameter mapping takes exactly one of "
                f"{', '.join((*RANGE_KINDS, 'values', 'value'))} (plus 'when'), got {bad!r}{did}"
            )
        kind = kinds[0]
        body = raw[kind]
        if kind == "value":
            return Param(name=name, kind="fixed", values=(body,), when=when)
        if kind == "values":
            if not isinstance(body, list) or not body:
                raise SpecError(f"{path}.values: expected a non-empty list, got {body!r}")
            return Param(name=name, kind="choice", values=tuple(body), when=when)
        if not (isinstance(body, list) and len(body) == 2):
            raise SpecError(f"{path}.{kind}: expected [low, high], got {body!r}")
        low, high = body
        for bound in (low, high):
            if isinstance(bound, bool) or not isinstance(bound, int | float):
                raise SpecError(f"{path}.{kind}: bounds must be numbers, got {bound!r}")
        if kind in ("int", "logint") and not (float(low).is_integer() and float(high).is_integer()):
            raise SpecError(f"{path}.{kind}: bounds must be integers, got {body}")
        if not low < high:
            raise SpecError(
                f"{path}.{kind}: `low < high` must hold, but got (low={low}, high={high})"
            )
        if kind.startswith("log") and low <= 0:
            raise SpecError(
                f"{path}.{kind}: a log range needs `low > 0`, but got (low={low}, high={high})"
            )
        if kind in ("int", "logint"):
            low, high = int(low), int(high)
            if field_type(name) is not int:
                raise SpecError(f"{path}.{kind}: {name} is not an integer parameter")
        elif field_type(name) not in (float, int):
            raise SpecError(f"{path}.{kind}: {name} takes {field_type(name).__name__} values")
        return Param(name=name, kind=kind, values=(low, high), when=when)
    if isinstance(raw, list):
        if not raw:
            raise SpecError(f"{path}: an empty list of choices")
        return Param(name=name, kind="choice", values=tuple(raw), when=when)
    return Param(name=name, kind="fixed", values=(raw,), when=when)


# -------------------------------------------------------------------------------- sections
#: The trial settings a pretraining stage takes: trial-config fields, with the stage's own
#: default where it differs from a trial's (``None``: the trial's default).
PRETRAIN_SETTINGS = {
    "epochs": 5,
    "lr": None,
    "batch_size": None,
    "optimizer": None,
    "augmentation": "aerial",
    "head": None,
    "seed": None,
}


def _trial_field(name: str, default: Any) -> tuple[Any, FieldInfo]:
    field = TrialConfig.model_fields[name]
    if default is not None:
        field = FieldInfo.merge_field_infos(field, default=default)
    return field.annotation, field


class _PretrainBase(Strict):
    """A source-domain training stage whose checkpoints become the ``pretrain`` weights.

    Each model of the search that is combined with ``weights: pretrain`` is trained once on
    ``dataset`` (from scratch) and reused across runs: the checkpoint is keyed by a hash of
    this section, the model and the input size. Its settings are the trial config's fields
    named in :data:`PRETRAIN_SETTINGS`, validated alike.
    """

    dataset: DataConfig

    def settings(self) -> dict:
        """The stage's trial-config settings (every field but ``dataset``)."""
        return {name: getattr(self, name) for name in PRETRAIN_SETTINGS}


PretrainSpec = create_model(
    "PretrainSpec",
    __base__=_PretrainBase,
    __module__=__name__,
    **{name: _trial_field(name, default) for name, default in PRETRAIN_SETTINGS.items()},
)


class SearchSpec(Strict):
    """How configurations are chosen.

    Attributes:
        algorithm: ``optuna`` (TPE over every non-fixed parameter) or ``grid`` (the full
            factorial of the listed values).
        num_samples: Trials to sample (optuna only).
        max_concurrent: Trials running at once (default: as many as resources allow).
        seeds: Training seeds: a count (``3`` -> 0, 1, 2) or a list. Grid: every cell runs
            once per seed; optuna: each sampled configuration runs with the first seed
            unless ``seed`` is itself a hyperparameter.
        metric: Validation metric that Optuna and ASHA optimise (never a test metric).
        mode: ``max`` or ``min``.
        sampler_seed: Seed of Optuna's TPE sampler.
        max_failures: Retries of a crashed trial from its last checkpoint.
        exclude: Grid cells to leave out: each entry maps parameters to a value or a list
            of values, and a cell matching every entry's keys is dropped (e.g.
            ``{model: pixels, transfer: [frozen, finetune]}``: raw pixels have no
            pretrained backbone).
        points: Configurations Optuna evaluates first (e.g. a paper's settings).
        time_budget: Wall-clock budget of the search (``2h``, ``45m``, ``1h30m`` or
            seconds): when spent, no trial is launched and running trials stop after the
            epoch they are in, as ``stopped-budget`` (see :mod:`tuner.budget`).
    """

    algorithm: Literal["optuna", "grid"] = "optuna"
    num_samples: int = Field(10, gt=0, le=MAX_TRIALS)
    max_concurrent: int | None = Field(None, gt=0)
    seeds: int | list[int] = 1
    metric: SearchMetric = "val_acc"
    mode: Literal["max", "min"] = "max"
    sampler_seed: int = 0
    max_failures: int = Field(2, ge=0)
    exclude: list[dict[str, Any]] = Field(default_factory=list)
    points: list[dict[str, Any]] = Field(default_factory=list)
    time_budget: str | float | None = None

    @field_validator("time_budget")
    @classmethod
    def _budget(cls, v: str | float | None) -> str | float | None:
        if v is not None:
            parse_duration(v)
        return v

    @property
    def time_budget_s(self) -> float | None:
        """``time_budget`` in seconds (``None``: no budget)."""
        return None if self.time_budget is None else parse_duration(self.time_budget)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: int | list[int]) -> int | list[int]:
        if isinstance(v, int) and v < 1:
            raise ValueError(f"seeds must be a count >= 1 or a list, but got {v}")
        count = v if isinstance(v, int) else len(v)
        if count > MAX_TRIALS:
            raise ValueError(f"at most {MAX_TRIALS:,} seeds are allowed, {count:,} asked for")
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError(f"seeds must be a non-empty list of distinct ints, but got {v}")
        return v

    @property
    def seed_list(self) -> list[int]:
        """The training seeds as a list."""
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


class SchedulerSpec(Strict):
    """Early stopping.

    Attributes:
        type: ``asha`` (asynchronous successive halving) or ``none``.
        grace_period: Epochs every trial runs before it can be stopped.
        reduction_factor: ASHA's eta: only the top 1/eta of trials at a rung continue.
    """

    type: Literal["asha", "none"] = "asha"
    grace_period: int = Field(1, gt=0)
    reduction_factor: float = Field(2.0, gt=1)


class ResourcesSpec(Strict):
    """Resources of one trial: CPUs and a (fractional) GPU share, e.g. ``gpu: 0.25``.

    A trial trains on one device, so ``gpu`` is at most 1: a search uses several GPUs by
    running several trials at once (``gpu: 1`` runs one trial per GPU, ``gpu: 0.5`` two),
    not by spreading one trial over them.
    """

    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)

    @field_validator("gpu")
    @classmethod
    def _fraction(cls, v: float) -> float:
        if v > 1:
            raise ValueError(
                f"a trial trains on one GPU, so gpu must be <= 1, but got {v}; to use several "
                "GPUs run several trials at once: gpu: 1 gives each trial a whole GPU (one "
                "trial per GPU), a fraction packs trials (gpu: 0.5 runs two per GPU), and "
                "search.max_concurrent (or --laptop N) sets how many run together"
            )
        return v


class Spec(Strict):
    """A whole search spec (see the module docstring and the README's spec reference)."""

    experiment: str
    description: str = ""
    trainable: Trainable = "classify"
    dataset: DataConfig | None = None
    pretrain: PretrainSpec | None = None
    factors: dict[str, Any] = Field(
        default_factory=dict,
        description="the design's compared choices (FACTOR_NAMES), parsed like hyperparameters",
    )
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict, description="the other trial-config parameters, fixed or searched"
    )
    search: SearchSpec = Field(default_factory=SearchSpec)
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    tracking: list[str] = Field(default_factory=list)

    @field_validator("tracking", mode="before")
    @classmethod
    def _trackers(cls, v: Any) -> Any:
        v = [] if v is None else [v] if isinstance(v, str) else v
        if isinstance(v, list):
            for i, name in enumerate(v):
                if name not in TRACKERS:
                    hint = difflib.get_close_matches(str(name), TRACKERS, n=2)
                    did = f"; did you mean {', '.join(repr(h) for h in hint)}?" if hint else ""
                    raise ValueError(
                        f"[{i}]: unknown tracker {name!r}{did} Trackers: {', '.join(TRACKERS)}"
                    )
            if len(set(v)) != len(v):
                raise ValueError(f"each tracker may be named once, but got {v}")
        return v

    @field_validator("experiment")
    @classmethod
    def _name(cls, v: str) -> str:
        check_name(v)
        return v

    # Parsed parameters, filled by :func:`validate`.
    _params: list[Param] = []
    # The raw spec before ``${VAR}`` expansion, where known (see :func:`referenced`).
    _template: dict | None = None

    def __reduce__(self):
        """Pickle with the ``${VAR}`` references as written, never what they expanded to.

        Tune pickles the search's callbacks, which hold the spec, into ``tuner.pkl``;
        unpickling expands the references again from that process's environment.
        """
        return (_from_references, (referenced(self),))

    @property
    def params(self) -> list[Param]:
        """Every factor and hyperparameter, factors first, in file order."""
        return self._params

    @property
    def searched(self) -> list[Param]:
        """The parameters that take more than one value."""
        return [p for p in self._params if p.searched]

    @property
    def max_epochs(self) -> int:
        """The largest number of epochs any trial may run (ASHA's max_t)."""
        p = next((p for p in self._params if p.name == "epochs"), None)
        if p is None:
            return TrialConfig.model_fields["epochs"].default
        return int(max(p.values))


def check_name(name: str) -> None:
    """Experiment names are plain folder names: they cannot escape the results root."""
    if not NAME_RE.match(name) or ".." in name:
        raise ValueError(
            f"experiment name must match {NAME_RE.pattern} and contain no '..', but got {name!r}"
        )


# -------------------------------------------------------------------------------- validate
def _format_pydantic(err: ValidationError, raw: dict) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            parent_keys = _known_keys(e["loc"][:-1])
            hint = difflib.get_close_matches(str(e["loc"][-1]), parent_keys, n=3)
            did = f"; did you mean {', '.join(repr(h) for h in hint)}?" if hint else ""
            msg = f"unknown key{did} Allowed here: {', '.join(parent_keys)}"
        elif "input" in e and e["type"] not in ("missing",):
            msg = f"{msg} (got {e['input']!r})"
        lines.append(f"{loc}: {msg}" if loc else msg)
    return "\n".join(lines)


def _known_keys(loc: tuple) -> list[str]:
    model: Any = Spec
    for part in loc:
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return []
        ann = field.annotation
        candidates = [ann, *typing.get_args(ann)]
        model = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
        if model is None:
            return []
    return list(model.model_fields)


@functools.cache
def _adapter(name: str) -> TypeAdapter:
    """A validator for one TrialConfig field, with its constraints (built once)."""
    field = TrialConfig.model_fields[name]
    annotated = typing.Annotated[(field.annotation, *field.metadata)] if field.metadata else None
    return TypeAdapter(annotated or field.annotation)


def _check_value(path: str, name: str, value: Any) -> None:
    """Validate one candidate value of a parameter against TrialConfig and the registries."""
    if name == "model":
        if is_timm(value):
            if installed("timm"):  # without timm: validate() reports it where the run needs it
                try:
                    check_timm_name(value)
                except ValueError as err:
                    raise SpecError(f"{path}: {err}") from None
            return
        from trainables.models import available_models  # imports torch: only when needed

        known = available_models()
        if value not in known:
            hint = difflib.get_close_matches(str(value), known, n=3)
            did = f"; did you mean {', '.join(repr(h) for h in hint)}?" if hint else ""
            raise SpecError(f"{path}: unknown model {value!r}{did}")
        return
    if name == "augmentation":
        if value in AUGMENTATIONS:
            return
        hint = difflib.get_close_matches(str(value), AUGMENTATIONS, n=2)
        did = f"; did you mean {', '.join(repr(h) for h in hint)}?" if hint else ""
        raise SpecError(f"{path}: unknown augmentation {value!r}{did} Known: {AUGMENTATIONS}")
    if name == "weights":
        if value in (None, "none", "imagenet", "pretrain") or str(value).startswith("imagenet:"):
            return
        if not Path(str(value)).expanduser().is_file():
            raise SpecError(
                f"{path}: weights must be 'imagenet', 'imagenet:<ENUM>', 'pretrain', 'none' or "
                f"an existing checkpoint file, but {str(value)!r} does not exist"
            )
        return
    field = TrialConfig.model_fields[name]
    try:
        _adapter(name).validate_python(value)
    except ValidationError as err:
        msg = err.errors()[0]["msg"]
        raise SpecError(f"{path}: {msg} (got {value!r}; default {field.default!r})") from None


def validate(raw: dict, *, check_data: bool = True) -> Spec:
    """Turn a raw spec mapping into a :class:`Spec`, or raise :class:`SpecError`.

    Args:
        raw: The parsed YAML (after overrides and variable expansion).
        check_data: Also check what the run needs on this machine: that the dataset root
            exists and holds the named classes, and that the optional packages the spec
            names (trackers, timm) are installed.
    """
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as err:
        raise SpecError(_format_pydantic(err, raw)) from None
    params: list[Param] = []
    for section in ("factors", "hyperparameters"):
        for name, value in getattr(spec, section).items():
            if name in {p.name for p in params}:
                raise SpecError(
                    f"{section}.{name}: {name} is set twice (factors and hyperparameters)"
                )
            param = _parse_param(f"{section}.{name}", str(name), value)
            if param.kind in ("fixed", "choice"):
                for i, v in enumerate(param.values):
                    where = f"{section}.{name}" + (f"[{i}]" if param.kind == "choice" else "")
                    _check_value(where, param.name, v)
            else:
                for v in param.values:
                    _check_value(f"{section}.{name}.{param.kind}", param.name, v)
            params.append(param)
    names = {p.name for p in params}
    for p in params:
        for k in p.when:
            if k not in names:
                raise SpecError(
                    f"{p.name}.when: {k!r} is not a factor or hyperparameter of this spec"
                )
    spec._params = params
    _check_search(spec)
    if check_data:
        _check_installed(spec)
    if spec.trainable == "classify":
        if spec.dataset is None:
            raise SpecError("dataset: required for the classify trainable (preset, root, ...)")
        if check_data:
            _check_dataset("dataset", spec.dataset)
        if "pretrain" in _values(spec, "weights"):
            if spec.pretrain is None:
                raise SpecError("factors.weights: 'pretrain' needs a pretrain: section")
            if check_data:
                _check_dataset("pretrain.dataset", spec.pretrain.dataset)
    return spec


def _values(spec: Spec, name: str) -> tuple:
    p = next((p for p in spec.params if p.name == name), None)
    return () if p is None or p.kind not in ("fixed", "choice") else p.values


def _check_search(spec: Spec) -> None:
    names = {p.name for p in spec.params}
    for i, rule in enumerate(spec.search.exclude):
        for k in rule:
            if k not in names:
                raise SpecError(f"search.exclude[{i}].{k}: not a factor or hyperparameter")
    for i, point in enumerate(spec.search.points):
        for k in point:
            if k not in names:
                raise SpecError(f"search.points[{i}].{k}: not a factor or hyperparameter")
    if spec.search.exclude and spec.search.algorithm != "grid":
        raise SpecError("search.exclude: only for algorithm 'grid' (it removes grid cells)")
    if spec.search.points and spec.search.algorithm != "optuna":
        raise SpecError("search.points: only for algorithm 'optuna' (grid runs every cell)")
    if spec.scheduler.type == "asha" and spec.scheduler.grace_period > spec.max_epochs:
        raise SpecError(
            f"scheduler.grace_period: must be <= the most epochs a trial runs "
            f"({spec.max_epochs}), but got {spec.scheduler.grace_period}"
        )
    if spec.search.algorithm == "grid":
        ranged = [p for p in spec.params if p.kind in RANGE_KINDS]
        if ranged:
            p = ranged[0]
            section = "factors" if p.name in spec.factors else "hyperparameters"
            raise SpecError(
                f"{section}.{p.name}: search.algorithm 'grid' needs a list of values, but "
                f"{p.name} is a {p.kind} range; list the values or use algorithm 'optuna'"
            )
        bound = grid_bound(spec)
        if bound > MAX_TRIALS:
            parts = [f"{p.name} {len(p.values)}" for p in spec.params if p.kind == "choice"]
            if not any(p.name == "seed" for p in spec.params):
                parts.append(f"seeds {len(spec.search.seed_list)}")
            raise SpecError(
                f"search: the grid would expand to up to {bound:,} trials "
                f"({' x '.join(parts)}); the limit is {MAX_TRIALS:,} trials: list fewer "
                "values, exclude cells or use algorithm 'optuna' with num_samples"
            )
    weights = _values(spec, "weights")
    transfers = _values(spec, "transfer") or (TrialConfig.model_fields["transfer"].default,)
    if weights and not any(map(has_weights, weights)) and any(t != SCRATCH for t in transfers):
        raise SpecError(
            "factors.weights: transfer 'frozen' / 'finetune' need pretrained weights "
            "('imagenet', 'pretrain' or a checkpoint), but weights is only 'none'; to train "
            "from scratch only, also set factors.transfer=scratch"
        )
    if not weights and any(t != SCRATCH for t in transfers) and spec.trainable == "classify":
        raise SpecError(
            "factors.weights: transfer 'frozen' / 'finetune' need a weights factor "
            "('imagenet', 'pretrain' or a checkpoint path)"
        )


def _check_installed(spec: Spec) -> None:
    """The optional packages the spec needs (trackers, timm) are installed (extra named)."""
    for i, name in enumerate(spec.tracking):
        for message in missing([name]):
            raise SpecError(f"tracking[{i}]: {message}")
    param = next((p for p in spec.params if p.name == "model"), None)
    if param is None or installed("timm"):
        return
    section = "factors" if "model" in spec.factors else "hyperparameters"
    for i, value in enumerate(param.values):
        if is_timm(value):
            where = f"{section}.model" + (f"[{i}]" if param.kind == "choice" else "")
            raise SpecError(f"{where}: {missing_message('timm', f'model {value!r}')}")


def _check_dataset(path: str, data: DataConfig) -> None:
    from trainables.data.dataset import scan_config

    if data.preset == "synthetic":
        return
    try:
        scan_config(data)
    except FileNotFoundError as err:
        raise SpecError(f"{path}.root: {err}") from None
    except ValueError as err:
        raise SpecError(f"{path}.classes: {err}") from None


def _is_weights_file(value: Any) -> bool:
    return (
        isinstance(value, str)
        and value
        not in (
            "none",
            "imagenet",
            "pretrain",
        )
        and not value.startswith("imagenet:")
    )


def anchor_paths(raw: dict, base: str | Path) -> dict:
    """The raw spec with its relative paths made absolute against ``base``.

    A relative path must mean one folder for the whole search, but trials run elsewhere
    (Ray Tune gives each its own working folder; on a cluster every node unpacks the job in
    another folder), so the driver resolves them once, against its own working folder: the
    dataset roots and cache folders (of ``dataset`` and ``pretrain.dataset``) and weights
    files. ``~`` is expanded; ``s3://``-style URIs and absolute paths are kept.

    Args:
        raw: A raw spec mapping (after :func:`load_raw`); not modified.
        base: The folder relative paths are relative to.
    """

    def absolute(value: Any) -> Any:
        if not isinstance(value, str) or "://" in value:
            return value
        return os.path.normpath(Path(base) / Path(value).expanduser())

    def weights(value: Any) -> Any:
        if isinstance(value, list):
            return [weights(v) for v in value]
        if isinstance(value, dict):
            return {k: weights(v) if k == "values" else v for k, v in value.items()}
        return absolute(value) if _is_weights_file(value) else value

    out = dict(raw)
    datasets = [("dataset", out)]
    if isinstance(out.get("pretrain"), dict):
        out["pretrain"] = dict(out["pretrain"])
        datasets.append(("dataset", out["pretrain"]))
    for key, parent in datasets:
        if isinstance(parent.get(key), dict):
            data = parent[key] = dict(parent[key])
            for field in ("root", "cache_dir"):
                if data.get(field) is not None:
                    data[field] = absolute(data[field])
    for section in ("factors", "hyperparameters"):
        if isinstance(out.get(section), dict) and "weights" in out[section]:
            out[section] = {**out[section], "weights": weights(out[section]["weights"])}
    return out


def load(path: str | Path, overrides: list[str] = (), *, check_data: bool = True) -> Spec:
    """Read, override, expand and validate a spec file."""
    return validate(load_raw(path, overrides), check_data=check_data)


# ------------------------------------------------------------------------------ expansion
def flat_params(config: dict) -> dict:
    """Trial parameters from a Tune config (grid cells arrive nested under ``cell``)."""
    out = dict(config.get("cell") or {})
    out.update({k: v for k, v in config.items() if k != "cell"})
    return out


def normalize_cell(config: dict) -> dict:
    """Make transfer and weights consistent: ``weights: none`` is ``transfer: scratch``.

    The weights <-> transfer rule is :func:`trainables.config.transfer_problem`; here a
    cell that breaks it because of a factor crossing is folded into the ``scratch`` cell.
    """
    out = dict(config)
    if out.get("transfer") == SCRATCH or ("weights" in out and not has_weights(out["weights"])):
        out["transfer"], out["weights"] = SCRATCH, NO_WEIGHTS
    return out


def grid_bound(spec: Spec) -> int:
    """The most trials :func:`grid_cells` can return, computed without building the cells.

    The product of every parameter's number of values, times the seeds (exclusions and
    cells folded by :func:`normalize_cell` only make the grid smaller).
    """
    bound = 1
    for p in spec.params:
        bound *= len(p.values) if p.kind == "choice" else 1
    if not any(p.name == "seed" for p in spec.params):
        bound *= len(spec.search.seed_list)
    return bound


def grid_cells(spec: Spec) -> list[dict]:
    """Every cell of the full factorial x seeds (conditional parameters only where they apply).

    Cells that become identical after :func:`normalize_cell` (e.g. ``scratch`` crossed with
    several weights) are kept once.
    """
    base = [p for p in spec.params if not p.when]
    conditional = [p for p in spec.params if p.when]
    cells: list[dict] = []
    seen: set[str] = set()
    for combo in itertools.product(*(p.values for p in base)):
        cell = normalize_cell(dict(zip((p.name for p in base), combo, strict=True)))
        expansions = [cell]
        for p in conditional:
            expansions = [
                {**c, p.name: v} if p.applies(c) else c
                for c in expansions
                for v in (p.values if p.applies(c) else (None,))
            ]
        for c in expansions:
            c = normalize_cell(c)
            if any(_matches(c, rule) for rule in spec.search.exclude):
                continue
            key = repr(sorted(c.items(), key=lambda kv: kv[0]))
            if key not in seen:
                seen.add(key)
                cells.append(c)
    has_seed = any(p.name == "seed" for p in spec.params)
    if has_seed:
        return cells
    return [{**c, "seed": s} for c in cells for s in spec.search.seed_list]


def _matches(cell: dict, rule: dict) -> bool:
    return all(cell.get(k) in (v if isinstance(v, list) else [v]) for k, v in rule.items())


class OptunaSpace:
    """Define-by-run search space for Optuna (picklable, so Tune can snapshot the searcher).

    Suggests every non-fixed parameter in spec order, skipping conditional ones whose
    condition does not hold, and returns the fixed ones as constants.
    """

    def __init__(self, params: list[Param], seed: int):
        self.params, self.seed = params, seed

    def __call__(self, trial) -> dict:
        config: dict = {}
        constants: dict = {}
        for p in self.params:
            if not p.applies(config):
                continue
            if p.name == "weights" and config.get("transfer") == SCRATCH:  # normalize_cell's fold
                constants["weights"] = config["weights"] = NO_WEIGHTS
                continue
            values = p.values
            if p.name == "weights" and p.kind == "choice":
                values = tuple(v for v in values if has_weights(v)) or values
            if p.kind == "fixed" or (p.kind == "choice" and len(values) == 1):
                constants[p.name] = config[p.name] = values[0]
            elif p.kind == "choice":
                config[p.name] = trial.suggest_categorical(p.name, list(values))
            elif p.kind in ("uniform", "loguniform"):
                config[p.name] = trial.suggest_float(
                    p.name, float(values[0]), float(values[1]), log=p.kind == "loguniform"
                )
            else:
                config[p.name] = trial.suggest_int(
                    p.name, int(values[0]), int(values[1]), log=p.kind == "logint"
                )
        if "seed" not in config:
            constants["seed"] = self.seed
        return constants
