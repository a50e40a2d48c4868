"""Conventions shared by every stage: atomic writes, JSONL manifests, background writes, shards, per-item seeds.

A crash at any point leaves only complete files visible (write to a temporary name, then rename),
and a re-run skips every item already recorded in the manifest.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from synthrel.errors import ConfigError, DatasetError, SynthrelError

log = logging.getLogger(__name__)


class DiskFullError(SynthrelError, OSError):
    """The disk (or quota) of an output folder is full; files written before stay as they were."""


class OutputBusyError(SynthrelError):
    """Another run is writing the same output folder (the same shard of it)."""


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def _current_umask() -> int:
    """The process umask, read without changing it where the OS allows (os.umask is a process-wide swap)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _follow_umask(path: Path, mode: int) -> None:
    """mkstemp / mkdtemp create 0600 / 0700; give the published file the mode a plain `open` would have,
    so that colleagues on a shared cluster can read results as their umask allows."""
    os.chmod(path, mode & ~_current_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename.

    A full disk raises DiskFullError naming the output folder instead of a bare "[Errno 28]".
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + path.suffix)
        os.close(fd)
        tmp = Path(tmp)
        try:
            yield tmp
            _follow_umask(tmp, 0o666)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as e:
        error = _as_disk_full(e, path)
        if error is e:
            raise
        raise error from e


def _as_disk_full(error: OSError, path: Path) -> OSError:
    """`error` itself, or, for a full disk or quota, a DiskFullError naming the output folder and file."""
    if error.errno not in DISK_FULL_ERRNOS or isinstance(error, DiskFullError):
        return error
    return DiskFullError(error.errno, f"no space left on the device of output folder {path.parent} while writing "
                                      f"{path.name} ({error.strerror}); free space or point the output elsewhere, "
                                      "then re-run: files written before are kept and the job resumes")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; on success it replaces `path` (an incomplete leftover
    included) in one rename, so a kill never leaves a half-written folder that a later run takes as complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp"))
    try:
        yield tmp
        _follow_umask(tmp, 0o777)
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def staged_outputs(folder: str | os.PathLike, last=()) -> Iterator[Path]:
    """Yield an empty hidden folder inside `folder`: on success every file written there moves into `folder`
    (one rename each, the names in `last` after the others), on an error none does and `folder` keeps what it
    held. Outputs that belong together (a stage's tables, figures and index) appear together or not at all."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=folder, prefix=".staging."))
    try:
        yield stage
        files = sorted((p for p in stage.rglob("*") if p.is_file()), key=lambda p: (p.name in last, str(p)))
        for path in files:
            target = folder / path.relative_to(stage)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class Manifest:
    """Append-only JSONL record of finished items, keyed by `key`.

    Each line is written with one `write` + fsync, so a kill leaves at most a truncated last line,
    which `read` ignores (and `append` first repairs).
    """

    def __init__(self, path: str | os.PathLike, key: str = "id"):
        self.path = Path(path)
        self.key = key

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        records = []
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                if not line.endswith("\n"):
                    break  # truncated by a kill: the item will be redone
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    # a line cut by a killed shard, then continued by another shard's append: skip it,
                    # its items are redone (the intact record of the other shard is re-appended too)
                    log.warning("%s: skipping a corrupt manifest line: %.80s", self.path, line)
                    continue
                if not isinstance(record, dict) or self.key not in record:
                    raise ArtifactError(
                        f"{self.path}, line {number}: expected a manifest record (a JSON object with key "
                        f"{self.key!r}), found {line.strip()[:80]!r}. This file is written by synthrel: remove the "
                        "line (its item is then redone), or the file and re-run with force=true")
                records.append(record)
        return records

    def done(self) -> set[str]:
        return {r[self.key] for r in self.read()}

    def append(self, record: dict) -> None:
        if self.key not in record:
            raise KeyError(f"manifest record lacks its key {self.key!r}: {record}")
        line = json.dumps(record, sort_keys=True, default=_json_default) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._drop_truncated_tail()
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            error = _as_disk_full(e, self.path)
            if error is e:
                raise
            # a full disk may have taken part of the line: drop it now (truncating needs no space), as the next
            # append would, so that the manifest keeps only whole records
            with contextlib.suppress(OSError):
                self._drop_truncated_tail()
            raise error from e

    def _drop_truncated_tail(self) -> None:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) == b"\n":
                return
            data = self.path.read_bytes()
            f.truncate(data.rfind(b"\n") + 1)


class BackgroundWriter:
    """Runs write calls (image encoding, files, manifest lines) on one thread, in submission order, so that they
    overlap the GPU work of the next batch instead of stalling it.

    At most `max_pending` calls wait (back-pressure when the disk is slower than the GPU). A failed write is
    raised by the next `submit` or on leaving the block. Leaving the block on an error still finishes the
    pending writes, so a crash loses no item that was already generated.
    """

    def __init__(self, max_pending: int = 2):
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.max_pending = max_pending
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="synthrel-writer")
        self._pending: deque[Future] = deque()

    def submit(self, fn: Callable, *args, **kwargs) -> None:
        while self._pending and (self._pending[0].done() or len(self._pending) >= self.max_pending):
            self._pending.popleft().result()  # raises the write's own error
        self._pending.append(self._pool.submit(fn, *args, **kwargs))

    def close(self) -> None:
        """Finish every pending write (one failing does not stop the others), then raise the first error."""
        first = None
        while self._pending:
            try:
                self._pending.popleft().result()
            except Exception as error:
                if first is not None:
                    log.error("another background write failed: %s", error)
                first = first or error
        self._pool.shutdown(wait=True)
        if first is not None:
            raise first

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.close()
        except Exception:
            if exc_type is None:
                raise
            log.exception("a background write failed while handling another error")  # the block's error wins


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`: item k belongs to shard k mod count (no overlap, no gap)."""

    index: int = 0
    count: int = 1

    def __post_init__(self):
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ConfigError(
                f"shard {self.index}/{self.count} is out of range (config key `shard`): "
                f"expected i/n with n >= 1 and 0 <= i < n"
            )

    @classmethod
    def parse(cls, spec: str | None) -> Shard:
        if spec in (None, "", "0/1"):
            return cls()
        try:
            index, count = (int(x) for x in str(spec).split("/"))
        except ValueError:
            raise ConfigError(f"shard {spec!r} (config key `shard`): expected 'i/n', e.g. shard=0/4") from None
        return cls(index, count)

    def select(self, n_items: int) -> range:
        return range(self.index, n_items, self.count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def item_seed(seed: int, index: int, stream: str = "") -> int:
    """A seed for item `index` of a job seeded with `seed`, independent of sharding and order.

    `stream` separates independent draws for the same item (e.g. "crop" and "noise").
    """
    words = [int(seed) & 0xFFFFFFFF, int(index)] + [ord(c) for c in stream]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint32)[0])


