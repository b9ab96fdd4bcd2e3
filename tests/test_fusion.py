"""The UDF's oneDNN fusion: conv + LeakyReLU and conv + add as single primitives, same numbers."""

import pytest
import torch

from s2sr import engine
from s2sr.engine import onednn

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")


def _plain(weights):
    module = torch.jit.load(str(weights)).eval()
    return module.to(memory_format=torch.channels_last)


def _probe(weights):
    meta = engine.read_metadata(weights)
    x = engine.texture(meta, "cpu", 40).contiguous(memory_format=torch.channels_last)
    return meta, x


def _kinds(module):
    return [node.kind() for node in module.graph.nodes()]


def _is_fused(module):
    return "mkldnn::_convolution_pointwise" in _kinds(module)


def test_fusion_rewrites_the_convs_and_keeps_float32_results(slim_weights):
    meta, x = _probe(slim_weights)
    module = _plain(slim_weights)
    with torch.inference_mode():
        reference = module(x)
    fused = engine.fuse_onednn(module, x, reference)
    kinds = _kinds(fused)
    assert "mkldnn::_convolution_pointwise" in kinds
    # every activation but the one after the pixel shuffle went into a conv
    assert kinds.count("aten::leaky_relu") == 1
    other = engine.texture(meta, "cpu", 56) * 1.1  # not the probe the fusion was checked on
    with torch.inference_mode():
        a, b = module(other), fused(other)
    assert torch.allclose(a, b, rtol=0, atol=1e-5 * float(a.abs().max()))


def test_fusion_dropped_when_it_changes_the_result(slim_weights, caplog, monkeypatch):
    _, x = _probe(slim_weights)
    module = _plain(slim_weights)
    with torch.inference_mode():
        reference = module(x)
    pattern, replacement = engine.onednn.ONEDNN_FUSIONS[0]
    wrong = replacement.replace('value="leaky_relu"', 'value="relu"').replace("ListConstruct(%slope)", "ListConstruct()")
    monkeypatch.setattr(onednn, "ONEDNN_FUSIONS", ((pattern, wrong),))  # a rewrite that drops the slope
    with caplog.at_level("WARNING", logger="s2sr.engine"):
        assert engine.fuse_onednn(module, x, reference) is module
    assert "fusion changed the result" in caplog.text


def test_fusion_falls_back_where_the_graph_cannot_be_frozen(slim_weights):
    _, x = _probe(slim_weights)
    module = torch.jit.load(str(slim_weights)).train()  # freezing needs eval mode: a stand-in failure
    assert engine.fuse_onednn(module, x, torch.zeros(1)) is module


def test_udf_loads_the_fused_graph_for_fp32(slim_weights):
    path = slim_weights.resolve()
    engine.precision.load_torch.cache_clear()  # loaded here, not taken from another test's cache
    module, _ = engine.precision.load_torch(str(path), *engine.stat_key(path), "cpu", "fp32")
    assert _is_fused(module)
