"""``tuner COMMAND ...``: one console script for every command of the project.

Each command is the ``main(argv)`` of a module that also runs as ``python -m MODULE``;
``tuner COMMAND --help`` shows that command's options (with their defaults and choices).
"""

from __future__ import annotations

import importlib
import sys

#: command -> (module whose ``main(argv)`` runs it, arguments put first, one-line summary).
COMMANDS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "init": ("tuner.init", (), "write a starter spec for a folder of images"),
    "run": ("tuner.run", (), "run a search from a spec (python -m tuner.run)"),
    "rank": ("tuner.rank", (), "rank an experiment's configurations (python -m tuner.rank)"),
    "report": ("tuner.report.__main__", (), "write the HTML / Markdown report"),
    "submit": ("tuner.submit", (), "submit a search to a Ray cluster, follow / stop jobs"),
    "inspect": (
        "trainables.data.__main__",
        ("inspect",),
        "summarise a dataset folder (python -m trainables.data inspect)",
    ),
    "download": (
        "trainables.data.__main__",
        ("download",),
        "fetch, verify and extract a public dataset (python -m trainables.data download)",
    ),
    "models": ("trainables.models", (), "parameters and MACs of models"),
    "train": ("trainables.classify", (), "train one configuration, without Ray"),
    "optuna": (
        "tuner.optuna_export",
        (),
        "write an experiment's Optuna study (optuna.db) for optuna-dashboard",
    ),
}


def usage() -> str:
    """The overview ``tuner`` and ``tuner --help`` print."""
    width = max(map(len, COMMANDS))
    lines = [
        "usage: tuner COMMAND [options]   (tuner COMMAND --help: the command's options)",
        "",
        "One console script for every command of the project; each is also a python -m module.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, _, summary) in COMMANDS.items()]
    lines += ["", "Start with your images: tuner init DIR, then tuner run <name>.yaml --laptop"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a command; exit status 2 for an unknown one."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        print(f"error: unknown command {command!r}{hint}\n\n{usage()}", file=sys.stderr)
        return 2
    module, first, _ = COMMANDS[command]
    return int(importlib.import_module(module).main([*first, *rest]) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
