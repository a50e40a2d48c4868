"""Verified, resumable downloads of single files over HTTP(S) (the mmseg zoo checkpoints, the FID weights).

A download goes to `<dest>.part`; an interrupted transfer resumes from the bytes already there with an HTTP
Range request (in the same call, up to `retries` times, or in a later one). The finished file is checked
against a recorded sha256 or, for mmseg checkpoints, against the hash prefix in its name (mmseg's convention:
the hex digits after the last '-' are the first digits of the sha256). A file that fails a check is deleted and
the error says so; one that passes is renamed into place and stamped (`<dest>.sha256`), so that later
preflights trust it without hashing it again unless its size or mtime changed.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from synthrel.errors import WeightsError

CHUNK = 1 << 20
HASH_PREFIX = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")


class DownloadError(WeightsError):
    """A download failed or its file did not verify; the message names the URL and the file."""


def name_hash_prefix(name: str) -> str | None:
    """The sha256 prefix an mmseg checkpoint name carries ('..._20200607_013713-a9d4be8d.pth' -> 'a9d4be8d')."""
    match = HASH_PREFIX.search(name)
    return match.group(1) if match else None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def write_stamp(path: Path, sha256: str) -> None:
    st = path.stat()
    _stamp(path).write_text(json.dumps({"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))


def stamped_sha256(path: Path) -> str | None:
    """The sha256 recorded when `path` was verified, if the file is unchanged since (size and mtime)."""
    try:
        stamp = json.loads(_stamp(path).read_text())
        st = path.stat()
    except (OSError, ValueError):
        return None
    if stamp.get("size") == st.st_size and stamp.get("mtime_ns") == st.st_mtime_ns:
        return stamp.get("sha256")
    return None


def verify(path: Path, sha256: str | None = None, prefix: str | None = None) -> str | None:
    """None if `path` matches the recorded sha256 / hash prefix (hashing it once, then trusting its stamp),
    else a sentence saying what differs."""
    digest = stamped_sha256(path)
    if digest is None:
        digest = sha256_of(path)
        if (sha256 is None or digest == sha256.lower()) and (prefix is None or digest.startswith(prefix)):
            write_stamp(path, digest)
    if sha256 and digest != sha256.lower():
        return f"sha256 {digest} differs from the recorded {sha256.lower()}"
    if prefix and not digest.startswith(prefix):
        return f"sha256 {digest[:len(prefix)]}... differs from the prefix {prefix} in the file name"
    return None


def _total_size(response, offset: int) -> int | None:
    if response.status == 206:
        match = re.match(r"bytes \d+-\d+/(\d+)", response.headers.get("Content-Range", ""))
        return int(match.group(1)) if match else None
    length = response.headers.get("Content-Length")
    return int(length) if length is not None else None


def _fetch(url: str, part: Path, timeout: float, progress: bool) -> None:
    """One request: append to `part` from its current size (Range), or restart it if the server ignores Range.
    Raises on an interrupted transfer, leaving the bytes received in `part`."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing left to send: the part file is already whole
            return
        raise
    with response:
        if offset and response.status != 206:
            offset = 0  # the server sent the whole file
        total = _total_size(response, offset)
        with open(part, "ab" if offset else "wb") as f, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=part.name[:-5],
            disable=not progress, leave=False,
        ) as bar:
            while chunk := response.read(CHUNK):
                f.write(chunk)
                bar.update(len(chunk))
        if total is not None and part.stat().st_size < total:
            raise http.client.IncompleteRead(b"", total - part.stat().st_size)


def download_file(url: str, dest: str | Path, sha256: str | None = None, prefix: str | None = None,
                  retries: int = 3, timeout: float = 60, progress: bool = True) -> Path:
    """Download `url` to `dest` (resuming `<dest>.part`), verify it, and move it into place."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _fetch(url, part, timeout, progress)
            break
        except (OSError, http.client.HTTPException) as e:
            if isinstance(e, urllib.error.HTTPError) and e.code < 500:
                raise DownloadError(f"download of {url} failed: HTTP {e.code} {e.reason}") from None
            if attempt == retries:
                got = part.stat().st_size if part.exists() else 0
                raise DownloadError(
                    f"download of {url} was interrupted {retries + 1} times ({type(e).__name__}: {e}); "
                    f"{got} bytes are kept in {part}: run the same command again to resume") from None
    problem = verify(part, sha256, prefix)
    if problem:
        part.unlink()
        _stamp(part).unlink(missing_ok=True)
        raise DownloadError(f"download of {url} failed verification: {problem}; deleted the partial file {part}")
    part.replace(dest)  # a rename keeps size and mtime, so the stamp stays valid under the new name
    _stamp(part).replace(_stamp(dest))
    return dest
