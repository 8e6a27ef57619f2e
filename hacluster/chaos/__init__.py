"""Chaos runs against real pools: seeded fault schedules, the runner, the checker."""
