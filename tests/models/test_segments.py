"""PrefixSegments (r1core.models.segments): the mask-free shared-prefix attention equals attention
under its dense boolean mask, outputs and gradients in float64, on random layouts (prefix or none,
segments of awkward lengths, padding, several packed rows, GQA, Dv != D, buckets of mixed lengths)."""
import pytest
import torch
import torch.nn.functional as F

from r1core.models import segments
from r1core.models.attention import attend
from r1core.models.segments import PrefixSegments


@pytest.fixture(autouse=True)
def segment_path(monkeypatch):
    """Test widths are small: switch off the CPU dense shortcut so the mask-free path runs."""
    monkeypatch.setattr(segments, "_DENSE_MAX_CPU", 0)


def _random_layout(gen, U=3, max_seg=5):
    prefix, spans, widths = [], [], []
    for u in range(U):
        P = int(torch.randint(0, 6, (1,), generator=gen)) if u else 0      # row 0: no prefix (a 1-token prompt)
        at, segs = P, []
        for _ in range(int(torch.randint(1, max_seg + 1, (1,), generator=gen))):
            n = int(torch.randint(1, 12, (1,), generator=gen))
            segs.append((at, n))
            at += n
        prefix.append(P)
        spans.append(segs)
        widths.append(at)
    S = max(widths) + 2                                                     # trailing padding columns
    return PrefixSegments(prefix, spans, S), S


def _real(layout):
    """[U, S] bool: columns that hold a prefix or segment token (the others are padding)."""
    U, S = layout.shape
    real = torch.zeros(U, S, dtype=torch.bool)
    for u, (P, segs) in enumerate(zip(layout.prefix_lens, layout.segments)):
        real[u, :P] = True
        for a, n in segs:
            real[u, a:a + n] = True
    return real


@pytest.mark.parametrize("H,Hkv,D,Dv", [(4, 2, 8, 8), (3, 3, 5, 7), (6, 1, 4, 4)])
def test_segments_equal_dense_mask_float64(H, Hkv, D, Dv, gen):
    layout, S = _random_layout(gen)
    U = layout.shape[0]
    q = torch.randn(U, H, S, D, generator=gen, dtype=torch.float64, requires_grad=True)
    k = torch.randn(U, Hkv, S, D, generator=gen, dtype=torch.float64, requires_grad=True)
    v = torch.randn(U, Hkv, S, Dv, generator=gen, dtype=torch.float64, requires_grad=True)
    real = _real(layout)[:, None, :, None]
    w = torch.randn(U, H, S, Dv, generator=gen, dtype=torch.float64) * real          # padding outputs unused
    out = attend(q, k, v, scale=0.37, mask=layout)
    grads = torch.autograd.grad((out * w).sum(), (q, k, v))
    mask = layout.dense_mask()
    kr, vr = k.repeat_interleave(H // Hkv, 1), v.repeat_interleave(H // Hkv, 1)
    ref = F.scaled_dot_product_attention(q, kr, vr, attn_mask=mask, scale=0.37)
    ref_grads = torch.autograd.grad((ref * w).sum(), (q, k, v))
    torch.testing.assert_close(out * real, ref * real, rtol=1e-12, atol=1e-12)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)


def test_buckets_pad_little_and_cover_every_token(gen):
    """Mixed lengths split into buckets (padding within _SLACK of the real work); every real token's
    output comes from exactly one sequence; work far below the dense S² of the packed row."""
    layout = PrefixSegments([4], [[(4, 300), (304, 10), (314, 11), (325, 290), (615, 12)]], 627)
    assert len(layout.buckets) == 2
    real_pairs = sum((4 + n) * (4 + n + 1) // 2 for _, n in layout.segments[0])
    assert layout.score_pairs() <= 1.25 * real_pairs + 1
    assert layout.score_pairs() < 0.5 * 627 * 628 // 2
    assert sorted(layout.first_cols.tolist()) == list(range(627))          # every column owned exactly once
    assert len(set(layout.first_pos.tolist())) == 627
    assert layout.dup_cols.tolist() == [0, 1, 2, 3] * 4                    # the prefix, repeated per extra segment


def test_layout_errors():
    with pytest.raises(ValueError, match="do not fit"):
        PrefixSegments([3], [[(2, 4)]], 10)                   # a segment overlapping the prefix
    with pytest.raises(ValueError, match="do not fit"):
        PrefixSegments([3], [[(3, 8)]], 10)                   # past the width
    with pytest.raises(ValueError, match="one entry"):
        PrefixSegments([3, 1], [[(3, 2)]], 10)
    layout = PrefixSegments([2], [[(2, 3)]], 5)
    with pytest.raises(ValueError, match="shape"):
        layout.attend(torch.randn(1, 2, 6, 4), torch.randn(1, 2, 6, 4), torch.randn(1, 2, 6, 4), scale=1.0)


def test_no_quadratic_mask_is_built(gen):
    """At S = 8k packed tokens the layout's index tensors are O(S), not S² (the dense mask would be
    64 MiB per row)."""
    layout = PrefixSegments([100], [[(100 + 2000 * i, 2000) for i in range(4)]], 8100)
    held = layout.flat.numel() + layout.first_pos.numel() + layout.dup_pos.numel()
    assert held < 5 * 8100


def test_packed_documents_run_without_a_mask_and_equal_the_dense_mask(tmp_path, gen):
    """position_ids that restart (documents packed in a row, no padding) take the PrefixSegments
    path; its logits and gradients equal those under the dense document mask (float64)."""
    import r1core
    from r1core.models.transformer import _padding_and_packing_mask
    from tiny import tiny_hf
    hf, _ = tiny_hf("qwen3")
    hf.save_pretrained(tmp_path)
    model = r1core.load_model(tmp_path, dtype=torch.float64).train()
    ids = torch.randint(1, model.config.vocab_size, (2, 13), generator=gen)
    pos = torch.tensor([list(range(5)) + list(range(8)), list(range(3)) + list(range(6)) + list(range(4))])
    layout = _padding_and_packing_mask(None, pos)
    assert isinstance(layout, PrefixSegments) and layout.segments == [[(0, 5), (5, 8)], [(0, 3), (3, 6), (9, 4)]]
    w = torch.randn(2, 13, model.config.vocab_size, generator=gen, dtype=torch.float64)
    out = model(ids, position_ids=pos)
    g = torch.autograd.grad((out * w).sum(), list(model.parameters()))
    ref = model(ids, position_ids=pos, attention_mask=layout.dense_mask())
    g_ref = torch.autograd.grad((ref * w).sum(), list(model.parameters()))
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_short_cpu_rows_take_the_dense_mask_and_agree(monkeypatch, gen):
    layout, S = _random_layout(gen)
    U = layout.shape[0]
    q, k, v = (torch.randn(U, h, S, 6, generator=gen, dtype=torch.float64) for h in (4, 2, 2))
    real = _real(layout)[:, None, :, None]
    free = attend(q, k, v, scale=0.5, mask=layout)
    monkeypatch.setattr(segments, "_DENSE_MAX_CPU", 1024)
    dense = attend(q, k, v, scale=0.5, mask=layout)
    assert layout._dense is not None                      # built once, then shared by the layers
    torch.testing.assert_close(free * real, dense * real, rtol=1e-12, atol=1e-12)
