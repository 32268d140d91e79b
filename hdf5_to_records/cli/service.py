"""``data-service dispatcher`` and ``data-service worker``: tf.data service servers."""

from __future__ import annotations

import threading
import time

import click

from .app import Interrupted, debug_option, main, reported_errors, sigterm_as_interrupt

SERVER_STOP_TIMEOUT_S = 5.0
SIGNAL_POLL_S = 0.2  # how soon a signal delivered to another thread is acted on


@main.group("data-service")
def data_service() -> None:
    """Run tf.data service servers for `reader.load(..., service="grpc://HOST:PORT")`."""


@data_service.command()
@click.option("--port", type=int, default=5050, show_default=True, help="Port (0: any free).")
@click.option("--work-dir", help="Where the dispatcher keeps its state (with --fault-tolerant).")
@click.option(
    "--fault-tolerant", is_flag=True, help="Journal state in --work-dir to survive restarts."
)
@debug_option
def dispatcher(port: int, work_dir: str | None, fault_tolerant: bool, debug: bool) -> None:
    """Start a tf.data service dispatcher and serve until stopped (Ctrl-C, SIGTERM)."""
    with reported_errors(debug):
        from ..scale_out.data_service import start_dispatcher

        server = start_dispatcher(port=port, work_dir=work_dir, fault_tolerant=fault_tolerant)
        _serve(server, f"dispatcher serving at {server.target}")


@data_service.command()
@click.option("--dispatcher", "dispatcher_address", required=True, metavar="HOST:PORT")
@click.option("--port", type=int, default=0, show_default=True, help="Port (0: any free).")
@click.option(
    "--worker-address",
    metavar="HOST:PORT",
    help="How clients reach this worker (default localhost:PORT; use HOSTNAME:%port%).",
)
@debug_option
def worker(dispatcher_address: str, port: int, worker_address: str | None, debug: bool) -> None:
    """Start a tf.data service worker for the dispatcher at HOST:PORT; serve until stopped."""
    with reported_errors(debug):
        from ..scale_out.data_service import served_address, start_worker

        server = start_worker(
            dispatcher=dispatcher_address, port=port, worker_address=worker_address
        )
        _serve(
            server,
            f"worker serving at {served_address(server)} for dispatcher {dispatcher_address}",
        )


def _serve(server, ready: str) -> None:
    """Say ``ready``, block until Ctrl-C or SIGTERM (``join()`` would not see either),
    then stop. The SIGTERM handler is in place before ``ready`` is printed, so whoever
    waits for that line may stop the server at once.

    The wait is short sleeps: a signal that the kernel delivers to one of gRPC's threads
    does not interrupt the main thread's sleep, and Python runs its handler only when
    the main thread wakes (a one-hour sleep once left a SIGTERMed dispatcher running)."""
    try:
        with sigterm_as_interrupt():
            click.echo(ready, err=True)
            while True:
                time.sleep(SIGNAL_POLL_S)
    except KeyboardInterrupt as exc:
        # A worker whose dispatcher is already gone can block in stop(): give it a
        # few seconds, then exit anyway (the process holds nothing else).
        stopping = threading.Thread(target=server.stop, daemon=True)
        stopping.start()
        stopping.join(timeout=SERVER_STOP_TIMEOUT_S)
        raise Interrupted.of(exc, "stopped") from None
