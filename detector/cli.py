"""``strandwatch``: the command line.

Each subcommand lives in the module that owns the work; this module only wires
them into one parser so ``strandwatch --help`` reads as a table of contents.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

from collector.service.logs import configure_logging

DESCRIPTION = """\
strandwatch finds GPUs that sit idle because of the network, names the links to
blame and prices the loss in dollars.

Start here:
  strandwatch demo            simulate a small cluster, collect it over real SNMP,
                              sysfs and GPU sources, detect and price stranded compute
  strandwatch detect --input telemetry.lp --topology topology.yaml --jobs jobs.csv
                              run the detector over line protocol already collected
                              (e.g. by Telegraf) and print the episodes as JSON
"""


def build_parser() -> argparse.ArgumentParser:
    from collector import agent, ingest
    from collector.sources.snmp import cli as snmp_cli
    from detector import demo, evaluate_cli, offline, report, service

    parser = argparse.ArgumentParser(
        prog="strandwatch", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING or ERROR (default WARNING)")
    parser.add_argument("--log-format", choices=("text", "json"), default="text",
                        help="text lines, or one JSON object per line for log collectors (default text)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    demo_parser = commands.add_parser(
        "demo", help="simulate a cluster and run the whole pipeline end to end",
        description=demo.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_demo_arguments(demo_parser)
    demo_parser.set_defaults(handler=demo.run_demo)

    detect_parser = commands.add_parser(
        "detect", help="detect stranded compute in collected telemetry",
        description=offline.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    offline.add_detect_arguments(detect_parser)
    detect_parser.add_argument("--follow", action="store_true",
                               help="run as a service: decide every new interval of the configured store, "
                                    "write results back and log alerts (needs --config)")
    detect_parser.add_argument("--config", type=Path, metavar="FILE",
                               help="service configuration for --follow (see collector/strandwatch.sample.yaml)")
    detect_parser.set_defaults(handler=_detect)

    run_parser = commands.add_parser(
        "run", help="the whole service in one process: pollers, agent sources, store, streaming detector",
        description=service.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    service.add_service_arguments(run_parser)
    run_parser.set_defaults(handler=service.run_all_in_one)

    ingest_parser = commands.add_parser(
        "ingest", help="take batches from MQTT into the store, acknowledging them once stored",
        description=ingest.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ingest.add_ingest_arguments(ingest_parser)
    ingest_parser.set_defaults(handler=ingest.run_ingest_command)

    evaluate_parser = commands.add_parser(
        "evaluate", help="score the detector on many seeded simulator scenarios",
        description=evaluate_cli.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate_cli.add_evaluate_arguments(evaluate_parser)
    evaluate_parser.set_defaults(handler=evaluate_cli.run_evaluate)

    report_parser = commands.add_parser(
        "report", help="write the weekly report (HTML, PDF, CSV) from the store",
        description=report.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_report_arguments(report_parser)
    report_parser.set_defaults(handler=report.run_report)

    agent_parser = commands.add_parser(
        "agent", help="the node agent: RDMA, ethtool, GPU and job sources of this host",
        description=agent.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    agent.add_agent_arguments(agent_parser)
    agent_parser.set_defaults(handler=agent.run_agent_command)

    collect_parser = commands.add_parser("collect", help="run one central collector (SNMP switch poller)")
    collectors = collect_parser.add_subparsers(dest="collector", metavar="SOURCE")
    collectors.required = True
    snmp_parser = collectors.add_parser(
        "snmp", help="poll switches over SNMP and print their counters as line protocol",
        description="Poll the switches of an SNMP configuration (see collector/sources/snmp/sample.yaml) "
                    "and print each poll as line protocol; --once polls once.",
    )
    snmp_cli.add_collect_snmp_arguments(snmp_parser)
    snmp_parser.set_defaults(handler=snmp_cli.run_collect_snmp)

    topology_parser = commands.add_parser("topology", help="build the topology file")
    topology_commands = topology_parser.add_subparsers(dest="topology_command", metavar="ACTION")
    topology_commands.required = True
    discover_parser = topology_commands.add_parser(
        "discover", help="write a topology file from the switches' LLDP tables",
        description="Walk the LLDP tables of the switches of an SNMP configuration and write a topology "
                    "file in the format of docs/detect.md.",
    )
    snmp_cli.add_topology_discover_arguments(discover_parser)
    discover_parser.set_defaults(handler=snmp_cli.run_topology_discover)
    return parser


def _detect(args: argparse.Namespace) -> int:
    from detector import offline, service

    if args.follow:
        if args.config is None:
            print("strandwatch detect: --follow needs --config FILE", file=sys.stderr)
            return 2
        return service.run_detect_follow(args)
    return offline.run_detect(args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(str(args.log_level).upper(), json_lines=args.log_format == "json")
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
