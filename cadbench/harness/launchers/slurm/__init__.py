"""Slurm clusters through submitit: the unfinished cells as an array job, waited for (or detached from and collected
by a later run with the same --out). `config` (SlurmConfig), `launcher` (SlurmLauncher), `job` (what runs in a
job), `state` (the jobs recorded in --out, to reconnect)."""
