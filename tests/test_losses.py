"""ulma.losses: worked numbers, limit cases, the gradient identities of docs/METHODS.md, validation, registry.

Expected values are written out with `math` on three-element inputs, never taken from the function under test.
"""
import math

import pytest
import torch

from ulma import losses as losses_module
from ulma.losses import (
    METHODS,
    compared_methods,
    loss_methods,
    LossOutput,
    dpo_loss,
    get_method,
    kto_loss,
    negative_dpo_loss,
    pointwise_dpo_loss,
    positive_dpo_loss,
    sft_loss,
    ulma_loss,
    unlikelihood_loss,
)

NAN = float("nan")


def logsig(x):
    return -math.log1p(math.exp(-x))


def sig(x):
    return 1 / (1 + math.exp(-x))


def t(*values, grad=False):
    return torch.tensor(values, dtype=torch.float32, requires_grad=grad)


def grad_of(loss_fn, policy, *args, **kwargs):
    x = policy.detach().clone().requires_grad_(True)
    out = loss_fn(x, *args, **kwargs)
    (g,) = torch.autograd.grad(out.loss, x, allow_unused=True)
    return (torch.zeros_like(x) if g is None else g), out


def pointwise_call(name, policy, reference, labels, **kw):
    """Call a registered point-wise method, feeding KTO and token unlikelihood what they need."""
    fn = get_method(name).loss_fn
    if name == "kto":
        kw.setdefault("policy_kl_logps", torch.zeros_like(policy))
        kw.setdefault("reference_kl_logps", torch.zeros_like(policy))
    return fn(policy, reference, labels, **kw)


# ------------------------------------------------------------------------------------- worked numbers
POLICY = (-1.0, -2.0, -3.0)
REFERENCE = (-1.5, -1.5, -2.0)
LABELS = (1.0, 0.0, 0.0)
BETA = 0.5
U = [BETA * (p - r) for p, r in zip(POLICY, REFERENCE)]  # 0.25, -0.25, -0.5


def test_pointwise_dpo_worked_numbers():
    out = pointwise_dpo_loss(t(*POLICY), t(*REFERENCE), t(*LABELS), beta=BETA)
    pos = -logsig(U[0])
    neg = (-logsig(-U[1]) - logsig(-U[2])) / 2
    assert out.loss.item() == pytest.approx(pos + neg, rel=1e-6)
    m = out.metrics
    assert m["loss/chosen"].item() == pytest.approx(pos, rel=1e-6)
    assert m["loss/rejected"].item() == pytest.approx(neg, rel=1e-6)
    assert m["rewards/chosen"].item() == pytest.approx(0.25)
    assert m["rewards/rejected"].item() == pytest.approx((-0.25 - 0.5) / 2)
    assert m["logps/chosen"].item() == pytest.approx(-1.0)
    assert m["logps/rejected"].item() == pytest.approx(-2.5)
    assert m["label/mean"].item() == pytest.approx(1 / 3)
    assert (m["count/chosen"].item(), m["count/rejected"].item()) == (1.0, 2.0)
    sample = pointwise_dpo_loss(t(*POLICY), t(*REFERENCE), t(*LABELS), beta=BETA, aggregation="sample_mean")
    assert sample.loss.item() == pytest.approx((-logsig(U[0]) - logsig(-U[1]) - logsig(-U[2])) / 3, rel=1e-6)


def test_ulma_worked_numbers_and_nan_reference_on_positives():
    x = t(*POLICY, grad=True)
    out = ulma_loss(x, t(NAN, *REFERENCE[1:]), t(*LABELS), beta=BETA)
    expected = -POLICY[0] + (-logsig(-U[1]) - logsig(-U[2])) / 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    out.loss.backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad[0].item() == -1.0  # exactly the SFT weight
    assert x.grad[1].item() == pytest.approx(BETA * sig(U[1]) / 2, rel=1e-6)
    assert "rewards/chosen" not in out.metrics  # no reference read on positives
    assert all(torch.isfinite(v) for v in out.metrics.values())


