"""The conftest helpers that let ``pytest -n 2`` workers share nothing: worker index, per-worker Redis db, and the
retried start of a private stack (fakes only: no servers)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import start_session_stack, worker_config, xdist_worker_index

from infra.errors import StackError
from infra.settings import RedisConfig, ServiceConfig


@pytest.mark.parametrize(("env", "index"), [(None, 0), ("gw0", 0), ("gw1", 1), ("gw12", 12)])
def test_xdist_worker_index(monkeypatch: pytest.MonkeyPatch, env: str | None, index: int) -> None:
    if env is None:
        monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    else:
        monkeypatch.setenv("PYTEST_XDIST_WORKER", env)
    assert xdist_worker_index() == index


@pytest.mark.parametrize(("db", "index", "want"), [(0, 0, 0), (0, 1, 1), (3, 2, 5), (14, 1, 15), (15, 0, 15)])
def test_each_worker_gets_its_own_redis_db(db: int, index: int, want: int) -> None:
    cfg = ServiceConfig(redis=RedisConfig(db=db))
    assert worker_config(cfg, index).redis.db == want


@pytest.mark.parametrize(("redis", "index"), [(RedisConfig(db=15), 1), (RedisConfig(db=10), 6),
                                              (RedisConfig(cluster=True), 1)])
def test_a_worker_without_a_db_of_its_own_is_a_usage_error(redis: RedisConfig, index: int) -> None:
    with pytest.raises(pytest.UsageError, match=f"parallel worker gw{index} needs a Redis db of its own"):
        worker_config(ServiceConfig(redis=redis), index)


def test_worker_zero_keeps_a_cluster_config() -> None:
    cfg = ServiceConfig(redis=RedisConfig(cluster=True))
    assert worker_config(cfg, 0) is cfg


class FakeStack:
    """Fails ``up`` for the first ``FakeStack.failures`` instances, as a port taken by another worker would."""

    failures = 0
    made: list[FakeStack] = []

    def __init__(self, config: ServiceConfig):
        self.config, self.downs = config, 0
        FakeStack.made.append(self)

    @classmethod
    def on_free_ports(cls, base: ServiceConfig, state_dir: Path) -> FakeStack:
        return cls(base.model_copy(update={"state_dir": state_dir}))

    def up(self) -> None:
        if len(FakeStack.made) <= FakeStack.failures:
            raise StackError("port in use", "taken")

    def down(self) -> None:
        self.downs += 1


@pytest.mark.parametrize(("failures", "tries", "stacks", "ok"), [(0, 3, 1, True), (1, 3, 2, True), (2, 3, 3, True),
                                                                 (3, 3, 3, False), (1, 1, 1, False)])
def test_a_failed_stack_start_is_retried_on_new_ports(monkeypatch: pytest.MonkeyPatch, tmp_path_factory,
                                                      failures: int, tries: int, stacks: int, ok: bool) -> None:
    import conftest

    monkeypatch.setattr(conftest, "Stack", FakeStack)
    monkeypatch.setattr(FakeStack, "failures", failures)
    monkeypatch.setattr(FakeStack, "made", [])
    if ok:
        assert start_session_stack(tmp_path_factory, tries) is FakeStack.made[-1]
    else:
        with pytest.raises(StackError):
            start_session_stack(tmp_path_factory, tries)
    assert len(FakeStack.made) == stacks
    assert [s.downs for s in FakeStack.made] == [1] * min(failures, stacks) + [0] * (stacks - min(failures, stacks))
    dirs = [s.config.state_dir for s in FakeStack.made]
    assert len(set(dirs)) == len(dirs)  # each try starts afresh, on ports found free then
