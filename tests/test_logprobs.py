"""ulma.logprobs: worked numbers, agreement with the naive full log-softmax, masking, log(1 − p), gradients."""
import math

import pytest
import torch

from ulma.logprobs import LOG1M_FLOOR, naive_sequence_logps, sequence_logps


def assert_close(actual, expected, rtol, atol):
    # torch.allclose rather than torch.testing.assert_close: the latter's import costs a CPU-second
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    assert torch.allclose(actual, expected, rtol=rtol, atol=atol), (actual - expected).abs().max()


def _log_softmax_at(row, index):
    """log softmax(row)[index] with the math module."""
    return row[index] - math.log(sum(math.exp(v) for v in row))


def _batch(b=3, t=9, v=13, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(b, t, v, generator=g)).to(dtype)
    labels = torch.randint(0, v, (b, t), generator=g)
    labels[:2, :3] = -100  # prompts of 3 tokens
    labels[2:, :1] = -100  # a prompt of 1 token
    labels[1, 7:] = -100  # right padding
    return logits, labels


def test_worked_numbers():
    rows = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [2.0, 2.0, 2.0]]  # positions 0, 1, 2 (the last predicts nothing)
    logits = torch.tensor([rows, rows[::-1]])
    # row 0: a prompt token, then response tokens 1 and 2; row 1: two prompt tokens, one response token 0
    labels = torch.tensor([[-100, 1, 2], [-100, -100, 0]])
    expected = [_log_softmax_at(rows[0], 1) + _log_softmax_at(rows[1], 2), _log_softmax_at(rows[1], 0)]
    out = sequence_logps(logits, labels, chunk_size=2)
    assert out.logps.dtype == torch.float32 and out.num_tokens.dtype == torch.long
    assert out.logps.tolist() == pytest.approx(expected, abs=1e-6)
    assert out.num_tokens.tolist() == [2, 1]
    mean = sequence_logps(logits, labels, reduction="mean").logps
    assert mean.tolist() == pytest.approx([expected[0] / 2, expected[1]], abs=1e-6)
    log1m = sequence_logps(logits, labels, return_log1m=True).log1m
    expected_log1m = [sum(math.log(1 - math.exp(_log_softmax_at(rows[i], k))) for i, k in ((0, 1), (1, 2))),
                      math.log(1 - math.exp(expected[1]))]
    assert log1m.tolist() == pytest.approx(expected_log1m, abs=1e-6)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("chunk_size", [1, 4, 7, 1000])  # 16 response tokens: 4 divides, 7 does not
def test_matches_naive_fp32(reduction, chunk_size):
    logits, labels = _batch()
    a = sequence_logps(logits, labels, reduction=reduction, chunk_size=chunk_size, return_log1m=True)
    b = naive_sequence_logps(logits, labels, reduction=reduction, return_log1m=True)
    # float32, sums of ≤ 6 tokens of magnitude ≤ 20: agreement to rounding
    assert_close(a.logps, b.logps, rtol=1e-5, atol=1e-5)
    assert_close(a.log1m, b.log1m, rtol=1e-5, atol=1e-5)
    assert torch.equal(a.num_tokens, b.num_tokens)


def test_matches_naive_bf16_values_and_gradients():
    logits, labels = _batch(dtype=torch.bfloat16)
    x1 = logits.clone().requires_grad_(True)
    x2 = logits.clone().requires_grad_(True)
    a = sequence_logps(x1, labels, chunk_size=5)
    b = naive_sequence_logps(x2, labels)
    assert a.logps.dtype == torch.float32  # accumulated in float32 from bf16 logits
    # both upcast the same bf16 values: they differ by float32 rounding only
    assert_close(a.logps, b.logps, rtol=1e-5, atol=1e-4)
    a.logps.sum().backward()
    b.logps.sum().backward()
    assert x1.grad.dtype == torch.bfloat16
    assert_close(x1.grad.float(), x2.grad.float(), rtol=1e-2, atol=1e-2)  # bf16 gradient storage


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("log1m", [False, True])
def test_gradients_match_naive(reduction, log1m):
    logits, labels = _batch(dtype=torch.float64)
    x1 = logits.clone().requires_grad_(True)
    x2 = logits.clone().requires_grad_(True)
    w = torch.tensor([0.3, -1.2, 0.7], dtype=torch.float64)
    for fn, x in ((sequence_logps, x1), (naive_sequence_logps, x2)):
        kw = {"chunk_size": 3} if fn is sequence_logps else {}
        out = fn(x, labels, reduction=reduction, return_log1m=log1m, **kw)
        loss = (out.logps * w).sum() + ((out.log1m * w.flip(0)).sum() if log1m else 0)
        loss.backward()
    assert_close(x1.grad, x2.grad, rtol=1e-9, atol=1e-10)


