"""Named tenant shapes for the benchmark, beside the spreads of ``tests.emulators.tenant``.

``heavy`` and ``flat`` are :func:`tests.emulators.tenant.generate_tenant` with two spread exponents
(our own tenant's shape). ``zipf`` is the shape of the tenant an independent run measured the audit
on (issue 23), built here as that run described it, so that memory is shown not to depend on the
shape:

* ``subscriptions`` subscriptions (1,000 at 100,000 sites), 5 % of them without sites; the others'
  sizes follow a Zipf-like law, weight ``1 / (i + 1) ** 1.1`` times a uniform factor 0.7-1.3,
  scaled to ``sites`` (at 100,000: the largest five about 14,300, 10,300, 6,300, 3,400 and 3,100,
  the median about 21);
* 1-20 resource groups per subscription (about 10,500 in all); a subscription's sites are spread
  over ``ceil(size / d)`` of them, ``d`` one of 60, 100, 150, 250, with weights ``1 / (j + 1)``
  (about 1,260 groups hold sites); 3 % of group names have awkward characters;
* ``slot_share × sites`` slots (30,000 at 100,000 sites): 1-5 per parent, weights 55/30/10/3/2,
  none on Flex Consumption apps (``kind`` absent);
* every client-certificate profile and kind of ``generate_tenant`` (the first sites cycle them all,
  so even a tiny tenant covers every branch of the oracle).

Its serving settings (lists paged by 100, sites in the full ARM shape) are :data:`SHAPE_DEFAULTS`.
"""

from __future__ import annotations

import math
import random
import statistics
import uuid
from collections import Counter
from typing import Any

from tests.emulators.tenant import (
    _KIND_WEIGHTS,
    ACTIVE_STATES,
    KINDS,
    PROFILES,
    SPREADS,
    Site,
    Tenant,
    _cumulative,
    _prefix,
    generate_tenant,
    profile_settings,
)

#: Every named shape: the two spreads of ``generate_tenant`` and the independent run's tenant.
SHAPES = (*sorted(SPREADS), "zipf")
#: Serving settings that belong to a shape (the emulator's list page size): the bench's defaults.
#: ``zipf``'s seed is the one of the first 3,000 whose largest five subscriptions come closest to the
#: described ones (14,186, 10,115, 6,132, 3,549 and 3,030 sites: within 4.4 %).
SHAPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "heavy": {"page_size": 50, "seed": 1},
    "flat": {"page_size": 50, "seed": 1},
    "zipf": {"page_size": 100, "seed": 401},
}

ZIPF_EXPONENT = 1.1
ZIPF_FACTOR = (0.7, 1.3)
EMPTY_SHARE = 0.05
GROUPS_PER_SUBSCRIPTION = (1, 20)
SITES_PER_GROUP = (60, 100, 150, 250)
AWKWARD_SHARE = 0.03
SLOTS_PER_PARENT = ((1, 55), (2, 30), (3, 10), (4, 3), (5, 2))

#: Awkward group-name stems (valid ARM names: unicode letters and digits, ``_ - . ( )``); a suffix
#: keeps them unique within a subscription.
_AWKWARD_STEMS = ("rg-café-ü", "RG.Prod.v2", "rg(legacy)", "rg_under_score", "Rg-MixedCase-(eu)", "リソース-グループ")
_LOCATIONS = ("East US", "West Europe", "North Europe", "Australia East", "UK South")
_WORDS = ("billing", "portal", "ingest", "crm", "search", "payments", "hr", "data", "edge", "iot", "ml")
_ENVS = ("prod", "dev", "test", "uat", "shared")
_SLOT_NAMES = ("staging", "qa", "dev", "blue", "green")


def build_shape(shape: str, seed: int, *, subscriptions: int, sites: int, slot_share: float) -> Tenant:
    """The tenant of a named shape (deterministic for its arguments)."""
    if shape == "zipf":
        return zipf_tenant(seed, subscriptions=subscriptions, sites=sites, slot_share=slot_share)
    if shape not in SPREADS:
        raise ValueError(f"unknown shape {shape!r}: one of {SHAPES}")
    return generate_tenant(
        seed,
        subscriptions=subscriptions,
        sites=sites,
        slot_share=slot_share,
        sites_per_resource_group=8.0,
        empty_resource_groups=1,
        awkward_names=True,
        keyword_names=False,  # the tenant the README's figures were measured on (the tests cover these names)
        spread_exponent=SPREADS[shape],
    )


def zipf_sizes(rng: random.Random, subscriptions: int, sites: int) -> list[int]:
    """Sites per subscription, in subscription order: 5 % empty (at random), the others by the
    Zipf-like law, scaled to ``sites`` with the largest remainders rounded up."""
    empty = set(rng.sample(range(subscriptions), round(subscriptions * EMPTY_SHARE))) if subscriptions > 1 else set()
    ranked = [i for i in range(subscriptions) if i not in empty]
    rng.shuffle(ranked)  # which subscription is the i-th largest: the list order is arbitrary
    weights = [rng.uniform(*ZIPF_FACTOR) / (rank + 1) ** ZIPF_EXPONENT for rank in range(len(ranked))]
    total = sum(weights) or 1.0
    exact = [sites * w / total for w in weights]
    sizes = [math.floor(x) for x in exact]
    short = sites - sum(sizes)
    for rank in sorted(range(len(exact)), key=lambda r: sizes[r] - exact[r])[:short]:
        sizes[rank] += 1
    out = [0] * subscriptions
    for rank, index in enumerate(ranked):
        out[index] = sizes[rank]
    return out


