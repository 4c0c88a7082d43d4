#!/usr/bin/env python3
"""Submit mnistbench to a Slurm cluster: one job array, one task per partition or node named.

    scripts/slurm/submit.py --results DIR [--params FILE] [options] TARGET...

Each TARGET is one task (quote a target that has spaces); its options are sbatch's:

    cpu                         a node of partition cpu
    "-p cpu -w node[01-04]"     one task per node of the list: 4 tasks
    "-p gpu --gres=gpu:1"       a node of partition gpu, with one GPU
    "-p cpu -C avx512"          a node of partition cpu with the feature avx512

The array is submitted held, in the first target's partition, with scripts/slurm/mnistbench.sbatch
(the pipeline on one node). Each task is then given its own target with `scontrol update
JobId=<job>_<task> Partition=... ReqNodeList=... Gres=... Features=...` (which splits that task
off the array's record), and the array is released. A target Slurm refuses cancels the whole
array: nothing runs. Every task requests its node whole (--exclusive) unless --shared.

What goes where: RESULTS/jobs/<time>-<pid>/ (params.yaml as submitted, job.json: the job id and
each task's target, which `mnistbench gather` reads to list tasks that never reported),
RESULTS/logs/<job>_<task>.out (Slurm's output of each task), and each task's run in
RESULTS/<machine>.<fingerprint id>.<node>.<job>_<task>/ (see mnistbench.sbatch). Then:

    mnistbench gather RESULTS      # once `squeue -j <job>` lists nothing

Needs only Python 3.9+ and Slurm's commands (sbatch, scontrol, scancel), as on a login node.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BATCH_SCRIPT = Path(__file__).resolve().parent / "mnistbench.sbatch"
RUNTIMES = ("venv", "docker", "podman", "apptainer", "singularity")
# a target's sbatch options, and the field `scontrol update` sets for each
OPTIONS = {
    "-p": "partition",
    "--partition": "partition",
    "-w": "nodes",
    "--nodelist": "nodes",
    "--gres": "gres",
    "-C": "features",
    "--constraint": "features",
}
UPDATE_FIELDS = {"node": "ReqNodeList", "gres": "Gres", "features": "Features"}


class SubmitError(Exception):
    """A bad target or option, or a Slurm command that failed: one line, exit status 1."""


@dataclass(frozen=True)
class Task:
    target: str  # as the user wrote it
    partition: str
    node: str = ""  # one node: a target's node list gives one task per node
    gres: str = ""
    features: str = ""


def parse_target(target: str) -> dict[str, str]:
    """`-p gpu --gres=gpu:1` -> {"partition": "gpu", "gres": "gpu:1"}; a bare word is a partition."""
    try:
        words, fields = shlex.split(target), {}
    except ValueError as e:  # "-p 'cpu": no closing quotation
        raise SubmitError(f"target {target!r}: {e} (quote a target as the shell would)") from e
    while words:
        word = words.pop(0)
        option, eq, value = word.partition("=")
        if option in OPTIONS and not eq:
            if not words:
                raise SubmitError(f"target {target!r}: {option} needs a value")
            value = words.pop(0)
        elif len(word) > 2 and word[:2] in ("-p", "-w", "-C") and not word.startswith("--"):
            option, value = word[:2], word[2:]  # -pcpu
        elif not word.startswith("-") and "partition" not in fields:
            option, value = "-p", word
        if option not in OPTIONS:
            raise SubmitError(
                f"target {target!r}: {word!r} is not a per-task option (a target takes -p, -w, "
                "--gres, -C; options for every task go in --sbatch)"
            )
        fields[OPTIONS[option]] = value
    if not fields.get("partition"):
        raise SubmitError(f"target {target!r}: name its partition (-p NAME; `sinfo` lists them)")
    return fields


def expand_nodes(hostlist: str) -> list[str]:
    """A Slurm hostlist (node[01-03],gpu7) as node names, by `scontrol show hostnames`."""
    return run(["scontrol", "show", "hostnames", hostlist]).split()


def tasks_of(targets: list[str], expand: Callable[[str], list[str]] = expand_nodes) -> list[Task]:
    """One Task per target, or per node of a target's node list, in the order given."""
    tasks = []
    for target in targets:
        fields = parse_target(target)
        nodes = fields.pop("nodes", "")
        for node in expand(nodes) if nodes else [""]:
            tasks.append(Task(target, node=node, **fields))
    if not tasks:
        raise SubmitError("no targets: name at least one partition (e.g. cpu)")
    return tasks


