"""Object stores: publishing a dataset or model to s3:// (spec.export), and reading s3:// locations back.

Every location is opened with fsspec. Its s3:// implementation here is obstore's (`register`: the Rust
object_store crate behind fsspec's interface) rather than s3fs, whose botocore pins python-dateutil below 3,
which the workload environment is past. Credentials, endpoint and region come from the standard environment
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_ENDPOINT_URL, AWS_REGION): in a pod the
operator sets them from `spec.export` (Secret keys by reference) or a location's credentials Secret; on a
laptop the shell's apply, and an export's endpointUrl and region are applied by the workload itself.

Errors name the URI and what went wrong (no such bucket, access denied, endpoint unreachable) as a
`WorkloadError`, never a traceback; the credentials' values never appear in them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

from .api import common as reasons
from .errors import WorkloadError

REASON_EXPORT_FAILED = "ExportFailed"
MARKER = "_EXPORTED"  # written last: its presence says the copy above it is whole


def register() -> None:
    """Make obstore fsspec's s3:// implementation in this process (once; without obstore, fsspec's default)."""
    import fsspec

    try:
        from obstore.fsspec import FsspecStore
    except ImportError:
        return
    if getattr(fsspec.get_filesystem_class("s3") if "s3" in fsspec.registry else None, "reasonops", False):
        return

    class S3Store(FsspecStore):
        """s3:// from the environment; an http:// endpoint (a store inside the cluster, a test's) is allowed."""

        protocol = "s3"
        reasonops = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3") or ""
            if endpoint.startswith("http://"):
                kwargs.setdefault("client_options", {"allow_http": True})
            super().__init__("s3", *args, **kwargs)

    fsspec.register_implementation("s3", S3Store, clobber=True)


def _problem(uri: str, exc: BaseException) -> str:
    """What went wrong with `uri`, in one line (the library's own words, first line, shortened)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    lowered = text.lower()
    if "nosuchbucket" in lowered or "bucket does not exist" in lowered or "specified bucket does not exist" in lowered:
        hint = "no such bucket"
    elif any(word in lowered for word in ("invalidaccesskeyid", "signaturedoesnotmatch", "accessdenied", "403", "forbidden")):
        hint = "access denied: check the credentials"
    elif any(word in lowered for word in ("connection refused", "connect error", "dns error", "timed out", "error sending request")):
        hint = "the endpoint is unreachable"
    elif isinstance(exc, FileNotFoundError) or "not found" in lowered or "404" in lowered:
        hint = "not found"
    else:
        hint = type(exc).__name__
    return f"{uri}: {hint} ({text[:300]})"


def publish(source: str, uri: str) -> str:
    """Copy the directory `source` (a local path, or a URI: copied through a scratch directory) to `uri`, the
    marker last; returns `uri`. Raises WorkloadError(ExportFailed) naming `uri` when the store refuses."""
    import fsspec

    register()
    with tempfile.TemporaryDirectory(prefix="reasonops-export-") as scratch:
        local = Path(source)
        if "://" in source:
            local = local_copy(source, Path(scratch) / "source", marker=None)
        if not local.is_dir():
            raise WorkloadError(REASON_EXPORT_FAILED, f"cannot export {source} to {uri}: it is not a directory")
        try:
            fs, root = fsspec.core.url_to_fs(uri)
            root = root.rstrip("/")
            for path in sorted(p for p in local.rglob("*") if p.is_file()):
                fs.put_file(str(path), f"{root}/{path.relative_to(local).as_posix()}")
            fs.pipe_file(f"{root}/{MARKER}", b"")
        except WorkloadError:
            raise
        except Exception as exc:  # the store's errors, whatever library raised them
            raise WorkloadError(REASON_EXPORT_FAILED, f"cannot export to {_problem(uri, exc)}") from None
    return uri


def model_copy(uri: str) -> Path:
    """A local copy of the model at `uri`, kept per URI under the scratch directory (the pod's /tmp)."""
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    return local_copy(uri, Path(tempfile.gettempdir()) / "reasonops-models" / digest)


def local_copy(uri: str, dest: Path, marker: Optional[str] = "config.json", reason: str = reasons.REASON_MODEL_NOT_FOUND) -> Path:
    """A local copy of the directory at `uri` in `dest` (kept: a second call copies nothing), for libraries
    that read local files only (transformers, the CPU engine). `marker`: a file that must be there (a model's
    config.json). Raises WorkloadError(`reason`) naming `uri`."""
    import fsspec

    register()
    done = dest / ".copied"
    if done.exists():
        return dest
    try:
        fs, path = fsspec.core.url_to_fs(uri)
        path = path.rstrip("/")
        if marker and not fs.exists(f"{path}/{marker}"):
            raise WorkloadError(reason, f"{uri}: no {marker} there")
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        for name in fs.find(path):
            relative = name[len(path):].lstrip("/")
            if relative and relative != MARKER:
                (dest / relative).parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(name, str(dest / relative))
    except WorkloadError:
        raise
    except Exception as exc:
        raise WorkloadError(reason, f"cannot copy {_problem(uri, exc)}") from None
    done.touch()
    return dest
