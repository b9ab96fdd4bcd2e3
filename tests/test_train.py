"""Training smoke tests: two steps end to end (pre-training and GAN), resume == uninterrupted,
config files and overrides, export of a checkpoint."""

import csv
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from s2sr.training.bands import BANDS
from s2sr.training.export import export
from s2sr.training.train import (
    TrainConfig, Trainer, apply_overrides, config_from_dict, export_checkpoint, main, preset,
)
from s2sr import engine


@pytest.fixture(scope="module")
def wald_cache(tmp_path_factory):
    from s2sr.training.data.wald import cache_wald_pairs

    return str(cache_wald_pairs(tmp_path_factory.mktemp("wald") / "pairs.npz"))


def _cfg(tmp_path, wald_cache, **kw):
    base = TrainConfig(arch="carn_1x3x64g4sw", steps=2, batch_size=2, patch=16, val_every=1, log_every=1,
                       data_cache=wald_cache, out=str(tmp_path / "run"))
    return replace(base, **kw)


def test_two_step_pretraining(tmp_path, wald_cache):
    trainer = Trainer(_cfg(tmp_path, wald_cache))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    summary = trainer.fit(progress=False)
    assert summary["steps"] == 2 and summary["trained"]
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    run = tmp_path / "run"
    assert (run / "last.pt").exists() and (run / "best.pt").exists()
    assert len((run / "train.csv").read_text().splitlines()) == 3 and "val_l1" in (run / "val.csv").read_text()


def test_two_step_gan_finetuning(tmp_path, wald_cache):
    from s2sr.training.train import GANConfig

    cfg = _cfg(tmp_path, wald_cache, gan=GANConfig(enabled=True, start_step=0, ramp_steps=1, weight=0.01, features=8))
    trainer = Trainer(cfg)
    rows = [trainer.train_step(s) for s in range(2)]
    assert rows[0]["gan_weight"] == 0.0 and rows[1]["gan_weight"] == pytest.approx(0.01)
    assert "g_adv" in rows[1] and "d_loss" in rows[0]
    trainer.step = 2
    trainer.maybe_validate()
    # two steps do not beat bicubic: BRISQUE may not pick an unfaithful checkpoint
    row = next(csv.DictReader(open(tmp_path / "run" / "val.csv")))
    assert float(row["brisque"]) > 0 and float(row["psnr_gain_min"]) < 0
    per_band = next(csv.DictReader(open(tmp_path / "run" / "val_brisque.csv")))  # BRISQUE per band, beside val.csv
    assert list(per_band)[1:] == list(BANDS) and abs(np.mean([float(per_band[b]) for b in BANDS]) - float(row["brisque"])) < 1e-6
    assert trainer.best["metric"] is None and not (tmp_path / "run" / "best.pt").exists()


def test_brisque_selection_keeps_radiometry(tmp_path, wald_cache):
    from s2sr.training.train import GANConfig

    cfg = _cfg(tmp_path, wald_cache, gan=GANConfig(enabled=True, start_step=10, max_psnr_drop_db=0.5))
    trainer = Trainer(cfg)
    (tmp_path / "run" / "val.csv").write_text("step,val_l1,psnr_sr,psnr_bicubic,psnr_gain_min,brisque\n"
                                      "10,0.05,45.0,40.0,2.0,nan\n")
    assert trainer.eligible({"psnr_sr": 44.6, "psnr_gain_min": 1.0})
    assert not trainer.eligible({"psnr_sr": 44.4, "psnr_gain_min": 1.0})  # 0.6 dB below pre-GAN
    assert not trainer.eligible({"psnr_sr": 45.2, "psnr_gain_min": -0.1})  # one band below bicubic


def test_resume_equals_uninterrupted(tmp_path, wald_cache):
    straight = Trainer(_cfg(tmp_path / "a", wald_cache, steps=3, val_every=100))
    straight.fit(progress=False)
    cut = Trainer(_cfg(tmp_path / "b", wald_cache, steps=3, val_every=100))
    cut.fit(max_steps=1, progress=False)
    resumed = Trainer(_cfg(tmp_path / "b", wald_cache, steps=3, val_every=100))
    assert resumed.step == 1
    resumed.fit(progress=False)
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_resume_refuses_another_architecture(tmp_path, wald_cache):
    Trainer(_cfg(tmp_path, wald_cache)).fit(max_steps=1, progress=False)
    with pytest.raises(ValueError, match="trained with arch='carn_1x3x64g4sw'"):
        Trainer(_cfg(tmp_path, wald_cache, arch="carn_2x3x64g4sw"))


