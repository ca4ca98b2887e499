"""`creditgate`: serve the gateway, administer customers, run the demo.

    creditgate serve [--host H] [--port P] [--redis-url URL] [--catalog PATH]
                     [--partitions N] [--processes N] [--callers FILE]
                     [--metrics-port N [--metrics-host 127.0.0.1]] [--pid-file PATH]
                     [--drain-notice-s S]
                     [--shadow-catalog FILE [--shadow-share 0..1]]
                     (--tls-cert PEM --tls-key PEM --tls-ca PEM [--client-auth none]
                      | --insecure)
    creditgate customer put ID --cap NODE=AMOUNT_MINOR ... [--status active] [--timezone TZ]
    creditgate customer show ID
    creditgate credit ID [--product PRODUCT]
    creditgate demo
    creditgate ledger [--redis-url URL] [--ledger-dsn DSN]     the posting worker
                      [--metrics-port N]
    creditgate reconcile [--pushgateway URL] [--textfile PATH] Redis against the ledger
    creditgate bills close --cycle YYYY-MM
    creditgate journal [--limit N] [--customer ID]
    creditgate cluster status [--redis-url redis+cluster://H:P,...] per master: partitions,
                                                               customers, holds, backlog
    creditgate certs init [--dir var/tls]                      a development CA and callers
    creditgate certs issue NAME --uri URI [--dir var/tls]      one more client certificate
    creditgate callers key NAME                                a new API key and its hash
    creditgate callers check FILE                              validate a callers file
    creditgate catalog check FILE                              validate a catalog
    creditgate catalog diff OLD NEW                            what NEW changes, element by element
    creditgate catalog reload [--catalog FILE] (--pid-file F | --pid N)
                                                               validate, then SIGHUP the gateway
--redis-url takes one Redis (redis://H:P/0) or a Redis Cluster by seed nodes
(redis+cluster://H1:P1,H2:P2); serve --durability wait:N answers only once N replicas have
the change; serve, ledger and reconcile take --shard HOST:PORT on a cluster (one shard's
partitions). serve, ledger, reconcile, bills and journal take --log-format json|text
(default json, or $CREDITGATE_LOG_FORMAT). Client commands take --target HOST:PORT (default
127.0.0.1:50051, or $CREDITGATE_TARGET) and mutual TLS with make run's certificates under
var/tls (--cert/--key/--ca name others), or --insecure for a plaintext gateway; they reach
Redis only through the gateway, whatever its Redis is.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from creditgate.gateway import logs
from creditgate.limits import catalog
from creditgate.limits.constants import DRAIN_NOTICE_S, PARTITIONS_DEFAULT

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_LEDGER = "sqlite:///var/ledger.sqlite3"
DEFAULT_TLS_DIR = "var/tls"  # where `make run` keeps its development certificates


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="creditgate", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    _serve_command(commands)
    _client_commands(commands)
    _certs_command(commands)
    _callers_command(commands)
    _catalog_command(commands)
    _ledger_commands(commands)
    _cluster_command(commands)
    return parser


def _cluster_command(commands) -> None:
    """What a Redis Cluster holds, per master (limits/cluster_status.py)."""
    cluster = commands.add_parser("cluster", help="Redis Cluster: per-master status")
    actions = cluster.add_subparsers(dest="action", required=True)
    status = actions.add_parser("status", help="per master: its partitions, customers, open "
                                "holds, outbox backlog and script calls per second")
    _redis_url_option(status)
    status.add_argument("--partitions", type=int, default=int(
        os.environ.get("CREDITGATE_PARTITIONS", PARTITIONS_DEFAULT)))
    status.add_argument("--interval", type=float, default=1.0,
                        help="seconds between the two samples of script calls")
    status.add_argument("--json", action="store_true", help="one JSON object per master")


def _serve_command(commands) -> None:
    serve = commands.add_parser("serve", help="run the gRPC gateway")
    serve.add_argument("--host", default=os.environ.get("CREDITGATE_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("CREDITGATE_PORT", 50051)))
    _redis_url_option(serve)
    serve.add_argument("--durability", default=os.environ.get("CREDITGATE_DURABILITY", "none"),
                       help="none: answer once the master ran the call; wait:N[:MS]: only "
                       "once N replicas acknowledged it within MS (default 500), else "
                       "UNAVAILABLE")
    serve.add_argument("--shard", default=os.environ.get("CREDITGATE_SHARD", ""),
                       metavar="HOST:PORT", help="on a cluster: sweep only the partitions of "
                       "this node's shard (default: every partition)")
    serve.add_argument("--catalog", default=str(catalog.DEFAULT_CATALOG),
                       help="product catalog (TOML); default: the example catalog")
    serve.add_argument("--shadow-catalog", default="", metavar="FILE",
                       help="a candidate catalog evaluated in shadow beside --catalog: every "
                       "call is decided on --catalog; the candidate's decisions are only "
                       "compared, counted and logged, and change nothing (docs/operations.md)")
    serve.add_argument("--shadow-share", type=float, default=None, metavar="SHARE",
                       help="the share of authorizations evaluated in shadow, 0..1 (default "
                       "1: every one)")
    serve.add_argument("--partitions", type=int,
                       default=int(os.environ.get("CREDITGATE_PARTITIONS", PARTITIONS_DEFAULT)),
                       help="customer partitions (fixed per deployment)")
    serve.add_argument("--processes", type=int, default=1,
                       help="processes sharing the port (SO_REUSEPORT)")
    # The environment's value as text: argparse converts it as it converts the option, when
    # serve is the command (a bad value is serve's usage error, not every command's crash).
    serve.add_argument("--drain-notice-s", type=float, default=os.environ.get(
        "CREDITGATE_DRAIN_NOTICE_S", str(DRAIN_NOTICE_S)), help="on SIGTERM, answer health "
        "NOT_SERVING and go on answering calls this long before the port stops, so that "
        "balancers and clients watching health leave first (default %(default)s; 0: none)")
    serve.add_argument("--no-sweeper", action="store_true",
                       help="do not release expired holds from this process")
    serve.add_argument("--pid-file", default="", help="write the gateway's process id here "
                       "while it runs (for `creditgate catalog reload --pid-file`)")
    serve.add_argument("--callers", default=os.environ.get("CREDITGATE_CALLERS", ""),
                       help="the callers file (TOML): who may call what; required")
    serve.add_argument("--metrics-port", type=int,
                       default=int(os.environ.get("CREDITGATE_METRICS_PORT", 0)),
                       help="serve Prometheus metrics on this port, /metrics (0: off; "
                       "with --processes N the sum over the processes)")
    serve.add_argument("--metrics-host",
                       default=os.environ.get("CREDITGATE_METRICS_HOST", "127.0.0.1"),
                       help="the metrics port's address: a loopback address only (plain HTTP)")
    _log_format_option(serve)
    tls = serve.add_argument_group("TLS", "the port's certificates (docs/operations.md); "
                                   "the files are re-read when they change")
    tls.add_argument("--tls-cert", default=os.environ.get("CREDITGATE_TLS_CERT", ""),
                     help="the server's certificate chain (PEM)")
    tls.add_argument("--tls-key", default=os.environ.get("CREDITGATE_TLS_KEY", ""),
                     help="its private key (PEM, unencrypted)")
    tls.add_argument("--tls-ca", default=os.environ.get("CREDITGATE_TLS_CA", ""),
                     help="the CA certificates that sign the callers' certificates (PEM)")
    tls.add_argument("--client-auth", choices=("required", "none"), default="required",
                     help="required: mutual TLS, the client certificate is the caller's "
                     "identity; none: TLS only, callers identify with an API key")
    tls.add_argument("--insecure", action="store_true",
                     help="serve plaintext instead (only on a loopback --host)")


def _client_commands(commands) -> None:
    """The commands that call a running gateway (gateway/cli_client.py)."""
    # --target and the TLS options are accepted after any client command or action.
    target = argparse.ArgumentParser(add_help=False)
    _connection_options(target, on_action=False)
    # The same options on an action, where they override the command's only if given.
    action_target = argparse.ArgumentParser(add_help=False)
    _connection_options(action_target, on_action=True)

    def client(name: str, help_: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_, parents=[target])

    customer = client("customer", "create, replace or show a customer")
    actions = customer.add_subparsers(dest="action", required=True)
    put = actions.add_parser("put", help="create or replace a customer",
                             parents=[action_target])
    put.add_argument("customer_id")
    put.add_argument("--status", default="active",
                     choices=("active", "frozen", "closed", "overdue"))
    put.add_argument("--timezone", default="", help="IANA name (default Asia/Shanghai)")
    put.add_argument("--cap", action="append", default=[], metavar="NODE=AMOUNT_MINOR",
                     help="a cap in minor units, repeatable: --cap total=1000000")
    show = actions.add_parser("show", help="show a customer", parents=[action_target])
    show.add_argument("customer_id")

    credit = client("credit", "show a customer's limits, usage and velocity")
    credit.add_argument("customer_id")
    credit.add_argument("--product", default="")

    client("demo", "create a customer, then authorize, capture and void, printing each answer")


def _connection_options(parser: argparse.ArgumentParser, on_action: bool) -> None:
    """Where the gateway is and how to reach it: mutual TLS with make run's files under
    --tls-dir unless --cert/--key/--ca name others, or plaintext with --insecure."""

    def default(value):
        return argparse.SUPPRESS if on_action else value

    parser.add_argument("--target", default=default(os.environ.get("CREDITGATE_TARGET",
                                                                   DEFAULT_TARGET)),
                        help=f"the gateway's address (default {DEFAULT_TARGET})")
    parser.add_argument("--tls-dir", default=default(os.environ.get("CREDITGATE_TLS_DIR",
                                                                    DEFAULT_TLS_DIR)),
                        help="where `creditgate certs init` wrote the development "
                        f"certificates (default {DEFAULT_TLS_DIR})")
    parser.add_argument("--cert", default=default(""),
                        help="the caller's client certificate (default: the command's "
                        "caller's under --tls-dir)")
    parser.add_argument("--key", default=default(""), help="its private key")
    parser.add_argument("--ca", default=default(""),
                        help="the CA that signs the gateway's certificate (default: "
                        "--tls-dir's ca.pem)")
    parser.add_argument("--insecure", action="store_true", default=default(False),
                        help="plaintext, to a gateway started with --insecure")


def _certs_command(commands) -> None:
    """The development PKI (gateway/devpki.py)."""
    certs = commands.add_parser("certs", help="a development CA, certificates and callers")
    actions = certs.add_subparsers(dest="action", required=True)
    init = actions.add_parser("init", help="make the CA, the server's and the development "
                              "callers' certificates and the callers file; keeps existing files")
    init.add_argument("--dir", default=DEFAULT_TLS_DIR)
    init.add_argument("--callers", default="",
                      help="the callers file to write (default: callers.toml beside --dir)")
    issue = actions.add_parser("issue", help="one more client certificate from --dir's CA")
    issue.add_argument("name", help="the caller's name: the files are NAME.pem and NAME.key")
    issue.add_argument("--uri", default="", help="its identity, a URI SAN "
                       "(spiffe://creditgate.dev/terminal/T-0002)")
    issue.add_argument("--dns", action="append", default=[], help="a DNS SAN (repeatable)")
    issue.add_argument("--days", type=float, default=90.0, help="validity in days")
    issue.add_argument("--dir", default=DEFAULT_TLS_DIR)


def _callers_command(commands) -> None:
    """The callers file's helpers (gateway/callers.py)."""
    callers_ = commands.add_parser("callers", help="API keys and the callers file")
    actions = callers_.add_subparsers(dest="action", required=True)
    key = actions.add_parser("key", help="a new API key for a caller: the key, shown once, "
                             "and the api_key_sha256 line its entry keeps")
    key.add_argument("name", help="the caller's name in the callers file")
    check = actions.add_parser("check", help="validate a callers file without starting "
                               "anything")
    check.add_argument("file")


