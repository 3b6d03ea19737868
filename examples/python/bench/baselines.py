"""Python baselines of the benchmark harness (``examples/bench/baselines.rs`` runs this script).

Measured here, in the same run as pyvisor and the floor:

* ``multiprocessing.Pool(2).apply(math.sqrt, (2.0,))`` (fork context, the Linux default);
* ``concurrent.futures.ProcessPoolExecutor(2).submit(math.sqrt, 2.0).result()``;
* Ray actor calls, only when ``import ray`` works (otherwise a note; Ray is never a dependency).

Output: one line per figure, ``<baseline>\\t<metric>\\t<value>``, and ``note\\t<text>`` lines;
the harness parses them. Latencies are in microseconds, throughputs in calls/s, times in ms.

Usage: ``python baselines.py [--smoke] [--pin same|split|none] [--only a,b] [--reps N]``
"""

from __future__ import annotations

import argparse
import concurrent.futures
import math
import multiprocessing
import os
import signal
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import pyvisor_bench  # noqa: E402  (the fixture: echo)

OUT = []


def emit(name: str, metric: str, value: float) -> None:
    OUT.append(f"{name}\t{metric}\t{value:.6g}")


def note(text: str) -> None:
    OUT.append(f"note\t{text}")


def percentiles(samples_ns):
    s = sorted(samples_ns)
    n = len(s)

    def pick(q):
        return s[min(n - 1, int(q * n))] / 1000.0

    return pick(0.50), pick(0.99), pick(0.999), statistics.fmean(s) / 1000.0


def median_of(reps):
    """Median of each position over repetitions: ``reps`` is a list of tuples."""
    return tuple(statistics.median(col) for col in zip(*reps))


# --- placement -------------------------------------------------------------------------------


def cpus():
    return sorted(os.sched_getaffinity(0))


def placement(mode):
    """(parent cpus, worker cpus or None) for a mode; the parent is pinned at once."""
    allowed = cpus()
    if mode == "none" or len(allowed) == 0:
        return None
    host = {allowed[0]}
    worker = {allowed[0]} if mode == "same" or len(allowed) < 2 else {allowed[1]}
    os.sched_setaffinity(0, host)
    return worker


def pin_worker(worker_cpus):
    if worker_cpus is not None:
        os.sched_setaffinity(0, worker_cpus)


# --- workloads --------------------------------------------------------------------------------


def latency(call, n):
    for _ in range(min(200, n)):
        call()
    samples = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        call()
        samples.append(clock() - t0)
    return percentiles(samples)


def burst(submit_all, n):
    t0 = time.perf_counter()
    submit_all(n)
    return n / (time.perf_counter() - t0)


def bench_pool(args, worker_cpus):
    ctx = multiprocessing.get_context("fork")
    small, burst_rates, mib = [], [], []
    with ctx.Pool(2, initializer=pin_worker, initargs=(worker_cpus,)) as pool:
        payload = os.urandom(1 << 20)
        for _ in range(args.reps):
            small.append(latency(lambda: pool.apply(math.sqrt, (2.0,)), args.calls))

            def submit_all(n):
                results = [pool.apply_async(math.sqrt, (2.0,)) for _ in range(n)]
                for r in results:
                    r.get()

            burst_rates.append(burst(submit_all, args.calls))
            mib.append(latency(lambda: pool.apply(pyvisor_bench.echo, (payload,)), args.mib_calls))
    p50, p99, p999, mean = median_of(small)
    emit("mp_pool_apply", "small_p50_us", p50)
    emit("mp_pool_apply", "small_p99_us", p99)
    emit("mp_pool_apply", "small_p999_us", p999)
    emit("mp_pool_apply", "small_seq_calls_s", 1e6 / mean)
    emit("mp_pool_apply", "burst_calls_s", statistics.median(burst_rates))
    p50, p99, _, _ = median_of(mib)
    emit("mp_pool_apply", "mib_p50_us", p50)
    emit("mp_pool_apply", "mib_p99_us", p99)


def bench_ppe(args, worker_cpus):
    small, burst_rates, mib = [], [], []
    ctx = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(
        2, mp_context=ctx, initializer=pin_worker, initargs=(worker_cpus,)
    ) as ex:
        payload = os.urandom(1 << 20)
        for _ in range(args.reps):
            small.append(latency(lambda: ex.submit(math.sqrt, 2.0).result(), args.calls))

            def submit_all(n):
                futures = [ex.submit(math.sqrt, 2.0) for _ in range(n)]
                for f in futures:
                    f.result()

            burst_rates.append(burst(submit_all, args.calls))
            mib.append(latency(lambda: ex.submit(pyvisor_bench.echo, payload).result(), args.mib_calls))
    p50, p99, p999, mean = median_of(small)
    emit("ppe", "small_p50_us", p50)
    emit("ppe", "small_p99_us", p99)
    emit("ppe", "small_p999_us", p999)
    emit("ppe", "small_seq_calls_s", 1e6 / mean)
    emit("ppe", "burst_calls_s", statistics.median(burst_rates))
    p50, p99, _, _ = median_of(mib)
    emit("ppe", "mib_p50_us", p50)
    emit("ppe", "mib_p99_us", p99)


def _ready(q, module):
    if module:
        __import__(module)
    q.put(os.getpid())