def test_backward_against_finite_differences():
    """The hand-written backward against central differences (float64), for logps and log1m together."""
    logits, labels = _batch(b=2, t=5, v=4, dtype=torch.float64)

    def f(x):
        out = sequence_logps(x, labels, reduction="mean", chunk_size=3, return_log1m=True)
        return (out.logps * torch.tensor([1.0, -2.0], dtype=x.dtype)).sum() + (0.5 * out.log1m).sum()

    x = logits.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(x), x)
    eps = 1e-6
    for index in [(0, 1, 0), (0, 2, 3), (1, 3, 1), (1, 4, 2), (0, 0, 2)]:
        plus, minus = logits.clone(), logits.clone()
        plus[index] += eps
        minus[index] -= eps
        numeric = (f(plus) - f(minus)).item() / (2 * eps)
        assert g[index].item() == pytest.approx(numeric, abs=1e-7)


def test_sum_and_mean():
    logits, labels = _batch()
    s = sequence_logps(logits, labels, reduction="sum")
    m = sequence_logps(logits, labels, reduction="mean")
    assert s.num_tokens.tolist() == [6, 4, 8]  # labels after the prompt; row 1 padded after 6
    assert_close(m.logps, s.logps / s.num_tokens.float(), rtol=1e-6, atol=1e-6)


def test_prompt_and_padding_are_masked():
    logits, labels = _batch()
    ref = sequence_logps(logits, labels).logps
    changed = logits.clone()
    changed[:2, 0:2, :] = torch.randn_like(changed[:2, 0:2, :]) * 50  # positions 0, 1 predict prompt labels 1, 2
    changed[1, 6:, :] = 99.0  # positions predicting padding (and the last position of every row)
    changed[:, -1, :] = -7.0
    other_prompt = labels.clone()
    other_prompt[:, 0] = 5  # the first label is never predicted
    assert_close(sequence_logps(changed, other_prompt).logps, ref, rtol=0, atol=0)
    # position 2 predicts the first response token: changing it must change the result
    moved = logits.clone()
    moved[:, 2, :] = torch.randn_like(moved[:, 2, :]) * 5
    assert not torch.allclose(sequence_logps(moved, labels).logps, ref)


def test_zero_token_response():
    logits, labels = _batch()
    labels[0, :] = -100
    x = logits.clone().requires_grad_(True)
    for reduction in ("sum", "mean"):
        out = sequence_logps(x, labels, reduction=reduction, return_log1m=True)
        assert out.num_tokens[0].item() == 0
        assert out.logps[0].item() == 0.0 and out.log1m[0].item() == 0.0
        (out.logps.sum() + out.log1m.sum()).backward()
        assert torch.isfinite(x.grad).all() and x.grad[0].abs().sum().item() == 0.0
        x.grad = None
    # a whole batch without response tokens, and T = 1
    empty = sequence_logps(logits, torch.full_like(labels, -100), reduction="mean")
    assert empty.logps.tolist() == [0.0, 0.0, 0.0]
    one = sequence_logps(logits[:, :1], labels[:, :1], reduction="mean", return_log1m=True)
    assert one.logps.tolist() == [0.0, 0.0, 0.0] and one.num_tokens.tolist() == [0, 0, 0]


