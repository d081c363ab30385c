"""Classifier and classifier-free guidance on Gaussian references with exact guided targets.

Exact law of a guided probability-flow sampler.  Under the VP SDE (``m² + σ² = 1``),
take a conditional model ``N(μ_y, Σ_y)`` and an unconditional one ``N(μ_u, Σ_u)``
whose covariances share eigenvectors ``U`` (eigenvalues ``λ_y``, ``λ_u``), and
either equal means or equal covariances.  At time ``t`` each is Gaussian with
``C_t(λ) = m_t² λ + σ_t²`` per eigendirection, and the guided score
``γ s_y + (1 − γ) s_u`` is linear.  Writing ``u = m_t²`` (``du = −β u dt``), the
flow ``dz/dt = ½ β (p − 1) z`` for ``z = x − m_t μ*`` with
``p = γ/C(λ_y) + (1 − γ)/C(λ_u)`` integrates in closed form,
``∫ β/C(λ) dt = log(u/C(λ))``, so the ODE maps ``x_T`` to

    x_ε = m_ε μ* + Φ (x_T − m_T μ*),   Φ² = C_ε(λ_y)^γ C_ε(λ_u)^{1−γ} / (C_T(λ_y)^γ C_T(λ_u)^{1−γ}),

with ``μ* = μ_u + γ (μ_y − μ_u)``.  For γ = 1 this is the conditional model's
own flow (guidance recovers the class); for equal covariances it is the flow of
``N(μ*, Σ)``, the seeds' ``p(x)^{1−γ} p(x | y)^γ`` exactly (mean extrapolated by
γ); for equal means the variance becomes the geometric ``λ_y^γ λ_u^{1−γ}`` as
``ε → 0`` — sharper, for γ > 1 and λ_u > λ_y, than both ``λ_y`` and the t = 0
tilted density's ``1/(γ/λ_y + (1 − γ)/λ_u)``.  Samples are checked against this
law with 5-standard-error tolerances (tests/stats.py) plus the solver error,
which each test bounds deterministically on the same samples.
"""

import math

import pytest
import torch

import sdekit
from sdekit.testing import GaussianMixture, example_mixture
from stats import assert_mean_close

SDE = sdekit.VPSDE()
EPS = 1e-3
N = 4000
#: Bound on |RK45 output − exact flow map| at rtol = atol = 1e-6, asserted per sample below.
SOLVER_TOL = 1e-4
MIX = example_mixture()
COMPONENTS = [GaussianMixture(torch.ones(1, dtype=torch.float64), MIX.means[k : k + 1], MIX.covs[k : k + 1])
              for k in range(MIX.K)]
NULL = MIX.K


def conditional_score(x, t, y):
    """Exact class-conditional score (component y), or the mixture's score for the null label."""
    out = MIX.score(x, SDE, t)
    for k, comp in enumerate(COMPONENTS):
        mask = y == k
        if bool(mask.any()):
            out[mask] = comp.score(x[mask], SDE, t[mask])
    return out


def _coeffs(t: float):
    t = torch.tensor([t], dtype=torch.float64)
    return float(SDE.mean_coeff(t)), float(SDE.std(t))


def exact_flow(U, lam_y, lam_u, gamma, mu_star):
    """The guided flow map ``x_T ↦ x_ε`` and the law of ``x_ε`` for ``x_T ~ N(0, I)`` (module docstring)."""
    (m_e, s_e), (m_T, s_T) = _coeffs(EPS), _coeffs(SDE.T)
    C = lambda m, s, lam: m**2 * lam + s**2  # noqa: E731
    phi2 = (C(m_e, s_e, lam_y) ** gamma * C(m_e, s_e, lam_u) ** (1 - gamma)
            / (C(m_T, s_T, lam_y) ** gamma * C(m_T, s_T, lam_u) ** (1 - gamma)))
    Phi = U @ torch.diag(phi2.sqrt()) @ U.T
    flow = lambda x_T: m_e * mu_star + (x_T - m_T * mu_star) @ Phi.T  # noqa: E731
    return flow, m_e * mu_star - m_T * (Phi @ mu_star), U @ torch.diag(phi2) @ U.T


