#!/usr/bin/env bash
# Start the services the tao_docker / tao_slurm tests need, as root on Debian bookworm: a docker daemon
# (Debian's docker.io) and a one-node Slurm cluster on localhost (slurm-wlm + munge). Idempotent: a
# service that already answers is left alone. Usage: .ci/services.sh [docker] [slurm]  (default: both)
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
want=${*:-docker slurm}
log=${SERVICES_LOG:-/var/log/deftpipe-ci}
mkdir -p "$log"

need=()
[[ $want == *docker* ]] && ! command -v dockerd >/dev/null && need+=(docker.io)
[[ $want == *slurm* ]] && ! command -v slurmctld >/dev/null && need+=(slurm-wlm munge)
[[ $want == *slurm* ]] && ! command -v slurmdbd >/dev/null && need+=(slurmdbd mariadb-server)
[[ $want == *slurm* ]] && ! command -v sshd >/dev/null && ! [ -x /usr/sbin/sshd ] && need+=(openssh-server)
[[ $want == *slurm* ]] && ! command -v dockerd >/dev/null && need+=(docker.io)
if ((${#need[@]})); then
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

wait_for() {  # wait_for SECONDS WHAT CMD...
  local n=$1 what=$2; shift 2
  for ((i = 0; i < n * 2; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "services: $what did not come up in ${n}s" >&2; return 1
}

if [[ $want == *docker* || $want == *slurm* ]]; then  # the Slurm jobs' containers run on docker too
  if ! docker info >/dev/null 2>&1; then
    # shellcheck disable=SC2024
    nohup dockerd >"$log/dockerd.log" 2>&1 &
    wait_for 60 dockerd docker info || { tail -20 "$log/dockerd.log" >&2; exit 1; }
  fi
  echo "services: docker $(docker version --format '{{.Server.Version}}') up"
fi

if [[ $want == *slurm* ]]; then
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
  conf=/etc/slurm/slurm.conf
  mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
  install -m 755 "$(dirname "$0")/slurm-prolog.sh" /etc/slurm/deftpipe-prolog.sh
  want_conf="ClusterName=deftpipe-ci
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ReturnToService=2
MinJobAge=86400
Prolog=/etc/slurm/deftpipe-prolog.sh
MpiDefault=none
GresTypes=gpu
NodeName=$host CPUs=$cpus RealMemory=$mem Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP"
  changed=0
  if [ "$(cat $conf 2>/dev/null)" != "$want_conf" ]; then
    echo "$want_conf" >$conf
    changed=1
  fi
  # a "gpu" resource backed by /dev/null (no device): nvidia-tao-sdk 7.2.0's SlurmSDK asks for --gres=gpu:1 even
  # when the job asks for 0 GPUs, so without it no TAO job would schedule here; the jobs run on CPU
  gres="NodeName=$host Name=gpu File=/dev/null"
  if [ "$(cat /etc/slurm/gres.conf 2>/dev/null)" != "$gres" ]; then
    echo "$gres" >/etc/slurm/gres.conf
    changed=1
  fi
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
  fi
  chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
  chmod 400 /etc/munge/munge.key
  pgrep -x munged >/dev/null || runuser -u munge -- munged --force
  wait_for 20 munged munge -n
  # accounting: nvidia-tao-sdk reads a finished job's state with sacct, which needs slurmdbd (MariaDB)
  if ! mysqladmin ping >/dev/null 2>&1; then
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    (mysqld_safe >"$log/mysqld.log" 2>&1 &)
    wait_for 60 mariadb mysqladmin ping
  fi
  mysql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db; CREATE USER IF NOT EXISTS 'slurm'@'localhost' \
    IDENTIFIED BY 'deftpipe-ci'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
  dbd="AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=deftpipe-ci
StorageLoc=slurm_acct_db
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurmdbd.pid"
  if [ "$(cat /etc/slurm/slurmdbd.conf 2>/dev/null)" != "$dbd" ]; then
    echo "$dbd" >/etc/slurm/slurmdbd.conf
    changed=1
  fi
  chmod 600 /etc/slurm/slurmdbd.conf
  if [ $changed = 1 ]; then  # a new node, gres or accounting definition needs fresh daemons
    for d in slurmd slurmctld slurmdbd; do
      pid=$(pgrep -x $d || true)
      [ -n "$pid" ] && kill $pid && while kill -0 $pid 2>/dev/null; do sleep 0.2; done
    done
  fi
  pgrep -x slurmdbd >/dev/null || slurmdbd
  wait_for 30 slurmdbd sacctmgr -n list cluster
  sacctmgr -nP list cluster format=cluster | grep -qx deftpipe-ci || sacctmgr -i add cluster deftpipe-ci >/dev/null
  pgrep -x slurmctld >/dev/null || slurmctld
  wait_for 30 slurmctld scontrol ping
  pgrep -x slurmd >/dev/null || slurmd
  idle() {
    st=$(sinfo -h -o %T)
    case $st in
      idle) return 0 ;;
      drain* | inval* | down*) scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 ;;
    esac
    return 1
  }
  wait_for 60 "slurm node idle" idle || { sinfo >&2; tail -n 5 /var/log/slurm/*.log >&2; exit 1; }
  # nvidia-tao-sdk's SlurmSDK reaches the login host over ssh: root's key for localhost
  key=/etc/deftpipe-ci/ssh/id_ed25519
  if [ ! -s $key ]; then
    mkdir -p /etc/deftpipe-ci/ssh && ssh-keygen -q -t ed25519 -N "" -C deftpipe-ci -f $key
  fi
  mkdir -p /root/.ssh && chmod 700 /root/.ssh
  grep -qF "$(cat $key.pub)" /root/.ssh/authorized_keys 2>/dev/null || cat $key.pub >>/root/.ssh/authorized_keys
  chmod 600 /root/.ssh/authorized_keys
  mkdir -p /run/sshd
  pgrep -x sshd >/dev/null || /usr/sbin/sshd
  wait_for 20 sshd ssh -i $key -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
    -o LogLevel=ERROR root@localhost true
  # Pyxis stand-in: srun --container-image runs the step in a docker container (see the script)
  install -m 755 "$(dirname "$0")/pyxis-srun" /usr/local/bin/srun
  echo "services: slurm $(sinfo --version | cut -d' ' -f2) up, node $host idle, ssh to localhost, Pyxis stand-in"
fi
