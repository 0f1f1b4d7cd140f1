#!/bin/sh
# Prolog of the one-node test cluster (.ci/services.sh). nvidia-tao-sdk 7.2.0's sbatch scripts write
# to <SLURM_BASE_RESULTS_DIR>/slurm-logs/%x-%j/main.{out,err}, and Slurm does not create folders: a
# job whose output folder is missing fails to launch. This creates the job's StdOut/StdErr folders.
scontrol show job "$SLURM_JOB_ID" | sed -n 's/^ *Std\(Out\|Err\)=//p' | while read -r f; do
  d=$(dirname "$f")
  mkdir -p "$d" && chown "$SLURM_JOB_UID" "$d"
done
exit 0
