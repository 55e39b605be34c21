"""Shared test fixtures and helpers."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

from rlhfkit.control import make_env


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small MLPs run fastest on one thread; on a shared 2-core machine intra-op threads only contend."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def random_policy_returns(env_id: str, episodes: int, seed: int) -> list[float]:
    """True returns of uniformly random actions in ``env_id``, episodes seeded ``seed, seed+1, ...``."""
    env: gym.Env = make_env(env_id)
    env.action_space.seed(seed)
    returns = []
    for ep in range(episodes):
        env.reset(seed=seed + ep)
        total, done = 0.0, False
        while not done:
            _, r, terminated, truncated, _ = env.step(env.action_space.sample())
            total += float(r)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return returns


# -- PostgreSQL ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server():
    """One temporary PostgreSQL server for the session (see tests/_postgres.py); skipped when the
    binaries are missing, unless RLHF_REQUIRE_POSTGRES=1 (``make test``)."""
    import os

    from _postgres import PostgresServer, find_bindir

    if find_bindir() is None:
        if os.environ.get("RLHF_REQUIRE_POSTGRES") == "1":
            pytest.fail("PostgreSQL is required (RLHF_REQUIRE_POSTGRES=1) but its binaries are missing: "
                        "`make postgres` (apt-get install postgresql)")
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql, or `make postgres`)")
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_location(request, tmp_path):
    """Where a fresh, empty store lives: an SQLite file, or a new database on the test PostgreSQL server."""
    if request.param == "sqlite":
        return str(tmp_path / "labels.sqlite")
    return request.getfixturevalue("pg_server").new_database()
