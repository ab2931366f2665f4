"""Write the report: the HTML page, the Markdown copy and the figure files, atomically."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from tuner.report import html as H
from tuner.report.experiment import NoResultsError, find_experiments, load_experiment, slug_of
from tuner.report.html import Section
from tuner.report.overview import comparison_section
from tuner.report.sections import demote, report_sections

REPORT_FILE, MARKDOWN_FILE, FIGURE_DIR = "report.html", "report.md", "figures"


def _unique_names(paths: list[Path]) -> list[str]:
    """Experiment names, with the parent folder where two folders share a name."""
    names = [p.name for p in paths]
    return [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in paths]


def _default_out(paths: Sequence[str | Path], experiments: list[Path]) -> Path:
    """``<path>/report`` for one path, else ``report/`` in the paths' common folder."""
    if len(paths) == 1:
        return Path(paths[0]).expanduser().resolve() / "report"
    common = Path(os.path.commonpath([str(p.resolve()) for p in experiments]))
    return common / "report"


def _write(out_dir: Path, files: dict[str, bytes]) -> None:
    """Write the report files into a temporary folder, then move each into ``out_dir``.

    Every file replaces its old version in one rename, ``report.html`` last, so a reader
    never sees a half-written page; the old ``figures/`` folder is swapped out whole.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".report-", dir=out_dir))
    try:
        for name, data in files.items():
            path = tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        (tmp / FIGURE_DIR).mkdir(exist_ok=True)
        old = out_dir / FIGURE_DIR
        if old.exists():
            os.replace(old, tmp / ".old-figures")
        os.replace(tmp / FIGURE_DIR, old)
        for name in sorted(files, key=lambda n: n == REPORT_FILE):
            if not name.startswith(f"{FIGURE_DIR}/"):
                os.replace(tmp / name, out_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_report(
    paths: Sequence[str | Path] | str | Path,
    out_dir: str | Path | None = None,
    *,
    figures: bool = True,
) -> Path:
    """Write ``report.html`` (self-contained), ``report.md`` and ``figures/*.png``.

    Args:
        paths: Experiment folders (``results/<experiment>``) and/or results roots; a root
            contributes every experiment under it. More than one experiment adds a
            comparison section.
        out_dir: Where to write (default: ``<path>/report/`` for one path, else
            ``<common parent>/report/``).
        figures: Draw section 5 (needs the dataset and the best checkpoint; slower).

    Returns:
        The path of ``report.html``.

    Raises:
        NoResultsError: A path holds no results.
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    if not paths:
        raise NoResultsError("no results path given")
    dirs = [d for p in paths for d in find_experiments(p)]
    dirs = list(dict.fromkeys(d.resolve() for d in dirs))
    experiments = [load_experiment(d, n) for d, n in zip(dirs, _unique_names(dirs), strict=True)]
    out = Path(out_dir).expanduser().resolve() if out_dir else _default_out(paths, dirs)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    total = sum(len(e.trials) for e in experiments)
    if len(experiments) == 1:
        exp = experiments[0]
        title = f"tuner report: {exp.name}"
        sections = report_sections(exp, figures)
    else:
        title = f"tuner report: {len(experiments)} experiments"
        sections = [comparison_section(experiments)]
        for exp in experiments:
            parts = [demote(s, slug_of(exp)) for s in report_sections(exp, figures)]
            sections.append(Section(f"Experiment {exp.name}", parts, 2, f"exp-{slug_of(exp)}"))
    subtitle = (
        f"Generated {stamp} from {', '.join(f'`{e.dir}`' for e in experiments)} "
        f"({total} trials). Readable while a search runs: run it again to refresh."
    )
    seen: set[str] = set()
    for img in H.images(sections):  # figure file names must not collide (slugged names)
        base, k = img.name, 1
        while img.name in seen:
            k += 1
            img.name = f"{base}-{k}"
        seen.add(img.name)
    page = H.render_html(title, subtitle, sections)
    markdown = H.render_markdown(title, subtitle, sections, FIGURE_DIR)
    files = {f"{FIGURE_DIR}/{img.name}.png": img.png for img in H.images(sections)}
    files[MARKDOWN_FILE] = markdown.encode()
    files[REPORT_FILE] = page.encode()
    _write(out, files)
    return out / REPORT_FILE