def _catalog_command(commands) -> None:
    """The catalog's commands (gateway/catalogs.py runs them)."""
    parser = commands.add_parser("catalog", help="check, compare and reload product catalogs")
    actions = parser.add_subparsers(dest="action", required=True)
    check = actions.add_parser("check", help="validate a catalog file without starting "
                               "anything")
    check.add_argument("file")
    diff = actions.add_parser("diff", help="what catalog NEW changes from OLD, product by "
                              "product and element by element")
    diff.add_argument("old")
    diff.add_argument("new")
    reload_ = actions.add_parser("reload", help="validate the gateway's catalog file, then "
                                 "tell the gateway (every process) to load it")
    reload_.add_argument("--catalog", default=str(catalog.DEFAULT_CATALOG),
                         help="the file the gateway serves (its --catalog)")
    target = reload_.add_mutually_exclusive_group(required=True)
    target.add_argument("--pid-file", help="the gateway's --pid-file")
    target.add_argument("--pid", type=int, help="the gateway's process id (the supervisor's "
                        "under --processes N)")


def _log_format_option(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--log-format", choices=logs.FORMATS,
                     default=os.environ.get(logs.FORMAT_ENV, "") or logs.FORMAT_DEFAULT,
                     help="json: one JSON object per line; text: for a human (default "
                     f"${logs.FORMAT_ENV}, else {logs.FORMAT_DEFAULT})")


