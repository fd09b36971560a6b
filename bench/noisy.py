"""Noisy neighbour: tenant B's sessions while 300 concurrent bad logins hit tenant A, same run.

A platform (``jumpgate start``, default capacity settings), tenant ``bench`` (B) with a node
agent, and tenant ``noisy`` (A). B's session start is ``ssh HOST true`` through the proxy
(the path ``jump ssh`` takes: user cert checked, node located, session authorized), timed
idle and then while 300 clients keep a bad ``/v1/login`` each in flight against A, every
client from its own loopback address with its own user name (a distributed attack: no
per-address or per-user limit spares the platform a bcrypt check; only each tenant's bounded
share of the control plane and the proxy's own executor protect B).
Targets: no failure, p95 under load <= 2x p95 idle.

Then logins per second with correct passwords (8 at a time, one tenant) against the bcrypt
floor: checks on as many threads as the platform lets one tenant run at once (2) or the
machine has cores, whichever is fewer, measured in the same run, at normal priority and at
the API workers' (``api_nice``). The attacking clients run at nice 19: a remote attacker's
CPU is not the platform's, so only what the platform spends on them (TLS, HTTP, bcrypt) is
measured.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import bcrypt
import pyotp

from bench.flood import PUBLIC_KEY, LoginFlood
from bench.harness import BIN, PASSWORD, Bench, p50_p95, start
from jumpgate.cli.daemon.config import CONFIG_VARIABLE, load
from jumpgate.control_plane.users import BCRYPT_ROUNDS
from jumpgate.protocol import calls, models
from jumpgate.protocol.client import Client

ATTACKERS = 300
SESSION_SECONDS = 60
"""A session start that takes longer is counted as failed."""


def session_starts(
    bench: Bench, runs: int, flood: LoginFlood | None = None
) -> tuple[list[float], list[str]]:
    """Seconds of each ``ssh web-1 true``, and the errors of those that failed; with a
    ``flood``, how many of its logins are in flight is noted before each."""
    took, failures = [], []
    for _ in range(runs):
        if flood is not None:
            flood.sample()
        began = time.perf_counter()
        try:
            done = subprocess.run(
                ["ssh", "-F", str(bench.jumpgate_ssh_config), "web-1", "true"],
                capture_output=True,
                timeout=SESSION_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired:
            failures.append(f"no session after {SESSION_SECONDS} s")
        else:
            if done.returncode != 0:
                failures.append(done.stderr.decode(errors="replace").strip()[-200:])
        took.append(time.perf_counter() - began)
    return took, failures


def _users(bench: Bench, count: int) -> dict[str, str]:
    """``count`` signed-up users of tenant bench: name to TOTP secret."""
    anonymous = Client(f"bench.localhost:{bench.web_port}", insecure=True)
    secrets = {}
    for n in range(count):
        request = models.UserCreateRequest(name=f"user{n}", roles=[models.Role.ACCESS])
        invite = bench.client.send(calls.add_user(request))
        signup = models.SignupRequest(token=invite.invite_token, password=PASSWORD)
        secrets[f"user{n}"] = anonymous.send(calls.signup(signup)).totp_secret
    return secrets


def logins_per_second(bench: Bench, secrets: dict[str, str], concurrency: int) -> float:
    """Correct logins, ``concurrency`` at a time, one per user: logins a second."""

    def login(item: tuple[str, str]) -> None:
        user, secret = item
        body = models.LoginRequest(
            user=user, password=PASSWORD, otp=pyotp.TOTP(secret).now(), public_key=PUBLIC_KEY
        )
        # A client each: every login is another person's first call, handshake and all
        with Client(f"bench.localhost:{bench.web_port}", insecure=True) as client:
            client.send(calls.login(body))

    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(login, secrets.items()))
    return len(secrets) / (time.perf_counter() - began)


def bcrypt_floor(threads: int, niceness: int = 0, seconds: float = 3.0) -> float:
    """``bcrypt.checkpw`` a second at the platform's cost on ``threads`` threads, run at
    ``niceness`` (the platform's API workers run at ``api_nice``)."""
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(BCRYPT_ROUNDS))
    counts = [0] * threads
    deadline = time.perf_counter() + seconds

    def work(n: int) -> None:
        if niceness:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
        while time.perf_counter() < deadline:
            bcrypt.checkpw(PASSWORD.encode(), hashed)
            counts[n] += 1

    began = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(threads)))
    return sum(counts) / (time.perf_counter() - began)


def check_cpu_seconds(count: int = 20) -> float:
    """CPU seconds of one ``bcrypt.checkpw`` at the platform's cost (whatever else runs)."""
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(BCRYPT_ROUNDS))
    began = time.thread_time()
    for _ in range(count):
        bcrypt.checkpw(PASSWORD.encode(), hashed)
    return (time.thread_time() - began) / count


