#!/bin/sh
# A Slurm Epilog for mnistbench (docs/cluster.md): after each job on a node, remove the scratch
# folders its mnistbench task left there. A task that ends, ok or not, removes its own; one
# killed outright (SIGKILL after KillWait, the OOM killer, a node that came back) cannot, and
# without this Epilog its folder stays until the next mnistbench task of the same user on that
# node removes it.
#
#   slurm.conf:  Epilog=/etc/slurm/epilog.d/mnistbench.sh     (runs as root, on each node)
#
# MNISTBENCH_SCRATCH: the node-local folder the tasks use ($SLURM_TMPDIR, else $TMPDIR, else
# /tmp, as the job sees them); default /tmp. Slurm gives an Epilog only its own variables
# (SLURM_JOB_ID, SLURM_JOB_UID, SLURMD_NODENAME, ...; not the job's environment), so a site
# whose scratch is elsewhere sets it in a wrapper:
#   #!/bin/sh
#   MNISTBENCH_SCRATCH=/local/scratch exec /shared/mnistbench/scripts/slurm/epilog.sh
#
# Removed: the folders named mnistbench-* directly in that folder, owned by the job's user,
# whose .owner (written by mnistbench.sbatch: host, pid, start time, Slurm's job id) names this
# job. Nothing else. It always exits 0: a failing Epilog drains the node.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
scratch=${MNISTBENCH_SCRATCH:-/tmp}
[ -n "${SLURM_JOB_ID:-}" ] && [ -n "${SLURM_JOB_UID:-}" ] && [ -d "$scratch" ] || exit 0
for d in "$scratch"/mnistbench-*; do
    [ -d "$d" ] && [ ! -L "$d" ] && [ -f "$d/.owner" ] && [ ! -L "$d/.owner" ] || continue
    [ "$(stat -c %u "$d")" = "$SLURM_JOB_UID" ] || continue
    read -r _ _ _ job < "$d/.owner" || continue
    [ "$job" = "$SLURM_JOB_ID" ] && rm -rf "$d"
done
exit 0