def test_checkpoint_exports_to_weights_the_udf_loads(tmp_path, wald_cache):
    trainer = Trainer(_cfg(tmp_path, wald_cache))
    trainer.fit(progress=False)
    meta = export_checkpoint(tmp_path / "run" / "best.pt", tmp_path / "w.pt")
    assert meta["training"]["trained"] and meta["training"]["steps"] >= 1
    module, loaded = engine.load_model({"weights": str(tmp_path / "w.pt")})[:2]
    assert loaded["architecture"] == "carn_1x3x64g4sw"


def test_presets_exist_for_all_architectures():
    from s2sr.training.models import ARCHITECTURES

    for name in ARCHITECTURES:
        assert preset(name).arch == name
    with pytest.raises(ValueError, match="no preset 'nope'"):
        preset("nope")


def test_config_files_and_overrides(tmp_path):
    (tmp_path / "c.toml").write_text('arch = "esrgan_3x64x32"\nsteps = 7\n[gan]\nenabled = true\n')
    (tmp_path / "c.yaml").write_text("arch: esrgan_3x64x32\nsteps: 7\ngan:\n  enabled: true\n")
    from s2sr.training.train import load_config_file

    a = config_from_dict(load_config_file(tmp_path / "c.toml"))
    b = config_from_dict(load_config_file(tmp_path / "c.yaml"))
    assert a == b and a.gan.enabled and a.steps == 7
    c = apply_overrides(a, ["steps=9", "gan.weight=0.01", "bf16=true", "noise_dn=1,2,3,4,5,6,7,8,9,10"])
    assert (c.steps, c.gan.weight, c.bf16, c.noise_dn[9]) == (9, 0.01, True, 10.0)
    with pytest.raises(ValueError, match="unknown training config keys \\['stpes'\\]"):
        config_from_dict({"stpes": 3})
    with pytest.raises(ValueError, match="unknown gan config key 'wieght'"):
        apply_overrides(a, ["gan.wieght=1"])
    with pytest.raises(ValueError, match="multiple of 8"):
        TrainConfig(patch=12)
    with pytest.raises(ValueError, match="band_weights needs 10 values"):
        apply_overrides(a, ["band_weights=2,1"])


def test_cli_runs_two_steps(tmp_path, wald_cache, capsys):
    assert main(["--preset", "carn_1x3x64g4sw", "--out", str(tmp_path / "cli"), "--set", "steps=2", "--set", "batch_size=1",
                 "--set", "patch=8", "--set", f"data_cache={wald_cache}", "--set", "val_every=2",
                 "--export", str(tmp_path / "cli.pt")]) == 0
    assert engine.read_metadata(tmp_path / "cli.pt")["training"]["steps"] == 2


def test_warm_start_from_exported_weights(tmp_path, wald_cache):
    first = Trainer(_cfg(tmp_path / "a", wald_cache))
    first.fit(progress=False)
    export_checkpoint(Path(first.out) / "last.pt", tmp_path / "w.pt")
    second = Trainer(_cfg(tmp_path / "b", wald_cache, init_from=str(tmp_path / "w.pt")))
    assert second.step == 0
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        torch.testing.assert_close(a, b)
    # the warm start's hash is the file as trained from, kept through export even once it is replaced
    trained_from = engine.sha256_file(tmp_path / "w.pt")
    assert second.summary()["init_from"] == {"path": str(tmp_path / "w.pt"), "sha256": trained_from}
    second.fit(progress=False)
    (tmp_path / "w.pt").write_bytes(b"a later default")
    export_checkpoint(Path(second.out) / "last.pt", tmp_path / "w2.pt")
    init = engine.read_metadata(tmp_path / "w2.pt")["training"]["init_from"]
    assert init["sha256"] == trained_from and init["steps_here"] == second.step


def test_band_weights_weigh_the_l1_term(tmp_path, wald_cache):
    """Weights 1 on B02 alone: the step's L1 is B02's own error on the batch (the same batch and
    weights as an unweighted trainer's step, whose L1 is the mean over all bands)."""
    only_b02 = (1.0,) + (0.0,) * 9
    plain = Trainer(_cfg(tmp_path / "a", wald_cache))
    weighted = Trainer(_cfg(tmp_path / "b", wald_cache, band_weights=only_b02))
    x, y = plain.batches(0)
    with torch.no_grad():
        pred = plain.model.forward_normalized(plain.model.normalize(x)).float()
    per_band = (pred - plain.model.normalize(y)).abs().mean(dim=(0, 2, 3))
    assert weighted.train_step(0)["l1"] == pytest.approx(float(per_band[0]), rel=1e-4)
    assert plain.train_step(0)["l1"] == pytest.approx(float(per_band.mean()), rel=1e-4)
    assert "band weights B02 1, B03 0" in weighted.summary()["loss"]