def test_dpo_worked_numbers():
    pc, pr, rc, rr = t(-1.0, -2.0, -0.5), t(-3.0, -1.0, -0.5), t(-1.5, -2.0, -1.0), t(-2.0, -1.5, -0.25)
    out = dpo_loss(pc, pr, rc, rr, beta=BETA)
    chosen = [BETA * (a - b) for a, b in zip((-1.0, -2.0, -0.5), (-1.5, -2.0, -1.0))]  # 0.25, 0, 0.25
    rejected = [BETA * (a - b) for a, b in zip((-3.0, -1.0, -0.5), (-2.0, -1.5, -0.25))]  # -0.5, 0.25, -0.125
    expected = -sum(logsig(w - l) for w, l in zip(chosen, rejected)) / 3
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    m = out.metrics
    assert m["rewards/chosen"].item() == pytest.approx(sum(chosen) / 3)
    assert m["rewards/rejected"].item() == pytest.approx(sum(rejected) / 3)
    assert m["rewards/margins"].item() == pytest.approx((sum(chosen) - sum(rejected)) / 3)
    assert m["rewards/accuracies"].item() == pytest.approx(2 / 3)
    assert m["logps/chosen"].item() == pytest.approx(-3.5 / 3)
    assert m["logps/rejected"].item() == pytest.approx(-4.5 / 3)
    tie = dpo_loss(t(-1.0), t(-1.0), t(-1.0), t(-1.0), beta=BETA)
    assert tie.loss.item() == pytest.approx(math.log(2)) and tie.metrics["rewards/accuracies"].item() == 0.0


def test_sft_positive_and_negative_dpo_worked_numbers():
    pol, ref, z = t(*POLICY), t(*REFERENCE), t(*LABELS)
    assert sft_loss(pol, None, None).loss.item() == pytest.approx(2.0)  # mean of 1, 2, 3
    assert sft_loss(pol, None, z).loss.item() == pytest.approx(1.0)  # positives only
    assert positive_dpo_loss(pol, t(-1.5, NAN, NAN), z, beta=BETA).loss.item() == pytest.approx(-logsig(U[0]), rel=1e-6)
    neg = negative_dpo_loss(pol, t(NAN, -1.5, -2.0), z, beta=BETA)
    assert neg.loss.item() == pytest.approx((-logsig(-U[1]) - logsig(-U[2])) / 2, rel=1e-6)
    assert "loss/chosen" not in neg.metrics
    # sample_mean divides by B even for the samples a method does not use
    assert positive_dpo_loss(pol, ref, z, beta=BETA, aggregation="sample_mean").loss.item() == \
        pytest.approx(-logsig(U[0]) / 3, rel=1e-6)


def test_unlikelihood_worked_numbers():
    pol, z = t(*POLICY), t(*LABELS)
    ascent = unlikelihood_loss(pol, None, z)
    assert ascent.loss.item() == pytest.approx(1.0 + (-2.0 - 3.0) / 2)
    log1m = t(NAN, -0.1, -0.3)  # not read on the positive
    token = unlikelihood_loss(pol, None, z, variant="token", policy_log1m=log1m)
    assert token.loss.item() == pytest.approx(1.0 + (0.1 + 0.3) / 2)
    x = log1m.clone().requires_grad_(True)
    token = unlikelihood_loss(pol, None, z, variant="token", policy_log1m=x)
    token.loss.backward()
    assert x.grad.tolist() == [0.0, -0.5, -0.5]


def test_kto_worked_numbers():
    pol, ref, z = t(*POLICY), t(*REFERENCE), t(*LABELS)
    kl_pol, kl_ref = t(-2.0, -2.5, -3.0), t(-2.2, -2.5, -3.3)
    kl = ((-2.0 + 2.2) + 0 + (-3.0 + 3.3)) / 3  # 0.1667, detached batch mean
    delta = [p - r for p, r in zip(POLICY, REFERENCE)]
    out = kto_loss(pol, ref, z, beta=BETA, policy_kl_logps=kl_pol, reference_kl_logps=kl_ref,
                   desirable_weight=2.0, undesirable_weight=0.5)
    pos = 2.0 * (1 - sig(BETA * (delta[0] - kl)))
    neg = 0.5 * ((1 - sig(BETA * (kl - delta[1]))) + (1 - sig(BETA * (kl - delta[2])))) / 2
    assert out.loss.item() == pytest.approx(pos + neg, rel=1e-6)
    assert out.metrics["kl"].item() == pytest.approx(kl, rel=1e-6)
    # the estimate is clamped at 0 and carries no gradient
    x = kl_pol.clone().requires_grad_(True)
    clamped = kto_loss(pol, ref, z, beta=BETA, policy_kl_logps=x - 5, reference_kl_logps=kl_ref)
    assert clamped.metrics["kl"].item() == 0.0
    assert not clamped.loss.requires_grad or torch.autograd.grad(clamped.loss, x, allow_unused=True)[0] is None


