"""The downloader against a real HTTP server on 127.0.0.1 (conftest.py): verified files, a truncated and a
wrong-hash file (deleted, with the reason), interrupted transfers resumed with Range, a server that ignores Range."""

from __future__ import annotations

import hashlib
import os

import pytest
from preflight_utils import mmseg_name

from synthrel.preflight.download import DownloadError, download_file, name_hash_prefix, verify

PAYLOAD = os.urandom(300_000)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


def test_hash_prefix_is_read_from_mmseg_names():
    assert name_hash_prefix("ann_r50-d8_769x769_80k_cityscapes_20200607_044426-cc7ff323.pth") == "cc7ff323"
    assert name_hash_prefix("SegFormer-B5_v2_ckpt.pth") is None
    assert name_hash_prefix("model.safetensors") is None


def test_good_file_is_verified_and_moved_into_place(server, tmp_path):
    name = mmseg_name(PAYLOAD)
    server.files[f"/{name}"] = PAYLOAD
    dest = download_file(f"{server.url}/{name}", tmp_path / name, prefix=name_hash_prefix(name), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / f"{name}.part").exists()
    assert verify(dest, prefix=name_hash_prefix(name)) is None


@pytest.mark.parametrize("served", ["truncated", "wrong_hash"])
def test_file_failing_its_hash_prefix_is_deleted(server, tmp_path, served):
    name = mmseg_name(PAYLOAD)
    server.files[f"/{name}"] = PAYLOAD[:123_456] if served == "truncated" else os.urandom(len(PAYLOAD))
    with pytest.raises(DownloadError, match=r"failed verification: sha256 .* differs from the prefix "
                                            rf"{name_hash_prefix(name)} .*deleted the partial file"):
        download_file(f"{server.url}/{name}", tmp_path / name, prefix=name_hash_prefix(name), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_recorded_sha256_is_checked(server, tmp_path):
    server.files["/weights.pth"] = PAYLOAD
    with pytest.raises(DownloadError, match=f"differs from the recorded {'0' * 64}.*deleted"):
        download_file(f"{server.url}/weights.pth", tmp_path / "weights.pth", sha256="0" * 64, progress=False)
    assert not (tmp_path / "weights.pth").exists() and not (tmp_path / "weights.pth.part").exists()
    assert download_file(f"{server.url}/weights.pth", tmp_path / "weights.pth", sha256=DIGEST,
                         progress=False).read_bytes() == PAYLOAD


def test_interrupted_transfer_resumes_with_range(server, tmp_path):
    name = mmseg_name(PAYLOAD)
    server.files[f"/{name}"], server.cut[f"/{name}"], server.drops[f"/{name}"] = PAYLOAD, 100_000, 1
    dest = download_file(f"{server.url}/{name}", tmp_path / name, prefix=name_hash_prefix(name), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [(f"/{name}", None), (f"/{name}", "bytes=100000-")]


def test_transfer_interrupted_every_time_keeps_its_bytes_and_a_later_call_resumes(server, tmp_path):
    name = mmseg_name(PAYLOAD)
    path = f"/{name}"
    server.files[path], server.cut[path], server.drops[path] = PAYLOAD, 50_000, 2
    with pytest.raises(DownloadError, match=r"interrupted 2 times.*50000 bytes are kept.*run the same command"):
        download_file(f"{server.url}{path}", tmp_path / name, prefix=name_hash_prefix(name), retries=1,
                      progress=False)
    assert (tmp_path / f"{name}.part").stat().st_size == 50_000
    dest = download_file(f"{server.url}{path}", tmp_path / name, prefix=name_hash_prefix(name), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests[-1] == (path, "bytes=50000-")


def test_part_file_left_by_a_killed_process_is_resumed(server, tmp_path):
    name = mmseg_name(PAYLOAD)
    server.files[f"/{name}"] = PAYLOAD
    (tmp_path / f"{name}.part").write_bytes(PAYLOAD[:70_000])
    download_file(f"{server.url}/{name}", tmp_path / name, prefix=name_hash_prefix(name), progress=False)
    assert (tmp_path / name).read_bytes() == PAYLOAD
    assert server.requests == [(f"/{name}", "bytes=70000-")]


def test_server_that_ignores_range_restarts_the_file(server, tmp_path):
    name = mmseg_name(PAYLOAD)
    server.files[f"/{name}"] = PAYLOAD
    server.no_range.add(f"/{name}")
    (tmp_path / f"{name}.part").write_bytes(b"x" * 70_000)  # stale bytes that must not be kept
    download_file(f"{server.url}/{name}", tmp_path / name, prefix=name_hash_prefix(name), progress=False)
    assert (tmp_path / name).read_bytes() == PAYLOAD


def test_missing_url_names_the_http_error(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(f"{server.url}/nothing.pth", tmp_path / "nothing.pth", progress=False)


def test_a_changed_file_is_hashed_again(tmp_path):
    path = tmp_path / mmseg_name(PAYLOAD)
    path.write_bytes(PAYLOAD)
    assert verify(path, prefix=name_hash_prefix(path.name)) is None  # hashed and stamped
    path.write_bytes(PAYLOAD[:-1])  # size and mtime change: the stamp no longer applies
    assert "differs from the prefix" in verify(path, prefix=name_hash_prefix(path.name))
