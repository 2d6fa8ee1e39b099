"""The read pacer against a fake clock: ARM's per-subscription read bucket, mirrored client-side."""

from __future__ import annotations

from types import SimpleNamespace

from shared.azure.paging import ReadPacer


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def answer(remaining: int | str | None) -> SimpleNamespace:
    headers = {} if remaining is None else {"x-ms-ratelimit-remaining-subscription-reads": str(remaining)}
    return SimpleNamespace(http_response=SimpleNamespace(headers=headers))


def pacer(clock: FakeClock, **kw: float) -> ReadPacer:
    return ReadPacer(clock=clock, sleep=clock.sleep, **kw)  # type: ignore[arg-type]


def test_no_answer_yet_means_no_wait() -> None:
    clock = FakeClock()
    p = pacer(clock)
    for _ in range(50):
        p.wait()
    assert clock.slept == []


def test_plenty_of_reads_left_go_at_once() -> None:
    clock = FakeClock()
    p = pacer(clock)
    p.observe(answer(240))
    for _ in range(200):
        p.wait()
    assert clock.slept == [], "240 left, 8 kept in reserve: 200 calls need no wait"


def test_an_empty_bucket_paces_calls_at_the_refill_rate() -> None:
    clock = FakeClock()
    p = pacer(clock, refill_per_second=20.0, reserve=8)
    p.observe(answer(0))
    start = clock.now
    for _ in range(40):
        p.wait()
    # 9 tokens (the reserve and one) must refill before the first call, then one per 1/20 s.
    assert abs((clock.now - start) - (9 + 39) / 20.0) < 1e-6
    assert all(abs(s - 0.05) < 1e-9 for s in clock.slept[1:])


def test_tokens_refill_while_idle() -> None:
    clock = FakeClock()
    p = pacer(clock, refill_per_second=10.0, reserve=2)
    p.observe(answer(0))
    clock.now += 5.0  # 50 tokens came back
    for _ in range(40):
        p.wait()
    assert clock.slept == []


def test_a_later_answer_resets_the_mirror_but_keeps_reservations_handed_out() -> None:
    clock = FakeClock()
    p = pacer(clock, refill_per_second=10.0, reserve=0)
    p.observe(answer(0))
    p.wait()  # reserves 0.1 s ahead
    assert clock.slept and abs(clock.slept[0] - 0.1) < 1e-9
    p.observe(answer(1000))  # ARM says plenty: the mirror follows ARM from now on
    for _ in range(100):
        p.wait()
    assert len(clock.slept) == 1


def test_bad_or_missing_headers_change_nothing() -> None:
    clock = FakeClock()
    p = pacer(clock)
    p.observe(answer(None))
    p.observe(answer("not-a-number"))
    for _ in range(20):
        p.wait()
    assert clock.slept == []