# --------------------------------------------------------------------------------- continuous labels
def test_continuous_mse_and_bce():
    pol, ref = t(*POLICY), t(*REFERENCE)
    z = t(1.0, 0.4, 0.0)  # a continuous batch: z = 1 stays a positive, z = 0 gets the continuous loss
    mse = pointwise_dpo_loss(pol, ref, z, beta=BETA, continuous="mse")
    expected = -logsig(U[0]) + ((0.4 - U[1]) ** 2 + (0.0 - U[2]) ** 2) / 2
    assert mse.loss.item() == pytest.approx(expected, rel=1e-6)
    bce = pointwise_dpo_loss(pol, ref, z, beta=BETA, continuous="bce")
    soft = -(0.4 * logsig(U[1]) + 0.6 * logsig(-U[1]))
    assert bce.loss.item() == pytest.approx(-logsig(U[0]) + (soft - logsig(-U[2])) / 2, rel=1e-6)
    ulma = ulma_loss(pol, t(NAN, *REFERENCE[1:]), z, beta=BETA)
    assert ulma.loss.item() == pytest.approx(-POLICY[0] + ((0.4 - U[1]) ** 2 + U[2] ** 2) / 2, rel=1e-6)


def test_batch_is_continuous_when_a_label_is_not_binary():
    """The rule: z = 0 gets −log σ(−u) in a binary batch and (z − u)² in a continuous one (mse)."""
    pol, ref = t(*POLICY), t(*REFERENCE)
    binary = negative_dpo_loss(pol, ref, t(1.0, 0.0, 0.0), beta=BETA, aggregation="sample_mean")
    cont = negative_dpo_loss(pol, ref, t(1.0, 0.0, 0.5), beta=BETA, aggregation="sample_mean")
    assert binary.loss.item() == pytest.approx((-logsig(-U[1]) - logsig(-U[2])) / 3, rel=1e-6)
    assert cont.loss.item() == pytest.approx((U[1] ** 2 + (0.5 - U[2]) ** 2) / 3, rel=1e-6)


def test_positive_threshold():
    pol, ref, z = t(*POLICY), t(*REFERENCE), t(0.8, 0.5, 0.0)
    out = pointwise_dpo_loss(pol, ref, z, beta=BETA, positive_threshold=0.75)
    expected = -logsig(U[0]) + ((0.5 - U[1]) ** 2 + U[2] ** 2) / 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert out.metrics["count/chosen"].item() == 1.0
    # default threshold 1: the 0.8 sample is not a positive
    assert pointwise_dpo_loss(pol, ref, z, beta=BETA).metrics["count/chosen"].item() == 0.0


def test_c_shifts_the_implicit_reward():
    pol, ref, z = t(*POLICY), t(*REFERENCE), t(*LABELS)
    c = 0.3
    out = pointwise_dpo_loss(pol, ref, z, beta=BETA, c=c)
    expected = -logsig(U[0] + c) + (-logsig(-(U[1] + c)) - logsig(-(U[2] + c))) / 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert out.metrics["rewards/chosen"].item() == pytest.approx(U[0] + c)
    # the same as moving ℓ_θ by c/β with c = 0
    moved = pointwise_dpo_loss(pol + c / BETA, ref, z, beta=BETA)
    assert moved.loss.item() == pytest.approx(out.loss.item(), rel=1e-6)


