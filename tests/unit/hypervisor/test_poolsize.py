"""The warm-shell pool's size rule (hypervisor/providers/docker/poolsize.py), on an explicit clock."""

from __future__ import annotations

from hypervisor.providers.docker.poolsize import BurstSizer

P = "parent"


def burst(s: BurstSizer, n: int, end: float, parent: str = P) -> None:
    for _ in range(n):
        s.asked(parent)
    s.quiet(parent, end)


def test_no_burst_keeps_the_floor() -> None:
    s = BurstSizer(ceiling=8, memory_s=600)
    assert s.target(P, 2, 0.0) == 2
    assert s.shrink_at(P, 2, 0.0) is None


def test_a_burst_bigger_than_the_floor_raises_the_target_until_it_is_forgotten() -> None:
    s = BurstSizer(ceiling=8, memory_s=600)
    burst(s, 5, end=100.0)
    assert s.target(P, 2, 100.0) == 5
    assert s.shrink_at(P, 2, 100.0) == 700.0
    assert s.target(P, 2, 699.9) == 5
    assert s.target(P, 2, 700.0) == 2
    assert s.shrink_at(P, 2, 700.0) is None


def test_the_burst_in_progress_counts_before_it_ends() -> None:
    s = BurstSizer(ceiling=8, memory_s=600)
    for _ in range(4):
        s.asked(P)
    assert s.target(P, 2, 1.0) == 4
    # Held up only by the burst in progress: no shrink time until it has ended.
    assert s.shrink_at(P, 2, 1.0) is None


def test_the_ceiling_bounds_the_target_and_the_floor_wins_over_it() -> None:
    s = BurstSizer(ceiling=3, memory_s=600)
    burst(s, 20, end=0.0)
    assert s.target(P, 2, 1.0) == 3
    assert s.target(P, 4, 1.0) == 4  # the configured pool size is always kept


def test_a_floor_of_zero_turns_the_pool_off() -> None:
    s = BurstSizer(ceiling=8, memory_s=600)
    burst(s, 5, end=0.0)
    assert s.target(P, 0, 1.0) == 0
    assert s.shrink_at(P, 0, 1.0) is None


def test_the_biggest_remembered_burst_holds_the_target_and_then_the_next_one() -> None:
    s = BurstSizer(ceiling=8, memory_s=600)
    burst(s, 6, end=0.0)
    burst(s, 1, end=100.0)
    burst(s, 4, end=200.0)
    assert s.target(P, 2, 300.0) == 6
    assert s.shrink_at(P, 2, 300.0) == 600.0
    assert s.target(P, 2, 600.0) == 4  # the burst of 6 expired; the one of 4 still holds
    assert s.shrink_at(P, 2, 600.0) == 800.0
    assert s.target(P, 2, 800.0) == 2


def test_a_later_burst_as_big_pushes_the_shrink_back() -> None:
    s = BurstSizer(ceiling=8, memory_s=600)
    burst(s, 5, end=0.0)
    burst(s, 5, end=500.0)
    assert s.shrink_at(P, 2, 550.0) == 1100.0


def test_a_quiet_moment_without_clones_records_no_burst() -> None:
    s = BurstSizer(ceiling=8, memory_s=600)
    s.quiet(P, 0.0)
    s.quiet(P, 1.0)
    assert s.target(P, 2, 2.0) == 2


def test_parents_are_sized_apart_and_forget_starts_over() -> None:
    s = BurstSizer(ceiling=8, memory_s=600)
    burst(s, 5, end=0.0, parent="a")
    burst(s, 3, end=0.0, parent="b")
    assert (s.target("a", 1, 1.0), s.target("b", 1, 1.0)) == (5, 3)
    s.forget("a")
    assert (s.target("a", 1, 1.0), s.target("b", 1, 1.0)) == (1, 3)