def _cpu_seconds(pid: int) -> float:
    """User and system CPU seconds a process has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _row(name: str, took: list[float], failures: list[str]) -> float:
    p50, p95 = p50_p95(took)
    print(f"  {name:<34}{p50 * 1000:>9.0f}{p95 * 1000:>9.0f}{len(failures):>10}")
    return p95


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=40, help="session starts idle and loaded")
    parser.add_argument("--users", type=int, default=60, help="correct logins to time")
    parser.add_argument("--attacker-nice", type=int, default=19, help="the attackers' niceness")
    parser.add_argument("--config-yaml", default="", help="platform settings, e.g. 'api_nice: 0'")
    args = parser.parse_args()
    if args.config_yaml:
        os.environ[CONFIG_VARIABLE] = args.config_yaml  # the platform reads it (no -c file)
    with tempfile.TemporaryDirectory() as directory, ExitStack() as stack:
        bench = start(stack, Path(directory), openssh=False)
        data = str(bench.directory / "data")
        subprocess.run(
            [
                str(BIN / "jumpgate"),
                "tenants",
                "create",
                "noisy",
                "--admin",
                "nadia",
                "--data-dir",
                data,
            ],
            capture_output=True,
            check=True,
        )
        secrets = _users(bench, args.users)
        platform_cpu = _cpu_seconds(bench.platform_pid)
        rate = logins_per_second(bench, secrets, 8)  # first: no flood left over in the queue
        per_login = (_cpu_seconds(bench.platform_pid) - platform_cpu) / len(secrets)
        config = load(None, {})
        threads = min(config.login_workers_per_tenant, os.cpu_count() or 1)  # the login lane
        floor = bcrypt_floor(threads)  # right after: the machine's load changes by the minute
        niced = bcrypt_floor(threads, config.api_nice)
        print(
            f"logins with correct passwords, {args.users} users, 8 at a time, one tenant, "
            f"{os.cpu_count()} cores, bcrypt cost {BCRYPT_ROUNDS}: {rate:.1f} logins/s"
        )
        print(
            f"  bcrypt floor on {threads} threads {floor:.1f} checks/s; "
            f"login/floor {rate / floor:.2f}"
        )
        print(
            f"  the same at nice {config.api_nice} (the API workers' priority) {niced:.1f} "
            f"checks/s; login/floor {rate / niced:.2f}"
        )
        cores = os.cpu_count() or 1
        check = check_cpu_seconds()
        print(
            f"  platform CPU per login {per_login * 1000:.0f} ms, per bcrypt check "
            f"{check * 1000:.0f} ms: with its cores to itself the platform serves "
            f"{cores / per_login:.1f} logins/s, {check / per_login:.2f} of the bcrypt floor "
            f"({cores / check:.1f}/s; here the clients share its {cores} cores)"
        )
        session_starts(bench, 2)  # warm the path
        idle, idle_failures = session_starts(bench, args.runs)
        flood = LoginFlood(
            bench.web_port, "noisy", ATTACKERS, niceness=args.attacker_nice, seconds=900
        )
        thread = flood.start()
        deadline = time.monotonic() + 60
        while flood.in_flight < ATTACKERS * 0.9 and time.monotonic() < deadline:
            time.sleep(0.1)  # the flood is in: (nearly) every client's login sent
        loaded, loaded_failures = session_starts(bench, args.runs, flood)
        flood.stop.set()
        thread.join(60)
        answered = sum(n for status, n in flood.statuses.items() if status)
        print(
            f"noisy neighbour: tenant B's session start ('ssh web-1 true' through the proxy), "
            f"{args.runs} runs each"
        )
        print(
            f"  A flooded by {ATTACKERS} concurrent bad logins from {ATTACKERS} addresses; "
            f"api_workers {config.api_workers}, per tenant {config.api_workers_per_tenant} "
            f"+ {config.login_workers_per_tenant} for logins, tenant login budget "
            f"{config.login_tenant_rate:g}/s burst {config.login_tenant_burst}"
        )
        print(f"  {'':<34}{'p50 ms':>9}{'p95 ms':>9}{'failures':>10}")
        idle95 = _row("B idle", idle, idle_failures)
        load95 = _row("B while A is flooded", loaded, loaded_failures)
        failures = len(idle_failures) + len(loaded_failures)
        verdict = "meets" if failures == 0 and load95 <= 2 * idle95 else "MISSES"
        print(
            f"  p95 loaded/idle {load95 / idle95:.2f}; {verdict} the target "
            "(0 failures, p95 loaded <= 2x idle)"
        )
        statuses = dict(sorted(flood.statuses.items()))
        print(f"  A's bad logins answered meanwhile: {answered} (by status {statuses})")
        samples = flood.samples or [0]
        print(
            f"  A's logins in flight as B's sessions started: min {min(samples)}, "
            f"median {sorted(samples)[len(samples) // 2]} of {ATTACKERS}"
            f" (attackers at nice {args.attacker_nice})"
        )
        for failure in (idle_failures + loaded_failures)[:3]:
            print(f"  failure: {failure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
