"""The grid, one module per step of the pipeline's diagram:

    plan     validate a params file against the data, expand it into runs (by phase, with ids)
    execute  one run: lock, log, phase notebook, verify, move a corrupt one aside
    local    the local scheduler: worker processes, warm kernels, progress; looks of a sequential design
    collect  results tables, lineage, provenance, failures; the report

`xfer.grid.slurm` executes the same runs on a Slurm cluster and `xfer.runner` is the `xfer` command."""