def item_rng(seed: int, index: int, stream: str = "") -> np.random.Generator:
    return np.random.default_rng(item_seed(seed, index, stream))


def positive_int(value, key: str) -> int:
    """Validate a count from the config (number of samples, steps, batch size)."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"`{key}` must be a positive integer, got {value!r}")
    return value


@contextlib.contextmanager
def exclusive_outputs(folders, shard: Shard | None = None) -> Iterator[None]:
    """`exclusive_output` of several folders at once."""
    with contextlib.ExitStack() as stack:
        for folder in folders:
            stack.enter_context(exclusive_output(folder, shard))
        yield


@contextlib.contextmanager
def exclusive_output(folder: str | os.PathLike, shard: Shard | None = None, wait: bool = False) -> Iterator[None]:
    """Hold the right to write `folder` (one shard of it) for the block: a second run on the same folder and
    shard stops at once with OutputBusyError naming the holder, instead of redoing the work beside it.
    With `wait`, it logs the holder and waits for it instead: for items that jobs of one sweep share (the caller
    then checks whether the holder left the item done).

    An advisory `flock` on a hidden file in the folder: the kernel releases it when the holder exits, a kill
    included, so no stale lock is left (on NFS it needs NFSv4 or lockd, as any flock).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = _shard_suffix(shard)
    path = folder / f".synthrel.lock{suffix}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_current_umask())
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            holder = None
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"
        if holder is not None:
            what = f"{folder}" + (f" (shard {shard})" if suffix else "")
            if not wait:
                raise OutputBusyError(
                    f"another synthrel run is writing {what}: {holder}. Wait for it to finish (a re-run then skips "
                    "what it wrote), or write elsewhere (e.g. paths.output_root=<other folder>)")
            log.info("waiting for another synthrel run writing %s: %s", what, holder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, _holder().encode(), 0)
        yield
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------- fingerprints
# One home for "is this output still what the current settings would produce?". Each stage declares the settings
# that change its result (and the identities of its inputs); they are recorded beside the result (evaluate's DONE,
# a manifest record's `settings`, calibrate's item record, train_controlnet's training.json) and compared on a
# re-run. A result is skipped only when every declared value is unchanged.