def update_command(job: str, index: int, task: Task, submitted_partition: str) -> list[str] | None:
    """The `scontrol update` that gives array task `index` its target; None when it has it."""
    fields = [f"{UPDATE_FIELDS[k]}={getattr(task, k)}" for k in UPDATE_FIELDS if getattr(task, k)]
    if task.partition != submitted_partition:
        fields.insert(0, f"Partition={task.partition}")
    return ["scontrol", "update", f"JobId={job}_{index}", *fields] if fields else None


def sbatch_command(args: argparse.Namespace, tasks: list[Task], params: Path) -> list[str]:
    results = args.results
    cmd = [
        "sbatch",
        "--parsable",
        "--hold",
        f"--array=0-{len(tasks) - 1}",
        "--job-name=mnistbench",
        f"--output={results / 'logs' / '%A_%a.out'}",
        f"--chdir={args.repo}",
        f"--partition={tasks[0].partition}",
        f"--time={args.time}",
        "--export=ALL",  # the MNISTBENCH_* settings below, whatever SBATCH_EXPORT says
    ]
    if not args.shared:
        cmd.append("--exclusive")  # a whole node: no other job's load in the timings
    return [*cmd, *args.sbatch, str(BATCH_SCRIPT), str(results), str(params)]


def task_env(args: argparse.Namespace) -> dict[str, str]:
    """The settings mnistbench.sbatch reads, passed to every task through sbatch."""
    env = {
        "MNISTBENCH_REPO": str(args.repo),
        "MNISTBENCH_RUNTIME": args.runtime,
        "MNISTBENCH_ROOFLINE": "0" if args.no_roofline else "1",
        "MNISTBENCH_BACKENDS": args.backends or "",
    }
    if args.venv:
        env["MNISTBENCH_VENV"] = str(args.venv.resolve())
    return env


def run(cmd: list[str], env: dict[str, str] | None = None) -> str:
    """A Slurm command's stdout; its failure as a SubmitError with its own message."""
    if shutil.which(cmd[0]) is None:
        raise SubmitError(f"{cmd[0]}: not found (run this on a node with Slurm's commands)")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    if proc.returncode != 0:
        why = (proc.stderr.strip() or proc.stdout.strip() or f"exit {proc.returncode}").splitlines()
        raise SubmitError(f"{shlex.join(cmd)}: {why[-1]}")
    return proc.stdout


def check_params(args: argparse.Namespace, out: Path) -> None:
    """Write the submission's params file; with the venv runtime, validated by `mnistbench
    params` (a mistyped key or backend fails here, not on every node)."""
    if args.runtime != "venv":
        shutil.copyfile(args.params, out)  # validated by each task, in its image
        return
    venv = args.venv or args.repo / ".venv"
    python = check_venv(venv, args.repo)
    cmd = [str(python), "-m", "mnistbench", "params", str(out), "--params", str(args.params)]
    if args.backends:
        cmd += ["--backends", args.backends]
    env = {**os.environ, "PYTHONPATH": str(args.repo / "src")}  # as each task runs it
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, cwd=args.repo, env=env, timeout=300
        )
    except OSError as e:  # found, but not runnable by this user
        raise SubmitError(
            f"--venv {venv}: {python} cannot run ({e.strerror}){unreadable(venv)}"
        ) from e
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
        why = lines[-1].strip() if lines else f"exit {proc.returncode}"
        if "Permission denied" in proc.stderr or "PermissionError" in proc.stderr:
            raise SubmitError(f"--venv {venv}: cannot be read ({why}){unreadable(venv)}")
        if not why.startswith("error: "):  # a crash, not mnistbench's own one-line error
            raise SubmitError(f"{args.params}: `mnistbench params` failed: {why}")
        raise SubmitError(f"{args.params}: {why.removeprefix('error: ')}")


def unreadable(venv: Path) -> str:
    """The advice for a venv this user cannot read: every node runs it as the submitting user."""
    user = pwd.getpwuid(os.geteuid()).pw_name if hasattr(os, "geteuid") else "you"
    return (
        f": every task runs it as {user}; `chmod -R a+rX {venv}` (its owner), or `make install` "
        "in a clone of your own, or --venv a venv you can read"
    )