def _ode_samples(score, seed):
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn(N, 2, generator=g, dtype=torch.float64)
    out = sdekit.sample(score, SDE, (N, 2), method="ode", rtol=1e-6, atol=1e-6, eps=EPS, denoise=False,
                        x_init=x_T, dtype=torch.float64)
    return x_T, out.x


def _assert_law(x, mean, cov, what, *, mean_dev=0.0, cov_dev=0.0, tol=SOLVER_TOL):
    """Mean and covariance of ``x`` against the Gaussian ``(mean, cov)``, within 5 SE plus known biases.

    The samples are ``x = x̃ + e`` with ``|e| <= tol`` (solver error) and ``x̃`` exactly of a law whose mean
    and covariance differ from ``(mean, cov)`` by at most ``mean_dev``, ``cov_dev`` (from theory).  The
    covariance is checked through the i.i.d. products ``d_i d_j``, ``d = x − mean``, whose expectation is
    within ``cov_dev + mean_dev² + 2 E|d| tol + tol²`` of ``cov``.
    """
    assert_mean_close(x, mean, bias=mean_dev + tol, what=f"{what}: mean")
    d = x - mean
    prods = (d[:, :, None] * d[:, None, :]).reshape(len(x), -1)
    bias = cov_dev + mean_dev**2 + 2 * float(d.abs().mean()) * tol + tol**2
    assert_mean_close(prods, cov.reshape(-1), bias=bias, what=f"{what}: cov")


# ----------------------------------------------------------------------------- the guided score itself


@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.5])
def test_classifier_guidance_is_the_seeds_identity(gamma):
    """s + γ ∇ log p(y|x) = (1 − γ) ∇ log p_t(x) + γ ∇ log p_t(x | y) with the exact noisy classifier."""
    g = torch.Generator().manual_seed(0)
    x = 2 * torch.randn(32, 2, generator=g, dtype=torch.float64)
    t = 0.01 + 0.99 * torch.rand(32, generator=g, dtype=torch.float64)
    classifier = lambda x, t: MIX.log_responsibilities(x, SDE, t)  # noqa: E731
    for y in range(MIX.K):
        guided = sdekit.classifier_guidance(MIX.score_model(SDE), classifier, y, scale=gamma)
        expected = (1 - gamma) * MIX.score(x, SDE, t) + gamma * COMPONENTS[y].score(x, SDE, t)
        torch.testing.assert_close(guided(x, t), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("gamma", [1.0, 3.0])
def test_classifier_free_guidance_equals_classifier_guidance_in_one_forward(gamma):
    """With the exact conditional and unconditional scores both guidances are the same field (seeds 000)."""
    calls = []

    def model(x, t, y):
        calls.append(x.shape[0])
        return conditional_score(x, t, y)

    g = torch.Generator().manual_seed(1)
    x = 2 * torch.randn(16, 2, generator=g, dtype=torch.float64)
    t = 0.01 + 0.99 * torch.rand(16, generator=g, dtype=torch.float64)
    labels = torch.arange(16) % MIX.K
    cfg = sdekit.classifier_free_guidance(model, labels, gamma, null_label=NULL)(x, t)
    assert calls == [32]  # conditional and unconditional passes batched into one call
    cg = sdekit.classifier_guidance(MIX.score_model(SDE), lambda x, t: MIX.log_responsibilities(x, SDE, t),
                                    labels, scale=gamma)(x, t)
    torch.testing.assert_close(cfg, cg, rtol=1e-9, atol=1e-9)


def test_per_sample_labels_match_one_label_at_a_time():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(9, 2, generator=g, dtype=torch.float64)
    t = torch.full((9,), 0.3, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 2, 1, 0, 0, 1, 2])
    both = sdekit.classifier_free_guidance(conditional_score, labels, 2.0, null_label=NULL)(x, t)
    for y in range(MIX.K):
        one = sdekit.classifier_free_guidance(conditional_score, y, 2.0, null_label=NULL)(x, t)
        torch.testing.assert_close(both[labels == y], one[labels == y])


