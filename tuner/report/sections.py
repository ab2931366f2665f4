"""The sections of one experiment's report, in order."""

from __future__ import annotations

from tuner.report.charts import pictures_section, plots_section
from tuner.report.experiment import Experiment
from tuner.report.html import Section
from tuner.report.overview import overview_section
from tuner.report.protocol import protocol_section
from tuner.report.rankings import architecture_section, factors_section, hyperparameters_section


def report_sections(exp: Experiment, figures: bool = True) -> list[Section]:
    """Sections 1–6 of one experiment (level 2), preceded by an overview."""
    return [
        Section("Overview", overview_section(exp)),
        architecture_section(exp),
        factors_section(exp),
        hyperparameters_section(exp),
        plots_section(exp),
        pictures_section(exp, figures),
        protocol_section(exp),
    ]


def demote(section: Section, prefix: str) -> Section:
    """A section one level deeper, with anchors made unique by ``prefix``."""
    blocks = [demote(b, prefix) if isinstance(b, Section) else b for b in section.blocks]
    return Section(section.title, blocks, section.level + 1, f"{prefix}-{section.anchor}")