# ------------------------------------------------------------------------------------- limit cases
@pytest.mark.parametrize("aggregation", ["class_mean", "sample_mean"])
def test_ulma_on_demonstrations_is_sft(aggregation):
    pol, z = t(-0.7, -1.9, -4.0), t(1.0, 1.0, 1.0)
    g_sft, sft = grad_of(sft_loss, pol, None, z, aggregation=aggregation)
    for reference in (None, t(NAN, NAN, NAN), t(-1.0, -2.0, -3.0)):
        g_ulma, ulma = grad_of(ulma_loss, pol, reference, z, beta=BETA, aggregation=aggregation)
        assert ulma.loss.item() == sft.loss.item()
        assert torch.equal(g_ulma, g_sft)
    assert torch.equal(g_sft, torch.full((3,), -1 / 3))


def test_class_mean_with_an_empty_class():
    pol, ref = t(*POLICY), t(*REFERENCE)
    only_neg = pointwise_dpo_loss(pol, ref, t(0.0, 0.0, 0.0), beta=BETA)
    assert only_neg.loss.item() == pytest.approx(-sum(logsig(-u) for u in U) / 3, rel=1e-6)
    assert only_neg.metrics["loss/chosen"].item() == 0.0  # empty class: 0, and its count says so
    assert only_neg.metrics["logps/chosen"].item() == 0.0
    assert only_neg.metrics["count/chosen"].item() == 0.0
    only_pos = pointwise_dpo_loss(pol, ref, t(1.0, 1.0, 1.0), beta=BETA)
    assert only_pos.loss.item() == pytest.approx(-sum(logsig(u) for u in U) / 3, rel=1e-6)
    assert only_pos.metrics["count/rejected"].item() == 0.0
    # a method whose only class is absent: loss 0 with a zero, finite gradient
    g, out = grad_of(positive_dpo_loss, pol, ref, t(0.0, 0.0, 0.0))
    assert out.loss.item() == 0.0 and torch.equal(g, torch.zeros(3))


LOG_RATIOS = (1e4, -1e4, 0.0)


@pytest.mark.parametrize("name", sorted(loss_methods()))
def test_finite_at_extreme_log_ratios(name):
    """Log-ratios ±1e4, single-class and continuous batches, both aggregations: finite loss and gradient."""
    for labels in [(1.0, 0.0, 1.0), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (0.3, 1.0, 0.0)]:
        for aggregation in ("class_mean", "sample_mean"):
            policy = t(*LOG_RATIOS, grad=True)
            reference = torch.zeros(3)
            if name == "dpo":
                out = dpo_loss(policy, policy.flip(0), reference, reference)
            else:
                kw = {"aggregation": aggregation}
                if name == "unlikelihood":
                    kw.update(variant="token", policy_log1m=t(-1e4, -1e-30, -5.0))
                out = pointwise_call(name, policy, reference, t(*labels), **kw)
            (g,) = torch.autograd.grad(out.loss, policy, allow_unused=True)
            assert torch.isfinite(out.loss), (labels, aggregation)
            assert g is None or torch.isfinite(g).all(), (labels, aggregation)
            assert all(torch.isfinite(v) and not v.requires_grad for v in out.metrics.values())


# ---------------------------------------------------------------------------------- gradient weights
@pytest.mark.parametrize("aggregation, n_pos, n_neg", [("class_mean", 2, 1), ("sample_mean", 3, 3)])
def test_pointwise_dpo_gradient_weights(aggregation, n_pos, n_neg):
    """∂L/∂ℓ_θ = −β σ(−u)/n on a positive, +β σ(u)/n on a negative (n: the aggregation's normaliser)."""
    pol, ref, z, c = t(-1.0, -4.0, -2.0), t(-2.0, -1.0, -2.5), t(1.0, 1.0, 0.0), 0.2
    g, _ = grad_of(pointwise_dpo_loss, pol, ref, z, beta=BETA, c=c, aggregation=aggregation)
    u = [BETA * (a - b) + c for a, b in zip((-1.0, -4.0, -2.0), (-2.0, -1.0, -2.5))]
    expected = [-BETA * sig(-u[0]) / n_pos, -BETA * sig(-u[1]) / n_pos, BETA * sig(u[2]) / n_neg]
    assert g.tolist() == pytest.approx(expected, rel=1e-5)
    # the positive's weight shrinks as π_θ rises above π_ref; the negative's vanishes as the ratio → 0
    g_up, _ = grad_of(pointwise_dpo_loss, t(5.0, -4.0, -30.0), ref, z, beta=BETA, aggregation=aggregation)
    assert abs(g_up[0].item()) < abs(g[0].item()) and abs(g_up[2].item()) < 1e-3


