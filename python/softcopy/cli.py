"""The `softcopy` command. It parses options, loads the targets, runs a Copier and maps the outcome
to an exit code: 0 verified, 1 incomplete, 2 bad input, 130/143 stopped by SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from rich.console import Console
from rich.logging import RichHandler

from softcopy import __version__
from softcopy._softcopy import Owner, SoftcopyError, SshDestination, check_ssh_destination, destination_owner
from softcopy.config import (
    ConfigError,
    Destination,
    Target,
    check_destination_made,
    destination_of,
    is_pattern,
    load_targets,
    make_target,
    parse_rate,
)
from softcopy.display import JsonLogHandler
from softcopy.exits import EXIT_OK, EXIT_SIGINT, EXIT_USAGE
from softcopy.session import run_copier

if TYPE_CHECKING:
    from softcopy.notify import Webhook

log = logging.getLogger("softcopy")


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    click.echo(f"softcopy: error: {message}", err=True)
    sys.exit(code)


def setup_logging(console: Console, verbose: bool, quiet: bool) -> None:
    """`-q` leaves errors and the final result only: no information, no warnings (a full
    destination is said by the result when it matters); `-v` adds initialisation, the Zarr
    analysis and every filesystem event."""
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.INFO
    if console.is_terminal:
        handler: logging.Handler = RichHandler(console=console, show_path=False, markup=False)
        fmt = "%(message)s"
    else:
        # A log file or a service journal: one unwrapped line per record, greppable.
        handler = logging.StreamHandler(sys.stderr)
        fmt = "%(asctime)s %(levelname)s %(message)s"
    logging.basicConfig(level=level, format=fmt, handlers=[handler], force=True)


def refuse_another_acquisition(t: Target) -> None:
    """A destination holding another acquisition's copy is never written into (the engine refuses
    it too; said here first, as bad input)."""
    if is_pattern(t.source) or not t.source.is_dir():
        return
    if isinstance(t.destination, Path) and not t.destination.is_dir():
        return
    try:
        # Over ssh, through the engine's SFTP backend (a destination not there is free).
        owner, why = destination_owner(t.source, t.destination, t.marker, ssh_command=t.ssh_command)
    except (OSError, SoftcopyError) as e:
        raise ConfigError(f"cannot tell whose copy the destination holds: {e}") from None
    if owner in (Owner.Another, Owner.SameNumber):
        raise ConfigError(why)


def check_report_folder(report_path: Path | None) -> None:
    """A report that could not be written would be found out only at the end of a copy."""
    if report_path is None:
        return
    folder = Path(str(report_path).replace("{name}", "name")).parent
    if not folder.is_dir():
        raise ConfigError(f"--report {report_path}: the folder {folder} does not exist")


OPTION_HELP = {
    "nprocs": "Copy workers per target.",
    "sleep_time": "Seconds each worker pauses after each file it copied (eases the load on the source disk).",
    "wait_for_source": "Wait for a missing source to appear; 'false' makes a missing source an error.",
}


def named_targets(paths: tuple[str, ...], given: dict[str, Any]) -> list[Target]:
    """The targets the command line names (a targets file, or SRC and DST), each checked as far
    as it can be before a copy; ConfigError (or click's UsageError) for bad input. DST is read as
    written (a `Path` would make `ssh://host/x` into `ssh:/host/x`)."""
    if len(paths) == 1:
        targets = load_targets(paths[0], given)
    elif len(paths) == 2:
        dst = destination_of(paths[1])
        targets = [make_target(Path(paths[0]).expanduser().resolve(), local_resolved(dst), given)]
    else:
        raise click.UsageError("give a TARGETS_FILE, or SRC and DST")
    for t in targets:
        check_target(t)
    return targets


def local_resolved(d: Destination) -> Destination:
    """A local destination as the OS resolves it (`~` expanded); an ssh one as given."""
    return d.expanduser().resolve() if isinstance(d, Path) else d


def check_target(t: Target) -> None:
    """ConfigError for a target no copy could start; a destination that cannot be looked at now is
    not bad input (a share that is down now is waited for: docs/design.md, "Unavailable is not
    elsewhere")."""
    if not is_pattern(t.source) and not t.wait_for_source and not t.source.exists():
        raise ConfigError(f"source {t.source} does not exist (and --wait-for-source is false)")
    if isinstance(t.destination, SshDestination):
        try:
            pattern = is_pattern(t.source)
            # A pattern's root and its acquisitions folder must not contain each other, as a local
            # root's (config.check_pair): compared on the server (docs/design.md, "The ssh destination").
            check_ssh_destination(
                t.destination,
                t.ssh_command,
                holds_acquisitions=pattern,
                source=t.source.parent if pattern else t.source,
            )
        except ValueError as e:
            raise ConfigError(str(e)) from None
        refuse_another_acquisition(t)
        return
    try:
        check_destination_made(t)
        refuse_another_acquisition(t)
    except OSError as e:
        log.warning("%s cannot be looked at now (%s): it is waited for", t.destination, e.strerror or e)


def service_hooks(notify_url: str | None, metrics_addr: str | None) -> tuple[Webhook | None, tuple[str, int] | None]:
    """The service's webhook and metrics address, checked (a bad one is one line, exit 2)."""
    from softcopy.metrics import parse_address
    from softcopy.notify import Webhook, check_url

    try:
        metrics = None if metrics_addr is None else parse_address(metrics_addr)
        if notify_url is not None:
            check_url(notify_url)
    except ValueError as e:
        fail(str(e))
    return (None if notify_url is None else Webhook(notify_url)), metrics


@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=(
        "TARGETS_FILE is YAML:\n\n"
        "\b\n"
        "  targets:\n"
        "    - source: /acquisition/data.zarr\n"
        "      destination: /cluster/project/data.zarr\n"
        "      nprocs: 4            # any option may be set per target\n\n"
        "Relative paths in it are taken from the file's folder. Every target is copied in parallel. "
        "The copy of a target ends when the file 'complete' appears at its source root (the writer's "
        "signal that the acquisition is over) or at once with --once; softcopy then checks that every "
        "file arrived with the right size and copies the marker last.\n\n"
        "Exit codes: 0 all copied and verified; 1 something is missing or different (listed); "
        "2 bad input; 130/143 stopped by Ctrl-C/SIGTERM (run again to resume).\n\n"
        "'softcopy --demo' copies a simulated acquisition live, to show what softcopy does. "
        "'softcopy verify SRC DST [--checksum]' compares a copy with its source (see its --help). "
        "'softcopy status --metrics ADDR' shows what a running service is doing."
    ),
)
@click.argument("paths", nargs=-1, metavar="TARGETS_FILE | SRC DST | 'ACQ/*.zarr' DST", type=click.Path(path_type=str))
@click.option(
    "--nprocs",
    type=click.IntRange(min=1),
    default=None,
    help=OPTION_HELP["nprocs"] + "  [default: 8; 32 to an ssh destination]",
)
@click.option(
    "--sleep-time", type=click.FloatRange(min=0), default=None, help=OPTION_HELP["sleep_time"] + "  [default: 0]"
)
@click.option(
    "--wait-for-source", type=click.BOOL, default=None, help=OPTION_HELP["wait_for_source"] + "  [default: true]"
)
@click.option(
    "--once", is_flag=True, default=None, help="Copy what is there now and finish, without waiting for the marker."
)
@click.option(
    "--marker", default=None, help="Name of the end-of-acquisition file at the source root.  [default: complete]"
)
@click.option(
    "--settle-time",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds a file written in place (not renamed into place) must stay closed before it is copied.  "
    "[default: 0.05]",
)
@click.option(
    "--max-rate",
    default=None,
    metavar="RATE",
    help="Bandwidth budget per target, e.g. 200M (bytes per second; K, M, G are binary units).  [default: none]",
)
@click.option(
    "--back-off/--no-back-off",
    default=None,
    help="Yield the source disk to the acquisition's writes, whatever the IO scheduler: fewer reads in "
    "flight while others' writes to the source device slow down, more once they are back.  [default: true]",
)
@click.option(
    "--max-total-rate",
    default=None,
    metavar="RATE",
    help="Bandwidth budget for all targets together, e.g. 500M.  [default: none]",
)
@click.option(
    "--exclude",
    multiple=True,
    metavar="GLOB",
    help="A file that is not part of the acquisition (repeatable), e.g. '*.log': never copied, waited for or "
    "verified; named in the report. A glob without '/' matches a name at any depth.  [default: none]",
)
@click.option(
    "--ssh-command",
    default=None,
    metavar="CMD",
    help="For a destination HOST:/PATH: the program and its options that reach the host, as rsync's -e, "
    "e.g. 'ssh -p 2222 -i ~/.ssh/lab_key' (the host and '-s sftp' are added; none: ssh -o BatchMode=yes).  "
    "[default: none]",
)
@click.option(
    "--connections",
    type=click.IntRange(min=1),
    default=None,
    help="For a destination HOST:/PATH: SSH sessions to it (each its own ssh and SFTP server process).  [default: 4]",
)
@click.option(
    "--give-up-after",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds a full or disconnected destination is retried before the copy ends incomplete (exit 1).  "
    "[default: 86400]",
)
@click.option(
    "--log-every",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds between status lines when not on a terminal (0: none).",
)
@click.option(
    "-v", "--verbose", is_flag=True, help="Log initialisation, Zarr analysis, every filesystem event, debug info."
)
@click.option("-q", "--quiet", is_flag=True, help="Only errors and the final result (no information, no warnings).")
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Write a JSON report here at the end (also when stopped); schema: docs/report-schema.json.",
)
@click.option(
    "--checksum",
    is_flag=True,
    default=None,
    help="Hash every file while copying (BLAKE3), read the copy back to compare, and write a manifest "
    "beside the destination (DST.softcopy-manifest.tsv).",
)
@click.option(
    "--delete-source",
    is_flag=True,
    default=None,
    help="Free the acquisition disk: once the acquisition is complete and the copy verified, delete each "
    "source file whose copy is fsynced and checks out (same size; same hash with --checksum) and that is "
    "unchanged since it was copied. Files softcopy did not copy are never touched.",
)
@click.option(
    "--json",
    "json_lines",
    is_flag=True,
    help="Events as JSON lines on stdout (log, status every --log-every seconds, the final report).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Say what would be copied, how much, and the expected files per array; write nothing.",
)
@click.option(
    "--notify",
    "notify_url",
    default=None,
    metavar="URL",
    help="POST JSON here when an acquisition ends and when one needs a person (Slack, Teams and "
    "Mattermost webhooks show its 'text'). Retried with backoff; never slows a copy.",
)
@click.option(
    "--notify-after",
    type=click.FloatRange(min=0),
    default=600.0,
    show_default=True,
    help="Seconds a destination may stay unavailable before --notify says so.",
)
@click.option(
    "--metrics",
    "metrics_addr",
    default=None,
    metavar="ADDR",
    help="Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9108, or :9108 for every "
    "interface), and what 'softcopy status --metrics ADDR' shows at /status, for a source pattern (the "
    "service form).",
)
@click.option("--demo", is_flag=True, help="Run the built-in demo: a simulated acquisition copied live.")
@click.version_option(__version__, "-V", "--version", prog_name="softcopy")
def main(
    paths: tuple[str, ...],
    log_every: float,
    verbose: bool,
    quiet: bool,
    demo: bool,
    dry_run: bool,
    json_lines: bool,
    max_total_rate: str | None,
    report_path: Path | None,
    notify_url: str | None,
    notify_after: float,
    metrics_addr: str | None,
    **options: Any,
) -> None:
    """Copy Zarr archives to their destination while the microscope is still writing them.

    \b
      softcopy TARGETS_FILE [OPTIONS]       copy every source/destination pair in a YAML file
      softcopy SRC DST [OPTIONS]            copy one archive
      softcopy 'ACQ/*.zarr' DST [OPTIONS]   the service: copy every folder that matches, present
                                            or made later, to DST/<its name>, until stopped

    Files are copied as soon as the writer completes them (tensorstore renames, closed files),
    at idle IO priority and nice 19, to a temporary name that is renamed into place, so the
    destination never holds a partial file under a real name.
    """
    console = Console(stderr=True)
    setup_logging(console, verbose, quiet)
    if json_lines:
        logging.getLogger("softcopy").addHandler(JsonLogHandler())
    given = {k: v for k, v in options.items() if v is not None and v != ()}
    if demo:
        if paths:
            fail("--demo takes no paths")
        from softcopy.demo import run_demo

        sys.exit(run_demo(console, given))
    try:
        targets = named_targets(paths, given)
        total = None if max_total_rate is None else parse_rate(max_total_rate)
        check_report_folder(report_path)
    except ConfigError as e:
        fail(str(e))
    if dry_run:
        from softcopy.dryrun import dry_run as plan_only

        sys.exit(plan_only(targets, console))
    live = console.is_terminal and not quiet
    patterns = [t for t in targets if is_pattern(t.source)]
    if patterns:
        if len(patterns) < len(targets):
            fail("a targets file with a source pattern may hold only pattern targets")
        from softcopy.service import run_service

        webhook, metrics = service_hooks(notify_url, metrics_addr)
        sys.exit(
            run_service(
                patterns,
                console,
                log_events=verbose,
                max_total_rate=total,
                log_every=0 if quiet else log_every,
                live=live,
                report_path=None if report_path is None else str(report_path),
                json_lines=json_lines,
                webhook=webhook,
                notify_after=notify_after,
                metrics=metrics,
            )
        )
    if notify_url is not None or metrics_addr is not None:
        fail("--notify and --metrics are for a source pattern (the service form)")
    sys.exit(
        run_copier(
            targets,
            console,
            verbose=verbose,
            log_every=0 if quiet else log_every,
            live=live,
            max_total_rate=total,
            report_path=report_path,
            json_lines=json_lines,
        )
    )