def bench_pool_start(args, ns, module, label):
    """Pool(N) with the spawn context (a fresh interpreter per worker, like pyvisor) → every
    worker has run its initializer (importing ``module`` when given)."""
    ctx = multiprocessing.get_context("spawn")
    for n in ns:
        times = []
        for _ in range(args.start_reps):
            q = ctx.Queue()
            t0 = time.perf_counter()
            pool = ctx.Pool(n, initializer=_ready, initargs=(q, module))
            for _ in range(n):
                q.get(timeout=120)
            times.append((time.perf_counter() - t0) * 1000.0)
            pool.terminate()
            pool.join()
        emit("mp_pool_spawn", f"start_{label}_{n}_ms", statistics.median(times))


def bench_pool_restart(args, worker_cpus):
    """Pool(1): SIGKILL the worker while it runs a call, then time until a new apply succeeds
    (the Pool's handler thread replaces dead workers; the call that was running is lost and its
    AsyncResult never completes).

    The worker is killed *busy* on purpose: an idle Pool worker waits in the task queue's
    ``get()`` holding the queue's read lock, and SIGKILLing it there deadlocks the pool for good
    (its replacement and ``terminate()`` both block on that lock)."""
    ctx = multiprocessing.get_context("fork")
    times, stuck = [], 0
    with ctx.Pool(1, initializer=pin_worker, initargs=(worker_cpus,)) as pool:
        for _ in range(args.kills):
            pid = pool.apply(os.getpid)
            pool.apply_async(time.sleep, (30,))
            time.sleep(0.02)  # the worker has taken the sleep task and released the queue lock
            t0 = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            recovered = False
            while time.perf_counter() - t0 < 5.0:
                try:
                    if pool.apply_async(os.getpid).get(timeout=1) != pid:
                        recovered = True
                        break
                except multiprocessing.TimeoutError:
                    pass
            if recovered:
                times.append((time.perf_counter() - t0) * 1000.0)
            else:
                stuck += 1
                break
    if times:
        emit("mp_pool_apply", "restart_ms", statistics.median(times))
    if stuck:
        note("multiprocessing.Pool(1) did not recover within 5 s after a SIGKILL")
    note("restart baselines: multiprocessing.Pool(1), worker SIGKILLed during a call, until the "
         "next apply succeeds (the call in flight is lost; a worker SIGKILLed while idle deadlocks "
         "the Pool: it dies holding the task queue's lock). ProcessPoolExecutor is "
         "BrokenProcessPool for good after a SIGKILL (no restart).")


class _Echo:
    def f(self, x):
        return x

    def pid(self):
        return os.getpid()


def bench_ray(args):
    try:
        import ray  # noqa: F401
    except Exception as exc:  # not installed: that is the normal case
        note(f"Ray skipped: `import ray` failed ({type(exc).__name__}: {exc}); "
             "see ../shared/reference/perf-anchors.md for Ray figures on this machine kind")
        return
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        Actor = ray.remote(max_restarts=-1, max_task_retries=0)(_Echo)
        a = Actor.remote()
        ray.get(a.pid.remote())
        small, mib = [], []
        payload = os.urandom(1 << 20)
        calls = max(100, args.calls // 10)
        for _ in range(args.reps):
            small.append(latency(lambda: ray.get(a.f.remote(2.0)), calls))
            mib.append(latency(lambda: ray.get(a.f.remote(payload)), max(20, args.mib_calls // 5)))
        p50, p99, p999, mean = median_of(small)
        emit("ray_actor", "small_p50_us", p50)
        emit("ray_actor", "small_p99_us", p99)
        emit("ray_actor", "small_p999_us", p999)
        emit("ray_actor", "small_seq_calls_s", 1e6 / mean)
        t0 = time.perf_counter()
        refs = [a.f.remote(2.0) for _ in range(calls)]
        ray.get(refs)
        emit("ray_actor", "burst_calls_s", calls / (time.perf_counter() - t0))
        p50, p99, _, _ = median_of(mib)
        emit("ray_actor", "mib_p50_us", p50)
        emit("ray_actor", "mib_p99_us", p99)
        times = []
        for _ in range(min(args.kills, 5)):
            pid = ray.get(a.pid.remote())
            t0 = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            while True:
                try:
                    if ray.get(a.pid.remote(), timeout=10) != pid:
                        break
                except Exception:
                    time.sleep(0.001)
            times.append((time.perf_counter() - t0) * 1000.0)
        emit("ray_actor", "restart_ms", statistics.median(times))
    finally:
        ray.shutdown()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--pin", choices=("same", "split", "none"), default="same")
    ap.add_argument("--only", default="")
    ap.add_argument("--reps", type=int, default=0)
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    if args.smoke:
        args.calls, args.mib_calls, args.reps, args.start_reps, args.kills = 300, 20, 1, 1, 2
        start_ns, dspy_ns = (2,), ()
    else:
        args.calls, args.mib_calls, args.start_reps, args.kills = 20000, 500, 3, 10
        args.reps = args.reps or 3
        start_ns, dspy_ns = (2, 8, 32), (2, 8)

    # Start-to-ready first, before the parent pins itself (spawned children inherit the mask).
    if not only or "start" in only:
        bench_pool_start(args, start_ns, None, "light")
    if (not only or "dspy" in only) and dspy_ns:
        bench_pool_start(args, dspy_ns, "dspy", "dspy")

    worker_cpus = placement(args.pin)
    if not only or "pool" in only:
        bench_pool(args, worker_cpus)
    if not only or "ppe" in only:
        bench_ppe(args, worker_cpus)
    if not only or "restart" in only:
        bench_pool_restart(args, worker_cpus)
    if not only or "ray" in only:
        bench_ray(args)
    sys.stdout.write("\n".join(OUT) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