def zipf_tenant(seed: int, *, subscriptions: int = 1000, sites: int = 100_000, slot_share: float = 0.3) -> Tenant:
    """The independent run's tenant (see the module docstring)."""
    rng = random.Random(seed)
    tenant = Tenant(str(uuid.UUID(int=rng.getrandbits(128), version=4)))
    profile_cum = _cumulative([p[3] for p in PROFILES])
    kind_cum = _cumulative(list(_KIND_WEIGHTS))
    tag = f"z{seed}"
    counter = 0
    created: list[Site] = []

    def settings_for(index: int, kind: str | None) -> dict[str, Any]:
        return profile_settings(rng, index, kind, profile_cum, _LOCATIONS)

    def group_names(sub_index: int, count: int) -> list[str]:
        names = []
        for k in range(count):
            if rng.random() < AWKWARD_SHARE:
                names.append(f"{rng.choice(_AWKWARD_STEMS)}-{k:03d}")
            else:
                names.append(f"rg-{rng.choice(_WORDS)}-{rng.choice(_ENVS)}-{sub_index:04d}-{k:03d}")
        return names

    for index, size in enumerate(zipf_sizes(rng, subscriptions, sites)):
        sub = tenant.add_subscription(
            str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            f"{rng.choice(('Contoso', 'Fabrikam', 'Northwind', 'Tailspin'))} {rng.choice(_ENVS)} {index + 1:04d}",
        )
        names = group_names(index + 1, rng.randint(*GROUPS_PER_SUBSCRIPTION))
        holding = min(len(names), math.ceil(size / rng.choice(SITES_PER_GROUP))) if size else 0
        for name in names:
            sub._ensure_rg(name)
        weights = _cumulative([1 / (j + 1) for j in range(holding)])
        targets = rng.choices(names[:holding], cum_weights=weights, k=size) if holding else []
        for group in targets:
            kind = KINDS[counter] if counter < len(KINDS) else rng.choices(KINDS, cum_weights=kind_cum)[0]
            created.append(sub._add_site(group, f"{_prefix(kind)}-{tag}-{counter:06d}", settings_for(counter, kind)))
            counter += 1
    _add_slots(rng, created, round(sites * slot_share), settings_for)
    tenant._touch()
    return tenant


def _add_slots(rng: random.Random, sites: list[Site], count: int, settings_for: Any) -> None:
    """``count`` slots on parents drawn at random (1-5 each, weights 55/30/10/3/2), never on a Flex
    Consumption app (no ``kind``: Flex Consumption has no deployment slots)."""
    parents = [s for s in sites if s.kind is not None]
    rng.shuffle(parents)
    values, weights = zip(*SLOTS_PER_PARENT, strict=True)
    made = 0
    for parent in parents:
        if made >= count:
            break
        n = min(rng.choices(values, weights=weights)[0], count - made)
        for k in range(n):
            settings = settings_for(made, parent.kind)
            settings["location"] = parent.location
            parent._new_slot(_SLOT_NAMES[k], settings)
            made += 1


def shape_statistics(tenant: Tenant) -> dict[str, Any]:
    """What a shape is described by: sizes, groups, slots (checked by the smoke test, printed by the bench)."""
    subs = [s for s in tenant.subscriptions if s.state in ACTIVE_STATES]
    sizes = sorted((len(s.sites) for s in subs), reverse=True)
    nonempty = [n for n in sizes if n]
    groups = sum(len(s.resource_groups) for s in subs)
    holding = sum(1 for s in subs for rg in s.resource_groups if s.sites_in_group(rg))
    awkward = sum(1 for s in subs for rg in s.resource_groups if not rg.isascii() or any(c in rg for c in "._()"))
    per_parent: Counter[int] = Counter()
    flex_slots = 0
    for sub in subs:
        for site in sub.sites:
            if site.slots:
                per_parent[len(site.slots)] += 1
                flex_slots += len(site.slots) if site.kind is None else 0
    return {
        "subscriptions": len(subs),
        "subscriptions_without_sites": sum(1 for n in sizes if n == 0),
        "largest_five_sites": sizes[:5],
        "median_sites": statistics.median(nonempty) if nonempty else 0,
        "largest_subscription_resources": max((sum(1 for _ in s.iter_resources()) for s in subs), default=0),
        "resource_groups": groups,
        "resource_groups_with_sites": holding,
        "awkward_group_share": round(awkward / groups, 4) if groups else 0.0,
        "slots": sum(n * c for n, c in per_parent.items()),
        "slots_per_parent": dict(sorted(per_parent.items())),
        "slots_on_flex_apps": flex_slots,
    }
