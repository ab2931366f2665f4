"""``python -m tuner.submit SPEC``: run a search as a Ray job on a cluster, and follow it.

A thin layer over Ray's job submission client. The spec is validated here first (exit
status 2, nothing submitted), then ``python -m tuner.run SPEC --address auto ...`` is
submitted with the project folder as the job's working directory (top-level data, results,
caches and ``.git`` left out; every file of ``tuner/`` and ``trainables/`` kept, with a
manifest the driver checks: see :mod:`tuner.provenance`) and the job id is printed::

    python -m tuner.submit search_spaces/resnet_nwpu.yaml --results s3://my-bucket/tuner
    python -m tuner.submit status JOB_ID
    python -m tuner.submit logs JOB_ID --follow
    python -m tuner.submit stop JOB_ID
    python -m tuner.submit list

The job API is reached at ``--address`` (default ``$RAY_API_SERVER_ADDRESS`` or
``http://127.0.0.1:8265``: the head node's dashboard port forwarded over SSH by
``ray dashboard cluster.yaml``). With token authentication on the cluster, set
``RAY_AUTH_MODE=token`` and the cluster's token (``~/.ray/auth_token`` or ``RAY_AUTH_TOKEN``)
here too; the token is sent only over https or to a loopback address (``--insecure``
overrides). ``--env`` values travel in Ray's runtime environment, not in the job's command
line. Arguments after ``--`` go to ``tuner.run`` unchanged.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shlex
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from trainables.clihelp import HelpFormatter
from tuner import provenance
from tuner.spec import SpecError, check_name, load_raw, validate

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
#: Left out of the uploaded working directory: gitignore-style patterns, each anchored to the
#: project root with a leading ``/`` (a bare ``data/`` would also drop ``trainables/data/``).
#: Ray also honours the project's ``.gitignore`` files.
EXCLUDES = [
    "/.git",
    "/data/",
    "/results/",
    "/report/",
    "/.cache/",
    "/build/",
    "/.benchmarks/",
    "*.egg-info/",
    "__pycache__/",
    ".pytest_cache/",
    ".ruff_cache/",
    "*.pt",
    "*.pth",
    "*.ckpt",
]
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
COMMANDS = ("status", "logs", "stop", "list")


def project_root() -> Path:
    """The checkout this package runs from (the folder holding ``pyproject.toml``)."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() else Path.cwd()


def default_address() -> str:
    """``$RAY_API_SERVER_ADDRESS``, an ``http(s)://`` ``$RAY_ADDRESS``, or localhost:8265."""
    env = os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS", "")
    return env if env.startswith(("http://", "https://")) else DEFAULT_ADDRESS


def _is_loopback(address: str) -> bool:
    host = urlparse(address).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------------------------- CLI
def _add_address(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address",
        default=default_address(),
        help=f"Ray job API (dashboard) address (default: {default_address()})",
    )


