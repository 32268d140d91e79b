"""Scaling-out benchmark: conversion executors and reading through tf.data service.

Source: scene rows (``data`` float32 (4096, 9) + ``label`` uint8 (4096), 151,552 B per
row) in 16-row chunks with gzip 4 + shuffle, written once into the work directory.

1. Conversion, each a whole command in a fresh process, outputs deleted and a settle
   wait before each (see convert_bench.py on this VM's memory), the order rotated over
   ``--rounds`` rounds after an untimed warm-up round:
   ``L1``/``L2``: ``convert --workers 1/2``; ``T2``: two task-array tasks at once
   (``--num-tasks 2``, one worker each) then ``finalize``; ``B1``: ``--runner beam`` on
   the DirectRunner (one in-process worker); ``B2``: the DirectRunner with two worker
   processes (``direct_num_workers=2 direct_running_mode=multi_processing``).
   Throughput is source data bytes per wall second; ratios against ``L1``.
2. Reading (``reader.load``, batch 32, a warm-up pass then a timed pass in one fresh
   client process per run): the copy-mode and the index-mode output, read locally
   (``Lc``, ``Li``) and through a tf.data service of one dispatcher and two worker
   processes on this machine (``Sc``, ``Si``; ``distributed_epoch``; ``Sz``: ``Sc`` with
   ``service_compression="AUTO"``, tf.data's own default), ``--epochs`` epochs
   per pass. The servers run for the whole read part and share the two cores with the
   client; "machine cores" counts every process's CPU.

    .venv/bin/python benchmarks/scale_bench.py [--rows 3600] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

import measure
from convert_bench import ensure_source, log
from read_bench import order

from hdf5_to_records.samples import ROW_BYTES

HERE = os.path.dirname(os.path.abspath(__file__))
CLI = os.path.join(os.path.dirname(sys.executable), "hdf5-to-records")
CONVERTS = ("L1", "L2", "T2", "B1", "B2")
READS = ("Lc", "Sc", "Sz", "Li", "Si")
SETTLE_S = 4.0  # see convert_bench.DEFAULT_SETTLE_S
BATCH = 32
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    client = sub.add_parser("client", help="(internal) one timed read in this process")
    client.add_argument("records")
    client.add_argument("--service")
    client.add_argument("--epochs", type=int, default=1)
    client.add_argument("--compression")
    parser.add_argument("--rows", type=int, default=3600, help="Source rows (3600: 546 MB).")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", default=os.path.join(HERE, "_work"))
    parser.add_argument("--skip-convert", action="store_true")
    parser.add_argument("--skip-read", action="store_true")
    parser.add_argument(
        "--epochs",
        type=int,
        default=10,
        help="Epochs per timed read pass: the service client notices the end of the stream "
        "only at its next task refresh (once a second), a fixed cost the epochs share.",
    )
    return parser.parse_args(argv)


def convert_argv(name: str, source: str, out: str) -> list[str]:
    base = [CLI, "convert", source, "-o", out]
    if name in ("L1", "L2"):
        return [*base, "--workers", name[1]]
    if name == "B1":
        return [*base, "--runner", "beam"]
    if name == "B2":
        options = ["direct_num_workers=2", "direct_running_mode=multi_processing"]
        return [*base, "--runner", "beam", *[a for o in options for a in ("--beam-option", o)]]
    tasks = " & ".join(
        f"{' '.join(base)} --workers 1 --num-tasks 2 --task-index {i} >/dev/null" for i in (0, 1)
    )
    return ["sh", "-c", f"{tasks} & wait && {CLI} finalize {out}"]


def bench_convert(args, source: str) -> dict:
    data_bytes = args.rows * ROW_BYTES
    seconds: dict[str, list[float]] = {name: [] for name in CONVERTS}
    for round_ in range(args.rounds + 1):  # round 0 is a warm-up
        for name in order(CONVERTS, round_):
            out = os.path.join(args.workdir, f"scale_{name}")
            shutil.rmtree(out, ignore_errors=True)
            time.sleep(SETTLE_S)
            m = measure.run(convert_argv(name, source, out), env=ENV, use_time=False)
            if m.returncode != 0 or not os.path.exists(os.path.join(out, "manifest.json")):
                raise SystemExit(f"{name} exited {m.returncode}:\n{m.stderr[-3000:]}")
            if round_:
                seconds[name].append(m.seconds)
                log(f"round {round_} {name}: {m.seconds:.2f} s")
            shutil.rmtree(out, ignore_errors=True)
    table = {}
    print(f"\n{'command':<8} {'median s':>9} {'MB/s':>7} {'x L1':>6}  runs")
    base = statistics.median(seconds["L1"])
    for name in CONVERTS:
        median = statistics.median(seconds[name])
        table[name] = {"seconds": median, "runs": seconds[name], "mb_s": data_bytes / 1e6 / median}
        runs = ", ".join(f"{s:.2f}" for s in seconds[name])
        print(
            f"{name:<8} {median:>9.2f} {data_bytes / 1e6 / median:>7.0f} {base / median:>6.2f}  "
            f"{runs}"
        )
    return table


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def start_service(workdir: str) -> tuple[str, list[subprocess.Popen]]:
    """Two workers and a dispatcher, each its own process, as users start them; their
    logs go to files (a pipe nobody reads could fill up and block a server)."""
    port = _free_port()
    commands = [["dispatcher", "--port", str(port)]]
    commands += [["worker", "--dispatcher", f"localhost:{port}"]] * 2
    procs, logs = [], []
    for i, command in enumerate(commands):
        logs.append(os.path.join(workdir, f"scale_server_{i}.log"))
        with open(logs[-1], "w") as log_file:
            procs.append(
                subprocess.Popen([CLI, "data-service", *command], env=ENV, stderr=log_file)
            )
    deadline = time.monotonic() + 120
    while not all(" serving " in open(path).read() for path in logs):
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise SystemExit(f"tf.data service servers did not start; see {logs}")
        time.sleep(0.2)
    return f"grpc://localhost:{port}", procs[::-1]  # stopped workers first


def run_client(records: str, service: str | None, epochs: int, compression: bool) -> dict:
    argv = [sys.executable, __file__, "client", records, "--epochs", str(epochs)]
    argv += ["--compression", "AUTO"] if compression else []
    done = subprocess.run(
        argv + (["--service", service] if service else []), env=ENV, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_read(args, source: str) -> dict:
    outputs = {}
    for mode in ("copy", "index"):
        out = os.path.join(args.workdir, f"scale_read_{mode}_{args.rows}")
        if not os.path.exists(os.path.join(out, "manifest.json")):
            log(f"converting --mode {mode} ...")
            subprocess.run(
                [CLI, "convert", source, "-o", out, "--mode", mode, "--overwrite"],
                check=True,
                env=ENV,
                capture_output=True,
            )
        outputs[mode] = out
    service, procs = start_service(args.workdir)
    rates: dict[str, list[float]] = {name: [] for name in READS}
    cores: dict[str, list[float]] = {name: [] for name in READS}
    client_us: dict[str, list[float]] = {name: [] for name in READS}
    try:
        for round_ in range(args.rounds):
            for name in order(READS, round_):
                records = outputs["index" if name.endswith("i") else "copy"]
                service_or_none = service if name.startswith("S") else None
                report = run_client(records, service_or_none, args.epochs, name == "Sz")
                if report["examples"] != args.rows * args.epochs:
                    raise SystemExit(f"{name}: {report['examples']} examples, not {args.rows}")
                rate = report["examples"] / report["seconds"]
                rates[name].append(rate)
                cores[name].append(report["machine_busy_s"] / report["seconds"])
                client_us[name].append(report["cpu_s"] / report["examples"] * 1e6)
                log(f"round {round_ + 1} {name}: {rate:,.0f} examples/s")
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(
        f"\n{'read':<5} {'examples/s':>11} {'MB/s':>7} {'machine cores':>14} "
        f"{'client CPU us/ex':>17}  rounds"
    )
    table = {}
    for name in READS:
        rate = statistics.median(rates[name])
        busy = statistics.median(cores[name])
        us = statistics.median(client_us[name])
        table[name] = {
            "rate": rate,
            "rates": rates[name],
            "machine_cores": busy,
            "client_cpu_us": us,
        }
        runs = ", ".join(f"{r:,.0f}" for r in rates[name])
        print(
            f"{name:<5} {rate:>11,.0f} {rate * ROW_BYTES / 1e6:>7.0f} {busy:>14.2f} {us:>17.0f}"
            f"  {runs}"
        )
    for local, remote in (("Lc", "Sc"), ("Lc", "Sz"), ("Li", "Si")):
        print(f"  {remote}/{local} = {table[remote]['rate'] / table[local]['rate']:.2f}x")
    return table


def client(args) -> None:
    """One fresh process: a warm-up pass, then a timed pass (read_pipelines.timed_pass)."""
    from read_pipelines import drain_python, timed_pass

    import reader

    ds = reader.load(
        args.records,
        batch_size=BATCH,
        service=args.service,
        repeat=args.epochs,
        service_compression=args.compression,
    )
    print(json.dumps(timed_pass(lambda: drain_python(ds))))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.command == "client":
        client(args)
        return
    os.makedirs(args.workdir, exist_ok=True)
    measure.become_subreaper()
    source = ensure_source(args.workdir, args.rows, "gzip")
    subprocess.run(["sync"], check=False)
    results = {}
    if not args.skip_convert:
        results["convert"] = bench_convert(args, source)
    if not args.skip_read:
        results["read"] = bench_read(args, source)
    measure.save_results(os.path.join(args.workdir, "scale_results.json"), args, [], results)


if __name__ == "__main__":
    main()
