"""Test-wide settings: offline hubs, wandb disabled, denormals flushed, real configs composed."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "disabled"
os.environ["TQDM_DISABLE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from synthrel.run import CONF_DIR  # noqa: E402
from synthrel.runtime import setup_runtime  # noqa: E402

setup_runtime()
# One intra-op thread per test process: tiny models on a loaded 2-core machine run ~10x faster than with
# threads fighting over the cores (pytest-xdist already runs two processes).
torch.set_num_threads(1)


def pytest_addoption(parser):
    parser.addoption("--full", action="store_true",
                     help="also run the tests marked `full`: every README command and recipe (make test-full)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--full"):
        return
    skip = pytest.mark.skip(reason="every README command and experiments/ recipe on the tiny profile: make test-full")
    for item in items:
        if "full" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Every test runs on one intra-op thread, whatever an earlier in-process stage run (`cpu_threads`) set."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def compose_cfg(tmp_path):
    """Compose the real config with overrides; outputs go under tmp_path."""

    def _compose(*overrides: str):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(
                config_name="config",
                overrides=[f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path}/run", *overrides],
            )

    return _compose