def test_ulma_and_unlikelihood_weights_are_constant():
    ref, z = t(NAN, -1.0, -2.0), t(1.0, 0.0, 1.0)
    for pol in (t(-1.0, -3.0, -0.1), t(-50.0, 20.0, -1e3)):
        g, _ = grad_of(ulma_loss, pol, ref, z, beta=BETA)
        assert g[0].item() == -0.5 and g[2].item() == -0.5  # −1/n_pos, no KL weight
        g, _ = grad_of(unlikelihood_loss, pol, None, z)
        assert g.tolist() == [-0.5, 1.0, -0.5]  # ascent: +1/n_neg whatever ℓ_θ is


@pytest.mark.parametrize("name", ["pointwise_dpo", "ulma", "negative_dpo", "positive_dpo", "kto", "unlikelihood"])
def test_pointwise_gradients_are_decoupled(name):
    """Under sample_mean, sample 0's gradient does not depend on the other samples' log-ratios."""
    z, ref = t(1.0, 0.0, 0.0), t(-1.0, -1.0, -1.0)
    g1, _ = grad_of(lambda x, *a, **k: pointwise_call(name, x, *a, **k), t(-2.0, -1.0, -3.0), ref, z,
                    aggregation="sample_mean")
    g2, _ = grad_of(lambda x, *a, **k: pointwise_call(name, x, *a, **k), t(-2.0, 4.0, -9.0), ref, z,
                    aggregation="sample_mean")
    assert g1[0].item() == pytest.approx(g2[0].item(), rel=1e-6)
    z0 = t(0.0, 1.0, 1.0)  # and sample 0 as a negative
    g1, _ = grad_of(lambda x, *a, **k: pointwise_call(name, x, *a, **k), t(-2.0, -1.0, -3.0), ref, z0,
                    aggregation="sample_mean")
    g2, _ = grad_of(lambda x, *a, **k: pointwise_call(name, x, *a, **k), t(-2.0, 4.0, -9.0), ref, z0,
                    aggregation="sample_mean")
    assert g1[0].item() == pytest.approx(g2[0].item(), rel=1e-6)


def test_dpo_gradient_is_coupled():
    ref = torch.zeros(1)
    c = t(-2.0, grad=True)
    grads = []
    for rejected in (-1.0, -8.0):
        out = dpo_loss(c, t(rejected), ref, ref, beta=BETA)
        grads.append(torch.autograd.grad(out.loss, c)[0].item())
    expected = [-BETA * sig(-BETA * (-2.0 - r)) for r in (-1.0, -8.0)]
    assert grads == pytest.approx(expected, rel=1e-6)
    assert abs(grads[0] - grads[1]) > 1e-2


# ------------------------------------------------------------------------------------------ validation
GOOD = dict(policy_logps=t(*POLICY), reference_logps=t(*REFERENCE), labels=t(*LABELS))


