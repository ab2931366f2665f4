"""Security rules: names cannot escape the results root, weights load as tensors only, specs
load with a safe YAML loader, and nothing Ray serves is bound to a public address by default.
"""

from __future__ import annotations

import ast
import contextlib
import ipaddress
import os
from pathlib import Path

import pytest
import yaml

from tuner.run import main
from tuner.spec import SpecError, load_raw

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [p for d in ("tuner", "trainables") for p in (ROOT / d).rglob("*.py")]
TOY = {
    "experiment": "ok",
    "trainable": "toy",
    "hyperparameters": {"lr": 1e-3, "epochs": 1},
    "search": {"algorithm": "grid"},
    "scheduler": {"type": "none"},
}


@pytest.mark.parametrize(
    "how",
    [["--name", "../x"], ["--name", "a/../../x"], ["--name", "/abs"], "spec", "set"],
)
def test_experiment_names_cannot_escape_the_results_root(tmp_path, capsys, monkeypatch, how):
    monkeypatch.chdir(tmp_path)
    spec = dict(TOY, experiment="../x") if how == "spec" else TOY
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    extra = ["--set", "experiment=../x"] if how == "set" else ([] if how == "spec" else how)
    results = tmp_path / "box" / "results"
    assert main([str(path), "--results", str(results), *extra]) == 2
    assert "experiment name must match" in capsys.readouterr().err
    assert not (tmp_path / "box").exists() and not (tmp_path / "x").exists()
    assert sorted(os.listdir(tmp_path)) == ["spec.yaml"]


def test_duplicate_keys_and_python_tags_are_refused(tmp_path):
    dup = tmp_path / "dup.yaml"
    dup.write_text("experiment: a\nexperiment: b\n")
    with pytest.raises(SpecError, match="duplicate key 'experiment'"):
        load_raw(dup)
    tag = tmp_path / "tag.yaml"
    tag.write_text("experiment: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_raw(tag)


def _calls(name: str):
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == name:
                yield path, node


def test_every_torch_load_is_weights_only():
    loads = list(_calls("torch.load"))
    assert loads, "expected checkpoint loading in trainables/"
    for path, node in loads:
        kw = {k.arg: k.value for k in node.keywords}
        assert "weights_only" in kw and ast.literal_eval(kw["weights_only"]) is True, (
            f"{path.relative_to(ROOT)}:{node.lineno}: torch.load without weights_only=True"
        )


def test_no_unsafe_yaml_or_pickle_loading():
    for name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "pickle.load", "pickle.loads"):
        for path, node in _calls(name):
            loader = {k.arg: ast.unparse(k.value) for k in node.keywords}.get("Loader", "")
            assert name == "yaml.load" and "UniqueKeyLoader" in loader, (
                f"{path.relative_to(ROOT)}:{node.lineno}: {name}"
            )


def test_nothing_binds_a_public_address_by_default():
    from tuner import submit

    assert submit.DEFAULT_ADDRESS.startswith("http://127.0.0.1:")
    for path in SOURCES:
        text = path.read_text()
        assert "0.0.0.0" not in text, path.relative_to(ROOT)


#: Ray's default dashboard port (``ray start --dashboard-port``'s default).
DASHBOARD_PORT = 8265


def _listening(pids) -> list[tuple[str, int]]:
    """``(address, port)`` of every TCP socket the processes ``pids`` listen on (Linux /proc)."""
    inodes = set()
    for pid in pids:
        with contextlib.suppress(OSError):  # a process that ended, or not ours
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(target[len("socket:[") : -1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                    address, port = cols[1].split(":")
                    found.append((_ip(address), int(port, 16)))
    return found


def _ip(hex_address: str) -> str:
    """The dotted (IPv4, also IPv4-mapped IPv6) or compressed (IPv6) form of a /proc/net
    address."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))  # host byte order
    address = ipaddress.ip_address(words)
    return str(getattr(address, "ipv4_mapped", None) or address)


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux /proc")
def test_a_local_run_serves_no_dashboard_and_listens_on_loopback_only():
    """A local run's Ray starts no dashboard: none of its processes listens on the dashboard
    port, and every socket they listen on is bound to the loopback address."""
    import ray

    from tuner import reaper, tune

    if ray.is_initialized():
        ray.shutdown()
    before = set(reaper.grow(reaper.children(os.getpid())))
    tune.init_ray(None, num_cpus=1, num_gpus=0)
    try:
        run = set(reaper.grow(reaper.children(os.getpid()))) - before
        sockets = _listening(run)
    finally:
        tune.shutdown_ray()
    assert sockets, "the run's servers (GCS, raylet) listen somewhere"
    assert all(port != DASHBOARD_PORT for _, port in sockets), sockets
    assert all(ipaddress.ip_address(ip).is_loopback for ip, _ in sockets), sockets