def test_warmup_ramps_the_learning_rate(tmp_path, wald_cache):
    """The learning rate climbs linearly over warmup_steps, then follows the cosine schedule."""
    trainer = Trainer(_cfg(tmp_path, wald_cache, lr=1e-3, lr_min=0.0, restart_period=1000, warmup_steps=4, steps=6))
    rates = []
    for step in range(6):
        rates.append(trainer.opt.param_groups[0]["lr"])
        trainer.train_step(step)
    cosine = [1e-3 * (1 + math.cos(math.pi * s / 1000)) / 2 for s in range(6)]
    assert rates == pytest.approx([cosine[s] * min(1.0, (s + 1) / 4) for s in range(6)], rel=1e-9)


def test_subset_warm_start_from_a_deeper_model(tmp_path, wald_cache):
    """A one-cascade CARN starts from a two-cascade one: its first cascade, head, upsampling and
    tail; the deeper model's second cascade is left out; without init_subset the load refuses."""
    deep = Trainer(_cfg(tmp_path / "a", wald_cache, arch="carn_2x3x64g4sw"))
    deep.fit(progress=False)
    export_checkpoint(Path(deep.out) / "last.pt", tmp_path / "deep.pt")
    shallow = Trainer(_cfg(tmp_path / "b", wald_cache, init_from=str(tmp_path / "deep.pt"), init_subset=True))
    theirs = deep.model.state_dict()
    for name, tensor in shallow.model.state_dict().items():
        torch.testing.assert_close(tensor, theirs[name])
    assert "backbone.cascades.1.fusions.0.weight" in theirs
    with pytest.raises(RuntimeError, match="Unexpected key"):
        Trainer(_cfg(tmp_path / "c", wald_cache, init_from=str(tmp_path / "deep.pt")))
    shallow.fit(progress=False)
    with pytest.raises(ValueError, match="lacks"):  # a deeper model from a shallower one: nothing to start its cascade
        Trainer(_cfg(tmp_path / "d", wald_cache, arch="carn_2x3x64g4sw", init_subset=True,
                     init_from=str(Path(shallow.out) / "last.pt")))


def test_distillation_adds_the_teachers_l1(tmp_path, wald_cache):
    """The teacher's output on the step's own input is a second L1 target: a student started
    from the teacher's weights has none of it (so the teacher runs with the reflection padding it
    was trained with, though its exported file pads with zeros), and the loss adds it weighted."""
    first = Trainer(_cfg(tmp_path / "a", wald_cache))
    first.fit(progress=False)
    state = torch.load(Path(first.out) / "last.pt", weights_only=False)
    export(first.model, state["config"]["arch"], tmp_path / "t.pt", padding="zeros")  # as the shipped weights
    same = Trainer(_cfg(tmp_path / "b", wald_cache, init_from=str(tmp_path / "t.pt"), teacher=str(tmp_path / "t.pt"),
                        teacher_weight=0.5))
    assert same.train_step(0)["teacher_l1"] == pytest.approx(0.0, abs=1e-6)
    fresh = Trainer(_cfg(tmp_path / "c", wald_cache, teacher=str(tmp_path / "t.pt"), teacher_weight=0.5))
    x, y = fresh.batches(0)
    with torch.no_grad():
        z = fresh.model.normalize(x)
        expected = (fresh.model.forward_normalized(z) - first.model.forward_normalized(z)).abs().mean()
    row = fresh.train_step(0)
    assert row["teacher_l1"] == pytest.approx(float(expected), rel=1e-4)
    assert row["loss"] == pytest.approx(row["l1"] + 0.5 * row["teacher_l1"], rel=1e-5)
    summary = fresh.summary()
    assert summary["teacher"]["sha256"] == engine.sha256_file(tmp_path / "t.pt") and "teacher" in summary["loss"]
    with pytest.raises(ValueError, match="go together"):
        Trainer(_cfg(tmp_path / "d", wald_cache, teacher_weight=1.0))


def test_export_cli_takes_the_checkpoint_s_architecture(tmp_path, wald_cache):
    """``s2sr-export --checkpoint`` builds the architecture the checkpoint was trained as (not the
    default's), and refuses an --arch that contradicts it."""
    from s2sr.training.export import main as export_main

    trainer = Trainer(_cfg(tmp_path, wald_cache))
    trainer.fit(progress=False)
    last = str(Path(trainer.out) / "last.pt")
    assert export_main(["--checkpoint", last, "--out", str(tmp_path / "w")]) == 0
    assert engine.read_metadata(tmp_path / "w" / "carn_1x3x64g4sw.pt")["architecture"] == "carn_1x3x64g4sw"
    with pytest.raises(SystemExit):
        export_main(["--checkpoint", last, "--arch", "carn_3x3x64g4sw", "--out", str(tmp_path / "x")])
