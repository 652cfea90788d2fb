"""Experiment specs: one YAML file per figure or table of the papers, under ``configs/experiments/``.

A spec lists the **arms** (an arch of the model registry with config overrides, optionally swept over one setting),
the **training config** every arm starts from (a ``tttlm.train`` config as plain data), the **evaluations** run on
every trained model, and the paper's **claims**, each with how it is judged from the measured numbers. Any value
anywhere may be given per scale as a mapping ``{cpu: ..., paper: ...}``; ``load_spec(name, scale)`` resolves them.

Top-level keys::

    name, title, paper, summary   what the experiment reproduces (paper: the paper and its figure/table)
    gpus                          processes of the paper scale (torchrun --nproc-per-node); 1 at the cpu scale
    vocab_size                    the vocabulary the plan counts FLOPs with (training uses the data's tokenizer)
    train_config                  the base training config (sections model, data, train, optim, eval, ...)
    ratios                        optional: window_over_mini_batch (k / b of every TTT-E2E arm, checked)
    arms                          list of {name, arch, label, overrides, settings, sweep, train, init_from,
                                  requires, eval_overrides}
    evaluations                   list of {kind, ...}; kinds and their keys in ``EVALUATION_KEYS``
    claims                        list of {id, source, claim, paper, a, b, op, expect, threshold, tolerance, note}

An arm's ``settings`` are training-config changes as ``KEY: VALUE`` (``train.steps: 100``), ``sweep`` is
``{key, values, symbol, also}`` (one run per value of the dotted config ``key``, e.g. ``data.seq_len`` or
``model.overrides.sliding_window``; ``also``: ``{KEY: [one value per point]}`` for keys that change with it),
``train: false`` marks an arm that is only timed (a freshly initialised model),
``init_from: {arm, at}`` starts each run from the final weights of point ``at`` (an index into its sweep values) of
another arm, ``requires`` names features the arm needs (``tttlm.experiments.requirements``), and
``eval_overrides`` are model config fields changed when the trained model is loaded for evaluation (e.g. an inner
learning rate switched on for dynamic evaluation).

A claim's ``a`` (and optional ``b``) is ``{arm, metric, at}``: the metric of that arm's run at sweep index ``at``
(default: its only point); a metric name ends in ``@<point>`` where the point is a number, a bin ``lo-hi``, or one of
``first``, ``last``, or a 0-based index among that metric's points (scale-independent). ``op`` is ``difference``
(a − b, paired by seed; default) or ``ratio`` (a / b); without ``b`` the claim is about ``a`` itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tttlm.bench.timing import CLOCKS
from tttlm.experiments.requirements import REQUIREMENTS
from tttlm.experiments.verdicts import EXPECTATIONS

SCALES = ("cpu", "paper")
SPEC_DIR = Path(__file__).resolve().parents[2] / "configs" / "experiments"
OPS = ("difference", "ratio")
# keys of each evaluation kind: required, then optional with their defaults
EVALUATION_KEYS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "ppl": (("contexts",), {"documents": 8}),
    "by_position": (("length", "bins"), {"documents": 8, "reference": None}),
    "forward_time": (("contexts",), {"repeats": 3, "batch": 1, "clock": "auto"}),
    "train_time": (("contexts",), {"repeats": 3, "batch": 1, "clock": "auto"}),
    "niah": (("lengths",), {"tasks": ["s-niah-1"], "samples": 20}),
}
# a timing's clock: "auto" is the CPU time at one thread on the CPU, else the wall clock (evaluations.timing_clock)
TIMING_CLOCKS = ("auto", *CLOCKS)
# the metric base names each kind measures (niah: one per task, niah-<task>)
METRICS = {"ppl": {"ppl", "loss"}, "by_position": {"loss"}, "forward_time": {"forward_ms"}, "train_time": {"train_ms"}}
_TOP_KEYS = {"name", "title", "paper", "summary", "gpus", "vocab_size", "train_config", "ratios", "arms"}
_TOP_KEYS |= {"evaluations", "claims"}
_ARM_KEYS = {"name", "arch", "label", "overrides", "settings", "sweep", "train", "init_from", "requires"}
_ARM_KEYS |= {"eval_overrides"}
_CLAIM_KEYS = {"id", "source", "claim", "paper", "a", "b", "op", "expect", "threshold", "tolerance", "note"}


class SpecError(ValueError):
    """An experiment spec is invalid; the message names the file, the key and the fix."""


@dataclass(frozen=True)
class Sweep:
    """One run per value of the dotted training-config ``key``; ``symbol`` labels the points (e.g. ``T``).

    ``also``: other dotted keys that change with it, one value per point (e.g. RoPE's θ raised with the context).
    """

    key: str
    values: tuple[Any, ...]
    symbol: str
    also: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def settings(self, index: int) -> dict[str, Any]:
        """Every config value of point ``index``: the swept key's and the ``also`` keys'."""
        return {self.key: self.values[index], **{key: values[index] for key, values in self.also.items()}}


@dataclass(frozen=True)
class Arm:
    """One model of the comparison (see the module docstring for the keys)."""

    name: str
    arch: str
    label: str
    overrides: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    sweep: Sweep | None = None
    train: bool = True
    init_from: tuple[str, int] | None = None
    requires: tuple[str, ...] = ()
    eval_overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def points(self) -> tuple[Any, ...]:
        """The sweep values, or ``(None,)`` for an arm that is one run per seed."""
        return self.sweep.values if self.sweep else (None,)


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of every trained (or timed) model: ``kind`` and its settings (``EVALUATION_KEYS``)."""

    kind: str
    settings: dict[str, Any]


@dataclass(frozen=True)
class MetricRef:
    """The metric ``metric`` of arm ``arm`` at sweep index ``at`` (None: the arm's only point)."""

    arm: str
    metric: str
    at: int | None = None


@dataclass(frozen=True)
class Claim:
    """A claim of the paper and how it is judged (``tttlm.experiments.verdicts``)."""

    id: str
    source: str
    text: str
    paper: str | None
    a: MetricRef
    b: MetricRef | None
    op: str
    expect: str
    threshold: float
    tolerance: float
    note: str | None


@dataclass(frozen=True)
class Spec:
    """An experiment at one scale."""

    name: str
    title: str
    paper: str
    summary: str
    scale: str
    gpus: int
    vocab_size: int
    train_config: dict[str, Any]
    arms: tuple[Arm, ...]
    evaluations: tuple[Evaluation, ...]
    claims: tuple[Claim, ...]
    ratios: dict[str, Any]
    path: Path

    def arm(self, name: str) -> Arm:
        return next(a for a in self.arms if a.name == name)

    @property
    def trains(self) -> bool:
        return any(a.train for a in self.arms)


def at_scale(value: Any, scale: str, where: str = "") -> Any:
    """``value`` with every ``{cpu: ..., paper: ...}`` mapping replaced by its entry for ``scale``."""
    if isinstance(value, dict):
        if value and set(value) <= set(SCALES):
            if scale not in value:
                raise SpecError(f"{where or 'a value'} has no entry for scale {scale!r} (it has {', '.join(value)})")
            return at_scale(value[scale], scale, where)
        return {k: at_scale(v, scale, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [at_scale(v, scale, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def spec_names() -> list[str]:
    """The shipped experiments: the YAML files of ``configs/experiments/``, by name."""
    return sorted(p.stem for p in SPEC_DIR.glob("*.yaml"))


def spec_path(name: str | Path) -> Path:
    """The file of experiment ``name`` (a shipped name, or a path to a YAML file)."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    shipped = SPEC_DIR / f"{name}.yaml"
    if shipped.exists():
        return shipped
    raise SpecError(f"no experiment {str(name)!r}; choose one of {', '.join(spec_names())} (tttlm experiment --list)")


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError(f"{where} must be a mapping; got {value!r}")
    return value


def split_metric(name: str) -> tuple[str, str]:
    """A metric name as (base, point): ``loss@257-512`` → ("loss", "257-512"), ``val_loss`` → ("val_loss", "")."""
    base, at, point = name.rpartition("@")
    return (base, point) if at else (name, "")


def _known(raw: dict[str, Any], keys: set[str], where: str) -> None:
    unknown = sorted(set(raw) - keys)
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(keys))}")


def _text(raw: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise SpecError(f"{where}.{key} must be a non-empty string; got {value!r}")
    return value


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(f"{where} must be a positive integer; got {value!r}")
    return value


def _sweep(raw: Any, where: str) -> Sweep | None:
    if raw is None:
        return None
    raw = _mapping(raw, where)
    _known(raw, {"key", "values", "symbol", "also"}, where)
    values = raw.get("values")
    if not isinstance(values, list) or not values or len(set(map(repr, values))) != len(values):
        raise SpecError(f"{where}.values must be a non-empty list of distinct values; got {values!r}")
    key = _text(raw, "key", where)
    also = _mapping(raw.get("also") or {}, f"{where}.also")
    for other, other_values in also.items():
        if other == key or not isinstance(other_values, list) or len(other_values) != len(values):
            raise SpecError(
                f"{where}.also.{other} must be another key than {key} with a list of one value per point "
                f"({len(values)}); got {other_values!r}"
            )
    return Sweep(key, tuple(values), _text(raw, "symbol", where, key), {k: tuple(v) for k, v in also.items()})


def _entry(
    raw: Any, where: str, keys: set[str], id_key: str, what: str, taken: Sequence[str]
) -> tuple[dict[str, Any], str, str]:
    """A list entry checked for its keys and a unique ``id_key``: (the mapping, its id, where it is, by id)."""
    raw = _mapping(raw, where)
    _known(raw, keys, where)
    name = _text(raw, id_key, where)
    where = f"{what} {name!r}"
    if name in taken:
        raise SpecError(f"{where} is listed twice; {what} {id_key}s must be unique")
    return raw, name, where


def _arm(raw: Any, index: int, names: Sequence[str]) -> Arm:
    from tttlm.models import ARCHS

    raw, name, where = _entry(raw, f"arms[{index}]", _ARM_KEYS, "name", "arm", names)
    arch = _text(raw, "arch", where)
    if arch not in ARCHS:
        raise SpecError(f"{where}: unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    requires = raw.get("requires") or []
    if not isinstance(requires, list) or any(r not in REQUIREMENTS for r in requires):
        raise SpecError(f"{where}.requires must be a list of {', '.join(REQUIREMENTS)}; got {requires!r}")
    init_from = None
    if raw.get("init_from") is not None:
        source = _mapping(raw["init_from"], f"{where}.init_from")
        _known(source, {"arm", "at"}, f"{where}.init_from")
        if source.get("arm") not in names:
            raise SpecError(f"{where}.init_from.arm must name an arm listed before it; got {source.get('arm')!r}")
        at = source.get("at", 0)
        if not is_index(at, 1 << 30):
            raise SpecError(f"{where}.init_from.at must be an index into that arm's sweep values; got {at!r}")
        init_from = (source["arm"], at)
    train = raw.get("train", True)
    if not isinstance(train, bool):
        raise SpecError(f"{where}.train must be true or false; got {train!r}")
    return Arm(
        name=name,
        arch=arch,
        label=_text(raw, "label", where, name),
        overrides=_mapping(raw.get("overrides"), f"{where}.overrides"),
        settings=_mapping(raw.get("settings"), f"{where}.settings"),
        sweep=_sweep(raw.get("sweep"), f"{where}.sweep"),
        train=train,
        init_from=init_from,
        requires=tuple(requires),
        eval_overrides=_mapping(raw.get("eval_overrides"), f"{where}.eval_overrides"),
    )


def _evaluation(raw: Any, index: int) -> Evaluation:
    where = f"evaluations[{index}]"
    raw = dict(_mapping(raw, where))
    kind = raw.pop("kind", None)
    if kind not in EVALUATION_KEYS:
        raise SpecError(f"{where}.kind must be one of {', '.join(EVALUATION_KEYS)}; got {kind!r}")
    required, optional = EVALUATION_KEYS[kind]
    _known(raw, set(required) | set(optional), f"{where} ({kind})")
    missing = [k for k in required if k not in raw]
    if missing:
        raise SpecError(f"{where} ({kind}) needs {', '.join(missing)}")
    settings = {**optional, **raw}
    for key in ("contexts", "lengths"):
        if key in settings:
            values = settings[key]
            if values != "train" and (
                not isinstance(values, list) or not values or not all(_is_positive_int(v) for v in values)
            ):
                raise SpecError(f"{where}.{key} must be a non-empty list of positive integers (or 'train')")
    if "clock" in settings and settings["clock"] not in TIMING_CLOCKS:
        raise SpecError(f"{where}.clock must be one of {', '.join(TIMING_CLOCKS)}; got {settings['clock']!r}")
    if kind == "by_position":
        length = _positive_int(settings["length"], f"{where}.length")
        bins = settings["bins"]
        if not isinstance(bins, list) or not bins:
            raise SpecError(f"{where}.bins must be a non-empty list of [first, last] token indices (1-based)")
        for pair in bins:
            if not (isinstance(pair, list) and len(pair) == 2 and all(_is_positive_int(v) for v in pair)) or not (
                pair[0] <= pair[1] <= length
            ):
                raise SpecError(f"{where}.bins: {pair!r} must be [first, last] with 1 <= first <= last <= {length}")
    return Evaluation(kind, settings)


def is_index(value: Any, length: int) -> bool:
    """Whether ``value`` is an integer index (negative from the end) into a sequence of ``length``."""
    return isinstance(value, int) and not isinstance(value, bool) and -length <= value < length


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _ref(raw: Any, where: str, arms: dict[str, Arm]) -> MetricRef:
    raw = _mapping(raw, where)
    _known(raw, {"arm", "metric", "at"}, where)
    arm = arms.get(raw.get("arm"))
    if arm is None:
        raise SpecError(f"{where}.arm must be one of the arms ({', '.join(arms)}); got {raw.get('arm')!r}")
    at = raw.get("at")
    if at is not None and not is_index(at, len(arm.points)):
        count = len(arm.points)
        raise SpecError(f"{where}.at must be an index into arm {arm.name!r}'s {count} sweep values; got {at!r}")
    if at is None and arm.sweep:
        raise SpecError(f"{where}: arm {arm.name!r} is swept over {arm.sweep.key}; say which point with at (e.g. -1)")
    return MetricRef(arm.name, _text(raw, "metric", where), at)


def _number(raw: dict[str, Any], key: str, where: str, default: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(f"{where}.{key} must be a number; got {value!r}")
    return float(value)


def _claim(raw: Any, index: int, arms: dict[str, Arm], ids: Sequence[str]) -> Claim:
    raw, claim_id, where = _entry(raw, f"claims[{index}]", _CLAIM_KEYS, "id", "claim", ids)
    op, expect = raw.get("op", "difference"), raw.get("expect")
    if op not in OPS:
        raise SpecError(f"{where}.op must be one of {', '.join(OPS)}; got {op!r}")
    if expect not in EXPECTATIONS:
        raise SpecError(f"{where}.expect must be one of {', '.join(EXPECTATIONS)}; got {expect!r}")
    tolerance = _number(raw, "tolerance", where, 0.0)
    if expect == "≈" and tolerance <= 0:
        raise SpecError(f"{where}: expect ≈ needs a tolerance > 0 (how close counts as equal)")
    paper = raw.get("paper")
    return Claim(
        id=claim_id,
        source=_text(raw, "source", where),
        text=_text(raw, "claim", where),
        paper=None if paper is None else str(paper),
        a=_ref(raw.get("a"), f"{where}.a", arms),
        b=None if raw.get("b") is None else _ref(raw["b"], f"{where}.b", arms),
        op=op,
        expect=expect,
        threshold=_number(raw, "threshold", where, 1.0 if op == "ratio" else 0.0),
        tolerance=tolerance,
        note=raw.get("note"),
    )


def parse_spec(raw: Any, scale: str, path: Path) -> Spec:
    """A validated ``Spec`` at ``scale`` from a parsed YAML document; ``SpecError`` names what is wrong."""
    if scale not in SCALES:
        raise SpecError(f"scale must be one of {', '.join(SCALES)}; got {scale!r}")
    if not isinstance(raw, dict):
        raise SpecError(f"{path} must hold a mapping (keys name, arms, evaluations, claims, ...)")
    _known(raw, _TOP_KEYS, str(path))
    try:
        raw = at_scale(raw, scale)
    except SpecError as error:
        raise SpecError(f"{path}: {error}") from None
    where = path.stem
    arms: dict[str, Arm] = {}
    for i, item in enumerate(raw.get("arms") or []):
        arm = _arm(item, i, list(arms))
        arms[arm.name] = arm
    if not arms:
        raise SpecError(f"{path}: arms must list at least one arm")
    for arm in arms.values():
        if arm.init_from and not is_index(arm.init_from[1], len(arms[arm.init_from[0]].points)):
            raise SpecError(f"arm {arm.name!r}: init_from.at {arm.init_from[1]} is not a point of {arm.init_from[0]!r}")
    evaluations = tuple(_evaluation(item, i) for i, item in enumerate(raw.get("evaluations") or []))
    claims: list[Claim] = []
    for i, item in enumerate(raw.get("claims") or []):
        claims.append(_claim(item, i, arms, [c.id for c in claims]))
    produced = metric_names(evaluations)
    for claim in claims:
        for ref in (claim.a, claim.b):
            base = ref and split_metric(ref.metric)[0]
            if ref and base not in produced:
                raise SpecError(
                    f"claim {claim.id!r}: no evaluation of {path.name} measures {ref.metric!r}; its metrics are "
                    f"{', '.join(sorted(produced))} (with @<point>, @first, @last or @<index>)"
                )
    if not claims:
        raise SpecError(f"{path}: claims must list at least one claim of the paper")
    return Spec(
        name=_text(raw, "name", where),
        title=_text(raw, "title", where),
        paper=_text(raw, "paper", where),
        summary=_text(raw, "summary", where),
        scale=scale,
        gpus=_positive_int(raw.get("gpus", 1), f"{where}.gpus"),
        vocab_size=_positive_int(raw.get("vocab_size", 4096), f"{where}.vocab_size"),
        train_config=_mapping(raw.get("train_config"), f"{where}.train_config"),
        arms=tuple(arms.values()),
        evaluations=evaluations,
        claims=tuple(claims),
        ratios=_mapping(raw.get("ratios"), f"{where}.ratios"),
        path=path,
    )


def metric_names(evaluations: Sequence[Evaluation]) -> set[str]:
    """The metric base names the evaluations (and every training run) produce (``tttlm.experiments.evaluations``)."""
    names = {"val_loss", "tokens_per_s"}
    for evaluation in evaluations:
        if evaluation.kind == "niah":
            names |= {f"niah-{task}" for task in evaluation.settings["tasks"]}
        else:
            names |= METRICS[evaluation.kind]
    return names


def load_spec(name: str | Path, scale: str = "cpu") -> Spec:
    """Read and validate experiment ``name`` (a shipped name or a YAML path) at ``scale``."""
    path = spec_path(name)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SpecError(f"{path} is not valid YAML: {error}") from None
    return parse_spec(raw, scale, path)
