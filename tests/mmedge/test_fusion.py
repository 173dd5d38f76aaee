"""Fusion math against the formulas (seed article section 4.1) and the registry."""
import itertools

import numpy as np
import pytest
import torch

from mmedge.errors import ConfigError, RegistryError
from mmedge.fusion import FUSION_HEADS, create_fusion_head, list_fusion_heads, register_fusion_head
from mmedge.fusion.contrastive import info_nce
from mmedge.fusion.cross_attention import cross_attention, pooled_cross_attention

DIMS = {"image": 24, "text": 16, "audio": 8}
LENGTHS = {"image": 5, "text": 7, "audio": 3}


def make_feats(batch=3, seed=0, text_valid=(7, 4, 2)):
    g = torch.Generator().manual_seed(seed)
    feats = {}
    for m, d in DIMS.items():
        n = LENGTHS[m]
        feats[f"{m}_seq"] = torch.randn(batch, n, d, generator=g)
        feats[f"{m}_pooled"] = feats[f"{m}_seq"].mean(1)
        feats[f"{m}_mask"] = torch.ones(batch, n)
    for b, valid in enumerate(text_valid[:batch]):
        feats["text_mask"][b, valid:] = 0
    return feats


TRAINABLE = [n for n in list_fusion_heads() if getattr(FUSION_HEADS[n], "trainable", True)]


def test_registry_lists_the_four_heads_and_zero_shot():
    assert list_fusion_heads() == ["bilinear", "concat", "contrastive", "cross_attention", "zero_shot"]
    assert TRAINABLE == ["bilinear", "concat", "contrastive", "cross_attention"]  # zero_shot: tests/mmedge/test_pretrained_towers.py


def test_duplicate_head_name_is_an_error():
    with pytest.raises(RegistryError, match="already registered"):
        register_fusion_head("concat")(object)


def test_unknown_head_lists_valid_choices():
    with pytest.raises(RegistryError, match="unknown fusion head 'gated'.*bilinear, concat, contrastive, cross_attention"):
        create_fusion_head("gated", modalities=("image",), dims=DIMS, num_classes=3)