def submit_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m tuner.submit SPEC``."""
    p = argparse.ArgumentParser(
        prog="python -m tuner.submit",
        description=__doc__.split("\n\n")[0],
        usage="python -m tuner.submit SPEC [options] [-- tuner.run arguments]",
        epilog="Other commands: status JOB_ID | logs JOB_ID [--follow] | stop JOB_ID | list",
        formatter_class=HelpFormatter,
    )
    p.add_argument("spec", help="search spec (YAML), inside --working-dir")
    _add_address(p)
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec key (passed on to tuner.run)",
    )
    p.add_argument(
        "--results",
        default="~/tuner-results",
        help="results root as the cluster sees it: s3://..., gs://... or a shared mount "
        "(default ~/tuner-results on the head: fine for one node only)",
    )
    p.add_argument("--name", help="experiment name (default: the spec's 'experiment')")
    p.add_argument("--resume", action="store_true", help="continue an interrupted experiment")
    p.add_argument(
        "--shared-storage",
        action="store_true",
        help="the local --results path is a shared mount on every node",
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment variable of the job's driver and every trial (sent in Ray's runtime "
        "environment, not in the job's command line)",
    )
    p.add_argument(
        "--working-dir",
        type=Path,
        default=None,
        help="folder uploaded as the job's working directory (default: this project)",
    )
    p.add_argument("--job-id", help="submission id (default: chosen by Ray)")
    p.add_argument(
        "--insecure",
        action="store_true",
        help="send the cluster's token over plain HTTP to a non-local address",
    )
    return p


def command_parser(command: str) -> argparse.ArgumentParser:
    """Arguments of ``status``, ``logs``, ``stop`` and ``list``."""
    p = argparse.ArgumentParser(
        prog=f"python -m tuner.submit {command}", formatter_class=HelpFormatter
    )
    if command != "list":
        p.add_argument("job_id", help="the job's submission id (printed by submit; see list)")
    if command == "logs":
        p.add_argument("--follow", "-f", action="store_true", help="stream until the job ends")
        p.add_argument("--every", type=float, default=2.0, help="seconds between polls")
    _add_address(p)
    return p


def _fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def make_client(address: str):
    """A ``JobSubmissionClient`` for ``address`` (imported here: tests replace it)."""
    from tuner.tune import job_client

    return job_client(address)


def entrypoint(args: argparse.Namespace, spec_rel: str) -> str:
    """The shell command the job runs on the head node (``--env`` values are not in it)."""
    cmd = ["python", "-m", "tuner.run", spec_rel, "--address", "auto", "--results", args.results]
    for o in args.overrides:
        cmd += ["--set", o]
    if args.name:
        cmd += ["--name", args.name]
    if args.resume:
        cmd.append("--resume")
    if args.shared_storage:
        cmd.append("--shared-storage")
    return " ".join(shlex.quote(c) for c in [*cmd, *args.run_args])


def job_env(args: argparse.Namespace, working_dir: Path) -> dict[str, str]:
    """The job's environment variables: ``--env`` values and the uploaded code's manifest.

    They travel in Ray's runtime environment (to the driver and every trial worker), never
    in the entrypoint, which ``submit list`` and the dashboard show.
    """
    env = dict(e.split("=", 1) for e in args.env)
    env[provenance.MANIFEST_ENV] = json.dumps(provenance.manifest(working_dir), sort_keys=True)
    return env


def token_auth() -> bool:
    """Whether Ray's client sends a token with every request (``RAY_AUTH_MODE=token``)."""
    return os.environ.get("RAY_AUTH_MODE", "").strip().lower() == "token"


