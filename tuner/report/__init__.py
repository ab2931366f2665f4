"""``tuner.report``: one self-contained HTML page (and Markdown) per experiment or comparison.

:func:`build_report` reads results only through :func:`tuner.results.load` and the saved
``spec.yaml`` / ``manifest.csv``, so it works while a search is still running (partial
tables; early-stopped, failed and running trials are counted and shown as "n/a"). Sections:

1. architecture ranking (paper 2's Table 2);
2. training factors: scratch, + augmentation, frozen, fine-tuned (paper 1's Tables 1–3);
3. hyperparameters (paper 1's Table 4) and Optuna's parameter importances;
4. plots: accuracy vs MACs with the Pareto front, validation curves, ASHA rungs, confusion;
5. paper 1's pictures: augmented views (Figs. 4–5) and feature maps (Figs. 6–7);
6. the protocol: data, split, search, scheduler, resources, versions.

Several experiments (several paths, or a results root holding several) get a comparison
section first. ``python -m tuner.report DIR [DIR ...] [--out DIR]`` is the CLI.

Modules, by job: :mod:`~tuner.report.experiment` (loading), :mod:`~tuner.report.overview`,
:mod:`~tuner.report.rankings`, :mod:`~tuner.report.charts` and :mod:`~tuner.report.protocol`
(the sections), :mod:`~tuner.report.sections` (their order), :mod:`~tuner.report.build`
(writing the files); :mod:`~tuner.report.tables`, :mod:`~tuner.report.plots`,
:mod:`~tuner.report.figures` and :mod:`~tuner.report.html` are the numbers, the
matplotlib plots, the pictures from a checkpoint and the rendering they use.
"""

from tuner.report.build import build_report
from tuner.report.experiment import Experiment, NoResultsError, find_experiments, load_experiment
from tuner.report.sections import report_sections

__all__ = [
    "Experiment",
    "NoResultsError",
    "build_report",
    "find_experiments",
    "load_experiment",
    "report_sections",
]