def test_log1m_is_exact_when_p_near_one():
    v = 5
    logits = torch.zeros(1, 2, v)
    logits[0, 0, 3] = 30.0  # p(token 3) = e^30 / (e^30 + 4): 1 − p ≈ 3.7e-13, below float32 resolution of 1
    labels = torch.tensor([[-100, 3]])
    expected = math.log(4) - (30 + math.log1p(4 * math.exp(-30)))
    out = sequence_logps(logits, labels, return_log1m=True)
    assert out.log1m.item() == pytest.approx(expected, rel=1e-6)
    # naive float32 log(−expm1(log p)): log p rounds to 0, nothing is left but the floor
    assert naive_sequence_logps(logits, labels, return_log1m=True).log1m.item() == pytest.approx(LOG1M_FLOOR)
    # p = 1 to float precision and V = 1: clamped, finite, gradient finite
    x = torch.tensor([[[0.0, 200.0], [0.0, 0.0]]], requires_grad=True)
    out = sequence_logps(x, torch.tensor([[-100, 1]]), return_log1m=True)
    assert out.log1m.item() == pytest.approx(LOG1M_FLOOR)
    out.log1m.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))  # flat where clamped
    single = sequence_logps(torch.zeros(1, 2, 1), torch.tensor([[-100, 0]]), return_log1m=True)
    assert single.logps.item() == 0.0 and single.log1m.item() == pytest.approx(LOG1M_FLOOR)


def test_no_grad_and_non_contiguous_logits():
    logits, labels = _batch()
    wide = torch.cat([logits, logits], dim=-1)[..., : logits.shape[-1]]  # a non-contiguous view
    with torch.no_grad():
        out = sequence_logps(wide, labels, chunk_size=2)
    assert_close(out.logps, naive_sequence_logps(logits, labels).logps, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs, name", [
    (dict(logits=torch.zeros(2, 3)), "logits"),
    (dict(labels=torch.zeros(2, 4, dtype=torch.long)), "labels"),
    (dict(labels=torch.zeros(2, 3)), "labels"),  # floating labels
    (dict(labels=torch.full((2, 3), 7)), "labels"),  # token id ≥ V
    (dict(reduction="avg"), "reduction"),
    (dict(chunk_size=0), "chunk_size"),
    (dict(chunk_size=2.5), "chunk_size"),
])
def test_bad_inputs(kwargs, name):
    args = dict(logits=torch.zeros(2, 3, 5), labels=torch.zeros(2, 3, dtype=torch.long), reduction="sum", chunk_size=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        sequence_logps(args.pop("logits"), args.pop("labels"), **args)


# ------------------------------------------------------------------ the LM head on the response window only
def test_response_window_worked_numbers():
    from ulma.logprobs import response_window

    # first labelled column 3 (row 1): logits from position 2 on predict it -> keep 7 - 2 = 5 of 7
    labels = torch.tensor([[-100, -100, -100, -100, 5, 6, -100], [-100, -100, -100, 4, 5, 6, 7]])
    assert response_window(labels) == 5
    assert response_window(torch.tensor([[1, 2, 3]])) == 3  # column 0 labelled: every position
    assert response_window(torch.tensor([[-100, 2, 3]])) == 3  # column 1: position 0 is needed
    assert response_window(torch.full((2, 4), -100)) == 4  # nothing labelled: nothing to save


class _NoKeep(torch.nn.Module):
    """A causal LM whose forward has no logits_to_keep: model_logps must fall back to every position."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask=None, use_cache=None):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache)


def test_model_logps_with_logits_to_keep_equals_the_full_forward():
    """Same log-probs and the same gradients as scoring every position, through PEFT as well."""
    from peft import LoraConfig, get_peft_model

    from ulma.logprobs import accepts_logits_to_keep, model_logps, response_window
    from ulma.models import tiny_model

    torch.manual_seed(0)
    model = get_peft_model(tiny_model(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    v = model.config.vocab_size
    ids = torch.randint(3, v, (3, 12))
    mask = torch.ones_like(ids)
    mask[2, 10:] = 0
    labels = ids.clone()
    labels[0, :6], labels[1, :8], labels[2, :5] = -100, -100, -100
    labels[2, 10:] = -100
    assert accepts_logits_to_keep(model) and not accepts_logits_to_keep(_NoKeep(model))
    assert response_window(labels) == 12 - 4

    def run(m):
        model.zero_grad()
        out = model_logps(m, ids, mask, labels, reduction="sum", return_log1m=True)
        (out.logps.sum() + 0.1 * out.log1m.sum()).backward()
        grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
        return out, grads

    windowed, g1 = run(model)
    full, g2 = run(_NoKeep(model))
    assert torch.allclose(windowed.logps, full.logps, atol=1e-5), (windowed.logps, full.logps)
    assert torch.allclose(windowed.log1m, full.log1m, atol=1e-5)
    assert windowed.num_tokens.tolist() == full.num_tokens.tolist() == [6, 4, 5]
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g1, g2))