@pytest.mark.parametrize("change, name", [
    (dict(policy_logps=t(-1.0, -2.0)), "policy_logps"),
    (dict(policy_logps=t(-1.0, NAN, -2.0)), "policy_logps"),
    (dict(policy_logps=torch.zeros(3, 1)), "policy_logps"),
    (dict(policy_logps=torch.zeros(0)), "policy_logps"),
    (dict(reference_logps=t(-1.0, -2.0)), "reference_logps"),
    (dict(reference_logps=t(NAN, NAN, NAN)), "reference_logps"),
    (dict(reference_logps=None), "reference_logps"),
    (dict(labels=t(1.0, 0.0)), "labels"),
    (dict(labels=t(1.0, NAN, 0.0)), "labels"),
    (dict(labels=t(1.0, 1.5, 0.0)), "labels"),
    (dict(labels=t(1.0, -0.1, 0.0)), "labels"),
    (dict(beta=0.0), "beta"),
    (dict(beta=float("inf")), "beta"),
    (dict(c=NAN), "c"),
    (dict(aggregation="mean"), "aggregation"),
    (dict(continuous="l2"), "continuous"),
    (dict(positive_threshold=0.0), "positive_threshold"),
    (dict(positive_threshold=1.5), "positive_threshold"),
])
def test_bad_inputs_raise(change, name):
    for fn in (pointwise_dpo_loss, ulma_loss, negative_dpo_loss, kto_loss, positive_dpo_loss):
        kw = {**GOOD, **change}
        if fn is kto_loss:
            kw.update(policy_kl_logps=torch.zeros(3), reference_kl_logps=torch.zeros(3))
        args = [kw.pop(k) for k in ("policy_logps", "reference_logps", "labels")]
        with pytest.raises(ValueError, match=name):
            fn(*args, **kw)


@pytest.mark.parametrize("call, name", [
    (lambda: unlikelihood_loss(t(*POLICY), None, t(*LABELS), variant="token"), "policy_log1m"),
    (lambda: unlikelihood_loss(t(*POLICY), None, t(*LABELS), variant="tokens"), "variant"),
    (lambda: unlikelihood_loss(t(*POLICY), None, t(*LABELS), variant="token", policy_log1m=t(0.0, NAN, -1.0)),
     "policy_log1m"),
    (lambda: kto_loss(t(*POLICY), t(*REFERENCE), t(*LABELS)), "policy_kl_logps"),
    (lambda: kto_loss(t(*POLICY), t(*REFERENCE), t(*LABELS), policy_kl_logps=torch.zeros(3),
                      reference_kl_logps=torch.zeros(2)), "reference_kl_logps"),
    (lambda: kto_loss(t(*POLICY), t(*REFERENCE), t(*LABELS), policy_kl_logps=torch.zeros(3),
                      reference_kl_logps=torch.zeros(3), desirable_weight=-1.0), "desirable_weight"),
    (lambda: dpo_loss(t(-1.0), t(-1.0, -2.0), t(0.0), t(0.0)), "policy_rejected_logps"),
    (lambda: dpo_loss(t(-1.0), t(-1.0), t(NAN), t(0.0)), "reference_chosen_logps"),
    (lambda: dpo_loss(t(-1.0), t(-1.0), t(0.0), t(0.0), beta=-0.1), "beta"),
    (lambda: sft_loss(t(-1.0, NAN), None, None), "policy_logps"),
    (lambda: sft_loss(t(-1.0, -2.0), None, None, aggregation="sum"), "aggregation"),
    (lambda: get_method("ppo"), "ulma"),  # the message lists the known names
])
def test_bad_inputs_raise_other(call, name):
    with pytest.raises(ValueError, match=name):
        call()


# -------------------------------------------------------------------------------------------- registry
def test_registry():
    table = {
        "sft": ("sft", "none", "mean"), "dpo": ("pairwise", "all", "sum"),
        "pointwise_dpo": ("pointwise", "all", "mean"), "ulma": ("pointwise", "negatives", "mean"),
        "positive_dpo": ("pointwise", "positives", "mean"), "negative_dpo": ("pointwise", "negatives", "mean"),
        "unlikelihood": ("pointwise", "none", "mean"), "kto": ("pointwise", "all", "sum"),
        "negative_unlikelihood": ("pointwise", "none", "mean"),
        "rlhf": ("pointwise", "all", "sum"), "base": ("sft", "none", "mean"),
    }
    assert set(METHODS) == set(table)
    assert set(loss_methods()) == set(table) - {"rlhf", "base"}
    assert compared_methods() == ("sft", "rlhf", "dpo", "pointwise_dpo", "unlikelihood", "kto", "ulma")
    for name, (kind, reference, reduction) in table.items():
        m = get_method(name)
        assert (m.name, m.data_kind, m.reference, m.logp_reduction) == (name, kind, reference, reduction)
        assert m.needs_kl_pairs == (name == "kto")
        assert m.needs_log1m_for({"variant": "token"}) == (name in ("unlikelihood", "negative_unlikelihood"))
        assert not m.needs_log1m_for({"variant": "ascent"}) and not m.needs_log1m_for({})
    with pytest.raises(Exception):
        get_method("ulma").name = "x"  # frozen