def submit(args: argparse.Namespace) -> int:
    """Validate the spec, submit the search, print the job id."""
    try:
        if args.name:
            check_name(args.name)
        for e in args.env:
            if "=" not in e or not e.split("=", 1)[0].isidentifier():
                raise SpecError(f"--env {e!r}: expected KEY=VALUE")
        raw = load_raw(args.spec, args.overrides)
        if args.name:
            raw["experiment"] = args.name
        # The dataset lives on the cluster: its paths are checked there, not here.
        spec = validate(raw, check_data=False)
    except (SpecError, ValueError) as err:
        return _fail(str(err))
    working_dir = (args.working_dir or project_root()).resolve()
    spec_path = Path(args.spec).resolve()
    if not spec_path.is_relative_to(working_dir):
        return _fail(
            f"spec {str(spec_path)!r} is not inside the uploaded working directory "
            f"{str(working_dir)!r}; move it there or pass --working-dir"
        )
    missing = [p for p in provenance.PACKAGES if not (working_dir / p / "__init__.py").is_file()]
    if missing:
        return _fail(
            f"working directory {str(working_dir)!r} holds no {'/, '.join(missing)}/ package: "
            "the job runs the uploaded project, never a copy installed on the cluster; upload "
            "the project folder (the default --working-dir)"
        )
    if not _is_loopback(args.address) and urlparse(args.address).scheme != "https":
        if token_auth() and not args.insecure:
            return _fail(
                f"{args.address} is plain HTTP to a non-local address: the cluster's token "
                "would travel unencrypted. Reach the dashboard through `ray dashboard "
                "cluster.yaml` (an SSH tunnel to http://127.0.0.1:8265) or an https:// proxy, "
                "or pass --insecure to send it anyway"
            )
        print(
            f"warning: {args.address} is not a local address: the job API travels "
            "unencrypted; reach the dashboard through `ray dashboard cluster.yaml` "
            "(an SSH tunnel to 127.0.0.1:8265) instead",
            file=sys.stderr,
        )
    command = entrypoint(args, spec_path.relative_to(working_dir).as_posix())
    try:
        client = make_client(args.address)
        job_id = client.submit_job(
            entrypoint=command,
            submission_id=args.job_id,
            runtime_env={
                "working_dir": str(working_dir),
                "excludes": EXCLUDES,
                "env_vars": job_env(args, working_dir),
            },
            metadata={"experiment": spec.experiment, "spec": spec_path.name},
            entrypoint_num_cpus=0,
        )
    except Exception as err:  # noqa: BLE001 - connection, auth and API errors alike
        return _fail(_explain(args.address, err), 1)
    print(job_id)
    print(
        f"experiment {spec.experiment}: submitted to {args.address}\n"
        f"  follow:  python -m tuner.submit logs {job_id} --follow --address {args.address}\n"
        f"  status:  python -m tuner.submit status {job_id} --address {args.address}\n"
        f"  stop:    python -m tuner.submit stop {job_id} --address {args.address}\n"
        f"  results: {args.results}/{spec.experiment}",
        file=sys.stderr,
    )
    return 0


def _explain(address: str, err: Exception) -> str:
    text = f"{type(err).__name__}: {err}"
    if "401" in text or "uthenticat" in text:
        text += (
            "\nthe cluster uses token authentication: export RAY_AUTH_MODE=token and put the "
            "cluster's token in ~/.ray/auth_token (or RAY_AUTH_TOKEN)"
        )
    elif "onnect" in text:
        text += (
            f"\ncannot reach the job API at {address}: is the SSH tunnel up "
            "(`ray dashboard cluster.yaml`)?"
        )
    return text


def run_command(command: str, args: argparse.Namespace) -> int:
    """``status``, ``logs``, ``stop`` or ``list``."""
    try:
        client = make_client(args.address)
        if command == "list":
            for job in client.list_jobs():
                print(f"{job.submission_id}  {job.status}  {job.entrypoint}")
            return 0
        if command == "status":
            info = client.get_job_info(args.job_id)
            print(f"{args.job_id}: {info.status}" + (f" ({info.message})" if info.message else ""))
            return 1 if str(info.status) == "FAILED" else 0
        if command == "stop":
            stopped = client.stop_job(args.job_id)
            print(f"{args.job_id}: " + ("stop requested" if stopped else "not running"))
            return 0
        return _logs(client, args)
    except Exception as err:  # noqa: BLE001
        return _fail(_explain(args.address, err), 1)


def _logs(client, args: argparse.Namespace) -> int:
    """Print a job's logs; with ``--follow`` poll until the job ends (no websocket needed)."""
    shown = 0
    while True:
        status = str(client.get_job_status(args.job_id))
        text = client.get_job_logs(args.job_id)
        sys.stdout.write(text[shown:])
        sys.stdout.flush()
        shown = len(text)
        if not args.follow or status in TERMINAL:
            if args.follow:
                print(f"\njob {args.job_id}: {status}", file=sys.stderr)
            return 1 if status == "FAILED" else 0
        time.sleep(args.every)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2: bad spec or arguments)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        return run_command(argv[0], command_parser(argv[0]).parse_args(argv[1:]))
    run_args: list[str] = []
    if "--" in argv:  # the rest goes to tuner.run unchanged
        i = argv.index("--")
        argv, run_args = argv[:i], argv[i + 1 :]
    args = submit_parser().parse_args(argv)
    args.run_args = run_args
    return submit(args)


if __name__ == "__main__":
    raise SystemExit(main())
