"""Checks for running a search on a multi-node Ray cluster.

On more than one node, every trial persists its checkpoints, and the driver its Parquet
tables and Tune's experiment snapshot, under the results root; a retried trial may resume on
another node and a resumed driver on another machine. The root must therefore be storage
that every node sees: a cloud URI (``s3://``, ``gs://``, through pyarrow's filesystem layer,
the same layer the Parquet writer uses) or a shared filesystem mounted at the same path on
every node. :func:`check_storage` refuses a plain local path on a multi-node cluster before
anything of the search is written, unless the user vouches for it (``--shared-storage``).

``ray`` is imported lazily (through :mod:`tuner.tune`), so the checks can be tested and
the CLI can validate its arguments without a cluster.
"""

from __future__ import annotations

#: URI schemes that name storage every node can reach.
SHARED_SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss", "hdfs", "viewfs")


class StorageError(ValueError):
    """The results root cannot be used by every node of the cluster."""


def is_local(results_root: str) -> bool:
    """Whether a results root is a path on this machine's filesystem (``file://`` too)."""
    text = str(results_root)
    if "://" not in text:
        return True
    return text.split("://", 1)[0].lower() in ("file", "local")


def check_storage(
    results_root: str,
    address: str | None,
    *,
    shared: bool = False,
    nodes: int | None = None,
) -> None:
    """Refuse a local results root on a Ray cluster of more than one node.

    Args:
        results_root: The ``--results`` root (path or URI).
        address: The Ray address the driver joined (for the message; ``None``: local Ray).
        shared: The user vouches that the local path is a shared mount, at the same path on
            every node (``--shared-storage``).
        nodes: Alive nodes of the cluster (default: asked from the connected Ray).

    Raises:
        StorageError: A local path on a multi-node cluster without ``shared``, or a URI
            scheme that pyarrow cannot open.
    """
    text = str(results_root)
    if not is_local(text):
        scheme = text.split("://", 1)[0].lower()
        if scheme not in SHARED_SCHEMES:
            raise StorageError(
                f"--results {text!r}: scheme {scheme!r} is not one of "
                f"{', '.join(SHARED_SCHEMES)} (pyarrow filesystems); use s3://BUCKET/PATH, "
                "gs://BUCKET/PATH or a shared mount"
            )
        return
    if shared:
        return
    if nodes is None:
        from tuner.tune import alive_nodes

        nodes = alive_nodes()
    if nodes > 1:
        from pathlib import Path

        path = Path(text.split("://", 1)[-1]).expanduser().resolve()
        raise StorageError(
            f"--results {str(path)!r} is a local path, but the Ray cluster at "
            f"{address or 'this machine'} has {nodes} nodes: trials on other nodes could not "
            "write their checkpoints there, nor a resumed driver read them. Use shared "
            "storage: --results s3://BUCKET/PATH, --results gs://BUCKET/PATH, or a shared "
            "filesystem mounted at the same path on every node (then add --shared-storage)"
        )