@pytest.mark.parametrize("name", TRAINABLE)
@pytest.mark.parametrize("mods", [("image", "text"), ("image", "audio"), ("text", "audio"), ("image", "text", "audio")])
@pytest.mark.parametrize("task", ["classification", "matching"])
def test_every_head_on_every_pair_and_triple(name, mods, task):
    if task == "matching" and len(mods) == 3:
        pytest.skip("matching pairs two modalities")
    torch.manual_seed(0)
    classes = 2 if task == "matching" else 5
    head = create_fusion_head(name, modalities=mods, dims=DIMS, num_classes=classes, hidden=16, task=task)
    feats = make_feats()
    logits = head(feats)
    assert logits.shape == (3, classes)
    assert set(head.input_names()) <= set(feats)
    y = torch.tensor([0, 1, 1])
    loss = torch.nn.functional.cross_entropy(logits, y)
    extra = head.extra_loss(feats, y)
    (loss + (extra if extra is not None else 0)).backward()
    grads = [p.grad for p in head.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_head_rejects_modality_without_encoder():
    with pytest.raises(ConfigError, match="no encoder feature size for \\['audio'\\]"):
        create_fusion_head("concat", modalities=("image", "audio"), dims={"image": 4}, num_classes=3)


def test_head_rejects_unknown_modality():
    with pytest.raises(ConfigError, match="unknown modalities \\['video'\\]"):
        create_fusion_head("concat", modalities=("video",), dims=DIMS, num_classes=3)


@pytest.mark.parametrize("name", ["bilinear", "cross_attention"])
def test_interaction_heads_need_two_modalities(name):
    with pytest.raises(ConfigError, match="needs 2 to 3"):
        create_fusion_head(name, modalities=("image",), dims=DIMS, num_classes=3)


def _reference_attention(h1, h2, wq, wk):
    """Independent numpy computation of the seed article's formulas on unpadded sequences."""
    d = h1.shape[-1]
    e = (h1 @ wq) @ (h2 @ wk).T / np.sqrt(d)
    a = np.exp(e - e.max(1, keepdims=True))
    a = a / a.sum(1, keepdims=True)
    return a, a @ h2, a.T @ h1


def test_cross_attention_matches_the_formulas_with_padding():
    g = torch.Generator().manual_seed(1)
    b, n1, n2, d = 3, 6, 5, 8
    h1, h2 = torch.randn(b, n1, d, generator=g), torch.randn(b, n2, d, generator=g)
    wq, wk = torch.randn(d, d, generator=g), torch.randn(d, d, generator=g)
    valid1, valid2 = [6, 4, 1], [5, 2, 3]
    m1 = torch.tensor([[1.0] * v + [0.0] * (n1 - v) for v in valid1])
    m2 = torch.tensor([[1.0] * v + [0.0] * (n2 - v) for v in valid2])
    a, t1, t2 = cross_attention(h1, h2, wq, wk, m1, m2)
    assert a.shape == (b, n1, n2) and t1.shape == (b, n1, d) and t2.shape == (b, n2, d)
    torch.testing.assert_close(a.sum(-1), torch.ones(b, n1))  # every row sums to 1
    for i in range(b):
        v1, v2 = valid1[i], valid2[i]
        ra, rt1, rt2 = _reference_attention(h1[i, :v1].double().numpy(), h2[i, :v2].double().numpy(),
                                            wq.double().numpy(), wk.double().numpy())
        np.testing.assert_allclose(a[i, :v1, :v2].numpy(), ra, atol=1e-5)
        assert float(a[i, :, v2:].abs().sum()) == 0.0  # padded keys get no weight
        np.testing.assert_allclose(t1[i, :v1].numpy(), rt1, atol=1e-4)  # H1~ = A H2
        np.testing.assert_allclose(t2[i, :v2].numpy(), rt2, atol=1e-4)  # H2~ = A^T H1


def test_pooled_cross_attention_is_the_masked_means_of_the_formulas():
    g = torch.Generator().manual_seed(2)
    b, n1, n2, d = 3, 6, 5, 8
    h1, h2 = torch.randn(b, n1, d, generator=g), torch.randn(b, n2, d, generator=g)
    wq, wk = torch.randn(d, d, generator=g), torch.randn(d, d, generator=g)
    m1 = torch.tensor([[1.0] * v + [0.0] * (n1 - v) for v in (6, 4, 1)])
    m2 = torch.tensor([[1.0] * v + [0.0] * (n2 - v) for v in (5, 2, 3)])
    _, t1, t2 = cross_attention(h1, h2, wq, wk, m1, m2)
    p1, p2 = pooled_cross_attention(h1, h2, wq @ wk.T / np.sqrt(d), m1, m2)
    for i, (v1, v2) in enumerate(((6, 5), (4, 2), (1, 3))):  # plain means over the valid rows
        np.testing.assert_allclose(p1[i].numpy(), t1[i, :v1].mean(0).numpy(), atol=1e-5)
        np.testing.assert_allclose(p2[i].numpy(), t2[i, :v2].mean(0).numpy(), atol=1e-5)


def test_cross_attention_head_ignores_padding_content():
    torch.manual_seed(0)
    head = create_fusion_head("cross_attention", modalities=("image", "text"), dims=DIMS, num_classes=4, hidden=16).eval()
    feats = make_feats()
    changed = dict(feats, text_seq=feats["text_seq"].clone())
    changed["text_seq"][2, 2:] = 1e3  # row 2 has 2 valid tokens
    torch.testing.assert_close(head(feats), head(changed))


def test_cross_attention_head_uses_all_pairs():
    head = create_fusion_head("cross_attention", modalities=("image", "text", "audio"), dims=DIMS, num_classes=4, hidden=16)
    assert head.pairs == list(itertools.combinations(("image", "text", "audio"), 2))
    out = head.attend(make_feats())
    assert [o[0].shape for o in out] == [(3, 5, 7), (3, 5, 3), (3, 7, 3)]


def test_bilinear_two_modalities_is_a_low_rank_bilinear_form():
    torch.manual_seed(0)
    head = create_fusion_head("bilinear", modalities=("image", "text"), dims=DIMS, num_classes=3, hidden=6, rank=3).eval()
    feats = make_feats()
    x = head.proj["image"][0](feats["image_pooled"])  # LayerNorm'd inputs
    y = head.proj["text"][0](feats["text_pooled"])
    li, lt = head.proj["image"][1], head.proj["text"][1]
    # W_o = sum_k U_ok^T V_ok on inputs augmented with 1 (the linear layers' biases).
    u = torch.cat([li.weight, li.bias[:, None]], 1).view(6, 3, -1)
    v = torch.cat([lt.weight, lt.bias[:, None]], 1).view(6, 3, -1)
    w = torch.einsum("oki,okj->oij", u, v)  # (hidden, Di+1, Dt+1)
    xa, ya = torch.cat([x, torch.ones(3, 1)], 1), torch.cat([y, torch.ones(3, 1)], 1)
    z = torch.einsum("bi,oij,bj->bo", xa, w, ya)
    z = torch.nn.functional.normalize(torch.sign(z) * torch.sqrt(z.abs() + 1e-8), dim=-1)
    torch.testing.assert_close(head.fuse(feats), z, atol=1e-5, rtol=1e-4)


def test_info_nce_against_manual_computation():
    g = torch.Generator().manual_seed(0)
    za = torch.nn.functional.normalize(torch.randn(4, 5, generator=g), dim=-1)
    zb = torch.nn.functional.normalize(torch.randn(4, 5, generator=g), dim=-1)
    s = torch.tensor(10.0)
    logits = (s * za @ zb.T).double().numpy()
    lse_r = np.log(np.exp(logits).sum(1))
    lse_c = np.log(np.exp(logits).sum(0))
    manual = 0.5 * ((lse_r - np.diag(logits)).mean() + (lse_c - np.diag(logits)).mean())
    assert abs(float(info_nce(za, zb, s)) - manual) < 1e-5


def test_contrastive_matching_is_a_sigmoid_of_scaled_cosine():
    torch.manual_seed(0)
    head = create_fusion_head("contrastive", modalities=("image", "text"), dims=DIMS, num_classes=2, hidden=8, task="matching").eval()
    feats = make_feats()
    z = head.embed(feats)
    cos = (z["image"] * z["text"]).sum(-1)
    p_match = torch.softmax(head(feats), -1)[:, 1]
    torch.testing.assert_close(p_match, torch.sigmoid(head.scale() * cos + head.bias))


def test_contrastive_logit_scale_is_clamped_at_100():
    head = create_fusion_head("contrastive", modalities=("image", "text"), dims=DIMS, num_classes=3, hidden=8)
    with torch.no_grad():
        head.logit_scale.fill_(10.0)
    assert float(head.scale().detach()) == 100.0
    assert "contrastive" in FUSION_HEADS