def _redis_url_option(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--redis-url",
                     default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
                     help="one Redis (redis://, rediss://, unix://) or a Redis Cluster by "
                     "seed nodes: redis+cluster://HOST:PORT[,HOST:PORT...] (rediss+cluster:"
                     "// for TLS); default $REDIS_URL")


def _ledger_options(sub: argparse.ArgumentParser) -> None:
    _redis_url_option(sub)
    sub.add_argument("--ledger-dsn", default=os.environ.get("LEDGER_DSN", DEFAULT_LEDGER),
                     help="postgresql://... or sqlite:///path (default %(default)s)")
    sub.add_argument("--schema", default=os.environ.get("LEDGER_SCHEMA", "public"),
                     help="PostgreSQL schema")
    sub.add_argument("--partitions", type=int,
                     default=int(os.environ.get("CREDITGATE_PARTITIONS", PARTITIONS_DEFAULT)))
    _log_format_option(sub)


def _shard_option(sub: argparse.ArgumentParser, help_: str) -> None:
    sub.add_argument("--shard", default=os.environ.get("CREDITGATE_SHARD", ""),
                     metavar="HOST:PORT", help=f"on a Redis Cluster: {help_}; HOST:PORT is "
                     "any node of the shard, its master or a replica (default: all shards)")


