"""Start TensorFlow's own tf.data service servers (``hdf5-to-records data-service``).

A dispatcher hands out the work of a ``reader.load(..., service=...)`` pipeline; workers
run it. Nothing here is ours but the defaults: these are tf.data's servers, and any
tf.data client can use them.
"""

from __future__ import annotations

import re
import socket

from .._tf import import_tensorflow
from ..errors import ServiceUnavailable, UsageError, first_line

CONNECT_TIMEOUT_S = 5.0
_HOST_PORT_RE = re.compile(r"^(?:grpc://)?(?P<host>[^:/\s]+|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5})$")


def parse_address(text: str, *, what: str, expected: str = "HOST:PORT") -> str:
    """``HOST:PORT`` (a ``grpc://`` prefix is dropped).

    Raises:
        UsageError: anything else, starting with ``what`` (the option at fault).
    """
    match = _HOST_PORT_RE.match(text.strip()) if isinstance(text, str) else None
    if match is None or not 0 < int(match["port"]) < 65536:
        raise UsageError(f"{what}: expected {expected}")
    return f"{match['host']}:{int(match['port'])}"


def check_port(port: int, *, option: str = "--port") -> int:
    """A valid port that nothing listens on yet (gRPC would share a taken one silently).

    Raises:
        UsageError: out of range.
        ServiceUnavailable: in use.
    """
    if not 0 <= port < 65536:
        raise UsageError(f"{option} {port}: expected 0..65535 (0: any free port)")
    if port:
        with socket.socket(socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET) as probe:
            try:
                probe.bind(("", port))
            except OSError as exc:
                raise ServiceUnavailable(f"{option} {port}: {exc.strerror or exc}") from None
    return port


def check_reachable(address: str, *, what: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail at once when no dispatcher listens at ``address``: TensorFlow's clients and
    workers would retry for an hour.

    Raises:
        ServiceUnavailable: starting with ``what`` (the option at fault).
    """
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ServiceUnavailable(
            f"{what}: no tf.data service dispatcher answers at {address} "
            f"({exc.strerror or exc}); start one with "
            "`hdf5-to-records data-service dispatcher --port PORT`"
        ) from None


def start_dispatcher(*, port: int, work_dir: str | None = None, fault_tolerant: bool = False):
    """Start a dispatcher on ``port`` (0: any free one); returns the server (running).

    ``work_dir`` with ``fault_tolerant`` journals its state so that a restarted
    dispatcher carries on with the same jobs.

    Raises:
        UsageError: the port is taken or invalid, or fault tolerance lacks a work_dir.
    """
    tf = import_tensorflow()
    service = tf.data.experimental.service
    check_port(port)
    if fault_tolerant and not work_dir:
        raise UsageError("--fault-tolerant needs --work-dir (where the journal is kept)")
    config = service.DispatcherConfig(
        port=port, work_dir=work_dir, fault_tolerant_mode=fault_tolerant
    )
    try:
        return service.DispatchServer(config)
    except (tf.errors.OpError, RuntimeError) as exc:
        raise UsageError(f"--port {port}: cannot start a dispatcher ({first_line(exc)})") from None


def start_worker(*, dispatcher: str, port: int = 0, worker_address: str | None = None):
    """Start a worker registered with ``dispatcher`` (``HOST:PORT``); returns the server.

    ``worker_address`` is how clients reach this worker (default ``localhost:PORT``,
    which suits a worker beside its trainer; give ``HOSTNAME:%port%`` otherwise).

    Raises:
        UsageError: bad addresses or port, or the port is taken.
    """
    tf = import_tensorflow()
    service = tf.data.experimental.service
    check_port(port)
    what = f"--dispatcher {dispatcher}"
    address = parse_address(dispatcher, what=what)
    check_reachable(address, what=what)
    kwargs = {"worker_address": worker_address} if worker_address else {}
    config = service.WorkerConfig(dispatcher_address=address, port=port, **kwargs)
    try:
        return service.WorkerServer(config)
    except (tf.errors.OpError, RuntimeError) as exc:
        raise UsageError(f"--port {port}: cannot start a worker ({first_line(exc)})") from None


def served_address(server) -> str:
    """The address a started worker serves at (TensorFlow keeps it private, as
    ``WorkerServer._address``; "?" if a later version drops it)."""
    return str(getattr(server, "_address", "?"))
