"""Fault injection for Ray-sampled tests: kill a rollout actor while it works, as a crash would."""

from __future__ import annotations

from metarl.sampling.ray_sampler import RaySampler


def kill_busy_worker(sampler: RaySampler) -> bool:
    """``ray.kill`` the actor of one of the sampler's in-flight chunks (as a crash would); False if none is in flight.

    Safe to call from another thread while the sampler samples (its in-flight map may change while we read it).
    """
    import ray

    for _ in range(100):
        try:
            busy = [actor for _, _, actor in list(sampler._in_flight.values())]
            break
        except RuntimeError:  # dictionary changed size during iteration
            continue
    else:
        return False
    if not busy:
        return False
    ray.kill(busy[0])
    return True
