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

    def command(group, name: str, help: str, description: str | None, add_arguments, handler) -> None:
        sub = group.add_parser(name, help=help, description=description,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        add_arguments(sub)
        sub.set_defaults(handler=handler)

    command(commands, "demo", "simulate a cluster and run the whole pipeline end to end",
            demo.__doc__, demo.add_demo_arguments, demo.run_demo)
    command(commands, "detect", "detect stranded compute in collected telemetry (batch, or --follow as a service)",
            offline.__doc__, _add_detect_arguments, _detect)
    command(commands, "run", "the whole service in one process: pollers, agent sources, store, streaming detector",
            service.__doc__, service.add_service_arguments, service.run_all_in_one)
    command(commands, "agent", "the node agent: RDMA, ethtool, GPU and job sources of this host",
            agent.__doc__, agent.add_agent_arguments, agent.run_agent_command)
    collect = commands.add_parser("collect", help="run one central collector (the SNMP switch poller)")
    collectors = collect.add_subparsers(dest="collector", metavar="SOURCE")
    collectors.required = True
    command(collectors, "snmp", "poll switches over SNMP",
            "Poll the switches of an SNMP configuration (see collector/sources/snmp/sample.yaml); "
            "--once --output - prints one poll as line protocol.",
            snmp_cli.add_collect_snmp_arguments, snmp_cli.run_collect_snmp)
    command(commands, "ingest", "take batches from MQTT into the store, acknowledging them once stored",
            ingest.__doc__, ingest.add_ingest_arguments, ingest.run_ingest_command)
    topology = commands.add_parser("topology", help="build the topology file")
    topology_commands = topology.add_subparsers(dest="topology_command", metavar="ACTION")
    topology_commands.required = True
    command(topology_commands, "discover", "write a topology file from the switches' LLDP tables",
            "Walk the LLDP tables of the switches of an SNMP configuration and write a topology file "
            "in the format of docs/detect.md.",
            snmp_cli.add_topology_discover_arguments, snmp_cli.run_topology_discover)
    command(commands, "report", "write the weekly report (HTML, PDF, CSV) from the store",
            report.__doc__, report.add_report_arguments, report.run_report)
    command(commands, "evaluate", "score the detector on many seeded simulator scenarios",
            evaluate_cli.__doc__, evaluate_cli.add_evaluate_arguments, evaluate_cli.run_evaluate)
    return parser


def _add_detect_arguments(parser: argparse.ArgumentParser) -> None:
    from detector import offline

    offline.add_detect_arguments(parser)
    parser.add_argument("--follow", action="store_true",
                        help="run as a service: decide every new interval of the configured store, "
                             "write results back and log alerts (needs --config)")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="service configuration for --follow (see collector/strandwatch.sample.yaml)")


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
