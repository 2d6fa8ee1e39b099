"""The benchmark's ``zipf`` shape (``bench/shapes.py``) is the tenant issue 23 describes, at full size
and scaled down, so that the figures measured on it keep meaning what bench/README.md says.

Built at full size here (100,000 sites, 30,000 slots: about 2.5 s): the statistics are the shape's
definition, checked against the description, not against the generator's own constants.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter

import pytest

from bench.shapes import SHAPE_DEFAULTS, build_shape, shape_statistics, zipf_tenant
from tests.emulators.arm import site_json
from tests.emulators.tenant import Tenant


def near(value: float, target: float, tolerance: float) -> bool:
    return abs(value - target) <= tolerance * target


@pytest.fixture(scope="module")
def full() -> Tenant:
    return zipf_tenant(SHAPE_DEFAULTS["zipf"]["seed"])


def test_full_size_zipf_tenant_is_the_one_described(full: Tenant) -> None:
    stats = shape_statistics(full)
    assert stats["subscriptions"] == 1000
    assert stats["subscriptions_without_sites"] == 50, "5 % of them without sites"
    for got, described in zip(stats["largest_five_sites"], (14_300, 10_300, 6_300, 3_400, 3_100), strict=True):
        assert near(got, described, 0.05), stats["largest_five_sites"]
    assert 19 <= stats["median_sites"] <= 23, "the median subscription holds about 21 sites"
    assert near(stats["resource_groups"], 10_500, 0.03), "1-20 groups per subscription"
    assert near(stats["resource_groups_with_sites"], 1_260, 0.05)
    assert near(stats["awkward_group_share"], 0.03, 0.2)
    counts = full.counts()
    assert (counts["sites"], counts["slots"]) == (100_000, 30_000)
    parents = stats["slots_per_parent"]
    total = sum(parents.values())
    assert set(parents) <= {1, 2, 3, 4, 5}
    for n, weight in ((1, 55), (2, 30), (3, 10), (4, 3), (5, 2)):
        assert abs(100 * parents.get(n, 0) / total - weight) <= 1.5, parents
    assert stats["slots_on_flex_apps"] == 0, "Flex Consumption apps have no slots"


def test_sites_are_served_in_the_full_arm_shape_with_site_config(full: Tenant) -> None:
    sample = [site for i, site in enumerate(full.iter_resources()) if i % 97 == 0]
    sizes = [len(json.dumps(site_json(site, "sites_list"))) for site in sample]
    assert all("siteConfig" in site_json(site, "sites_list")["properties"] for site in sample[:50])
    # About 2.9 KB in the description; the emulator's full shape is a little heavier (custom domains).
    assert 2_900 <= statistics.mean(sizes) <= 3_600


def test_the_shape_scales_down_and_is_deterministic() -> None:
    small = build_shape("zipf", 401, subscriptions=40, sites=4_000, slot_share=0.3)
    again = build_shape("zipf", 401, subscriptions=40, sites=4_000, slot_share=0.3)
    assert [s.key for s in small.iter_resources()] == [s.key for s in again.iter_resources()]
    stats = shape_statistics(small)
    assert stats["subscriptions"] == 40 and stats["subscriptions_without_sites"] == 2
    assert small.counts()["sites"] == 4_000 and small.counts()["slots"] == 1_200
    assert stats["largest_five_sites"][0] > 10 * stats["median_sites"], "still heavy at the head"
    statuses = Counter(e.status for e in small.expected().values())
    assert set(statuses) == {"PASS", "WARN", "FAIL"}, "every verdict of the oracle is present"


def test_shapes_keep_their_serving_defaults() -> None:
    assert SHAPE_DEFAULTS["zipf"]["page_size"] == 100, "every list pages at 100 items"
    assert SHAPE_DEFAULTS["heavy"]["page_size"] == SHAPE_DEFAULTS["flat"]["page_size"] == 50