def run_command(command: click.Command, args: list[str], prog_name: str) -> NoReturn:
    """Runs a click command with its usage errors as one line (click's own are four: usage, a
    hint, a blank line and the error), exit 2, as every other bad input."""
    try:
        # Click expands wildcards in arguments on Windows; a source pattern (`D:\acq\*.zarr`) must
        # reach softcopy as written, as a quoted one does on Linux.
        code = command.main(args, prog_name=prog_name, standalone_mode=False, windows_expand_args=False)
    except click.UsageError as e:
        fail(f"{e.format_message()} (see {prog_name} --help)")
    except click.ClickException as e:
        fail(e.format_message(), e.exit_code)
    except click.Abort:
        sys.exit(EXIT_SIGINT)
    sys.exit(code if isinstance(code, int) else EXIT_OK)


def entry() -> None:
    """The `softcopy` command: `softcopy verify ...` compares trees, `softcopy status ...` asks a
    running service; anything else copies."""
    if len(sys.argv) > 1 and sys.argv[1] == "verify":
        from softcopy.verify import verify_main

        run_command(verify_main, sys.argv[2:], "softcopy verify")
    if len(sys.argv) > 1 and sys.argv[1] == "status":
        from softcopy.status import status_main

        run_command(status_main, sys.argv[2:], "softcopy status")
    run_command(main, sys.argv[1:], "softcopy")
