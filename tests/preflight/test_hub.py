"""Hub items offline: which files a download selects, the `hf download` line, the snapshot_download call,
and the cache states read through huggingface_hub from a cache laid out as the hub writes it."""

from __future__ import annotations

import fnmatch
import json
import shlex
from pathlib import Path

import huggingface_hub
import pytest

from synthrel.preflight import hub

#: the file list of stable-diffusion-v1-5/stable-diffusion-v1-5 (abridged: every kind of file it holds)
SD15_FILES = [
    ".gitattributes", "README.md", "model_index.json", "v1-5-pruned.ckpt", "v1-5-pruned.safetensors",
    "v1-5-pruned-emaonly.ckpt", "v1-5-pruned-emaonly.safetensors", "v1-inference.yaml",
    "feature_extractor/preprocessor_config.json", "safety_checker/config.json", "safety_checker/model.safetensors",
    "safety_checker/pytorch_model.bin", "scheduler/scheduler_config.json",
    "text_encoder/config.json", "text_encoder/model.safetensors", "text_encoder/model.fp16.safetensors",
    "text_encoder/pytorch_model.bin", "tokenizer/merges.txt", "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json", "tokenizer/vocab.json", "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors",
    "unet/diffusion_pytorch_model.non_ema.safetensors", "unet/diffusion_pytorch_model.bin",
    "vae/config.json", "vae/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.fp16.bin",
]
SD15_NEEDED = {
    "model_index.json", "feature_extractor/preprocessor_config.json",
    "scheduler/scheduler_config.json", "text_encoder/config.json", "text_encoder/model.safetensors",
    "tokenizer/merges.txt", "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
}


def test_pipeline_download_takes_full_precision_safetensors_only():
    assert set(hub.select_files(SD15_FILES, "diffusers")) == SD15_NEEDED


def test_transformers_download_falls_back_to_bin_only_without_safetensors():
    both = ["config.json", "preprocessor_config.json", "model.safetensors", "pytorch_model.bin", "tf_model.h5"]
    assert set(hub.select_files(both, "transformers")) == {"config.json", "preprocessor_config.json",
                                                          "model.safetensors"}
    only_bin = ["config.json", "pytorch_model.bin", "flax_model.msgpack"]
    assert set(hub.select_files(only_bin, "transformers")) == {"config.json", "pytorch_model.bin"}


def test_cli_command_patterns_select_the_same_pipeline_weights():
    """The printed `hf download` line, applied as the CLI applies its patterns, fetches what the preflight would."""
    args = shlex.split(hub.cli_command("stable-diffusion-v1-5/stable-diffusion-v1-5", "diffusers"))
    assert args[:3] == ["hf", "download", "stable-diffusion-v1-5/stable-diffusion-v1-5"]
    include = [args[i + 1] for i, a in enumerate(args) if a == "--include"]
    exclude = [args[i + 1] for i, a in enumerate(args) if a == "--exclude"]
    fetched = {f for f in SD15_FILES if any(fnmatch.fnmatch(f, p) for p in include)
               and not any(fnmatch.fnmatch(f, p) for p in exclude)}
    assert fetched == SD15_NEEDED


@pytest.mark.parametrize("files", [["config.json", "model.safetensors", "tf_model.h5"],
                                   ["config.json", "pytorch_model.bin", "flax_model.msgpack"]])
def test_cli_command_of_a_transformers_model_fetches_its_weights(files):
    args = shlex.split(hub.cli_command("org/model", "transformers"))
    include = [args[i + 1] for i, a in enumerate(args) if a == "--include"]
    fetched = {f for f in files if any(fnmatch.fnmatch(f, p) for p in include)}
    assert fetched >= set(hub.select_files(files, "transformers")) and not any(f.endswith((".h5", ".msgpack"))
                                                                                for f in fetched)


def test_download_calls_snapshot_download_with_the_selected_files(monkeypatch, tmp_path):
    calls = {}

    class FakeApi:
        def model_info(self, repo_id, files_metadata):
            calls["info"] = (repo_id, files_metadata)
            return type("Info", (), {"siblings": [type("S", (), {"rfilename": f, "size": 1})() for f in SD15_FILES]})

    def fake_snapshot_download(**kwargs):
        calls["snapshot"] = kwargs
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    assert hub.download("stable-diffusion-v1-5/stable-diffusion-v1-5", "diffusers", cache_dir="/c") == tmp_path
    assert calls["info"] == ("stable-diffusion-v1-5/stable-diffusion-v1-5", True)
    assert calls["snapshot"]["repo_id"] == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert calls["snapshot"]["cache_dir"] == "/c"
    assert set(calls["snapshot"]["allow_patterns"]) == SD15_NEEDED


def fake_cache(cache: Path, repo_id: str, files: dict[str, bytes]) -> Path:
    """A repository in the HF cache layout: refs/main -> snapshots/<commit>/<file> -> ../blobs/<hash>."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    for i, (name, data) in enumerate(files.items()):
        blob = repo / "blobs" / f"blob{i}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("../" * (name.count("/") + 2)) / "blobs" / blob.name)
    return repo


PIPELINE_INDEX = json.dumps({"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
                             "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
                             "tokenizer": ["transformers", "CLIPTokenizer"],
                             "scheduler": ["diffusers", "PNDMScheduler"],
                             "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
                             "image_encoder": [None, None]}).encode()
PIPELINE = {"model_index.json": PIPELINE_INDEX, "unet/config.json": b"{}",
            "unet/diffusion_pytorch_model.safetensors": b"u", "vae/config.json": b"{}",
            "vae/diffusion_pytorch_model.safetensors": b"v", "text_encoder/config.json": b"{}",
            "text_encoder/model.safetensors": b"t", "tokenizer/vocab.json": b"{}",
            "scheduler/scheduler_config.json": b"{}"}


@pytest.mark.parametrize("case", ["complete", "no_unet", "broken_link", "absent"])
def test_cache_states(tmp_path, case):
    repo_id = "org/pipeline"
    if case != "absent":
        files = {k: v for k, v in PIPELINE.items() if not (case == "no_unet" and k.endswith("model.safetensors")
                                                          and k.startswith("unet"))}
        repo = fake_cache(tmp_path, repo_id, files)
        if case == "broken_link":
            blob = (repo / "snapshots").glob("*/vae/diffusion_pytorch_model.safetensors").__next__().resolve()
            blob.unlink()
    state = hub.cache_state(repo_id, "diffusers", cache_dir=str(tmp_path))
    expected = {"complete": "in HF cache", "no_unet": "incomplete in HF cache",
                "broken_link": "incomplete in HF cache", "absent": "missing"}[case]
    assert state.status == expected
    if case == "no_unet":
        assert "no weights for unet" in state.detail
    if case == "broken_link":
        assert "no weights for vae" in state.detail
    if case == "complete":
        assert hub.cached_bytes(repo_id, cache_dir=str(tmp_path)) == sum(len(v) for v in PIPELINE.values())


def test_transformers_model_without_weights_is_incomplete(tmp_path):
    fake_cache(tmp_path, "org/model", {"config.json": b"{}", "preprocessor_config.json": b"{}"})
    assert hub.cache_state("org/model", "transformers", cache_dir=str(tmp_path)).status == "incomplete in HF cache"
    fake_cache(tmp_path / "b", "org/model", {"config.json": b"{}", "model.safetensors": b"w"})
    assert hub.cache_state("org/model", "transformers", cache_dir=str(tmp_path / "b")).status == "in HF cache"