def test_guidance_rejects_bad_input():
    x, t = torch.randn(4, 2, dtype=torch.float64), torch.full((4,), 0.5, dtype=torch.float64)
    score = MIX.score_model(SDE)
    with pytest.raises(ValueError, match="scale"):
        sdekit.classifier_guidance(score, lambda x, t: x, 0, scale=float("nan"))
    with pytest.raises(TypeError, match="labels"):
        sdekit.classifier_free_guidance(conditional_score, 1.5, 2.0, null_label=NULL)
    with pytest.raises(TypeError, match="classifier"):
        sdekit.classifier_guidance(score, "not callable", 0)
    with pytest.raises(ValueError, match=r"classifier must return logits of shape \(B, K\)"):
        sdekit.classifier_guidance(score, lambda x, t: x.sum(1), 0)(x, t)
    with pytest.raises(ValueError, match="guided model returned shape"):
        sdekit.classifier_free_guidance(lambda x, t, y: x[:1], 0, 2.0, null_label=NULL)(x, t)
    # Per-sample labels that do not match the batch of a direct call.
    with pytest.raises(ValueError, match="leading dimension"):
        sdekit.classifier_free_guidance(conditional_score, torch.tensor([0, 1, 2, 0, 1]), 2.0, NULL)(x, t)


# ----------------------------------------------------------------------------- guided sampling


@pytest.mark.parametrize("kind", ["classifier", "classifier_free"])
def test_guided_sampling_at_scale_one_recovers_the_component(kind):
    y = 1
    if kind == "classifier":
        score = sdekit.classifier_guidance(MIX.score_model(SDE), lambda x, t: MIX.log_responsibilities(x, SDE, t), y)
    else:
        score = sdekit.classifier_free_guidance(conditional_score, y, 1.0, null_label=NULL)
    x_T, x = _ode_samples(score, seed=10)
    lam, U = torch.linalg.eigh(MIX.covs[y])
    flow, mean, cov = exact_flow(U, lam, lam, 1.0, MIX.means[y])
    assert float((x - flow(x_T)).abs().max()) <= SOLVER_TOL  # each sample follows the component's own flow
    # The exact law differs from the component N(μ_y, Σ_y) only by the prior's mismatch at T and by
    # stopping at ε; that difference, computed above, is the bias allowed on top of 5 SE.
    _assert_law(x, MIX.means[y], MIX.covs[y], f"{kind} guidance, γ = 1",
                mean_dev=float((mean - MIX.means[y]).abs().max()), cov_dev=float((cov - MIX.covs[y]).abs().max()))
    _assert_law(x, mean, cov, f"{kind} guidance, γ = 1, exact law")


@pytest.mark.parametrize("kind", ["classifier", "classifier_free", "classifier_free_model_kwargs"])
def test_per_sample_labels_on_the_ode_recover_each_rows_component(kind):
    """One ODE batch holding every class: each row follows its own component's flow (γ = 1)."""
    labels = torch.arange(N) % MIX.K
    kwargs = {}
    if kind == "classifier":
        score = sdekit.classifier_guidance(MIX.score_model(SDE), lambda x, t: MIX.log_responsibilities(x, SDE, t),
                                           labels)
    elif kind == "classifier_free":
        score = sdekit.classifier_free_guidance(conditional_score, labels, 1.0, null_label=NULL)
    else:
        score, kwargs = sdekit.classifier_free_guidance(conditional_score, None, 1.0, null_label=NULL), {"y": labels}
    g = torch.Generator().manual_seed(13)
    x_T = torch.randn(N, 2, generator=g, dtype=torch.float64)
    x = sdekit.sample(score, SDE, (N, 2), method="ode", rtol=1e-6, atol=1e-6, eps=EPS, denoise=False,
                      x_init=x_T, model_kwargs=kwargs).x
    for y in range(MIX.K):
        rows = labels == y
        lam, U = torch.linalg.eigh(MIX.covs[y])
        flow, mean, cov = exact_flow(U, lam, lam, 1.0, MIX.means[y])
        assert float((x[rows] - flow(x_T[rows])).abs().max()) <= SOLVER_TOL, f"class {y}"
        _assert_law(x[rows], mean, cov, f"{kind}, per-sample labels, class {y}")


