"""Optuna's TPE without repeats (:mod:`tuner.tune.distinct`), driven as Tune drives it."""

from __future__ import annotations

import optuna
import pytest

from tuner.spec import OptunaSpace, validate
from tuner.tune.distinct import DistinctOptunaSearch, finite_space, key
from tuner.tune.scale import tpe_sampler

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _space(**hyperparameters) -> OptunaSpace:
    spec = validate(
        {
            "experiment": "e",
            "trainable": "toy",
            "hyperparameters": {"epochs": 2, **hyperparameters},
            "search": {"algorithm": "optuna", "num_samples": 50},
        }
    )
    return OptunaSpace(spec.params, spec.search.seed_list[0])


def _search(space, seed: int = 0) -> DistinctOptunaSearch:
    return DistinctOptunaSearch(
        space, metric="val_acc", mode="max", sampler=tpe_sampler(seed), draw_seed=seed
    )


def _score(config: dict) -> float:
    """A fixed landscape: a larger lr and batch size are better."""
    return round(config["lr"] * 10 + config["batch_size"] / 1000, 6)


def _run(search, n: int, concurrent: int = 1, first: int = 0) -> list:
    """Tune's calls: ``concurrent`` trials in flight, each completed with its score; the
    suggestions in order (configs, or ``FINISHED``); trial ids from ``t{first}``."""
    out, running = [], []
    for i in range(first, first + n):
        config = search.suggest(f"t{i}")
        out.append(config)
        if not isinstance(config, dict):
            break
        running.append((f"t{i}", config))
        if len(running) == concurrent:
            tid, cfg = running.pop(0)
            search.on_trial_complete(tid, {"val_acc": _score(cfg), "training_iteration": 2})
    return out


LR_BATCH = {"lr": [1e-3, 1e-2, 3e-2], "batch_size": [16, 64]}


def test_finite_space_walks_choices_and_conditions_and_refuses_floats():
    cells = finite_space(
        _space(
            model=["tiny_cnn", "resnet18"],
            mlp_hidden={"values": [64, 128], "when": {"model": "resnet18"}},
            lr=1e-3,
        )
    )
    assert sorted(key(c) for c in cells) == sorted(
        [
            (("model", "tiny_cnn"),),
            (("mlp_hidden", 64), ("model", "resnet18")),
            (("mlp_hidden", 128), ("model", "resnet18")),
        ]
    )
    assert finite_space(_space(lr={"loguniform": [1e-4, 1e-1]}, batch_size=[16, 64])) is None
    assert len(finite_space(_space(**LR_BATCH))) == 6
    assert finite_space(_space(**LR_BATCH), limit=5) is None


@pytest.mark.parametrize("concurrent", [1, 3])
def test_every_configuration_runs_once_then_the_search_is_finished(concurrent):
    search = _search(_space(**LR_BATCH))
    out = _run(search, 40, concurrent)
    configs = [c for c in out if isinstance(c, dict)]
    assert len(configs) == 6 and out[-1] == "FINISHED"
    assert len({key({k: c[k] for k in LR_BATCH}) for c in configs}) == 6
    assert all(c["seed"] == 0 and c["epochs"] == 2 for c in configs)
    # TPE did suggest repeats: they were told to the study, not run
    assert search.repeats_told > 0
    told = search._ot_study.get_trials(deepcopy=False)
    assert len(told) == 6 + search.repeats_told


def test_plain_optuna_search_repeats_what_the_distinct_one_does_not():
    """The same sampler and landscape through Ray's plain ``OptunaSearch`` run repeats."""
    from ray.tune.search.optuna import OptunaSearch

    space = _space(**LR_BATCH)
    plain = OptunaSearch(space, metric="val_acc", mode="max", sampler=tpe_sampler(0))
    configs = _run(plain, 12)
    assert len({key({k: c[k] for k in LR_BATCH}) for c in configs}) < 12
    distinct = _run(_search(space), 12)
    assert len(distinct) == 7 and distinct[-1] == "FINISHED"


def test_a_restored_searcher_keeps_what_has_run(tmp_path):
    space = _space(**LR_BATCH, weight_decay=[0.0, 1e-3])
    first = _search(space)
    before = [c for c in _run(first, 5) if isinstance(c, dict)]
    first.save(str(tmp_path / "searcher.pkl"))
    again = _search(space)
    again.restore(str(tmp_path / "searcher.pkl"))
    after = [c for c in _run(again, 40, first=5) if isinstance(c, dict)]
    names = [*LR_BATCH, "weight_decay"]
    keys = [key({k: c[k] for k in names}) for c in before + after]
    assert len(before) == 5 and len(keys) == 12 and len(set(keys)) == 12


def test_a_continuous_space_is_never_finished_by_the_searcher():
    search = _search(_space(lr={"loguniform": [1e-4, 1e-1]}, batch_size=[16, 64]))
    out = _run(search, 15)
    assert all(isinstance(c, dict) for c in out) and len({c["lr"] for c in out}) == 15


def test_a_failed_or_pruned_configuration_is_not_run_again():
    search = _search(_space(lr=[1e-3, 1e-2, 3e-2], batch_size=16))
    failed, pruned = search.suggest("t0"), search.suggest("t1")
    search.on_trial_complete("t0", None, error=True)
    search.on_trial_complete("t1", None)
    rest = _run(search, 10, first=2)
    assert rest[-1] == "FINISHED" and len(rest) == 2
    assert len({failed["lr"], pruned["lr"], rest[0]["lr"]}) == 3
    states = {t.state.name for t in search._ot_study.get_trials(deepcopy=False)}
    assert {"FAIL", "PRUNED", "COMPLETE"} <= states
