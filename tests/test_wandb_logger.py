"""The W&B logger, run OFFLINE in a temp folder (never online), and the none logger."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from eval.loggers import NoneLogger, WandbLogger
from eval.report.plots import image_grid

sys.path.insert(0, str(Path(__file__).parent))
from test_reports import make_records  # noqa: E402


@pytest.fixture
def offline_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Offline mode, every W&B path inside tmp, no key: nothing can go online."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb_data"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return tmp_path


def test_wandb_offline_writes_run_folder_with_config_tables_and_images(offline_env: Path, capsys) -> None:
    records = make_records(n_images=2)
    run_dir = offline_env / "run"
    run_dir.mkdir()
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    image_grid(images, {"ddim": images * 0.9}, run_dir / "grids" / "reconstructions.png")
    logger = WandbLogger(mode="offline", project="gnri-bench-test", dir=str(run_dir))
    for _, rows in records.groupby(["run_id", "image"], sort=False):
        logger.log_rows(rows)
    assert logger.run is not None
    assert logger.run.config["provenance"]["git_commit"] == records["git_commit"].iloc[0]
    logger.finish(records, run_dir, "# summary\n| a | b |")
    assert logger.run is None
    told = capsys.readouterr().out
    assert "wandb: offline run in " in told and "upload it with: wandb sync " in told
    import wandb

    wandb.teardown()  # stop the W&B service so the offline run log is fully flushed before reading it

    folders = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(folders) == 1, list((run_dir / "wandb").iterdir())
    run = folders[0]
    assert list(run.glob("run-*.wandb"))
    files = run / "files"
    tables = {p.name.split("_")[0] for p in (files / "media" / "table").glob("*.table.json")}
    assert {"results", "paper"} <= tables
    results = json.loads(next((files / "media" / "table").glob("results_*.table.json")).read_text())
    assert "metric" in results["columns"] and len(results["data"]) == len(records)
    pngs = [p.name for p in (files / "media" / "images").rglob("*.png")]
    assert any("reconstructions" in n for n in pngs) and any("quality_vs_time" in n for n in pngs)
    assert list((files / "media" / "html").glob("summary_markdown_*.html"))
    # Offline runs keep config, history and summary in the binary log (uploaded by `wandb sync`).
    log = next(run.glob("run-*.wandb")).read_bytes()
    for key in (b"git_commit", b"image/psnr", b"summary/tiny_sd/ddim10/ddim/psnr"):
        assert key in log, key


def test_disabled_and_none_loggers_write_nothing(offline_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records = make_records(n_images=1)
    monkeypatch.setitem(sys.modules, "wandb", None)  # importing wandb would now fail: it must not be imported
    for logger in (WandbLogger(), NoneLogger()):
        logger.log_rows(records)
        logger.finish(records, offline_env, "summary")
    assert not any(offline_env.rglob("*.wandb"))
    with pytest.raises(ValueError, match="mode must be one of"):
        WandbLogger(mode="sometimes")


def test_logger_configs_build_the_logger(tmp_path: Path) -> None:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    conf = Path(__file__).parents[1] / "conf" / "logger"
    for name, mode in (("wandb_offline", "offline"), ("wandb_online", "online")):
        cfg = OmegaConf.load(conf / f"{name}.yaml")
        cfg.dir = str(tmp_path)  # ${hydra:runtime.output_dir} resolves only inside a Hydra run
        logger = instantiate(cfg)
        assert isinstance(logger, WandbLogger) and logger.mode == mode and logger.run is None


def test_image_names_and_keys_stay_flat() -> None:
    from pathlib import Path as _Path

    from eval.loggers.wandb_logger import image_key
    from eval.report.plots import image_file_name

    assert image_file_name("cat.png") == "cat.png" and image_file_name("dir/dog.jpg") == "dir__dog.jpg.png"
    assert image_key(_Path("images/source/cat.png")) == "images/source/cat"
    assert image_key(_Path("plots/quality_vs_time.png")) == "images/plots/quality_vs_time"
    assert image_key(_Path("grid.png")).count("/") == 2
