"""The flags of `cadbench run` that choose where cells run (`--launcher`, `--gpus`, `--slurm-*`, `--detach`), and the
launcher config they make. Only parsed here; the configs validate their values, the launchers check the machine."""

from __future__ import annotations

import argparse

from cadbench.errors import CadbenchError
from cadbench.harness.launchers import LAUNCHER_NAMES

SLURM_FLAGS = ("slurm_partition", "slurm_gpus_per_job", "slurm_time", "slurm_mem", "slurm_account", "slurm_qos",
               "slurm_constraint", "slurm_option", "slurm_parallelism", "slurm_estimate_jobs", "detach")


def add_launcher_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("where cells run")
    group.add_argument("--launcher", choices=LAUNCHER_NAMES, default=None,
                       help="local: one cell after another on this machine (default); gpus: one cell per GPU at a "
                            "time (same as --gpus); slurm: the cells as a Slurm array job, through submitit")
    group.add_argument("--gpus", help="'all' or GPU indices such as 0,1,3: up to one cell per GPU at a time, each "
                                      "process pinned with CUDA_VISIBLE_DEVICES")
    add_jobs(group)
    group.add_argument("--slurm-partition", help="partition to submit to (default: the cluster's default)")
    group.add_argument("--slurm-gpus-per-job", type=int, default=None,
                       help="GPUs each job of a CUDA cell asks for (default: 1; cells without CUDA ask for none)")
    group.add_argument("--slurm-time", help="time limit per job, in Slurm's format (90, 1:30:00, 2-00:00:00; "
                                            "default: the partition's)")
    group.add_argument("--slurm-mem", help="memory per job, in Slurm's format (32G, 64000M)")
    group.add_argument("--slurm-account", help="account to charge")
    group.add_argument("--slurm-qos", help="quality of service")
    group.add_argument("--slurm-constraint", help="node features, e.g. a100|h100")
    group.add_argument("--slurm-option", action="append", metavar="KEY=VALUE",
                       help="any other sbatch option (repeatable), e.g. --slurm-option mail-type=END; a bare KEY "
                            "is a flag such as exclusive")
    group.add_argument("--slurm-parallelism", type=int, default=None,
                       help="array tasks running at once (default: as many as Slurm allows)")
    group.add_argument("--slurm-estimate-jobs", action="store_true",
                       help="run estimate cells as CPU jobs too (default: in this process)")
    group.add_argument("--detach", action="store_true",
                       help="return after submitting and print the job ids; rerun the command with the same --out "
                            "to collect the results and resubmit what failed")


def add_jobs(parser) -> None:
    parser.add_argument("--jobs", type=int, default=None,
                        help="processes estimating cells at once (local launcher; default: one per CPU core, at most "
                             "one per 1.5 GB of available memory, as `cadbench fit`); rows are the same, in the same "
                             "order")


def launcher_config(args: argparse.Namespace):
    """The config of the launcher the flags ask for; flags of another launcher are refused by name."""
    from cadbench.harness.launchers import GpusConfig, LocalConfig, SlurmConfig

    name = args.launcher or ("gpus" if args.gpus is not None else "local")
    slurm_given = [flag for flag in SLURM_FLAGS if getattr(args, flag) not in (None, False)]
    if name != "slurm" and slurm_given:
        flag = "--" + slurm_given[0].replace("_", "-")
        raise CadbenchError(f"{flag} needs --launcher slurm")
    if args.jobs is not None and name != "local":
        raise CadbenchError(f"--jobs spreads estimates over this machine's cores; it does not go with --launcher "
                            f"{name}")
    if args.gpus is not None and name != "gpus":
        raise CadbenchError(f"--gpus runs cells on this machine's GPUs; it does not go with --launcher {name}")
    if name == "gpus":
        return GpusConfig.parse(args.gpus) if args.gpus is not None else GpusConfig()
    if name == "slurm":
        return SlurmConfig.from_flags(
            partition=args.slurm_partition, gpus_per_job=args.slurm_gpus_per_job, time=args.slurm_time,
            mem=args.slurm_mem, account=args.slurm_account, qos=args.slurm_qos, constraint=args.slurm_constraint,
            options=args.slurm_option or [], parallelism=args.slurm_parallelism,
            estimate_jobs=args.slurm_estimate_jobs, detach=args.detach)
    return LocalConfig(jobs=args.jobs)


__all__ = ["add_jobs", "add_launcher_arguments", "launcher_config"]
