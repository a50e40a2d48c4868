"""Temperature scaling: recovery of a known temperature, the relis grid-search rules, per-class rules, k-means."""

import numpy as np
import pytest
from references import ece, softmax
from sklearn.cluster import MiniBatchKMeans

from synthrel.calibration.temperature import (
    OFFICIAL_GRID,
    TemperatureScaler,
    fit_kmeans,
    fit_temperature_scaler,
    grid_search_temperature,
    nearest_center,
)


def _draw(rng, n, c, t_true, scale=3.0):
    """Logits whose calibrated probabilities are softmax(z / t_true): labels sampled from them."""
    z = rng.normal(size=(n, c)) * scale
    p = softmax(z / t_true)
    y = (p.cumsum(1) > rng.random((n, 1))).argmax(1)
    return z, y


@pytest.mark.parametrize("t_true", [0.6, 2.0])
@pytest.mark.parametrize("objective", ["ece_grid", "nll"])
def test_recovers_known_temperature(t_true, objective):
    rng = np.random.default_rng(int(t_true * 10))
    z, y = _draw(rng, 6000, 6, t_true)
    scaler = fit_temperature_scaler(z, y, method="global", objective=objective)
    tol = 0.08 if objective == "nll" else 0.2  # ECE is a noisier objective than the likelihood
    assert scaler.temperatures[0, 0] == pytest.approx(t_true, rel=tol)


def test_grid_search_equals_brute_force_loop():
    rng = np.random.default_rng(5)
    z, y = _draw(rng, 400, 4, 1.7)
    grid = OFFICIAL_GRID[::7]
    best_t, best = 1.0, ece(z, y)  # relis: start at T = 1, update only on a strictly lower ECE
    for t in grid:
        e = ece(z / t, y)
        if e < best:
            best_t, best = t, e
    got_t, got_ece = grid_search_temperature(z, y, grid)
    assert got_t == pytest.approx(best_t, abs=1e-12)
    assert got_ece == pytest.approx(best, abs=1e-12)


def test_grid_search_keeps_one_unless_strictly_beaten():
    rng = np.random.default_rng(6)
    z, y = _draw(rng, 3000, 3, 1.0)
    assert grid_search_temperature(z, y, np.array([0.5, 9.99])) == (1.0, pytest.approx(ece(z, y), abs=1e-12))
    assert grid_search_temperature(z, y, np.array([1.0]))[0] == 1.0  # a tie does not replace T = 1
    assert grid_search_temperature(z[:0], y[:0])[0] == 1.0
    z2, y2 = _draw(rng, 3000, 3, 2.0)
    assert grid_search_temperature(z2, y2, np.array([9.0, 2.0]))[0] == 2.0


def test_per_class_rules_on_hand_worked_example():
    table = np.array([[2.0, 4.0, 1.0]])
    z = np.array([[4.0, 8.0, 2.0], [1.0, 2.0, 6.0]])  # raw argmax: class 1, class 2
    per_pred = TemperatureScaler(table, "per_pred_class").scale(z)
    per_channel = TemperatureScaler(table, "per_channel").scale(z)
    np.testing.assert_allclose(per_pred, [[1.0, 2.0, 0.5], [1.0, 2.0, 6.0]])  # row 0 / 4, row 1 / 1
    np.testing.assert_allclose(per_channel, [[2.0, 2.0, 2.0], [0.5, 0.5, 6.0]])  # column-wise / (2, 4, 1)


def test_per_class_fit_splits_by_predicted_class_and_leaves_unpredicted_at_one():
    rng = np.random.default_rng(7)
    z0, y0 = _draw(rng, 3000, 3, 0.6)
    z1, y1 = _draw(rng, 3000, 3, 2.5)
    z0[:, 2] -= 100  # never predicted
    z1[:, 2] -= 100
    z0[:, 0] += 50  # block 0 is always predicted as class 0, block 1 as class 1
    z1[:, 1] += 50
    z, y = np.r_[z0, z1], np.r_[y0, y1]
    scaler = fit_temperature_scaler(z, y, method="per_class", objective="nll")
    t0 = fit_temperature_scaler(z0, y0, objective="nll").temperatures[0, 0]
    t1 = fit_temperature_scaler(z1, y1, objective="nll").temperatures[0, 0]
    np.testing.assert_allclose(scaler.temperatures[0], [t0, t1, 1.0], rtol=1e-6)
    assert scaler.per_class_rule == "per_channel"  # the official code's rule is the default (spec S9)


def test_kmeans_deterministic_with_seed_and_hard_assignment_matches_sklearn():
    rng = np.random.default_rng(8)
    features = np.r_[rng.normal(0, 1, (30, 4)), rng.normal(6, 1, (30, 4))]
    a, b = fit_kmeans(features, 2, seed=3), fit_kmeans(features, 2, seed=3)
    np.testing.assert_array_equal(a, b)
    km = MiniBatchKMeans(n_clusters=2, batch_size=2048, n_init=5, random_state=3).fit(features)
    np.testing.assert_array_equal(nearest_center(features, a), km.predict(features))


def test_cluster_ts_uses_each_images_cluster():
    rng = np.random.default_rng(9)
    features = np.r_[np.zeros((4, 2)), np.full((4, 2), 10.0)] + rng.normal(0, 0.1, (8, 2))
    za, ya = _draw(rng, 4000, 4, 0.6)
    zb, yb = _draw(rng, 4000, 4, 2.5)
    z, y = np.r_[za, zb], np.r_[ya, yb]
    image_index = np.r_[rng.integers(0, 4, 4000), rng.integers(4, 8, 4000)]
    scaler = fit_temperature_scaler(z, y, method="cluster", objective="nll", image_index=image_index,
                                    features=features, n_clusters=2, seed=0)
    pixel_t = scaler.temperatures[scaler.pixel_clusters(len(z), image_index, features), 0]
    assert np.median(pixel_t[:4000]) == pytest.approx(0.6, rel=0.1)
    assert np.median(pixel_t[4000:]) == pytest.approx(2.5, rel=0.1)
    restored = TemperatureScaler.from_dict(scaler.to_dict())
    np.testing.assert_allclose(restored.scale(z, image_index, features), scaler.scale(z, image_index, features))