SETTINGS_KEY = "settings"


class SettingsChangedError(ConfigError):
    """An output folder holds results made with other settings; the message names them and how to proceed."""


def path_identity(path) -> str | None:
    """Identity of an input: a file by resolved path, size and modification time; a folder by those of every file
    under it (hidden ones aside); anything else (a hub id, a URL) by itself. None stays None."""
    if path is None:
        return None
    local = Path(str(path).removeprefix("file://")).expanduser()
    if local.is_file():
        stat = local.stat()
        return f"{local.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    if local.is_dir():
        digest = hashlib.sha256(str(local.resolve()).encode())
        for file in sorted(p for p in local.rglob("*") if p.is_file()):
            rel = file.relative_to(local)
            if any(part.startswith(".") for part in rel.parts):
                continue
            stat = file.stat()
            digest.update(f"|{rel}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        return f"{local.resolve()}:dir:{digest.hexdigest()[:16]}"
    return str(path)


def plain_settings(settings: dict) -> dict:
    """`settings` as they read back from JSON (tuples become lists, numpy scalars numbers), so that a recorded
    and a current value compare equal when they are."""
    return json.loads(json.dumps(settings, sort_keys=True, default=_json_default))


def changed_settings(recorded: dict | None, expected: dict, added_later: dict | None = None) -> dict[str, tuple]:
    """{key: (recorded value, current value)} for every key of `expected` whose recorded value differs.
    `added_later`: settings a stage gained after records were written -> the value those records were made with."""
    recorded = {**plain_settings(added_later or {}), **(recorded or {})}
    expected = plain_settings(expected)
    return {key: (recorded.get(key), value) for key, value in expected.items() if recorded.get(key) != value}


def describe_changes(changed: dict[str, tuple]) -> str:
    """'guidance_scale 8.0 -> 5.0; seed 0 -> 1' (long values shortened)."""
    def short(value) -> str:
        text = repr(value)
        return text if len(text) <= 200 else text[:90] + "..." + text[-90:]

    return "; ".join(f"{key} {short(old)} -> {short(new)}" for key, (old, new) in changed.items())


@dataclass
class ResumePlan:
    """What a re-run of an item stage does: `todo` ids (new, or redone with `force`), `skipped` ids (recorded with
    the same settings) and `obsolete` ids (recorded with other settings, not made by any shard of this run; the
    stage removes them when `force`)."""

    todo: list[str]
    skipped: list[str]
    obsolete: list[str]


def plan_resume(stage: str, where: str, records: dict[str, dict], common: dict, inputs: dict[str, dict], *,
                force: bool, elsewhere: str, planned: set[str] | None = None,
                added_later: dict | None = None) -> ResumePlan:
    """Decide, per item, to skip or (re)do it, and refuse a folder whose items were made with other settings.

    `records`: the latest record per id found in the output (each with its `settings`); `common`: the stage's
    result-affecting settings; `inputs`: this run's ids -> their own inputs (source file identities, caption...).
    `planned`: every id of the whole run (all shards); records outside it are checked on `common` only.
    `added_later`: settings the stage gained since, with the value older records were made with (changed_settings).
    An item is skipped only when its record holds exactly {**common, **inputs[id]}. Records made with other
    settings stop the run with SettingsChangedError (a set must come from one configuration), unless `force`:
    then this run's items are redone and the other records are returned as `obsolete`. The log says why each
    item is skipped or (re)done.
    """
    common = plain_settings(common)
    planned = set(inputs) if planned is None else planned
    todo, skipped, stale = [], [], {}
    for id, own in inputs.items():
        record = records.get(id)
        if record is None:
            todo.append(id)
            continue
        changed = _record_changes(record, {**common, **own}, added_later)
        if changed:
            stale[id] = changed
            todo.append(id)
        elif force:
            todo.append(id)
        else:
            skipped.append(id)
    for id, record in records.items():
        if id in inputs or (id in planned and force):
            continue  # another shard's item: with force, that shard redoes it
        changed = _record_changes(record, common, added_later)
        if changed:
            stale[id] = changed
    obsolete = sorted(id for id in stale if id not in planned)
    if stale and not force:
        reasons: dict[str, tuple[int, str]] = {}
        for id, changed in stale.items():
            text = describe_changes(changed)
            count, example = reasons.get(text, (0, id))
            reasons[text] = (count + 1, example)
        detail = "\n".join(f"  {n} item(s), e.g. {example!r}: {text}" for text, (n, example) in reasons.items())
        raise SettingsChangedError(
            f"{stage}: {where} holds {len(stale)} item(s) made with other settings than this run's:\n{detail}\n"
            f"A set must come from one configuration, so nothing was written. To proceed, either restore those "
            f"settings, or set force=true (redo this run's items with the new settings and remove the old items "
            f"it does not make), or write another output folder ({elsewhere})")
    new = sum(1 for id in todo if id not in records)
    if skipped:
        log.info("%s: %d item(s) skipped in %s: done with these settings", stage, len(skipped), where)
    if new:
        log.info("%s: %d new item(s) for %s", stage, new, where)
    if stale:
        log.info("%s: force=true: redoing %d item(s) and removing %d of %s made with other settings (e.g. %s: %s)",
                 stage, len([i for i in stale if i in inputs]), len(obsolete), where, next(iter(stale)),
                 describe_changes(next(iter(stale.values()))))
    forced = len(todo) - new - len([i for i in stale if i in inputs])
    if forced:
        log.info("%s: force=true: redoing %d finished item(s) of %s", stage, forced, where)
    for id in skipped:
        log.debug("%s: %s skipped: done with these settings", stage, id)
    for id in todo:
        log.debug("%s: %s to do: %s", stage, id, "new" if id not in records else
                  describe_changes(stale[id]) if id in stale else "force=true")
    return ResumePlan(todo=todo, skipped=skipped, obsolete=obsolete)


def _record_changes(record: dict, expected: dict, added_later: dict | None = None) -> dict[str, tuple]:
    recorded = record.get(SETTINGS_KEY)
    if recorded is None:
        return {"settings": ("none recorded (an older synthrel)", "this run's")}
    return changed_settings(recorded, expected, added_later)


# ----------------------------------------------------------------------------------------- output records
# Every output a stage records (a manifest line, evaluate's DONE) carries each file's size and SHA-256, so that a
# re-run skips only files that are still what was written: a missing, truncated or changed file is redone.
# `verify`: "size" compares sizes only (no read); "hash" also re-hashes every file (measured cheap:
# benchmarks/verify_bench.py, docs/reliability.md).
Verify = Literal["size", "hash"]
VERIFY_MODES = get_args(Verify)
FILES_KEY = "files"


def check_verify(mode: str, key: str = "verify") -> str:
    if mode not in VERIFY_MODES:
        raise ConfigError(f"`{key}` is {mode!r}; valid: {', '.join(VERIFY_MODES)} (size: compare the recorded sizes "
                          "of the outputs a re-run skips; hash: also their SHA-256)")
    return mode


def sha256_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_records(root: str | os.PathLike, paths) -> dict[str, dict]:
    """{path relative to `root`: {"size", "sha256"}} of files just written (read back from the page cache)."""
    root = Path(root)
    out = {}
    for path in paths:
        path = Path(path)
        out[str(path.relative_to(root))] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    return out


def damaged_files(root: str | os.PathLike, recorded: dict[str, dict], verify: str = "size") -> dict[str, str]:
    """{relative path: why} for each recorded file that is missing, has another size, or (verify="hash")
    other bytes than when it was written. Empty: every file is as recorded."""
    root = Path(root)
    damaged = {}
    for rel, want in recorded.items():
        path = root / rel
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            damaged[rel] = "missing"
            continue
        if size != want["size"]:
            damaged[rel] = f"{size} bytes, {want['size']} when written (truncated or changed)"
        elif verify == "hash" and sha256_file(path) != want["sha256"]:
            damaged[rel] = "changed since it was written (SHA-256 differs)"
    return damaged


def describe_damage(damaged: dict[str, str], limit: int = 3) -> str:
    text = "; ".join(f"{rel}: {why}" for rel, why in list(damaged.items())[:limit])
    return text + (f"; and {len(damaged) - limit} more" if len(damaged) > limit else "")


# ----------------------------------------------------------------------------------- sets being written
# A writer that adds items to a set (generate, inpaint, corrupt) marks it incomplete for as long as it writes:
# `.synthrel.incomplete[.i-of-n]` holds its command and pid, and is removed when the writer finishes. A kill or an
# error leaves it, so that no stage reads a partial set as the set's result (`check_readable`).
INCOMPLETE = ".synthrel.incomplete"


class IncompleteOutputError(SynthrelError):
    """A set is held by a writer, or its last writer stopped before finishing it."""


def _shard_suffix(shard: Shard | None) -> str:
    return "" if shard is None or shard.count == 1 else f".{shard.index}-of-{shard.count}"


def _holder() -> str:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                       "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)})


@contextlib.contextmanager
def writing(folder: str | os.PathLike, shard: Shard | None = None) -> Iterator[None]:
    """Mark `folder` incomplete while the block writes into it; the mark stays if the block fails."""
    folder = Path(folder)
    marker = folder / f"{INCOMPLETE}{_shard_suffix(shard)}"
    write_text_atomic(marker, _holder() + "\n")
    yield
    # an unsharded writer has finished the whole set: the marks of shards of an earlier sharded run go too
    for done in [marker] if _shard_suffix(shard) else folder.glob(f"{INCOMPLETE}*"):
        done.unlink(missing_ok=True)


def check_readable(folder: str | os.PathLike, what: str) -> None:
    """Refuse to read `folder` while another run writes it (its output lock is held) or when its last writer
    stopped before finishing (an incomplete mark): the error names the writer's command and pid."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for lock in sorted(folder.glob(".synthrel.lock*")):
        try:
            fd = os.open(lock, os.O_RDONLY)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"
                raise IncompleteOutputError(
                    f"{what} {folder} is being written by another synthrel run: {holder}. Wait for it to finish, "
                    "then run this command again") from None
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    for marker in sorted(folder.glob(f"{INCOMPLETE}*")):
        holder = marker.read_text(errors="replace").strip() or "unknown"
        raise IncompleteOutputError(
            f"{what} {folder} is incomplete: its writer stopped before finishing ({marker.name}: {holder}). Run "
            "that command again to finish the set (it resumes and skips what is done), then run this one")


# -------------------------------------------------------------------------------------- artifact readers
# One reader per kind of file synthrel writes: a corrupt or unexpected file becomes an ArtifactError that names
# the file, what was expected and how to repair it, instead of a parser's traceback.


class ArtifactError(DatasetError):
    """A file synthrel wrote earlier is unreadable or not what it should hold."""


def _artifact_error(path, expected: str, repair: str, error: BaseException | None = None) -> ArtifactError:
    why = f" ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})" if error else ""
    return ArtifactError(f"{path}: cannot be read as {expected}{why}. {repair}")


def read_json_artifact(path: str | os.PathLike, expected: str, repair: str, keys=(), kind: type = dict):
    """A JSON object (a DONE record, a calibration result...) holding `keys`, or with kind=list a JSON list."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _artifact_error(path, expected, repair, error) from error
    if kind is list:
        if not isinstance(obj, list):
            raise _artifact_error(path, f"{expected} (a JSON list; found {type(obj).__name__})", repair)
        return obj
    if not isinstance(obj, dict) or any(k not in obj for k in keys):
        found = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise _artifact_error(path, f"{expected} (a JSON object with {list(keys)}; found {found})", repair)
    return obj


def read_parquet_artifact(path: str | os.PathLike, expected: str, repair: str, columns=()):
    """A parquet table holding `columns`."""
    import pandas as pd
    import pyarrow as pa

    path = Path(path)
    try:
        table = pd.read_parquet(path)
    except (OSError, pa.ArrowException, ValueError) as error:
        raise _artifact_error(path, f"{expected} (a parquet table)", repair, error) from error
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise _artifact_error(path, f"{expected} (columns {list(columns)}; missing {missing})", repair)
    return table


def load_npy_artifact(path: str | os.PathLike, expected: str, repair: str) -> np.ndarray:
    path = Path(path)
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise _artifact_error(path, f"{expected} (a .npy array)", repair, error) from error


def load_npz_artifact(path: str | os.PathLike, expected: str, repair: str, keys=(),
                      only=None) -> dict[str, np.ndarray]:
    """The arrays of an .npz file holding `keys` (all of them, or those of `only`), read in full: a truncated
    member fails here, not later."""
    import zipfile

    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in keys if k not in f.files]
            if missing:
                raise _artifact_error(path, f"{expected} (arrays {list(keys)}; missing {missing}, found "
                                            f"{sorted(f.files)})", repair)
            return {name: f[name] for name in (f.files if only is None else only)}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as error:
        raise _artifact_error(path, f"{expected} (an .npz archive)", repair, error) from error