def test_classifier_free_guidance_extrapolates_the_mean_by_gamma():
    """Equal covariances: the sampler draws exactly the seeds' p(x)^{1−γ} p(x|y)^γ = N(μ_u + γ(μ_y − μ_u), Σ)."""
    gamma, cov = 3.0, torch.tensor([[0.3, 0.1], [0.1, 0.2]], dtype=torch.float64)
    mu_y, mu_u = torch.tensor([1.0, 0.5], dtype=torch.float64), torch.tensor([0.5, 0.0], dtype=torch.float64)
    cond, uncond = (GaussianMixture(torch.ones(1, dtype=torch.float64), mu[None], cov[None]) for mu in (mu_y, mu_u))
    model = lambda x, t, y: torch.where((y == 1)[:, None], cond.score(x, SDE, t), uncond.score(x, SDE, t))  # noqa: E731
    x_T, x = _ode_samples(sdekit.classifier_free_guidance(model, 1, gamma, null_label=0), seed=11)
    lam, U = torch.linalg.eigh(cov)
    mu_star = mu_u + gamma * (mu_y - mu_u)  # (2.0, 1.5)
    flow, mean, law_cov = exact_flow(U, lam, lam, gamma, mu_star)
    assert float((x - flow(x_T)).abs().max()) <= SOLVER_TOL
    _assert_law(x, mean, law_cov, "CFG γ = 3, equal covariances")
    assert float((mean - mu_star).abs().max()) < 0.02  # the exact law is the extrapolated Gaussian (up to ε, T)


def test_classifier_free_guidance_sharpens_to_the_geometric_variance():
    """Equal means, λ_u > λ_y: γ = 3 shrinks each variance to ≈ λ_y³ λ_u⁻², below λ_y and the tilted value."""
    gamma = 3.0
    lam_y, lam_u = torch.tensor([0.1, 0.2], dtype=torch.float64), torch.tensor([0.5, 0.4], dtype=torch.float64)
    mu = torch.tensor([1.0, -0.5], dtype=torch.float64)
    cond, uncond = (GaussianMixture(torch.ones(1, dtype=torch.float64), mu[None], torch.diag(lam)[None])
                    for lam in (lam_y, lam_u))
    model = lambda x, t, y: torch.where((y == 1)[:, None], cond.score(x, SDE, t), uncond.score(x, SDE, t))  # noqa: E731
    x_T, x = _ode_samples(sdekit.classifier_free_guidance(model, 1, gamma, null_label=0), seed=12)
    flow, mean, law_cov = exact_flow(torch.eye(2, dtype=torch.float64), lam_y, lam_u, gamma, mu)
    assert float((x - flow(x_T)).abs().max()) <= SOLVER_TOL
    _assert_law(x, mean, law_cov, "CFG γ = 3, equal means")
    var = torch.diagonal(law_cov)
    geometric = lam_y**gamma * lam_u ** (1 - gamma)
    tilted = 1 / (gamma / lam_y + (1 - gamma) / lam_u)
    torch.testing.assert_close(var, geometric, rtol=5e-3, atol=0)  # ε → 0 limit, up to the ε and T corrections
    assert bool((var < tilted).all()) and bool((tilted < lam_y).all())
    # and the samples show it: their variance is well below the conditional model's λ_y
    assert bool((x.var(0) < lam_y / 4).all())


def test_classifier_guidance_works_under_no_grad_and_with_fixed_step_samplers():
    """Per-sample labels with a fixed-step sampler; autograd runs even inside torch.no_grad()."""
    labels = torch.tensor([0, 1, 2] * 100)
    score = sdekit.classifier_guidance(MIX.score_model(SDE), lambda x, t: MIX.log_responsibilities(x, SDE, t),
                                       labels, scale=1.0)
    with torch.no_grad():
        out = sdekit.sample(score, SDE, (300, 2), method="ancestral", steps=200, dtype=torch.float64,
                            generator=torch.Generator().manual_seed(3))
    got = MIX.responsibilities(out.x, None).argmax(1)
    # Each sample lands in its own class's component.  An exact draw of component y is assigned to another
    # component with probability <= 2.3e-5 (measured on 4e5 exact draws per component), so among 300 draws
    # the number misassigned is ~Poisson(0.007): 3 or more has probability < 1e-7.
    assert int((got != labels).sum()) <= 2
    assert not math.isnan(float(out.x.sum()))