def check_venv(venv: Path, repo: Path) -> Path:
    """The venv's python, when this user can run it; else SubmitError, one line."""
    python = venv / "bin" / "python"
    try:
        python.stat()  # follows the link to the base interpreter
    except PermissionError as e:
        raise SubmitError(f"--venv {venv}: cannot be read ({e.strerror}){unreadable(venv)}") from e
    except OSError as e:
        raise SubmitError(f"no {python}: `make install` in {repo}, or name one with --venv") from e
    if not os.access(python, os.X_OK):
        raise SubmitError(f"--venv {venv}: {python} is not executable{unreadable(venv)}")
    return python


def submit(args: argparse.Namespace) -> tuple[str, list[Task]]:
    """Submit held, give each task its target, record the job, release: the job id, the tasks."""
    tasks = tasks_of(args.targets)
    if not args.params.is_file():
        raise SubmitError(f"{args.params}: no such params file")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    job_dir = args.results / "jobs" / f"{stamp}-{os.getpid()}"
    try:
        job_dir.mkdir(parents=True)
        (args.results / "logs").mkdir(exist_ok=True)
    except OSError as e:  # a file on the way (NotADirectoryError), no permission, a full disk
        shutil.rmtree(job_dir, ignore_errors=True)
        why = f"cannot create {e.filename or job_dir} ({e.strerror})"
        raise SubmitError(f"--results {args.results}: {why}") from e
    job = ""
    try:
        params = job_dir / "params.yaml"
        check_params(args, params)
        cmd = sbatch_command(args, tasks, params.resolve())
        job = run(cmd, env={**os.environ, **task_env(args)}).strip().split(";")[0]
        for i, task in enumerate(tasks):
            update = update_command(job, i, task, tasks[0].partition)
            if update:
                run(update)
        record = {
            "job": job,
            "submitted": stamp,
            "sbatch": cmd,
            "settings": task_env(args),
            "tasks": [{"task": i, **asdict(t)} for i, t in enumerate(tasks)],
        }
        (job_dir / "job.json").write_text(json.dumps(record, indent=2) + "\n")
        run(["scontrol", "release", job])
    except BaseException:
        if job:
            subprocess.run(["scancel", job], capture_output=True, timeout=60)
        shutil.rmtree(job_dir, ignore_errors=True)
        raise
    return job, tasks


def check_results(results: Path) -> None:
    """--results is a folder, or not there yet (submit makes it): never a file."""
    if results.exists() and not results.is_dir():
        raise SubmitError(f"--results {results}: not a folder (the shared folder for the runs)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Run mnistbench on Slurm: one job array, one task per target.",
        epilog=__doc__.split("\n\n", 2)[2].split("\n\nWhat goes")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("targets", nargs="*", metavar="TARGET", help="a task's partition/nodes/gres")
    p.add_argument("--results", type=Path, required=True, help="shared folder for the runs")
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    p.add_argument("--backends", default=None, help="space-separated backends [params' all]")
    p.add_argument("--runtime", choices=RUNTIMES, default="venv", help="[venv: REPO/.venv]")
    p.add_argument("--repo", type=Path, default=ROOT, help="the clone the nodes run [this one]")
    p.add_argument("--venv", type=Path, default=None, help="the venv [REPO/.venv]")
    p.add_argument("--time", default="01:00:00", help="each task's time limit [%(default)s]")
    p.add_argument("--shared", action="store_true", help="don't request whole nodes")
    p.add_argument("--no-roofline", action="store_true", help="leave the roofline stage out")
    p.add_argument(
        "--sbatch",
        action="append",
        default=[],
        metavar="OPTION",
        help="an sbatch option for every task, e.g. --sbatch=--account=lab; repeat for each",
    )
    p.add_argument("--dry-run", action="store_true", help="print the commands, submit nothing")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.results, args.params, args.repo = (
        p.resolve() for p in (args.results, args.params, args.repo)
    )
    try:
        check_results(args.results)
        if args.dry_run:
            tasks = tasks_of(args.targets)
            print(shlex.join(sbatch_command(args, tasks, args.params)))
            for i, task in enumerate(tasks):
                update = update_command("JOB", i, task, tasks[0].partition)
                print(shlex.join(update) if update else f"# task {i}: as submitted")
            print("scontrol release JOB")
            return 0
        job, tasks = submit(args)
    except SubmitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(
        f"submitted job {job}: {len(tasks)} tasks, runs into {args.results}/; when "
        f"`squeue -j {job}` lists nothing: mnistbench gather {args.results}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