BAD_VALUES = {"beta": -1.0, "c": NAN, "aggregation": "sum", "continuous": "l1", "positive_threshold": 2.0,
              "variant": "both", "desirable_weight": -1.0, "undesirable_weight": -1.0}


def test_registry_declares_the_hyperparameters_each_loss_reads():
    """Each offline method's declared keywords are exactly those its loss validates (a wrong value of a
    declared one raises naming it); the config supplies them under HYPERPARAMETERS' names."""
    import inspect

    from ulma.config import TrainConfig

    cfg = TrainConfig(beta=0.3, c=0.5, unlikelihood_variant="token", kto_desirable_weight=2.0)
    assert get_method("ulma").loss_kwargs(cfg) == {"beta": 0.3, "c": 0.5, "aggregation": "class_mean",
                                                  "continuous": "mse", "positive_threshold": 1.0}
    assert get_method("dpo").loss_kwargs(cfg) == {"beta": 0.3}
    assert get_method("unlikelihood").loss_kwargs(cfg)["variant"] == "token"
    assert get_method("kto").loss_kwargs(cfg)["desirable_weight"] == 2.0
    assert get_method("rlhf").loss_kwargs(cfg) == {} and get_method("base").loss_kwargs(cfg) == {}
    for name, m in loss_methods().items():
        # the declaration is a subset of the signature (the uniform interface keeps extra keywords)
        assert set(m.hyperparameters) <= set(inspect.signature(m.loss_fn).parameters), name
        for key in m.hyperparameters:  # read, not just accepted: a bad value of each is rejected by name
            with pytest.raises(ValueError, match=key):
                if m.data_kind == "pairwise":
                    m.loss_fn(t(-1.0), t(-2.0), t(0.0), t(0.0), **{key: BAD_VALUES[key]})
                else:
                    pointwise_call(name, t(-1.0, -2.0), t(0.0, 0.0), t(1.0, 0.0), **{key: BAD_VALUES[key]})
    with pytest.raises(ValueError, match="hyperparameters"):
        losses_module.Method("x", sft_loss, "sft", "none", "mean", hyperparameters=("gamma",))
    with pytest.raises(ValueError, match="runner"):
        losses_module.Method("x", None, "sft", "none", "mean", runner="ppo")


def test_every_method_returns_loss_output_with_detached_metrics():
    pol = t(*POLICY, grad=True)
    for name, m in loss_methods().items():
        if m.data_kind == "pairwise":
            out = m.loss_fn(pol, pol.detach().flip(0), t(*REFERENCE), t(*REFERENCE))
        else:
            out = pointwise_call(name, pol, t(*REFERENCE), t(*LABELS))
        assert isinstance(out, LossOutput) and out.loss.dim() == 0 and out.loss.requires_grad
        assert all(v.dim() == 0 and not v.requires_grad for v in out.metrics.values())


def test_negative_unlikelihood_uses_only_negatives():
    from ulma import losses

    # labels [1, 0, 0]: the positive is ignored; class_mean over the two negatives of +ℓ_θ
    policy = torch.tensor([-1.0, -2.0, -3.0], requires_grad=True)
    out = losses.negative_unlikelihood_loss(policy, None, torch.tensor([1.0, 0.0, 0.0]))
    assert out.loss.item() == pytest.approx((-2.0 + -3.0) / 2)
    out.loss.backward()
    assert policy.grad.tolist() == pytest.approx([0.0, 0.5, 0.5])  # constant weight: nothing stops it
    log1m = torch.tensor([-0.1, -0.2, -0.4])
    token = losses.negative_unlikelihood_loss(torch.tensor([-1.0, -2.0, -3.0]), None, torch.tensor([1.0, 0.0, 0.0]),
                                              variant="token", policy_log1m=log1m)
    assert token.loss.item() == pytest.approx((0.2 + 0.4) / 2)
    assert losses.get_method("negative_unlikelihood").reference == "none"