def _ledger_commands(commands) -> None:
    """The commands of the ledger (ledger/cli.py)."""
    ledger = commands.add_parser("ledger", help="run the ledger posting worker")
    _ledger_options(ledger)
    ledger.add_argument("--consumer", default="",
                        help="consumer name, stable across restarts (default: the host name;"
                        " give each worker on one host its own)")
    _shard_option(ledger, "post only the outbox streams of this node's shard (one worker "
                  "per shard)")
    ledger.add_argument("--claim-idle-ms", type=int, default=30_000)
    ledger.add_argument("--deliveries-max", type=int, default=5)
    ledger.add_argument("--metrics-port", type=int,
                        default=int(os.environ.get("CREDITGATE_LEDGER_METRICS_PORT", 0)),
                        help="serve the worker's Prometheus metrics on this port (0: off)")
    ledger.add_argument("--metrics-host", default="127.0.0.1",
                        help="a loopback address (metrics carry no TLS here)")

    reconcile = commands.add_parser(
        "reconcile", help="compare Redis with the ledger per customer and level")
    _ledger_options(reconcile)
    _shard_option(reconcile, "compare only the customers of this node's shard")
    reconcile.add_argument("--pushgateway", default="", metavar="URL",
                           help="push the result (drifts, when it ran) to this Pushgateway")
    reconcile.add_argument("--textfile", default="", metavar="PATH",
                           help="write the result for node_exporter's textfile collector "
                           "(a .prom file in its directory)")

    bills = commands.add_parser("bills", help="consolidated monthly statements")
    _ledger_options(bills)
    bills_actions = bills.add_subparsers(dest="action", required=True)
    bills_close = bills_actions.add_parser("close", help="close a cycle's bills")
    bills_close.add_argument("--cycle", required=True, help="YYYY-MM")

    journal = commands.add_parser("journal", help="print the latest journal entries")
    _ledger_options(journal)
    journal.add_argument("--limit", type=int, default=10)
    journal.add_argument("--customer", default="")


def _serve(args) -> int:
    """`creditgate serve`: the gateway (gateway/server.py) with the options given."""
    if args.shadow_share is not None and not args.shadow_catalog:
        print("creditgate: --shadow-share needs --shadow-catalog", file=sys.stderr)
        return 2
    # gRPC core logs every refused TLS handshake at INFO: a peer could fill the log.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    from creditgate.gateway import callers, server

    config = server.Config(host=args.host, port=args.port, redis_url=args.redis_url,
                           catalog_path=args.catalog, partitions=args.partitions,
                           processes=args.processes, sweep=not args.no_sweeper,
                           callers_path=args.callers, tls_cert=args.tls_cert,
                           tls_key=args.tls_key, tls_ca=args.tls_ca,
                           client_auth=args.client_auth, insecure=args.insecure,
                           metrics_port=args.metrics_port,
                           metrics_host=args.metrics_host,
                           log_format=args.log_format, pid_file=args.pid_file,
                           durability=args.durability, shard=args.shard,
                           drain_notice_s=args.drain_notice_s,
                           shadow_catalog_path=args.shadow_catalog,
                           shadow_share=1.0 if args.shadow_share is None
                           else args.shadow_share)
    try:
        return server.run(config)
    except catalog.CatalogError as error:
        print(f"creditgate: bad catalog: {error}", file=sys.stderr)
        return 2
    except callers.CallersError as error:
        print(f"creditgate: bad callers file: {error}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Client commands talk to a person: their few lines are text unless asked otherwise.
    try:
        logs.setup(getattr(args, "log_format", "") or os.environ.get(logs.FORMAT_ENV, "")
                   or "text")
    except ValueError as error:  # $CREDITGATE_LOG_FORMAT names no format
        print(f"creditgate: {error}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return _serve(args)
    if args.command == "catalog":
        from creditgate.gateway import catalogs

        return catalogs.command(args)
    if args.command == "callers":
        from creditgate.gateway import callers

        return callers.command(args)
    if args.command == "certs":
        from creditgate.gateway import devpki

        return devpki.command(args)
    if args.command in ("ledger", "reconcile", "bills", "journal"):
        from creditgate.ledger import cli as ledger_cli

        return ledger_cli.command(args)
    if args.command == "cluster":
        from creditgate.ledger import cluster_status

        return cluster_status.command(args)
    from creditgate.gateway import cli_client

    return asyncio.run(cli_client.command(args))


if __name__ == "__main__":
    sys.exit(main())
